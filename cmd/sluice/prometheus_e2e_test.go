package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/analysis"
	"github.com/sluicehq/sluice/analysis/prometheus"
	"github.com/sluicehq/sluice/analysis/template"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
	"github.com/sluicehq/sluice/local/up"
	"github.com/sluicehq/sluice/proxy/metrics"
)

// Flagger's built-in Linkerd checks (pkg/metrics/observers/linkerd.go) as
// MetricTemplate queries: unchanged but for the template syntax of the
// variables.
const (
	e2eLinkerdSuccessRate = `sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",classification!="failure",direction="inbound"}[{{ interval }}]))
/
sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",direction="inbound"}[{{ interval }}]))
* 100`
	e2eLinkerdRequestDuration = `histogram_quantile(0.99, sum(rate(response_latency_ms_bucket{namespace="{{ namespace }}",deployment=~"{{ target }}",direction="inbound"}[{{ interval }}])) by (le))`
)

// e2ePrometheusBinary finds the prometheus server: on PATH, or where
// Debian's package puts it. Without it the test is skipped, or fails when
// SLUICE_REQUIRE_TOOLS=1 (make test).
func e2ePrometheusBinary(t *testing.T) string {
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

// promTarget is one sidecar admin server Prometheus scrapes, with the
// target labels Linkerd's viz sets from the pod's metadata.
type promTarget struct {
	addr                     string
	namespace, workload, pod string
}

// startE2EPrometheus runs a Prometheus server on a free loopback port with a
// temporary TSDB, scraping targets every second, and returns its base URL.
// It is stopped in t.Cleanup.
func startE2EPrometheus(t *testing.T, bin string, targets []promTarget) string {
	t.Helper()
	dir := t.TempDir()
	var b strings.Builder
	b.WriteString(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: sluice-proxies
    scrape_interval: 1s
    scrape_timeout: 1s
    static_configs:
`)
	for _, tg := range targets {
		fmt.Fprintf(&b, "      - targets: ['%s']\n        labels: {namespace: '%s', deployment: '%s', pod: '%s'}\n",
			tg.addr, tg.namespace, tg.workload, tg.pod)
	}
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", e2eFreePort(t))
	logs := &syncBuffer{}
	cmd := exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var once sync.Once
	stop := func() {
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
			t.Logf("prometheus config:\n%s\nprometheus output:\n%s", b.String(), logs.String())
		}
	})

	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(90 * time.Second)
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
				return "http://" + addr
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus at %s not ready after 90s: %v\n%s", addr, err, logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// e2eFreePort returns a loopback port that was free a moment ago.
func e2eFreePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// latencyBucket is the index of the Linkerd latency bucket holding v ms.
func latencyBucket(v float64) int {
	for i, le := range metrics.LatencyBucketsMs {
		if v <= le {
			return i
		}
	}
	return len(metrics.LatencyBucketsMs)
}

// TestPrometheusAgreesInLocalMode runs `sluice up` on examples/mesh with the
// backend answering 5% errors, has a real Prometheus scrape the sidecars'
// admin /metrics with Linkerd viz's target labels, and checks that Flagger's
// built-in Linkerd queries, run unchanged as MetricTemplates, agree with the
// built-in provider over the instance's telemetry: within 1 point of success
// rate and one histogram bucket of p99.
func TestPrometheusAgreesInLocalMode(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end: builds binaries, runs local mode and Prometheus")
	}
	promBin := e2ePrometheusBinary(t)
	tmp := t.TempDir()
	e := &canaryE2E{t: t, bin: buildBinaries(t), dir: filepath.Join(tmp, "world"), state: filepath.Join(tmp, "state"), tmp: tmp}
	t.Cleanup(e.stop)
	if err := os.MkdirAll(e.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join("..", "..", "examples", "mesh")
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, ent := range entries {
		if ent.IsDir() || !strings.HasSuffix(ent.Name(), ".yaml") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, ent.Name()))
		if err != nil {
			t.Fatal(err)
		}
		s := string(data)
		if ent.Name() == "backend.yaml" {
			s2 := replaceEnv(s, "ERROR_RATE", "0.05")
			if s2 == s {
				t.Fatal("examples/mesh/backend.yaml has no ERROR_RATE env to set")
			}
			s = s2
		}
		if err := os.WriteFile(filepath.Join(e.dir, ent.Name()), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	e.start()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sluice up output:\n%s", e.out.String())
		}
	})
	c := e.client()
	ctx := context.Background()

	// Every replica of both workloads ready, the frontend published.
	var st *up.Status
	pollUntil(t, "the frontend and two backend replicas ready", 3*time.Minute, func() bool {
		s, err := c.Status(ctx)
		if err != nil {
			return false
		}
		ready := map[string]int{}
		for _, r := range s.Replicas {
			if r.Ready && !r.Stopping {
				ready[r.Workload]++
			}
		}
		st = s
		return ready["frontend"] >= 1 && ready["backend"] >= 2 && s.IngressReady
	})
	frontend := ""
	for _, in := range st.Ingress {
		if in.Service == "frontend" {
			frontend = in.URL
		}
	}
	if frontend == "" {
		t.Fatalf("frontend not published: %+v", st.Ingress)
	}
	var targets []promTarget
	for _, r := range st.Replicas {
		if !r.Ready || r.Stopping || r.Admin == "" {
			continue
		}
		targets = append(targets, promTarget{addr: r.Admin, namespace: r.Namespace, workload: r.Workload, pod: r.Pod})
	}
	sort.Slice(targets, func(i, j int) bool { return targets[i].pod < targets[j].pod })

	// Steady load through the frontend (which calls the backend): one
	// request at a time, 20 ms apart, bounded in count by the loader and in
	// time by the context; stopped once both providers have answered.
	loadCtx, cancelLoad := context.WithTimeout(ctx, 4*time.Minute)
	l := &loader{}
	loadDone := make(chan struct{})
	go func() { defer close(loadDone); l.run(loadCtx, frontend) }()
	var stopLoadOnce sync.Once
	stopLoad := func() { stopLoadOnce.Do(func() { cancelLoad(); <-loadDone }) }
	t.Cleanup(stopLoad)

	promURL := startE2EPrometheus(t, promBin, targets)
	prom, err := prometheus.New(prometheus.Config{Address: promURL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prom.Close() })

	// At least 20 s of data: 20 scrapes of every target, all up, and the
	// backend serving.
	const ns, workload = "default", "backend"
	var scrapes, rps float64
	pollUntil(t, "20 scrapes of every sidecar in prometheus", 3*time.Minute, func() bool {
		var err error
		scrapes, err = prom.Value(ctx, `min(count_over_time(up{job="sluice-proxies"}[1m]))`)
		if err != nil || scrapes < 20 {
			return false
		}
		rps, err = prom.Value(ctx, `sum(rate(response_total{namespace="default",deployment="backend",direction="inbound"}[20s]))`)
		return err == nil && rps > 0
	})
	if down, err := prom.Value(ctx, `min(up{job="sluice-proxies"})`); err != nil || down != 1 {
		t.Fatalf("a sidecar is down in prometheus: min(up)=%v, %v", down, err)
	}
	t.Logf("prometheus: %d targets, %.0f scrapes each, backend inbound %.1f req/s", len(targets), scrapes, rps)

	templates := template.Static{}
	add := func(name, query string) {
		m := &v1beta1.MetricTemplate{Spec: v1beta1.MetricTemplateSpec{
			Provider: v1beta1.MetricTemplateProvider{Type: v1beta1.MetricProviderPrometheus, Address: promURL},
			Query:    query,
		}}
		m.Namespace, m.Name = ns, name
		templates[ns+"/"+name] = m
	}
	add("linkerd-success-rate", e2eLinkerdSuccessRate)
	add("linkerd-request-duration", e2eLinkerdRequestDuration)
	runner := template.NewRunner(template.Options{
		Templates: templates,
		Providers: map[v1beta1.MetricProviderType]template.Factory{
			v1beta1.MetricProviderPrometheus: prometheus.Factory(nil, prometheus.Options{}),
		},
	})
	t.Cleanup(func() { _ = runner.Close() })
	provider := analysis.Mux{Builtin: analysis.NewBuiltin(c.Telemetry()), Templates: runner}

	target := analysis.Target{Namespace: ns, Canary: analysis.Workload{Name: workload}}
	const window = 20 * time.Second
	checks := []analysis.Check{
		{Name: analysis.RequestSuccessRate, Interval: window},
		{Name: "linkerd-success-rate", TemplateRef: "linkerd-success-rate", Interval: window},
		{Name: analysis.RequestDuration, Interval: window},
		{Name: "linkerd-request-duration", TemplateRef: "linkerd-request-duration", Interval: window},
	}
	for _, ch := range []analysis.Check{checks[1], checks[3]} {
		if err := runner.Validate(ctx, target, ch); err != nil {
			t.Fatalf("Validate(%s): %v", ch.Name, err)
		}
	}
	results := analysis.Analyze(ctx, provider, target, checks)
	stopLoad()
	sent, failed := l.counts()
	t.Logf("load: %d requests through the frontend, %d failed", sent, failed)

	values := map[string]float64{}
	for _, r := range results {
		t.Logf("%s: %s: %s (value %v)", r.Name, r.Verdict, r.Message, r.Value)
		if r.Verdict != analysis.Pass {
			t.Fatalf("%s: verdict %s (%s), want a value (pass: no thresholds)", r.Name, r.Verdict, r.Message)
		}
		values[r.Name] = r.Value
	}
	srBuiltin, srProm := values[analysis.RequestSuccessRate], values["linkerd-success-rate"]
	p99Builtin, p99Prom := values[analysis.RequestDuration], values["linkerd-request-duration"]
	t.Logf("success rate: prometheus %.3f%%, built-in %.3f%% (diff %.3f points)", srProm, srBuiltin, srProm-srBuiltin)
	t.Logf("p99: prometheus %.2fms (bucket %d), built-in %.2fms (bucket %d)", p99Prom, latencyBucket(p99Prom), p99Builtin, latencyBucket(p99Builtin))

	if math.IsNaN(srProm) || math.IsNaN(srBuiltin) || math.Abs(srProm-srBuiltin) > 1 {
		t.Errorf("success rate: Flagger's Linkerd query on prometheus = %.3f%%, built-in = %.3f%%: more than 1 point apart", srProm, srBuiltin)
	}
	if d := latencyBucket(p99Prom) - latencyBucket(p99Builtin); math.IsNaN(p99Prom) || d < -1 || d > 1 {
		t.Errorf("p99: Flagger's Linkerd query on prometheus = %.2fms, built-in = %.2fms: %d buckets apart", p99Prom, p99Builtin, d)
	}
	// And both measure what the backend served: about 5% errors (a loose
	// band: a few hundred requests of a 5% coin).
	for name, v := range map[string]float64{"prometheus": srProm, "built-in": srBuiltin} {
		if v < 85 || v > 99.5 {
			t.Errorf("%s success rate %.3f%%, want about 95%% (the backend's ERROR_RATE is 0.05)", name, v)
		}
	}
}
