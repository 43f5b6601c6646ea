package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/proxy/balance"
	"github.com/sluicehq/sluice/proxy/metrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func u32(v uint32) *uint32 { return &v }
func boolp(v bool) *bool   { return &v }

// svc is a service of namespace test, port 80, with endpoints at addrs.
func svc(name string, addrs ...string) routetable.Service {
	s := routetable.Service{Name: name, Namespace: "test", Port: 80}
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, routetable.Endpoint{Address: a})
	}
	return s
}

func key(name string) string { return routetable.ServiceKey(name, "test", 80) }

// newDispatcher returns a dispatcher with a fake clock serving services.
func newDispatcher(t *testing.T, opts Options, services ...routetable.Service) (*Dispatcher, *fakeClock) {
	t.Helper()
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	opts.Clock = clock
	opts.Logger = slog.New(slog.DiscardHandler)
	d := New(opts)
	if err := d.Update(&routetable.Table{Services: services}); err != nil {
		t.Fatal(err)
	}
	return d, clock
}

// req is a request as route matching sees it.
type req struct{ method, path string }

func (r req) Method() string               { return r.method }
func (r req) Path() string                 { return r.path }
func (r req) RawQuery() string             { return "" }
func (r req) Header(string) (string, bool) { return "", false }

var get = req{"GET", "/"}

// plan routes get to the service key, failing the test on an error.
func plan(t *testing.T, d *Dispatcher, k string) *Plan {
	t.Helper()
	s := d.Service(k)
	if s == nil {
		t.Fatalf("no service %s", k)
	}
	p, perr := d.Route(s, get, false)
	if perr != nil {
		t.Fatalf("route %s: %v", k, perr)
	}
	return p
}

// call is one attempt as the attempt function saw it.
type call struct {
	addr string
	last bool
}

// script is an AttemptFunc answering from a list of results, recording calls.
type script struct {
	mu      sync.Mutex
	calls   []call
	results []func(ctx context.Context, last bool) Result
}

func (s *script) attempt(ctx context.Context, tg *Target, att *balance.Attempt, last bool) Result {
	s.mu.Lock()
	i := len(s.calls)
	s.calls = append(s.calls, call{tg.Endpoint.Addr(), last})
	fn := s.results[min(i, len(s.results)-1)]
	s.mu.Unlock()
	att.FirstByte()
	return fn(ctx, last)
}

func ok(context.Context, bool) Result { return Result{Status: 200, GRPCStatus: -1, Written: true} }

// status answers code: retryable (discarded) unless the attempt is the last.
func status(code int) func(context.Context, bool) Result {
	return func(_ context.Context, last bool) Result {
		return Result{Status: code, GRPCStatus: -1, Retryable: !last, Written: last}
	}
}

func refused(context.Context, bool) Result {
	return Result{Err: &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, GRPCStatus: -1, Retryable: true}
}

// blocks waits for its context to end, as an upstream that never answers.
func blocks(ctx context.Context, _ bool) Result {
	<-ctx.Done()
	return Result{Err: ctx.Err(), GRPCStatus: -1}
}

// counter reads a counter family's value for labels that include match.
func counter(d *Dispatcher, name string, match map[string]string) float64 {
	var sum float64
	for _, f := range d.Metrics().Gather() {
		for _, s := range f.Samples {
			if s.Name != name {
				continue
			}
			all := true
			for k, v := range match {
				if got, ok := s.Labels.Get(k); !ok || got != v {
					all = false
				}
			}
			if all {
				sum += s.Value
			}
		}
	}
	return sum
}

// retrying is a service whose one rule retries codes with attempts retries.
func retrying(name string, codes []int, attempts int, addrs ...string) routetable.Service {
	s := svc(name, addrs...)
	s.Rules = []routetable.Rule{{
		Backends: []routetable.Backend{{Service: key(name)}},
		Retry:    &routetable.Retry{Codes: codes, Attempts: attempts, Backoff: routetable.Duration(time.Nanosecond)},
	}}
	return s
}

