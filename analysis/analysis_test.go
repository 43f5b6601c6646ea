package analysis_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/analysis"
	"github.com/sluicehq/sluice/mesh/telemetry"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// latencyBounds are Linkerd's response_latency_ms bounds, +Inf last.
var latencyBounds = []float64{
	1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500,
	1000, 2000, 3000, 4000, 5000, 10000, 20000, 30000, 40000, 50000, math.Inf(1),
}

// window builds the window of n requests of which failures failed, whose
// latencies (ms) are lat(i) for request i.
func window(n, failures int, lat func(i int) float64) telemetry.Window {
	counts := make([]float64, len(latencyBounds))
	for i := range n {
		v := lat(i)
		j := 0
		for latencyBounds[j] < v {
			j++
		}
		counts[j]++
	}
	w := telemetry.Window{
		Requests:  float64(n),
		Failures:  float64(failures),
		Successes: float64(n - failures),
		Duration:  time.Minute,
	}
	cum := 0.0
	for j, c := range counts {
		cum += c
		w.Buckets = append(w.Buckets, telemetry.Bucket{LE: latencyBounds[j], Count: cum})
	}
	return w
}

// constant returns a latency function always answering ms.
func constant(ms float64) func(int) float64 { return func(int) float64 { return ms } }

// fakeSource answers windows by workload name, and records the queries.
type fakeSource struct {
	windows map[string]telemetry.Window
	errs    map[string]error

	mu      sync.Mutex
	queries []query
}

type query struct {
	sel telemetry.Selector
	d   time.Duration
}

func (f *fakeSource) Window(ctx context.Context, sel telemetry.Selector, d time.Duration) (telemetry.Window, error) {
	f.mu.Lock()
	f.queries = append(f.queries, query{sel, d})
	f.mu.Unlock()
	if err := f.errs[sel.Workload]; err != nil {
		return telemetry.Window{}, err
	}
	w, ok := f.windows[sel.Workload]
	if !ok {
		return telemetry.Window{}, fmt.Errorf("telemetry: %s: %w", sel.Workload, telemetry.ErrNoData)
	}
	return w, nil
}

func ptr(v float64) *float64 { return &v }

var target = analysis.Target{
	Namespace: "test",
	Canary:    analysis.Workload{Name: "podinfo"},
	Primary:   analysis.Workload{Name: "podinfo-primary"},
}

// good is a healthy canary: 1000 requests, 5 failures, 7 ms each.
var good = window(1000, 5, constant(7))

