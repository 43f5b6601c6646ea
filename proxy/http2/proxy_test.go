package http2

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/proxy/dispatch"
)

// TestUnaryWithTrailers forwards a request with a body and a response with
// headers, a body and trailers, keeping the authority, path and query.
func TestUnaryWithTrailers(t *testing.T) {
	type seen struct{ host, uri, body, header string }
	got := make(chan seen, 1)
	backend, _ := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Host, r.RequestURI, string(b), r.Header.Get("X-Client")}
		w.Header().Set("Trailer", "X-Checksum")
		w.Header().Set("X-Backend", "one")
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "echo:"+string(b))
		w.Header().Set("X-Checksum", "abc")
		w.Header().Set(http.TrailerPrefix+"X-Late", "undeclared")
	}))
	p := startProxy(t, []routetable.Service{service("echo", []string{backend})})
	c := h2cClient(t)

	req, _ := http.NewRequest("POST", "http://"+p.addr+"/a/b?q=1&r=%20", strings.NewReader("hello"))
	req.Host = "echo.example:8080"
	req.Header.Set("X-Client", "c1")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	if resp.StatusCode != 200 || string(body) != "echo:hello" {
		t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, "echo:hello")
	}
	if h := resp.Header.Get("X-Backend"); h != "one" {
		t.Errorf("X-Backend = %q, want one", h)
	}
	if v := resp.Trailer.Get("X-Checksum"); v != "abc" {
		t.Errorf("declared trailer X-Checksum = %q, want abc (trailers %v)", v, resp.Trailer)
	}
	if v := resp.Trailer.Get("X-Late"); v != "undeclared" {
		t.Errorf("undeclared trailer X-Late = %q, want undeclared (trailers %v)", v, resp.Trailer)
	}
	s := <-got
	want := seen{"echo.example:8080", "/a/b?q=1&r=%20", "hello", "c1"}
	if s != want {
		t.Errorf("backend saw %+v, want %+v", s, want)
	}
}

// TestFullDuplexStreaming proves that neither direction is buffered: the
// client sends one chunk at a time and waits for its echo before sending the
// next, which deadlocks if the proxy waits for the whole request or response.
func TestFullDuplexStreaming(t *testing.T) {
	backend, _ := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		rc := http.NewResponseController(w)
		_ = rc.EnableFullDuplex()
		_ = rc.Flush()
		buf := make([]byte, 1024)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return
				}
				_ = rc.Flush()
			}
			if err != nil {
				return
			}
		}
	}))
	p := startProxy(t, []routetable.Service{service("duplex", []string{backend})})
	c := h2cClient(t)

	pr, pw := io.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+p.addr+"/echo", pr)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	defer resp.Body.Close()
	for i := range 20 {
		msg := fmt.Sprintf("ping %02d;", i)
		if _, err := pw.Write([]byte(msg)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(resp.Body, got); err != nil {
			t.Fatalf("echo %d: %v (the proxy is buffering?)", i, err)
		}
		if string(got) != msg {
			t.Fatalf("echo %d = %q, want %q", i, got, msg)
		}
	}
	pw.Close()
	if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
		t.Fatalf("after close: %q, %v", rest, err)
	}
}

// pattern is a deterministic, non-repeating-at-small-scale byte stream of n
// bytes: it repeats only every len(patternCycle) bytes, an odd length, so no
// frame or buffer size lines up with it and a lost, doubled or reordered chunk
// changes the checksum.
type pattern struct{ off, n int64 }

// patternCycle is computed once: Read only copies from it, which keeps the
// test's own work small next to the proxy's under the race detector (a byte
// loop over 3×64 MiB took seconds of the test's CPU there).
var patternCycle = func() []byte {
	b := make([]byte, 1<<20+7)
	for i := range b {
		b[i] = byte(i ^ i>>8 ^ i>>16)
	}
	return b
}()

func (p *pattern) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	if rem := p.n - p.off; int64(len(b)) > rem {
		b = b[:rem]
	}
	n := 0
	for n < len(b) {
		n += copy(b[n:], patternCycle[(p.off+int64(n))%int64(len(patternCycle)):])
	}
	p.off += int64(n)
	return n, nil
}

