package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
	"github.com/sluicehq/sluice/local/up"
)

// canaryE2E runs bin/sluice up on a copy of examples/canary.
type canaryE2E struct {
	t          *testing.T
	bin, dir   string
	state, tmp string
	cmd        *exec.Cmd
	done       chan struct{}
	out        *syncBuffer
}

func (e *canaryE2E) start() {
	t := e.t
	e.out = &syncBuffer{}
	e.cmd = exec.Command(filepath.Join(e.bin, "sluice"), "up", "-f", e.dir, "--state-dir", e.state,
		"--ingress-base-port", "0", "--scrape-interval", "1s", "--stop-grace", "2s")
	e.cmd.Stdout, e.cmd.Stderr = e.out, e.out
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e.done = make(chan struct{})
	go func() { _ = e.cmd.Wait(); close(e.done) }()
}

func (e *canaryE2E) stop() {
	if e.cmd == nil {
		return
	}
	_ = e.cmd.Process.Signal(os.Interrupt)
	select {
	case <-e.done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
		<-e.done
	}
	e.cmd = nil
}

// sluice runs the CLI and returns its exit code and output.
func (e *canaryE2E) sluice(args ...string) (int, string) {
	cmd := exec.Command(filepath.Join(e.bin, "sluice"), append(args, "--state-dir", e.state)...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		e.t.Fatalf("sluice %v: %v", args, err)
	}
	return 0, string(out)
}

func (e *canaryE2E) client() *up.Client {
	var c *up.Client
	pollUntil(e.t, "the API", time.Minute, func() bool {
		var err error
		c, err = up.Discover(e.state)
		if err != nil {
			return false
		}
		_, err = c.Status(context.Background())
		return err == nil
	})
	return c
}

func (e *canaryE2E) canary(c *up.Client) v1beta1.Canary {
	list, err := c.Canaries(context.Background())
	if err != nil {
		return v1beta1.Canary{}
	}
	for _, cn := range list {
		if cn.Name == "backend" {
			return cn
		}
	}
	return v1beta1.Canary{}
}

// backendVersion writes a backend manifest of a version and error rate.
func (e *canaryE2E) backendVersion(version, errorRate string) string {
	data, err := os.ReadFile(filepath.Join(e.dir, "backend.yaml"))
	if err != nil {
		e.t.Fatal(err)
	}
	y := string(data)
	y = replaceEnv(y, "VERSION", version)
	y = replaceEnv(y, "ERROR_RATE", errorRate)
	f := filepath.Join(e.tmp, version, "backend.yaml")
	if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(f, []byte(y), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return f
}

func replaceEnv(y, name, value string) string {
	lines := strings.Split(y, "\n")
	for i := range lines {
		if strings.TrimSpace(lines[i]) == "- name: "+name && i+1 < len(lines) {
			indent := lines[i+1][:len(lines[i+1])-len(strings.TrimLeft(lines[i+1], " "))]
			lines[i+1] = indent + "value: \"" + value + "\""
		}
	}
	return strings.Join(lines, "\n")
}

// loader sends requests to the frontend and counts failures.
type loader struct {
	mu             sync.Mutex
	sent, failures int
}

func (l *loader) counts() (int, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sent, l.failures
}

func (l *loader) run(ctx context.Context, url string) {
	client := &http.Client{Timeout: 5 * time.Second}
	for range 100000 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if ctx.Err() != nil {
			return
		}
		ok := err == nil && resp.StatusCode == http.StatusOK
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		l.mu.Lock()
		l.sent++
		if !ok {
			l.failures++
		}
		l.mu.Unlock()
	}
}

func TestCanaryEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end: builds binaries and runs local mode for minutes")
	}
	tmp := t.TempDir()
	e := &canaryE2E{t: t, bin: buildBinaries(t), dir: filepath.Join(tmp, "world"), state: filepath.Join(tmp, "state"), tmp: tmp}
	t.Cleanup(e.stop)
	if err := os.MkdirAll(e.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"backend.yaml", "frontend.yaml", "services.yaml", "canary.yaml"} {
		data, err := os.ReadFile(filepath.Join("..", "..", "examples", "canary", f))
		if err != nil {
			t.Fatal(err)
		}
		s := string(data)
		if f == "canary.yaml" {
			s = strings.Replace(s, "stepWeight: 20", "stepWeight: 50", 1)
			s = strings.Replace(s, "maxWeight: 60", "maxWeight: 50", 1)
		}
		if err := os.WriteFile(filepath.Join(e.dir, f), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// No running instance: exit 3.
	if code, out := e.sluice("status", "backend", "--wait"); code != 3 {
		t.Errorf("status without sluice up: exit %d, want 3\n%s", code, out)
	}

	e.start()
	defer func() {
		if t.Failed() {
			t.Logf("sluice up output:\n%s", e.out.String())
		}
	}()
	c := e.client()
	pollUntil(t, "the canary initialized", 2*time.Minute, func() bool {
		return e.canary(c).Status.Phase == v1beta1.PhaseInitialized
	})
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	frontend := ""
	for _, in := range st.Ingress {
		if in.Service == "frontend" {
			frontend = in.URL
		}
	}
	if frontend == "" {
		t.Fatal("frontend not published")
	}

	// Unknown canary: exit 3.
	if code, out := e.sluice("status", "nope", "--wait"); code != 3 {
		t.Errorf("status of an unknown canary: exit %d, want 3\n%s", code, out)
	}
	// The seed guide's Flagger Canary is accepted by apply's checks (it is
	// not applied: exit 3 would mean refused; its namespace's files are
	// written to the world).
	seed := filepath.Join("..", "..", "crds", "sluice", "v1beta1", "testdata", "valid", "seed-linkerd-canary.yaml")
	if code, out := e.sluice("apply", "-f", seed); code != 0 {
		t.Errorf("apply of the seed guide's Canary: exit %d\n%s", code, out)
	}

	ctx, cancel := context.WithCancel(context.Background())
	l := &loader{}
	loadDone := make(chan struct{})
	go func() { defer close(loadDone); l.run(ctx, frontend) }()
	loadStopped := false
	t.Cleanup(func() {
		if !loadStopped {
			cancel()
			<-loadDone
		}
	})

	// A good version is promoted; a 1 s timeout on the running rollout is exit 2.
	if code, out := e.sluice("apply", "-f", e.backendVersion("v2", "0")); code != 0 {
		t.Fatalf("apply v2: exit %d\n%s", code, out)
	}
	if code, out := e.sluice("status", "backend", "--wait", "--timeout", "1s"); code != 2 {
		t.Errorf("status --timeout 1s during a rollout: exit %d, want 2\n%s", code, out)
	}
	sent0, fail0 := l.counts()
	if code, out := e.sluice("status", "backend", "--wait", "--timeout", "3m"); code != 0 {
		t.Fatalf("status --wait of v2: exit %d, want 0\n%s", code, out)
	} else {
		t.Logf("v2:\n%s", out)
	}
	sent1, fail1 := l.counts()
	if fail1-fail0 > 2 {
		t.Errorf("%d of %d requests failed during the rollout of a good version", fail1-fail0, sent1-sent0)
	}

	// A version answering 50 % errors is rolled back; only the canary's
	// share (50 % of the traffic at most) of requests may fail meanwhile.
	if code, out := e.sluice("apply", "-f", e.backendVersion("v3", "0.5")); code != 0 {
		t.Fatalf("apply v3: exit %d\n%s", code, out)
	}
	if code, out := e.sluice("status", "backend", "--wait", "--timeout", "3m"); code != 1 {
		t.Fatalf("status --wait of v3: exit %d, want 1\n%s", code, out)
	} else {
		t.Logf("v3:\n%s", out)
	}
	sent2, fail2 := l.counts()
	if n, f := sent2-sent1, fail2-fail1; f == 0 || float64(f) > 0.35*float64(n) {
		t.Errorf("%d of %d requests failed during the bad rollout: want some, and at most the canary's share (~25%%)", f, n)
	}
	if cn := e.canary(c); cn.Status.LastPromotedRevision == cn.Status.ObservedRevision {
		t.Errorf("the failed revision is the promoted one: %+v", cn.Status)
	}
	// After the rollback the primary serves everything.
	pollUntil(t, "a few requests after the rollback", time.Minute, func() bool { s, _ := l.counts(); return s > sent2+100 })
	if _, f := l.counts(); f-fail2 > 2 {
		t.Errorf("%d requests failed after the rollback", f-fail2)
	}

	// Restarted mid-rollout, sluice up resumes the rollout.
	if code, out := e.sluice("apply", "-f", e.backendVersion("v4", "0")); code != 0 {
		t.Fatalf("apply v4: exit %d\n%s", code, out)
	}
	pollUntil(t, "v4 at 50%", 2*time.Minute, func() bool {
		cn := e.canary(c)
		return cn.Status.Phase == v1beta1.PhaseProgressing && cn.Status.CanaryWeight == 50
	})
	rev := e.canary(c).Status.ObservedRevision
	e.stop()
	e.start()
	c = e.client()
	pollUntil(t, "the canary read back", time.Minute, func() bool { return e.canary(c).Status.Phase != "" })
	// The ingress ports were picked anew: load the new frontend address.
	cancel()
	<-loadDone
	loadStopped = true
	st, err = c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range st.Ingress {
		if in.Service == "frontend" {
			frontend = in.URL
		}
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	loadDone2 := make(chan struct{})
	go func() { defer close(loadDone2); (&loader{}).run(ctx2, frontend) }()
	t.Cleanup(func() { cancel2(); <-loadDone2 })
	if cn := e.canary(c); cn.Status.ObservedRevision != rev || cn.Status.Phase == v1beta1.PhaseInitializing {
		t.Errorf("after the restart: phase %s observed %s, want the run of %s resumed", cn.Status.Phase, cn.Status.ObservedRevision, rev)
	}

	// A new revision in the middle of the run restarts the analysis for it:
	// the run that ends promotes v5, never v4.
	if code, out := e.sluice("apply", "-f", e.backendVersion("v5", "0")); code != 0 {
		t.Fatalf("apply v5 mid-run: exit %d\n%s", code, out)
	}
	pollUntil(t, "the run restarted for v5", 2*time.Minute, func() bool {
		cn := e.canary(c)
		return cn.Status.ObservedRevision != rev && cn.Status.ObservedRevision != ""
	})
	rev5 := e.canary(c).Status.ObservedRevision
	if code, out := e.sluice("status", "backend", "--wait", "--timeout", "3m"); code != 0 {
		t.Fatalf("status --wait of v5 after v4 was superseded: exit %d, want 0\n%s", code, out)
	}
	if cn := e.canary(c); cn.Status.LastPromotedRevision != rev5 {
		t.Errorf("promoted %s, want the mid-run revision %s (v4 was %s)", cn.Status.LastPromotedRevision, rev5, rev)
	}
}
