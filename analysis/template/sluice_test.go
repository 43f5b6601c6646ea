package template_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/analysis/template"
	"github.com/sluicehq/sluice/mesh/telemetry"
)

func TestParseSluiceQuery(t *testing.T) {
	for _, tc := range []struct {
		query   string
		want    string // metric quantile labels range
		wantErr string
	}{
		{query: "success_rate", want: "success_rate 0 map[] 0s"},
		{query: "  success-rate  ", want: "success_rate 0 map[] 0s"},
		{query: "request-success-rate", want: "success_rate 0 map[] 0s"},
		{query: "request-duration", want: "p99 0.99 map[] 0s"},
		{query: "error_rate{}", want: "error_rate 0 map[] 0s"},
		{query: "rps[30s]", want: "rps 0 map[] 30s"},
		{query: "requests { workload = \"web\" } [ 2m ]", want: "requests 0 map[workload:web] 2m0s"},
		{query: `p99{namespace="test",deployment="podinfo",direction="outbound",}`, want: "p99 0.99 map[direction:outbound namespace:test workload:podinfo] 0s"},
		{query: `p99.9{revision="r2", pod="p-1"}[1h30m]`, want: "p99.9 0.999 map[pod:p-1 revision:r2] 1h30m0s"},
		{query: `p50{workload="a\"b"}`, want: `p50 0.5 map[workload:a"b] 0s`},
		{query: "P95", want: "p95 0.95 map[] 0s"},
		{query: "", wantErr: "want a metric"},
		{query: "latency", wantErr: `unknown metric "latency"`},
		{query: "p0", wantErr: `unknown metric "p0"`},
		{query: "p101", wantErr: `unknown metric "p101"`},
		{query: `success_rate{app="x"}`, wantErr: `unknown label "app"`},
		{query: `success_rate{workload=~"x"}`, wantErr: "only = matchers"},
		{query: `success_rate{workload!="x"}`, wantErr: "want = after workload"},
		{query: `success_rate{workload='x'}`, wantErr: "double-quoted"},
		{query: `success_rate{workload="x}`, wantErr: "no closing quote"},
		{query: `success_rate{workload="x" pod="y"}`, wantErr: "want , or }"},
		{query: `success_rate{workload="x",deployment="y"}`, wantErr: `label "deployment" given twice`},
		{query: `success_rate{direction="sideways"}`, wantErr: `direction "sideways"`},
		{query: "success_rate[1x]", wantErr: "not a positive duration"},
		{query: "success_rate[1m", wantErr: "no closing ]"},
		{query: "sum(success_rate)", wantErr: `unknown metric "sum"`},
		{query: "success_rate / 2", wantErr: `unexpected "/ 2"`},
	} {
		t.Run(tc.query, func(t *testing.T) {
			q, err := template.ParseSluiceQuery(tc.query)
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("parsed as %+v, want an error", q)
				}
				if !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "sluice query") {
					t.Errorf("error %q does not contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprintf("%s %.6g %v %v", q.Metric, q.Quantile, q.Labels, q.Range); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// fakeSource answers every window with w (or err), recording what it was asked.
type fakeSource struct {
	w   telemetry.Window
	err error

	sel telemetry.Selector
	d   time.Duration
}

func (f *fakeSource) Window(_ context.Context, sel telemetry.Selector, d time.Duration) (telemetry.Window, error) {
	f.sel, f.d = sel, d
	return f.w, f.err
}

func TestSluiceQuery(t *testing.T) {
	// 200 requests over 40s, 10 failed; 100 at ≤10ms, 190 at ≤100ms, all at
	// ≤1000ms: p50 is 10ms, p99 (rank 198) 100+900·8/10 = 820ms.
	win := telemetry.Window{
		Requests: 200, Successes: 190, Failures: 10, Duration: 40 * time.Second,
		Buckets: []telemetry.Bucket{{LE: 10, Count: 100}, {LE: 100, Count: 190}, {LE: 1000, Count: 200}, {LE: math.Inf(1), Count: 200}},
	}
	vars := template.Vars{Namespace: "test", Target: "podinfo", Interval: 2 * time.Minute}
	for _, tc := range []struct {
		query   string
		want    float64
		wantSel telemetry.Selector
		wantD   time.Duration
	}{
		{"success_rate", 95, telemetry.Selector{Namespace: "test", Workload: "podinfo", Direction: "inbound"}, 2 * time.Minute},
		{"error-rate", 5, telemetry.Selector{Namespace: "test", Workload: "podinfo", Direction: "inbound"}, 2 * time.Minute},
		{"rps[30s]", 5, telemetry.Selector{Namespace: "test", Workload: "podinfo", Direction: "inbound"}, 30 * time.Second},
		{"requests", 200, telemetry.Selector{Namespace: "test", Workload: "podinfo", Direction: "inbound"}, 2 * time.Minute},
		{"p50", 10, telemetry.Selector{Namespace: "test", Workload: "podinfo", Direction: "inbound"}, 2 * time.Minute},
		{"p99", 820, telemetry.Selector{Namespace: "test", Workload: "podinfo", Direction: "inbound"}, 2 * time.Minute},
		{`p99{namespace="other",workload="web",revision="r2",pod="web-1",direction="outbound"}[5m]`, 820,
			telemetry.Selector{Namespace: "other", Workload: "web", Revision: "r2", Pod: "web-1", Direction: "outbound"}, 5 * time.Minute},
	} {
		t.Run(tc.query, func(t *testing.T) {
			src := &fakeSource{w: win}
			s := &template.Sluice{Source: src}
			got, err := s.Query(context.Background(), tc.query, vars)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("value %v, want %v", got, tc.want)
			}
			if src.sel != tc.wantSel || src.d != tc.wantD {
				t.Errorf("asked %+v over %v, want %+v over %v", src.sel, src.d, tc.wantSel, tc.wantD)
			}
		})
	}

	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		src     *fakeSource
		query   string
		noData  bool
		wantErr string
	}{
		{"store has nothing", &fakeSource{err: fmt.Errorf("wrapped: %w", telemetry.ErrNoData)}, "success_rate", true, "test/podinfo has no inbound requests in the last 2m"},
		{"zero requests", &fakeSource{w: telemetry.Window{Pods: 1}}, "rps", true, "no inbound requests"},
		{"no histogram", &fakeSource{w: telemetry.Window{Requests: 3, Successes: 3}}, "p99", true, "test/podinfo has no latency observations in the last 2m"},
		{"source fails", &fakeSource{err: errors.New("connection refused")}, "success_rate", false, `sluice telemetry: query "success_rate" failed: connection refused`},
		{"bad query", &fakeSource{w: win}, "success_ratio", false, `unknown metric "success_ratio"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := (&template.Sluice{Source: tc.src}).Query(ctx, tc.query, vars)
			if err == nil {
				t.Fatal("no error")
			}
			if errors.Is(err, template.ErrNoData) != tc.noData {
				t.Errorf("no data = %v, want %v (%v)", errors.Is(err, template.ErrNoData), tc.noData, err)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not contain %q", err, tc.wantErr)
			}
		})
	}

	// Check: no data is fine (the store answers), an error is not.
	if err := (&template.Sluice{Source: &fakeSource{err: telemetry.ErrNoData}}).Check(ctx); err != nil {
		t.Errorf("Check with an empty store: %v", err)
	}
	if err := (&template.Sluice{Source: &fakeSource{err: errors.New("dial tcp: refused")}}).Check(ctx); err == nil || !strings.Contains(err.Error(), "sluice telemetry is unreachable: dial tcp: refused") {
		t.Errorf("Check with a failing source: %v", err)
	}
}
