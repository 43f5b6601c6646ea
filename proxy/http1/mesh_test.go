package http1

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/proxy/http2"
)

const meshID = "web.test.serviceaccount.identity.sluice.cluster.local"

// recordingMesh is a MeshTransport over cleartext HTTP/2 that records the
// identity each request was for.
type recordingMesh struct {
	pool *http2.Pool
	mu   sync.Mutex
	ids  []string
}

func (m *recordingMesh) RoundTripTo(req *http.Request, identity string) (*http.Response, error) {
	m.mu.Lock()
	m.ids = append(m.ids, identity)
	m.mu.Unlock()
	return m.pool.RoundTripTo(req, "")
}

func (m *recordingMesh) Unprocessed(err error) bool { return m.pool.Unprocessed(err) }

func (m *recordingMesh) identities() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.ids...)
}

// startH2 serves h over cleartext HTTP/2 and HTTP/1.1.
func startH2(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &protos}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// meshProxy proxies to one meshed endpoint (an endpoint with an identity)
// serving h, through a recording mesh transport.
func meshProxy(t *testing.T, h http.Handler, rules ...routetable.Rule) (*proxy, *recordingMesh) {
	t.Helper()
	addr := startH2(t, h)
	m := &recordingMesh{pool: &http2.Pool{}}
	t.Cleanup(m.pool.Close)
	web := service("web")
	web.Endpoints = []routetable.Endpoint{{Address: addr, Identity: meshID}}
	web.Rules = rules
	p := startProxy(t, &routetable.Table{Services: []routetable.Service{web}}, "web", func(s *Server) { s.Mesh = m })
	return p, m
}

// echo answers with what it saw: protocol, marker, method, target, host and
// body; it sets X-Seen-* headers for the fields the test checks.
func echo(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("X-Proto", r.Proto)
	w.Header().Set("X-Orig-Proto", r.Header.Get("Sluice-Orig-Proto"))
	w.Header().Set("X-Hop", r.Header.Get("X-Hop"))
	w.Header().Set("X-A", strings.Join(r.Header.Values("X-A"), ","))
	w.Header().Set("X-Host", r.Host)
	w.Header().Set("X-Target", r.RequestURI)
	w.Header().Set("X-Length", fmt.Sprint(r.ContentLength))
	fmt.Fprintf(w, "%s %s", r.Method, b)
}

// TestMeshRequestTravelsAsHTTP2: HTTP/1 requests to a meshed endpoint become
// HTTP/2 streams marked sluice-orig-proto, with their method, target, host,
// end-to-end headers and body; hop-by-hop headers stay behind; the response
// comes back as HTTP/1.1 on a keep-alive connection.
func TestMeshRequestTravelsAsHTTP2(t *testing.T) {
	p, m := meshProxy(t, http.HandlerFunc(echo))
	c := dial(t, p.addr)
	cases := []struct {
		name, raw, method, body string
		wantLen                 string
	}{
		{"get", "GET /a%2Fb/c?x=1&y=%20 HTTP/1.1\r\nHost: web.test\r\nX-A: 1\r\nX-A: 2\r\nConnection: X-Hop\r\nX-Hop: secret\r\n\r\n", "GET", "GET ", "0"},
		{"buffered body", "POST /p HTTP/1.1\r\nHost: web.test\r\nX-A: 1\r\nContent-Length: 5\r\n\r\nhello", "POST", "POST hello", "5"},
		{"chunked body", "POST /p HTTP/1.1\r\nHost: web.test\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n", "POST", "POST abcde", "-1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := c.do(tc.method, tc.raw)
			eq(t, resp.StatusCode, 200)
			eq(t, resp.Proto, "HTTP/1.1")
			eq(t, body, tc.body)
			eq(t, resp.Header.Get("X-Proto"), "HTTP/2.0")
			eq(t, resp.Header.Get("X-Orig-Proto"), "HTTP/1.1")
			eq(t, resp.Header.Get("X-Hop"), "")
			eq(t, resp.Header.Get("X-Host"), "web.test")
			eq(t, resp.Header.Get("X-Length"), tc.wantLen)
			if tc.name == "get" {
				eq(t, resp.Header.Get("X-Target"), "/a%2Fb/c?x=1&y=%20")
				eq(t, resp.Header.Get("X-A"), "1,2")
			}
		})
	}
	for _, id := range m.identities() {
		eq(t, id, meshID)
	}
	eq(t, len(m.identities()), len(cases))
}

// TestMeshLargeStreamedBody: a body too large to buffer streams through the
// pipe to the HTTP/2 stream, and the connection carries the next request.
func TestMeshLargeStreamedBody(t *testing.T) {
	p, _ := meshProxy(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d", n)
	}))
	c := dial(t, p.addr)
	big := strings.Repeat("x", 1<<20)
	resp, body := c.do("PUT", fmt.Sprintf("PUT / HTTP/1.1\r\nHost: web\r\nContent-Length: %d\r\n\r\n%s", len(big), big))
	eq(t, resp.StatusCode, 200)
	eq(t, body, fmt.Sprint(len(big)))
	// A client waiting for 100 Continue is told to go on.
	resp, _ = c.do("PUT", "PUT / HTTP/1.1\r\nHost: web\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc")
	eq(t, resp.StatusCode, 100)
	resp, body = c.read("PUT")
	eq(t, resp.StatusCode, 200)
	eq(t, body, "3")
}