func TestForwardRetries(t *testing.T) {
	tests := []struct {
		name       string
		service    routetable.Service
		opts       Options
		replayable bool
		results    []func(context.Context, bool) Result
		wantStatus int    // of the final result; 0 when it is an error
		wantErr    string // substring of the final error's reason
		wantCalls  []bool // the last flag of each attempt
		wantDiff   bool   // the attempts went to different endpoints
		counters   map[string]float64
	}{
		{
			name:    "status retried until success",
			service: retrying("web", []int{503}, 2, "10.0.0.1:80"), replayable: true,
			results:    []func(context.Context, bool) Result{status(503), status(503), ok},
			wantStatus: 200, wantCalls: []bool{false, false, true},
			counters: map[string]float64{"route_retry_requests_total": 2, "route_retry_limit_exceeded_total": 0},
		},
		{
			name:    "retries exhausted: the last attempt forwards what it gets",
			service: retrying("web", []int{503}, 2, "10.0.0.1:80"), replayable: true,
			results:    []func(context.Context, bool) Result{status(503)},
			wantStatus: 503, wantCalls: []bool{false, false, true},
			counters: map[string]float64{"route_retry_requests_total": 2},
		},
		{
			name:    "a body that cannot be replayed gets no status retry",
			service: retrying("web", []int{503}, 2, "10.0.0.1:80"), replayable: false,
			results:    []func(context.Context, bool) Result{status(503)},
			wantStatus: 503, wantCalls: []bool{true},
		},
		{
			name:    "no policy: one attempt",
			service: svc("web", "10.0.0.1:80"), replayable: true,
			results:    []func(context.Context, bool) Result{status(503)},
			wantStatus: 503, wantCalls: []bool{true},
		},
		{
			name:    "a refused connect is retried on the other endpoint without a policy",
			service: svc("web", "10.0.0.1:80", "10.0.0.2:80"), replayable: true,
			results:    []func(context.Context, bool) Result{refused, ok},
			wantStatus: 200, wantCalls: []bool{true, true}, wantDiff: true,
		},
		{
			name:    "a refused connect is retried once without a policy",
			service: svc("web", "10.0.0.1:80", "10.0.0.2:80"), replayable: true,
			results: []func(context.Context, bool) Result{refused},
			wantErr: "connection refused", wantCalls: []bool{true, true}, wantDiff: true,
			counters: map[string]float64{"route_retry_limit_exceeded_total": 0}, // no rule, no counters
		},
		{
			name:    "connect retries follow the policy's limit when it is higher",
			service: retrying("web", []int{503}, 3, "10.0.0.1:80", "10.0.0.2:80"), replayable: true,
			results: []func(context.Context, bool) Result{refused},
			wantErr: "connection refused", wantCalls: []bool{false, false, false, true},
			counters: map[string]float64{"route_retry_requests_total": 3, "route_retry_limit_exceeded_total": 1},
		},
		{
			name:    "a body that cannot be replayed still gets one connect retry",
			service: retrying("web", []int{503}, 3, "10.0.0.1:80", "10.0.0.2:80"), replayable: false,
			results:    []func(context.Context, bool) Result{refused, ok},
			wantStatus: 200, wantCalls: []bool{true, true}, wantDiff: true,
		},
		{
			name:    "an empty budget refuses the connect retry",
			service: retrying("web", []int{503}, 2, "10.0.0.1:80", "10.0.0.2:80"), replayable: true,
			opts:    Options{BudgetRatio: -1, BudgetMinPerSecond: -1},
			results: []func(context.Context, bool) Result{refused},
			wantErr: "connection refused", wantCalls: []bool{true},
			counters: map[string]float64{"route_retry_overflow_total": 1, "route_retry_requests_total": 0},
		},
		{
			name:    "an empty budget makes the first attempt the last",
			service: retrying("web", []int{503}, 2, "10.0.0.1:80"), replayable: true,
			opts:       Options{BudgetRatio: -1, BudgetMinPerSecond: -1},
			results:    []func(context.Context, bool) Result{status(503)},
			wantStatus: 503, wantCalls: []bool{true},
		},
		{
			name:    "a retryable answer with no retry left is surfaced as 503",
			service: svc("web", "10.0.0.1:80"), replayable: true,
			results: []func(context.Context, bool) Result{func(context.Context, bool) Result { return Result{Status: 503, GRPCStatus: -1, Retryable: true} }},
			wantErr: "retries exhausted", wantCalls: []bool{true},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := newDispatcher(t, tc.opts, tc.service)
			s := &script{results: tc.results}
			res := d.Forward(context.Background(), plan(t, d, key("web")), tc.replayable, s.attempt)
			if tc.wantErr != "" {
				e := AsError(res.Err)
				if res.Written || e == nil || !strings.Contains(e.Reason, tc.wantErr) {
					t.Errorf("result %+v (%v), want an error with %q", res, e, tc.wantErr)
				}
			} else if res.Err != nil || res.Status != tc.wantStatus || !res.Written {
				t.Errorf("result %+v, want a written %d", res, tc.wantStatus)
			}
			var lasts []bool
			addrs := map[string]bool{}
			for _, c := range s.calls {
				lasts = append(lasts, c.last)
				addrs[c.addr] = true
			}
			if !equal(lasts, tc.wantCalls) {
				t.Errorf("attempts' last flags %v, want %v", lasts, tc.wantCalls)
			}
			if tc.wantDiff && len(addrs) != len(s.calls) {
				t.Errorf("attempts went to %v: a retry after a refused connect must avoid the endpoint", s.calls)
			}
			for name, want := range tc.counters {
				if got := counter(d, name, nil); got != want {
					t.Errorf("%s = %v, want %v", name, got, want)
				}
			}
		})
	}
}

