package http1

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

// seen is what a backend observed of one request.
type seen struct {
	method, uri, host, remote string
	header                    http.Header
	body                      string
	trailer                   http.Header
	contentLength             int64
	chunked                   bool
}

// recorder is a net/http backend that records requests and answers by path.
type recorder struct {
	mu   sync.Mutex
	reqs []seen
}

func (rec *recorder) last(t *testing.T) seen {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.reqs) == 0 {
		t.Fatal("backend saw no request")
	}
	return rec.reqs[len(rec.reqs)-1]
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rec.mu.Lock()
	rec.reqs = append(rec.reqs, seen{
		method: r.Method, uri: r.RequestURI, host: r.Host, remote: r.RemoteAddr,
		header: r.Header.Clone(), body: string(body), trailer: r.Trailer.Clone(),
		contentLength: r.ContentLength, chunked: len(r.TransferEncoding) > 0,
	})
	rec.mu.Unlock()
	switch {
	case r.URL.Path == "/chunked":
		w.Header().Set("Trailer", "X-Checksum")
		w.Write([]byte("part one,"))
		w.(http.Flusher).Flush()
		w.Write([]byte("part two"))
		w.Header().Set("X-Checksum", "abc")
	case r.URL.Path == "/nocontent":
		w.WriteHeader(204)
	case r.URL.Path == "/notmodified":
		w.WriteHeader(304)
	case r.URL.Path == "/big":
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("Content-Length", strconv.Itoa(n))
		w.Write([]byte(strings.Repeat("x", n)))
	default:
		w.Header().Set("X-Backend", "rec")
		fmt.Fprintf(w, "%s %s %s", r.Method, r.RequestURI, body)
	}
}

