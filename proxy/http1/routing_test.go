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
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

func u32(v uint32) *uint32 { return &v }

func TestFilters(t *testing.T) {
	rec := &recorder{}
	backendRec := &recorder{}
	addr := startHTTP(t, rec)
	addr2 := startHTTP(t, backendRec)
	web := service("web")
	web.Rules = []routetable.Rule{
		{
			Match: routetable.Match{PathType: routetable.PathPrefix, Path: "/old"},
			Filters: routetable.Filters{
				RequestHeaders: &routetable.HeaderModifier{
					Set:    []routetable.Header{{Name: "X-Set", Value: "set"}},
					Add:    []routetable.Header{{Name: "X-Add", Value: "added"}},
					Remove: []string{"X-Remove"},
				},
				ResponseHeaders: &routetable.HeaderModifier{
					Set:    []routetable.Header{{Name: "X-Backend", Value: "overridden"}},
					Add:    []routetable.Header{{Name: "X-Resp", Value: "r"}},
					Remove: []string{"Content-Type"},
				},
				URLRewrite: &routetable.URLRewrite{Hostname: "rewritten.test", PathType: "ReplacePrefixMatch", Path: "/new"},
			},
			Backends: []routetable.Backend{{Service: key("v1")}},
		},
		{
			Match: routetable.Match{PathType: routetable.PathPrefix, Path: "/redirect"},
			Filters: routetable.Filters{Redirect: &routetable.Redirect{Scheme: "https", Hostname: "elsewhere.test",
				PathType: "ReplaceFullPath", Path: "/landing", StatusCode: 301}},
		},
		{
			Match: routetable.Match{PathType: routetable.PathPrefix, Path: "/backend-filters"},
			Backends: []routetable.Backend{{
				Service:         key("v2"),
				RequestHeaders:  &routetable.HeaderModifier{Set: []routetable.Header{{Name: "X-Canary", Value: "yes"}, {Name: "Host", Value: "v2.test"}}},
				ResponseHeaders: &routetable.HeaderModifier{Add: []routetable.Header{{Name: "Set-Cookie", Value: "canary=1"}}},
			}},
		},
		{
			Match:    routetable.Match{PathType: routetable.PathExact, Path: "/invalid"},
			Backends: nil, // no backends, no redirect: 500
		},
	}
	p := startProxy(t, &routetable.Table{Services: []routetable.Service{web, service("v1", addr), service("v2", addr2)}}, "web")
	c := dial(t, p.addr)

	t.Run("request and response headers and rewrite", func(t *testing.T) {
		resp, _ := c.do("GET", "GET /old/page?x=1 HTTP/1.1\r\nHost: web\r\nX-Set: client\r\nX-Remove: gone\r\nX-Add: client\r\n\r\n")
		eq(t, resp.StatusCode, 200)
		got := rec.last(t)
		eq(t, got.uri, "/new/page?x=1")
		eq(t, got.host, "rewritten.test")
		eq(t, strings.Join(got.header.Values("X-Set"), ","), "set")
		eq(t, strings.Join(got.header.Values("X-Add"), ","), "client,added")
		eq(t, got.header.Get("X-Remove"), "")
		eq(t, resp.Header.Get("X-Backend"), "overridden")
		eq(t, resp.Header.Get("X-Resp"), "r")
		eq(t, resp.Header.Get("Content-Type"), "")
	})
	t.Run("redirect", func(t *testing.T) {
		resp, _ := c.do("GET", "GET /redirect/x?q=1 HTTP/1.1\r\nHost: web:80\r\n\r\n")
		eq(t, resp.StatusCode, 301)
		eq(t, resp.Header.Get("Location"), "https://elsewhere.test/landing?q=1")
	})
	t.Run("backend filters", func(t *testing.T) {
		resp, _ := c.do("GET", get("/backend-filters"))
		eq(t, resp.StatusCode, 200)
		got := backendRec.last(t)
		eq(t, got.header.Get("X-Canary"), "yes")
		eq(t, got.host, "v2.test")
		eq(t, resp.Header.Get("Set-Cookie"), "canary=1")
	})
	t.Run("invalid rule", func(t *testing.T) {
		resp, _ := c.do("GET", get("/invalid"))
		eq(t, resp.StatusCode, 500)
	})
	t.Run("no route", func(t *testing.T) {
		resp, _ := c.do("GET", get("/nothing-matches"))
		eq(t, resp.StatusCode, 404)
		if resp.Header.Get("sluice-proxy-error") == "" {
			t.Error("no sluice-proxy-error header")
		}
	})
	t.Run("no route with a body", func(t *testing.T) {
		resp, _ := c.do("POST", "POST /nothing HTTP/1.1\r\nHost: web\r\nContent-Length: 6\r\n\r\nunread")
		eq(t, resp.StatusCode, 404)
		eq(t, resp.Close, false) // the small body was drained
	})
	// Proxy-made answers keep the connection.
	resp, _ := c.do("GET", get("/old/again"))
	eq(t, resp.StatusCode, 200)

	t.Run("no route with a large body closes", func(t *testing.T) {
		c := dial(t, p.addr)
		resp, _ := c.do("POST", "POST /nothing HTTP/1.1\r\nHost: web\r\nContent-Length: 100000\r\n\r\n"+strings.Repeat("z", 100000))
		eq(t, resp.StatusCode, 404)
		eq(t, resp.Close, true)
	})
}

func TestProxyErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := ln.Addr().String()
	ln.Close()
	slow := make(chan struct{})
	defer close(slow)
	slowAddr := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-slow:
		case <-r.Context().Done():
		}
	}))
	timed := service("timed", slowAddr)
	timed.Rules = []routetable.Rule{{
		Backends: []routetable.Backend{{Service: key("timed")}},
		Timeouts: routetable.Timeouts{Request: routetable.Duration(50 * time.Millisecond)},
	}}
	table := &routetable.Table{Services: []routetable.Service{
		service("dead", deadAddr), service("empty"), timed,
	}}
	tests := []struct {
		entry  string
		status int
		reason string
	}{
		{"dead", 502, "connect to " + deadAddr},
		{"empty", 503, ""},
		{"timed", 504, "timeout"},
		{"missing", 503, "does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.entry, func(t *testing.T) {
			p := startProxy(t, table, tt.entry)
			c := dial(t, p.addr)
			for i := 0; i < 2; i++ { // the connection survives the error
				resp, body := c.do("GET", get("/"))
				eq(t, resp.StatusCode, tt.status)
				reason := resp.Header.Get("sluice-proxy-error")
				if reason == "" || !strings.Contains(reason, tt.reason) {
					t.Errorf("sluice-proxy-error = %q, want it to contain %q", reason, tt.reason)
				}
				if !strings.Contains(body, reason) {
					t.Errorf("body %q does not carry the reason", body)
				}
			}
		})
	}
}

