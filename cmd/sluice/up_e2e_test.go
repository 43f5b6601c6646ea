package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/local/up"
)

// syncBuffer is a bytes.Buffer safe for a process writing while the test reads.
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

// buildBinaries builds sluice, sluice-proxy and the demo app into one
// directory, as `make build` lays them out in bin/.
func buildBinaries(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	build := map[string]string{
		"sluice":          "github.com/sluicehq/sluice/cmd/sluice",
		"sluice-proxy":    "github.com/sluicehq/sluice/cmd/sluice-proxy",
		"sluice-demo-app": "github.com/sluicehq/sluice/examples/app",
	}
	// SLUICE_TEST_PROXY names a sluice-proxy built already, copied in its place.
	if p := os.Getenv("SLUICE_TEST_PROXY"); p != "" {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "sluice-proxy"), data, 0o755); err != nil {
			t.Fatal(err)
		}
		delete(build, "sluice-proxy")
	}
	for name, pkg := range build {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("building %s: %v\n%s", pkg, err, out)
		}
	}
	return dir
}

// pollUntil calls f until it returns true, or fails the test at the
// deadline (a guard against hanging, not a timing assertion).
func pollUntil(t *testing.T, what string, limit time.Duration, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// processesWithEnv lists the processes whose environment holds kv.
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

func processGone(pid int) bool {
	_, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid)))
	return os.IsNotExist(err)
}

