package prometheus_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/analysis"
	"github.com/sluicehq/sluice/analysis/prometheus"
	"github.com/sluicehq/sluice/analysis/template"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
	"github.com/sluicehq/sluice/mesh/telemetry"
	"github.com/sluicehq/sluice/proxy/admin"
	"github.com/sluicehq/sluice/proxy/metrics"
)

// Flagger's built-in Linkerd checks (pkg/metrics/observers/linkerd.go), as
// MetricTemplate queries: unchanged but for the template syntax of the
// variables.
const (
	linkerdSuccessRate = `sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",classification!="failure",direction="inbound"}[{{ interval }}]))
/
sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",direction="inbound"}[{{ interval }}]))
* 100`
	linkerdRequestDuration = `histogram_quantile(0.99, sum(rate(response_latency_ms_bucket{namespace="{{ namespace }}",deployment=~"{{ target }}",direction="inbound"}[{{ interval }}])) by (le))`
)

// prometheusBinary finds the prometheus server: on PATH, or where Debian's
// package puts it. Without it the test is skipped, or fails when
// SLUICE_REQUIRE_TOOLS=1 (make test).
func prometheusBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("prometheus"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/bin/prometheus"); err == nil {
		return "/usr/bin/prometheus"
	}
	msg := "prometheus is not installed (not on PATH nor /usr/bin/prometheus): run hack/tools.sh test, or apt-get install prometheus"
	if os.Getenv("SLUICE_REQUIRE_TOOLS") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// syncBuffer is a bytes.Buffer safe for the process's writes and the test's reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startPrometheus runs a Prometheus server scraping targets (host:port)