// TestLargeBodiesBoundedMemory streams 64 MiB up and 64 MiB down through the
// proxy at the same time and checks both arrive intact while the heap stays far
// below the size of either body.
func TestLargeBodiesBoundedMemory(t *testing.T) {
	const size = 64 << 20
	wantSum := func() [32]byte {
		h := sha256.New()
		_, _ = io.Copy(h, &pattern{n: size})
		var s [32]byte
		copy(s[:], h.Sum(nil))
		return s
	}()
	upSum := make(chan [32]byte, 1)
	backend, _ := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		_ = rc.EnableFullDuplex()
		w.WriteHeader(200)
		done := make(chan struct{})
		go func() {
			defer close(done)
			h := sha256.New()
			_, _ = io.Copy(h, r.Body)
			var s [32]byte
			copy(s[:], h.Sum(nil))
			upSum <- s
		}()
		_, _ = io.Copy(w, &pattern{n: size})
		<-done
	}))
	p := startProxy(t, []routetable.Service{service("big", []string{backend})})
	c := h2cClient(t)

	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	var base runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&base)
	go func() {
		defer close(sampled)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peak.Load() {
					peak.Store(ms.HeapInuse)
				}
			}
		}
	}()

	// A failure guard only: moving 2×64 MiB under -race on a loaded 2-core
	// machine took over two minutes in stress runs.
	ctx, cancel := context.WithTimeout(context.Background(), 15*guard)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+p.addr+"/big", &pattern{n: size})
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	close(stop)
	<-sampled
	if err != nil || n != size {
		t.Fatalf("download: %d bytes, %v; want %d", n, err, size)
	}
	if !bytes.Equal(h.Sum(nil), wantSum[:]) {
		t.Fatal("download corrupted")
	}
	select {
	case s := <-upSum:
		if s != wantSum {
			t.Fatal("upload corrupted")
		}
	case <-time.After(guard):
		t.Fatal("backend never finished reading the upload")
	}
	grew := int64(peak.Load()) - int64(base.HeapInuse)
	t.Logf("heap in use grew by at most %d KiB while moving 2×%d MiB", grew>>10, size>>20)
	if grew > 24<<20 {
		t.Errorf("heap grew by %d MiB: bodies are being buffered", grew>>20)
	}
}

// TestCancellationPropagates: a client that gives up cancels the upstream request.
func TestCancellationPropagates(t *testing.T) {
	started := make(chan struct{})
	cancelled := make(chan struct{})
	backend, _ := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		_ = http.NewResponseController(w).Flush()
		close(started)
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-time.After(guard):
		}
	}))
	p := startProxy(t, []routetable.Service{service("slow", []string{backend})})
	c := h2cClient(t)

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+p.addr+"/wait", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	defer resp.Body.Close()
	<-started
	cancel()
	select {
	case <-cancelled:
	case <-time.After(guard):
		t.Fatal("the upstream handler never saw its context cancelled")
	}
}

// grpcStatusOf reads a response's gRPC status from its trailers or, for a
// trailers-only response, its headers.
func grpcStatusOf(resp *http.Response) (string, string) {
	if v := resp.Trailer.Get("Grpc-Status"); v != "" {
		return v, resp.Trailer.Get("Grpc-Message")
	}
	return resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message")
}

