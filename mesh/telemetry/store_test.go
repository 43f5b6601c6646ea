package telemetry_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/mesh/telemetry"
)

// TestWindows scrapes one proxy every 5 s for a minute and checks the
// aggregates over windows of several lengths, including windows whose start
// falls inside a scrape interval (prorated) and a clock past the last scrape.
func TestWindows(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	p := newFakeProxy(t, `namespace="shop",deployment="web",pod="web-1"`)
	// Served before the first scrape: a baseline, never counted.
	p.Serve("inbound", 200, 1000, true, 3)
	src := &targetList{}
	src.Set(telemetry.Target{URL: p.URL()})
	s := newStore(t, src, clk, telemetry.Options{})

	s.ScrapeOnce(ctx)
	// Each 5 s step: 10 successes over mTLS at ≤10 ms; from step 7 on, also
	// 2 failures in plain text at ≤100 ms. Outbound traffic must not count.
	for step := 1; step <= 12; step++ {
		clk.Advance(5 * time.Second)
		p.Serve("inbound", 200, 10, true, 7)
		if step >= 7 {
			p.Serve("inbound", 503, 2, false, 70)
		}
		p.Serve("outbound", 200, 100, true, 1)
		s.ScrapeOnce(ctx)
	}
	end := clk.Now()

	tests := []struct {
		name               string
		now                time.Time
		d                  time.Duration
		selector           *telemetry.Selector // nil means web
		requests, failures float64
		tls                float64
		duration           time.Duration
		successRate, rps   float64
		checkQuantiles     bool
		p50, p99           float64
	}{
		{
			name: "whole minute", now: end, d: time.Minute,
			requests: 132, failures: 12, tls: 120, duration: time.Minute,
			successRate: 120.0 / 132, rps: 132.0 / 60,
			// Cumulative: le≤5: 0, le=10: 120, ..., le=100: 132. p50 rank 66 in
			// (5, 10]: 5+5·66/120; p99 rank 130.68 in (50, 100]: 50+50·10.68/12.
			checkQuantiles: true, p50: 7.75, p99: 94.5,
		},
		{
			name: "last half minute", now: end, d: 30 * time.Second,
			requests: 72, failures: 12, tls: 60, duration: 30 * time.Second,
			successRate: 60.0 / 72, rps: 72.0 / 30,
		},
		{
			name: "longer than the data", now: end, d: 2 * time.Hour,
			requests: 132, failures: 12, tls: 120, duration: time.Minute,
			successRate: 120.0 / 132, rps: 132.0 / 60,
		},
		{
			name: "start inside an interval is prorated", now: end, d: 7500 * time.Millisecond,
			requests: 12 + 6, failures: 2 + 1, tls: 10 + 5, duration: 7500 * time.Millisecond,
			successRate: 15.0 / 18, rps: 18 / 7.5,
		},
		{
			name: "clock past the last scrape", now: end.Add(2 * time.Second), d: time.Minute,
			// [2 s, 62 s]: step 1 counts 3/5, and the data ends at 60 s.
			requests: 6 + 11*10 + 6*2, failures: 12, tls: 6 + 110, duration: 58 * time.Second,
			successRate: 116.0 / 128, rps: 128.0 / 58,
		},
		{
			name: "outbound", now: end, d: time.Minute,
			selector: &telemetry.Selector{Namespace: "shop", Workload: "web", Direction: "outbound"},
			requests: 1200, tls: 1200, duration: time.Minute, successRate: 1, rps: 20,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk.Set(tt.now)
			sel := web
			if tt.selector != nil {
				sel = *tt.selector
			}
			w, err := s.Query(sel, tt.d)
			if err != nil {
				t.Fatalf("Query: %v", err)
			}
			if !approx(w.Requests, tt.requests) || !approx(w.Failures, tt.failures) ||
				!approx(w.Successes, tt.requests-tt.failures) || !approx(w.TLSRequests, tt.tls) {
				t.Errorf("requests/failures/successes/tls = %v/%v/%v/%v, want %v/%v/%v/%v",
					w.Requests, w.Failures, w.Successes, w.TLSRequests, tt.requests, tt.failures, tt.requests-tt.failures, tt.tls)
			}
			if w.Duration != tt.duration {
				t.Errorf("Duration = %v, want %v", w.Duration, tt.duration)
			}
			if !approx(w.SuccessRate(), tt.successRate) {
				t.Errorf("SuccessRate = %v, want %v", w.SuccessRate(), tt.successRate)
			}
			if !approx(w.RPS(), tt.rps) {
				t.Errorf("RPS = %v, want %v", w.RPS(), tt.rps)
			}
			if w.Pods != 1 {
				t.Errorf("Pods = %d, want 1", w.Pods)
			}
			if n := len(w.Buckets); n != 26 || !math.IsInf(w.Buckets[n-1].LE, 1) || !approx(w.Buckets[n-1].Count, tt.requests) {
				t.Errorf("Buckets = %v, want 26 ending with +Inf = %v", w.Buckets, tt.requests)
			}
			if tt.checkQuantiles {
				if got := w.Quantile(0.5); !approx(got, tt.p50) {
					t.Errorf("p50 = %v, want %v", got, tt.p50)
				}
				if got := w.Quantile(0.99); !approx(got, tt.p99) {
					t.Errorf("p99 = %v, want %v", got, tt.p99)
				}
			}
		})
	}
}

