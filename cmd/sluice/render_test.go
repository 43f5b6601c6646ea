package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluicehq/sluice/local/supervisor"
	"github.com/sluicehq/sluice/local/up"
	"github.com/sluicehq/sluice/mesh/telemetry"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -update rewrites it)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// window builds a telemetry window of n requests over d, with failures,
// TLS requests and latencies spread over the given bucket counts.
func window(n, failures, tls float64, d time.Duration, buckets ...telemetry.Bucket) telemetry.Window {
	return telemetry.Window{Requests: n, Successes: n - failures, Failures: failures, TLSRequests: tls, Duration: d, Buckets: buckets}
}

func fixture() (*up.Status, []telemetry.WorkloadSummary) {
	st := &up.Status{
		Workloads: []supervisor.WorkloadStatus{
			{Namespace: "default", Name: "frontend", Replicas: 1, Current: 1, Ready: 1},
			{Namespace: "default", Name: "backend", Replicas: 2, Current: 2, Ready: 1},
			{Namespace: "shop", Name: "cart", Replicas: 1, Current: 1, Ready: 1},
			{Namespace: "default", Name: "idle", Replicas: 1, Current: 1, Ready: 1},
		},
		Replicas: []up.Replica{
			{ReplicaStatus: supervisor.ReplicaStatus{Namespace: "default", Workload: "frontend", Pod: "frontend-aaaa-1", Ready: true, ProxyReady: true}},
			{ReplicaStatus: supervisor.ReplicaStatus{Namespace: "default", Workload: "backend", Pod: "backend-bbbb-1", Ready: true, ProxyReady: true}},
			{
				ReplicaStatus: supervisor.ReplicaStatus{
					Namespace: "default", Workload: "backend", Pod: "backend-bbbb-2", ProxyReady: true,
					Problem: "application is not running (last exit: exit status 1)",
					App:     supervisor.ProcessStatus{Restarts: 3, LastExit: "exit status 1", Log: "/state/logs/default/backend-bbbb-2/app.log"},
					Proxy:   supervisor.ProcessStatus{Log: "/state/logs/default/backend-bbbb-2/proxy.log"},
				},
				LogTail: map[string][]string{"app": {"--- sluice: starting sluice-demo-app --error-rate 2", "sluice-demo-app: error rate 2 is outside 0..1"}},
			},
			{ReplicaStatus: supervisor.ReplicaStatus{Namespace: "default", Workload: "backend", Pod: "backend-old-1", Stopping: true}},
			{ReplicaStatus: supervisor.ReplicaStatus{Namespace: "shop", Workload: "cart", Pod: "cart-cccc-1", Ready: true, ProxyReady: true}},
			{ReplicaStatus: supervisor.ReplicaStatus{Namespace: "default", Workload: "idle", Pod: "idle-dddd-1", Ready: true, ProxyReady: true}},
		},
	}
	lat := func(le, c float64) telemetry.Bucket { return telemetry.Bucket{LE: le, Count: c} }
	sums := []telemetry.WorkloadSummary{
		{Namespace: "default", Workload: "backend", Pods: 2, Meshed: 2,
			Window: window(1200, 12, 1200, time.Minute, lat(1, 600), lat(2, 1000), lat(5, 1150), lat(10, 1190), lat(50, 1200), lat(math.Inf(1), 1200))},
		{Namespace: "default", Workload: "frontend", Pods: 1, Meshed: 1,
			Window: window(600, 0, 0, time.Minute, lat(5, 300), lat(10, 500), lat(100, 590), lat(1000, 600), lat(math.Inf(1), 600))},
		{Namespace: "shop", Workload: "cart", Pods: 1, Meshed: 1,
			Window: window(30, 3, 15, 30*time.Second, lat(100, 27), lat(1000, 30), lat(math.Inf(1), 30))},
		{Namespace: "default", Workload: "gone", Pods: 0, Meshed: 0,
			Window: window(60, 0, 60, time.Minute, lat(1, 60), lat(math.Inf(1), 60))},
		{Namespace: "default", Workload: "idle", Pods: 1, Meshed: 0, Errors: []string{"idle-dddd-1: connection refused"}},
	}
	return st, sums
}

func TestStatGolden(t *testing.T) {
	st, sums := fixture()
	tests := []struct {
		name, file string
		ns, wl     string
		all        bool
	}{
		{name: "default namespace", file: "stat.golden", ns: "default"},
		{name: "all namespaces", file: "stat_all_namespaces.golden", all: true},
		{name: "one workload", file: "stat_one.golden", ns: "default", wl: "frontend"},
		{name: "nothing", file: "stat_empty.golden", ns: "nowhere"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := tt.ns
			if tt.all {
				ns = ""
			}
			var b bytes.Buffer
			renderStat(&b, statRows(st, sums, ns, tt.wl), tt.all)
			golden(t, tt.file, b.Bytes())
		})
	}
}

func TestStatJSONGolden(t *testing.T) {
	st, sums := fixture()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	if err := enc.Encode(statRows(st, sums, "", "")); err != nil {
		t.Fatal(err)
	}
	golden(t, "stat.json.golden", b.Bytes())
}

