package supervisor

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Binaries built once for the tests that run real processes.
var (
	demoApp  string
	proxyBin string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "supervisor-test-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	demoApp = filepath.Join(dir, "sluice-demo-app")
	proxyBin = filepath.Join(dir, "sluice-proxy")
	builds := []struct{ out, pkg string }{
		{demoApp, "github.com/sluicehq/sluice/examples/app"},
		{proxyBin, "github.com/sluicehq/sluice/cmd/sluice-proxy"},
	}
	// SLUICE_TEST_PROXY names a sluice-proxy built already (to test against
	// another proxy, or to skip building it).
	if p := os.Getenv("SLUICE_TEST_PROXY"); p != "" {
		proxyBin = p
		builds = builds[:1]
	}
	for _, b := range builds {
		cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n", b.pkg, err)
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

func netListen(port int) (net.Listener, error) {
	return net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
}

// fakeAfter records the delays it is asked to wait and fires at once, up to
// limit times; after that it never fires.
type fakeAfter struct {
	mu     sync.Mutex
	delays []time.Duration
	limit  int
	hit    chan struct{} // closed when limit is reached
}

func newFakeAfter(limit int) *fakeAfter { return &fakeAfter{limit: limit, hit: make(chan struct{})} }

func (f *fakeAfter) After(d time.Duration) <-chan time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delays = append(f.delays, d)
	if len(f.delays) == f.limit {
		close(f.hit)
	}
	if len(f.delays) > f.limit {
		return nil // never fires
	}
	ch := make(chan time.Time, 1)
	ch <- time.Time{}
	return ch
}

func (f *fakeAfter) Delays() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.delays)
}

// processGone reports whether no process has this PID (reaped, not a zombie).
func processGone(pid int) bool {
	_, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid)))
	return os.IsNotExist(err)
}

// groupGone reports whether no process is left in the process group.
func groupGone(pgid int) bool { return syscall.Kill(-pgid, 0) == syscall.ESRCH }

// waitFor polls cond until it holds or the deadline (a failure guard) passes.
func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The demo app exits at once with a bad flag: a crash loop. It is restarted
// with backoff 1s, 2s, 4s, 8s (on a fake clock) and its output is in its log.
func TestKeeperRestartsCrashedProcessWithBackoff(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "app.log")
	after := newFakeAfter(4)
	var mu sync.Mutex
	var exits []Exit
	var pids []int
	ctx, cancel := context.WithCancel(context.Background())
	k := Keep(ctx, Command{Name: "crasher", Path: demoApp, Args: []string{"--error-rate", "2"}, LogFile: log}, KeepOptions{
		After:   after.After,
		OnStart: func(pid int) { mu.Lock(); pids = append(pids, pid); mu.Unlock() },
		OnExit:  func(e Exit) { mu.Lock(); exits = append(exits, e); mu.Unlock() },
	})
	t.Cleanup(func() { cancel(); <-k.Done() })

	select {
	case <-after.hit:
	case <-time.After(30 * time.Second):
		t.Fatalf("no 4 restarts; status %+v", k.Status())
	}
	// The fifth exit's delay is requested from a fake timer that never fires.
	waitFor(t, "the fifth exit", 30*time.Second, func() bool { return len(after.Delays()) == 5 })
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second}
	if got := after.Delays(); !slices.Equal(got, want) {
		t.Errorf("backoff delays = %v, want %v", got, want)
	}
	st := k.Status()
	if st.Restarts != 5 || st.Starts != 5 || st.LastExit != "exit status 1" || st.PID != 0 || st.NextStart.IsZero() {
		t.Errorf("status = %+v", st)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(pids) != 5 {
		t.Errorf("started %d processes, want 5", len(pids))
	}
	if len(exits) != 5 || exits[0].RestartIn != time.Second || exits[4].Restarts != 5 {
		t.Errorf("exits = %+v", exits)
	}
	if tail := strings.Join(exits[0].LogTail, "\n"); !strings.Contains(tail, "error rate 2 is outside 0..1") {
		t.Errorf("log tail of the first exit does not show the app's error:\n%s", tail)
	}
	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(data, []byte("error rate 2 is outside 0..1")); n != 5 {
		t.Errorf("the log holds the app's error %d times, want 5:\n%s", n, data)
	}
}