// TestMeshResponseFraming: the HTTP/2 response gets the framing an HTTP/1
// client can take: a known length, chunks (with trailers) for a 1.1 client,
// the end of the connection for a 1.0 client; HEAD and 204 carry no body.
func TestMeshResponseFraming(t *testing.T) {
	p, _ := meshProxy(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/length":
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "fixed")
		case "/stream":
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "part1,")
			w.(http.Flusher).Flush()
			io.WriteString(w, "part2")
			w.Header().Set("X-Sum", "42")
		case "/empty":
			w.WriteHeader(204)
		}
	}))
	c := dial(t, p.addr)
	resp, body := c.do("GET", get("/length"))
	eq(t, resp.ContentLength, int64(5))
	eq(t, body, "fixed")
	resp, body = c.do("GET", get("/stream"))
	eq(t, strings.Join(resp.TransferEncoding, ","), "chunked")
	eq(t, body, "part1,part2")
	eq(t, resp.Trailer.Get("X-Sum"), "42")
	resp, body = c.do("HEAD", "HEAD /length HTTP/1.1\r\nHost: web\r\n\r\n")
	eq(t, resp.StatusCode, 200)
	eq(t, resp.ContentLength, int64(5))
	eq(t, body, "")
	resp, body = c.do("GET", get("/empty"))
	eq(t, resp.StatusCode, 204)
	eq(t, body, "")

	c10 := dial(t, p.addr)
	resp, body = c10.do("GET", "GET /stream HTTP/1.0\r\nHost: web\r\n\r\n")
	eq(t, body, "part1,part2")
	eq(t, resp.Close, true)
	c10.expectClosed()
}

// TestMeshRetryAndErrors: a retryable status from a meshed endpoint is
// retried; an endpoint that cannot be reached answers 502 naming it.
func TestMeshRetryAndErrors(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	p, m := meshProxy(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n == 1 {
			w.WriteHeader(503)
			return
		}
		io.WriteString(w, "ok")
	}), routetable.Rule{Backends: []routetable.Backend{{Service: key("web")}}, Retry: &routetable.Retry{Codes: []int{503}, Attempts: 1}})
	c := dial(t, p.addr)
	resp, body := c.do("POST", "POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 2\r\n\r\nhi")
	eq(t, resp.StatusCode, 200)
	eq(t, body, "ok")
	eq(t, len(m.identities()), 2)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	web := service("web")
	web.Endpoints = []routetable.Endpoint{{Address: dead, Identity: meshID}}
	if err := p.d.Update(&routetable.Table{Services: []routetable.Service{web}}); err != nil {
		t.Fatal(err)
	}
	resp, _ = c.do("GET", get("/"))
	eq(t, resp.StatusCode, 502)
	if reason := resp.Header.Get("Sluice-Proxy-Error"); !strings.Contains(reason, dead) || !strings.Contains(reason, meshID) {
		t.Errorf("sluice-proxy-error %q does not name %s and %s", reason, dead, meshID)
	}
}

// TestMeshUpgradeUsesTLSPool: a request that upgrades the connection cannot
// ride HTTP/2; it goes as HTTP/1 over the pool's TLS dial for the identity.
func TestMeshUpgradeUsesTLSPool(t *testing.T) {
	upgraded := make(chan string, 1)
	addr := startRaw(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		upgraded <- req.Proto + " " + req.Header.Get("Upgrade")
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		line, _ := br.ReadString('\n')
		io.WriteString(c, "echo:"+line)
	})
	var mu sync.Mutex
	var dialed []string
	m := &recordingMesh{pool: &http2.Pool{}}
	t.Cleanup(m.pool.Close)
	web := service("web")
	web.Endpoints = []routetable.Endpoint{{Address: addr, Identity: meshID}}
	p := startProxy(t, &routetable.Table{Services: []routetable.Service{web}}, "web", func(s *Server) {
		s.Mesh = m
		s.Pool.DialTLS = func(ctx context.Context, addr, identity string) (net.Conn, error) {
			mu.Lock()
			dialed = append(dialed, identity)
			mu.Unlock()
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr) // the test's stand-in for mutual TLS
		}
	})
	c := dial(t, p.addr)
	c.send("GET /ws HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, resp.StatusCode, 101)
	eq(t, <-upgraded, "HTTP/1.1 echo")
	c.send("ping\n")
	line, err := c.br.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	eq(t, line, "echo:ping\n")
	mu.Lock()
	eq(t, strings.Join(dialed, ","), meshID)
	mu.Unlock()
	eq(t, len(m.identities()), 0)
}