func equal[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestBudgetCanWithdraw: with no reserve and half a retry earned per
// request, every second request may retry; the others forward their first
// answer rather than discard it.
func TestBudgetCanWithdraw(t *testing.T) {
	d, _ := newDispatcher(t, Options{BudgetRatio: 0.5, BudgetMinPerSecond: -1}, retrying("web", []int{503}, 1, "10.0.0.1:80"))
	p := plan(t, d, key("web"))
	var lastFlags []bool
	for range 4 {
		s := &script{results: []func(context.Context, bool) Result{status(503), ok}}
		d.Forward(context.Background(), p, true, s.attempt)
		lastFlags = append(lastFlags, s.calls[0].last)
	}
	if want := []bool{true, false, true, false}; !equal(lastFlags, want) {
		t.Errorf("first attempts' last flags %v, want %v", lastFlags, want)
	}
}

// TestTimeouts: the request timeout bounds the whole exchange, the backend
// request timeout each attempt; both answer 504 saying which.
func TestTimeouts(t *testing.T) {
	rule := func(request, backend time.Duration, retry *routetable.Retry) routetable.Service {
		s := svc("web", "10.0.0.1:80")
		s.Rules = []routetable.Rule{{
			Backends: []routetable.Backend{{Service: key("web")}},
			Timeouts: routetable.Timeouts{Request: routetable.Duration(request), BackendRequest: routetable.Duration(backend)},
			Retry:    retry,
		}}
		return s
	}
	tests := []struct {
		name       string
		service    routetable.Service
		results    []func(context.Context, bool) Result
		wantStatus int
		wantReason string
		wantKind   string // timeout label counted
		wantCalls  int
	}{
		{"request timeout", rule(20*time.Millisecond, 0, nil), []func(context.Context, bool) Result{blocks}, 504, "request timeout of 20ms exceeded", "request", 1},
		{"backend request timeout", rule(0, 20*time.Millisecond, nil), []func(context.Context, bool) Result{blocks}, 504, "backend request timeout of 20ms exceeded", "backend_request", 1},
		{"backend request timeout retried", rule(0, 20*time.Millisecond, &routetable.Retry{Codes: []int{504}, Attempts: 1, Backoff: routetable.Duration(time.Nanosecond)}), []func(context.Context, bool) Result{blocks, ok}, 200, "", "backend_request", 2},
		{"request timeout ends the retries", rule(50*time.Millisecond, 20*time.Millisecond, &routetable.Retry{Codes: []int{504}, Attempts: 100, Backoff: routetable.Duration(time.Nanosecond)}), []func(context.Context, bool) Result{blocks}, 504, "request timeout of 50ms exceeded", "request", -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := newDispatcher(t, Options{}, tc.service)
			s := &script{results: tc.results}
			res := d.Forward(context.Background(), plan(t, d, key("web")), true, s.attempt)
			if tc.wantStatus == 200 {
				if res.Status != 200 || res.Err != nil {
					t.Errorf("result %+v, want 200", res)
				}
			} else if e := AsError(res.Err); e == nil || e.Status != tc.wantStatus || e.GRPC != GRPCDeadlineExceeded || e.Reason != tc.wantReason {
				t.Errorf("error %+v, want %d %q", e, tc.wantStatus, tc.wantReason)
			}
			if tc.wantCalls >= 0 && len(s.calls) != tc.wantCalls {
				t.Errorf("%d attempts, want %d", len(s.calls), tc.wantCalls)
			}
			if got := counter(d, "route_timeouts_total", map[string]string{"timeout": tc.wantKind}); got < 1 {
				t.Errorf("route_timeouts_total{timeout=%q} = %v, want at least 1", tc.wantKind, got)
			}
		})
	}
}