func TestKeepAliveBothSides(t *testing.T) {
	rec := &recorder{}
	p := simpleProxy(t, rec)
	c := dial(t, p.addr)
	for i := 0; i < 3; i++ {
		resp, body := c.do("GET", get(fmt.Sprintf("/r%d?q=%d", i, i)))
		eq(t, resp.StatusCode, 200)
		eq(t, body, fmt.Sprintf("GET /r%d?q=%d ", i, i))
		eq(t, resp.Header.Get("X-Backend"), "rec")
		eq(t, resp.Close, false)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, r := range rec.reqs[1:] {
		if r.remote != rec.reqs[0].remote {
			t.Fatalf("upstream connection not reused: %s then %s", rec.reqs[0].remote, r.remote)
		}
	}
}

func TestTransparentHeaders(t *testing.T) {
	rec := &recorder{}
	p := simpleProxy(t, rec)
	c := dial(t, p.addr)
	resp, _ := c.do("GET", "GET /h HTTP/1.1\r\nHost: web.test:80\r\nX-Keep: 1\r\nX-Hop: 2\r\n"+
		"Connection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n"+
		"Upgrade: h2c\r\nTrailer: X-T\r\n\r\n")
	eq(t, resp.StatusCode, 200)
	got := rec.last(t)
	eq(t, got.host, "web.test:80")
	eq(t, got.header.Get("X-Keep"), "1")
	for _, h := range []string{"X-Hop", "Keep-Alive", "Proxy-Connection", "Te", "Upgrade", "Trailer", "Connection",
		"Forwarded", "X-Forwarded-For", "Via"} {
		if v, ok := got.header[h]; ok {
			t.Errorf("upstream saw %s: %q", h, v)
		}
	}
}

func TestHopByHopResponse(t *testing.T) {
	addr := startRaw(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Keep: 1\r\nX-Hop: 2\r\nConnection: X-Hop\r\nKeep-Alive: timeout=1\r\n"+
				"Upgrade: foo\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	p := startProxy(t, &routetable.Table{Services: []routetable.Service{service("web", addr)}}, "web")
	c := dial(t, p.addr)
	c.send(get("/"))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	eq(t, resp.Header.Get("X-Keep"), "1")
	for _, h := range []string{"X-Hop", "Keep-Alive", "Upgrade", "Connection"} {
		if v, ok := resp.Header[h]; ok {
			t.Errorf("client saw %s: %q", h, v)
		}
	}
}

func TestBodies(t *testing.T) {
	rec := &recorder{}
	p := simpleProxy(t, rec)
	big := strings.Repeat("0123456789", 20000) // 200 KB: streamed, not buffered
	tests := []struct {
		name     string
		raw      string
		method   string
		wantBody string
		check    func(t *testing.T, resp *http.Response, s seen)
	}{
		{name: "small length", raw: "POST /echo HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\n\r\nhello", method: "POST",
			wantBody: "POST /echo hello",
			check: func(t *testing.T, _ *http.Response, s seen) {
				eq(t, s.contentLength, int64(5))
			}},
		{name: "large length", raw: "PUT /echo HTTP/1.1\r\nHost: web\r\nContent-Length: " + strconv.Itoa(len(big)) + "\r\n\r\n" + big, method: "PUT",
			wantBody: "PUT /echo " + big,
			check: func(t *testing.T, _ *http.Response, s seen) {
				eq(t, s.contentLength, int64(len(big)))
			}},
		{name: "buffered length", raw: "POST /echo HTTP/1.1\r\nHost: web\r\nContent-Length: 20000\r\n\r\n" + big[:20000], method: "POST",
			wantBody: "POST /echo " + big[:20000],
			check: func(t *testing.T, _ *http.Response, s seen) {
				eq(t, s.contentLength, int64(20000))
			}},
		{name: "chunked with trailers", raw: "POST /echo HTTP/1.1\r\nHost: web\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"5\r\nhello\r\n6;name=x\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n", method: "POST",
			wantBody: "POST /echo hello world",
			check: func(t *testing.T, _ *http.Response, s seen) {
				eq(t, s.chunked, true)
				eq(t, s.trailer.Get("X-Sum"), "42")
			}},
		{name: "empty post", raw: "POST /echo HTTP/1.1\r\nHost: web\r\n\r\n", method: "POST", wantBody: "POST /echo ",
			check: func(t *testing.T, _ *http.Response, s seen) {
				eq(t, s.contentLength, int64(0))
			}},
		{name: "chunked response with trailers", raw: get("/chunked"), method: "GET", wantBody: "part one,part two",
			check: func(t *testing.T, resp *http.Response, _ seen) {
				eq(t, len(resp.TransferEncoding) > 0, true)
				eq(t, resp.Trailer.Get("X-Checksum"), "abc")
			}},
		{name: "head keeps length", raw: "HEAD /big?n=1234 HTTP/1.1\r\nHost: web\r\n\r\n", method: "HEAD", wantBody: "",
			check: func(t *testing.T, resp *http.Response, _ seen) {
				eq(t, resp.ContentLength, int64(1234))
			}},
		{name: "no content", raw: get("/nocontent"), method: "GET", wantBody: "", check: func(t *testing.T, resp *http.Response, _ seen) {
			eq(t, resp.StatusCode, 204)
		}},
		{name: "not modified", raw: get("/notmodified"), method: "GET", wantBody: "", check: func(t *testing.T, resp *http.Response, _ seen) {
			eq(t, resp.StatusCode, 304)
		}},
		{name: "large response", raw: get("/big?n=1000000"), method: "GET", wantBody: strings.Repeat("x", 1000000)},
	}
	c := dial(t, p.addr) // one connection for all: framing mistakes break the next request
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := c.do(tt.method, tt.raw)
			if body != tt.wantBody {
				t.Fatalf("body = %q (%d bytes), want %d bytes", truncate(body, 64), len(body), len(tt.wantBody))
			}
			if tt.check != nil {
				tt.check(t, resp, rec.last(t))
			}
		})
	}
	resp, _ := c.do("GET", get("/after"))
	eq(t, resp.StatusCode, 200)
}

// TestStreamingResponse checks that a chunk reaches the client before the
// backend sends the next one: the proxy must not hold bytes back.
func TestStreamingResponse(t *testing.T) {
	next := make(chan struct{})
	p := simpleProxy(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		<-next
		io.WriteString(w, "second")
	}))
	c := dial(t, p.addr)
	c.send(get("/stream"))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatalf("first chunk did not arrive before the second was sent: %v", err)
	}
	eq(t, string(buf), "first")
	close(next)
	rest, _ := io.ReadAll(resp.Body)
	eq(t, string(rest), "second")
}