// TestCounterReset checks that a proxy restart counts the new values from 0,
// whether it shows as counters going down or as a new process start time.
func TestCounterReset(t *testing.T) {
	tests := []struct {
		name string
		// steps are run one per 5 s scrape; the first scrape is the baseline.
		steps []func(p *fakeProxy)
		want  float64
	}{
		{
			name: "no restart",
			steps: []func(p *fakeProxy){
				func(p *fakeProxy) { p.Serve("inbound", 200, 100, false, 1) },
				func(p *fakeProxy) { p.Serve("inbound", 200, 50, false, 1) },
				func(p *fakeProxy) { p.Serve("inbound", 200, 20, false, 1) },
			},
			want: 70,
		},
		{
			name: "counters go down",
			steps: []func(p *fakeProxy){
				func(p *fakeProxy) { p.Serve("inbound", 200, 100, false, 1) },
				func(p *fakeProxy) { p.Serve("inbound", 200, 50, false, 1) },               // 150: +50
				func(p *fakeProxy) { p.Restart(0); p.Serve("inbound", 200, 20, false, 1) }, // 20: +20
				func(p *fakeProxy) { p.Serve("inbound", 200, 30, false, 1) },               // 50: +30
			},
			want: 100,
		},
		{
			name: "one series goes down, another up",
			steps: []func(p *fakeProxy){
				func(p *fakeProxy) { p.Serve("inbound", 200, 100, false, 1) },
				func(p *fakeProxy) { p.Restart(0); p.Serve("inbound", 503, 150, false, 1) }, // total up, successes down
			},
			want: 150,
		},
		{
			name: "start time changes while counters grow",
			steps: []func(p *fakeProxy){
				func(p *fakeProxy) { p.Restart(1000); p.Serve("inbound", 200, 100, false, 1) },
				func(p *fakeProxy) { p.Restart(2000); p.Serve("inbound", 200, 200, false, 1) }, // 200 since the restart
				func(p *fakeProxy) { p.Serve("inbound", 200, 10, false, 1) },
			},
			want: 210,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			clk := newClock()
			p := newFakeProxy(t, `namespace="shop",deployment="web",pod="web-1"`)
			src := &targetList{}
			src.Set(telemetry.Target{URL: p.URL()})
			s := newStore(t, src, clk, telemetry.Options{})
			for i, step := range tt.steps {
				if i > 0 {
					clk.Advance(5 * time.Second)
				}
				step(p)
				s.ScrapeOnce(ctx)
			}
			w, err := s.Query(web, time.Hour)
			if err != nil {
				t.Fatalf("Query: %v", err)
			}
			if w.Requests != tt.want {
				t.Errorf("Requests = %v, want %v", w.Requests, tt.want)
			}
			if inf := w.Buckets[len(w.Buckets)-1]; inf.Count != tt.want {
				t.Errorf("+Inf bucket = %v, want %v", inf.Count, tt.want)
			}
		})
	}
}

