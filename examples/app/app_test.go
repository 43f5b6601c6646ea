package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/websocket"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testConfig is a config for a test app on a loopback port chosen by the OS.
func testConfig(name, version string) config {
	return config{
		Name: name, Version: version, Pod: name + "-pod",
		Listen: "127.0.0.1:0", Seed: 1, ShutdownTimeout: 5 * time.Second,
	}
}

// testApp is a running app and the URL it answers on.
type testApp struct {
	*app
	url  string
	addr string
}

// startApp runs an app until the test ends. setup, if not nil, may change
// the app (its sleep hook) before it serves.
func startApp(t *testing.T, cfg config, setup func(*app)) *testApp {
	t.Helper()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	a := newApp(cfg, slog.New(slog.DiscardHandler))
	if setup != nil {
		setup(a)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &testApp{app: a, url: "http://" + ln.Addr().String(), addr: ln.Addr().String()}
}

// newClient returns an HTTP/1.1 client whose connections are closed when the
// test ends.
func newClient(t *testing.T) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 4}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// newH2CClient returns a client speaking HTTP/2 with prior knowledge.
func newH2CClient(t *testing.T) *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

type response struct {
	status int
	header http.Header
	body   []byte
	te     []string
	proto  string
}

func do(t *testing.T, c *http.Client, method, url string, body io.Reader, hdr map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return response{resp.StatusCode, resp.Header, b, resp.TransferEncoding, resp.Proto}
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decoding %q: %v", b, err)
	}
	return v
}

