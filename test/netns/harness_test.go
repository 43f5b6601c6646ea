package netns

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
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

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"
)

// nsPrefix starts the name of every namespace these tests create; the test
// process's PID follows, so leftovers of a killed run can be recognised.
const nsPrefix = "sluicetest-"

// proxyUID is the UID the proxy runs as, the one the init rules exempt.
const proxyUID = 2102

// Environment of the helper mode: the test binary re-executed inside a
// namespace (with `ip netns exec`) acts as a small HTTP client there.
const (
	helperEnv      = "SLUICE_NETNS_HELPER" // "get"
	helperURLEnv   = "SLUICE_NETNS_URL"
	helperCountEnv = "SLUICE_NETNS_COUNT" // requests to send, each on a new connection
	helperWaitEnv  = "SLUICE_NETNS_WAIT"  // retry until a 200 for this long
	// helperHeadersEnv is a JSON object of request headers; "Host" sets the
	// request's authority.
	helperHeadersEnv = "SLUICE_NETNS_HEADERS"
)

// binDir holds the binaries built once for all tests; see buildBinaries.
var (
	binDir    string
	buildOnce sync.Once
	buildErr  error
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperMain())
	}
	// The in-process control plane logs every certificate it issues through
	// the default logger; keep the output to failures.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	sweepStaleNamespaces()
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// helperMain is the helper mode: GET the URL COUNT times, each on a new
// connection, print the last status code and the last answer's
// sluice-proxy-error header on the first line and the last body after it.
// Exit 0 when every answer was 200, 1 otherwise.
func helperMain() int {
	url := os.Getenv(helperURLEnv)
	count, _ := strconv.Atoi(os.Getenv(helperCountEnv))
	count = max(count, 1)
	wait, _ := time.ParseDuration(os.Getenv(helperWaitEnv))
	var headers map[string]string
	if h := os.Getenv(helperHeadersEnv); h != "" {
		if err := json.Unmarshal([]byte(h), &headers); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", helperHeadersEnv, err)
			return 1
		}
	}
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true},
	}
	var proxyError string
	get := func() (int, []byte, error) {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return 0, nil, err
		}
		for k, v := range headers {
			if http.CanonicalHeaderKey(k) == "Host" {
				req.Host = v
			} else {
				req.Header.Set(k, v)
			}
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		proxyError = resp.Header.Get("Sluice-Proxy-Error")
		body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		return resp.StatusCode, body, err
	}
	deadline := time.Now().Add(wait)
	for i := 0; i < count; i++ {
		status, body, err := get()
		for wait > 0 && status != http.StatusOK && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond) // polling another process; no channel to wait on
			status, body, err = get()
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "GET %s (request %d of %d): %v\n", url, i+1, count, err)
			return 1
		}
		if i == count-1 || status != http.StatusOK {
			fmt.Printf("%d %s\n%s", status, strings.ReplaceAll(proxyError, "\n", " "), body)
		}
		if status != http.StatusOK {
			return 1
		}
	}
	return 0
}

