package balance

import (
	"math"
	"sync"
	"sync/atomic"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

// Endpoint is one address of the balancer's set, with its load estimate and
// circuit breaker. The same *Endpoint survives Updates that keep its Address.
type Endpoint struct {
	cfg  *settings
	addr string

	spec      atomic.Pointer[routetable.Endpoint]
	specReady atomic.Bool
	pending   atomic.Int64

	mu    sync.Mutex // guards rtt and rttAt
	rtt   float64    // PeakEWMA estimate, ns
	rttAt int64      // when rtt was last updated, ns since the epoch

	brk breaker
}

func newEndpoint(cfg *settings, addr string) *Endpoint {
	return &Endpoint{cfg: cfg, addr: addr, rtt: cfg.defaultRTT, rttAt: cfg.now()}
}

func (e *Endpoint) setSpec(spec *routetable.Endpoint) {
	e.spec.Store(spec)
	e.specReady.Store(spec.IsReady())
}

// Spec is the endpoint as last given to Update. Its Labels must not be modified.
func (e *Endpoint) Spec() routetable.Endpoint { return *e.spec.Load() }

// Addr is the endpoint's host:port.
func (e *Endpoint) Addr() string { return e.addr }

// Ready reports whether Pick may choose the endpoint: it is ready by spec and its
// breaker is open, or on probation with no probe in flight.
func (e *Endpoint) Ready() bool {
	return e.specReady.Load() && e.breakerReady(e.cfg.now())
}

// Pending is the number of attempts started and not yet done.
func (e *Endpoint) Pending() int { return int(e.pending.Load()) }

// Cost is the PeakEWMA load: the RTT estimate in nanoseconds, decayed toward
// zero for the time since it was last updated, times (pending+1). Like tower's
// load, reading it stores the decayed estimate.
func (e *Endpoint) Cost() float64 { return e.cost(e.cfg.now()) }

func (e *Endpoint) cost(now int64) float64 {
	pending := e.pending.Load()
	e.mu.Lock()
	est := e.observeLocked(0, now)
	e.mu.Unlock()
	return est * float64(pending+1)
}

// observeLocked feeds one RTT sample (ns; 0 only decays) into the estimate and
// returns the new estimate. e.mu must be held.
func (e *Endpoint) observeLocked(rtt float64, now int64) float64 {
	if e.rtt < rtt {
		// Peak: the worst recent latency is the estimate.
		e.rtt = rtt
	} else {
		elapsed := max(now-e.rttAt, 0)
		decay := math.Exp(-float64(elapsed) / e.cfg.decayNS)
		e.rtt = e.rtt*decay + rtt*(1-decay)
	}
	if now > e.rttAt {
		e.rttAt = now
	}
	return e.rtt
}

// State names the endpoint's condition for metrics and debugging: "ready",
// "pending" (unready by spec), "ejected" (breaker shut, backing off) or
// "probation" (backoff over, one probe request allowed).
func (e *Endpoint) State() string {
	if !e.specReady.Load() {
		return "pending"
	}
	return e.brk.phase(e.cfg.now())
}

// Start records the beginning of one attempt on the endpoint: pending grows by
// one, and if the endpoint is on probation the attempt becomes its probe. Every
// Attempt must end with Done.
func (e *Endpoint) Start() *Attempt {
	e.pending.Add(1)
	now := e.cfg.now()
	a := &Attempt{ep: e, start: now}
	a.kind, a.brkState = e.brk.start(now)
	return a
}

func (e *Endpoint) breakerReady(now int64) bool { return e.brk.ready(now) }

// Attempt is one request in flight on an Endpoint.
type Attempt struct {
	ep       *Endpoint
	start    int64
	brkState uint64
	kind     attemptKind
	sampled  atomic.Bool
	done     atomic.Bool
}

// FirstByte records that the first response byte arrived: the RTT sample is the
// time since Start. Only the first call counts.
func (a *Attempt) FirstByte() {
	if !a.sampled.CompareAndSwap(false, true) {
		return
	}
	a.sample(a.ep.cfg.now())
}

func (a *Attempt) sample(now int64) {
	rtt := float64(max(now-a.start, 0))
	e := a.ep
	e.mu.Lock()
	e.observeLocked(rtt, now)
	e.mu.Unlock()
}

// Done ends the attempt: pending shrinks by one, the RTT is sampled now if
// FirstByte never was, and the outcome feeds the breaker (failed counts toward
// the consecutive-failure limit, success resets it; outcomes of attempts started
// or finished while the breaker was shut are ignored, except the probe's). Only
// the first call counts.
func (a *Attempt) Done(failed bool) {
	if !a.done.CompareAndSwap(false, true) {
		return
	}
	e := a.ep
	now := e.cfg.now()
	if a.sampled.CompareAndSwap(false, true) {
		a.sample(now)
	}
	e.pending.Add(-1)
	e.brk.done(e.cfg, a.kind, a.brkState, failed, now)
}