// TestTargetsComeAndGo checks that a target that leaves keeps its history
// until the retention passes, that one that comes back continues from its
// last scrape, and that a new one starts with a baseline.
func TestTargetsComeAndGo(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	a := newFakeProxy(t, `namespace="shop",deployment="web",pod="web-a"`)
	b := newFakeProxy(t, `namespace="shop",deployment="web",pod="web-b"`)
	ta, tb := telemetry.Target{URL: a.URL()}, telemetry.Target{URL: b.URL()}
	src := &targetList{}
	src.Set(ta, tb)
	s := newStore(t, src, clk, telemetry.Options{Retention: time.Minute})
	step := func() {
		clk.Advance(5 * time.Second)
		s.ScrapeOnce(ctx)
	}
	query := func(sel telemetry.Selector, d time.Duration) telemetry.Window {
		t.Helper()
		w, err := s.Query(sel, d)
		if err != nil && !errors.Is(err, telemetry.ErrNoData) {
			t.Fatalf("Query(%+v, %v): %v", sel, d, err)
		}
		return w
	}
	podB := telemetry.Selector{Namespace: "shop", Workload: "web", Pod: "web-b"}

	s.ScrapeOnce(ctx) // 0 s: baselines
	a.Serve("inbound", 200, 10, true, 1)
	b.Serve("inbound", 200, 20, true, 1)
	step() // 5 s: a +10, b +20

	src.Set(ta) // b leaves
	a.Serve("inbound", 200, 10, true, 1)
	b.Serve("inbound", 200, 5, true, 1) // not scraped while away
	step()                              // 10 s: a +10

	if w := query(web, 10*time.Second); w.Requests != 40 || w.Pods != 2 {
		t.Errorf("after b left: requests %v pods %d, want 40 and 2", w.Requests, w.Pods)
	}
	if ws := s.Workloads(10 * time.Second); len(ws) != 1 || ws[0].Pods != 1 || ws[0].Meshed != 1 {
		t.Errorf("Workloads after b left = %+v, want one workload with 1/1 pods", ws)
	}

	src.Set(ta, tb) // b comes back: its +5 covers 5 s..15 s
	step()          // 15 s
	if w := query(podB, 15*time.Second); w.Requests != 25 || w.Duration != 15*time.Second {
		t.Errorf("b after coming back: requests %v over %v, want 25 over 15s", w.Requests, w.Duration)
	}
	if w := query(podB, 5*time.Second); !approx(w.Requests, 2.5) {
		t.Errorf("b's last 5 s: requests %v, want 2.5 (half of the 10 s interval)", w.Requests)
	}

	// A new pod: what it served before its first scrape is not counted.
	c := newFakeProxy(t, `namespace="shop",deployment="web",pod="web-c"`)
	c.Serve("inbound", 200, 1000, true, 1)
	src.Set(ta, tb, telemetry.Target{URL: c.URL()})
	step() // 20 s: c's baseline
	c.Serve("inbound", 200, 7, true, 1)
	step() // 25 s: c +7
	podC := telemetry.Selector{Namespace: "shop", Workload: "web", Pod: "web-c"}
	if w := query(podC, time.Hour); w.Requests != 7 {
		t.Errorf("new pod c: requests %v, want 7", w.Requests)
	}

	// b leaves for good: after the retention its history is gone.
	src.Set(ta, telemetry.Target{URL: c.URL()})
	step()
	if w := query(podB, time.Hour); w.Requests != 25 {
		t.Errorf("b just after leaving: requests %v, want 25", w.Requests)
	}
	for range 13 { // 65 s more
		step()
	}
	if _, err := s.Query(podB, time.Hour); !errors.Is(err, telemetry.ErrNoData) {
		t.Errorf("b after the retention: err %v, want ErrNoData", err)
	}
	if w := query(podC, time.Hour); w.Requests != 0 {
		t.Errorf("c's +7 at 25 s is past the retention at 95 s, got %v requests", w.Requests)
	}
}

