// Package http2 is the proxy's HTTP/2 and gRPC server: it serves prior-knowledge
// (h2c) connections with golang.org/x/net/http2, which does the framing, flow
// control and protocol checks, routes every request through the shared pipeline
// (package dispatch) and forwards it, streaming in both directions, over one
// multiplexed connection per upstream endpoint (Pool). Requests are balanced one
// by one, so a single client connection is spread over every endpoint.
//
// gRPC needs nothing beyond HTTP/2 except in three places: errors the proxy makes
// are trailers-only responses (grpc-status, grpc-message and sluice-proxy-error),
// a trailers-only answer with a retryable grpc-status may be retried, and a
// stream that breaks after its response started ends with a grpc-status trailer
// instead of a reset. Deadlines (grpc-timeout) pass through untouched; a client's
// RST_STREAM cancels the request's context, which cancels the upstream stream.
package http2

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/sluicehq/sluice/proxy/dispatch"
)

// Defaults for zero Server fields.
const (
	// DefaultMaxHeaderBytes bounds a request's header list (SETTINGS_MAX_HEADER_LIST_SIZE).
	DefaultMaxHeaderBytes = 64 << 10
	// DefaultIdleTimeout closes a client connection with no open stream for this long.
	DefaultIdleTimeout = 5 * time.Minute
	// mirrorTimeout bounds a mirrored request when its route sets no request timeout.
	mirrorTimeout = 10 * time.Second
	// maxMirrorsInFlight bounds mirrored requests in flight per Server; more are dropped.
	maxMirrorsInFlight = 128
	// shutdownRecheck is how often Shutdown repeats its GOAWAY for connections
	// that began being served after it started.
	shutdownRecheck = 50 * time.Millisecond
	// minMaxFrameSize is SETTINGS_MAX_FRAME_SIZE's initial (and smallest) value.
	minMaxFrameSize = 16 << 10
)

// Server serves HTTP/2 prior-knowledge connections through a Dispatcher. Set the
// fields before the first ServeConn; they must not change afterwards.
type Server struct {
	// Dispatcher routes requests and runs their attempts. Required.
	Dispatcher *dispatch.Dispatcher
	// Pool carries requests to endpoints. Required; the caller closes it.
	Pool *Pool
	// MaxHeaderBytes bounds a request's headers (default DefaultMaxHeaderBytes);
	// larger ones get 431.
	MaxHeaderBytes int
	// IdleTimeout closes idle client connections (default DefaultIdleTimeout).
	IdleTimeout time.Duration
	// Logger receives connection and forwarding problems (default slog.Default()).
	Logger *slog.Logger
	// ClientID, when set, is called once per connection; a non-empty identity
	// is sent upstream in the sluice-client-id header on every request of the
	// connection. When it is set, a sluice-client-id header the client sent
	// itself is always dropped, so that it cannot be forged.
	ClientID func(conn net.Conn) string
	// Downgrade, when set, carries requests marked with sluice-orig-proto
	// (HTTP/1 requests a client proxy sent over the mesh's HTTP/2 connection)
	// to their endpoint as HTTP/1 again, with the marker removed; it must
	// speak HTTP/1.1 (a net/http Transport with HTTP/2 off). Without it the
	// marker is forwarded as any other header.
	Downgrade http.RoundTripper

	once sync.Once
	log  *slog.Logger
	h2   *http2.Server
	base *http.Server // configuration and graceful-shutdown hook for h2

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	connWG   sync.WaitGroup
	shutting bool

	mirrorsDone  bool // guarded by mu
	mirrorCtx    context.Context
	mirrorCancel context.CancelFunc
	mirrorWG     sync.WaitGroup
	mirrorSlots  chan struct{}
}

func (s *Server) init() {
	s.once.Do(func() {
		s.log = s.Logger
		if s.log == nil {
			s.log = slog.Default()
		}
		maxHeader := s.MaxHeaderBytes
		if maxHeader <= 0 {
			maxHeader = DefaultMaxHeaderBytes
		}
		idle := s.IdleTimeout
		if idle <= 0 {
			idle = DefaultIdleTimeout
		}
		s.base = &http.Server{
			MaxHeaderBytes: maxHeader,
			IdleTimeout:    idle,
			ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		}
		// MaxReadFrameSize stays at the protocol's default (16 KiB) rather than
		// x/net's 1 MiB: peers, h2spec among them, may assume the default, and
		// gRPC clients send 16 KiB frames anyway.
		s.h2 = &http2.Server{IdleTimeout: idle, MaxReadFrameSize: minMaxFrameSize}
		// ConfigureServer links h2 to base so that base.Shutdown sends GOAWAY on
		// every connection h2 serves. It fails only for TLS settings we do not use.
		if err := http2.ConfigureServer(s.base, s.h2); err != nil {
			s.log.Error("http2: configure server", "err", err)
		}
		s.conns = map[net.Conn]struct{}{}
		s.mirrorCtx, s.mirrorCancel = context.WithCancel(context.Background())
		s.mirrorSlots = make(chan struct{}, maxMirrorsInFlight)
	})
}

// ServeConn serves one HTTP/2 prior-knowledge connection until it closes or ctx
// ends. The client preface must not have been consumed: c replays it. The
// resolver decides which service each request on the connection belongs to.
// ServeConn closes c.
func (s *Server) ServeConn(ctx context.Context, c net.Conn, resolver dispatch.Resolver) {
	s.init()
	s.mu.Lock()
	if s.shutting {
		s.mu.Unlock()
		c.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.connWG.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.connWG.Done()
	}()

	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	var clientID string
	if s.ClientID != nil {
		clientID = s.ClientID(c)
	}
	if err := readPreface(c); err != nil {
		s.log.Debug("http2: closing connection", "remote", c.RemoteAddr(), "err", err)
		closeGracefully(c)
		return
	}
	s.h2.ServeConn(filterConn(c), &http2.ServeConnOpts{
		Context:          ctx,
		BaseConfig:       s.base,
		Handler:          &handler{s: s, resolver: resolver, clientID: clientID},
		SawClientPreface: true,
	})
	c.Close()
}

// Shutdown sends GOAWAY on every connection, lets the streams in flight finish
// and returns when every connection has closed, or when ctx ends: then it closes
// the remaining connections and returns ctx's error. Connections handed to
// ServeConn after Shutdown started are closed at once. Mirrored requests still
// in flight are cancelled once the connections are done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.mu.Lock()
	s.shutting = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.mirrorsDone = true // no new mirror may start: mirrorWG.Add must not race Wait
		s.mu.Unlock()
		s.mirrorCancel()
		s.mirrorWG.Wait()
	}()

	done := make(chan struct{})
	go func() {
		s.connWG.Wait()
		close(done)
	}()
	// base.Shutdown runs the GOAWAY hook for every connection registered with h2;
	// it returns at once as base itself has no listeners or connections. A
	// connection accepted just before Shutdown may register with h2 a moment
	// later, so the hook is repeated until everything has closed (each
	// connection sends its GOAWAY once).
	goAway := func() { _ = s.base.Shutdown(context.Background()) }
	goAway()
	tick := time.NewTicker(shutdownRecheck)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return nil
		case <-tick.C:
			goAway()
		case <-ctx.Done():
			s.mu.Lock()
			for c := range s.conns {
				c.Close()
			}
			s.mu.Unlock()
			<-done
			return ctx.Err()
		}
	}
}