func TestBuiltinVerdicts(t *testing.T) {
	boom := errors.New("boom")
	// p99 at 512.2 ms: rank 990 lies 0.25 into the 10.25 requests between
	// 500 and 1000 ms.
	slow := telemetry.Window{Requests: 1000, Successes: 1000, Buckets: []telemetry.Bucket{
		{LE: 100, Count: 900}, {LE: 500, Count: 989.75}, {LE: 1000, Count: 1000}, {LE: math.Inf(1), Count: 1000},
	}}
	tests := []struct {
		name    string
		windows map[string]telemetry.Window
		errs    map[string]error
		target  *analysis.Target
		check   analysis.Check
		verdict analysis.Verdict
		value   float64 // NaN: expect NaN
		unit    string
		message string
	}{
		{
			name:    "success rate passes",
			windows: map[string]telemetry.Window{"podinfo": good},
			check:   analysis.Check{Name: "request-success-rate", Min: ptr(99)},
			verdict: analysis.Pass, value: 99.5, unit: "%",
			message: "request-success-rate 99.5% (min 99%)",
		},
		{
			name:    "success rate below min",
			windows: map[string]telemetry.Window{"podinfo": window(1000, 87, constant(7))},
			check:   analysis.Check{Name: "request-success-rate", Min: ptr(99)},
			verdict: analysis.Fail, value: 91.3, unit: "%",
			message: "request-success-rate 91.3% < min 99%",
		},
		{
			name:    "success rate above max",
			windows: map[string]telemetry.Window{"podinfo": good},
			check:   analysis.Check{Name: "request-success-rate", Min: ptr(0), Max: ptr(50)},
			verdict: analysis.Fail, value: 99.5, unit: "%",
			message: "request-success-rate 99.5% > max 50%",
		},
		{
			name:    "success rate written precisely enough to read as failing",
			windows: map[string]telemetry.Window{"podinfo": window(10000, 5, constant(7))},
			check:   analysis.Check{Name: "request-success-rate", Min: ptr(99.96)},
			verdict: analysis.Fail, value: 99.95, unit: "%",
			message: "request-success-rate 99.95% < min 99.96%",
		},
		{
			name:    "success rate on the bound passes",
			windows: map[string]telemetry.Window{"podinfo": window(100, 1, constant(7))},
			check:   analysis.Check{Name: "request-success-rate", Min: ptr(99)},
			verdict: analysis.Pass, value: 99, unit: "%",
			message: "request-success-rate 99% (min 99%)",
		},
		{
			name:    "success rate without thresholds passes",
			windows: map[string]telemetry.Window{"podinfo": good},
			check:   analysis.Check{Name: "request-success-rate"},
			verdict: analysis.Pass, value: 99.5, unit: "%",
			message: "request-success-rate 99.5%",
		},
		{
			name:    "no requests is no data",
			check:   analysis.Check{Name: "request-success-rate", Min: ptr(99)},
			verdict: analysis.NoData, value: math.NaN(), unit: "%",
			message: "no requests to podinfo in the last 1m",
		},
		{
			name:    "an empty window without error is no data",
			windows: map[string]telemetry.Window{"podinfo": {}},
			check:   analysis.Check{Name: "request-success-rate", Min: ptr(99), Interval: 90 * time.Second},
			verdict: analysis.NoData, value: math.NaN(), unit: "%",
			message: "no requests to podinfo in the last 1m30s",
		},
		{
			name:    "no requests names the revision",
			target:  &analysis.Target{Namespace: "test", Canary: analysis.Workload{Name: "podinfo", Revision: "7d9f"}},
			check:   analysis.Check{Name: "request-duration", Max: ptr(500), Interval: 30 * time.Second},
			verdict: analysis.NoData, value: math.NaN(), unit: "ms",
			message: "no requests to podinfo (revision 7d9f) in the last 30s",
		},
		{
			name:    "source error",
			errs:    map[string]error{"podinfo": boom},
			check:   analysis.Check{Name: "request-success-rate", Min: ptr(99)},
			verdict: analysis.Error, value: math.NaN(), unit: "%",
			message: "cannot compute request-success-rate: reading telemetry of podinfo: boom",
		},
		{
			name:    "window with NaN requests",
			windows: map[string]telemetry.Window{"podinfo": {Requests: math.NaN()}},
			check:   analysis.Check{Name: "request-success-rate", Min: ptr(99)},
			verdict: analysis.Error, value: math.NaN(), unit: "%",
			message: "cannot compute request-success-rate: telemetry of podinfo: requests count is NaN",
		},
		{
			name:    "window with more failures than requests",
			windows: map[string]telemetry.Window{"podinfo": {Requests: 10, Failures: 20}},
			check:   analysis.Check{Name: "request-success-rate", Min: ptr(99)},
			verdict: analysis.Error, value: math.NaN(), unit: "%",
			message: "cannot compute request-success-rate: telemetry of podinfo: failures (20) exceed requests (10)",
		},
		{
			name:    "duration above max",
			windows: map[string]telemetry.Window{"podinfo": slow},
			check:   analysis.Check{Name: "request-duration", Max: ptr(500)},
			verdict: analysis.Fail, value: 500 + 500*0.25/10.25, unit: "ms",
			message: "request-duration p99 512ms > max 500ms",
		},
		{
			name:    "duration passes",
			windows: map[string]telemetry.Window{"podinfo": good},
			check:   analysis.Check{Name: "request-duration", Max: ptr(500)},
			verdict: analysis.Pass, value: 5 + 5*0.99, unit: "ms",
			message: "request-duration p99 10ms (max 500ms)",
		},
		{
			name:    "duration without a histogram is no data",
			windows: map[string]telemetry.Window{"podinfo": {Requests: 10, Successes: 10}},
			check:   analysis.Check{Name: "request-duration", Max: ptr(500)},
			verdict: analysis.NoData, value: math.NaN(), unit: "ms",
			message: "no latency observations for podinfo in the last 1m",
		},
		{
			name: "duration with buckets out of order",
			windows: map[string]telemetry.Window{"podinfo": {Requests: 10, Successes: 10, Buckets: []telemetry.Bucket{
				{LE: 10, Count: 5}, {LE: 5, Count: 7}, {LE: math.Inf(1), Count: 10},
			}}},
			check:   analysis.Check{Name: "request-duration", Max: ptr(500)},
			verdict: analysis.Error, value: math.NaN(), unit: "ms",
			message: "cannot compute request-duration: telemetry of podinfo: latency buckets are not in ascending order of bound (le=5 after le=10)",
		},
		{
			name: "duration with a NaN bucket",
			windows: map[string]telemetry.Window{"podinfo": {Requests: 10, Successes: 10, Buckets: []telemetry.Bucket{
				{LE: 10, Count: math.NaN()}, {LE: math.Inf(1), Count: 10},
			}}},
			check:   analysis.Check{Name: "request-duration", Max: ptr(500)},
			verdict: analysis.Error, value: math.NaN(), unit: "ms",
			message: "cannot compute request-duration: telemetry of podinfo: latency bucket le=10 has count NaN",
		},
		{
			name:    "template check",
			windows: map[string]telemetry.Window{"podinfo": good},
			check:   analysis.Check{Name: "error-rate", TemplateRef: "istio/error-rate", Max: ptr(1)},
			verdict: analysis.Error, value: math.NaN(),
			message: `cannot compute error-rate: metric template "istio/error-rate" needs a metric template provider; the built-in provider runs only request-success-rate, request-duration, canary-vs-primary-latency, canary-vs-primary-success-rate`,
		},
		{
			name:    "unknown built-in",
			windows: map[string]telemetry.Window{"podinfo": good},
			check:   analysis.Check{Name: "request-rate"},
			verdict: analysis.Error, value: math.NaN(),
			message: "cannot compute request-rate: unknown built-in metric \"request-rate\" (built-ins: request-success-rate, request-duration, canary-vs-primary-latency, canary-vs-primary-success-rate; other metrics need a templateRef)",
		},
		{
			name:    "min above max",
			windows: map[string]telemetry.Window{"podinfo": good},
			check:   analysis.Check{Name: "request-success-rate", Min: ptr(99), Max: ptr(90)},
			verdict: analysis.Error, value: math.NaN(),
			message: "cannot compute request-success-rate: threshold min 99 is greater than max 90",
		},
		{
			name:    "NaN threshold and negative interval",
			windows: map[string]telemetry.Window{"podinfo": good},
			check:   analysis.Check{Name: "request-duration", Max: ptr(math.NaN()), Interval: -time.Second},
			verdict: analysis.Error, value: math.NaN(),
			message: "cannot compute request-duration: interval -1s is negative\nthreshold max NaN is not a number",
		},
		{
			name:    "no namespace",
			target:  &analysis.Target{Canary: analysis.Workload{Name: "podinfo"}},
			check:   analysis.Check{Name: "request-success-rate"},
			verdict: analysis.Error, value: math.NaN(),
			message: "cannot compute request-success-rate: target namespace is empty",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &fakeSource{windows: tt.windows, errs: tt.errs}
			tgt := target
			if tt.target != nil {
				tgt = *tt.target
			}
			r := analysis.NewBuiltin(src).Run(context.Background(), tgt, tt.check)
			checkResult(t, r, tt.check.Name, tt.verdict, tt.value, tt.unit, tt.message)
			// Results carry copies of the check's thresholds.
			for _, b := range []struct{ got, want *float64 }{{r.Min, tt.check.Min}, {r.Max, tt.check.Max}} {
				switch {
				case (b.got == nil) != (b.want == nil):
					t.Errorf("threshold %v, want %v", b.got, b.want)
				case b.got != nil && b.got == b.want:
					t.Error("threshold aliases the check's")
				case b.got != nil && *b.got != *b.want && !math.IsNaN(*b.want):
					t.Errorf("threshold %v, want %v", *b.got, *b.want)
				}
			}
		})
	}
}