// TestProxyErrors checks the responses the proxy makes itself, in gRPC and HTTP.
func TestProxyErrors(t *testing.T) {
	hang, _ := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	closed := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		return addr
	}()
	timeoutRule := routetable.Rule{
		Backends: []routetable.Backend{{Service: routetable.ServiceKey("hang", "default", 80)}},
		Timeouts: routetable.Timeouts{Request: routetable.Duration(100 * time.Millisecond)},
	}
	cases := []struct {
		name       string
		svc        routetable.Service
		grpc       bool
		wantStatus int
		wantGRPC   string
		wantReason string
	}{
		{"no endpoints grpc", service("empty", nil), true, 200, "14", "no endpoints"},
		{"no endpoints http", service("empty", nil), false, 503, "", "no endpoints"},
		{"timeout grpc", service("hang", []string{hang}, timeoutRule), true, 200, "4", "timeout"},
		{"timeout http", service("hang", []string{hang}, timeoutRule), false, 504, "", "timeout"},
		{"connect refused grpc", service("gone", []string{closed}), true, 200, "14", "connect to " + closed},
		{"connect refused http", service("gone", []string{closed}), false, 502, "", "connect to " + closed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, []routetable.Service{tc.svc})
			c := h2cClient(t)
			ctx, cancel := context.WithTimeout(context.Background(), guard)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+p.addr+"/pkg.Svc/Method", bytes.NewReader([]byte{0, 0, 0, 0, 0}))
			if tc.grpc {
				req.Header.Set("Content-Type", "application/grpc")
				req.Header.Set("Te", "trailers")
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("request: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantStatus {
				t.Errorf("status %d, want %d (body %q)", resp.StatusCode, tc.wantStatus, body)
			}
			reason := resp.Header.Get(dispatch.HeaderName)
			if !strings.Contains(reason, tc.wantReason) {
				t.Errorf("%s = %q, want it to mention %q", dispatch.HeaderName, reason, tc.wantReason)
			}
			if tc.grpc {
				code, msg := grpcStatusOf(resp)
				if code != tc.wantGRPC {
					t.Errorf("grpc-status %q, want %q (message %q)", code, tc.wantGRPC, msg)
				}
				if resp.Header.Get("Grpc-Status") == "" || len(body) != 0 {
					t.Errorf("not a trailers-only response: header %v, body %q", resp.Header, body)
				}
			}
		})
	}
}

// countingService is a gRPC TestService whose UnaryCall fails with failWith
// for the first failures calls, and records which backend answered.
type countingService struct {
	testgrpc.UnimplementedTestServiceServer
	name     string
	calls    atomic.Int64
	failures int64
	failWith codes.Code
	payloads chan []byte
}

func (s *countingService) UnaryCall(ctx context.Context, in *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	n := s.calls.Add(1)
	if s.payloads != nil {
		s.payloads <- in.GetPayload().GetBody()
	}
	if n <= s.failures {
		return nil, status.Error(s.failWith, fmt.Sprintf("failing call %d on purpose", n))
	}
	_ = grpc.SetHeader(ctx, metadata.Pairs("backend", s.name))
	return &testpb.SimpleResponse{Username: s.name}, nil
}

func startGRPC(t testing.TB, svc testgrpc.TestServiceServer) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, svc)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(ln)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			s.Stop()
			<-done
		})
	}
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

// TestGRPCRetry retries a unary call whose first attempt fails with
// UNAVAILABLE when the route retries that code, replaying the request message;
// without the policy the failure reaches the client.
func TestGRPCRetry(t *testing.T) {
	for _, tc := range []struct {
		name      string
		retry     *routetable.Retry
		wantCode  codes.Code
		wantCalls int64
	}{
		{"retried", &routetable.Retry{GRPCCodes: []string{"unavailable"}, Attempts: 2}, codes.OK, 2},
		{"other code not retried", &routetable.Retry{GRPCCodes: []string{"internal"}, Attempts: 2}, codes.Unavailable, 1},
		{"no policy", nil, codes.Unavailable, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := &countingService{name: "a", failures: 1, failWith: codes.Unavailable, payloads: make(chan []byte, 4)}
			addr, _ := startGRPC(t, svc)
			key := routetable.ServiceKey("retry", "default", 80)
			rule := routetable.Rule{Backends: []routetable.Backend{{Service: key}}, Retry: tc.retry}
			p := startProxy(t, []routetable.Service{service("retry", []string{addr}, rule)})
			tcl := testgrpc.NewTestServiceClient(dialProxy(t, p.addr))
			ctx, cancel := context.WithTimeout(context.Background(), guard)
			defer cancel()
			body := bytes.Repeat([]byte("x"), 1000)
			_, err := tcl.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: body}})
			if got := status.Code(err); got != tc.wantCode {
				t.Fatalf("code %v (%v), want %v", got, err, tc.wantCode)
			}
			if got := svc.calls.Load(); got != tc.wantCalls {
				t.Errorf("backend saw %d calls, want %d", got, tc.wantCalls)
			}
			for i := int64(0); i < tc.wantCalls; i++ {
				if b := <-svc.payloads; !bytes.Equal(b, body) {
					t.Errorf("attempt %d carried %d bytes, want the %d-byte message", i+1, len(b), len(body))
				}
			}
		})
	}
}

