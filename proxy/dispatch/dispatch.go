// Package dispatch is the request pipeline the proxy's HTTP/1 and HTTP/2 servers
// share: it holds the routing state (services, compiled route tables and endpoint
// balancers) as a copy-on-write snapshot, decides where a request goes, and runs
// the attempt loop with timeouts, retries, the retry budget and golden metrics.
// The protocol servers only move bytes; every routing rule lives here.
package dispatch

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/proxy/balance"
	"github.com/sluicehq/sluice/proxy/metrics"
	"github.com/sluicehq/sluice/proxy/retry"
	"github.com/sluicehq/sluice/proxy/route"
)

// Clock tells the time; tests use a fake one.
type Clock interface{ Now() time.Time }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Options configure a Dispatcher.
type Options struct {
	// Direction is "inbound" or "outbound"; it labels every metric.
	Direction string
	// Metrics receives the golden metrics; nil creates a private registry.
	Metrics *metrics.Registry
	// Logger receives routing problems; nil uses slog.Default().
	Logger *slog.Logger
	// Clock is the time source; nil uses real time.
	Clock Clock
	// Balancer is the template for every service's balancer (RTT default, decay).
	Balancer balance.Config
	// BudgetRatio, BudgetMinPerSecond and BudgetWindow size each service's retry
	// budget (defaults 0.2, 10 and 10 s).
	BudgetRatio        float64
	BudgetMinPerSecond int
	BudgetWindow       time.Duration
	// StaticLabels are extra labels on the series of requests that carry no
	// Peer (see WithPeer); a request's Peer labels replace them. Inbound, they
	// are the labels of a plain-text client (tls, no_tls_reason).
	StaticLabels metrics.Labels
	// EndpointLabels, when set, returns extra labels of the series of one
	// endpoint: outbound, the TLS labels (tls, server_id or no_tls_reason)
	// that depend on the endpoint's identity. It is called when an endpoint's
	// series are first needed (once per endpoint and Peer), not per request.
	EndpointLabels func(ep *routetable.Endpoint) metrics.Labels
}

// Dispatcher routes requests to services, endpoints and attempts.
type Dispatcher struct {
	opts    Options
	log     *slog.Logger
	clock   Clock
	metrics *metrics.Registry

	snap atomic.Pointer[snapshot]

	// mu serialises Update and owns the state that survives snapshots.
	mu          sync.Mutex
	balancers   map[string]*balance.Balancer
	budgets     map[string]*retry.Budget
	unregister  map[string]func()
	passthrough sync.Map // "ip:port" -> *Service

	endpointStats sync.Map // *balance.Endpoint -> *endpointStats
}

// endpointStats are the metrics handles of one endpoint: one for requests
// that carry no Peer, one per Peer for the others.
type endpointStats struct {
	def    atomic.Pointer[metrics.HTTPStats]
	byPeer sync.Map // *Peer -> *metrics.HTTPStats
}

// snapshot is one immutable view of the routing state.
type snapshot struct {
	services    map[string]*Service
	byAuthority map[string]*Service
	byAddr      map[string]*Service
}

// Service is one routable service port: its spec, compiled route table and balancer.
type Service struct {
	// Spec is the service as configured.
	Spec *routetable.Service

	key      string
	routes   *route.Table
	balancer *balance.Balancer
	budget   *retry.Budget
	rules    map[*routetable.Rule]*ruleInfo
	stats    *metrics.HTTPStats // for errors the proxy makes before an endpoint is chosen
	authTag  string

	peerStats sync.Map // *Peer -> *metrics.HTTPStats, stats for requests with a Peer
}

// Key is the service's canonical identity, "name.namespace:port".
func (s *Service) Key() string { return s.key }

// Balancer is the service's endpoint balancer.
func (s *Service) Balancer() *balance.Balancer { return s.balancer }

// ruleInfo is what a rule needs at request time, compiled once per update.
type ruleInfo struct {
	retry          *retry.Policy
	requestTimeout time.Duration
	attemptTimeout time.Duration
	retries        *metrics.Counter
	retryExhausted *metrics.Counter
	retryBudget    *metrics.Counter
	timeouts       map[string]*metrics.Counter
}

