package admin_test

import (
	"compress/gzip"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/proxy/admin"
	"github.com/sluicehq/sluice/proxy/metrics"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// guard bounds every wait; it only fires when something is broken.
const guard = 10 * time.Second

// flipReadiness is a Readiness the test can switch.
type flipReadiness struct {
	mu    sync.Mutex
	ready bool
	why   string
}

func (f *flipReadiness) Ready() (bool, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready, f.why
}

func (f *flipReadiness) set(ready bool, why string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ready, f.why = ready, why
}

// running is an admin server under test.
type running struct {
	base   string
	client *http.Client
	cancel context.CancelFunc
	done   chan error
}

// start serves srv on a fresh 127.0.0.1 port; the cleanup cancels it and
// checks that Serve returned nil.
func start(t *testing.T, srv *admin.Server) *running {
	t.Helper()
	if srv.Logger == nil {
		srv.Logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	r := &running{
		base:   "http://" + ln.Addr().String(),
		client: &http.Client{Transport: &http.Transport{}, Timeout: guard},
		cancel: cancel,
		done:   make(chan error, 1),
	}
	go func() { r.done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		r.client.CloseIdleConnections()
		r.stop(t)
	})
	return r
}

// stop cancels the server and waits for Serve to return nil.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("Serve returned %v after cancel, want nil", err)
		}
		if ok {
			close(r.done)
		}
	case <-time.After(guard):
		t.Fatal("Serve did not return after its context was cancelled")
	}
}

func (r *running) do(t *testing.T, method, path string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, r.base+path, nil)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp, string(body)
}

func TestEndpoints(t *testing.T) {
	reg := metrics.NewRegistry(metrics.Labels{{Name: "pod", Value: "web-0"}})
	reg.HTTP("inbound", metrics.Labels{{Name: "authority", Value: "web"}}).Request()
	r := start(t, &admin.Server{Metrics: reg, Version: "v1.2.3"})

	tests := []struct {
		method, path string
		wantStatus   int
		wantType     string
		wantBody     string // exact, unless wantContains
		wantContains []string
	}{
		{"GET", "/live", 200, "text/plain; charset=utf-8", "live\n", nil},
		{"GET", "/ready", 200, "text/plain; charset=utf-8", "ready\n", nil},
		{"HEAD", "/ready", 200, "text/plain; charset=utf-8", "", nil},
		{"GET", "/metrics", 200, admin.ContentType, "", []string{
			`request_total{direction="inbound",authority="web",pod="web-0"} 1` + "\n",
			`proxy_build_info{version="v1.2.3",go_version="go`,
			"# TYPE process_cpu_seconds_total counter\n",
			"# TYPE process_resident_memory_bytes gauge\n",
			"# TYPE process_start_time_seconds gauge\n",
			"# TYPE go_goroutines gauge\n",
		}},
		{"POST", "/live", http.StatusMethodNotAllowed, "", "", nil},
		{"GET", "/nope", http.StatusNotFound, "", "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			resp, body := r.do(t, tc.method, tc.path, nil)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d (body %q)", resp.StatusCode, tc.wantStatus, body)
			}
			if tc.wantType != "" && resp.Header.Get("Content-Type") != tc.wantType {
				t.Errorf("Content-Type %q, want %q", resp.Header.Get("Content-Type"), tc.wantType)
			}
			if tc.wantContains == nil {
				if tc.wantStatus == 200 && body != tc.wantBody {
					t.Errorf("body %q, want %q", body, tc.wantBody)
				}
				return
			}
			for _, want := range tc.wantContains {
				if !strings.Contains(body, want) {
					t.Errorf("body lacks %q:\n%s", want, body)
				}
			}
			p := expfmt.NewTextParser(model.LegacyValidation)
			if _, err := p.TextToMetricFamilies(strings.NewReader(body)); err != nil {
				t.Errorf("/metrics is not valid exposition: %v", err)
			}
		})
	}
}

func TestReadinessFlips(t *testing.T) {
	rd := &flipReadiness{}
	r := start(t, &admin.Server{Readiness: rd})
	steps := []struct {
		ready    bool
		why      string
		wantCode int
		wantBody string
	}{
		{false, "identity not certified", 503, "not ready: identity not certified\n"},
		{true, "", 200, "ready\n"},
		{false, "", 503, "not ready\n"},
		{true, "ignored when ready", 200, "ready\n"},
	}
	for i, s := range steps {
		rd.set(s.ready, s.why)
		resp, body := r.do(t, "GET", "/ready", nil)
		if resp.StatusCode != s.wantCode || body != s.wantBody {
			t.Errorf("step %d: got %d %q, want %d %q", i, resp.StatusCode, body, s.wantCode, s.wantBody)
		}
	}
	// Liveness does not depend on readiness.
	rd.set(false, "draining")
	if resp, body := r.do(t, "GET", "/live", nil); resp.StatusCode != 200 || body != "live\n" {
		t.Errorf("/live while not ready: %d %q", resp.StatusCode, body)
	}
}