// requireNetns skips the test unless it can run (root, ip, iptables, setpriv,
// and namespaces can be created); with SLUICE_REQUIRE_NETNS=1 it fails instead.
func requireNetns(t *testing.T, tools ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range append([]string{"ip", "setpriv"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		if err := probeNetns(); err != nil {
			missing = append(missing, fmt.Sprintf("permission to create network namespaces (%v)", err))
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "network namespace test needs " + strings.Join(missing, ", ")
	if os.Geteuid() == 0 {
		msg += " (make tools installs iptables and iproute2; setpriv is in util-linux)"
	}
	if os.Getenv("SLUICE_REQUIRE_NETNS") == "1" {
		t.Fatal(msg + "; SLUICE_REQUIRE_NETNS=1 forbids skipping")
	}
	t.Skip(msg)
}

var (
	probeOnce sync.Once
	probeErr  error
)

// probeNetns checks once that a namespace can be created here (a container
// without CAP_SYS_ADMIN cannot).
func probeNetns() error {
	probeOnce.Do(func() {
		name := fmt.Sprintf("%s%d-probe", nsPrefix, os.Getpid())
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			probeErr = fmt.Errorf("ip netns add: %v: %s", err, bytes.TrimSpace(out))
			return
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			probeErr = fmt.Errorf("ip netns del: %v: %s", err, bytes.TrimSpace(out))
		}
	})
	return probeErr
}

// sweepStaleNamespaces deletes namespaces left by test processes that no longer
// exist (a run killed by a timeout does not get to clean up).
func sweepStaleNamespaces() {
	if os.Geteuid() != 0 {
		return
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		if len(fields) == 0 || !strings.HasPrefix(fields[0], nsPrefix) {
			continue
		}
		pidText, _, _ := strings.Cut(strings.TrimPrefix(fields[0], nsPrefix), "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			continue // its test process may still be running
		}
		_ = exec.Command("ip", "netns", "del", fields[0]).Run()
	}
}

// binaries are the paths of the built sluice-proxy and demo app.
type binaries struct {
	proxy, app string
}

// buildBinaries builds sluice-proxy and the demo app once per test process,
// into a directory UID 2102 can read.
func buildBinaries(t *testing.T) binaries {
	t.Helper()
	buildOnce.Do(func() {
		gomod, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			buildErr = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(gomod)))
		dir, err := os.MkdirTemp("", "sluice-netns-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binDir = dir
		if err := os.Chmod(dir, 0o755); err != nil {
			buildErr = err
			return
		}
		for _, b := range []struct{ out, pkg string }{
			{"sluice-proxy", "./cmd/sluice-proxy"},
			{"sluice-demo-app", "./examples/app"},
		} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b.out), b.pkg)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binaries{proxy: filepath.Join(binDir, "sluice-proxy"), app: filepath.Join(binDir, "sluice-demo-app")}
}

// sharedTempDir is a t.TempDir() that UID 2102 can read (the proxy reads its
// configuration from there).
func sharedTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// run runs a command in the host namespace (only ip commands that manage our
// own namespaces go through here) and fails the test on error.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// netns is a network namespace this test created.
type netns struct {
	name string
}

// newNetns creates a namespace, deleted when the test ends (even if it fails),
// with a check that it is really gone.
func newNetns(t *testing.T, suffix string) *netns {
	t.Helper()
	name := fmt.Sprintf("%s%d-%s", nsPrefix, os.Getpid(), suffix)
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", name, err, out)
		}
		out, err := exec.Command("ip", "netns", "list").Output()
		if err != nil {
			t.Errorf("ip netns list: %v", err)
			return
		}
		for line := range strings.Lines(string(out)) {
			if f := strings.Fields(line); len(f) > 0 && f[0] == name {
				t.Errorf("namespace %s still listed after deletion", name)
			}
		}
	})
	ns := &netns{name: name}
	ns.run(t, "ip", "link", "set", "lo", "up")
	return ns
}

// command returns a command that runs inside the namespace.
func (ns *netns) command(name string, args ...string) *exec.Cmd {
	if ns == nil || ns.name == "" {
		panic("netns: no namespace; refusing to run in the host namespace")
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.name, name}, args...)...)
	// If the test process dies, so does the child (ip netns exec execs in place).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// run runs a command inside the namespace and returns its stdout; a failure
// fails the test with the command's output.
func (ns *netns) run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := ns.tryRun(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// tryRun runs a command inside the namespace; the error carries its stderr.
func (ns *netns) tryRun(name string, args ...string) (string, error) {
	cmd := ns.command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("in %s: %s %s: %v\nstdout: %s\nstderr: %s", ns.name, name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// process is a long-running program inside a namespace.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string        // file with its stdout and stderr
	done chan struct{} // closed when it has exited
	err  error         // its exit status, once done is closed
}

// start starts a program inside the namespace; it is stopped (SIGTERM, then
// SIGKILL) by its PID when the test ends, and its output is logged if the test
// failed.
func (ns *netns) start(t *testing.T, logDir, name string, env []string, argv ...string) *process {
	t.Helper()
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := ns.command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s in %s: %v", name, ns.name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("--- %s (pid %d) output:\n%s", name, cmd.Process.Pid, p.output())
		}
	})
	return p
}

func (p *process) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Errorf("%s (pid %d) did not stop on SIGTERM; killing it", p.name, p.cmd.Process.Pid)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *process) output() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// get runs the helper inside the namespace: count GETs of url (each on a new
// connection, retried until 200 for up to wait), returning the last status and
// body. While it runs, any of watch exiting fails the test with its output.
func (ns *netns) get(t *testing.T, url string, count int, wait time.Duration, watch ...*process) (int, string) {
	t.Helper()
	r := ns.request(t, helperRequest{url: url, count: count, wait: wait}, watch...)
	return r.status, r.body
}

// helperRequest is what the helper sends: count GETs of url (each on a new
// connection, retried until 200 for up to wait) with headers ("Host" sets
// the authority).
type helperRequest struct {
	url     string
	count   int
	wait    time.Duration
	headers map[string]string
}

// helperReply is the helper's last answer.
type helperReply struct {
	status     int
	proxyError string // its sluice-proxy-error header
	body       string
}

