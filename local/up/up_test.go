package up

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var (
	binDir   string
	proxyBin string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "up-test-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	proxyBin = filepath.Join(dir, "sluice-proxy")
	build := map[string]string{
		"sluice-proxy":    "github.com/sluicehq/sluice/cmd/sluice-proxy",
		"sluice-demo-app": "github.com/sluicehq/sluice/examples/app",
	}
	// SLUICE_TEST_PROXY names a sluice-proxy built already (to test against
	// another proxy, or to skip building it).
	if p := os.Getenv("SLUICE_TEST_PROXY"); p != "" {
		proxyBin = p
		delete(build, "sluice-proxy")
	}
	for name, pkg := range build {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n", pkg, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// lockedBuffer collects what Run prints.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func webManifest(version string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      enableServiceLinks: false
      containers:
      - name: app
        command: [sluice-demo-app]
        args: ["--name=web"]
        env:
        - {name: VERSION, value: %s}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports: [{port: 80}]
`, version)
}

func write(t *testing.T, path, content string) {
	t.Helper()
	// Written beside and renamed, as editors do, so no half file is read.
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func poll(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func processesWithEnv(kv string) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		for _, v := range bytes.Split(data, []byte{0}) {
			if string(v) == kv {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

func getVersion(t *testing.T, addr string) string {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("GET %s: %v", addr, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var r struct{ Version string }
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("GET %s: %s: %s", addr, resp.Status, body)
	}
	return r.Version
}

// Local mode end to end, in process: it starts what DIR says, reports bad
// input by file and line without tearing anything down, applies changes
// (rolling a Deployment whose template changed), serves its API, refuses a
// second instance on the same state, and stops every process on cancel.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	state := t.TempDir()
	write(t, filepath.Join(dir, "web.yaml"), webManifest("v1"))
	var out lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *Status, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			ManifestDir:     dir,
			StateDir:        state,
			ProxyBinary:     proxyBin,
			IngressBasePort: 0,
			ScrapeInterval:  500 * time.Millisecond,
			WatchInterval:   200 * time.Millisecond,
			ExtraPath:       []string{binDir},
			StopGrace:       5 * time.Second,
			Out:             &out,
			Version:         "test",
			Ready:           func(st *Status) { ready <- st },
		})
	}()
	finished := false
	t.Cleanup(func() {
		if !finished {
			cancel()
			<-done
		}
		if t.Failed() {
			t.Logf("output:\n%s", out.String())
		}
	})
	select {
	case st := <-ready:
		if st.Version != "test" || len(st.Ingress) != 1 || st.Ingress[0].Service != "web" {
			t.Errorf("first status %+v", st)
		}
	case err := <-done:
		t.Fatalf("Run returned early: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("not started within 60s")
	}
	client, err := Discover(state)
	if err != nil {
		t.Fatal(err)
	}
	status := func() *Status {
		st, err := client.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	readyReplicas := func(st *Status) []Replica {
		var r []Replica
		for _, rep := range st.Replicas {
			if rep.Ready {
				r = append(r, rep)
			}
		}
		return r
	}
	var first Replica
	poll(t, "the web replica", func() bool {
		r := readyReplicas(status())
		if len(r) == 1 {
			first = r[0]
			return true
		}
		return false
	})
	if v := getVersion(t, first.Address); v != "v1" {
		t.Errorf("version %q", v)
	}
	if !strings.Contains(out.String(), "SERVICE") || !strings.Contains(out.String(), status().Ingress[0].URL) {
		t.Errorf("the published ports were not printed:\n%s", out.String())
	}

	// Bad input is reported by file and line; nothing is torn down.
	write(t, filepath.Join(dir, "bad.yaml"), "apiVersion: v1\nkind: Service\nmetadata: x: y\n")
	write(t, filepath.Join(dir, "other.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
	write(t, filepath.Join(dir, "web.yaml"), strings.Replace(webManifest("v2"), "command:", "comand:", 1))
	poll(t, "the problems to be reported", func() bool {
		p := strings.Join(status().Problems, "\n")
		return strings.Contains(p, "bad.yaml:3: not valid YAML") &&
			strings.Contains(p, "other.yaml:1: ConfigMap default/c: kind ConfigMap") &&
			strings.Contains(p, "web.yaml:15: Deployment default/web: spec.template.spec.containers[0].comand: unknown field")
	})
	for _, want := range []string{"bad.yaml:3: not valid YAML", "[skipped]", "comand: unknown field", "[not applied; what runs keeps running]"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	st := status()
	if r := readyReplicas(st); len(r) != 1 || r[0].Pod != first.Pod || r[0].App.PID != first.App.PID {
		t.Errorf("bad input changed what runs: %+v", r)
	}
	if len(st.Ingress) != 1 {
		t.Errorf("ingress after bad input: %+v", st.Ingress)
	}

	// The fix rolls the Deployment: a new replica, then the old one goes.
	write(t, filepath.Join(dir, "web.yaml"), webManifest("v2"))
	os.Remove(filepath.Join(dir, "bad.yaml"))
	poll(t, "the roll to v2", func() bool {
		st := status()
		r := readyReplicas(st)
		return len(st.Replicas) == 1 && len(r) == 1 && r[0].Revision != first.Revision
	})
	second := readyReplicas(status())[0]
	if v := getVersion(t, second.Address); v != "v2" {
		t.Errorf("after the roll: version %q", v)
	}
	poll(t, "the old replica's processes to be gone", func() bool {
		_, err1 := os.Stat(filepath.Join("/proc", strconv.Itoa(first.App.PID)))
		_, err2 := os.Stat(filepath.Join("/proc", strconv.Itoa(first.Proxy.PID)))
		return os.IsNotExist(err1) && os.IsNotExist(err2)
	})
	if p := strings.Join(status().Problems, "\n"); strings.Contains(p, "bad.yaml") || strings.Contains(p, "comand") {
		t.Errorf("fixed problems still reported: %s", p)
	}

	// New Services are published; sluice.dev objects are kept.
	write(t, filepath.Join(dir, "api.yaml"), `apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  selector: {app: api}
  ports: [{name: http, port: 80}, {name: grpc, port: 9090}]
---
apiVersion: sluice.dev/v1beta1
kind: Canary
metadata: {name: web}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
`)
	poll(t, "api's ports to be published", func() bool { return len(status().Ingress) == 3 })
	objs, err := client.Objects(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || objs[0].GetKind() != "Canary" || objs[0].GetName() != "web" {
		t.Errorf("objects = %+v", objs)
	}
	poll(t, "a listener for api in web's sidecar", func() bool {
		r := readyReplicas(status())
		return len(r) == 1 && r[0].Listeners["api.default:9090"] != ""
	})

	// The API's checks.
	res, err := client.CheckIdentity(context.Background())
	if err != nil || !res.OK || !strings.Contains(res.Message, "issued a certificate for sluice-check.sluice.serviceaccount.identity.sluice.cluster.local") {
		t.Errorf("identity check: %+v, %v", res, err)
	}
	poll(t, "telemetry to list web", func() bool {
		sums, err := client.Telemetry().Workloads(context.Background(), time.Minute)
		return err == nil && len(sums) == 1 && sums[0].Workload == "web" && sums[0].Meshed == 1
	})

	// A second instance on the same state is refused.
	err = Run(context.Background(), Options{ManifestDir: dir, StateDir: state, ProxyBinary: proxyBin})
	if err == nil || !strings.Contains(err.Error(), "another sluice up is running with state directory") {
		t.Errorf("a second Run on the same state: %v", err)
	}

	// Removing a file deletes what it defined.
	os.Remove(filepath.Join(dir, "web.yaml"))
	poll(t, "web to be deleted", func() bool {
		st := status()
		return len(st.Replicas) == 0 && len(st.Workloads) == 0 && len(st.Ingress) == 2
	})

	write(t, filepath.Join(dir, "web.yaml"), webManifest("v3"))
	poll(t, "web again", func() bool { return len(readyReplicas(status())) == 1 })
	cancel()
	select {
	case err := <-done:
		finished = true
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return within 60s of cancel")
	}
	if left := processesWithEnv("SLUICE_STATE_DIR=" + state); len(left) > 0 {
		t.Errorf("processes left: %v", left)
	}
	if _, err := os.Stat(filepath.Join(state, APIFile)); !os.IsNotExist(err) {
		t.Errorf("API file still there: %v", err)
	}
	if _, err := Discover(state); err == nil || !strings.Contains(err.Error(), "no sluice up is running") {
		t.Errorf("Discover after stop: %v", err)
	}
}

func TestRunPortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	err = Run(context.Background(), Options{ManifestDir: dir, StateDir: t.TempDir(), ProxyBinary: proxyBin, ControlPlaneAddr: ln.Addr().String()})
	if err == nil || !strings.Contains(err.Error(), "the control plane cannot listen on "+ln.Addr().String()) || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("control plane port taken: %v", err)
	}
	err = Run(context.Background(), Options{ManifestDir: dir, StateDir: t.TempDir(), ProxyBinary: proxyBin, APIAddr: ln.Addr().String()})
	if err == nil || !strings.Contains(err.Error(), "the API cannot listen on") {
		t.Errorf("API port taken: %v", err)
	}
}

func TestRunBadOptions(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no dir", Options{ProxyBinary: proxyBin}, "no manifest directory"},
		{"missing dir", Options{ManifestDir: filepath.Join(dir, "nope"), ProxyBinary: proxyBin}, "no such file or directory"},
		{"missing proxy", Options{ManifestDir: dir, ProxyBinary: filepath.Join(dir, "sluice-proxy")}, "cannot be run"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.StateDir = t.TempDir()
			err := Run(context.Background(), tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