func TestHTTPEndpoints(t *testing.T) {
	srv := startApp(t, testConfig("web", "v7"), nil)
	tests := []struct {
		name   string
		method string
		path   string
		body   string
		header map[string]string
		status int
		check  func(t *testing.T, r response)
	}{
		{
			name: "root", method: "GET", path: "/", status: 200,
			check: func(t *testing.T, r response) {
				got := decode[identity](t, r.body)
				if want := (identity{"web", "v7", "web-pod"}); got != want {
					t.Errorf("GET / = %+v, want %+v", got, want)
				}
				if ct := r.header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q", ct)
				}
			},
		},
		{name: "unknown path", method: "GET", path: "/nope", status: 404},
		{name: "root rejects POST", method: "POST", path: "/", status: 405},
		{
			name: "healthz", method: "GET", path: "/healthz", status: 200,
			check: func(t *testing.T, r response) {
				if string(r.body) != "ok\n" {
					t.Errorf("body = %q", r.body)
				}
			},
		},
		{
			name: "echo GET", method: "GET", path: "/echo?a=1", body: "hello", status: 200,
			header: map[string]string{"X-Test": "yes"},
			check: func(t *testing.T, r response) {
				got := decode[echoReply](t, r.body)
				if got.Method != "GET" || got.Path != "/echo" || got.Query != "a=1" || got.Body != "hello" ||
					got.Headers.Get("X-Test") != "yes" || got.Version != "v7" {
					t.Errorf("echo = %+v", got)
				}
			},
		},
		{
			name: "echo PUT describes the request", method: "PUT", path: "/echo", body: "x", status: 200,
			check: func(t *testing.T, r response) {
				if got := decode[echoReply](t, r.body); got.Method != "PUT" || got.Body != "x" {
					t.Errorf("echo = %+v", got)
				}
			},
		},
		{
			name: "echo POST returns the body", method: "POST", path: "/echo", body: `{"k":"v"}`, status: 200,
			header: map[string]string{"Content-Type": "application/x-test"},
			check: func(t *testing.T, r response) {
				if string(r.body) != `{"k":"v"}` {
					t.Errorf("body = %q", r.body)
				}
				if ct := r.header.Get("Content-Type"); ct != "application/x-test" {
					t.Errorf("Content-Type = %q", ct)
				}
			},
		},
		{name: "status 418", method: "GET", path: "/status/418", status: 418},
		{name: "status 503", method: "GET", path: "/status/503", status: 503},
		{name: "status 204", method: "GET", path: "/status/204", status: 204},
		{name: "status not a number", method: "GET", path: "/status/abc", status: 400},
		{name: "status out of range", method: "GET", path: "/status/99", status: 400},
		{
			name: "delay", method: "GET", path: "/delay/1ms", status: 200,
			check: func(t *testing.T, r response) {
				if got := decode[map[string]string](t, r.body); got["delay"] != "1ms" {
					t.Errorf("delay = %v", got)
				}
			},
		},
		{
			name: "delay in seconds", method: "GET", path: "/delay/0.001", status: 200,
			check: func(t *testing.T, r response) {
				if got := decode[map[string]string](t, r.body); got["delay"] != "1ms" {
					t.Errorf("delay = %v", got)
				}
			},
		},
		{name: "delay bad", method: "GET", path: "/delay/soon", status: 400},
		{name: "delay negative", method: "GET", path: "/delay/-1s", status: 400},
		{
			name: "stream", method: "GET", path: "/stream?n=5", status: 200,
			check: func(t *testing.T, r response) {
				if r.proto == "HTTP/1.1" && !slices.Contains(r.te, "chunked") {
					t.Errorf("Transfer-Encoding = %v, want chunked", r.te)
				}
				lines := strings.Split(strings.TrimSpace(string(r.body)), "\n")
				if len(lines) != 5 {
					t.Fatalf("got %d lines, want 5: %q", len(lines), r.body)
				}
				for i, l := range lines {
					if want := fmt.Sprintf(`{"line":%d,"version":"v7"}`, i); l != want {
						t.Errorf("line %d = %q, want %q", i, l, want)
					}
				}
			},
		},
		{name: "stream bad n", method: "GET", path: "/stream?n=x", status: 400},
		{name: "stream bad interval", method: "GET", path: "/stream?interval=1h", status: 400},
	}
	clients := map[string]*http.Client{"http1": newClient(t), "h2c": newH2CClient(t)}
	for cname, c := range clients {
		for _, tc := range tests {
			t.Run(cname+"/"+tc.name, func(t *testing.T) {
				var body io.Reader
				if tc.body != "" {
					body = strings.NewReader(tc.body)
				}
				r := do(t, c, tc.method, srv.url+tc.path, body, tc.header)
				if r.status != tc.status {
					t.Fatalf("%s %s: status %d, want %d (body %q)", tc.method, tc.path, r.status, tc.status, r.body)
				}
				if wantProto := map[string]int{"http1": 1, "h2c": 2}[cname]; !strings.HasPrefix(r.proto, fmt.Sprintf("HTTP/%d", wantProto)) {
					t.Errorf("proto = %s, want HTTP/%d", r.proto, wantProto)
				}
				if v := r.header.Get("X-Version"); v != "v7" {
					t.Errorf("x-version = %q, want v7", v)
				}
				if tc.check != nil {
					tc.check(t, r)
				}
			})
		}
	}
}

