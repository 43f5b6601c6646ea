package scenario

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/test/e2e/cluster"
)

// Images are built with this registry and version, and the sluice binary
// the test drives is stamped with the same version, so `sluice check --proxy`
// finds the proxies on its own version.
const (
	imageRegistry = "localhost/sluicehq"
	imageVersion  = "e2e"
)

// env is what the scenario runs with: the cluster, the binaries and the
// repository's files.
type env struct {
	t       *testing.T
	root    string // the repository
	cl      *cluster.Cluster
	kubectl string
	sluice  string
}

// requireCluster skips unless make e2e asks for the tests on a real
// cluster (cluster.Require), and under -short.
func requireCluster(t *testing.T) {
	t.Helper()
	cluster.Require(t)
	if testing.Short() {
		t.Skip("-short")
	}
}

// repoRoot is the module's directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// stage logs a stage's duration when it ends.
func stage(t *testing.T, name string) func() {
	t.Helper()
	start := time.Now()
	t.Logf("stage %s: started", name)
	return func() { t.Logf("stage %s: %.1fs", name, time.Since(start).Seconds()) }
}

// result is a finished command.
type result struct {
	stdout, stderr string
	code           int
}

// run runs a command with stdin, returning its output and exit code; it
// fails the test only when the command could not be started.
func (e *env) run(ctx context.Context, stdin []byte, name string, args ...string) result {
	e.t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = e.root
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.cl.Kubeconfig)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		e.t.Fatalf("running %s %s: %v", name, strings.Join(args, " "), err)
	}
	return result{stdout.String(), stderr.String(), code}
}

// must runs a command that must succeed and returns its stdout.
func (e *env) must(ctx context.Context, stdin []byte, name string, args ...string) string {
	e.t.Helper()
	r := e.run(ctx, stdin, name, args...)
	if r.code != 0 {
		e.t.Fatalf("%s %s: exit %d\nstdout:\n%s\nstderr:\n%s", filepath.Base(name), strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// kubectl runs kubectl, which must succeed.
func (e *env) kubectlMust(ctx context.Context, stdin []byte, args ...string) string {
	e.t.Helper()
	return e.must(ctx, stdin, e.kubectl, args...)
}

// apply applies manifests server-side.
func (e *env) apply(ctx context.Context, manifests []byte) {
	e.t.Helper()
	e.kubectlMust(ctx, manifests, "apply", "--server-side", "--force-conflicts", "-f", "-")
}

// example reads a manifest of examples/kubernetes with the images the test built.
func (e *env) example(name string) []byte {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.root, "examples", "kubernetes", name))
	if err != nil {
		e.t.Fatalf("reading example %s: %v", name, err)
	}
	return retag(b)
}

// retag points the manifests' images at the ones the test built.
func retag(b []byte) []byte {
	re := regexp.MustCompile(`ghcr\.io/sluicehq/([a-z0-9-]+):[A-Za-z0-9._-]+`)
	return re.ReplaceAll(b, []byte(imageRegistry+"/$1:"+imageVersion))
}

// eventually polls cond until it returns nil, failing the test with its last
// error after timeout.
func (e *env) eventually(ctx context.Context, timeout time.Duration, what string, cond func() error) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			e.t.Fatalf("%s: still not true after %v: %v", what, timeout, err)
		}
		time.Sleep(time.Second)
	}
}

// httpGet is a plain GET from the host (not meshed).
func httpGet(ctx context.Context, url string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), nil
}

// metricSum adds up the samples of a metric family whose labels include
// every one of want, from a proxy's /metrics text.
func metricSum(text, family string, want map[string]string) float64 {
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, family+"{") {
			continue
		}
		end := strings.LastIndexByte(line, '}')
		if end < 0 {
			continue
		}
		labels := line[len(family)+1 : end]
		ok := true
		for k, v := range want {
			if !strings.Contains(labels, k+`="`+v+`"`) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(line[end+1:]), 64)
		if err == nil {
			sum += f
		}
	}
	return sum
}

// traffic sends a steady stream of GETs from the host to url and counts the
// answers per phase.
type traffic struct {
	mu     sync.Mutex
	phase  string
	counts map[string]map[string]int // phase -> "200", "500", "error"
	cancel context.CancelFunc
	done   chan struct{}
}

// startTraffic sends rps requests a second to url until stop.
func startTraffic(ctx context.Context, url string, rps int) *traffic {
	ctx, cancel := context.WithCancel(ctx)
	tr := &traffic{phase: "start", counts: map[string]map[string]int{}, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(tr.done)
		tick := time.NewTicker(time.Second / time.Duration(rps))
		defer tick.Stop()
		var wg sync.WaitGroup
		defer wg.Wait()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			wg.Go(func() {
				code, _, err := httpGet(ctx, url)
				if ctx.Err() != nil {
					return
				}
				key := strconv.Itoa(code)
				if err != nil {
					key = "error"
				}
				tr.mu.Lock()
				m := tr.counts[tr.phase]
				if m == nil {
					m = map[string]int{}
					tr.counts[tr.phase] = m
				}
				m[key]++
				tr.mu.Unlock()
			})
		}
	}()
	return tr
}

// setPhase starts counting under a new phase name.
func (tr *traffic) setPhase(p string) {
	tr.mu.Lock()
	tr.phase = p
	tr.mu.Unlock()
}

// stats returns a phase's total and failed (non-200) requests.
func (tr *traffic) stats(phase string) (total, failed int, counts string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for k, n := range tr.counts[phase] {
		total += n
		if k != "200" {
			failed += n
		}
	}
	return total, failed, fmt.Sprint(tr.counts[phase])
}

func (tr *traffic) stop() {
	tr.cancel()
	<-tr.done
}