// TestHTTPRetryReplaysBody retries a POST answered 503 once, sending the same
// body again, when the body fits the retry buffer (whether its length was
// declared or not), and forwards the 503 when it does not.
func TestHTTPRetryReplaysBody(t *testing.T) {
	small := "part one, part two"
	large := strings.Repeat("L", 100<<10)
	cases := []struct {
		name      string
		body      func() io.Reader // what the client sends
		want      string
		wantCode  int
		wantCalls int64
	}{
		{"streamed small body", func() io.Reader {
			pr, pw := io.Pipe()
			go func() {
				_, _ = pw.Write([]byte("part one, "))
				_, _ = pw.Write([]byte("part two"))
				pw.Close()
			}()
			return pr
		}, small, 200, 2},
		{"declared small body", func() io.Reader { return strings.NewReader(small) }, small, 200, 2},
		{"declared body over the buffer", func() io.Reader { return strings.NewReader(large) }, large, 503, 1},
		{"streamed body over the buffer", func() io.Reader { return io.MultiReader(strings.NewReader(large)) }, large, 503, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int64
			bodies := make(chan string, 4)
			backend, _ := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				bodies <- string(b)
				if calls.Add(1) == 1 {
					w.WriteHeader(503)
					return
				}
				_, _ = io.WriteString(w, "ok")
			}))
			key := routetable.ServiceKey("web", "default", 80)
			rule := routetable.Rule{Backends: []routetable.Backend{{Service: key}}, Retry: &routetable.Retry{Codes: []int{503}, Attempts: 1}}
			p := startProxy(t, []routetable.Service{service("web", []string{backend}, rule)})
			c := h2cClient(t)
			resp, err := c.Post("http://"+p.addr+"/submit", "text/plain", tc.body())
			if err != nil {
				t.Fatalf("request: %v", err)
			}
			_, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.wantCode)
			}
			if calls.Load() != tc.wantCalls {
				t.Fatalf("backend saw %d calls, want %d", calls.Load(), tc.wantCalls)
			}
			for i := range tc.wantCalls {
				if got := <-bodies; got != tc.want {
					t.Errorf("attempt %d got a %d-byte body, want the %d-byte one", i+1, len(got), len(tc.want))
				}
			}
		})
	}
}

