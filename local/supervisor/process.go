package supervisor

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultStopGrace is how long a process may take to exit after SIGTERM
// before it is killed.
const DefaultStopGrace = 10 * time.Second

// Command is a program to run and keep running.
type Command struct {
	// Name names the process in messages ("default/web-5d8c7f9b4d-x2x7q app").
	Name string
	// Path is the program; Args its arguments (without the program name).
	Path string
	Args []string
	// Env is the complete environment.
	Env []string
	// Dir is the working directory ("" means the current one).
	Dir string
	// LogFile receives the process's standard output and error, appended,
	// with a line from the supervisor before each start and after each exit.
	LogFile string
}

// ProcessStatus is the state of a kept process.
type ProcessStatus struct {
	// Name is the Command's Name; Log its LogFile.
	Name string `json:"name"`
	Log  string `json:"log,omitempty"`
	// PID is the running process's ID (and process group), 0 when none runs.
	PID int `json:"pid,omitempty"`
	// Starts counts the attempts to start it; Restarts those after an exit.
	Starts   int `json:"starts"`
	Restarts int `json:"restarts"`
	// StartedAt is when the running process started.
	StartedAt time.Time `json:"startedAt,omitzero"`
	// LastExit says how the previous process ended ("exit status 1",
	// "signal: killed", "cannot start: ..."); empty if none has.
	LastExit   string    `json:"lastExit,omitempty"`
	LastExitAt time.Time `json:"lastExitAt,omitzero"`
	// NextStart is when the process is started again, while it waits out its
	// backoff; zero otherwise.
	NextStart time.Time `json:"nextStart,omitzero"`
	// Stopped is true once the process was stopped for good.
	Stopped bool `json:"stopped,omitempty"`
}

// Running reports whether a process is running now.
func (s ProcessStatus) Running() bool { return s.PID != 0 }

// Exit describes one exit of a kept process, for KeepOptions.OnExit.
type Exit struct {
	Name string
	// Err is how it ended: an *exec.ExitError, or the error that kept it
	// from starting.
	Err error
	// Ran is how long it ran.
	Ran time.Duration
	// RestartIn is the backoff before the next start; Restarts counts the
	// restarts so far, this one included.
	RestartIn time.Duration
	Restarts  int
	// LogTail is the end of the log file (at most DefaultTailLines lines).
	LogTail []string
}

// KeepOptions tune Keep.
type KeepOptions struct {
	// Backoff between restarts (zero: 1 s doubling to 30 s).
	Backoff Backoff
	// StopGrace is how long the process group has to exit after SIGTERM
	// before it gets SIGKILL (default DefaultStopGrace).
	StopGrace time.Duration
	// OnStart, if set, is called with the PID of every process started.
	OnStart func(pid int)
	// OnExit, if set, is called after every exit that is followed by a
	// restart (not after the final stop).
	OnExit func(Exit)
	// Now and After are the clock (defaults time.Now and time.After); tests
	// pass a fake one to run the backoff without waiting.
	Now   func() time.Time
	After func(time.Duration) <-chan time.Time
}

// Keeper runs a Command and restarts it whenever it exits, until its context
// ends; then it stops the process's whole group (SIGTERM, then SIGKILL after
// the grace period). Create it with Keep.
type Keeper struct {
	cmd  Command
	opts KeepOptions
	done chan struct{}

	mu     sync.Mutex
	status ProcessStatus
}