// TestURLReusedByAnotherPod checks that a URL listed with other labels is a
// new target: its counters are a new baseline, not a delta from the old pod's.
func TestURLReusedByAnotherPod(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	p := newFakeProxy(t, "")
	src := &targetList{}
	labels := func(pod, rev string) map[string]string {
		return map[string]string{"namespace": "shop", "deployment": "web", "pod": pod, "revision": rev}
	}
	src.Set(telemetry.Target{URL: p.URL(), Labels: labels("web-1", "v1")})
	s := newStore(t, src, clk, telemetry.Options{})
	s.ScrapeOnce(ctx)
	p.Serve("inbound", 200, 10, false, 1)
	clk.Advance(5 * time.Second)
	s.ScrapeOnce(ctx)

	// Another pod at the same address, with the counters of the old one plus 90.
	src.Set(telemetry.Target{URL: p.URL(), Labels: labels("web-2", "v2")})
	p.Serve("inbound", 200, 90, false, 1)
	clk.Advance(5 * time.Second)
	s.ScrapeOnce(ctx) // baseline of web-2
	p.Serve("inbound", 200, 4, false, 1)
	clk.Advance(5 * time.Second)
	s.ScrapeOnce(ctx)

	for _, tt := range []struct {
		rev  string
		want float64
	}{{"v1", 10}, {"v2", 4}, {"", 14}} {
		sel := web
		sel.Revision = tt.rev
		w, err := s.Query(sel, time.Hour)
		if err != nil {
			t.Fatalf("Query revision %q: %v", tt.rev, err)
		}
		if w.Requests != tt.want {
			t.Errorf("revision %q: requests %v, want %v", tt.rev, w.Requests, tt.want)
		}
	}
}

// TestTargetLabelsOverride checks that the target's labels win over the
// proxy's static labels, and fill in those it lacks.
func TestTargetLabelsOverride(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	p := newFakeProxy(t, `namespace="wrong",deployment="wrong",pod="web-1"`)
	src := &targetList{}
	src.Set(telemetry.Target{URL: p.URL(), Labels: map[string]string{"namespace": "shop", "workload": "web", "revision": "abc"}})
	s := newStore(t, src, clk, telemetry.Options{})
	s.ScrapeOnce(ctx)
	p.Serve("inbound", 200, 3, false, 1)
	clk.Advance(5 * time.Second)
	s.ScrapeOnce(ctx)
	w, err := s.Query(telemetry.Selector{Namespace: "shop", Workload: "web", Revision: "abc", Pod: "web-1"}, time.Minute)
	if err != nil || w.Requests != 3 {
		t.Errorf("Query = %v requests, %v; want 3, nil", w.Requests, err)
	}
	if _, err := s.Query(telemetry.Selector{Namespace: "wrong", Workload: "wrong"}, time.Minute); !errors.Is(err, telemetry.ErrNoData) {
		t.Errorf("the proxy's own labels were used: err %v", err)
	}
}