func TestMetricsGzip(t *testing.T) {
	reg := metrics.NewRegistry(nil)
	reg.Counter("hits_total", "Hits.", nil).Add(7)
	r := start(t, &admin.Server{Metrics: reg})

	tests := []struct {
		acceptEncoding string
		wantGzip       bool
	}{
		{"gzip", true},
		{"deflate, gzip;q=0.5", true},
		{"GZIP", true},
		{"gzip;q=0", false},
		{"identity", false},
	}
	for _, tc := range tests {
		t.Run(tc.acceptEncoding, func(t *testing.T) {
			// Setting Accept-Encoding ourselves stops the transport from decoding.
			resp, body := r.do(t, "GET", "/metrics", http.Header{"Accept-Encoding": {tc.acceptEncoding}})
			gotGzip := resp.Header.Get("Content-Encoding") == "gzip"
			if gotGzip != tc.wantGzip {
				t.Fatalf("Content-Encoding %q, want gzip=%v", resp.Header.Get("Content-Encoding"), tc.wantGzip)
			}
			if gotGzip {
				zr, err := gzip.NewReader(strings.NewReader(body))
				if err != nil {
					t.Fatalf("gzip: %v", err)
				}
				plain, err := io.ReadAll(zr)
				if err != nil {
					t.Fatalf("gunzip: %v", err)
				}
				body = string(plain)
			}
			if !strings.Contains(body, "hits_total 7\n") {
				t.Errorf("body lacks hits_total:\n%s", body)
			}
		})
	}
}

func TestShutdownOnCancel(t *testing.T) {
	reg := metrics.NewRegistry(nil)
	r := start(t, &admin.Server{Metrics: reg})
	// Leave a keep-alive connection open: shutdown must still complete.
	if resp, _ := r.do(t, "GET", "/live", nil); resp.StatusCode != 200 {
		t.Fatalf("/live: %d", resp.StatusCode)
	}
	if !hasFamily(reg, "process_cpu_seconds_total") {
		t.Error("process metrics not registered while serving")
	}
	addr := strings.TrimPrefix(r.base, "http://")

	r.stop(t)

	if c, err := net.DialTimeout("tcp", addr, guard); err == nil {
		c.Close()
		t.Error("listener still accepts after shutdown")
	}
	for _, name := range []string{"process_cpu_seconds_total", "go_goroutines", "proxy_build_info"} {
		if hasFamily(reg, name) {
			t.Errorf("%s still registered after Serve returned", name)
		}
	}
	// goleak in TestMain checks that no server goroutine outlived Serve.
}

func hasFamily(reg *metrics.Registry, name string) bool {
	for _, f := range reg.Gather() {
		if f.Name == name && len(f.Samples) > 0 {
			return true
		}
	}
	return false
}

func TestServeFailsOnBrokenListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ln.Close()
	srv := &admin.Server{Logger: slog.New(slog.DiscardHandler)}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(t.Context(), ln) }()
	select {
	case err := <-errc:
		if err == nil || !errors.Is(err, net.ErrClosed) {
			t.Errorf("Serve on a closed listener = %v, want an error wrapping net.ErrClosed", err)
		}
	case <-time.After(guard):
		t.Fatal("Serve did not fail on a closed listener")
	}
}

func TestListenAndServe(t *testing.T) {
	// Find a free port, then let ListenAndServe bind it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	srv := &admin.Server{Addr: addr, Logger: slog.New(slog.DiscardHandler)}
	go func() { done <- srv.ListenAndServe(ctx) }()

	client := &http.Client{Transport: &http.Transport{}, Timeout: guard}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(guard)
	for {
		resp, err := client.Get("http://" + addr + "/live")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case err := <-done:
			t.Fatalf("ListenAndServe returned early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server never answered: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // poll interval, not a wait for an event we could observe
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ListenAndServe = %v after cancel", err)
		}
	case <-time.After(guard):
		t.Fatal("ListenAndServe did not return")
	}

	bad := &admin.Server{Addr: "127.0.0.1:-1"}
	if err := bad.ListenAndServe(t.Context()); err == nil || !strings.Contains(err.Error(), "127.0.0.1:-1") {
		t.Errorf("ListenAndServe on a bad address = %v, want an error naming it", err)
	}
}

func TestConcurrentScrapes(t *testing.T) {
	reg := metrics.NewRegistry(nil)
	h := reg.HTTP("inbound", nil)
	r := start(t, &admin.Server{Metrics: reg})

	stop := make(chan struct{})
	var writer sync.WaitGroup
	writer.Go(func() {
		for i := 0; i < 1_000_000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			h.Request()
			h.Response(200+i%3, -1, false, "", time.Duration(i)*time.Microsecond)
		}
	})

	var scrapers sync.WaitGroup
	var failures atomic.Int32
	for range 4 {
		scrapers.Go(func() {
			for range 10 {
				req, err := http.NewRequestWithContext(t.Context(), "GET", r.base+"/metrics", nil)
				if err != nil {
					failures.Add(1)
					return
				}
				resp, err := r.client.Do(req)
				if err != nil {
					failures.Add(1)
					return
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				p := expfmt.NewTextParser(model.LegacyValidation)
				if _, perr := p.TextToMetricFamilies(strings.NewReader(string(body))); err != nil || perr != nil || resp.StatusCode != 200 {
					failures.Add(1)
				}
			}
		})
	}
	scrapers.Wait()
	close(stop)
	writer.Wait()
	if n := failures.Load(); n > 0 {
		t.Errorf("%d of 40 concurrent scrapes failed or did not parse", n)
	}
}
