package http1

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/proxy/dispatch"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// guard is the failure deadline of anything a test waits for.
const guard = 10 * time.Second

// startHTTP runs a net/http backend on 127.0.0.1 and returns its address.
func startHTTP(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ErrorLog: nil}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// startRaw runs a raw TCP backend: serve is called for each connection in its
// own goroutine and the connection is closed when it returns.
func startRaw(t testing.TB, serve func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c)
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// service builds a routetable service named name with the given endpoints.
func service(name string, addrs ...string) routetable.Service {
	s := routetable.Service{Name: name, Namespace: "test", Port: 80}
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, routetable.Endpoint{Address: a})
	}
	return s
}

func key(name string) string { return routetable.ServiceKey(name, "test", 80) }

// proxy is a running Server on a 127.0.0.1 listener.
type proxy struct {
	addr   string
	srv    *Server
	d      *dispatch.Dispatcher
	pool   *Pool
	cancel context.CancelFunc
}

type proxyOpt func(*Server)

// startProxy serves the table's services; every connection resolves to the
// service named entry.
func startProxy(t testing.TB, table *routetable.Table, entry string, opts ...proxyOpt) *proxy {
	t.Helper()
	d := dispatch.New(dispatch.Options{Direction: "outbound", Logger: slog.New(slog.DiscardHandler)})
	if err := d.Update(table); err != nil {
		t.Fatal(err)
	}
	pool := &Pool{}
	srv := &Server{Dispatcher: d, Pool: pool, Logger: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				srv.ServeConn(ctx, c, d.Fixed(key(entry)))
			}()
		}
	}()
	p := &proxy{addr: ln.Addr().String(), srv: srv, d: d, pool: pool, cancel: cancel}
	t.Cleanup(func() {
		ln.Close()
		sctx, scancel := context.WithTimeout(context.Background(), guard)
		defer scancel()
		if err := srv.Shutdown(sctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		cancel()
		wg.Wait()
		pool.Close()
	})
	return p
}

// simpleProxy proxies to one net/http backend.
func simpleProxy(t testing.TB, h http.Handler, opts ...proxyOpt) *proxy {
	t.Helper()
	addr := startHTTP(t, h)
	return startProxy(t, &routetable.Table{Services: []routetable.Service{service("web", addr)}}, "web", opts...)
}

// client is a raw keep-alive connection to the proxy.
type client struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(guard))
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, br: bufio.NewReader(c)}
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// read reads one response (to a request with method) and its body.
func (c *client) read(method string) (*http.Response, string) {
	c.t.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		c.t.Fatalf("reading response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("reading body: %v", err)
	}
	resp.Body.Close()
	return resp, string(b)
}

// do sends a raw request and reads its response.
func (c *client) do(method, raw string) (*http.Response, string) {
	c.t.Helper()
	c.send(raw)
	return c.read(method)
}

// expectClosed checks that the proxy closes the connection (after any bytes
// still unread).
func (c *client) expectClosed() {
	c.t.Helper()
	rest, err := io.ReadAll(c.br)
	if err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		c.t.Fatalf("expected the connection to close, got %v (after %q)", err, rest)
	}
	if len(rest) > 0 {
		c.t.Fatalf("unexpected bytes before close: %q", rest)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// get is a minimal GET request for host web.
func get(path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: web\r\n\r\n"
}

// waitFor polls cond until it holds or the guard expires.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