func TestStreamingRequest(t *testing.T) {
	got := make(chan string, 1)
	p := simpleProxy(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 5)
		io.ReadFull(r.Body, buf)
		got <- string(buf) // the first chunk arrived while the client still sends
		rest, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s%s", buf, rest)
	}))
	c := dial(t, p.addr)
	c.send("POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
	eq(t, <-got, "first")
	c.send("6\r\nsecond\r\n0\r\n\r\n")
	_, body := c.read("POST")
	eq(t, body, "firstsecond")
}

func TestCloseDelimitedResponse(t *testing.T) {
	var conns atomic.Int64
	addr := startRaw(t, func(c net.Conn) {
		conns.Add(1)
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nuntil close")
	})
	p := startProxy(t, &routetable.Table{Services: []routetable.Service{service("web", addr)}}, "web")

	t.Run("1.1 client gets chunked and keeps its connection", func(t *testing.T) {
		c := dial(t, p.addr)
		for i := 0; i < 2; i++ {
			resp, body := c.do("GET", get("/"))
			eq(t, body, "until close")
			eq(t, len(resp.TransferEncoding) > 0, true)
			eq(t, resp.Close, false)
		}
	})
	t.Run("1.0 client gets raw bytes and a close", func(t *testing.T) {
		c := dial(t, p.addr)
		resp, body := c.do("GET", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
		eq(t, body, "until close")
		eq(t, resp.Close, true)
		c.expectClosed()
	})
}

func TestMalformedRequests(t *testing.T) {
	rec := &recorder{}
	p := simpleProxy(t, rec)
	tests := []struct {
		name   string
		raw    string
		status int
	}{
		{"garbage request line", "HELLO\r\n\r\n", 400},
		{"bad header", "GET / HTTP/1.1\r\nHost: web\r\nBad Header: x\r\n\r\n", 400},
		{"invalid length", "POST / HTTP/1.1\r\nHost: web\r\nContent-Length: abc\r\n\r\n", 400},
		{"length and chunked", "POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"unsupported coding", "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: gzip\r\n\r\n", 400},
		{"chunked in 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"missing host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: web\r\nX: a\r\n b\r\n\r\n", 400},
		{"http/3", "GET / HTTP/3.0\r\nHost: web\r\n\r\n", 505},
		{"bare CR", "GET / HTTP/1.1\rHost: web\r\n\r\n", 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, p.addr)
			resp, _ := c.do("GET", tt.raw)
			eq(t, resp.StatusCode, tt.status)
			if resp.Header.Get("sluice-proxy-error") == "" {
				t.Error("no sluice-proxy-error header")
			}
			eq(t, resp.Close, true)
			c.expectClosed()
		})
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.reqs) != 0 {
		t.Fatalf("malformed requests reached the backend: %+v", rec.reqs)
	}
}

func TestBadChunkedBodyClosesConnection(t *testing.T) {
	p := simpleProxy(t, &recorder{})
	c := dial(t, p.addr)
	resp, _ := c.do("POST", "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
	eq(t, resp.StatusCode, 400)
	if !strings.Contains(resp.Header.Get("sluice-proxy-error"), "request body") {
		t.Errorf("sluice-proxy-error = %q", resp.Header.Get("sluice-proxy-error"))
	}
	c.expectClosed()
}

func TestHeaderTooLarge(t *testing.T) {
	p := simpleProxy(t, &recorder{}, func(s *Server) { s.MaxHeaderBytes = 1024 })
	c := dial(t, p.addr)
	resp, _ := c.do("GET", "GET / HTTP/1.1\r\nHost: web\r\nX-Big: "+strings.Repeat("b", 2000)+"\r\n\r\n")
	eq(t, resp.StatusCode, 431)
	eq(t, resp.Header.Get("sluice-proxy-error"), "request headers too large")
	c.expectClosed()

	// Just under the limit is fine.
	c = dial(t, p.addr)
	resp, _ = c.do("GET", "GET / HTTP/1.1\r\nHost: web\r\nX-Big: "+strings.Repeat("b", 900)+"\r\n\r\n")
	eq(t, resp.StatusCode, 200)
}

func TestHeaderTimeout(t *testing.T) {
	p := simpleProxy(t, &recorder{}, func(s *Server) { s.HeaderTimeout = 50 * 1e6 })
	c := dial(t, p.addr)
	c.send("GET / HTTP/1.1\r\nHost: web\r\n") // and stall
	resp, _ := c.read("GET")
	eq(t, resp.StatusCode, 408)
	if resp.Header.Get("sluice-proxy-error") == "" {
		t.Error("no sluice-proxy-error header")
	}
	c.expectClosed()
}

func TestIdleTimeout(t *testing.T) {
	p := simpleProxy(t, &recorder{}, func(s *Server) { s.IdleTimeout = 50 * 1e6 })
	c := dial(t, p.addr)
	resp, _ := c.do("GET", get("/"))
	eq(t, resp.StatusCode, 200)
	c.expectClosed() // no bytes, just the close
}

func TestBodyTimeout(t *testing.T) {
	rec := &recorder{}
	p := simpleProxy(t, rec, func(s *Server) { s.IdleTimeout = 50 * 1e6 })
	c := dial(t, p.addr)
	c.send("POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 10000\r\n\r\n" + strings.Repeat("a", 5000)) // and stall
	resp, _ := c.read("POST")
	eq(t, resp.StatusCode, 408)
	c.expectClosed()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	eq(t, len(rec.reqs), 0)
}

func TestHTTP10(t *testing.T) {
	rec := &recorder{}
	p := simpleProxy(t, rec)

	c := dial(t, p.addr)
	resp, body := c.do("GET", "GET /old HTTP/1.0\r\n\r\n")
	eq(t, resp.StatusCode, 200)
	eq(t, body, "GET /old ")
	eq(t, resp.Close, true)
	c.expectClosed()
	if h := rec.last(t).host; h == "" {
		t.Error("upstream request has no Host")
	}

	c = dial(t, p.addr)
	for i := 0; i < 2; i++ {
		resp, _ = c.do("GET", "GET /old HTTP/1.0\r\nHost: web\r\nConnection: keep-alive\r\n\r\n")
		eq(t, resp.StatusCode, 200)
		eq(t, resp.Header.Get("Connection"), "keep-alive")
	}

	c = dial(t, p.addr)
	resp, _ = c.do("GET", "GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
	eq(t, resp.Close, true)
	c.expectClosed()
}

func TestPipelining(t *testing.T) {
	p := simpleProxy(t, &recorder{})
	c := dial(t, p.addr)
	c.send(get("/one") + "POST /two HTTP/1.1\r\nHost: web\r\nContent-Length: 3\r\n\r\nabc" + get("/three"))
	for _, want := range []string{"GET /one ", "POST /two abc", "GET /three "} {
		_, body := c.read("GET")
		eq(t, body, want)
	}
}

func TestAbsoluteFormTarget(t *testing.T) {
	rec := &recorder{}
	p := simpleProxy(t, rec)
	c := dial(t, p.addr)
	resp, _ := c.do("GET", "GET http://web.test:8080/abs?x=1 HTTP/1.1\r\nHost: other\r\n\r\n")
	eq(t, resp.StatusCode, 200)
	got := rec.last(t)
	eq(t, got.uri, "/abs?x=1")
	eq(t, got.host, "web.test:8080")
}

func TestClientID(t *testing.T) {
	rec := &recorder{}
	p := simpleProxy(t, rec, func(s *Server) {
		s.ClientID = func(net.Conn) string { return "default.test.serviceaccount.identity.sluice.cluster.local" }
	})
	c := dial(t, p.addr)
	c.do("GET", "GET / HTTP/1.1\r\nHost: web\r\nsluice-client-id: forged\r\nSLUICE-CLIENT-ID: forged2\r\n\r\n")
	got := rec.last(t).header.Values("Sluice-Client-Id")
	if len(got) != 1 || got[0] != "default.test.serviceaccount.identity.sluice.cluster.local" {
		t.Fatalf("sluice-client-id = %q", got)
	}
}
