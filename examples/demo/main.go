// Command demo is `make demo`: it runs local mode with examples/canary (a
// frontend calling a backend, a Canary on the backend), sends the frontend a
// steady load, rolls out a healthy backend v2 and waits for its promotion,
// then a v3 that answers 10 % errors and waits for its rollback, printing
// each step. It exits 0 only when v2 Succeeded and v3 Failed, and stops
// everything it started.
//
// It builds nothing: run it after `make build` (bin/sluice, bin/sluice-proxy,
// bin/sluice-demo-app).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
	"github.com/sluicehq/sluice/local/up"
)

func main() {
	bin := flag.String("bin", "bin", "directory of sluice, sluice-proxy and sluice-demo-app")
	world := flag.String("f", "examples/canary", "the local-mode world to run")
	timeout := flag.Duration("step-timeout", 150*time.Second, "how long each rollout may take")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *bin, *world, *timeout); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

func say(format string, args ...any) {
	fmt.Printf("demo: "+format+"\n", args...)
}

func run(ctx context.Context, binDir, worldDir string, stepTimeout time.Duration) (err error) {
	binDir, err = filepath.Abs(binDir)
	if err != nil {
		return err
	}
	sluice := filepath.Join(binDir, "sluice")
	for _, b := range []string{"sluice", "sluice-proxy", "sluice-demo-app"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			return fmt.Errorf("%s is missing: run `make build` first", filepath.Join(binDir, b))
		}
	}
	tmp, err := os.MkdirTemp("", "sluice-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, "world")
	state := filepath.Join(tmp, "state")
	if err := copyDir(worldDir, dir); err != nil {
		return err
	}
	backendYAML, err := os.ReadFile(filepath.Join(dir, "backend.yaml"))
	if err != nil {
		return fmt.Errorf("the world needs backend.yaml: %w", err)
	}

	// sluice up, its output in a log file.
	logPath := filepath.Join(tmp, "sluice-up.out")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	upCmd := exec.Command(sluice, "up", "-f", dir, "--state-dir", state, "--ingress-base-port", "0",
		"--scrape-interval", "1s", "--stop-grace", "3s")
	upCmd.Stdout, upCmd.Stderr = logFile, logFile
	upCmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := upCmd.Start(); err != nil {
		return fmt.Errorf("starting sluice up: %w", err)
	}
	upDone := make(chan error, 1)
	go func() { upDone <- upCmd.Wait() }()
	defer func() {
		_ = upCmd.Process.Signal(os.Interrupt)
		select {
		case <-upDone:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-upCmd.Process.Pid, syscall.SIGKILL)
			<-upDone
		}
		if err != nil {
			if out, rerr := os.ReadFile(logPath); rerr == nil {
				fmt.Fprintf(os.Stderr, "--- sluice up output:\n%s", out)
			}
		}
	}()
	say("started sluice up -f %s (state in %s)", worldDir, state)

	client, frontend, err := waitUp(ctx, state, upDone)
	if err != nil {
		return err
	}
	if err := waitPhase(ctx, client, v1beta1.PhaseInitialized, 90*time.Second); err != nil {
		return err
	}
	say("canary default/backend initialized: backend-primary serves v1")

	// A steady load on the frontend, which calls the backend for each request.
	loadCtx, stopLoad := context.WithCancel(ctx)
	var sent, failed atomic.Int64
	loadDone := make(chan struct{})
	go func() { defer close(loadDone); load(loadCtx, frontend, &sent, &failed) }()
	defer func() { stopLoad(); <-loadDone }()
	say("sending a steady load to the frontend at %s", frontend)

	rollout := func(version, extraEnv string, want int) (int, error) {
		y := strings.Replace(string(backendYAML), "value: v1", "value: "+version, 1)
		if extraEnv != "" {
			y = strings.Replace(y, "- name: ERROR_RATE\n          value: \"0\"", "- name: ERROR_RATE\n          value: \""+extraEnv+"\"", 1)
		}
		f := filepath.Join(tmp, version, "backend.yaml")
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			return 0, err
		}
		if err := os.WriteFile(f, []byte(y), 0o644); err != nil {
			return 0, err
		}
		say("rolling out backend %s (ERROR_RATE=%s): sluice apply -f %s", version, orZero(extraEnv), f)
		if out, err := exec.CommandContext(ctx, sluice, "apply", "-f", f, "--state-dir", state).CombinedOutput(); err != nil {
			return 0, fmt.Errorf("sluice apply: %v: %s", err, out)
		}
		say("sluice status backend --wait")
		st := exec.CommandContext(ctx, sluice, "status", "backend", "--wait", "--timeout", stepTimeout.String(), "--state-dir", state)
		st.Stdout, st.Stderr = os.Stdout, os.Stderr
		err := st.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			return 0, err
		}
		return code, nil
	}

	v2, err := rollout("v2", "", 0)
	if err != nil {
		return err
	}
	v2Result := map[int]string{0: "Succeeded", 1: "Failed", 2: "TimedOut"}[v2]
	v3, err := rollout("v3", "0.1", 1)
	if err != nil {
		return err
	}
	v3Result := map[int]string{0: "Succeeded", 1: "Failed", 2: "TimedOut"}[v3]
	stopLoad()
	<-loadDone
	say("load: %d requests, %d failed (the canary's share of v3's errors)", sent.Load(), failed.Load())
	say("v2 %s", v2Result)
	say("v3 %s", v3Result)
	if v2 != 0 || v3 != 1 {
		return fmt.Errorf("expected v2 Succeeded and v3 Failed (exit codes %d and %d)", v2, v3)
	}
	return nil
}

func orZero(s string) string {
	if s == "" {
		return "0"
	}
	return s
}

// waitUp waits for the API and the frontend's ingress URL.
func waitUp(ctx context.Context, state string, upDone <-chan error) (*up.Client, string, error) {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-upDone:
			return nil, "", fmt.Errorf("sluice up exited: %v", err)
		case <-ctx.Done():
			return nil, "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		c, err := up.Discover(state)
		if err != nil {
			continue
		}
		st, err := c.Status(ctx)
		if err != nil {
			continue
		}
		for _, in := range st.Ingress {
			if in.Service == "frontend" && in.Namespace == "default" {
				return c, in.URL, nil
			}
		}
	}
	return nil, "", errors.New("sluice up did not start within 60s")
}

// waitPhase waits for the backend canary to reach phase.
func waitPhase(ctx context.Context, c *up.Client, phase v1beta1.CanaryPhase, d time.Duration) error {
	deadline := time.Now().Add(d)
	last := ""
	for time.Now().Before(deadline) {
		list, err := c.Canaries(ctx)
		if err == nil {
			for _, cn := range list {
				if cn.Name == "backend" {
					if cn.Status.Phase == phase {
						return nil
					}
					last = string(cn.Status.Phase) + ": " + cn.Status.Message
				}
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("canary backend not %s within %s (last: %s)", phase, d, last)
}

// load sends about 50 requests a second to url until ctx ends (at most 30
// minutes' worth).
func load(ctx context.Context, url string, sent, failed *atomic.Int64) {
	client := &http.Client{Timeout: 5 * time.Second}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for range 30 * 60 * 50 {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		sent.Add(1)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			failed.Add(1)
			continue
		}
		resp, err := client.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				failed.Add(1)
			}
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			failed.Add(1)
		}
	}
}

// copyDir copies the manifest files of src into dst.
func copyDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return fmt.Errorf("reading %s: %w", src, err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