// request runs the helper inside the namespace as an application would (as
// root, so the init rules redirect it), failing the test if it could not
// get an answer. While it runs, any of watch exiting fails the test.
func (ns *netns) request(t *testing.T, req helperRequest, watch ...*process) helperReply {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return ns.helperGet(t, ns.command(self), req, watch)
}

// getAsProxyUID is get with the client running as the proxy's UID, whose
// connections the init rules never redirect outbound.
func (ns *netns) getAsProxyUID(t *testing.T, url string) (int, string) {
	t.Helper()
	self := helperCopy(t)
	uid := strconv.Itoa(proxyUID)
	cmd := ns.command("setpriv", "--reuid", uid, "--regid", uid, "--clear-groups", self)
	r := ns.helperGet(t, cmd, helperRequest{url: url, count: 1}, nil)
	return r.status, r.body
}

var (
	helperOnce sync.Once
	helperPath string
	helperErr  error
)

// helperCopy copies the test binary next to the built binaries, where UID
// 2102 may run it (go test's build directory is private to root).
func helperCopy(t *testing.T) string {
	t.Helper()
	buildBinaries(t) // creates binDir
	helperOnce.Do(func() {
		self, err := os.Executable()
		if err != nil {
			helperErr = err
			return
		}
		data, err := os.ReadFile(self)
		if err != nil {
			helperErr = err
			return
		}
		helperPath = filepath.Join(binDir, "netns-helper")
		helperErr = os.WriteFile(helperPath, data, 0o755)
	})
	if helperErr != nil {
		t.Fatalf("copying the test binary for UID %d: %v", proxyUID, helperErr)
	}
	return helperPath
}

// helperGet runs cmd, a command that starts the test binary, in helper mode.
func (ns *netns) helperGet(t *testing.T, cmd *exec.Cmd, req helperRequest, watch []*process) helperReply {
	t.Helper()
	url := req.url
	cmd.Env = append(os.Environ(), helperEnv+"=get", helperURLEnv+"="+url,
		helperCountEnv+"="+strconv.Itoa(req.count), helperWaitEnv+"="+req.wait.String())
	if len(req.headers) > 0 {
		h, err := json.Marshal(req.headers)
		if err != nil {
			t.Fatal(err)
		}
		cmd.Env = append(cmd.Env, helperHeadersEnv+"="+string(h))
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := make(chan struct{})
	defer close(stop)
	died := make(chan *process, len(watch))
	for _, p := range watch {
		go func() {
			select {
			case <-p.done:
				died <- p
			case <-stop:
			}
		}()
	}
	var waitErr error
	select {
	case waitErr = <-exited:
	case p := <-died:
		_ = cmd.Process.Kill()
		<-exited
		t.Fatalf("%s exited (%v) while waiting for %s:\n%s", p.name, p.err, url, p.output())
	}
	statusLine, body, _ := strings.Cut(stdout.String(), "\n")
	statusText, proxyError, _ := strings.Cut(statusLine, " ")
	status, _ := strconv.Atoi(statusText)
	if status == 0 {
		t.Fatalf("in %s: GET %s failed: %v\n%s", ns.name, url, waitErr, stderr.String())
	}
	return helperReply{status: status, proxyError: proxyError, body: body}
}

// scrape fetches a proxy's /metrics from inside its namespace.
func (ns *netns) scrape(t *testing.T, adminPort int) map[string]*dto.MetricFamily {
	t.Helper()
	status, body := ns.get(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", adminPort), 1, 0)
	if status != http.StatusOK {
		t.Fatalf("in %s: /metrics answered %d: %s", ns.name, status, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("in %s: parsing /metrics: %v\n%s", ns.name, err, body)
	}
	return fams
}

// sum adds the values of a counter's series whose labels include match.
func sum(fams map[string]*dto.MetricFamily, name string, match map[string]string) float64 {
	fam := fams[name]
	if fam == nil {
		return 0
	}
	var total float64
	for _, m := range fam.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		ok := true
		for k, v := range match {
			if labels[k] != v {
				ok = false
				break
			}
		}
		if ok && m.GetCounter() != nil {
			total += m.GetCounter().GetValue()
		}
	}
	return total
}

// decodeJSON decodes a response body into v, failing the test on error.
func decodeJSON(t *testing.T, body string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("response is not JSON: %v\n%s", err, body)
	}
}

// randomSubnet returns a random 10.a.b.0/30 (a in 64..254): two usable host
// addresses, existing only inside the test's namespaces.
func randomSubnet() (first, second string) {
	a, b := 64+rand.IntN(191), rand.IntN(256)
	return fmt.Sprintf("10.%d.%d.1", a, b), fmt.Sprintf("10.%d.%d.2", a, b)
}