// TestRouteFilters applies a rule's request and response header filters, its
// path and host rewrite, a backend's own filter, a mirror and a redirect.
func TestRouteFilters(t *testing.T) {
	type seen struct {
		host, uri, body string
		header          http.Header
	}
	main := make(chan seen, 1)
	mirrored := make(chan seen, 1)
	capture := func(ch chan seen) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			ch <- seen{r.Host, r.RequestURI, string(b), r.Header.Clone()}
			_, _ = io.WriteString(w, "served")
		})
	}
	mainAddr, _ := startH2C(t, capture(main))
	mirrorAddr, _ := startH2C(t, capture(mirrored))
	key := routetable.ServiceKey("front", "default", 80)
	mirrorKey := routetable.ServiceKey("shadow", "default", 80)
	rules := []routetable.Rule{
		{
			Match: routetable.Match{PathType: routetable.PathExact, Path: "/old"},
			Filters: routetable.Filters{Redirect: &routetable.Redirect{
				PathType: "ReplaceFullPath", Path: "/new", StatusCode: 301,
			}},
		},
		{
			Match: routetable.Match{PathType: routetable.PathPrefix, Path: "/api"},
			Filters: routetable.Filters{
				RequestHeaders: &routetable.HeaderModifier{
					Set:    []routetable.Header{{Name: "X-Set", Value: "set"}},
					Add:    []routetable.Header{{Name: "X-Add", Value: "added"}},
					Remove: []string{"X-Remove"},
				},
				ResponseHeaders: &routetable.HeaderModifier{Set: []routetable.Header{{Name: "X-Resp", Value: "resp"}}},
				URLRewrite:      &routetable.URLRewrite{Hostname: "rewritten.example", PathType: "ReplacePrefixMatch", Path: "/v2"},
				Mirrors:         []routetable.Mirror{{Backend: mirrorKey}},
			},
			Backends: []routetable.Backend{{
				Service:         key,
				RequestHeaders:  &routetable.HeaderModifier{Set: []routetable.Header{{Name: "X-Backend", Value: "front"}}},
				ResponseHeaders: &routetable.HeaderModifier{Set: []routetable.Header{{Name: "X-Backend-Resp", Value: "yes"}}},
			}},
		},
	}
	p := startProxy(t, []routetable.Service{
		service("front", []string{mainAddr}, rules...),
		service("shadow", []string{mirrorAddr}),
	})
	c := h2cClient(t)
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	req, _ := http.NewRequest("POST", "http://"+p.addr+"/api/items?x=1", strings.NewReader("payload"))
	req.Header.Set("X-Remove", "gone")
	req.Header.Set("X-Add", "original")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "served" {
		t.Fatalf("got %d %q", resp.StatusCode, b)
	}
	if resp.Header.Get("X-Resp") != "resp" || resp.Header.Get("X-Backend-Resp") != "yes" {
		t.Errorf("response headers not filtered: %v", resp.Header)
	}
	check := func(who string, s seen) {
		t.Helper()
		if s.host != "rewritten.example" || s.uri != "/v2/items?x=1" || s.body != "payload" {
			t.Errorf("%s saw host %q uri %q body %q", who, s.host, s.uri, s.body)
		}
		if s.header.Get("X-Set") != "set" || s.header.Get("X-Remove") != "" ||
			strings.Join(s.header.Values("X-Add"), ",") != "original,added" {
			t.Errorf("%s saw headers %v", who, s.header)
		}
	}
	check("backend", <-main)
	select {
	case s := <-mirrored:
		check("mirror", s)
		if s.header.Get("X-Backend") != "" {
			t.Errorf("the mirror got the main backend's own filter: %v", s.header)
		}
	case <-time.After(guard):
		t.Fatal("the mirror never got the request")
	}

	resp, err = c.Get("http://" + p.addr + "/old?keep=1")
	if err != nil {
		t.Fatalf("redirect request: %v", err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != 301 || loc != "http://127.0.0.1/new?keep=1" {
		t.Errorf("redirect: %d %q", resp.StatusCode, loc)
	}
}

// TestPerRequestBalancing: one client connection to the proxy, requests spread
// over both backends, for gRPC and for plain HTTP/2.
func TestPerRequestBalancing(t *testing.T) {
	const requests = 40
	t.Run("grpc", func(t *testing.T) {
		a, b := &countingService{name: "a"}, &countingService{name: "b"}
		addrA, _ := startGRPC(t, a)
		addrB, _ := startGRPC(t, b)
		p := startProxy(t, []routetable.Service{service("lb", []string{addrA, addrB})}, withFrozenClock())
		tcl := testgrpc.NewTestServiceClient(dialProxy(t, p.addr)) // one HTTP/2 connection
		for i := range requests {
			ctx, cancel := context.WithTimeout(context.Background(), guard)
			_, err := tcl.UnaryCall(ctx, &testpb.SimpleRequest{})
			cancel()
			if err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
		}
		t.Logf("backend a: %d, backend b: %d", a.calls.Load(), b.calls.Load())
		if a.calls.Load() == 0 || b.calls.Load() == 0 {
			t.Fatalf("requests were not spread: a=%d b=%d", a.calls.Load(), b.calls.Load())
		}
	})
	t.Run("http2", func(t *testing.T) {
		var hits [2]atomic.Int64
		var addrs []string
		for i := range 2 {
			addr, _ := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hits[i].Add(1)
			}))
			addrs = append(addrs, addr)
		}
		p := startProxy(t, []routetable.Service{service("lb", addrs)}, withFrozenClock())
		c := h2cClient(t)
		for i := range requests {
			resp, err := c.Get("http://" + p.addr + "/")
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			resp.Body.Close()
		}
		if hits[0].Load() == 0 || hits[1].Load() == 0 {
			t.Fatalf("requests were not spread: %d and %d", hits[0].Load(), hits[1].Load())
		}
	})
}