// Stopping a kept process stops its whole group, also a child that ignores
// SIGTERM (it gets SIGKILL after the grace period), and leaves no process.
func TestKeeperStopLeavesNoProcess(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	script := fmt.Sprintf(`trap "" TERM; sleep 300 & echo $! > %s; echo started; wait`, pidFile)
	ctx, cancel := context.WithCancel(context.Background())
	k := Keep(ctx, Command{Name: "stubborn", Path: "/bin/sh", Args: []string{"-c", script}, LogFile: filepath.Join(dir, "log")},
		KeepOptions{StopGrace: 300 * time.Millisecond})
	t.Cleanup(func() { cancel(); <-k.Done() })

	var child int
	waitFor(t, "the child to start", 10*time.Second, func() bool {
		data, err := os.ReadFile(pidFile)
		if err != nil {
			return false
		}
		child, err = strconv.Atoi(strings.TrimSpace(string(data)))
		return err == nil
	})
	leader := k.Status().PID
	if leader == 0 {
		t.Fatal("no PID while running")
	}
	cancel()
	select {
	case <-k.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the keeper did not stop")
	}
	for _, pid := range []int{leader, child} {
		if !processGone(pid) {
			t.Errorf("process %d is still there after Stop", pid)
		}
	}
	if !groupGone(leader) {
		t.Errorf("process group %d still has members", leader)
	}
	if st := k.Status(); !st.Stopped || st.PID != 0 {
		t.Errorf("status after stop = %+v", st)
	}
	data, _ := os.ReadFile(filepath.Join(dir, "log"))
	if !bytes.Contains(data, []byte("sluice: stopped")) {
		t.Errorf("log does not record the stop:\n%s", data)
	}
}

// A process that exits leaves none of its children behind before the restart.
func TestKeeperKillsLeftoversOnExit(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	script := fmt.Sprintf(`sleep 300 & echo $! > %s; exit 2`, pidFile)
	after := newFakeAfter(0) // never restarts
	ctx, cancel := context.WithCancel(context.Background())
	k := Keep(ctx, Command{Name: "leaver", Path: "/bin/sh", Args: []string{"-c", script}}, KeepOptions{After: after.After})
	t.Cleanup(func() { cancel(); <-k.Done() })
	waitFor(t, "the exit", 10*time.Second, func() bool { return k.Status().Restarts == 1 })
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	child, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	// By the time the exit is recorded, the leftover child is gone.
	if !processGone(child) {
		t.Errorf("the child %d of the exited process is still there (zombie: %v)", child, isZombie(child))
	}
	if got := k.Status().LastExit; got != "exit status 2" {
		t.Errorf("LastExit = %q", got)
	}
}

func isZombie(pid int) bool {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(data, ')')
	return i >= 0 && i+2 < len(data) && data[i+2] == 'Z'
}

func TestKeeperCannotStart(t *testing.T) {
	after := newFakeAfter(1)
	ctx, cancel := context.WithCancel(context.Background())
	k := Keep(ctx, Command{Name: "missing", Path: filepath.Join(t.TempDir(), "no-such-program")}, KeepOptions{After: after.After})
	t.Cleanup(func() { cancel(); <-k.Done() })
	waitFor(t, "a failed start", 10*time.Second, func() bool { return k.Status().Restarts >= 1 })
	if st := k.Status(); !strings.Contains(st.LastExit, "cannot start") || !strings.Contains(st.LastExit, "no such file") {
		t.Errorf("LastExit = %q", st.LastExit)
	}
}