// checkResult compares r with what is wanted; value NaN wants NaN.
func checkResult(t *testing.T, r analysis.Result, name string, verdict analysis.Verdict, value float64, unit, message string) {
	t.Helper()
	if r.Name != name {
		t.Errorf("Name = %q, want %q", r.Name, name)
	}
	if r.Verdict != verdict {
		t.Errorf("Verdict = %q, want %q (message %q)", r.Verdict, verdict, r.Message)
	}
	if math.IsNaN(value) != math.IsNaN(r.Value) || !math.IsNaN(value) && math.Abs(r.Value-value) > 1e-9*math.Max(1, math.Abs(value)) {
		t.Errorf("Value = %v, want %v", r.Value, value)
	}
	if r.Unit != unit {
		t.Errorf("Unit = %q, want %q", r.Unit, unit)
	}
	if message != "" && r.Message != message {
		t.Errorf("Message\n got %q\nwant %q", r.Message, message)
	}
}

func TestBuiltinQueries(t *testing.T) {
	src := &fakeSource{windows: map[string]telemetry.Window{"podinfo": good, "podinfo-primary": good}}
	tgt := analysis.Target{
		Namespace: "test",
		Canary:    analysis.Workload{Name: "podinfo", Revision: "abc"},
		Primary:   analysis.Workload{Name: "podinfo-primary"},
	}
	p := analysis.NewBuiltin(src)
	p.Run(context.Background(), tgt, analysis.Check{Name: "request-success-rate"})
	p.Run(context.Background(), tgt, analysis.Check{Name: "canary-vs-primary-latency", Interval: 2 * time.Minute})
	want := []query{
		{telemetry.Selector{Namespace: "test", Workload: "podinfo", Revision: "abc", Direction: "inbound"}, time.Minute},
		{telemetry.Selector{Namespace: "test", Workload: "podinfo", Revision: "abc", Direction: "inbound"}, 2 * time.Minute},
		{telemetry.Selector{Namespace: "test", Workload: "podinfo-primary", Direction: "inbound"}, 2 * time.Minute},
	}
	if fmt.Sprint(src.queries) != fmt.Sprint(want) {
		t.Errorf("queries\n got %v\nwant %v", src.queries, want)
	}
}