func TestStreamFlushesEachLine(t *testing.T) {
	// The sleep hook holds the stream between lines, so each line must reach
	// the client before the next is written: only a flush can deliver it.
	gate := make(chan struct{})
	srv := startApp(t, testConfig("web", "v1"), func(a *app) {
		a.sleep = func(ctx context.Context, _ time.Duration) error {
			select {
			case <-gate:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	})
	resp, err := newClient(t).Get(srv.url + "/stream?n=3&interval=1s")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if want := fmt.Sprintf("{\"line\":%d,\"version\":\"v1\"}\n", i); line != want {
			t.Fatalf("line %d = %q, want %q", i, line, want)
		}
		if i < 2 {
			gate <- struct{}{} // release the next line only after this one arrived
		}
	}
}

func TestWebSocketEcho(t *testing.T) {
	srv := startApp(t, testConfig("web", "v1"), nil)
	ws, err := websocket.Dial("ws://"+srv.addr+"/ws", "", "http://"+srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	for _, m := range []wsMessage{
		{[]byte("hello"), websocket.TextFrame},
		{[]byte{0, 1, 2, 255}, websocket.BinaryFrame},
		{bytes.Repeat([]byte("x"), 100_000), websocket.BinaryFrame},
	} {
		if err := wsCodec.Send(ws, m); err != nil {
			t.Fatal(err)
		}
		var got wsMessage
		if err := wsCodec.Receive(ws, &got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.data, m.data) || got.payloadType != m.payloadType {
			t.Errorf("echo of %d bytes type %d = %d bytes type %d", len(m.data), m.payloadType, len(got.data), got.payloadType)
		}
	}
}

func TestErrorRate(t *testing.T) {
	const n = 2000
	tests := []struct {
		rate     float64
		min, max int // accepted count of 500s: about ±5 standard deviations
	}{
		{0, 0, 0},
		{0.1, 135, 265},
		{0.5, 890, 1110},
		{1, n, n},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.rate), func(t *testing.T) {
			cfg := testConfig("web", "v1")
			cfg.ErrorRate = tc.rate
			cfg.Seed = 42
			srv := startApp(t, cfg, nil)
			c := newClient(t)
			failed := 0
			for range n {
				r := do(t, c, "GET", srv.url+"/", nil, nil)
				switch r.status {
				case 200:
				case 500:
					failed++
					if got := decode[map[string]string](t, r.body); got["error"] != "injected failure" || got["version"] != "v1" {
						t.Fatalf("500 body = %s", r.body)
					}
				default:
					t.Fatalf("status %d", r.status)
				}
			}
			if failed < tc.min || failed > tc.max {
				t.Errorf("error rate %v: %d of %d failed, want %d..%d", tc.rate, failed, n, tc.min, tc.max)
			}
		})
	}
}

func TestErrorRateIsReproducibleWithSeed(t *testing.T) {
	pattern := func(seed uint64) []bool {
		f := newFaults(0.5, 0, 0, seed)
		out := make([]bool, 200)
		for i := range out {
			_, out[i] = f.decide()
		}
		return out
	}
	if a, b := pattern(7), pattern(7); !slices.Equal(a, b) {
		t.Error("same seed gave different failure sequences")
	}
	if a, b := pattern(7), pattern(8); slices.Equal(a, b) {
		t.Error("different seeds gave the same failure sequence")
	}
}

