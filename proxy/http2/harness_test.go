package http2

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/http2"
	"google.golang.org/grpc/grpclog"

	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/proxy/dispatch"
)

func TestMain(m *testing.M) {
	// The grpc-go interop cases report failures with grpclog's Fatal, which
	// exits the process; route it to the running case instead (see runInterop).
	grpclog.SetLoggerV2(grpcLogger{})
	goleak.VerifyTestMain(m)
}

// guard bounds every wait in these tests: it is a failure guard, never a timing
// assertion.
const guard = 20 * time.Second

// frozenClock never moves: with it every observed RTT is zero, so the balancer's
// costs stay equal and P2C picks at random, which makes per-request spreading
// observable without timing.
type frozenClock struct{ t time.Time }

func (c frozenClock) Now() time.Time { return c.t }

// testProxy is a Server on a loopback listener in front of one service.
type testProxy struct {
	addr string
	d    *dispatch.Dispatcher
	srv  *Server
	pool *Pool

	cancel context.CancelFunc
	ln     net.Listener
	wg     sync.WaitGroup
	once   sync.Once
}

// proxyOpt adjusts a test proxy's dispatcher options or server before it starts.
type proxyOpt func(*dispatch.Options, *Server)

func withFrozenClock() proxyOpt {
	return func(o *dispatch.Options, _ *Server) { o.Clock = frozenClock{t: time.Unix(1e9, 0)} }
}

func withMaxHeaderBytes(n int) proxyOpt {
	return func(_ *dispatch.Options, s *Server) { s.MaxHeaderBytes = n }
}

// startProxy serves the first service of services (resolved whatever the
// authority) and keeps the others routable as backends.
func startProxy(t testing.TB, services []routetable.Service, opts ...proxyOpt) *testProxy {
	t.Helper()
	o := dispatch.Options{Direction: "outbound", Logger: quietLogger()}
	p := &testProxy{pool: &Pool{}}
	p.srv = &Server{Pool: p.pool, Logger: quietLogger()}
	for _, f := range opts {
		f(&o, p.srv)
	}
	d := dispatch.New(o)
	if err := d.Update(&routetable.Table{Services: services}); err != nil {
		t.Fatalf("dispatch update: %v", err)
	}
	p.d = d
	p.srv.Dispatcher = d
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	p.ln = ln
	p.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	resolver := d.Fixed(services[0].Key())
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.srv.ServeConn(ctx, c, resolver)
			}()
		}
	}()
	t.Cleanup(p.stop)
	return p
}

func (p *testProxy) stop() {
	p.once.Do(func() {
		p.ln.Close()
		p.cancel()
		p.wg.Wait()
		p.pool.Close()
	})
}

// service is a routable service named name with the given endpoints and rules.
func service(name string, addrs []string, rules ...routetable.Rule) routetable.Service {
	s := routetable.Service{Name: name, Namespace: "default", Port: 80, Rules: rules}
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, routetable.Endpoint{Address: a})
	}
	return s
}

// startH2C serves h over cleartext HTTP/2 (prior knowledge) on loopback; the
// server is closed when the test ends, if the test has not stopped it itself.
func startH2C(t testing.TB, h http.Handler) (addr string, srv *http.Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	srv = &http.Server{Handler: h, Protocols: &protos, ErrorLog: slog.NewLogLogger(quietLogger().Handler(), slog.LevelDebug)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String(), srv
}

// h2cClient is an HTTP/2 prior-knowledge client.
func h2cClient(t testing.TB) *http.Client {
	tr := &http2.Transport{
		AllowHTTP:          true,
		DisableCompression: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// quietLogger drops debug chatter unless SLUICE_TEST_LOG is set.
func quietLogger() *slog.Logger {
	if os.Getenv("SLUICE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// grpcLogger is grpclog's logger for these tests: Fatal ends the goroutine that
// called it (an interop case, see runInterop) instead of the process.
type grpcLogger struct{}

var (
	fatalMu  sync.Mutex
	fatalMsg []string
)

func (grpcLogger) fatal(args ...any) {
	fatalMu.Lock()
	fatalMsg = append(fatalMsg, fmt.Sprint(args...))
	fatalMu.Unlock()
	runtime.Goexit()
}

func (grpcLogger) Info(...any)                     {}
func (grpcLogger) Infoln(...any)                   {}
func (grpcLogger) Infof(string, ...any)            {}
func (grpcLogger) Warning(...any)                  {}
func (grpcLogger) Warningln(...any)                {}
func (grpcLogger) Warningf(string, ...any)         {}
func (grpcLogger) Error(...any)                    {}
func (grpcLogger) Errorln(...any)                  {}
func (grpcLogger) Errorf(string, ...any)           {}
func (l grpcLogger) Fatal(args ...any)             { l.fatal(args...) }
func (l grpcLogger) Fatalln(args ...any)           { l.fatal(args...) }
func (l grpcLogger) Fatalf(f string, args ...any)  { l.fatal(fmt.Sprintf(f, args...)) }
func (grpcLogger) V(int) bool                      { return false }
func (grpcLogger) InfoDepth(int, ...any)           {}
func (grpcLogger) WarningDepth(int, ...any)        {}
func (grpcLogger) ErrorDepth(int, ...any)          {}
func (l grpcLogger) FatalDepth(_ int, args ...any) { l.fatal(args...) }

// takeFatal returns and clears the Fatal messages logged so far.
func takeFatal() []string {
	fatalMu.Lock()
	defer fatalMu.Unlock()
	m := fatalMsg
	fatalMsg = nil
	return m
}

// waitFor polls cond until it holds or the guard expires.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