func TestComparisonVerdicts(t *testing.T) {
	boom := errors.New("boom")
	fast := window(1000, 0, constant(7))   // all in (5, 10]
	slow := window(1000, 0, constant(250)) // all in (200, 300]
	tests := []struct {
		name    string
		windows map[string]telemetry.Window
		errs    map[string]error
		target  *analysis.Target
		check   analysis.Check
		verdict analysis.Verdict
		value   float64
		unit    string
		message string
	}{
		{
			name:    "canary slower fails",
			windows: map[string]telemetry.Window{"podinfo": slow, "podinfo-primary": fast},
			check:   analysis.Check{Name: "canary-vs-primary-latency"},
			verdict: analysis.Fail, value: 1,
			message: "canary-vs-primary-latency: podinfo slower than podinfo-primary (p50 250ms vs 7.5ms, Cliff's delta 1 >= 0.33, p=0 < alpha 0.05)",
		},
		{
			name:    "canary faster passes",
			windows: map[string]telemetry.Window{"podinfo": fast, "podinfo-primary": slow},
			check:   analysis.Check{Name: "canary-vs-primary-latency"},
			verdict: analysis.Pass, value: -1,
			message: "canary-vs-primary-latency: podinfo not materially slower than podinfo-primary (p50 7.5ms vs 250ms, Cliff's delta -1, p=1)",
		},
		{
			name:    "same latency passes",
			windows: map[string]telemetry.Window{"podinfo": fast, "podinfo-primary": fast},
			check:   analysis.Check{Name: "canary-vs-primary-latency"},
			verdict: analysis.Pass, value: 0,
			message: "canary-vs-primary-latency: podinfo not materially slower than podinfo-primary (p50 7.5ms vs 7.5ms, Cliff's delta 0, p=1)",
		},
		{
			// Significant, but a small effect: 60 % of the canary's requests
			// share the primary's bucket, 40 % are one bucket slower.
			name: "slower by less than the minimum effect passes",
			windows: map[string]telemetry.Window{
				"podinfo":         window(1000, 0, func(i int) float64 { return map[bool]float64{true: 15, false: 7}[i%10 < 4] }),
				"podinfo-primary": fast,
			},
			check:   analysis.Check{Name: "canary-vs-primary-latency", Compare: &analysis.Comparison{Alpha: 0.01, MinEffect: 0.5}},
			verdict: analysis.Pass, value: 0.4,
		},
		{
			name: "the same with a lower minimum effect fails",
			windows: map[string]telemetry.Window{
				"podinfo":         window(1000, 0, func(i int) float64 { return map[bool]float64{true: 15, false: 7}[i%10 < 4] }),
				"podinfo-primary": fast,
			},
			check:   analysis.Check{Name: "canary-vs-primary-latency", Compare: &analysis.Comparison{MinEffect: 0.4}},
			verdict: analysis.Fail, value: 0.4,
		},
		{
			name:    "canary without requests",
			windows: map[string]telemetry.Window{"podinfo-primary": fast},
			check:   analysis.Check{Name: "canary-vs-primary-latency"},
			verdict: analysis.NoData, value: math.NaN(),
			message: "no requests to podinfo in the last 1m",
		},
		{
			name:    "primary without requests",
			windows: map[string]telemetry.Window{"podinfo": fast},
			check:   analysis.Check{Name: "canary-vs-primary-success-rate"},
			verdict: analysis.NoData, value: math.NaN(), unit: "pp",
			message: "no requests to podinfo-primary in the last 1m to compare the canary with",
		},
		{
			name:    "too few canary samples",
			windows: map[string]telemetry.Window{"podinfo": window(12, 0, constant(7)), "podinfo-primary": window(300, 0, constant(7))},
			check:   analysis.Check{Name: "canary-vs-primary-latency"},
			verdict: analysis.NoData, value: math.NaN(),
			message: "not enough samples to compare: 12 latency observations for podinfo, 300 for podinfo-primary in the last 1m (need 20 each)",
		},
		{
			name:    "too few primary requests",
			windows: map[string]telemetry.Window{"podinfo": window(300, 30, constant(7)), "podinfo-primary": window(19, 0, constant(7))},
			check:   analysis.Check{Name: "canary-vs-primary-success-rate"},
			verdict: analysis.NoData, value: math.NaN(), unit: "pp",
			message: "not enough samples to compare: 300 requests for podinfo, 19 for podinfo-primary in the last 1m (need 20 each)",
		},
		{
			name:    "primary error",
			windows: map[string]telemetry.Window{"podinfo": fast},
			errs:    map[string]error{"podinfo-primary": boom},
			check:   analysis.Check{Name: "canary-vs-primary-latency"},
			verdict: analysis.Error, value: math.NaN(),
			message: "cannot compute canary-vs-primary-latency: reading telemetry of podinfo-primary: boom",
		},
		{
			name:    "no primary named",
			target:  &analysis.Target{Namespace: "test", Canary: analysis.Workload{Name: "podinfo"}},
			windows: map[string]telemetry.Window{"podinfo": fast},
			check:   analysis.Check{Name: "canary-vs-primary-success-rate"},
			verdict: analysis.Error, value: math.NaN(), unit: "pp",
			message: "cannot compute canary-vs-primary-success-rate: primary workload name is empty",
		},
		{
			name:    "threshold range on a comparison",
			windows: map[string]telemetry.Window{"podinfo": fast, "podinfo-primary": fast},
			check:   analysis.Check{Name: "canary-vs-primary-latency", Max: ptr(1)},
			verdict: analysis.Error, value: math.NaN(),
			message: "cannot compute canary-vs-primary-latency: a thresholdRange does not apply to a canary-vs-primary check (it compares the canary with the primary); tune it with alpha and minEffect",
		},
		{
			name:    "alpha out of range",
			windows: map[string]telemetry.Window{"podinfo": fast, "podinfo-primary": fast},
			check:   analysis.Check{Name: "canary-vs-primary-success-rate", Compare: &analysis.Comparison{Alpha: 1.5}},
			verdict: analysis.Error, value: math.NaN(),
			message: "cannot compute canary-vs-primary-success-rate: alpha 1.5 is not between 0 and 1",
		},
		{
			name:    "latency effect out of range",
			windows: map[string]telemetry.Window{"podinfo": fast, "podinfo-primary": fast},
			check:   analysis.Check{Name: "canary-vs-primary-latency", Compare: &analysis.Comparison{MinEffect: 1.5}},
			verdict: analysis.Error, value: math.NaN(),
			message: "cannot compute canary-vs-primary-latency: minEffect 1.5 is not in (0, 1]",
		},
		{
			name: "histogram without +Inf",
			windows: map[string]telemetry.Window{"podinfo": fast, "podinfo-primary": {Requests: 100, Successes: 100, Buckets: []telemetry.Bucket{
				{LE: 10, Count: 100},
			}}},
			check:   analysis.Check{Name: "canary-vs-primary-latency"},
			verdict: analysis.Error, value: math.NaN(),
			message: "cannot compute canary-vs-primary-latency: a latency histogram has no +Inf bucket",
		},
		{
			name:    "canary with 10% errors against 0% fails",
			windows: map[string]telemetry.Window{"podinfo": window(1000, 100, constant(7)), "podinfo-primary": window(1000, 0, constant(7))},
			check:   analysis.Check{Name: "canary-vs-primary-success-rate"},
			verdict: analysis.Fail, value: 10, unit: "pp",
			// p: half of scipy.stats.chi2_contingency([[100, 900], [0, 1000]],
			// correction=False)'s two-sided 1.0694621986423894e-24.
			message: "canary-vs-primary-success-rate: podinfo error rate 10% vs 0% for podinfo-primary (+10 points >= 1, p=5.3e-25 < alpha 0.05, z-test)",
		},
		{
			name:    "significant but below the minimum effect passes",
			windows: map[string]telemetry.Window{"podinfo": window(100000, 1500, constant(7)), "podinfo-primary": window(100000, 1000, constant(7))},
			check:   analysis.Check{Name: "canary-vs-primary-success-rate"},
			verdict: analysis.Pass, value: 0.5, unit: "pp",
		},
		{
			name:    "the same with a lower minimum effect fails",
			windows: map[string]telemetry.Window{"podinfo": window(100000, 1500, constant(7)), "podinfo-primary": window(100000, 1000, constant(7))},
			check:   analysis.Check{Name: "canary-vs-primary-success-rate", Compare: &analysis.Comparison{MinEffect: 0.25}},
			verdict: analysis.Fail, value: 0.5, unit: "pp",
		},
		{
			name:    "few errors use Fisher's exact test and pass",
			windows: map[string]telemetry.Window{"podinfo": window(1000, 3, constant(7)), "podinfo-primary": window(1000, 0, constant(7))},
			check:   analysis.Check{Name: "canary-vs-primary-success-rate", Compare: &analysis.Comparison{MinEffect: 0.1}},
			verdict: analysis.Pass, value: 0.3, unit: "pp",
			// scipy.stats.fisher_exact([[3, 997], [0, 1000]], "greater") = 0.1248…
			message: "canary-vs-primary-success-rate: podinfo error rate 0.3% vs 0% for podinfo-primary (+0.3 points, p=0.12, Fisher's exact test)",
		},
		{
			name:    "small samples use Fisher's exact test and fail",
			windows: map[string]telemetry.Window{"podinfo": window(40, 8, constant(7)), "podinfo-primary": window(40, 0, constant(7))},
			check:   analysis.Check{Name: "canary-vs-primary-success-rate"},
			verdict: analysis.Fail, value: 20, unit: "pp",
			// scipy.stats.fisher_exact([[8, 32], [0, 40]], "greater") = 0.002653…
			message: "canary-vs-primary-success-rate: podinfo error rate 20% vs 0% for podinfo-primary (+20 points >= 1, p=0.0027 < alpha 0.05, Fisher's exact test)",
		},
		{
			name:    "canary better passes",
			windows: map[string]telemetry.Window{"podinfo": window(1000, 0, constant(7)), "podinfo-primary": window(1000, 100, constant(7))},
			check:   analysis.Check{Name: "canary-vs-primary-success-rate"},
			verdict: analysis.Pass, value: -10, unit: "pp",
			message: "canary-vs-primary-success-rate: podinfo error rate 0% vs 10% for podinfo-primary (-10 points, p=1, z-test)",
		},
		{
			name:    "no errors anywhere passes",
			windows: map[string]telemetry.Window{"podinfo": window(500, 0, constant(7)), "podinfo-primary": window(700, 0, constant(7))},
			check:   analysis.Check{Name: "canary-vs-primary-success-rate"},
			verdict: analysis.Pass, value: 0, unit: "pp",
			message: "canary-vs-primary-success-rate: podinfo error rate 0% vs 0% for podinfo-primary (0 points, p=1, Fisher's exact test)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &fakeSource{windows: tt.windows, errs: tt.errs}
			tgt := target
			if tt.target != nil {
				tgt = *tt.target
			}
			r := analysis.NewBuiltin(src).Run(context.Background(), tgt, tt.check)
			checkResult(t, r, tt.check.Name, tt.verdict, tt.value, tt.unit, tt.message)
			if r.Verdict != analysis.Error && (r.Min != nil || r.Max != nil) {
				t.Errorf("comparison result has thresholds %v, %v", r.Min, r.Max)
			}
		})
	}
}