func TestRetryOnStatus(t *testing.T) {
	var calls atomic.Int64
	var mu sync.Mutex
	var bodies []string
	addr := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
		if calls.Add(1) == 1 {
			w.Header().Set("Content-Length", "9")
			w.WriteHeader(503)
			io.WriteString(w, "try again")
			return
		}
		fmt.Fprintf(w, "ok %s", b)
	}))
	web := service("web", addr)
	web.Rules = []routetable.Rule{{
		Backends: []routetable.Backend{{Service: key("web")}},
		Retry:    &routetable.Retry{Codes: []int{503}, Attempts: 2},
	}}
	p := startProxy(t, &routetable.Table{Services: []routetable.Service{web}}, "web")
	c := dial(t, p.addr)
	resp, body := c.do("POST", "POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 7\r\n\r\npayload")
	eq(t, resp.StatusCode, 200)
	eq(t, body, "ok payload")
	eq(t, calls.Load(), int64(2))
	mu.Lock()
	eq(t, strings.Join(bodies, "|"), "payload|payload")
	mu.Unlock()

	// A body larger than the read buffer but within the replay limit is replayed too.
	calls.Store(0)
	mid := strings.Repeat("m", 30<<10)
	resp, body = c.do("POST", fmt.Sprintf("POST / HTTP/1.1\r\nHost: web\r\nContent-Length: %d\r\n\r\n%s", len(mid), mid))
	eq(t, resp.StatusCode, 200)
	eq(t, body, "ok "+mid)
	eq(t, calls.Load(), int64(2))

	// A body too large to buffer is not replayed: the 503 goes to the client.
	calls.Store(0)
	big := strings.Repeat("b", 100<<10)
	resp, _ = c.do("POST", fmt.Sprintf("POST / HTTP/1.1\r\nHost: web\r\nContent-Length: %d\r\n\r\n%s", len(big), big))
	eq(t, resp.StatusCode, 503)
	eq(t, calls.Load(), int64(1))
}

// TestStaleConnectionRetried: the upstream closes every connection after one
// response without saying so. The next request lands on a dead pooled
// connection and must be retried on a fresh one without the client noticing.
func TestStaleConnectionRetried(t *testing.T) {
	var accepted atomic.Int64
	closed := make(chan struct{}, 16)
	addr := startRaw(t, func(c net.Conn) {
		accepted.Add(1)
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		b, _ := io.ReadAll(req.Body)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(b)+2, "ok"+string(b))
		c.Close()
		closed <- struct{}{}
	})
	p := startProxy(t, &routetable.Table{Services: []routetable.Service{service("web", addr)}}, "web")
	c := dial(t, p.addr)
	for i, req := range []struct{ method, raw, want string }{
		{"GET", get("/1"), "ok"},
		{"GET", get("/2"), "ok"},
		{"POST", "POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 4\r\n\r\nbody", "okbody"},
		{"GET", get("/3"), "ok"},
	} {
		resp, body := c.do(req.method, req.raw)
		if resp.StatusCode != 200 || body != req.want {
			t.Fatalf("request %d: %d %q (%s)", i, resp.StatusCode, body, resp.Header.Get("sluice-proxy-error"))
		}
		<-closed // the pooled connection is now dead
		waitFor(t, "the pool to hold the dead connection", func() bool { return p.pool.idleCount(addr) == 1 })
	}
	eq(t, accepted.Load(), int64(4))
}

func TestMirror(t *testing.T) {
	rec := &recorder{}
	mirrored := make(chan seen, 4)
	addr := startHTTP(t, rec)
	shadowAddr := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mirrored <- seen{method: r.Method, uri: r.RequestURI, host: r.Host, body: string(b), header: r.Header.Clone()}
		w.WriteHeader(500) // ignored
	}))
	web := service("web", addr)
	web.Rules = []routetable.Rule{{
		Backends: []routetable.Backend{{Service: key("web")}},
		Filters: routetable.Filters{
			Mirrors:        []routetable.Mirror{{Backend: key("shadow")}},
			RequestHeaders: &routetable.HeaderModifier{Set: []routetable.Header{{Name: "X-Filtered", Value: "1"}}},
		},
	}}
	p := startProxy(t, &routetable.Table{Services: []routetable.Service{web, service("shadow", shadowAddr)}}, "web")
	c := dial(t, p.addr)
	resp, body := c.do("POST", "POST /m?x=1 HTTP/1.1\r\nHost: web\r\nContent-Length: 4\r\n\r\ndata")
	eq(t, resp.StatusCode, 200)
	eq(t, body, "POST /m?x=1 data")
	select {
	case m := <-mirrored:
		eq(t, m.method, "POST")
		eq(t, m.uri, "/m?x=1")
		eq(t, m.host, "web")
		eq(t, m.body, "data")
		eq(t, m.header.Get("X-Filtered"), "1")
	case <-time.After(guard):
		t.Fatal("the mirror never received the request")
	}
	waitFor(t, "mirrors to finish", func() bool { return p.srv.inFlight.Load() == 0 })
}