func TestLatencyInjection(t *testing.T) {
	cfg := testConfig("web", "v1")
	cfg.Latency = 300 * time.Millisecond
	cfg.LatencyJitter = 50 * time.Millisecond
	var mu sync.Mutex
	var slept []time.Duration
	srv := startApp(t, cfg, func(a *app) {
		a.sleep = func(ctx context.Context, d time.Duration) error {
			mu.Lock()
			slept = append(slept, d)
			mu.Unlock()
			return nil
		}
	})
	c := newClient(t)
	for _, path := range []string{"/", "/echo", "/", "/healthz", "/status/200"} {
		if r := do(t, c, "GET", srv.url+path, nil, nil); r.status != 200 {
			t.Fatalf("GET %s: %d", path, r.status)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(slept) != 3 {
		t.Fatalf("sleep called %d times (%v), want 3: GET /, /echo, / (not /healthz, /status)", len(slept), slept)
	}
	for _, d := range slept {
		if d < cfg.Latency || d >= cfg.Latency+cfg.LatencyJitter {
			t.Errorf("injected delay %v outside [%v, %v)", d, cfg.Latency, cfg.Latency+cfg.LatencyJitter)
		}
	}
}

func TestSleepCtxStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := sleepCtx(ctx, time.Hour); err != context.Canceled {
		t.Errorf("sleepCtx on a cancelled context = %v, want context.Canceled", err)
	}
	if err := sleepCtx(context.Background(), 0); err != nil {
		t.Errorf("sleepCtx(0) = %v", err)
	}
}

func TestFrontendCallsBackend(t *testing.T) {
	backend := startApp(t, testConfig("backend", "v2"), nil)
	failing := testConfig("backend", "v3")
	failing.ErrorRate = 1
	failingBackend := startApp(t, failing, nil)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := closed.Addr().String()
	closed.Close()

	tests := []struct {
		name          string
		backend       string
		status        int
		backendStatus int
		backendID     *identity
	}{
		{"ok", backend.addr, 200, 200, &identity{"backend", "v2", "backend-pod"}},
		{"backend fails", failingBackend.url, 502, 500, &identity{"backend", "v3", "backend-pod"}},
		{"backend down", deadAddr, 502, 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig("frontend", "v1")
			cfg.Backend, err = backendURL(tc.backend)
			if err != nil {
				t.Fatal(err)
			}
			front := startApp(t, cfg, nil)
			r := do(t, newClient(t), "GET", front.url+"/", nil, nil)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			type answer struct {
				identity
				Backend       *identity `json:"backend"`
				BackendStatus int       `json:"backend_status"`
				Error         string    `json:"error"`
			}
			got := decode[answer](t, r.body)
			if got.identity != (identity{"frontend", "v1", "frontend-pod"}) {
				t.Errorf("frontend identity = %+v", got.identity)
			}
			if got.BackendStatus != tc.backendStatus {
				t.Errorf("backend_status = %d, want %d", got.BackendStatus, tc.backendStatus)
			}
			if (got.Backend == nil) != (tc.backendID == nil) || (got.Backend != nil && *got.Backend != *tc.backendID) {
				t.Errorf("backend = %+v, want %+v", got.Backend, tc.backendID)
			}
			if (tc.status != 200) != (got.Error != "") {
				t.Errorf("error = %q", got.Error)
			}
		})
	}
}

func TestFrontendPropagatesHeaders(t *testing.T) {
	seen := make(chan http.Header, 1)
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		io.WriteString(w, "plain text")
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go backend.Serve(ln)
	defer backend.Close()

	cfg := testConfig("frontend", "v1")
	cfg.Backend = "http://" + ln.Addr().String()
	front := startApp(t, cfg, nil)
	r := do(t, newClient(t), "GET", front.url+"/", nil, map[string]string{
		"X-Canary": "insider", "Traceparent": "00-abc-def-01", "X-Forwarded-For": "1.2.3.4", "Cookie": "a=b",
	})
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	h := <-seen
	if h.Get("X-Canary") != "insider" || h.Get("Traceparent") != "00-abc-def-01" {
		t.Errorf("backend did not get propagated headers: %v", h)
	}
	if h.Get("X-Forwarded-For") != "" || h.Get("Cookie") != "" {
		t.Errorf("backend got headers that should not be propagated: %v", h)
	}
	if got := decode[map[string]any](t, r.body); got["backend"] != "plain text" {
		t.Errorf("non-JSON backend answer = %#v, want a JSON string", got["backend"])
	}
}

func TestGracefulShutdownDrainsInFlight(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := newApp(testConfig("web", "v1"), slog.New(slog.DiscardHandler))
	a.sleep = func(ctx context.Context, _ time.Duration) error {
		close(entered)
		<-release
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.serve(ctx, ln) }()

	c := newClient(t)
	got := make(chan response, 1)
	go func() {
		req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/delay/5s", nil)
		resp, err := c.Do(req)
		if err != nil {
			got <- response{status: -1, body: []byte(err.Error())}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- response{status: resp.StatusCode, body: b}
	}()
	select {
	case <-entered:
	case r := <-got:
		t.Fatalf("request finished before reaching the delay: %d %s", r.status, r.body)
	case <-time.After(30 * time.Second):
		t.Fatal("request never reached the delay")
	}
	cancel()
	// Shutdown closes the listener first: wait for that, then let the
	// in-flight request finish.
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
		if err != nil {
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatal("listener still accepting after shutdown began")
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	if r := <-got; r.status != 200 {
		t.Errorf("in-flight request: status %d (%s), want 200", r.status, r.body)
	}
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
}