// TestComparisonsFalsePositives runs both comparisons on canaries and
// primaries drawn from one distribution: with only significance deciding
// (a negligible minimum effect) they fail about alpha of the time; with the
// default minimum effect, practically never.
func TestComparisonsFalsePositives(t *testing.T) {
	const trials, alpha = 100, 0.05
	rng := rand.New(rand.NewPCG(42, 4242))
	draw := func() telemetry.Window {
		n := 400 + rng.IntN(200)
		failures := 0
		for range n {
			if rng.Float64() < 0.02 {
				failures++
			}
		}
		return window(n, failures, func(int) float64 { return math.Exp(rng.NormFloat64()*0.6 + 2.5) }) // ~12 ms
	}
	for _, tc := range []struct {
		name      string
		minEffect float64
		maxFails  map[string]int
	}{
		// Expected about alpha·trials = 5 each.
		{"significance only", 1e-9, map[string]int{"canary-vs-primary-latency": 12, "canary-vs-primary-success-rate": 12}},
		// With a 2 % error rate and ~500 requests a side, a significant
		// difference exceeds 1 point anyway, so the success-rate comparison
		// still fails about alpha of the time; the latency comparison's
		// Cliff's delta of 0.33 is far beyond what noise produces.
		{"default minimum effect", 0, map[string]int{"canary-vs-primary-latency": 0, "canary-vs-primary-success-rate": 12}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fails := map[string]int{}
			for range trials {
				src := &fakeSource{windows: map[string]telemetry.Window{"podinfo": draw(), "podinfo-primary": draw()}}
				p := analysis.NewBuiltin(src)
				for _, name := range []string{"canary-vs-primary-latency", "canary-vs-primary-success-rate"} {
					r := p.Run(context.Background(), target, analysis.Check{Name: name, Compare: &analysis.Comparison{Alpha: alpha, MinEffect: tc.minEffect}})
					switch r.Verdict {
					case analysis.Fail:
						fails[name]++
					case analysis.Pass:
					default:
						t.Fatalf("%s: %s: %s", name, r.Verdict, r.Message)
					}
				}
			}
			for name, n := range fails {
				if n > tc.maxFails[name] {
					t.Errorf("%s failed %d of %d equal trials, want ≤ %d", name, n, trials, tc.maxFails[name])
				}
			}
			t.Logf("failures of %d equal trials: %v", trials, fails)
		})
	}
}