// TestRouteErrors: what the proxy answers itself when a request cannot be
// routed or has nowhere to go.
func TestRouteErrors(t *testing.T) {
	gone := svc("gone")
	gone.Exists = boolp(false)
	apiOnly := svc("api-only", "10.0.0.1:80")
	apiOnly.Rules = []routetable.Rule{{Match: routetable.Match{PathType: routetable.PathExact, Path: "/api"}, Backends: []routetable.Backend{{Service: key("api-only")}}}}
	noBackends := svc("no-backends", "10.0.0.1:80")
	noBackends.Rules = []routetable.Rule{{}}
	zero := svc("zero")
	zero.Rules = []routetable.Rule{{Backends: []routetable.Backend{{Service: key("a"), Weight: u32(0)}, {Service: key("b"), Weight: u32(0)}}}}
	unknown := svc("unknown")
	unknown.Rules = []routetable.Rule{{Backends: []routetable.Backend{{Service: key("ghost")}}}}
	invalid := svc("invalid")
	invalid.Rules = []routetable.Rule{{Backends: []routetable.Backend{{Service: ""}, {Service: ""}}}}
	empty := svc("empty")
	unready := svc("unready")
	unready.Endpoints = []routetable.Endpoint{{Address: "10.0.0.9:80", Ready: boolp(false)}}
	d, _ := newDispatcher(t, Options{}, gone, apiOnly, noBackends, zero, unknown, invalid, empty, unready, svc("a", "10.0.0.1:80"), svc("b", "10.0.0.2:80"))

	routeTests := []struct {
		service string
		status  int
		grpc    int
	}{
		{"gone", 503, GRPCUnavailable},
		{"api-only", 404, GRPCNotFound},
		{"no-backends", 500, GRPCInternal},
	}
	for _, tc := range routeTests {
		_, perr := d.Route(d.Service(key(tc.service)), get, true)
		if perr == nil || perr.Status != tc.status || perr.GRPC != tc.grpc {
			t.Errorf("route to %s: %v, want %d (gRPC %d)", tc.service, perr, tc.status, tc.grpc)
		}
	}

	forwardTests := []struct {
		service string
		status  int
		reason  string
	}{
		{"zero", 503, "every weight is 0"},
		{"unknown", 500, "backend service ghost.test:80 is unknown"},
		{"invalid", 500, "invalid backend"},
		{"empty", 503, "no endpoints for empty.test:80"},
		{"unready", 503, "no ready endpoints for unready.test:80"},
	}
	for _, tc := range forwardTests {
		s := &script{results: []func(context.Context, bool) Result{ok}}
		res := d.Forward(context.Background(), plan(t, d, key(tc.service)), true, s.attempt)
		e := AsError(res.Err)
		if e == nil || e.Status != tc.status || !strings.Contains(e.Reason, tc.reason) || len(s.calls) != 0 {
			t.Errorf("forward to %s: %v after %d attempts, want %d %q", tc.service, e, len(s.calls), tc.status, tc.reason)
		}
	}
	if got := counter(d, "response_total", map[string]string{"authority": "zero.test.svc.cluster.local:80", "status_code": "503", "error": "proxy"}); got != 1 {
		t.Errorf("proxy-made 503 for zero counted %v times, want 1", got)
	}

	for _, r := range []Resolver{d.Fixed(key("nope")), d.ByAuthority()} {
		if _, perr := r.Resolve("nope.test:80"); perr == nil || perr.Status != 503 {
			t.Errorf("resolving an unknown service: %v, want 503", perr)
		}
	}
}