func TestQueryErrors(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	p := newFakeProxy(t, `namespace="shop",deployment="web",pod="web-1"`)
	src := &targetList{}
	src.Set(telemetry.Target{URL: p.URL()})
	s := newStore(t, src, clk, telemetry.Options{})
	s.ScrapeOnce(ctx)
	clk.Advance(5 * time.Second)
	s.ScrapeOnce(ctx) // an interval with no requests

	tests := []struct {
		name     string
		sel      telemetry.Selector
		d        time.Duration
		noData   bool
		wantPods int
		errText  string
	}{
		{name: "zero requests", sel: web, d: time.Minute, noData: true, wantPods: 1},
		{name: "unknown workload", sel: telemetry.Selector{Namespace: "shop", Workload: "api"}, d: time.Minute, noData: true},
		{name: "missing workload", sel: telemetry.Selector{Namespace: "shop"}, d: time.Minute, errText: "workload is required"},
		{name: "missing namespace", sel: telemetry.Selector{Workload: "web"}, d: time.Minute, errText: "namespace is required"},
		{name: "bad direction", sel: telemetry.Selector{Namespace: "shop", Workload: "web", Direction: "sideways"}, d: time.Minute, errText: "sideways"},
		{name: "non-positive window", sel: web, d: 0, errText: "not positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := s.Query(tt.sel, tt.d)
			if err == nil {
				t.Fatalf("Query succeeded: %+v", w)
			}
			if errors.Is(err, telemetry.ErrNoData) != tt.noData {
				t.Errorf("errors.Is(%v, ErrNoData) = %v, want %v", err, !tt.noData, tt.noData)
			}
			if tt.errText != "" && !strings.Contains(err.Error(), tt.errText) {
				t.Errorf("error %q does not mention %q", err, tt.errText)
			}
			if w.Pods != tt.wantPods {
				t.Errorf("Pods = %d, want %d", w.Pods, tt.wantPods)
			}
			if tt.noData && !math.IsNaN(w.SuccessRate()) {
				t.Errorf("SuccessRate without requests = %v, want NaN", w.SuccessRate())
			}
		})
	}
}

// TestScrapeFailures checks that failures are recorded per target, shown in
// Workloads, and that the next success takes the delta over the gap.
func TestScrapeFailures(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	good := newFakeProxy(t, `namespace="shop",deployment="web",pod="web-1"`)
	bad := newFakeProxy(t, `namespace="shop",deployment="web",pod="web-2"`)
	hang := newFakeProxy(t, "")
	hang.Hang(t)
	src := &targetList{}
	src.Set(
		telemetry.Target{URL: good.URL()},
		telemetry.Target{URL: bad.URL()},
		telemetry.Target{URL: hang.URL(), Labels: map[string]string{"namespace": "shop", "workload": "web", "pod": "web-3"}},
		telemetry.Target{URL: "http://127.0.0.1:1/metrics", Labels: map[string]string{"namespace": "shop", "workload": "web", "pod": "web-4"}},
	)
	// The timeout bounds the good scrapes too: 200 ms was sometimes too short
	// for one on a loaded machine ("meshed 0"). Each ScrapeOnce waits it out
	// for the hanging target.
	s := newStore(t, src, clk, telemetry.Options{Timeout: time.Second})

	s.ScrapeOnce(ctx)
	good.Serve("inbound", 200, 10, false, 1)
	bad.Serve("inbound", 200, 10, false, 1)
	bad.Fail(503, "")
	clk.Advance(5 * time.Second)
	s.ScrapeOnce(ctx)

	ws := s.Workloads(time.Minute)
	if len(ws) != 1 {
		t.Fatalf("Workloads = %+v, want one", ws)
	}
	if ws[0].Pods != 4 || ws[0].Meshed != 1 {
		t.Errorf("pods %d meshed %d, want 4 and 1", ws[0].Pods, ws[0].Meshed)
	}
	wantErrs := []string{"web-2: ", "web-3: ", "web-4: "}
	if len(ws[0].Errors) != len(wantErrs) {
		t.Fatalf("Errors = %q, want one per failing pod", ws[0].Errors)
	}
	for i, prefix := range wantErrs {
		if !strings.HasPrefix(ws[0].Errors[i], prefix) {
			t.Errorf("Errors[%d] = %q, want prefix %q", i, ws[0].Errors[i], prefix)
		}
	}
	for _, want := range []string{"503", "deadline exceeded", "refused"} {
		if !strings.Contains(strings.Join(ws[0].Errors, "\n"), want) {
			t.Errorf("Errors %q do not mention %q", ws[0].Errors, want)
		}
	}
	if w := ws[0].Window; w.Requests != 10 {
		t.Errorf("window requests %v, want 10 (only web-1 answered)", w.Requests)
	}

	// Malformed metrics are a failure too.
	bad.Fail(0, "response_total{ this is not the text format\n")
	clk.Advance(5 * time.Second)
	s.ScrapeOnce(ctx)
	if ws := s.Workloads(time.Minute); len(ws) != 1 || !strings.Contains(strings.Join(ws[0].Errors, "\n"), "parsing metrics") {
		t.Errorf("Workloads after a malformed scrape = %+v, want a parse error", ws)
	}

	// web-2 recovers: its interval spans the failed scrapes.
	bad.Fail(0, "")
	bad.Serve("inbound", 200, 5, false, 1)
	clk.Advance(5 * time.Second)
	s.ScrapeOnce(ctx)
	w, err := s.Query(telemetry.Selector{Namespace: "shop", Workload: "web", Pod: "web-2"}, time.Minute)
	if err != nil || w.Requests != 15 || w.Duration != 15*time.Second {
		t.Errorf("web-2 after recovery: %v requests over %v (err %v), want 15 over 15s", w.Requests, w.Duration, err)
	}
	if ws := s.Workloads(time.Minute); ws[0].Meshed != 2 || len(ws[0].Errors) != 2 {
		t.Errorf("after recovery: meshed %d errors %q, want 2 and two errors", ws[0].Meshed, ws[0].Errors)
	}
}