// TestComparisonsPower checks that real regressions fail, over seeded random
// draws: 10 % errors against none, and 300 ms added latency.
func TestComparisonsPower(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 77))
	lat := func(extra float64) func(int) float64 {
		return func(int) float64 { return math.Exp(rng.NormFloat64()*0.6+2.5) + extra }
	}
	errorsAt := func(n int, rate float64) int {
		f := 0
		for range n {
			if rng.Float64() < rate {
				f++
			}
		}
		return f
	}
	for trial := range 20 {
		src := &fakeSource{windows: map[string]telemetry.Window{
			"podinfo":         window(1000, errorsAt(1000, 0.10), lat(300)),
			"podinfo-primary": window(1000, 0, lat(0)),
		}}
		p := analysis.NewBuiltin(src)
		for _, name := range []string{"canary-vs-primary-latency", "canary-vs-primary-success-rate"} {
			if r := p.Run(context.Background(), target, analysis.Check{Name: name}); r.Verdict != analysis.Fail {
				t.Errorf("trial %d: %s: %s, want fail: %s", trial, name, r.Verdict, r.Message)
			}
		}
	}
}

// scripted is a Provider answering results by check name, and panicking
// for the check named "panic".
type scripted map[string]analysis.Result

func (s scripted) Run(_ context.Context, _ analysis.Target, c analysis.Check) analysis.Result {
	if c.Name == "panic" {
		panic("odd data")
	}
	return s[c.Name]
}

