package loadtest_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/analysis/loadtest"
)

var (
	demoOnce sync.Once
	demoBin  string
	demoDir  string
	demoErr  error
)

// buildDemo builds examples/app once per test binary (TestMain removes it).
// The app is a main package with no constructor to call in process.
func buildDemo(t *testing.T) string {
	t.Helper()
	demoOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sluice-loadtest-demo-")
		if err != nil {
			demoErr = err
			return
		}
		demoDir = dir
		demoBin = filepath.Join(dir, "demo-app")
		cmd := exec.Command("go", "build", "-o", demoBin, "../../examples/app")
		out, err := cmd.CombinedOutput()
		if err != nil {
			demoErr = errors.New("go build ../../examples/app: " + err.Error() + "\n" + string(out))
		}
	})
	if demoErr != nil {
		t.Fatal(demoErr)
	}
	return demoBin
}

// startDemo runs the demo app on a loopback port with the given flags and
// returns its host:port.
func startDemo(t *testing.T, args ...string) string {
	t.Helper()
	bin := buildDemo(t)
	cmd := exec.Command(bin, append([]string{"--listen", "127.0.0.1:0", "--shutdown-timeout", "1s"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	addrc := make(chan string, 1)
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stderr)
		re := regexp.MustCompile(`msg=serving .*addr=(127\.0\.0\.1:\d+)`)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				addrc <- m[1]
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(guard):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	select {
	case addr := <-addrc:
		return addr
	case <-exited:
		t.Fatal("demo app exited before serving")
	case <-time.After(guard):
		t.Fatal("demo app did not report its address")
	}
	return ""
}

// TestGRPC loads the demo app's grpc.testing.TestService/UnaryCall (a
// descriptor linked into Sluice) and grpc.health.v1.Health/Check (resolved
// through the app's server reflection), with the app failing a quarter of
// its UnaryCalls.
func TestGRPC(t *testing.T) {
	addr := startDemo(t, "--error-rate", "0.25", "--seed", "7")
	lt := newTester(t, loadtest.Options{})
	ctx := context.Background()

	_, err := lt.Start(ctx, "test/unary", loadtest.Spec{
		Kind: loadtest.GRPC, URL: addr, Method: "grpc.testing.TestService.UnaryCall",
		Body: `{"responseSize": 16, "payload": {"body": "aGVsbG8="}}`, Concurrency: 4, Requests: 60,
		Headers: map[string]string{"X-Canary": "always"},
	})
	if err != nil {
		t.Fatal(err)
	}
	st := wait(t, lt, "test/unary")
	if st.Requests != 60 || st.State != loadtest.Finished {
		t.Fatalf("requests %d state %s, want 60 finished (%+v)", st.Requests, st.State, st)
	}
	if st.Errors == 0 || st.Errors >= 40 || st.Codes["Internal"] != st.Errors || st.Codes["OK"] != 60-st.Errors {
		t.Errorf("errors %d codes %v: want some Internal failures (error rate 0.25) and the rest OK", st.Errors, st.Codes)
	}
	if !strings.Contains(st.LastError, "Internal: injected failure") {
		t.Errorf("last error %q", st.LastError)
	}
	if st.Spec.Method != "grpc.testing.TestService/UnaryCall" {
		t.Errorf("method normalized to %q", st.Spec.Method)
	}

	// Health is not linked into this binary: it is found by reflection.
	_, err = lt.Start(ctx, "test/health", loadtest.Spec{Kind: loadtest.GRPC, URL: "grpc://" + addr, Method: "grpc.health.v1.Health/Check", Requests: 10, Rate: 100})
	if err != nil {
		t.Fatal(err)
	}
	if st := wait(t, lt, "test/health"); st.Requests != 10 || st.Errors != 0 || st.Codes["OK"] != 10 {
		t.Errorf("health: %+v", st)
	}

	for _, tc := range []struct {
		spec    loadtest.Spec
		invalid bool
		want    string
	}{
		{loadtest.Spec{Kind: loadtest.GRPC, URL: addr, Method: "grpc.testing.TestService/NoSuchCall", Requests: 1}, false,
			"service grpc.testing.TestService has no method NoSuchCall (it has EmptyCall, UnaryCall"},
		{loadtest.Spec{Kind: loadtest.GRPC, URL: addr, Method: "no.such.Service/Call", Requests: 1}, false,
			"grpc method no.such.Service/Call: resolving it through server reflection"},
		{loadtest.Spec{Kind: loadtest.GRPC, URL: addr, Method: "grpc.testing.TestService/FullDuplexCall", Requests: 1}, false,
			"is streaming; only unary methods"},
		{loadtest.Spec{Kind: loadtest.GRPC, URL: addr, Method: "grpc.testing.TestService/UnaryCall", Body: `{"nope": 1}`, Requests: 1}, true,
			"body is not a grpc.testing.SimpleRequest in JSON"},
	} {
		_, err := lt.Start(ctx, "test/bad", tc.spec)
		if err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, loadtest.ErrInvalid) != tc.invalid {
			t.Errorf("Start(%s) = %v, want %q (invalid %v)", tc.spec.Method, err, tc.want, tc.invalid)
		}
	}
}