// TestQuantile checks histogram_quantile semantics against hand-computed values.
func TestQuantile(t *testing.T) {
	inf := math.Inf(1)
	// 20 observations in (0, 10], 40 in (10, 20], 40 in (20, 50].
	hist := []telemetry.Bucket{{10, 20}, {20, 60}, {50, 100}, {inf, 100}}
	tests := []struct {
		name    string
		buckets []telemetry.Bucket
		q       float64
		want    float64
	}{
		{"median", hist, 0.5, 10 + 10*30.0/40},                  // rank 50 in (10, 20]
		{"p95", hist, 0.95, 20 + 30*35.0/40},                    // rank 95 in (20, 50]
		{"first bucket starts at 0", hist, 0.1, 10 * 10.0 / 20}, // rank 10 in (0, 10]
		{"bucket edge", hist, 0.6, 20},
		{"max", hist, 1, 50},
		{"rank in +Inf returns the highest bound", []telemetry.Bucket{{10, 5}, {inf, 10}}, 0.9, 10},
		{"min skips empty buckets", []telemetry.Bucket{{1, 0}, {5, 0}, {10, 4}, {inf, 4}}, 0, 5},
		{"no observations", []telemetry.Bucket{{10, 0}, {inf, 0}}, 0.5, math.NaN()},
		{"no +Inf bucket", []telemetry.Bucket{{10, 5}, {20, 10}}, 0.5, math.NaN()},
		{"no buckets", nil, 0.5, math.NaN()},
		{"q below 0", hist, -0.1, math.Inf(-1)},
		{"q above 1", hist, 1.1, inf},
		{"q NaN", hist, math.NaN(), math.NaN()},
		{"non-monotonic counts are smoothed", []telemetry.Bucket{{10, 10}, {20, 8}, {30, 20}, {inf, 20}}, 0.75, 20 + 10*5.0/10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := telemetry.Window{Buckets: tt.buckets}
			if got := w.Quantile(tt.q); !approx(got, tt.want) {
				t.Errorf("Quantile(%v) = %v, want %v", tt.q, got, tt.want)
			}
		})
	}
}