// TestPassthroughAndOriginalDst: an intercepted connection to an address no
// service claims goes to that address as it is; one to a service's virtual
// address goes to the service.
func TestPassthroughAndOriginalDst(t *testing.T) {
	web := svc("web", "10.0.0.1:8080")
	web.Addresses = []string{"10.96.0.10:80"}
	d, _ := newDispatcher(t, Options{}, web)

	p1 := d.Passthrough("192.0.2.7:443")
	if p2 := d.Passthrough("192.0.2.7:443"); p1 != p2 {
		t.Errorf("Passthrough made two services for one address")
	}
	if p1.Spec.Namespace != "passthrough" || len(p1.Spec.Endpoints) != 1 || p1.Spec.Endpoints[0].Address != "192.0.2.7:443" {
		t.Errorf("passthrough service %+v, want one endpoint 192.0.2.7:443", p1.Spec)
	}
	s := &script{results: []func(context.Context, bool) Result{ok}}
	pl, perr := d.Route(p1, get, false)
	if perr != nil {
		t.Fatal(perr)
	}
	d.Forward(context.Background(), pl, true, s.attempt)
	if len(s.calls) != 1 || s.calls[0].addr != "192.0.2.7:443" {
		t.Errorf("passthrough attempts %v, want one to 192.0.2.7:443", s.calls)
	}

	resolve := func(orig, authority string) string {
		got, perr := d.ForOriginalDst(netip.MustParseAddrPort(orig)).Resolve(authority)
		if perr != nil {
			t.Fatalf("resolve %s %s: %v", orig, authority, perr)
		}
		return got.Key()
	}
	for _, tc := range []struct{ orig, authority, want string }{
		{"10.96.0.10:80", "anything", "web.test:80"},
		{"192.0.2.8:80", "web.test.svc.cluster.local", "web.test:80"},
		{"192.0.2.8:80", "elsewhere.example", d.Passthrough("192.0.2.8:80").Key()},
	} {
		if got := resolve(tc.orig, tc.authority); got != tc.want {
			t.Errorf("ForOriginalDst(%s).Resolve(%q) = %s, want %s", tc.orig, tc.authority, got, tc.want)
		}
	}
}

// TestSeriesLabels: outbound series carry the endpoint's labels
// (EndpointLabels, dst_*); inbound series carry the request's Peer labels
// instead of the static ones.
func TestSeriesLabels(t *testing.T) {
	web := svc("web")
	web.Endpoints = []routetable.Endpoint{{Address: "10.0.0.1:80", Identity: "web.id", Labels: map[string]string{"deployment": "web"}}}
	out, _ := newDispatcher(t, Options{
		Direction:    "outbound",
		StaticLabels: metrics.Labels{{Name: "tls", Value: "static"}},
		EndpointLabels: func(ep *routetable.Endpoint) metrics.Labels {
			return metrics.Labels{{Name: "server_id", Value: ep.Identity}}
		},
	}, web)
	s := &script{results: []func(context.Context, bool) Result{ok}}
	out.Forward(context.Background(), plan(t, out, key("web")), true, s.attempt)
	want := map[string]string{"direction": "outbound", "authority": "web.test.svc.cluster.local:80", "tls": "static", "server_id": "web.id", "dst_deployment": "web", "dst_service": "web"}
	if got := counter(out, "request_total", want); got != 1 {
		t.Errorf("request_total%v = %v, want 1", want, got)
	}

	in, _ := newDispatcher(t, Options{Direction: "inbound", StaticLabels: metrics.Labels{{Name: "tls", Value: "no_identity"}, {Name: "no_tls_reason", Value: "no_tls_from_remote"}}}, svc("app", "127.0.0.1:8080"))
	peer := NewPeer(metrics.Labels{{Name: "tls", Value: "true"}, {Name: "client_id", Value: "front.id"}})
	p := plan(t, in, key("app"))
	for range 3 {
		in.Forward(WithPeer(context.Background(), peer), p, true, (&script{results: []func(context.Context, bool) Result{ok}}).attempt)
	}
	in.Forward(context.Background(), p, true, (&script{results: []func(context.Context, bool) Result{ok}}).attempt)
	if got := counter(in, "request_total", map[string]string{"tls": "true", "client_id": "front.id"}); got != 3 {
		t.Errorf("requests with the peer's labels: %v, want 3", got)
	}
	if got := counter(in, "request_total", map[string]string{"tls": "true", "no_tls_reason": "no_tls_from_remote"}); got != 0 {
		t.Errorf("a peer's series also carries the static no_tls_reason")
	}
	if got := counter(in, "request_total", map[string]string{"tls": "no_identity", "no_tls_reason": "no_tls_from_remote"}); got != 1 {
		t.Errorf("requests without a peer: %v, want 1", got)
	}
	if PeerFrom(context.Background()) != nil || PeerFrom(WithPeer(context.Background(), peer)) != peer {
		t.Errorf("PeerFrom does not return what WithPeer stored")
	}
}