func TestStatRows(t *testing.T) {
	st, sums := fixture()
	rows := statRows(st, sums, "default", "")
	byName := map[string]statRow{}
	for _, r := range rows {
		byName[r.Name] = r
	}
	be := byName["backend"]
	if be.Meshed != "2/2" || be.TotalPods != 2 || len(be.Problems) != 1 || be.Problems[0].Pod != "backend-bbbb-2" {
		t.Errorf("backend row = %+v", be)
	}
	if *be.RPS != 20 || *be.Success != 0.99 || *be.TLS != 1 {
		t.Errorf("backend numbers: rps %v success %v tls %v", *be.RPS, *be.Success, *be.TLS)
	}
	if g := byName["gone"]; g.Meshed != "0/0" || g.RPS == nil {
		t.Errorf("a workload gone with traffic in the window: %+v", g)
	}
	if i := byName["idle"]; i.RPS != nil || i.Success != nil || len(i.ScrapeErrors) != 1 {
		t.Errorf("a workload without traffic: %+v", i)
	}
	if _, ok := byName["cart"]; ok {
		t.Error("a workload of another namespace is listed")
	}
}

func TestParseResource(t *testing.T) {
	tests := []struct {
		args    []string
		want    string
		wantErr bool
	}{
		{nil, "", false},
		{[]string{"deploy"}, "", false},
		{[]string{"deployments"}, "", false},
		{[]string{"deploy/web"}, "web", false},
		{[]string{"deploy", "web"}, "web", false},
		{[]string{"deploy/web", "other"}, "", true},
		{[]string{"pods"}, "", true},
	}
	for _, tt := range tests {
		got, err := parseResource(tt.args)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parseResource(%q) = %q, %v; want %q, error %v", tt.args, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestCheckGolden(t *testing.T) {
	st, sums := fixture()
	st.API, st.PID, st.ControlPlane = "http://127.0.0.1:40001", 4242, "127.0.0.1:40000"
	st.Ingress = []up.IngressPort{{Namespace: "default", Service: "frontend", Port: 80, Address: "127.0.0.1:8080", URL: "http://127.0.0.1:8080"}}
	st.IngressReady = true
	failing := []checkResult{
		{Name: "can reach the running sluice up", OK: true, Detail: st.API + ", pid 4242"},
		{Name: "control plane is reachable", OK: true, Detail: st.ControlPlane},
		{Name: "identity issues certificates", OK: true},
	}
	failing = append(failing, checkReplicas(st)...)
	failing = append(failing, checkMeshed(st, sums, nil))

	healthy := &up.Status{
		Workloads: []supervisor.WorkloadStatus{{Namespace: "default", Name: "web", Replicas: 1, Current: 1, Ready: 1}},
		Replicas:  []up.Replica{{ReplicaStatus: supervisor.ReplicaStatus{Namespace: "default", Workload: "web", Pod: "web-1", Ready: true, ProxyReady: true}}},
	}
	passing := append(failing[:3:3], checkReplicas(healthy)...)
	passing = append(passing, checkMeshed(healthy, []telemetry.WorkloadSummary{{Namespace: "default", Workload: "web", Pods: 1, Meshed: 1}}, nil))

	notRunning := []checkResult{{Name: "can reach the running sluice up", Hints: []string{errors.New("no sluice up is running with state directory .sluice").Error()}}}

	for _, tc := range []struct {
		file string
		rs   []checkResult
		ok   bool
	}{
		{"check_failing.golden", failing, false},
		{"check_passing.golden", passing, true},
		{"check_not_running.golden", notRunning, false},
	} {
		var b bytes.Buffer
		renderCheck(&b, tc.rs)
		golden(t, tc.file, b.Bytes())
		if allPassed(tc.rs) != tc.ok {
			t.Errorf("%s: allPassed = %v", tc.file, !tc.ok)
		}
	}
}

func TestCheckNotRunning(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run([]string{"check", "--state-dir", t.TempDir()}, &out, &errOut)
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if !bytes.Contains(out.Bytes(), []byte("× can reach the running sluice up")) || !bytes.Contains(out.Bytes(), []byte("no sluice up is running")) {
		t.Errorf("output:\n%s", out.String())
	}
}

func TestStatNotRunning(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run([]string{"stat", "--state-dir", t.TempDir()}, &out, &errOut)
	if code != 1 || !bytes.Contains(errOut.Bytes(), []byte("sluice: no sluice up is running")) {
		t.Errorf("exit code %d, stderr %q", code, errOut.String())
	}
}

func TestUpFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"up"}, &out, &errOut); code != 1 || !bytes.Contains(errOut.Bytes(), []byte(`"filename" not set`)) {
		t.Errorf("up without -f: exit %d, stderr %q", code, errOut.String())
	}
	errOut.Reset()
	missing := filepath.Join(t.TempDir(), "missing")
	if code := run([]string{"up", "-f", missing, "--proxy", "/bin/true", "--state-dir", t.TempDir()}, &out, &errOut); code != 1 || !bytes.Contains(errOut.Bytes(), []byte("no such file or directory")) {
		t.Errorf("up -f missing: exit %d, stderr %q", code, errOut.String())
	}
}
