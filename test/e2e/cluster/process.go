package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A process the harness started is recorded in WorkDir/pids/NAME as
// "PID STARTTIME": the start time (field 22 of /proc/PID/stat) tells the
// process apart from a later one that reused the PID, so Down never
// signals a process it did not start.

// procStat is what the harness reads from /proc/PID/stat.
type procStat struct {
	state     byte
	ppid      int
	startTime uint64
}

// readStat reads /proc/pid/stat.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// The command name is in parentheses and may hold spaces: fields
	// start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ppid, _ := strconv.Atoi(f[1])
	st, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("/proc/%d/stat: start time %q: %w", pid, f[19], err)
	}
	return procStat{state: f[0][0], ppid: ppid, startTime: st}, nil
}

// running reports whether pid is a live (not zombie) process started at
// startTime. A zombie child of this process is reaped.
func running(pid int, startTime uint64) bool {
	st, err := readStat(pid)
	if err != nil || st.startTime != startTime {
		return false
	}
	if st.state == 'Z' || st.state == 'X' {
		reap(pid)
		return false
	}
	return true
}

// reap collects the exit status of pid if it is a zombie child of this
// process (a process started by startProcess that exited), retrying when
// a signal interrupts the call.
func reap(pid int) {
	for {
		var ws syscall.WaitStatus
		_, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		if !errors.Is(err, syscall.EINTR) {
			return
		}
	}
}

// pidFile is the path recording the process called name.
func (c Config) pidFile(name string) string { return c.path("pids", name) }

// startProcess starts bin with args detached (a new session, stdin from
// /dev/null, stdout and stderr appended to WorkDir/logs/NAME.log) and
// records its PID.
func startProcess(c Config, name, bin string, args ...string) error {
	for _, d := range []string{c.path("pids"), c.path("logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	log, err := os.OpenFile(c.path("logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout = log
	cmd.Stderr = log
	cmd.Dir = c.WorkDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s (%s): %w", name, bin, err)
	}
	pid := cmd.Process.Pid
	st, err := readStat(pid)
	if err != nil {
		return fmt.Errorf("%s (PID %d) exited at once; see %s: %w", name, pid, c.path("logs", name+".log"), err)
	}
	c.Logger.Debug("started", "component", name, "pid", pid)
	return os.WriteFile(c.pidFile(name), fmt.Appendf(nil, "%d %d\n", pid, st.startTime), 0o644)
}

// recordedProcess reads the PID file of name; ok is false when there is
// none or it cannot be parsed.
func recordedProcess(c Config, name string) (pid int, startTime uint64, ok bool) {
	b, err := os.ReadFile(c.pidFile(name))
	if err != nil {
		return 0, 0, false
	}
	if _, err := fmt.Sscanf(string(b), "%d %d", &pid, &startTime); err != nil {
		return 0, 0, false
	}
	return pid, startTime, true
}

// processRunning reports whether the recorded process name is running.
func processRunning(c Config, name string) bool {
	pid, st, ok := recordedProcess(c, name)
	return ok && running(pid, st)
}

// stopProcess stops the recorded process name and every descendant it
// has: SIGTERM, then SIGKILL after grace. It removes the PID file.
func stopProcess(ctx context.Context, c Config, name string, grace time.Duration) error {
	pid, st, ok := recordedProcess(c, name)
	if !ok {
		return nil
	}
	if running(pid, st) {
		kids := descendants(pid)
		c.Logger.Debug("stopping", "component", name, "pid", pid, "descendants", len(kids))
		if err := terminate(ctx, pid, st, grace); err != nil {
			return fmt.Errorf("stopping %s (PID %d): %w", name, pid, err)
		}
		for _, k := range kids {
			if err := terminate(ctx, k.pid, k.startTime, grace); err != nil {
				return fmt.Errorf("stopping a child (PID %d) of %s: %w", k.pid, name, err)
			}
		}
	}
	return os.Remove(c.pidFile(name))
}

// terminate sends SIGTERM, waits up to grace, then sends SIGKILL and waits
// again.
func terminate(ctx context.Context, pid int, startTime uint64, grace time.Duration) error {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		if !running(pid, startTime) {
			return nil
		}
		if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return err
		}
		if waitGone(ctx, pid, startTime, grace) {
			return nil
		}
	}
	return fmt.Errorf("still running after SIGKILL")
}

func waitGone(ctx context.Context, pid int, startTime uint64, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !running(pid, startTime) {
			return true
		}
		select {
		case <-ctx.Done():
			return !running(pid, startTime)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return !running(pid, startTime)
}

// procRef identifies a process.
type procRef struct {
	pid       int
	startTime uint64
}

// allProcesses lists every process with its parent.
func allProcesses() map[int]procStat {
	ents, _ := os.ReadDir("/proc")
	ps := make(map[int]procStat, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readStat(pid); err == nil {
			ps[pid] = st
		}
	}
	return ps
}

// descendants lists pid's children, grandchildren and so on.
func descendants(pid int) []procRef {
	ps := allProcesses()
	var out []procRef
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for q, st := range ps {
			if st.ppid == p {
				out = append(out, procRef{q, st.startTime})
				queue = append(queue, q)
			}
		}
	}
	return out
}

// processesReferencing lists the processes whose command line mentions
// dir (containerd's shims name the work directory's socket), except this
// process and its ancestors.
func processesReferencing(dir string) []procRef {
	ps := allProcesses()
	skip := map[int]bool{}
	for p := os.Getpid(); p > 1; p = ps[p].ppid {
		skip[p] = true
		if _, ok := ps[p]; !ok {
			break
		}
	}
	var out []procRef
	for pid, st := range ps {
		if skip[pid] {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		if bytes.Contains(b, []byte(dir+string(filepath.Separator))) || bytes.HasSuffix(bytes.TrimRight(b, "\x00"), []byte(dir)) {
			out = append(out, procRef{pid, st.startTime})
		}
	}
	return out
}

// processName returns the name of pid's executable (comm).
func processName(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// killPID sends SIGKILL to pid.
func killPID(pid int) { _ = syscall.Kill(pid, syscall.SIGKILL) }

// unmount unmounts path, lazily when it is busy.
func unmount(path string) error {
	if err := syscall.Unmount(path, 0); err != nil {
		if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOENT) {
			return nil // no longer mounted
		}
		return syscall.Unmount(path, syscall.MNT_DETACH)
	}
	return nil
}
