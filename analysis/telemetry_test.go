package analysis_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/analysis"
	"github.com/sluicehq/sluice/mesh/telemetry"
)

// proxyMetrics is a fake proxy's /metrics: inbound response counters and a
// latency histogram on Linkerd's bounds, all requests at one latency.
type proxyMetrics struct {
	mu                  sync.Mutex
	successes, failures int
	latencyMs           float64
}

func (p *proxyMetrics) set(successes, failures int, latencyMs float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.successes, p.failures, p.latencyMs = successes, failures, latencyMs
}

func (p *proxyMetrics) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	b.WriteString("# TYPE response_total counter\n")
	fmt.Fprintf(&b, "response_total{direction=\"inbound\",tls=\"true\",status_code=\"200\",classification=\"success\"} %d\n", p.successes)
	fmt.Fprintf(&b, "response_total{direction=\"inbound\",tls=\"true\",status_code=\"500\",classification=\"failure\"} %d\n", p.failures)
	b.WriteString("# TYPE response_latency_ms histogram\n")
	total := p.successes + p.failures
	for _, le := range latencyBounds {
		count := 0
		if p.latencyMs <= le {
			count = total
		}
		bound := fmt.Sprint(le)
		if math.IsInf(le, 1) {
			bound = "+Inf"
		}
		fmt.Fprintf(&b, "response_latency_ms_bucket{direction=\"inbound\",le=%q} %d\n", bound, count)
	}
	fmt.Fprintf(&b, "response_latency_ms_sum{direction=\"inbound\"} %v\n", float64(total)*p.latencyMs)
	fmt.Fprintf(&b, "response_latency_ms_count{direction=\"inbound\"} %d\n", total)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	_, _ = io.WriteString(w, b.String())
}

// TestTelemetrySources runs the built-in checks against a real telemetry
// store scraping fake proxies on loopback, both in process (StoreSource) and
// through the store's HTTP API (*telemetry.Client).
func TestTelemetrySources(t *testing.T) {
	proxies := map[string]*proxyMetrics{"podinfo": {}, "podinfo-primary": {}, "idle": {}}
	var targets []telemetry.Target
	for name, p := range proxies {
		srv := httptest.NewServer(p)
		t.Cleanup(srv.Close)
		targets = append(targets, telemetry.Target{
			URL:    srv.URL + "/metrics",
			Labels: map[string]string{"namespace": "test", "workload": name, "pod": name + "-0"},
		})
	}
	scrapeClient := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(scrapeClient.CloseIdleConnections)
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	store := telemetry.New(telemetry.TargetsFunc(func() []telemetry.Target { return targets }), telemetry.Options{
		Clock: clock, HTTPClient: scrapeClient, Logger: slog.New(slog.DiscardHandler),
	})
	ctx := context.Background()
	store.ScrapeOnce(ctx) // the baseline: every counter at 0
	proxies["podinfo"].set(900, 100, 250)
	proxies["podinfo-primary"].set(1000, 0, 7)
	mu.Lock()
	now = now.Add(30 * time.Second)
	mu.Unlock()
	store.ScrapeOnce(ctx)

	api := httptest.NewServer(store.Handler())
	t.Cleanup(api.Close)
	apiClient := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(apiClient.CloseIdleConnections)

	checks := []analysis.Check{
		{Name: "request-success-rate", Min: ptr(99)},
		{Name: "request-duration", Max: ptr(500)},
		{Name: "canary-vs-primary-success-rate"},
		{Name: "canary-vs-primary-latency"},
	}
	want := []string{
		"fail: request-success-rate 90% < min 99%",
		"pass: request-duration p99 299ms (max 500ms)",
		"fail: canary-vs-primary-success-rate: podinfo error rate 10% vs 0% for podinfo-primary (+10 points >= 1, p=5.3e-25 < alpha 0.05, z-test)",
		"fail: canary-vs-primary-latency: podinfo slower than podinfo-primary (p50 250ms vs 7.5ms, Cliff's delta 1 >= 0.33, p=0 < alpha 0.05)",
	}
	idle := analysis.Target{Namespace: "test", Canary: analysis.Workload{Name: "idle"}, Primary: analysis.Workload{Name: "podinfo-primary"}}
	wantIdle := []string{
		"no-data: no requests to idle in the last 1m",
		"no-data: no requests to idle in the last 1m",
		"no-data: no requests to idle in the last 1m",
		"no-data: no requests to idle in the last 1m",
	}
	for _, src := range []struct {
		name string
		src  analysis.Source
	}{
		{"store", analysis.StoreSource(store)},
		{"client", &telemetry.Client{BaseURL: api.URL, HTTPClient: apiClient}},
	} {
		t.Run(src.name, func(t *testing.T) {
			p := analysis.NewBuiltin(src.src)
			for _, tc := range []struct {
				target analysis.Target
				want   []string
			}{{target, want}, {idle, wantIdle}} {
				results := analysis.Analyze(ctx, p, tc.target, checks)
				if len(results) != len(tc.want) {
					t.Fatalf("%d results, want %d", len(results), len(tc.want))
				}
				for i, r := range results {
					if got := string(r.Verdict) + ": " + r.Message; got != tc.want[i] {
						t.Errorf("%s: check %d\n got %q\nwant %q", tc.target.Canary, i, got, tc.want[i])
					}
				}
				if tc.target.Canary.Name == "idle" && !analysis.AllNoData(results) {
					t.Error("idle canary: not all no-data")
				}
			}
		})
	}

	// A cancelled context is an error, not no data.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	r := analysis.NewBuiltin(analysis.StoreSource(store)).Run(cancelled, target, analysis.Check{Name: "request-success-rate"})
	if r.Verdict != analysis.Error || r.Message != "cannot compute request-success-rate: reading telemetry of podinfo: context canceled" {
		t.Errorf("cancelled: %s: %s", r.Verdict, r.Message)
	}
}
