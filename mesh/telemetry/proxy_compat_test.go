package telemetry_test

import (
	"compress/gzip"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/mesh/telemetry"
	"github.com/sluicehq/sluice/proxy/metrics"
)

// TestProxyRegistry scrapes the proxy's real metrics registry, served over
// HTTP as its admin server does (gzip when asked), to prove the store reads
// what the proxy writes: labels, classification, TLS, the histogram, and a
// restart.
func TestProxyRegistry(t *testing.T) {
	static := metrics.Labels{{Name: "namespace", Value: "shop"}, {Name: "deployment", Value: "web"}, {Name: "pod", Value: "web-1"}}
	var reg atomic.Pointer[metrics.Registry]
	reg.Store(metrics.NewRegistry(static))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			w.Header().Set("Content-Encoding", "gzip")
			gz := gzip.NewWriter(w)
			defer gz.Close()
			_ = reg.Load().WriteText(gz)
			return
		}
		_ = reg.Load().WriteText(w)
	}))
	t.Cleanup(srv.Close)

	ctx := context.Background()
	clk := newClock()
	src := &targetList{}
	// The supervisor adds the revision; the proxy's labels give the rest.
	src.Set(telemetry.Target{URL: srv.URL + "/metrics", Labels: map[string]string{"revision": "r2"}})
	s := newStore(t, src, clk, telemetry.Options{})

	record := func(r *metrics.Registry) {
		mtls := r.HTTP("inbound", metrics.Labels{{Name: "authority", Value: "web.shop"}, {Name: "tls", Value: "true"}, {Name: "client_id", Value: "default.shop.serviceaccount.identity.sluice.cluster.local"}})
		plain := r.HTTP("inbound", metrics.Labels{{Name: "tls", Value: "no_identity"}, {Name: "no_tls_reason", Value: "no_tls_from_remote"}})
		out := r.HTTP("outbound", metrics.Labels{{Name: "tls", Value: "true"}, {Name: "dst_namespace", Value: "shop"}, {Name: "dst_deployment", Value: "api"}})
		for range 90 {
			mtls.Request()
			mtls.Response(200, -1, false, "", 3*time.Millisecond)
		}
		for range 10 {
			plain.Request()
			plain.Response(503, -1, true, "", 40*time.Millisecond)
		}
		for range 5 {
			mtls.Request()
			mtls.Response(0, -1, true, "loadshed", 2*time.Millisecond)
			mtls.Request()
			mtls.Response(200, 14, true, "", 7*time.Millisecond)
		}
		for range 7 {
			out.Request()
			out.Response(200, -1, false, "", time.Millisecond)
		}
	}

	// What the proxy served before the first scrape is a baseline.
	record(reg.Load())
	s.ScrapeOnce(ctx)
	record(reg.Load())
	clk.Advance(5 * time.Second)
	s.ScrapeOnce(ctx)

	sel := telemetry.Selector{Namespace: "shop", Workload: "web", Revision: "r2", Pod: "web-1"}
	w, err := s.Query(sel, time.Minute)
	if err != nil {
		t.Fatalf("Query: %v", err)
	}
	if w.Requests != 110 || w.Failures != 20 || w.TLSRequests != 100 || w.Pods != 1 {
		t.Errorf("requests %v failures %v tls %v pods %d, want 110, 20, 100, 1", w.Requests, w.Failures, w.TLSRequests, w.Pods)
	}
	if len(w.Buckets) != len(metrics.LatencyBucketsMs)+1 {
		t.Fatalf("buckets %v, want Linkerd's %d", w.Buckets, len(metrics.LatencyBucketsMs)+1)
	}
	// Cumulative: le=2: 5, le=3: 95, le=10: 100, le=40: 110.
	// p50: rank 55 in (2, 3]: 2+50/90. p99: rank 108.9 in (30, 40]: 30+10·8.9/10.
	if got, want := w.Quantile(0.5), 2+50.0/90; !approx(got, want) {
		t.Errorf("p50 = %v, want %v", got, want)
	}
	if got, want := w.Quantile(0.99), 38.9; !approx(got, want) {
		t.Errorf("p99 = %v, want %v", got, want)
	}
	out := sel
	out.Direction = "outbound"
	if w, err := s.Query(out, time.Minute); err != nil || w.Requests != 7 {
		t.Errorf("outbound: %v requests, %v; want 7", w.Requests, err)
	}

	// The proxy restarts: a fresh registry with fewer counts.
	fresh := metrics.NewRegistry(static)
	h := fresh.HTTP("inbound", metrics.Labels{{Name: "tls", Value: "true"}})
	for range 3 {
		h.Request()
		h.Response(200, -1, false, "", time.Millisecond)
	}
	reg.Store(fresh)
	clk.Advance(5 * time.Second)
	s.ScrapeOnce(ctx)
	if w, err := s.Query(sel, 5*time.Second); err != nil || w.Requests != 3 || w.Failures != 0 {
		t.Errorf("after restart: %v requests %v failures, %v; want 3, 0", w.Requests, w.Failures, err)
	}
	if ws := s.Workloads(time.Minute); len(ws) != 1 || ws[0].Namespace != "shop" || ws[0].Workload != "web" || ws[0].Meshed != 1 || ws[0].Window.Requests != 113 {
		t.Errorf("Workloads = %+v, want shop/web, 1 meshed, 113 requests", ws)
	}
}