// New returns a Dispatcher with no services.
func New(opts Options) *Dispatcher {
	if opts.Direction == "" {
		opts.Direction = "outbound"
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.NewRegistry(nil)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Clock == nil {
		opts.Clock = realClock{}
	}
	if opts.Balancer.Clock == nil {
		opts.Balancer.Clock = opts.Clock
	}
	d := &Dispatcher{
		opts:       opts,
		log:        opts.Logger,
		clock:      opts.Clock,
		metrics:    opts.Metrics,
		balancers:  map[string]*balance.Balancer{},
		budgets:    map[string]*retry.Budget{},
		unregister: map[string]func(){},
	}
	d.snap.Store(&snapshot{services: map[string]*Service{}, byAuthority: map[string]*Service{}, byAddr: map[string]*Service{}})
	return d
}

// Metrics is the registry the dispatcher records into.
func (d *Dispatcher) Metrics() *metrics.Registry { return d.metrics }

// Direction is "inbound" or "outbound".
func (d *Dispatcher) Direction() string { return d.opts.Direction }

// Update compiles a new table and swaps it in atomically. Nothing changes when the
// table is invalid: the error names every service and rule that failed. Services
// that survive keep their balancer (load and breaker state) and retry budget, so
// requests in flight are unaffected.
func (d *Dispatcher) Update(t *routetable.Table) error {
	d.mu.Lock()
	defer d.mu.Unlock()

	next := &snapshot{
		services:    make(map[string]*Service, len(t.Services)),
		byAuthority: map[string]*Service{},
		byAddr:      map[string]*Service{},
	}
	var problems []string
	for i := range t.Services {
		spec := t.Services[i] // copy: the snapshot owns its specs
		key := spec.Key()
		if _, dup := next.services[key]; dup {
			problems = append(problems, fmt.Sprintf("services[%d]: duplicate service %q", i, key))
			continue
		}
		rt, err := route.NewTable(&spec)
		if err != nil {
			problems = append(problems, fmt.Sprintf("services[%d] (%s): %v", i, key, err))
			continue
		}
		svc := &Service{Spec: &spec, key: key, routes: rt, rules: map[*routetable.Rule]*ruleInfo{}}
		for j := range spec.Rules {
			ri, err := d.compileRule(&spec, &spec.Rules[j])
			if err != nil {
				problems = append(problems, fmt.Sprintf("services[%d] (%s): rules[%d]: %v", i, key, j, err))
				continue
			}
			svc.rules[&spec.Rules[j]] = ri
		}
		next.services[key] = svc
		for _, a := range spec.Authorities() {
			next.byAuthority[strings.ToLower(a)] = svc
		}
		for _, a := range spec.Addresses {
			ap, err := netip.ParseAddrPort(a)
			if err != nil {
				problems = append(problems, fmt.Sprintf("services[%d] (%s): addresses: %q is not ip:port", i, key, a))
				continue
			}
			next.byAddr[ap.String()] = svc
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("invalid route table, keeping the previous one: %s", strings.Join(problems, "; "))
	}

	// Commit: attach persistent balancers and budgets, drop the ones that left.
	for key, svc := range next.services {
		b, ok := d.balancers[key]
		if !ok {
			cfg := d.opts.Balancer
			if svc.Spec.Breaker != nil {
				cfg.Breaker = *svc.Spec.Breaker
			}
			b = balance.New(cfg)
			d.balancers[key] = b
			d.budgets[key] = retry.NewBudget(d.opts.BudgetRatio, d.opts.BudgetMinPerSecond, d.opts.BudgetWindow, d.clock.Now)
			d.unregister[key] = d.registerEndpointGauge(key, b)
		}
		b.Update(svc.Spec.Endpoints)
		svc.balancer = b
		svc.budget = d.budgets[key]
		svc.authTag = authorityLabel(svc.Spec)
		svc.stats = d.metrics.HTTP(d.opts.Direction, d.serviceLabels(svc, nil))
	}
	for key, b := range d.balancers {
		if _, ok := next.services[key]; ok {
			continue
		}
		for _, ep := range b.Endpoints() {
			d.endpointStats.Delete(ep)
		}
		d.unregister[key]()
		delete(d.balancers, key)
		delete(d.budgets, key)
		delete(d.unregister, key)
	}
	d.snap.Store(next)
	return nil
}

// compileRule prepares a rule's retry policy, timeouts and counters.
func (d *Dispatcher) compileRule(svc *routetable.Service, r *routetable.Rule) (*ruleInfo, error) {
	pol, err := retry.NewPolicy(r.Retry)
	if err != nil {
		return nil, fmt.Errorf("retry: %w", err)
	}
	routeName := r.Route
	if routeName == "" {
		routeName = "default"
	}
	labels := metrics.Labels{
		{Name: "direction", Value: d.opts.Direction},
		{Name: "service", Value: svc.Key()},
		{Name: "route", Value: routeName},
		{Name: "rule", Value: fmt.Sprint(r.RuleIndex)},
	}
	ri := &ruleInfo{
		retry:          pol,
		requestTimeout: r.Timeouts.Request.D(),
		attemptTimeout: r.Timeouts.BackendRequest.D(),
		retries:        d.metrics.Counter("route_retry_requests_total", "Retries sent by the proxy.", labels),
		retryExhausted: d.metrics.Counter("route_retry_limit_exceeded_total", "Requests whose retries were exhausted.", labels),
		retryBudget:    d.metrics.Counter("route_retry_overflow_total", "Retries not sent because the retry budget was spent.", labels),
		timeouts:       map[string]*metrics.Counter{},
	}
	for _, kind := range []string{"request", "backend_request"} {
		l := append(append(metrics.Labels{}, labels...), metrics.Label{Name: "timeout", Value: kind})
		ri.timeouts[kind] = d.metrics.Counter("route_timeouts_total", "Requests that hit a route timeout.", l)
	}
	return ri, nil
}

// registerEndpointGauge exposes a service's endpoints by state, and how often
// its balancer picked an ejected endpoint because every one was ejected. Each
// service feeds the two families under its own key, so services do not
// replace each other's series.
func (d *Dispatcher) registerEndpointGauge(key string, b *balance.Balancer) func() {
	labels := metrics.Labels{
		{Name: "direction", Value: d.opts.Direction},
		{Name: "service", Value: key},
	}
	unregState := d.metrics.GaugeFuncKey("balancer_endpoints", key, "Endpoints of a service by state.", func(emit func(metrics.Labels, float64)) {
		counts := map[string]int{"ready": 0, "pending": 0, "ejected": 0, "probation": 0}
		for _, ep := range b.Endpoints() {
			counts[ep.State()]++
		}
		for _, state := range []string{"ready", "pending", "ejected", "probation"} {
			l := append(append(metrics.Labels{}, labels...), metrics.Label{Name: "endpoint_state", Value: state})
			emit(l, float64(counts[state]))
		}
	})
	unregPanics := d.metrics.CounterFuncKey("balancer_panic_total", key, "Requests sent to an ejected endpoint because the breaker had ejected every ready endpoint of the service.", func(emit func(metrics.Labels, float64)) {
		emit(labels, float64(b.Panics()))
	})
	return func() { unregState(); unregPanics() }
}

// authorityLabel is the authority a service is known by in metrics.
func authorityLabel(s *routetable.Service) string {
	ns := s.Namespace
	if ns == "" {
		ns = "default"
	}
	return fmt.Sprintf("%s.%s.svc.cluster.local:%d", s.Name, ns, s.Port)
}

// Service returns the service with the given key, or nil.
func (d *Dispatcher) Service(key string) *Service { return d.snap.Load().services[key] }

// Services returns every service in the current snapshot.
func (d *Dispatcher) Services() []*Service {
	s := d.snap.Load()
	out := make([]*Service, 0, len(s.services))
	for _, svc := range s.services {
		out = append(out, svc)
	}
	return out
}

// LookupAuthority finds the service a Host header names (case-insensitive; with or
// without the port), or nil.
func (d *Dispatcher) LookupAuthority(authority string) *Service {
	s := d.snap.Load()
	if svc := s.byAuthority[authority]; svc != nil {
		return svc
	}
	return s.byAuthority[strings.ToLower(authority)]
}

// LookupAddr finds the service whose virtual address is ap, or nil.
func (d *Dispatcher) LookupAddr(ap netip.AddrPort) *Service {
	return d.snap.Load().byAddr[ap.String()]
}

// Passthrough returns a service that forwards to one address as it is: the target
// of an intercepted connection to an address no service claims.
func (d *Dispatcher) Passthrough(addr string) *Service {
	if v, ok := d.passthrough.Load(addr); ok {
		return v.(*Service)
	}
	spec := &routetable.Service{Name: addr, Namespace: "passthrough", Endpoints: []routetable.Endpoint{{Address: addr}}}
	rt, _ := route.NewTable(spec) // no rules: cannot fail
	cfg := d.opts.Balancer
	b := balance.New(cfg)
	b.Update(spec.Endpoints)
	svc := &Service{
		Spec: spec, key: spec.Key(), routes: rt, balancer: b,
		budget:  retry.NewBudget(d.opts.BudgetRatio, d.opts.BudgetMinPerSecond, d.opts.BudgetWindow, d.clock.Now),
		rules:   map[*routetable.Rule]*ruleInfo{},
		authTag: addr,
	}
	svc.stats = d.metrics.HTTP(d.opts.Direction, d.serviceLabels(svc, nil))
	actual, _ := d.passthrough.LoadOrStore(addr, svc)
	return actual.(*Service)
}

// serviceLabels are the labels of series recorded before an endpoint is
// chosen: the authority (outbound), then the peer's labels or the static ones.
func (d *Dispatcher) serviceLabels(svc *Service, peer *Peer) metrics.Labels {
	l := metrics.Labels{}
	if d.opts.Direction == "outbound" {
		l = append(l, metrics.Label{Name: "authority", Value: svc.authTag})
	}
	return append(l, d.connLabels(peer)...)
}

// connLabels are the labels of the client connection: the peer's, or the
// static ones without a peer.
func (d *Dispatcher) connLabels(peer *Peer) metrics.Labels {
	if peer != nil {
		return peer.labels
	}
	return d.opts.StaticLabels
}

// serviceStats returns the handle for errors made before an endpoint is
// chosen, for requests from peer (nil: none).
func (d *Dispatcher) serviceStats(svc *Service, peer *Peer) *metrics.HTTPStats {
	if peer == nil {
		return svc.stats
	}
	if v, ok := svc.peerStats.Load(peer); ok {
		return v.(*metrics.HTTPStats)
	}
	st := d.metrics.HTTP(d.opts.Direction, d.serviceLabels(svc, peer))
	actual, _ := svc.peerStats.LoadOrStore(peer, st)
	return actual.(*metrics.HTTPStats)
}

// statsFor returns the cached metrics handle for an endpoint of a service, for
// requests from peer (nil: none). Handles are created once and looked up
// without locks or allocation afterwards.
func (d *Dispatcher) statsFor(svc *Service, ep *balance.Endpoint, peer *Peer) *metrics.HTTPStats {
	v, ok := d.endpointStats.Load(ep)
	if !ok {
		v, _ = d.endpointStats.LoadOrStore(ep, &endpointStats{})
	}
	es := v.(*endpointStats)
	if peer == nil {
		if st := es.def.Load(); st != nil {
			return st
		}
		st := d.metrics.HTTP(d.opts.Direction, d.endpointLabels(svc, ep, nil))
		es.def.Store(st) // the registry returns the same handle to a racing store
		return st
	}
	if st, ok := es.byPeer.Load(peer); ok {
		return st.(*metrics.HTTPStats)
	}
	st := d.metrics.HTTP(d.opts.Direction, d.endpointLabels(svc, ep, peer))
	actual, _ := es.byPeer.LoadOrStore(peer, st)
	return actual.(*metrics.HTTPStats)
}

// endpointLabels are the labels of an endpoint's series: the service's, then
// Options.EndpointLabels and, outbound, the endpoint's dst_* labels.
func (d *Dispatcher) endpointLabels(svc *Service, ep *balance.Endpoint, peer *Peer) metrics.Labels {
	spec := ep.Spec()
	l := d.serviceLabels(svc, peer)
	if d.opts.EndpointLabels != nil {
		l = append(l, d.opts.EndpointLabels(&spec)...)
	}
	if d.opts.Direction == "outbound" {
		keys := make([]string, 0, len(spec.Labels))
		for k := range spec.Labels {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			l = append(l, metrics.Label{Name: "dst_" + k, Value: spec.Labels[k]})
		}
		if _, ok := spec.Labels["service"]; !ok {
			l = append(l, metrics.Label{Name: "dst_service", Value: svc.Spec.Name})
		}
	}
	return l
}

// rnd is the random source for weighted picks and mirrors.
func rnd() uint64 { return rand.Uint64() }