// TestUpdateKeepsStateAndRejectsInvalid: a valid update keeps a surviving
// service's balancer; an invalid one changes nothing and names the problem.
func TestUpdateKeepsStateAndRejectsInvalid(t *testing.T) {
	d, _ := newDispatcher(t, Options{}, svc("web", "10.0.0.1:80"))
	b := d.Service(key("web")).Balancer()
	if err := d.Update(&routetable.Table{Services: []routetable.Service{svc("web", "10.0.0.1:80", "10.0.0.2:80")}}); err != nil {
		t.Fatal(err)
	}
	if d.Service(key("web")).Balancer() != b {
		t.Errorf("the balancer of a surviving service was replaced")
	}
	err := d.Update(&routetable.Table{Services: []routetable.Service{svc("web"), svc("web")}})
	if err == nil || !strings.Contains(err.Error(), `duplicate service "web.test:80"`) {
		t.Fatalf("duplicate services: %v", err)
	}
	if n := len(d.Service(key("web")).Spec.Endpoints); n != 2 {
		t.Errorf("a rejected update changed the table: %d endpoints", n)
	}
}

// TestConnectRetryAvoidsTheFailedEndpoint: the endpoint that refused the
// connection is the cheaper one, which P2C would pick again every time; the
// retry goes to the other.
func TestConnectRetryAvoidsTheFailedEndpoint(t *testing.T) {
	d, _ := newDispatcher(t, Options{}, svc("web", "10.0.0.1:80", "10.0.0.2:80"))
	p := plan(t, d, key("web"))
	for _, ep := range p.Service.Balancer().Endpoints() {
		if ep.Addr() == "10.0.0.2:80" {
			busy := ep.Start() // a request in flight makes it the dearer one
			defer busy.Done(false)
		}
	}
	for range 5 {
		s := &script{results: []func(context.Context, bool) Result{refused, ok}}
		res := d.Forward(context.Background(), p, true, s.attempt)
		if res.Status != 200 || len(s.calls) != 2 || s.calls[0].addr != "10.0.0.1:80" || s.calls[1].addr != "10.0.0.2:80" {
			t.Fatalf("attempts %v, result %+v; want 10.0.0.1 refused, then 10.0.0.2", s.calls, res)
		}
	}
}

// requestResolverFunc is a RequestResolver recording what it was asked.
type requestResolverFunc func(method, path, authority string) (*Service, *Error)

func (f requestResolverFunc) Resolve(authority string) (*Service, *Error) {
	return f("", "", authority)
}
func (f requestResolverFunc) ResolveRequest(method, path, authority string) (*Service, *Error) {
	return f(method, path, authority)
}

// TestResolveRequest: a RequestResolver is handed the method and path, a
// plain Resolver the authority alone.
func TestResolveRequest(t *testing.T) {
	var got string
	rr := requestResolverFunc(func(method, path, authority string) (*Service, *Error) {
		got = method + " " + path + " " + authority
		return nil, nil
	})
	ResolveRequest(rr, "GET", "/healthz", "web:80")
	if want := "GET /healthz web:80"; got != want {
		t.Errorf("RequestResolver got %q, want %q", got, want)
	}
	got = ""
	ResolveRequest(ResolverFunc(func(authority string) (*Service, *Error) {
		got = authority
		return nil, nil
	}), "GET", "/healthz", "web:80")
	if got != "web:80" {
		t.Errorf("Resolver got %q, want the authority", got)
	}
}

