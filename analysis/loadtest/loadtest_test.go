package loadtest_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/analysis/loadtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if demoDir != "" {
			_ = os.RemoveAll(demoDir)
		}
		os.Exit(code)
	}))
}

// guard bounds every wait of these tests; it is a failure guard, not a
// timing assertion.
const guard = 60 * time.Second

// target is a local HTTP server counting requests per path, failing every
// failEvery-th request with a 500 when failEvery > 0.
type target struct {
	srv       *httptest.Server
	failEvery int64

	mu     sync.Mutex
	counts map[string]int
	last   map[string]*http.Request // by path
	body   map[string]string
	n      atomic.Int64
}

func newTarget(t *testing.T, failEvery int64) *target {
	tg := &target{counts: map[string]int{}, last: map[string]*http.Request{}, body: map[string]string{}, failEvery: failEvery}
	tg.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		tg.mu.Lock()
		tg.counts[r.URL.Path]++
		tg.last[r.URL.Path], tg.body[r.URL.Path] = r, string(b)
		tg.mu.Unlock()
		if n := tg.n.Add(1); tg.failEvery > 0 && n%tg.failEvery == 0 {
			http.Error(w, "injected", http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(tg.srv.Close)
	return tg
}

func (tg *target) count(path string) int {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return tg.counts[path]
}

func newTester(t *testing.T, opts loadtest.Options) *loadtest.Tester {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	lt := loadtest.New(opts)
	t.Cleanup(func() { _ = lt.Close() })
	return lt
}

func wait(t *testing.T, lt *loadtest.Tester, key string) loadtest.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	st, err := lt.Wait(ctx, key)
	if err != nil {
		t.Fatalf("waiting for %s: %v (status %+v)", key, err, st)
	}
	return st
}

// TestRate checks that a rate-limited load sends about rate×duration
// requests: never more than the pacer allows (one more than rate×duration),
// and not starved.
func TestRate(t *testing.T) {
	tg := newTarget(t, 0)
	lt := newTester(t, loadtest.Options{})
	ctx := context.Background()
	for _, tc := range []struct {
		name        string
		rate        float64
		concurrency int
		duration    time.Duration
	}{
		{"one worker", 20, 1, time.Second},
		{"four workers", 40, 4, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := "test/" + strings.ReplaceAll(tc.name, " ", "-")
			path := "/" + key
			out, err := lt.Start(ctx, key, loadtest.Spec{URL: tg.srv.URL + path, Rate: tc.rate, Concurrency: tc.concurrency, Duration: tc.duration})
			if err != nil || out != loadtest.Started {
				t.Fatalf("Start = %v, %v", out, err)
			}
			st := wait(t, lt, key)
			want := tc.rate * tc.duration.Seconds()
			if st.State != loadtest.Finished {
				t.Errorf("state %s, want finished", st.State)
			}
			// At most one token per interval over the time the run really took
			// (its end can come late on a loaded machine).
			ran := st.Ended.Sub(st.Started)
			if got := float64(st.Requests); got > 1+tc.rate*ran.Seconds() || got < want/4 {
				t.Errorf("%v requests at %v/s in %v (for %v), want at most %v and not far below %v", got, tc.rate, ran, tc.duration, 1+tc.rate*ran.Seconds(), want)
			}
			// The run's end cuts the requests in flight (at most one per
			// worker): the server may have seen them, Requests counts completed ones.
			if n := uint64(tg.count(path)); n < st.Requests || n > st.Requests+uint64(tc.concurrency) {
				t.Errorf("server saw %d requests, status says %d (+ at most %d cut in flight)", n, st.Requests, tc.concurrency)
			}
			if st.Errors != 0 || st.Codes["200"] != st.Requests {
				t.Errorf("errors %d codes %v", st.Errors, st.Codes)
			}
			if st.Latency.Max <= 0 || st.Latency.P50 > st.Latency.Max || st.Latency.P99 < st.Latency.P50 {
				t.Errorf("latency %+v", st.Latency)
			}
		})
	}
}

