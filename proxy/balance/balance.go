// Package balance picks the endpoint each request goes to: power of two choices
// (P2C) over a PeakEWMA load estimate, with Linkerd's consecutive-failure circuit
// breaker taking misbehaving endpoints out of rotation.
//
// The maths follow tower's peak_ewma and p2c, as Linkerd runs them:
//
//   - Every endpoint keeps an RTT estimate that starts at Config.DefaultRTT. A
//     sample above the estimate replaces it (the peak); a sample below it is blended
//     in with weight 1-exp(-elapsed/Decay), where elapsed is the time since the
//     estimate was last touched.
//   - Reading the load also decays the estimate toward zero by exp(-elapsed/Decay)
//     and stores the result, exactly as tower's load does.
//   - Cost is estimate_ns * (pending+1).
//   - Pick chooses two distinct random ready endpoints and returns the cheaper one
//     (ties go to the first); with one ready endpoint it returns it.
//
// Nothing here takes a lock shared by all requests: the endpoint set is a
// copy-on-write slice behind an atomic pointer, counters are atomics, and the EWMA
// state of each endpoint has its own small mutex. Breaker state is computed lazily
// from the clock; there are no timers and no goroutines.
package balance

import (
	"errors"
	"maps"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

// Defaults applied to zero Config fields.
const (
	// DefaultRTT is the initial RTT estimate of a new endpoint (Linkerd's value).
	DefaultRTT = 30 * time.Millisecond
	// DefaultDecay is the PeakEWMA decay window (Linkerd's value).
	DefaultDecay = 10 * time.Second
	// DefaultMaxFailures is how many consecutive failures eject an endpoint.
	DefaultMaxFailures = 7
	// DefaultMinPenalty is the first ejection's backoff.
	DefaultMinPenalty = time.Second
	// DefaultMaxPenalty caps the ejection backoff (before jitter).
	DefaultMaxPenalty = 60 * time.Second
	// DefaultJitterRatio is the share of the backoff added as random jitter.
	DefaultJitterRatio = 0.5
)

// ErrNoEndpoints is returned by Pick when the endpoint set is empty.
var ErrNoEndpoints = errors.New("balance: no endpoints")

// ErrNoReadyEndpoints is returned by Pick when endpoints exist but none is
// ready by spec. (Endpoints that are ready by spec but all ejected by the breaker
// are still picked: see Pick.)
var ErrNoReadyEndpoints = errors.New("balance: no ready endpoints")

// Clock lets tests use a fake time.
type Clock interface{ Now() time.Time }

// Config tunes a Balancer. The zero value is Linkerd's defaults.
type Config struct {
	// DefaultRTT is a new endpoint's initial RTT estimate (default 30ms).
	DefaultRTT time.Duration
	// Decay is the PeakEWMA decay window (default 10s).
	Decay time.Duration
	// Breaker configures consecutive-failure accrual. Zero fields take the
	// defaults: 7 failures, 1s min penalty, 60s max penalty, jitter ratio 0.5.
	// A MaxPenalty below MinPenalty is raised to MinPenalty; a negative
	// JitterRatio means no jitter.
	Breaker routetable.Breaker
	// NoBreaker turns failure accrual off: no endpoint is ever ejected. The
	// inbound side uses it: its one endpoint is the application, and
	// ejecting it would turn the application's errors into the proxy's.
	NoBreaker bool
	// Clock is the time source (nil: real time).
	Clock Clock
	// Rand returns uniformly random 64-bit values; it must be safe for concurrent
	// use if the balancer is (nil: math/rand/v2).
	Rand func() uint64
}

// realClock is the wall clock with its monotonic reading.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// settings are what every endpoint of one balancer shares.
type settings struct {
	clock       Clock
	epoch       time.Time // times are stored as nanoseconds since epoch
	rand        func() uint64
	defaultRTT  float64 // ns
	decayNS     float64
	maxFailures int64
	noBreaker   bool
	minPenalty  time.Duration
	maxPenalty  time.Duration
	jitter      float64
}

// now is the clock reading in nanoseconds since the balancer was made.
func (s *settings) now() int64 { return int64(s.clock.Now().Sub(s.epoch)) }

// unit turns a random value into a float64 in [0, 1).
func (s *settings) unit() float64 { return float64(s.rand()>>11) / (1 << 53) }

// penalty is the ejection backoff after k previous consecutive ejections:
// base = min(MinPenalty * 2^k, MaxPenalty), and the wait is
// base * (1 + JitterRatio*u) for u uniform in [0, 1), so it never exceeds
// MaxPenalty * (1 + JitterRatio).
func (s *settings) penalty(k int) time.Duration {
	base := s.minPenalty
	for i := 0; i < k && base < s.maxPenalty; i++ {
		if base > s.maxPenalty/2 {
			base = s.maxPenalty
			break
		}
		base *= 2
	}
	base = min(base, s.maxPenalty)
	if s.jitter <= 0 {
		return base
	}
	return base + time.Duration(float64(base)*s.jitter*s.unit())
}

// endpointSet is one immutable generation of the balancer's endpoints.
type endpointSet struct {
	all   []*Endpoint // every endpoint, in Update order
	ready []*Endpoint // those ready by spec: the only candidates for Pick
}

// Balancer spreads requests over a set of endpoints. It is safe for concurrent
// use; Pick, Endpoint.Start and the Attempt methods take no shared lock.
type Balancer struct {
	cfg    *settings
	set    atomic.Pointer[endpointSet]
	mu     sync.Mutex // serializes Update
	panics atomic.Uint64
}

// New returns a Balancer with no endpoints.
func New(cfg Config) *Balancer {
	s := &settings{
		clock:       cfg.Clock,
		rand:        cfg.Rand,
		defaultRTT:  float64(cfg.DefaultRTT),
		decayNS:     float64(cfg.Decay),
		maxFailures: int64(cfg.Breaker.MaxFailures),
		noBreaker:   cfg.NoBreaker,
		minPenalty:  cfg.Breaker.MinPenalty.D(),
		maxPenalty:  cfg.Breaker.MaxPenalty.D(),
		jitter:      cfg.Breaker.JitterRatio,
	}
	if s.clock == nil {
		s.clock = realClock{}
	}
	if s.rand == nil {
		s.rand = rand.Uint64
	}
	if s.defaultRTT <= 0 {
		s.defaultRTT = float64(DefaultRTT)
	}
	if s.decayNS <= 0 {
		s.decayNS = float64(DefaultDecay)
	}
	if s.maxFailures <= 0 {
		s.maxFailures = DefaultMaxFailures
	}
	if s.minPenalty <= 0 {
		s.minPenalty = DefaultMinPenalty
	}
	if s.maxPenalty <= 0 {
		s.maxPenalty = DefaultMaxPenalty
	}
	if s.maxPenalty < s.minPenalty {
		s.maxPenalty = s.minPenalty
	}
	if s.jitter == 0 {
		s.jitter = DefaultJitterRatio
	}
	s.epoch = s.clock.Now()
	b := &Balancer{cfg: s}
	b.set.Store(&endpointSet{})
	return b
}

// Update replaces the endpoint set atomically. Endpoints whose Address was in the
// previous set keep their load and breaker state (and their *Endpoint); removed
// endpoints are no longer picked, but attempts in flight on them complete
// normally. A repeated Address is ignored after its first occurrence.
func (b *Balancer) Update(eps []routetable.Endpoint) {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := b.set.Load()
	byAddr := make(map[string]*Endpoint, len(old.all))
	for _, e := range old.all {
		byAddr[e.addr] = e
	}
	next := &endpointSet{all: make([]*Endpoint, 0, len(eps))}
	seen := make(map[string]struct{}, len(eps))
	for i := range eps {
		spec := eps[i]
		if _, dup := seen[spec.Address]; dup {
			continue
		}
		seen[spec.Address] = struct{}{}
		// Own the spec: the caller may reuse its slices and maps.
		if spec.Ready != nil {
			r := *spec.Ready
			spec.Ready = &r
		}
		spec.Labels = maps.Clone(spec.Labels)
		e := byAddr[spec.Address]
		if e == nil {
			e = newEndpoint(b.cfg, spec.Address)
		}
		e.setSpec(&spec)
		next.all = append(next.all, e)
		if spec.IsReady() {
			next.ready = append(next.ready, e)
		}
	}
	b.set.Store(next)
}

// Endpoints returns the current set, ready or not (for metrics). The slice is a
// copy; the endpoints are live.
func (b *Balancer) Endpoints() []*Endpoint {
	all := b.set.Load().all
	out := make([]*Endpoint, len(all))
	copy(out, all)
	return out
}

// ReadyCount is how many endpoints are ready by spec and not ejected by the
// breaker right now: the ones Pick prefers.
func (b *Balancer) ReadyCount() int {
	set := b.set.Load()
	now := b.cfg.now()
	n := 0
	for _, e := range set.ready {
		if e.breakerReady(now) {
			n++
		}
	}
	return n
}

// SpecReadyCount is how many endpoints are ready by spec, ejected or not: the
// ones Pick falls back to when the breaker has ejected them all.
func (b *Balancer) SpecReadyCount() int { return len(b.set.Load().ready) }

// Pick chooses the endpoint for one request: with no ready endpoint it fails,
// with one it returns it, otherwise it draws two distinct ready endpoints at
// random and returns the one with the lower Cost (the first on a tie). The caller
// then calls Start on it. Pick does not allocate.
//
// When the breaker has ejected every endpoint that is ready by spec, Pick
// panics as Envoy's load balancer does below its panic threshold: it picks
// among them anyway (the attempt's outcome does not accrue, a due probe still
// decides the breaker). Ejection exists to move traffic to healthier
// endpoints; with none left it would only turn a backend's partial failures
// into total ones — a lone replica failing half its requests would fail all of
// them. A route still prefers a backend with non-ejected endpoints (ReadyCount),
// so a canary whose endpoints are ejected loses its share to the primary.
func (b *Balancer) Pick() (*Endpoint, error) {
	set := b.set.Load()
	cand := set.ready
	if len(cand) == 0 {
		if len(set.all) == 0 {
			return nil, ErrNoEndpoints
		}
		return nil, ErrNoReadyEndpoints
	}
	now := b.cfg.now()
	if len(cand) == 1 {
		if !cand[0].breakerReady(now) {
			b.panics.Add(1)
		}
		return cand[0], nil
	}
	// Rejection sampling: a uniformly random distinct pair, accepted when both
	// are ready, is a uniformly random pair of ready endpoints. When the breaker
	// has shut many endpoints, fall back to counting.
	n := uint32(len(cand))
	for range 2 {
		i, j := pair(b.cfg.rand(), n)
		x, y := cand[i], cand[j]
		if x.breakerReady(now) && y.breakerReady(now) {
			return cheaper(x, y, now), nil
		}
	}
	if e := b.pickCounting(cand, now); e != nil {
		return e, nil
	}
	b.panics.Add(1)
	i, j := pair(b.cfg.rand(), n)
	return cheaper(cand[i], cand[j], now), nil
}

// Panics is how many picks found every endpoint ready by spec ejected and
// chose one anyway (see Pick).
func (b *Balancer) Panics() uint64 { return b.panics.Load() }

// pickCounting is Pick's slow path: it counts the ready endpoints and draws a
// pair by rank among them; nil when the breaker has shut them all.
func (b *Balancer) pickCounting(cand []*Endpoint, now int64) *Endpoint {
	var first *Endpoint
	ready := 0
	for _, e := range cand {
		if e.breakerReady(now) {
			if first == nil {
				first = e
			}
			ready++
		}
	}
	switch ready {
	case 0:
		return nil
	case 1:
		return first
	}
	i, j := pair(b.cfg.rand(), uint32(ready))
	var x, y *Endpoint
	rank := uint32(0)
	for _, e := range cand {
		if !e.breakerReady(now) {
			continue
		}
		switch rank {
		case i:
			x = e
		case j:
			y = e
		}
		rank++
	}
	// Readiness may change under us (a concurrent probe, say); make do.
	switch {
	case x != nil && y != nil:
		return cheaper(x, y, now)
	case x != nil:
		return x
	case y != nil:
		return y
	}
	return first
}

// pair maps one random value to two distinct indices in [0, n), n >= 2.
func pair(r uint64, n uint32) (i, j uint32) {
	i = uint32((r & 0xffffffff) * uint64(n) >> 32)
	j = uint32((r >> 32) * uint64(n-1) >> 32)
	if j >= i {
		j++
	}
	return i, j
}

// cheaper returns the endpoint with the lower cost, x on a tie.
func cheaper(x, y *Endpoint, now int64) *Endpoint {
	if y.cost(now) < x.cost(now) {
		return y
	}
	return x
}