// Keep starts cmd at once and keeps it running until ctx ends. Every process
// runs in its own process group, so that whatever it starts is stopped with
// it; on Linux it is also killed if the supervisor dies.
func Keep(ctx context.Context, cmd Command, opts KeepOptions) *Keeper {
	if opts.StopGrace <= 0 {
		opts.StopGrace = DefaultStopGrace
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.After == nil {
		opts.After = time.After
	}
	k := &Keeper{cmd: cmd, opts: opts, done: make(chan struct{}), status: ProcessStatus{Name: cmd.Name, Log: cmd.LogFile}}
	go k.run(ctx)
	return k
}

// Status returns the process's current state.
func (k *Keeper) Status() ProcessStatus {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.status
}

// Done is closed once the keeper has stopped for good: its context ended and
// its process group is gone.
func (k *Keeper) Done() <-chan struct{} { return k.done }

func (k *Keeper) update(f func(*ProcessStatus)) {
	k.mu.Lock()
	defer k.mu.Unlock()
	f(&k.status)
}

func (k *Keeper) run(ctx context.Context) {
	defer close(k.done)
	defer k.update(func(s *ProcessStatus) { s.Stopped, s.NextStart, s.PID = true, time.Time{}, 0 })
	backoff := k.opts.Backoff
	for ctx.Err() == nil {
		started := k.opts.Now()
		err, stopped := k.runOnce(ctx)
		if stopped {
			return
		}
		ran := k.opts.Now().Sub(started)
		delay := backoff.Next(ran)
		next := k.opts.Now().Add(delay)
		var restarts int
		k.update(func(s *ProcessStatus) {
			s.Restarts++
			restarts = s.Restarts
			s.LastExit = describeExit(err)
			s.LastExitAt = k.opts.Now()
			s.NextStart = next
		})
		k.logLine(fmt.Sprintf("%s; restarting in %v", describeExit(err), delay))
		if k.opts.OnExit != nil {
			tail, _ := Tail(k.cmd.LogFile, DefaultTailLines)
			k.opts.OnExit(Exit{Name: k.cmd.Name, Err: err, Ran: ran, RestartIn: delay, Restarts: restarts, LogTail: tail})
		}
		select {
		case <-ctx.Done():
			return
		case <-k.opts.After(delay):
		}
		k.update(func(s *ProcessStatus) { s.NextStart = time.Time{} })
	}
}

// runOnce starts the process and waits for it to exit (err says how) or for
// ctx to end (stopped is true, the group is gone).
func (k *Keeper) runOnce(ctx context.Context) (err error, stopped bool) {
	k.update(func(s *ProcessStatus) { s.Starts++ })
	logf, err := openLog(k.cmd.LogFile)
	if err != nil {
		return fmt.Errorf("cannot start: %w", err), false
	}
	defer logf.Close()
	fmt.Fprintf(logf, "--- %s sluice: starting %s\n", k.opts.Now().Format(time.RFC3339), quoteArgs(k.cmd.Path, k.cmd.Args))

	c := exec.Command(k.cmd.Path, k.cmd.Args...)
	c.Env = k.cmd.Env
	c.Dir = k.cmd.Dir
	c.Stdin = nil
	c.Stdout = logf
	c.Stderr = logf
	c.SysProcAttr = procAttr()
	c.Cancel = nil
	if err := c.Start(); err != nil {
		return fmt.Errorf("cannot start: %w", err), false
	}
	pid := c.Process.Pid
	k.update(func(s *ProcessStatus) { s.PID, s.StartedAt = pid, k.opts.Now() })
	if k.opts.OnStart != nil {
		k.opts.OnStart(pid)
	}
	waited := make(chan error, 1)
	go func() { waited <- c.Wait() }()

	select {
	case err = <-waited:
		// Whatever it started goes with it.
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		waitGroupGone(pid, k.opts.StopGrace)
		k.update(func(s *ProcessStatus) { s.PID = 0 })
		if err == nil {
			err = errors.New("exited with status 0")
		}
		return err, false
	case <-ctx.Done():
	}
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	grace := time.NewTimer(k.opts.StopGrace)
	defer grace.Stop()
	select {
	case err = <-waited:
	case <-grace.C:
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		err = <-waited
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL) // children that outlived it
	waitGroupGone(pid, k.opts.StopGrace)
	k.update(func(s *ProcessStatus) { s.PID = 0 })
	fmt.Fprintf(logf, "--- %s sluice: stopped (%s)\n", k.opts.Now().Format(time.RFC3339), describeExit(err))
	return err, true
}

// logLine appends a supervisor line to the log file.
func (k *Keeper) logLine(msg string) {
	f, err := openLog(k.cmd.LogFile)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "--- %s sluice: %s\n", k.opts.Now().Format(time.RFC3339), msg)
}

func openLog(path string) (*os.File, error) {
	if path == "" {
		return os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("log directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	return f, nil
}

// describeExit says how a process ended, for people.
func describeExit(err error) string {
	if err == nil {
		return "exited with status 0"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.String() // "exit status 1", "signal: killed"
	}
	return err.Error()
}

func quoteArgs(path string, args []string) string {
	parts := []string{path}
	for _, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\"'\\$") {
			a = fmt.Sprintf("%q", a)
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

// DefaultTailLines is how many lines of a log Tail shows by default.
const DefaultTailLines = 20

// tailBytes bounds how much of the end of a log Tail reads.
const tailBytes = 64 << 10

// Tail returns the last n lines of a log file (fewer if it has fewer).
func Tail(path string, n int) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := max(info.Size()-tailBytes, 0)
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, tailBytes))
	if err != nil {
		return nil, err
	}
	if off > 0 { // drop the partial first line
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			data = data[i+1:]
		}
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), tailBytes)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines, nil
}