func TestMirrorBounded(t *testing.T) {
	release := make(chan struct{})
	var arrived atomic.Int64
	shadowAddr := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Add(1)
		<-release
	}))
	addr := startHTTP(t, &recorder{})
	web := service("web", addr)
	web.Rules = []routetable.Rule{{
		Backends: []routetable.Backend{{Service: key("web")}},
		Filters:  routetable.Filters{Mirrors: []routetable.Mirror{{Backend: key("shadow")}}},
	}}
	p := startProxy(t, &routetable.Table{Services: []routetable.Service{web, service("shadow", shadowAddr)}}, "web")
	c := dial(t, p.addr)
	const n = maxMirrors + 16
	for i := 0; i < n; i++ {
		// Every request completes although the mirrors hang.
		resp, _ := c.do("GET", get("/"))
		eq(t, resp.StatusCode, 200)
	}
	if got := p.srv.inFlight.Load(); got > maxMirrors {
		t.Fatalf("%d mirrors in flight, bound is %d", got, maxMirrors)
	}
	eq(t, p.srv.mirrorsDropped.Load(), int64(n-maxMirrors))
	waitFor(t, "mirrors to reach the shadow", func() bool { return arrived.Load() == maxMirrors })
	close(release)
	waitFor(t, "mirrors to finish", func() bool { return p.srv.inFlight.Load() == 0 })
}

func TestMirrorStopsOnCancel(t *testing.T) {
	shadowAddr := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never answers
	}))
	addr := startHTTP(t, &recorder{})
	web := service("web", addr)
	web.Rules = []routetable.Rule{{
		Backends: []routetable.Backend{{Service: key("web")}},
		Filters:  routetable.Filters{Mirrors: []routetable.Mirror{{Backend: key("shadow")}}},
	}}
	p := startProxy(t, &routetable.Table{Services: []routetable.Service{web, service("shadow", shadowAddr)}}, "web")
	c := dial(t, p.addr)
	c.do("GET", get("/"))
	waitFor(t, "the mirror to start", func() bool { return p.srv.inFlight.Load() == 1 })
	p.cancel()
	waitFor(t, "the mirror to stop", func() bool { return p.srv.inFlight.Load() == 0 })
}

func TestShutdownGraceful(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	p := simpleProxy(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		io.WriteString(w, "done")
	}))
	idle := dial(t, p.addr)
	resp, _ := idle.do("GET", get("/fast"))
	eq(t, resp.StatusCode, 200)

	busy := dial(t, p.addr)
	busy.send(get("/slow"))
	<-started
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), guard)
		defer cancel()
		shut <- p.srv.Shutdown(ctx)
	}()
	idle.expectClosed() // the idle connection closes at once
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	default:
	}
	close(release)
	resp, body := busy.read("GET")
	eq(t, resp.StatusCode, 200)
	eq(t, body, "done")
	eq(t, resp.Close, true)
	busy.expectClosed()
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	// New connections are refused.
	late := dial(t, p.addr)
	late.send(get("/fast"))
	late.expectClosed()
}

func TestShutdownDeadline(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	p := simpleProxy(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
	}))
	c := dial(t, p.addr)
	c.send(get("/"))
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := p.srv.Shutdown(ctx); err != context.DeadlineExceeded {
		t.Fatalf("Shutdown = %v, want context.DeadlineExceeded", err)
	}
	close(release)
	resp, _ := c.read("GET")
	eq(t, resp.StatusCode, 200)
}

func TestCancelClosesConnections(t *testing.T) {
	started := make(chan struct{})
	p := simpleProxy(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
	}))
	c := dial(t, p.addr)
	c.send(get("/"))
	<-started
	p.cancel()
	io.ReadAll(c.br) // returns once the proxy closed the connection
}