// every second, and returns its address and a function that stops it.
func startPrometheus(t *testing.T, bin string, targets []string) (addr string, stop func()) {
	t.Helper()
	dir := t.TempDir()
	var quoted []string
	for _, tg := range targets {
		quoted = append(quoted, fmt.Sprintf("'%s'", tg))
	}
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: sluice-proxies
    scrape_interval: 1s
    scrape_timeout: 1s
    static_configs:
      - targets: [%s]
`, strings.Join(quoted, ", "))
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	addr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	logs := &syncBuffer{}
	cmd := exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(15 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		})
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("prometheus output:\n%s", logs.String())
		}
	})

	// Wait for /-/ready.
	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("prometheus exited before it was ready: %v\n%s", err, logs.String())
		default:
		}
		resp, err := client.Get("http://" + addr + "/-/ready")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return "http://" + addr, stop
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus at %s not ready after 60s: %v\n%s", addr, err, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// proxyStats is one fake pod: a real proxy metrics registry served by the
// real admin handler, and its inbound HTTP stats handle.
type proxyStats struct {
	srv   *httptest.Server
	stats *metrics.HTTPStats
}

func newProxy(t *testing.T, namespace, deployment, pod string) *proxyStats {
	t.Helper()
	reg := metrics.NewRegistry(metrics.Labels{
		{Name: "namespace", Value: namespace},
		{Name: "deployment", Value: deployment},
		{Name: "pod", Value: pod},
	})
	srv := httptest.NewServer((&admin.Server{Metrics: reg, Logger: slog.New(slog.DiscardHandler)}).Handler())
	t.Cleanup(srv.Close)
	stats := reg.HTTP("inbound", metrics.Labels{
		{Name: "authority", Value: deployment + "." + namespace + ".svc.cluster.local:9898"},
		{Name: "tls", Value: "true"},
	})
	return &proxyStats{srv: srv, stats: stats}
}

// canaryBatch records one batch of 100 responses with the latency mix below,
// of which the first failures fail with a 500:
//
//	60 at 3 ms, 25 at 15 ms, 10 at 45 ms, 3 at 150 ms, 2 at 700 ms.
//
// Over any whole number of batches p99 (rank 99 of 100) lies halfway into
// the (500, 1000] bucket: 750 ms.
func (p *proxyStats) canaryBatch(failures int) {
	for i := range 100 {
		var lat time.Duration
		switch {
		case i < 60:
			lat = 3 * time.Millisecond
		case i < 85:
			lat = 15 * time.Millisecond
		case i < 95:
			lat = 45 * time.Millisecond
		case i < 98:
			lat = 150 * time.Millisecond
		default:
			lat = 700 * time.Millisecond
		}
		p.stats.Request()
		if i < failures {
			p.stats.Response(500, -1, true, "", lat)
		} else {
			p.stats.Response(200, -1, false, "", lat)
		}
	}
}

// primaryBatch records 300 fast successes: if a query wrongly included the
// primary, the canary's success rate would read about 98.75%.
func (p *proxyStats) primaryBatch() {
	for range 300 {
		p.stats.Request()
		p.stats.Response(200, -1, false, "", time.Millisecond)
	}
}

// bucketIndex is the index of the latency bucket holding v ms.
func bucketIndex(v float64) int {
	for i, le := range metrics.LatencyBucketsMs {
		if v <= le {
			return i
		}
	}
	return len(metrics.LatencyBucketsMs)
}

// TestRealPrometheus runs Flagger's built-in Linkerd queries, unchanged, as
// MetricTemplates on a real Prometheus scraping real proxy metrics
// registries, and checks that they agree with the built-in provider reading
// the same registries through the mesh's telemetry store: within 1 point of
// success rate and one histogram bucket of p99.
func TestRealPrometheus(t *testing.T) {
	bin := prometheusBinary(t)

	const ns = "test"
	podA := newProxy(t, ns, "podinfo", "podinfo-7d9c6-a1b2c")
	podB := newProxy(t, ns, "podinfo", "podinfo-7d9c6-d3e4f")
	primary := newProxy(t, ns, "podinfo-primary", "podinfo-primary-5f8d7-x9y8z")
	idle := newProxy(t, ns, "idle", "idle-6b5c4-q1w2e")
	proxies := []*proxyStats{podA, podB, primary, idle}

	// A baseline before anything scrapes: every series exists, and the
	// counters start well above zero, as on a proxy that has been serving.
	for range 20 {
		podA.canaryBatch(3)
		podB.canaryBatch(7)
		primary.primaryBatch()
		idle.canaryBatch(0)
	}

	var hostports []string
	var storeTargets []telemetry.Target
	for _, p := range proxies {
		u, err := url.Parse(p.srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		hostports = append(hostports, u.Host)
		storeTargets = append(storeTargets, telemetry.Target{URL: p.srv.URL + "/metrics"})
	}
	promURL, stopPrometheus := startPrometheus(t, bin, hostports)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })

	// The mesh's telemetry store scrapes the same registries every second.
	scrapeClient := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(scrapeClient.CloseIdleConnections)
	store := telemetry.New(telemetry.TargetsFunc(func() []telemetry.Target { return storeTargets }), telemetry.Options{
		Interval: time.Second, HTTPClient: scrapeClient, Logger: slog.New(slog.DiscardHandler),
	})
	wg.Go(func() { _ = store.Run(ctx) })

	// Steady traffic: a batch per pod every 20 ms, at most 4000 batches.
	// The canary pods fail 3% and 7% of their requests: 95% overall.
	wg.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for range 4000 {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			podA.canaryBatch(3)
			podB.canaryBatch(7)
			primary.primaryBatch()
		}
	})

	templates := template.Static{}
	add := func(name string, typ v1beta1.MetricProviderType, addr, query string) {
		m := &v1beta1.MetricTemplate{Spec: v1beta1.MetricTemplateSpec{
			Provider: v1beta1.MetricTemplateProvider{Type: typ, Address: addr},
			Query:    query,
		}}
		m.Namespace, m.Name = ns, name
		templates[ns+"/"+name] = m
	}
	add("linkerd-success-rate", v1beta1.MetricProviderPrometheus, promURL, linkerdSuccessRate)
	add("linkerd-request-duration", v1beta1.MetricProviderPrometheus, promURL, linkerdRequestDuration)
	add("per-pod", v1beta1.MetricProviderPrometheus, promURL,
		`sum by (pod) (rate(response_total{namespace="{{ namespace }}",deployment="{{ target }}",direction="inbound"}[{{ interval }}]))`)
	add("bad-promql", v1beta1.MetricProviderPrometheus, promURL, `sum(rate(response_total{namespace="{{ namespace }}"`)
	add("sluice-success-rate", v1beta1.MetricProviderSluice, "", `success_rate{workload="{{ target }}"}`)
	add("sluice-p99", v1beta1.MetricProviderSluice, "", `p99`)
	runner := template.NewRunner(template.Options{
		Templates: templates,
		Providers: map[v1beta1.MetricProviderType]template.Factory{
			v1beta1.MetricProviderPrometheus: prometheus.Factory(nil, prometheus.Options{}),
			v1beta1.MetricProviderSluice:     template.SluiceFactory(analysis.StoreSource(store)),
		},
	})
	t.Cleanup(func() { _ = runner.Close() })
	provider := analysis.Mux{Builtin: analysis.NewBuiltin(analysis.StoreSource(store)), Templates: runner}

	canary := analysis.Target{Namespace: ns, Canary: analysis.Workload{Name: "podinfo"}, Primary: analysis.Workload{Name: "podinfo-primary"}}
	min99, max500 := 99.0, 500.0
	checks := []analysis.Check{
		{Name: analysis.RequestSuccessRate, Min: &min99},
		{Name: analysis.RequestDuration, Max: &max500},
		{Name: "linkerd-success-rate", TemplateRef: "linkerd-success-rate", Min: &min99},
		{Name: "linkerd-request-duration", TemplateRef: "linkerd-request-duration", Max: &max500},
		{Name: "sluice-success-rate", TemplateRef: "sluice-success-rate", Min: &min99},
		{Name: "sluice-p99", TemplateRef: "sluice-p99", Max: &max500},
	}
	// Every template validates at initialization: the server answers.
	for _, c := range checks[2:] {
		if err := runner.Validate(ctx, canary, c); err != nil {
			t.Fatalf("Validate(%s): %v", c.Name, err)
		}
	}

	// Wait until Prometheus holds at least 10 scrapes of every target and the
	// store has a window: the canary's numbers are then stable.
	prom, err := prometheus.New(prometheus.Config{Address: promURL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prom.Close() })
	deadline := time.Now().Add(90 * time.Second)
	for {
		n, err := prom.Value(ctx, `min(count_over_time(up{job="sluice-proxies"}[1m]))`)
		_, serr := store.Query(telemetry.Selector{Namespace: ns, Workload: "podinfo"}, time.Minute)
		if err == nil && n >= 10 && serr == nil {
			if up, err := prom.Value(ctx, `min(up{job="sluice-proxies"})`); err != nil || up != 1 {
				t.Fatalf("a target is down in prometheus: up=%v, %v", up, err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no 10 scrapes in 90s: prometheus %v (%v), store %v", n, err, serr)
		}
		time.Sleep(250 * time.Millisecond)
	}

	results := analysis.Analyze(ctx, provider, canary, checks)
	byName := map[string]analysis.Result{}
	for _, r := range results {
		byName[r.Name] = r
		t.Logf("%s: %s: %s (value %v)", r.Name, r.Verdict, r.Message, r.Value)
	}
	for _, c := range checks {
		r := byName[c.Name]
		if r.Verdict != analysis.Fail {
			t.Errorf("%s: verdict %s (%s), want fail", c.Name, r.Verdict, r.Message)
		}
	}

	builtinSR := byName[analysis.RequestSuccessRate].Value
	builtinP99 := byName[analysis.RequestDuration].Value
	for _, name := range []string{"linkerd-success-rate", "sluice-success-rate"} {
		v := byName[name].Value
		if math.Abs(v-builtinSR) > 1 {
			t.Errorf("%s = %.3f%%, built-in request-success-rate = %.3f%%: more than 1 point apart", name, v, builtinSR)
		}
	}
	for _, name := range []string{"linkerd-request-duration", "sluice-p99"} {
		v := byName[name].Value
		if d := bucketIndex(v) - bucketIndex(builtinP99); d < -1 || d > 1 {
			t.Errorf("%s = %.1fms, built-in request-duration p99 = %.1fms: %d buckets apart", name, v, builtinP99, d)
		}
	}
	// And they measure what was served: 95% success, p99 in (500, 1000].
	if math.Abs(builtinSR-95) > 1 {
		t.Errorf("built-in success rate %.3f%%, want about 95%%", builtinSR)
	}
	if builtinP99 <= 500 || builtinP99 > 1000 {
		t.Errorf("built-in p99 %.1fms, want in (500, 1000]", builtinP99)
	}

	// What is not one value.
	idleTarget := analysis.Target{Namespace: ns, Canary: analysis.Workload{Name: "idle"}}
	ghost := analysis.Target{Namespace: ns, Canary: analysis.Workload{Name: "ghost"}}
	for _, tc := range []struct {
		name    string
		target  analysis.Target
		check   analysis.Check
		verdict analysis.Verdict
		message string
	}{
		// The idle pod's series exist but do not move: 0/0 is NaN.
		{"idle: NaN", idleTarget, analysis.Check{Name: "sr", TemplateRef: "linkerd-success-rate"}, analysis.NoData, "the query returned NaN; probably idle.test is not receiving traffic"},
		{"idle: built-in", idleTarget, analysis.Check{Name: analysis.RequestSuccessRate}, analysis.NoData, "no requests to idle"},
		{"no series: empty", ghost, analysis.Check{Name: "p99", TemplateRef: "linkerd-request-duration"}, analysis.NoData, "probably ghost.test is not receiving traffic"},
		{"several series", canary, analysis.Check{Name: "per-pod", TemplateRef: "per-pod"}, analysis.Error, "query returned 2 series, want 1: add sum() or by()"},
		{"bad PromQL", canary, analysis.Check{Name: "bad", TemplateRef: "bad-promql"}, analysis.Error,
			"cannot compute bad: metric template test/bad-promql: prometheus at " + promURL + ": query failed: bad_data: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := analysis.Analyze(ctx, provider, tc.target, []analysis.Check{tc.check})[0]
			if r.Verdict != tc.verdict || !strings.Contains(r.Message, tc.message) {
				t.Errorf("%s: %s, want %s: ...%s...", r.Verdict, r.Message, tc.verdict, tc.message)
			}
			if tc.name == "bad PromQL" && !strings.Contains(r.Message, `query: sum(rate(response_total{namespace="test"`) {
				t.Errorf("error does not name the query: %s", r.Message)
			}
		})
	}

	// A server that is down is reported at initialization.
	stopPrometheus()
	err = runner.Validate(ctx, canary, checks[2])
	if err == nil || !strings.Contains(err.Error(), "prometheus at "+promURL+" is unreachable: ") {
		t.Errorf("Validate with prometheus stopped: %v", err)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Logf("unreachable error is not ECONNREFUSED: %v", err)
	}
}