// TestEndpointGoingAway: when one of two backends stops, the streams in flight
// on the other complete, and so do its own when it stops gracefully (GOAWAY);
// new requests settle on the backend left.
func TestEndpointGoingAway(t *testing.T) {
	for _, graceful := range []bool{false, true} {
		name := "hard stop"
		if graceful {
			name = "graceful stop"
		}
		t.Run(name, func(t *testing.T) { testEndpointGoingAway(t, graceful) })
	}
}

func testEndpointGoingAway(t *testing.T, graceful bool) {
	release := make(chan struct{})
	inflight := make(chan string, 64)
	newBackend := func(name string) (string, *http.Server) {
		return startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/quick" {
				_, _ = io.WriteString(w, name)
				return
			}
			w.WriteHeader(200)
			_ = http.NewResponseController(w).Flush()
			inflight <- name
			select {
			case <-release:
				_, _ = io.WriteString(w, "done by "+name)
			case <-r.Context().Done():
			}
		}))
	}
	addrA, srvA := newBackend("a")
	addrB, _ := newBackend("b")
	p := startProxy(t, []routetable.Service{service("pair", []string{addrA, addrB})}, withFrozenClock())
	c := h2cClient(t)

	// Start streams until at least one is in flight on each backend.
	type result struct {
		body string
		err  error
	}
	var results []chan result
	seen := map[string]int{}
	for i := 0; i < 40 && (seen["a"] == 0 || seen["b"] == 0); i++ {
		ch := make(chan result, 1)
		results = append(results, ch)
		go func() {
			resp, err := c.Get("http://" + p.addr + "/slow")
			if err != nil {
				ch <- result{err: err}
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			ch <- result{string(b), err}
		}()
		select {
		case name := <-inflight:
			seen[name]++
		case <-time.After(guard):
			t.Fatal("stream never reached a backend")
		}
	}
	if seen["a"] == 0 || seen["b"] == 0 {
		t.Fatalf("could not get streams in flight on both backends: %v", seen)
	}
	stopped := make(chan struct{})
	if graceful {
		// Shutdown sends GOAWAY, stops listening and waits for a's streams.
		go func() {
			defer close(stopped)
			ctx, cancel := context.WithTimeout(context.Background(), guard)
			defer cancel()
			_ = srvA.Shutdown(ctx)
		}()
		// Wait until a refuses new connections, so that the GOAWAY went out
		// while its streams were in flight.
		waitFor(t, "a to stop listening", func() bool {
			conn, err := net.Dial("tcp", addrA)
			if err == nil {
				conn.Close()
			}
			return err != nil
		})
	} else {
		srvA.Close() // a's connections close: its streams fail
		close(stopped)
	}
	close(release)
	done := map[string]int{}
	for _, ch := range results {
		r := <-ch
		for _, name := range []string{"a", "b"} {
			if r.err == nil && strings.HasSuffix(r.body, "done by "+name) {
				done[name]++
			}
		}
	}
	<-stopped
	if done["b"] != seen["b"] {
		t.Errorf("%d of the %d streams on b completed", done["b"], seen["b"])
	}
	if graceful && done["a"] != seen["a"] {
		t.Errorf("%d of the %d streams on a completed despite its graceful stop", done["a"], seen["a"])
	}

	// New requests end up on b alone: a refuses connections, each refusal is
	// retried once elsewhere, and a is ejected after consecutive failures. (How
	// many fail before that is the dispatcher's business; only that it settles
	// is checked here.)
	ok := 0
	for i := 0; i < 60 && ok < 10; i++ {
		resp, err := c.Get("http://" + p.addr + "/quick")
		if err != nil {
			t.Fatalf("request %d after a stopped: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 && string(b) == "b" {
			ok++
			continue
		}
		ok = 0
		t.Logf("request %d after a stopped: %d %s", i, resp.StatusCode, resp.Header.Get(dispatch.HeaderName))
	}
	if ok < 10 {
		t.Fatal("requests never settled on the backend left")
	}
}

// TestShutdownCompletesInFlightStream: Shutdown sends GOAWAY, waits for the
// stream in flight, which completes, and then returns.
func TestShutdownCompletesInFlightStream(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	backend, _ := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "first half, ")
		_ = http.NewResponseController(w).Flush()
		close(started)
		<-release
		_, _ = io.WriteString(w, "second half")
	}))
	p := startProxy(t, []routetable.Service{service("drain", []string{backend})})
	c := h2cClient(t)

	resp, err := c.Get("http://" + p.addr + "/stream")
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	defer resp.Body.Close()
	<-started

	shutdownErr := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	go func() { shutdownErr <- p.srv.Shutdown(ctx) }()
	waitFor(t, "shutdown to start", func() bool {
		p.srv.mu.Lock()
		defer p.srv.mu.Unlock()
		return p.srv.shutting
	})
	select {
	case err := <-shutdownErr:
		t.Fatalf("Shutdown returned %v with a stream in flight", err)
	default:
	}
	// A new connection is not served any more.
	conn, err := net.Dial("tcp", p.addr)
	if err == nil {
		_ = conn.SetReadDeadline(time.Now().Add(guard))
		_, _ = conn.Write([]byte(http2Preface))
		_, rerr := conn.Read(make([]byte, 1))
		conn.Close()
		if rerr == nil {
			t.Error("a connection opened during shutdown got data")
		}
	}

	close(release)
	b, err := io.ReadAll(resp.Body)
	if err != nil || string(b) != "first half, second half" {
		t.Fatalf("in-flight stream got %q, %v", b, err)
	}
	if err := <-shutdownErr; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// TestClientFaultsDoNotEjectEndpoint: requests that fail because of the client
