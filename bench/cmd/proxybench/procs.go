package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a child process the harness started, in its own process group so
// that it and its children (nginx's workers) can be stopped together.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string // path of its combined stdout+stderr
	// version is the first line of the program's version output, if known.
	version string
	done    chan struct{}
	err     error // valid after done is closed
}

// startProc starts argv pinned to cpu (no pinning when cpu is ""), with env
// added to the harness's environment, logging to dir/name.log.
func startProc(name, dir, cpu string, env []string, argv ...string) (*proc, error) {
	if cpu != "" {
		argv = append([]string{"taskset", "-c", cpu}, argv...)
	}
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s (%s): %w", name, strings.Join(argv, " "), err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// pid is the process's id (taskset execs the command, so it is the command's).
func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	pgid := p.pid()
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
}

// logTail returns the last lines of the process's log, for error messages.
func (p *proc) logTail() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}

// waitHTTP polls url until it answers 200, the process exits, or timeout.
func waitHTTP(ctx context.Context, p *proc, url string, timeout time.Duration) error {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(timeout)
	var last error
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		last = err
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited (%v) before %s answered; log:\n%s", p.name, p.err, url, p.logTail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer 200 within %v: %v", url, timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitTCP polls addr until it accepts a connection.
func waitTCP(ctx context.Context, p *proc, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited (%v) before %s accepted; log:\n%s", p.name, p.err, addr, p.logTail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not accepting within %v: %w", addr, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// processTree returns pid and all its descendants.
func processTree(pid int) []int {
	pids := []int{pid}
	for i := 0; i < len(pids); i++ {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pids[i]))
		for _, t := range tasks {
			b, err := os.ReadFile(t)
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil {
					pids = append(pids, c)
				}
			}
		}
	}
	return pids
}

// treeRSS is the summed VmRSS, in bytes, of pid and its descendants.
func treeRSS(pid int) (int64, error) {
	var total int64
	for _, p := range processTree(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			if p == pid {
				return 0, fmt.Errorf("reading RSS of pid %d: %w", pid, err)
			}
			continue // a child that just exited
		}
		kb, err := parseVmRSS(b)
		if err != nil {
			return 0, fmt.Errorf("pid %d: %w", p, err)
		}
		total += kb * 1024
	}
	return total, nil
}

// parseVmRSS reads the VmRSS line (in kB) of a /proc/PID/status file.
func parseVmRSS(status []byte) (int64, error) {
	for line := range bytes.Lines(status) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("unexpected VmRSS line %q", line)
		}
		return strconv.ParseInt(f[0], 10, 64)
	}
	return 0, errors.New("no VmRSS line in /proc status")
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat CPU times (100 on Linux).
const clockTicks = 100

// treeCPU is the CPU time (user+system) used so far by pid and its descendants.
func treeCPU(pid int) time.Duration {
	var ticks int64
	for _, p := range processTree(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		if t, err := parseStatCPU(b); err == nil {
			ticks += t
		}
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// parseStatCPU returns utime+stime (fields 14 and 15) of a /proc/PID/stat line.
func parseStatCPU(stat []byte) (int64, error) {
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed stat %q", stat)
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("short stat %q", stat)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("stat times: %w", err)
	}
	return u + s, nil
}

// rssSampler records the maximum RSS of a process tree until stopped.
type rssSampler struct {
	stopc chan struct{}
	done  chan int64
}

func sampleRSS(pid int, every time.Duration) *rssSampler {
	s := &rssSampler{stopc: make(chan struct{}), done: make(chan int64, 1)}
	go func() {
		var maxRSS int64
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if v, err := treeRSS(pid); err == nil && v > maxRSS {
				maxRSS = v
			}
			select {
			case <-s.stopc:
				s.done <- maxRSS
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// stop ends sampling and returns the maximum seen, in bytes.
func (s *rssSampler) stop() int64 {
	close(s.stopc)
	return <-s.done
}