func TestAnalyze(t *testing.T) {
	p := scripted{
		"request-success-rate": {Name: "request-success-rate", Verdict: analysis.Pass, Value: 100},
		"request-duration":     {Name: "request-duration", Verdict: analysis.Fail, Value: 600},
		"error-rate":           {Name: "error-rate", Verdict: analysis.Error, Value: math.NaN()},
		"nameless":             {Verdict: analysis.NoData},
		"weird":                {Name: "weird", Verdict: "maybe"},
	}
	checks := []analysis.Check{
		{Name: "error-rate", TemplateRef: "error-rate"},
		{Name: "request-success-rate"},
		{Name: "panic", TemplateRef: "x"},
		{Name: "request-duration"},
		{Name: "nameless"},
		{Name: "weird"},
	}
	got := analysis.Analyze(context.Background(), p, target, checks)
	want := []struct {
		name    string
		verdict analysis.Verdict
		message string
	}{
		{"request-success-rate", analysis.Pass, ""},
		{"request-duration", analysis.Fail, ""},
		{"nameless", analysis.NoData, ""},
		{"weird", analysis.Error, `cannot compute weird: provider returned unknown verdict "maybe"`},
		{"error-rate", analysis.Error, ""},
		{"panic", analysis.Error, "cannot compute panic: provider panicked: odd data"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d results, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		if got[i].Name != w.name || got[i].Verdict != w.verdict || w.message != "" && got[i].Message != w.message {
			t.Errorf("result %d = %+v, want %+v", i, got[i], w)
		}
	}
	failed := analysis.Failed(got)
	var names []string
	for _, r := range failed {
		names = append(names, r.Name)
	}
	if strings.Join(names, ",") != "request-duration,weird,error-rate,panic" {
		t.Errorf("Failed = %v", names)
	}

	nilResults := analysis.Analyze(context.Background(), nil, target, []analysis.Check{{Name: "request-duration"}})
	if len(nilResults) != 1 || nilResults[0].Verdict != analysis.Error || nilResults[0].Message != "cannot compute request-duration: no metrics provider" {
		t.Errorf("nil provider: %+v", nilResults)
	}
	if r := analysis.Analyze(context.Background(), p, target, nil); len(r) != 0 {
		t.Errorf("no checks: %+v", r)
	}
}

// TestAnalyzeBuiltin runs a Canary's usual checks through the built-in
// provider, on a canary with 10 % errors.
func TestAnalyzeBuiltin(t *testing.T) {
	src := &fakeSource{windows: map[string]telemetry.Window{
		"podinfo":         window(1000, 100, constant(7)),
		"podinfo-primary": window(1000, 0, constant(7)),
	}}
	results := analysis.Analyze(context.Background(), analysis.NewBuiltin(src), target, []analysis.Check{
		{Name: "request-success-rate", Min: ptr(99)},
		{Name: "request-duration", Max: ptr(500)},
		{Name: "canary-vs-primary-success-rate"},
		{Name: "canary-vs-primary-latency"},
	})
	var got []string
	for _, r := range results {
		got = append(got, r.Name+"="+string(r.Verdict))
	}
	want := "request-success-rate=fail request-duration=pass canary-vs-primary-success-rate=fail canary-vs-primary-latency=pass"
	if strings.Join(got, " ") != want {
		t.Errorf("got %v, want %v", got, want)
	}
	if f := analysis.Failed(results); len(f) != 2 || analysis.FormatMessage(f[0], 3, 5) != "request-success-rate 90% < min 99% (3/5 failed checks)" {
		t.Errorf("failed: %+v", f)
	}
}

func TestAllNoData(t *testing.T) {
	nd := analysis.Result{Verdict: analysis.NoData}
	tests := []struct {
		name    string
		results []analysis.Result
		want    bool
	}{
		{"none", nil, false},
		{"one no-data", []analysis.Result{nd}, true},
		{"all no-data", []analysis.Result{nd, nd}, true},
		{"one passes", []analysis.Result{nd, {Verdict: analysis.Pass}}, false},
		{"one fails", []analysis.Result{{Verdict: analysis.Fail}, nd}, false},
		{"one errs", []analysis.Result{nd, {Verdict: analysis.Error}}, false},
	}
	for _, tt := range tests {
		if got := analysis.AllNoData(tt.results); got != tt.want {
			t.Errorf("%s: AllNoData = %v, want %v", tt.name, got, tt.want)
		}
		if f := analysis.Failed(tt.results); tt.want && len(f) != 0 {
			t.Errorf("%s: no-data results counted as failed: %v", tt.name, f)
		}
	}
}

func TestFormatMessage(t *testing.T) {
	tests := []struct {
		r                 analysis.Result
		failed, threshold int
		want              string
	}{
		{analysis.Result{Name: "request-success-rate", Verdict: analysis.Fail, Message: "request-success-rate 91.3% < min 99%"}, 3, 5,
			"request-success-rate 91.3% < min 99% (3/5 failed checks)"},
		{analysis.Result{Name: "request-duration", Verdict: analysis.Fail, Message: "request-duration p99 512ms > max 500ms"}, 1, 1,
			"request-duration p99 512ms > max 500ms (1/1 failed checks)"},
		{analysis.Result{Name: "request-success-rate", Verdict: analysis.NoData, Message: "no requests to podinfo in the last 1m"}, 0, 5,
			"no requests to podinfo in the last 1m (0/5 failed checks)"},
		{analysis.Result{Name: "error-rate", Verdict: analysis.Error, Message: "cannot compute error-rate: timeout"}, 2, 0,
			"cannot compute error-rate: timeout (2 failed checks)"},
		{analysis.Result{Name: "error-rate", Verdict: analysis.Fail}, 2, 3,
			"error-rate fail (2/3 failed checks)"},
	}
	for _, tt := range tests {
		if got := analysis.FormatMessage(tt.r, tt.failed, tt.threshold); got != tt.want {
			t.Errorf("FormatMessage(%q, %d, %d)\n got %q\nwant %q", tt.r.Message, tt.failed, tt.threshold, got, tt.want)
		}
	}
}

func TestIsBuiltin(t *testing.T) {
	for name, want := range map[string]bool{
		"request-success-rate": true, "request-duration": true,
		"canary-vs-primary-latency": true, "canary-vs-primary-success-rate": true,
		"error-rate": false, "": false,
	} {
		if got := analysis.IsBuiltin(name); got != want {
			t.Errorf("IsBuiltin(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestWorkloadString(t *testing.T) {
	if got := (analysis.Workload{Name: "podinfo"}).String(); got != "podinfo" {
		t.Errorf("got %q", got)
	}
	if got := (analysis.Workload{Name: "podinfo", Revision: "abc"}).String(); got != "podinfo (revision abc)" {
		t.Errorf("got %q", got)
	}
}