// TestUpEndToEnd runs `sluice up` on examples/mesh as a user would: the
// two-service app comes up meshed, traffic through the ingress reaches the
// frontend and through it the backend, `sluice stat -o json` shows both
// workloads with requests, `sluice check` passes, and Ctrl-C leaves no
// process behind.
func TestUpEndToEnd(t *testing.T) {
	bin := buildBinaries(t)
	state := t.TempDir()
	manifests, err := filepath.Abs(filepath.Join("..", "..", "examples", "mesh"))
	if err != nil {
		t.Fatal(err)
	}
	marker := "SLUICE_STATE_DIR=" + state
	var stdout, stderr syncBuffer
	cmd := exec.Command(filepath.Join(bin, "sluice"), "up", "-f", manifests, "--state-dir", state,
		"--ingress-base-port", "0", "--scrape-interval", "1s", "--stop-grace", "5s")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Dir = t.TempDir()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{}) // closed when sluice up has exited
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		// Whatever happened, leave nothing running.
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
		for _, pid := range processesWithEnv(marker) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if t.Failed() {
			t.Logf("sluice up stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
			dumpLogs(t, filepath.Join(state, "logs"))
		}
	})
	sluice := func(args ...string) (string, error) {
		c := exec.Command(filepath.Join(bin, "sluice"), append(args, "--state-dir", state)...)
		var out, errOut bytes.Buffer
		c.Stdout, c.Stderr = &out, &errOut
		err := c.Run()
		if err != nil {
			return out.String(), errors.New(err.Error() + ": " + errOut.String() + out.String())
		}
		return out.String(), nil
	}

	pollUntil(t, "the API address file", 60*time.Second, func() bool {
		select {
		case <-exited:
			t.Fatalf("sluice up exited early: %v", exitErr)
		default:
		}
		_, err := os.Stat(filepath.Join(state, up.APIFile))
		return err == nil
	})
	client, err := up.Discover(state)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pids := map[int]bool{cmd.Process.Pid: true}
	record := func(st *up.Status) {
		for _, r := range st.Replicas {
			for _, p := range []int{r.App.PID, r.Proxy.PID} {
				if p != 0 {
					pids[p] = true
				}
			}
		}
		if p := st.IngressProxy.PID; p != 0 {
			pids[p] = true
		}
	}
	var st *up.Status
	pollUntil(t, "three ready replicas and a ready ingress", 90*time.Second, func() bool {
		st, err = client.Status(ctx)
		if err != nil {
			return false
		}
		record(st)
		ready := 0
		for _, r := range st.Replicas {
			if r.Ready {
				ready++
			}
		}
		return ready == 3 && st.IngressReady
	})
	if len(st.Problems) > 0 {
		t.Errorf("problems with examples/mesh: %q", st.Problems)
	}
	frontend := ""
	for _, p := range st.Ingress {
		if p.Service == "frontend" {
			frontend = p.URL
		}
	}
	if frontend == "" {
		t.Fatalf("frontend is not published: %+v", st.Ingress)
	}
	if !strings.Contains(stdout.String(), frontend) {
		t.Errorf("sluice up did not print where the frontend is (%s):\n%s", frontend, stdout.String())
	}

	// Traffic: frontend -> backend through the ingress and the sidecars.
	httpClient := &http.Client{Timeout: 10 * time.Second}
	successes, attempts := 0, 0
	var lastFailure string
	backends := map[string]bool{}
	get := func() {
		attempts++
		resp, err := httpClient.Get(frontend + "/")
		if err != nil {
			lastFailure = err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var reply struct {
			Service string
			Backend struct{ Service, Pod string }
		}
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &reply) != nil || reply.Service != "frontend" || reply.Backend.Service != "backend" {
			lastFailure = resp.Status + ": " + string(body)
			return
		}
		successes++
		backends[reply.Backend.Pod] = true
	}
	deadline := time.Now().Add(60 * time.Second)
	for successes < 100 && attempts < 2000 && time.Now().Before(deadline) {
		get()
		if successes == 0 {
			time.Sleep(50 * time.Millisecond) // discovery may still be settling
		}
	}
	if successes < 100 {
		t.Fatalf("%d of %d requests through %s reached the backend; last failure: %s", successes, attempts, frontend, lastFailure)
	}
	if len(backends) != 2 {
		t.Errorf("requests reached backend pods %v, want both replicas", backends)
	}

	// sluice stat -o json shows both workloads with traffic.
	var rows []statRow
	pollUntil(t, "sluice stat to show both workloads with requests", 60*time.Second, func() bool {
		get() // keep a trickle of traffic
		out, err := sluice("stat", "-o", "json")
		if err != nil {
			t.Logf("sluice stat: %v", err)
			return false
		}
		rows = nil
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatalf("sluice stat -o json is not JSON: %v\n%s", err, out)
		}
		busy := 0
		for _, r := range rows {
			if (r.Name == "frontend" || r.Name == "backend") && r.RPS != nil && *r.RPS > 0 {
				busy++
			}
		}
		return busy == 2
	})
	for _, r := range rows {
		want := map[string]string{"frontend": "1/1", "backend": "2/2"}[r.Name]
		if r.Meshed != want {
			t.Errorf("%s meshed %s, want %s", r.Name, r.Meshed, want)
		}
		if r.Success == nil || *r.Success < 0.99 {
			t.Errorf("%s success rate %v", r.Name, r.Success)
		}
	}
	table, err := sluice("stat")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table, "NAME") || !strings.Contains(table, "frontend") || !strings.Contains(table, "rps") {
		t.Errorf("sluice stat table:\n%s", table)
	}
	if out, err := sluice("check"); err != nil {
		t.Errorf("sluice check failed: %v\n%s", err, out)
	}

	// Ctrl-C stops everything.
	if st, err := client.Status(ctx); err == nil {
		record(st)
	}
	for _, pid := range processesWithEnv(marker) {
		pids[pid] = true
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if exitErr != nil {
			t.Errorf("sluice up exited with %v after SIGINT", exitErr)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("sluice up did not stop within 60s of SIGINT")
	}
	if len(pids) < 5 {
		t.Errorf("recorded only %d processes: %v", len(pids), pids)
	}
	for pid := range pids {
		if !processGone(pid) {
			t.Errorf("process %d is still there after Ctrl-C", pid)
		}
	}
	if left := processesWithEnv(marker); len(left) > 0 {
		t.Errorf("processes of this sluice up still running: %v", left)
	}
	if _, err := os.Stat(filepath.Join(state, up.APIFile)); !os.IsNotExist(err) {
		t.Errorf("the API address file is still there: %v", err)
	}
	if !strings.Contains(stdout.String(), "Stopped.") {
		t.Errorf("sluice up did not say it stopped:\n%s", stdout.String())
	}
}

// dumpLogs logs the end of every log under dir, to explain a failure.
func dumpLogs(t *testing.T, dir string) {
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		if len(data) > 4000 {
			data = data[len(data)-4000:]
		}
		t.Logf("--- %s:\n%s", path, data)
		return nil
	})
}