// (it cancels, or sends a body that does not match its content-length) are not
// counted against the endpoint, so its breaker (7 failures in a row by default)
// stays closed and the next request is served.
func TestClientFaultsDoNotEjectEndpoint(t *testing.T) {
	const faults = 12
	started := make(chan struct{}, faults)
	backend, _ := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/wait" {
			w.WriteHeader(200)
			_ = http.NewResponseController(w).Flush()
			started <- struct{}{}
			<-r.Context().Done()
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "fine")
	}))
	cases := []struct {
		name  string
		fault func(t *testing.T, addr string, c *http.Client)
	}{
		{"client cancels", func(t *testing.T, addr string, c *http.Client) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/wait", nil)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("request: %v", err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("got %d (%s): the endpoint was penalised", resp.StatusCode, resp.Header.Get(dispatch.HeaderName))
			}
			select {
			case <-started:
			case <-time.After(guard):
				t.Fatal("request never reached the backend")
			}
			cancel()
		}},
		{"body longer than content-length", func(t *testing.T, addr string, _ *http.Client) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(guard))
			_, _ = conn.Write([]byte(http2Preface))
			fr := http2.NewFramer(conn, conn)
			_ = fr.WriteSettings()
			var hb bytes.Buffer
			enc := hpack.NewEncoder(&hb)
			for _, f := range []hpack.HeaderField{
				{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"}, {Name: ":path", Value: "/post"},
				{Name: ":authority", Value: "x"}, {Name: "content-length", Value: "1"},
			} {
				_ = enc.WriteField(f)
			}
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
			_ = fr.WriteData(1, false, []byte("test"))
			_ = fr.WriteData(1, true, []byte("test"))
			for {
				f, err := fr.ReadFrame()
				if err != nil {
					t.Fatalf("reading the answer: %v", err)
				}
				if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.StreamID == 1 {
					if rst.ErrCode != http2.ErrCodeProtocol {
						t.Fatalf("RST_STREAM %v, want PROTOCOL_ERROR", rst.ErrCode)
					}
					return
				}
				if f.Header().StreamID == 1 {
					t.Fatalf("got %v, want RST_STREAM(PROTOCOL_ERROR)", f)
				}
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, []routetable.Service{service("faults", []string{backend})})
			c := h2cClient(t)
			for range faults {
				tc.fault(t, p.addr, c)
			}
			resp, err := c.Get("http://" + p.addr + "/after")
			if err != nil {
				t.Fatalf("request after the faults: %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("after %d client faults: %d %q: the endpoint was penalised", faults, resp.StatusCode, b)
			}
		})
	}
}

