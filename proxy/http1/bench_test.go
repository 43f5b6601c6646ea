package http1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/proxy/dispatch"
)

// benchBody is the response body of the benchmark backend (B.6b uses 64 bytes).
var benchBody = strings.Repeat("x", 64)

// cannedBackend is a minimal keep-alive HTTP/1.1 server: it reads request heads
// and answers each with the same 64-byte response, so that almost all the CPU a
// benchmark spends is the proxy's.
func cannedBackend(tb testing.TB) string {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 64\r\n\r\n" + benchBody)
	return startRaw(tb, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			if err := skipHead(br); err != nil {
				return
			}
			if _, err := c.Write(resp); err != nil {
				return
			}
		}
	})
}

// skipHead reads one message head (requests here carry no body).
func skipHead(br *bufio.Reader) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			return nil
		}
	}
}

// benchClient is a raw keep-alive client that sends one request at a time.
type benchClient struct {
	c   net.Conn
	br  *bufio.Reader
	req []byte
}

func newBenchClient(addr string) (*benchClient, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &benchClient{
		c:   c,
		br:  bufio.NewReader(c),
		req: []byte("GET /bench?x=1 HTTP/1.1\r\nHost: web\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"),
	}, nil
}

var clPrefix = []byte("content-length:")

// roundTrip sends the request and reads the whole response.
func (bc *benchClient) roundTrip() error {
	if _, err := bc.c.Write(bc.req); err != nil {
		return err
	}
	n := -1
	status := false
	for {
		line, err := bc.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if !status {
			if !bytes.HasPrefix(line, []byte("HTTP/1.1 200")) {
				return fmt.Errorf("status line %q", line)
			}
			status = true
			continue
		}
		if len(line) <= 2 {
			break
		}
		if len(line) > len(clPrefix) && bytes.EqualFold(line[:len(clPrefix)], clPrefix) {
			n, err = strconv.Atoi(string(bytes.TrimSpace(line[len(clPrefix):])))
			if err != nil {
				return err
			}
		}
	}
	if n != len(benchBody) {
		return fmt.Errorf("content-length %d", n)
	}
	_, err := bc.br.Discard(n)
	return err
}

// reverseProxy serves httputil.ReverseProxy to backend: the baseline.
func reverseProxy(tb testing.TB, backend string) string {
	u, _ := url.Parse("http://" + backend)
	rp := httputil.NewSingleHostReverseProxy(u)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 1024
	rp.Transport = tr
	rp.ErrorLog = log.New(io.Discard, "", 0)
	tb.Cleanup(tr.CloseIdleConnections)
	return startHTTP(tb, rp)
}

// BenchmarkProxy compares the proxy against httputil.ReverseProxy (and no proxy
// at all) on loopback: parallel keep-alive clients, a canned 64-byte backend.
// Compare ns/op of "sluice" and "reverseproxy"; "direct" is the cost of the
// client and backend alone.
func BenchmarkProxy(b *testing.B) {
	backend := cannedBackend(b)
	targets := []struct {
		name string
		addr func(b *testing.B) string
	}{
		{"direct", func(*testing.B) string { return backend }},
		{"sluice", func(b *testing.B) string {
			return startProxy(b, &routetable.Table{Services: []routetable.Service{service("web", backend)}}, "web").addr
		}},
		{"reverseproxy", func(b *testing.B) string { return reverseProxy(b, backend) }},
	}
	for _, tgt := range targets {
		b.Run(tgt.name, func(b *testing.B) {
			addr := tgt.addr(b)
			b.SetParallelism(16) // 16 × GOMAXPROCS connections
			b.ReportAllocs()
			var mu sync.Mutex
			var clients []*benchClient
			defer func() {
				for _, c := range clients {
					c.c.Close()
				}
			}()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				bc, err := newBenchClient(addr)
				if err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				clients = append(clients, bc)
				mu.Unlock()
				for pb.Next() {
					if err := bc.roundTrip(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkParseRequest measures reading and parsing a typical request head.
func BenchmarkParseRequest(b *testing.B) {
	raw := "GET /api/v1/items?limit=10 HTTP/1.1\r\nHost: web.default.svc.cluster.local:8080\r\nUser-Agent: bench/1.0\r\n" +
		"Accept: application/json\r\nAccept-Encoding: gzip\r\nX-Request-Id: 0123456789abcdef\r\nCookie: a=b; c=d\r\n\r\n"
	r := strings.NewReader(raw)
	br := bufio.NewReader(r)
	var h requestHead
	var buf []byte
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		r.Reset(raw)
		br.Reset(r)
		s, nb, err := readHead(br, buf, 1<<16, true)
		buf = nb
		if err != nil {
			b.Fatal(err)
		}
		if err := h.parse(s); err != nil {
			b.Fatal(err)
		}
	}
}

// TestServeForBench runs the proxy in front of a backend until interrupted,
// for an external load generator (wrk) and reference proxies (haproxy,
// nginx): SLUICE_BENCH_LISTEN=127.0.0.1:18080 SLUICE_BENCH_BACKEND=127.0.0.1:18081.
// Without the variables it is skipped.
func TestServeForBench(t *testing.T) {
	listen, backend := getenv("SLUICE_BENCH_LISTEN"), getenv("SLUICE_BENCH_BACKEND")
	if listen == "" || backend == "" {
		t.Skip("set SLUICE_BENCH_LISTEN and SLUICE_BENCH_BACKEND to serve for an external benchmark")
	}
	d := newBenchDispatcher(t, backend)
	pool := &Pool{MaxIdlePerHost: 1024}
	defer pool.Close()
	srv := &Server{Dispatcher: d, Pool: pool}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	resolver := d.Fixed(key("web"))
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv.ServeConn(ctx, c, resolver)
		}()
	}
}

// TestBenchBackend serves the B.6b reference backend (net/http, 64-byte body)
// until interrupted: SLUICE_BENCH_BACKEND_LISTEN=127.0.0.1:18081. Without the
// variable it is skipped.
func TestBenchBackend(t *testing.T) {
	listen := getenv("SLUICE_BENCH_BACKEND_LISTEN")
	if listen == "" {
		t.Skip("set SLUICE_BENCH_BACKEND_LISTEN to serve the benchmark backend")
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, benchBody)
	})}
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		t.Fatal(err)
	}
}

func getenv(k string) string { return os.Getenv(k) }

func newBenchDispatcher(t testing.TB, backend string) *dispatch.Dispatcher {
	d := dispatch.New(dispatch.Options{Direction: "outbound"})
	if err := d.Update(&routetable.Table{Services: []routetable.Service{service("web", backend)}}); err != nil {
		t.Fatal(err)
	}
	return d
}