// TestRequestsAndErrors sends a fixed count at full speed to a server that
// fails every fourth request.
func TestRequestsAndErrors(t *testing.T) {
	tg := newTarget(t, 4)
	lt := newTester(t, loadtest.Options{})
	_, err := lt.Start(context.Background(), "test/count", loadtest.Spec{
		URL: tg.srv.URL + "/echo?x=1", Method: "post", Concurrency: 3, Requests: 40,
		Headers: map[string]string{"X-Canary": "yes"}, Body: `{"hello":"world"}`, Host: "podinfo.test",
	})
	if err != nil {
		t.Fatal(err)
	}
	st := wait(t, lt, "test/count")
	if st.Requests != 40 || tg.count("/echo") != 40 {
		t.Errorf("requests %d (server %d), want 40", st.Requests, tg.count("/echo"))
	}
	if st.Errors != 10 || st.Codes["500"] != 10 || st.Codes["200"] != 30 {
		t.Errorf("errors %d codes %v, want 10 errors of 40", st.Errors, st.Codes)
	}
	if !strings.Contains(st.LastError, "500") {
		t.Errorf("last error %q", st.LastError)
	}
	tg.mu.Lock()
	defer tg.mu.Unlock()
	if r, body := tg.last["/echo"], tg.body["/echo"]; r.Method != "POST" || r.Host != "podinfo.test" || r.Header.Get("X-Canary") != "yes" || body != `{"hello":"world"}` || r.URL.RawQuery != "x=1" {
		t.Errorf("request %s %s host %s headers %v body %q", r.Method, r.URL, r.Host, r.Header, body)
	}
}

// TestDedup: the same load again is left alone; a different one replaces
// it; after it finished, it starts again.
func TestDedup(t *testing.T) {
	tg := newTarget(t, 0)
	lt := newTester(t, loadtest.Options{})
	ctx := context.Background()
	spec := loadtest.Spec{URL: tg.srv.URL + "/a", Rate: 50, Duration: time.Minute}
	steps := []struct {
		spec loadtest.Spec
		want loadtest.Outcome
	}{
		{spec, loadtest.Started},
		{spec, loadtest.AlreadyRunning},
		// Equal once normalized: the defaults written out.
		{loadtest.Spec{Kind: "http", URL: tg.srv.URL + "/a", Method: "get", Rate: 50, Duration: time.Minute, Concurrency: 1, Timeout: loadtest.DefaultTimeout}, loadtest.AlreadyRunning},
		{loadtest.Spec{URL: tg.srv.URL + "/b", Rate: 50, Duration: time.Minute}, loadtest.Replaced},
	}
	for i, s := range steps {
		out, err := lt.Start(ctx, "test/podinfo", s.spec)
		if err != nil || out != s.want {
			t.Fatalf("step %d: Start = %q, %v; want %q", i, out, err, s.want)
		}
	}
	st, _ := lt.Status("test/podinfo")
	if st.Runs != 2 || st.State != loadtest.Running || !strings.HasSuffix(st.Spec.URL, "/b") {
		t.Errorf("after replace: runs %d state %s url %s", st.Runs, st.State, st.Spec.URL)
	}
	// The replaced load has stopped: /a gets nothing more once /b's load
	// is done.
	aAfterReplace := tg.count("/a")

	// Concurrent ticks for one canary start one load.
	var wg sync.WaitGroup
	outcomes := make(chan loadtest.Outcome, 8)
	c := loadtest.Spec{URL: tg.srv.URL + "/c", Rate: 50, Duration: time.Minute}
	for range 8 {
		wg.Go(func() {
			out, err := lt.Start(ctx, "test/concurrent", c)
			if err != nil {
				t.Error(err)
			}
			outcomes <- out
		})
	}
	wg.Wait()
	close(outcomes)
	started := 0
	for o := range outcomes {
		if o == loadtest.Started {
			started++
		} else if o != loadtest.AlreadyRunning {
			t.Errorf("concurrent start: %q", o)
		}
	}
	if started != 1 {
		t.Errorf("%d concurrent starts started a load, want 1", started)
	}
	// While /c, at the same rate, gets ten requests, a load still running on
	// /a would send about as many; the one request the replace may have cut
	// in flight can still arrive.
	deadline := time.Now().Add(guard)
	for tg.count("/c") < 10 {
		if time.Now().After(deadline) {
			t.Fatal("the load on /c sent fewer than 10 requests")
		}
		time.Sleep(5 * time.Millisecond)
	}

	if !lt.Stop("test/podinfo") {
		t.Error("Stop: no load was running")
	}
	if got := tg.count("/a"); got > aAfterReplace+1 {
		t.Errorf("the replaced load sent %d more requests", got-aAfterReplace)
	}

	// A finished load starts again at the next tick.
	short := loadtest.Spec{URL: tg.srv.URL + "/d", Requests: 3}
	if out, err := lt.Start(ctx, "test/short", short); err != nil || out != loadtest.Started {
		t.Fatalf("Start = %q, %v", out, err)
	}
	wait(t, lt, "test/short")
	if out, err := lt.Start(ctx, "test/short", short); err != nil || out != loadtest.Started {
		t.Fatalf("restart after finishing: %q, %v", out, err)
	}
	st = wait(t, lt, "test/short")
	if st.Runs != 2 || st.Requests != 3 || tg.count("/d") != 6 {
		t.Errorf("second run: runs %d requests %d, server %d", st.Runs, st.Requests, tg.count("/d"))
	}
}

