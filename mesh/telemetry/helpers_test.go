package telemetry_test

import (
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/mesh/telemetry"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// t0 is where fake clocks start.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *fakeClock { return &fakeClock{now: t0} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// targetList is a TargetSource whose list the test changes.
type targetList struct {
	mu sync.Mutex
	ts []telemetry.Target
}

func (l *targetList) Targets() []telemetry.Target {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ts)
}

func (l *targetList) Set(ts ...telemetry.Target) {
	l.mu.Lock()
	l.ts = ts
	l.mu.Unlock()
}

// latencyBounds are Linkerd's response_latency_ms bounds.
var latencyBounds = []float64{
	1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500,
	1000, 2000, 3000, 4000, 5000, 10000, 20000, 30000, 40000, 50000,
}

// respKey is one response_total series of a fake proxy.
type respKey struct {
	direction, status, class, tls string
}

// histKey is one response_latency_ms series of a fake proxy.
type histKey struct {
	direction, status string
}

// fakeProxy serves synthetic Linkerd-style metrics on 127.0.0.1.
type fakeProxy struct {
	srv *httptest.Server

	mu     sync.Mutex
	static string  // rendered static labels, such as namespace="shop",deployment="web",pod="web-1"
	start  float64 // process_start_time_seconds; 0 leaves it out
	resp   map[respKey]float64
	hist   map[histKey][]float64 // non-cumulative counts per bound, +Inf last
	status int                   // answer with this status instead of metrics, when not 0
	body   string                // answer with this body instead of metrics, when not ""
	hang   chan struct{}         // when not nil, requests wait for it or their cancellation
}

func newFakeProxy(t *testing.T, static string) *fakeProxy {
	t.Helper()
	p := &fakeProxy{static: static}
	p.reset()
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *fakeProxy) URL() string { return p.srv.URL + "/metrics" }

// reset zeroes every counter, as a proxy restart does.
func (p *fakeProxy) reset() {
	p.resp = make(map[respKey]float64)
	p.hist = make(map[histKey][]float64)
}

// Restart zeroes the counters and, when start is not 0, sets the start time.
func (p *fakeProxy) Restart(start float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reset()
	p.start = start
}

// Serve records n responses of status in direction, tls "true" or not, with
// the given latency in milliseconds. Statuses of 500 and above are failures.
func (p *fakeProxy) Serve(direction string, status, n int, tls bool, latencyMs float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	class := "success"
	if status >= 500 {
		class = "failure"
	}
	tlsv := "no_identity"
	if tls {
		tlsv = "true"
	}
	st := fmt.Sprint(status)
	p.resp[respKey{direction, st, class, tlsv}] += float64(n)
	hk := histKey{direction, st}
	h := p.hist[hk]
	if h == nil {
		h = make([]float64, len(latencyBounds)+1)
		p.hist[hk] = h
	}
	i, _ := slices.BinarySearch(latencyBounds, latencyMs)
	h[i] += float64(n)
}

// Fail makes the proxy answer with status, or with body when status is 0;
// Fail(0, "") restores it.
func (p *fakeProxy) Fail(status int, body string) {
	p.mu.Lock()
	p.status, p.body = status, body
	p.mu.Unlock()
}

// Hang makes requests wait until they are cancelled (or the test ends).
func (p *fakeProxy) Hang(t *testing.T) {
	ch := make(chan struct{})
	t.Cleanup(func() { close(ch) })
	p.mu.Lock()
	p.hang = ch
	p.mu.Unlock()
}

func (p *fakeProxy) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	hang := p.hang
	p.mu.Unlock()
	if hang != nil {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.status != 0:
		http.Error(w, "unavailable", p.status)
		return
	case p.body != "":
		_, _ = io.WriteString(w, p.body)
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	_, _ = io.WriteString(w, p.textLocked())
}

// textLocked renders the exposition.
func (p *fakeProxy) textLocked() string {
	var b strings.Builder
	lbl := func(own string) string {
		switch {
		case p.static == "":
			return "{" + own + "}"
		case own == "":
			return "{" + p.static + "}"
		}
		return "{" + own + "," + p.static + "}"
	}
	b.WriteString("# HELP request_total Total count of HTTP requests.\n# TYPE request_total counter\n")
	reqs := map[string]float64{}
	for k, v := range p.resp {
		reqs[k.direction] += v
	}
	for _, d := range slices.Sorted(maps.Keys(reqs)) {
		fmt.Fprintf(&b, "request_total%s %v\n", lbl(fmt.Sprintf("direction=%q", d)), reqs[d])
	}
	b.WriteString("# HELP response_total Total count of HTTP responses.\n# TYPE response_total counter\n")
	for _, k := range slices.SortedFunc(maps.Keys(p.resp), func(a, b respKey) int {
		return strings.Compare(fmt.Sprint(a), fmt.Sprint(b))
	}) {
		own := fmt.Sprintf("direction=%q,tls=%q,status_code=%q,classification=%q", k.direction, k.tls, k.status, k.class)
		fmt.Fprintf(&b, "response_total%s %v\n", lbl(own), p.resp[k])
	}
	b.WriteString("# HELP response_latency_ms Latency.\n# TYPE response_latency_ms histogram\n")
	for _, k := range slices.SortedFunc(maps.Keys(p.hist), func(a, b histKey) int {
		return strings.Compare(fmt.Sprint(a), fmt.Sprint(b))
	}) {
		own := fmt.Sprintf("direction=%q,status_code=%q", k.direction, k.status)
		cum := 0.0
		for i, c := range p.hist[k] {
			cum += c
			le := "+Inf"
			if i < len(latencyBounds) {
				le = fmt.Sprint(latencyBounds[i])
			}
			fmt.Fprintf(&b, "response_latency_ms_bucket%s %v\n", lbl(own+fmt.Sprintf(",le=%q", le)), cum)
		}
		fmt.Fprintf(&b, "response_latency_ms_sum%s 0\n", lbl(own))
		fmt.Fprintf(&b, "response_latency_ms_count%s %v\n", lbl(own), cum)
	}
	b.WriteString("# TYPE tcp_open_total counter\n")
	fmt.Fprintf(&b, "tcp_open_total%s 3\n", lbl(`direction="inbound",peer="src"`))
	if p.start != 0 {
		b.WriteString("# TYPE process_start_time_seconds gauge\n")
		fmt.Fprintf(&b, "process_start_time_seconds%s %v\n", lbl(""), p.start)
	}
	return b.String()
}

// newStore returns a store over src with the fake clock and a client whose
// connections are closed when the test ends.
func newStore(t *testing.T, src telemetry.TargetSource, clk *fakeClock, opts telemetry.Options) *telemetry.Store {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	if clk != nil {
		opts.Clock = clk.Now
	}
	opts.HTTPClient = client
	opts.Logger = slog.New(slog.DiscardHandler)
	return telemetry.New(src, opts)
}

// approx reports whether a and b agree to 1e-9, relatively.
func approx(a, b float64) bool {
	if math.IsNaN(a) || math.IsNaN(b) {
		return math.IsNaN(a) && math.IsNaN(b)
	}
	if math.IsInf(a, 0) || math.IsInf(b, 0) {
		return a == b
	}
	return math.Abs(a-b) <= 1e-9*math.Max(1, math.Max(math.Abs(a), math.Abs(b)))
}

// web is the selector of the fake proxies' usual workload.
var web = telemetry.Selector{Namespace: "shop", Workload: "web"}
