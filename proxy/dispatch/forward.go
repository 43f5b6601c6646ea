package dispatch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/proxy/balance"
	"github.com/sluicehq/sluice/proxy/metrics"
	"github.com/sluicehq/sluice/proxy/retry"
	"github.com/sluicehq/sluice/proxy/route"
)

// gRPC status codes the proxy answers with.
const (
	GRPCOK                = 0
	GRPCCanceled          = 1
	GRPCDeadlineExceeded  = 4
	GRPCNotFound          = 5
	GRPCPermissionDenied  = 7
	GRPCResourceExhausted = 8
	GRPCInternal          = 13
	GRPCUnavailable       = 14
)

// Error is a response the proxy makes itself. Protocol servers write it as HTTP
// status Status with a `sluice-proxy-error: Reason` header, or for gRPC as a
// trailers-only response with grpc-status GRPC and grpc-message Reason.
type Error struct {
	Status int
	GRPC   int
	Reason string
	// Unprocessed says the request never reached the endpoint (it could not
	// be connected to), so sending it elsewhere is safe. Written responses
	// carry HeaderUnprocessed: the mesh peer that sent the request retries
	// it on another endpoint (an inbound proxy whose application is gone,
	// as when a pod shuts down, answers so).
	Unprocessed bool
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s", e.Status, e.Reason) }

// Errors the pipeline makes.
var (
	errNoRoute        = &Error{Status: 404, GRPC: GRPCNotFound, Reason: "no route matched the request"}
	errUnknownSvc     = &Error{Status: 503, GRPC: GRPCUnavailable, Reason: "service does not exist"}
	errAllZero        = &Error{Status: 503, GRPC: GRPCUnavailable, Reason: "no backend available: every weight is 0 or no backend is ready"}
	errInvalidRule    = &Error{Status: 500, GRPC: GRPCInternal, Reason: "route rule has no backends"}
	errInvalidBackend = &Error{Status: 500, GRPC: GRPCInternal, Reason: "invalid backend reference in route"}
)

// StatusClientClosed is what an attempt reports when the client went away
// before the response was complete (nginx's 499): not an endpoint failure.
const StatusClientClosed = 499

// HeaderName is the header that carries the reason of a proxy-made error.
const HeaderName = "sluice-proxy-error"

// HeaderUnprocessed marks a proxy-made error for a request that never
// reached its endpoint (Error.Unprocessed).
const HeaderUnprocessed = "sluice-proxy-unprocessed"

// PeerUnprocessed is the error of an attempt whose mesh peer answered with
// HeaderUnprocessed: like a refused connection, it is retried elsewhere.
func PeerUnprocessed(addr, reason string) error {
	return fmt.Errorf("the proxy at %s could not reach its application (%s): %w", addr, reason, syscall.ECONNREFUSED)
}

// AsError turns whatever ended an attempt into the response the client gets.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	var pe *Error
	if errors.As(err, &pe) {
		return pe
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Status: 504, GRPC: GRPCDeadlineExceeded, Reason: "request timeout"}
	case errors.Is(err, context.Canceled):
		// The client went away; 499-style, but only metrics ever see it.
		return &Error{Status: 502, GRPC: GRPCCanceled, Reason: "request canceled"}
	case errors.Is(err, balance.ErrNoEndpoints):
		return &Error{Status: 503, GRPC: GRPCUnavailable, Reason: "no endpoints"}
	case errors.Is(err, balance.ErrNoReadyEndpoints):
		return &Error{Status: 503, GRPC: GRPCUnavailable, Reason: "no ready endpoints"}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &Error{Status: 504, GRPC: GRPCDeadlineExceeded, Reason: "upstream timeout: " + err.Error()}
	}
	if IsConnectError(err) {
		return &Error{Status: 502, GRPC: GRPCUnavailable, Reason: err.Error(), Unprocessed: true}
	}
	return &Error{Status: 502, GRPC: GRPCUnavailable, Reason: "upstream: " + err.Error()}
}