// TestStop: Stop ends a load at once and nothing more is sent; StopAll ends
// every load; Close refuses new ones.
func TestStop(t *testing.T) {
	tg := newTarget(t, 0)
	lt := newTester(t, loadtest.Options{})
	ctx := context.Background()
	for _, k := range []string{"test/one", "test/two"} {
		if _, err := lt.Start(ctx, k, loadtest.Spec{URL: tg.srv.URL + "/" + k, Rate: 100, Concurrency: 2, Duration: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	// Let the first load send something, then stop it.
	deadline := time.Now().Add(guard)
	for tg.count("/test/one") < 3 {
		if time.Now().After(deadline) {
			t.Fatal("no requests from the load")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !lt.Stop("test/one") {
		t.Fatal("Stop: not running")
	}
	if lt.Stop("test/one") {
		t.Error("second Stop: still running")
	}
	if lt.Stop("test/nothing") {
		t.Error("Stop of an unknown key reported a load")
	}
	st, ok := lt.Status("test/one")
	if !ok || st.State != loadtest.Stopped || st.Ended.IsZero() {
		t.Errorf("after Stop: %+v", st)
	}
	// Requests counts completed requests; Stop cuts the ones in flight (at most
	// one per worker), which the server may have seen, or may still see.
	const inFlight = 2 // the Concurrency above
	if got := uint64(tg.count("/test/one")); got < st.Requests || got > st.Requests+inFlight {
		t.Errorf("server saw %d, status %d (+ at most %d cut in flight)", got, st.Requests, inFlight)
	}
	// Nothing more is sent: while test/two, at the same rate, sends ten more
	// requests, test/one would have sent about as many.
	twoAtStop := tg.count("/test/two")
	deadline = time.Now().Add(guard)
	for tg.count("/test/two") < twoAtStop+10 {
		if time.Now().After(deadline) {
			t.Fatal("test/two stopped sending too")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := uint64(tg.count("/test/one")); got > st.Requests+inFlight {
		t.Errorf("%d requests after Stop", got-st.Requests-inFlight)
	}

	if keys := lt.StopAll(); strings.Join(keys, ",") != "test/two" {
		t.Errorf("StopAll = %v, want [test/two]", keys)
	}
	all := lt.Statuses()
	if len(all) != 2 || all[0].Key != "test/one" || all[1].State != loadtest.Stopped {
		t.Errorf("Statuses = %+v", all)
	}

	if err := lt.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := lt.Start(ctx, "test/late", loadtest.Spec{URL: tg.srv.URL, Requests: 1}); !errors.Is(err, loadtest.ErrClosed) {
		t.Errorf("Start after Close: %v", err)
	}
}

// TestMaxDuration: the tester's cap ends a load that asks for longer.
func TestMaxDuration(t *testing.T) {
	tg := newTarget(t, 0)
	lt := newTester(t, loadtest.Options{MaxDuration: 200 * time.Millisecond, MaxConcurrency: 4})
	ctx := context.Background()
	if _, err := lt.Start(ctx, "test/long", loadtest.Spec{URL: tg.srv.URL, Rate: 50, Duration: 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	st := wait(t, lt, "test/long")
	if st.State != loadtest.Finished || st.Spec.Duration != 200*time.Millisecond {
		t.Errorf("state %s duration %v", st.State, st.Spec.Duration)
	}
	// The rate bounds the count over the time the run really took: on a loaded
	// machine the end of its 200 ms can come late, and the pacer's tokens with it.
	if ran := st.Ended.Sub(st.Started); float64(st.Requests) > 1+50*ran.Seconds() {
		t.Errorf("%d requests in %v at 50/s", st.Requests, ran)
	}
	// A count without a duration is bounded by the cap too.
	if _, err := lt.Start(ctx, "test/count", loadtest.Spec{URL: tg.srv.URL, Rate: 10, Requests: 1000000}); err != nil {
		t.Fatal(err)
	}
	if st := wait(t, lt, "test/count"); float64(st.Requests) > 1+10*st.Ended.Sub(st.Started).Seconds() || st.Requests > 100 {
		t.Errorf("%d requests in %v at 10/s", st.Requests, st.Ended.Sub(st.Started))
	}
	if _, err := lt.Start(ctx, "test/wide", loadtest.Spec{URL: tg.srv.URL, Concurrency: 5}); !errors.Is(err, loadtest.ErrInvalid) || !strings.Contains(err.Error(), "concurrency 5 is above the maximum 4") {
		t.Errorf("too many workers: %v", err)
	}
}

func TestInvalid(t *testing.T) {
	lt := newTester(t, loadtest.Options{})
	for _, tc := range []struct {
		spec loadtest.Spec
		want string
	}{
		{loadtest.Spec{}, "url is empty"},
		{loadtest.Spec{URL: "podinfo:9898"}, "is not an absolute http or https URL"},
		{loadtest.Spec{Kind: "udp", URL: "x"}, `kind "udp" is neither http nor grpc`},
		{loadtest.Spec{URL: "http://x", Rate: -1, Concurrency: -2, Requests: -3, Duration: -time.Second}, "rate -1 is negative"},
		{loadtest.Spec{Kind: "grpc", URL: "x:1"}, "method (the gRPC method, package.Service/Method) is empty"},
		{loadtest.Spec{Kind: "grpc", URL: "x:1", Method: "UnaryCall"}, `method "UnaryCall" is not package.Service/Method`},
		{loadtest.Spec{URL: "http://x", TLS: true}, "tls applies to grpc loads"},
	} {
		_, err := lt.Start(context.Background(), "test/x", tc.spec)
		if !errors.Is(err, loadtest.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Start(%+v) = %v, want %q", tc.spec, err, tc.want)
		}
	}
	if _, err := lt.Start(context.Background(), "", loadtest.Spec{URL: "http://x"}); !errors.Is(err, loadtest.ErrInvalid) {
		t.Errorf("empty key: %v", err)
	}
}