// TestAsErrorUnprocessed checks which errors mark a proxy-made response as
// unprocessed (safe for the mesh peer to retry elsewhere): those of a
// request that never reached its endpoint, and only those.
func TestAsErrorUnprocessed(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{"refused, wrapped", fmt.Errorf("connect: %w", syscall.ECONNREFUSED), true},
		{"a peer that could not reach its app", PeerUnprocessed("10.0.0.1:8080", "connect refused"), true},
		{"reset after sending", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, false},
		{"timeout", context.DeadlineExceeded, false},
	} {
		if got := AsError(tt.err).Unprocessed; got != tt.want {
			t.Errorf("%s: Unprocessed = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestEjectedEverywhereStillServes: when the breaker has ejected a service's
// only endpoint, requests still reach it (the balancer panics) instead of the
// proxy answering 503 for all of them; a split prefers the backend whose
// endpoints are not ejected, and falls back to every backend by weight when all
// are ejected.
func TestEjectedEverywhereStillServes(t *testing.T) {
	canary := svc("web-canary", "10.0.0.2:80")
	primary := svc("web-primary", "10.0.0.1:80")
	web := svc("web")
	web.Rules = []routetable.Rule{{Backends: []routetable.Backend{
		{Service: key("web-primary"), Weight: u32(50)},
		{Service: key("web-canary"), Weight: u32(50)},
	}}}
	d, _ := newDispatcher(t, Options{Direction: "outbound"}, web, primary, canary)
	eject := func(k string) {
		for _, ep := range d.Service(k).Balancer().Endpoints() {
			for range balance.DefaultMaxFailures {
				ep.Start().Done(true)
			}
			if ep.State() != "ejected" {
				t.Fatalf("%s: state %q, want ejected", ep.Addr(), ep.State())
			}
		}
	}

	// The lone endpoint of a service is ejected: still served.
	eject(key("web-primary"))
	p := plan(t, d, key("web-primary"))
	s := &script{results: []func(context.Context, bool) Result{ok}}
	if res := d.Forward(context.Background(), p, false, s.attempt); res.Status != 200 || len(s.calls) != 1 {
		t.Fatalf("ejected lone endpoint: result %+v, calls %v; want it served", res, s.calls)
	}
	if got := counter(d, "balancer_panic_total", map[string]string{"service": key("web-primary")}); got != 1 {
		t.Fatalf("balancer_panic_total = %v, want 1", got)
	}

	// The split avoids the backend whose endpoints are all ejected.
	p = plan(t, d, key("web"))
	for range 20 {
		s := &script{results: []func(context.Context, bool) Result{ok}}
		d.Forward(context.Background(), p, false, s.attempt)
		if len(s.calls) != 1 || s.calls[0].addr != "10.0.0.2:80" {
			t.Fatalf("split with the primary ejected went to %v, want the canary 10.0.0.2:80", s.calls)
		}
	}

	// Both ejected: the split goes on by weight instead of failing.
	eject(key("web-canary"))
	seen := map[string]int{}
	for range 200 {
		s := &script{results: []func(context.Context, bool) Result{ok}}
		if res := d.Forward(context.Background(), p, false, s.attempt); res.Status != 200 {
			t.Fatalf("all ejected: result %+v, want 200", res)
		}
		seen[s.calls[0].addr]++
	}
	if seen["10.0.0.1:80"] == 0 || seen["10.0.0.2:80"] == 0 {
		t.Fatalf("all ejected: split %v, want both backends used", seen)
	}

	// Every service keeps its own endpoint gauges.
	for _, k := range []string{key("web-primary"), key("web-canary")} {
		if got := counter(d, "balancer_endpoints", map[string]string{"service": k, "endpoint_state": "ejected"}); got != 1 {
			t.Errorf("balancer_endpoints{service=%s,endpoint_state=ejected} = %v, want 1", k, got)
		}
	}
}
