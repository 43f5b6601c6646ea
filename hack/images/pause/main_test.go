package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildPause compiles the program, as the image does.
func buildPause(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pause")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-trimpath", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// waitExit waits for cmd with a generous deadline and returns its exit code.
func waitExit(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatal("pause did not exit within 30s")
		return -1
	}
}

func TestSignalsAndArgs(t *testing.T) {
	bin := buildPause(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			// A signal that arrives before main installs its handler kills
			// the process the default way; that attempt is retried, later.
			for attempt := 1; ; attempt++ {
				cmd := exec.Command(bin)
				var stderr strings.Builder
				cmd.Stderr = &stderr
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				time.Sleep(time.Duration(attempt) * 20 * time.Millisecond)
				if err := cmd.Process.Signal(sig); err != nil {
					t.Fatal(err)
				}
				code := waitExit(t, cmd)
				if code == -1 && attempt < 20 {
					continue
				}
				if code != 0 || !strings.Contains(stderr.String(), "shutting down on "+sig.String()) {
					t.Errorf("after %s: exit code %d, stderr %q; want 0 and a shutdown message", sig, code, stderr.String())
				}
				return
			}
		})
	}

	out, err := exec.Command(bin, "-v").Output()
	if err != nil || !strings.HasPrefix(string(out), "pause ") {
		t.Errorf("pause -v: %q, %v", out, err)
	}
	cmd := exec.Command(bin, "extra")
	msg, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(msg), `unexpected arguments ["extra"]`) {
		t.Errorf("pause extra: exit %d, %q", cmd.ProcessState.ExitCode(), msg)
	}
}

// childOf returns the pid of a process named name whose parent is ppid, or 0.
func childOf(ppid int, name string) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		status, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		var gotName string
		var gotPPid int
		for line := range strings.SplitSeq(string(status), "\n") {
			k, v, _ := strings.Cut(line, ":")
			switch k {
			case "Name":
				gotName = strings.TrimSpace(v)
			case "PPid":
				gotPPid, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
		if gotPPid == ppid && gotName == name {
			return pid
		}
	}
	return 0
}

// TestReapsOrphansAsPID1 runs pause as PID 1 of a new PID namespace, orphans
// a process in it, and checks that pause reaps it when it exits instead of
// leaving a zombie.
func TestReapsOrphansAsPID1(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("SLUICE_REQUIRE_NETNS") == "1" {
			t.Fatal("SLUICE_REQUIRE_NETNS=1 but not root: cannot create a PID namespace")
		}
		t.Skip("needs root for a PID namespace")
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		t.Skip("nsenter (util-linux) is not installed")
	}
	bin := buildPause(t)
	pause := exec.Command(bin)
	pause.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	if err := pause.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pause.Process.Kill(); _ = pause.Wait() }()

	// sh runs in pause's PID namespace, starts sleep and exits: sleep's new
	// parent is the namespace's init, pause.
	orphan := exec.CommandContext(t.Context(), nsenter, "--target", strconv.Itoa(pause.Process.Pid), "--pid", "--",
		"/bin/sh", "-c", "sleep 2 </dev/null >/dev/null 2>&1 & exit 0")
	if out, err := orphan.CombinedOutput(); err != nil {
		t.Fatalf("nsenter: %v\n%s", err, out)
	}
	deadline := time.Now().Add(30 * time.Second)
	var sleepPid int
	for sleepPid == 0 && time.Now().Before(deadline) {
		sleepPid = childOf(pause.Process.Pid, "sleep")
		if sleepPid == 0 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if sleepPid == 0 {
		t.Fatal("the orphaned sleep never became a child of pause")
	}
	for time.Now().Before(deadline) {
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(sleepPid))); errors.Is(err, os.ErrNotExist) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if status, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(sleepPid), "status")); err == nil {
		t.Fatalf("the orphan %d was not reaped within 30s:\n%s", sleepPid, status)
	}

	if err := pause.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, pause); code != 0 {
		t.Errorf("pause as PID 1 exited %d on SIGTERM, want 0", code)
	}
}