// TestUpstreamBreaksMidStream: when the upstream resets a stream whose response
// has started, an HTTP client sees its stream reset (not a clean, truncated
// body) and a gRPC client gets a grpc-status trailer saying what happened.
func TestUpstreamBreaksMidStream(t *testing.T) {
	backend, _ := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isGRPC(r.Header.Get("Content-Type")) {
			w.Header().Set("Content-Type", "application/grpc")
			_, _ = w.Write([]byte{0, 0, 0, 0, 2, 'h', 'i'})
		} else {
			_, _ = io.WriteString(w, "partial")
		}
		_ = http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler) // RST_STREAM(INTERNAL_ERROR) to the proxy
	}))
	p := startProxy(t, []routetable.Service{service("broken", []string{backend})})
	c := h2cClient(t)

	t.Run("http", func(t *testing.T) {
		resp, err := c.Get("http://" + p.addr + "/")
		if err != nil {
			t.Fatalf("request: %v", err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Fatalf("read %q and a clean end; want the stream reset", b)
		}
	})
	t.Run("grpc", func(t *testing.T) {
		req, _ := http.NewRequest("POST", "http://"+p.addr+"/pkg.Svc/Stream", bytes.NewReader([]byte{0, 0, 0, 0, 0}))
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("request: %v", err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if string(b) != "\x00\x00\x00\x00\x02hi" {
			t.Errorf("body %q, want the one message", b)
		}
		code, msg := grpcStatusOf(resp)
		if code != "13" || resp.Trailer.Get(dispatch.HeaderName) == "" {
			t.Errorf("grpc-status %q (%q), proxy error %q; want 13 INTERNAL from the proxy", code, msg, resp.Trailer.Get(dispatch.HeaderName))
		}
	})
}

// TestHeaderListTooLarge: a request whose headers exceed MaxHeaderBytes gets
// 431. (A raw framer sends it: Go's client refuses to exceed the limit the
// proxy advertises.)
func TestHeaderListTooLarge(t *testing.T) {
	backend, _ := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	const limit = 4 << 10
	p := startProxy(t, []routetable.Service{service("small", []string{backend})}, withMaxHeaderBytes(limit))
	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(guard))
	_, _ = conn.Write([]byte(http2Preface))
	fr := http2.NewFramer(conn, conn)
	_ = fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range []hpack.HeaderField{
		{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"}, {Name: ":path", Value: "/"}, {Name: ":authority", Value: "x"},
		// Over the limit in total, each field under it, within one frame: x/net
		// answers 431. (A single field over the limit, or a far larger block
		// spread over CONTINUATION frames, closes the connection instead.)
		{Name: "x-big-1", Value: strings.Repeat("b", limit/2)},
		{Name: "x-big-2", Value: strings.Repeat("b", limit/2)},
		{Name: "x-big-3", Value: strings.Repeat("b", limit/2)},
	} {
		_ = enc.WriteField(f)
	}
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
	dec := hpack.NewDecoder(4096, nil)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		h, ok := f.(*http2.HeadersFrame)
		if !ok || h.StreamID != 1 {
			continue
		}
		fields, err := dec.DecodeFull(h.HeaderBlockFragment())
		if err != nil {
			t.Fatal(err)
		}
		if fields[0].Value != "431" {
			t.Fatalf("status %s, want 431", fields[0].Value)
		}
		return
	}
}

// TestShutdownDeadline: when ctx ends before the streams do, Shutdown closes
// the connections and says why.
func TestShutdownDeadline(t *testing.T) {
	started := make(chan struct{})
	backend, _ := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		_ = http.NewResponseController(w).Flush()
		close(started)
		<-r.Context().Done()
	}))
	p := startProxy(t, []routetable.Service{service("stuck", []string{backend})})
	c := h2cClient(t)
	resp, err := c.Get("http://" + p.addr + "/stuck")
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	defer resp.Body.Close()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := p.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want %v", err, context.DeadlineExceeded)
	}
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Fatal("the stuck stream ended cleanly; want it cut")
	}
}