// IsConnectError reports whether err happened before a request could be sent:
// such a failure is always safe to retry elsewhere.
func IsConnectError(err error) bool {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// Resolver decides which service an HTTP request belongs to, from its authority.
type Resolver interface {
	Resolve(authority string) (*Service, *Error)
}

// RequestResolver is a Resolver that also looks at a request's method and
// path (without the query): the inbound side's authorization needs them to
// let the kubelet's probes through. The HTTP servers call ResolveRequest,
// which uses it when their resolver implements it.
type RequestResolver interface {
	Resolver
	ResolveRequest(method, path, authority string) (*Service, *Error)
}

// ResolveRequest resolves a request with r: by method, path and authority
// when r is a RequestResolver, else by authority alone.
func ResolveRequest(r Resolver, method, path, authority string) (*Service, *Error) {
	if rr, ok := r.(RequestResolver); ok {
		return rr.ResolveRequest(method, path, authority)
	}
	return r.Resolve(authority)
}

// ResolverFunc adapts a function to Resolver.
type ResolverFunc func(authority string) (*Service, *Error)

// Resolve calls f.
func (f ResolverFunc) Resolve(authority string) (*Service, *Error) { return f(authority) }

// Fixed resolves every request to the service with the given key, whatever its
// authority: the resolver of explicit listeners and of the inbound side.
func (d *Dispatcher) Fixed(key string) Resolver {
	return ResolverFunc(func(string) (*Service, *Error) {
		if svc := d.Service(key); svc != nil {
			return svc, nil
		}
		return nil, &Error{Status: 503, GRPC: GRPCUnavailable, Reason: fmt.Sprintf("service %s does not exist", key)}
	})
}

// ForOriginalDst resolves requests of a connection intercepted on its way to
// orig: the service claiming that address, else the service the authority names,
// else the original address itself.
func (d *Dispatcher) ForOriginalDst(orig netip.AddrPort) Resolver {
	return ResolverFunc(func(authority string) (*Service, *Error) {
		if svc := d.LookupAddr(orig); svc != nil {
			return svc, nil
		}
		if svc := d.LookupAuthority(authority); svc != nil {
			return svc, nil
		}
		return d.Passthrough(orig.String()), nil
	})
}

// ByAuthority resolves requests by their authority alone.
func (d *Dispatcher) ByAuthority() Resolver {
	return ResolverFunc(func(authority string) (*Service, *Error) {
		if svc := d.LookupAuthority(authority); svc != nil {
			return svc, nil
		}
		return nil, &Error{Status: 503, GRPC: GRPCUnavailable, Reason: fmt.Sprintf("no service is known for authority %q", authority)}
	})
}

// Plan is the routing decision for one request.
type Plan struct {
	Service *Service
	// Rule is the matched rule: the filters (headers, rewrite, redirect, mirrors) to apply.
	Rule *route.Rule
	// Retry is the rule's retry policy; nil means none.
	Retry *retry.Policy
	// RequestTimeout bounds the whole exchange and AttemptTimeout each try; 0 is none.
	RequestTimeout, AttemptTimeout time.Duration
	// GRPC is true for gRPC requests.
	GRPC bool

	info *ruleInfo
}

// Route matches a request to a rule of svc.
func (d *Dispatcher) Route(svc *Service, req route.Request, grpc bool) (*Plan, *Error) {
	if !svc.Spec.Known() {
		return nil, errUnknownSvc
	}
	r := svc.routes.Match(req)
	if r == nil {
		return nil, errNoRoute
	}
	if r.Invalid() {
		return nil, errInvalidRule
	}
	p := &Plan{Service: svc, Rule: r, GRPC: grpc}
	if ri := svc.rules[r.Spec]; ri != nil {
		p.info = ri
		p.Retry = ri.retry
		p.RequestTimeout = ri.requestTimeout
		p.AttemptTimeout = ri.attemptTimeout
	}
	return p, nil
}

// Target is the destination of one attempt.
type Target struct {
	// Backend is the weighted backend picked; its header filters apply.
	Backend *routetable.Backend
	// Service is the backend service.
	Service *Service
	// Endpoint is where to connect.
	Endpoint *balance.Endpoint

	stats *metrics.HTTPStats
}

// AttemptFunc performs one try of a request to t. It must call att.FirstByte when
// response headers arrive. See Result for what it reports.
type AttemptFunc func(ctx context.Context, t *Target, att *balance.Attempt, last bool) Result

// Result is the outcome of an attempt, and of Forward.
type Result struct {
	// Status is the HTTP status received (0 when none).
	Status int
	// GRPCStatus is the gRPC status, -1 when unknown or not gRPC.
	GRPCStatus int
	// Err is a transport failure, or a proxy-made *Error.
	Err error
	// Retryable says the failure is safe to try again: nothing reached the client
	// and the upstream did not process the request or answered a retryable status.
	Retryable bool
	// Written says some of the response reached the client: no more attempts.
	Written bool
	// Latency is the time to response headers; Forward measures it when zero.
	Latency time.Duration
}

func (r *Result) failed() bool {
	// As Linkerd classifies: a 5xx, a transport error, or any gRPC status but OK.
	return r.Err != nil || r.Status >= 500 || r.GRPCStatus > 0
}

// pick chooses a backend of the plan's rule by weight, then one of its endpoints.
func (d *Dispatcher) pick(p *Plan, avoid *balance.Endpoint, peer *Peer) (*Target, *Error) {
	snap := d.snap.Load()
	balancerOf := func(key string) *balance.Balancer {
		svc := snap.services[key]
		if svc == nil && key == p.Service.key {
			svc = p.Service
		}
		if svc == nil {
			return nil
		}
		return svc.balancer
	}
	// Backends with endpoints the breaker has not ejected first; when the
	// breaker has ejected every ready endpoint of every backend, split by weight
	// over the backends with endpoints ready by spec (the balancers panic, see
	// balance.Balancer.Pick) rather than failing every request. An invalid
	// backend (key "") takes its share and answers 500.
	b, ok := p.Rule.PickBackend(func(key string) bool {
		bal := balancerOf(key)
		return key == "" || bal != nil && bal.ReadyCount() > 0
	}, rnd)
	if !ok {
		b, ok = p.Rule.PickBackend(func(key string) bool {
			bal := balancerOf(key)
			return key == "" || bal != nil && bal.SpecReadyCount() > 0
		}, rnd)
	}
	if !ok {
		// Nothing ready: if weights are positive but endpoints are missing, say so.
		if len(p.Rule.Spec.Backends) == 1 {
			return d.pickService(p.Rule.Spec.Backends[0].Service, p.Service, &p.Rule.Spec.Backends[0], avoid, peer)
		}
		return nil, errAllZero
	}
	return d.pickService(b.Service, p.Service, b, avoid, peer)
}

// pickService picks an endpoint of the service named key.
// A retry after a failed connect avoids the endpoint that just failed when the
// service has another ready one.
func (d *Dispatcher) pickService(key string, parent *Service, b *routetable.Backend, avoid *balance.Endpoint, peer *Peer) (*Target, *Error) {
	if key == "" {
		return nil, errInvalidBackend
	}
	svc := d.Service(key)
	if svc == nil {
		if parent != nil && key == parent.key {
			svc = parent
		} else {
			return nil, &Error{Status: 500, GRPC: GRPCInternal, Reason: fmt.Sprintf("backend service %s is unknown", key)}
		}
	}
	ep, err := svc.balancer.Pick()
	if err == nil && ep == avoid && svc.balancer.ReadyCount() > 1 {
		ep = otherEndpoint(svc.balancer, avoid)
	}
	if err != nil {
		e := AsError(err)
		e.Reason += " for " + key
		return nil, e
	}
	return &Target{Backend: b, Service: svc, Endpoint: ep, stats: d.statsFor(svc, ep, peer)}, nil
}

// otherEndpoint returns a ready endpoint of b other than avoid, or avoid if
// there is none. P2C cannot be asked twice: an endpoint that failed to connect
// at once has the lowest cost, and with two endpoints both are always the
// candidates, so it would be chosen again.
func otherEndpoint(b *balance.Balancer, avoid *balance.Endpoint) *balance.Endpoint {
	eps := b.Endpoints()
	start := int(rnd() % uint64(len(eps)))
	for i := range eps {
		if e := eps[(start+i)%len(eps)]; e != avoid && e.Ready() {
			return e
		}
	}
	return avoid
}

// PickTarget picks one endpoint of a service, for request mirroring.
func (d *Dispatcher) PickTarget(serviceKey string) (*Target, *Error) {
	return d.pickService(serviceKey, nil, nil, nil, nil)
}

// Forward runs the attempt loop for a routed request. replayable says the request
// body can be sent again (buffered, or none). It returns the final Result; when
// that is not Written and has an Err, the caller writes AsError(Err).
func (d *Dispatcher) Forward(ctx context.Context, p *Plan, replayable bool, fn AttemptFunc) Result {
	start := d.clock.Now()
	peer := PeerFrom(ctx)
	if p.RequestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.RequestTimeout)
		defer cancel()
	}
	budget := p.Service.budget
	if budget != nil {
		budget.Deposit()
	}
	statusRetries := 0
	if replayable {
		statusRetries = p.Retry.MaxRetries()
	}
	// A failure to connect is retried on another endpoint even without a policy.
	connectRetries := max(statusRetries, 1)

	clientCtx := ctx
	var res Result
	var avoid *balance.Endpoint
	for attempt := 0; ; attempt++ {
		t, perr := d.pick(p, avoid, peer)
		if perr != nil {
			res = Result{Err: perr, GRPCStatus: -1}
			st := d.serviceStats(p.Service, peer)
			st.Request()
			st.Response(perr.Status, grpcLabel(p, perr.GRPC), true, "proxy", d.clock.Now().Sub(start))
			break
		}
		actx, acancel := ctx, context.CancelFunc(func() {})
		if p.AttemptTimeout > 0 {
			actx, acancel = context.WithTimeout(ctx, p.AttemptTimeout)
		}
		att := t.Endpoint.Start()
		t.stats.Request()
		t0 := d.clock.Now()
		// The last attempt forwards whatever it gets, and so does one after
		// which the budget would refuse a retry.
		last := attempt >= statusRetries || (budget != nil && !budget.CanWithdraw())
		res = fn(actx, t, att, last)
		attemptTimedOut := actx.Err() == context.DeadlineExceeded && ctx.Err() == nil
		acancel()
		if res.Err != nil && !res.Written {
			switch {
			case ctx.Err() == context.DeadlineExceeded:
				res.Err = &Error{Status: 504, GRPC: GRPCDeadlineExceeded, Reason: fmt.Sprintf("request timeout of %s exceeded", p.RequestTimeout)}
				res.Retryable = false
				d.countTimeout(p, "request")
			case attemptTimedOut:
				res.Err = &Error{Status: 504, GRPC: GRPCDeadlineExceeded, Reason: fmt.Sprintf("backend request timeout of %s exceeded", p.AttemptTimeout)}
				res.Retryable = statusRetries > 0
				d.countTimeout(p, "backend_request")
			}
		}
		// A client that went away is not the endpoint's fault.
		clientGone := clientCtx.Err() == context.Canceled || res.Status == StatusClientClosed
		att.Done(res.failed() && !clientGone)
		if res.Err != nil && IsConnectError(res.Err) {
			avoid = t.Endpoint
		}
		latency := res.Latency
		if latency == 0 {
			latency = d.clock.Now().Sub(t0)
		}
		status, errLabel := res.Status, ""
		if clientGone {
			status, errLabel = StatusClientClosed, "client_closed"
		} else if res.Err != nil && res.Status == 0 {
			pe := AsError(res.Err)
			status, errLabel = pe.Status, "proxy"
		}
		t.stats.Response(status, res.GRPCStatus, res.failed(), errLabel, latency)

		if res.Written || !res.Retryable || ctx.Err() != nil {
			break
		}
		limit := statusRetries
		if res.Err != nil && IsConnectError(res.Err) {
			limit = connectRetries
		}
		if attempt >= limit {
			if p.info != nil && limit > 0 {
				p.info.retryExhausted.Inc()
			}
			break
		}
		if budget != nil && !budget.Withdraw() {
			if p.info != nil {
				p.info.retryBudget.Inc()
			}
			break
		}
		if p.info != nil {
			p.info.retries.Inc()
		}
		if !sleepCtx(ctx, p.Retry.Backoff(attempt+1, rand01)) {
			break
		}
	}
	if res.Err != nil && !res.Written && ctx.Err() == context.DeadlineExceeded {
		if _, ok := res.Err.(*Error); !ok {
			res.Err = &Error{Status: 504, GRPC: GRPCDeadlineExceeded, Reason: fmt.Sprintf("request timeout of %s exceeded", p.RequestTimeout)}
		}
	}
	if !res.Written && res.Err == nil && res.Retryable {
		// A retryable status was discarded but no retry followed: surface it.
		res.Err = &Error{Status: 503, GRPC: GRPCUnavailable, Reason: "retries exhausted"}
	}
	return res
}

// grpcLabel is the gRPC status to record for a proxy-made error.
func grpcLabel(p *Plan, code int) int {
	if p.GRPC {
		return code
	}
	return -1
}

func (d *Dispatcher) countTimeout(p *Plan, kind string) {
	if p.info != nil {
		p.info.timeouts[kind].Inc()
	}
}

// sleepCtx waits for d or until ctx ends; it reports whether the wait completed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func rand01() float64 { return float64(rnd()>>11) / (1 << 53) }
