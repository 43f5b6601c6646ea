package http2

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// Defaults for zero Pool fields.
const (
	// DefaultConnectTimeout bounds one TCP connect to an endpoint (Linkerd's outbound default).
	DefaultConnectTimeout = time.Second
	// DefaultPoolIdleTimeout closes an upstream connection that carried no stream for this long.
	DefaultPoolIdleTimeout = 90 * time.Second
	// pingAfter is how long an upstream connection may stay silent before the
	// Transport checks it with a PING; pingTimeout is how long it waits for the answer.
	pingAfter   = 30 * time.Second
	pingTimeout = 15 * time.Second
)

// ErrPoolClosed is returned by RoundTrip after Close.
var ErrPoolClosed = errors.New("http2 pool: closed")

// ConnectError is a failure to open a TCP connection to an endpoint: nothing
// reached the endpoint, so the request may be sent elsewhere.
type ConnectError struct {
	// Addr is the endpoint address that was dialled.
	Addr string
	// Err is the dial failure.
	Err error
}

// Error names the address and the cause.
func (e *ConnectError) Error() string { return fmt.Sprintf("connect to %s: %v", e.Addr, e.Err) }

// Unwrap returns the dial failure.
func (e *ConnectError) Unwrap() error { return e.Err }

// Pool holds one multiplexed HTTP/2 (h2c prior-knowledge) client connection per
// upstream address and replaces connections that die. Requests are balanced per
// request by the dispatcher, never per connection: the caller names the endpoint
// in each request's URL.Host and the Pool only carries it there.
//
// It is built on golang.org/x/net/http2.Transport, whose connection pool keys
// connections by address, opens another connection only when the peer's
// SETTINGS_MAX_CONCURRENT_STREAMS is exhausted, and retries requests the peer
// did not process (GOAWAY, an unusable fresh connection) on a new connection.
// The zero value is ready to use; set the fields before the first request.
type Pool struct {
	// ConnectTimeout bounds each TCP connect (default DefaultConnectTimeout).
	ConnectTimeout time.Duration
	// IdleTimeout closes a connection with no streams after this long (default DefaultPoolIdleTimeout).
	IdleTimeout time.Duration
	// ClientTLS, when set, returns the TLS configuration for connecting to an
	// endpoint that must present the mesh identity identity: RoundTripTo then
	// carries requests for such endpoints over mutual TLS, on connections kept
	// apart per identity and address. It is called for every new connection,
	// so a rotated certificate is used from the next handshake on.
	ClientTLS func(identity string) *tls.Config

	once sync.Once
	tr   *http2.Transport

	mu     sync.Mutex
	meshed map[string]*http2.Transport // by identity
	conns  map[*trackedConn]struct{}
	closed bool
}

func (p *Pool) init() {
	p.once.Do(func() {
		p.tr = p.newTransport(p.dial)
		p.mu.Lock()
		if p.conns == nil {
			p.conns = map[*trackedConn]struct{}{}
		}
		p.mu.Unlock()
	})
}

// newTransport returns an HTTP/2 Transport that opens connections with dial.
func (p *Pool) newTransport(dial func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error)) *http2.Transport {
	idle := p.IdleTimeout
	if idle <= 0 {
		idle = DefaultPoolIdleTimeout
	}
	return &http2.Transport{
		AllowHTTP:          true,
		DialTLSContext:     dial,
		DisableCompression: true, // a proxy passes encodings through untouched
		IdleConnTimeout:    idle,
		ReadIdleTimeout:    pingAfter,
		PingTimeout:        pingTimeout,
	}
}

// meshTransport returns the Transport for endpoints presenting identity.
func (p *Pool) meshTransport(identity string) *http2.Transport {
	p.mu.Lock()
	defer p.mu.Unlock()
	if tr := p.meshed[identity]; tr != nil {
		return tr
	}
	tr := p.newTransport(func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		return p.dialTLS(ctx, network, addr, identity)
	})
	if p.meshed == nil {
		p.meshed = map[string]*http2.Transport{}
	}
	p.meshed[identity] = tr
	return tr
}

// dialTLS opens a TCP connection and completes a mutual TLS handshake on it
// with a peer that must present identity. A failed handshake is a
// ConnectError: the request never reached the peer.
func (p *Pool) dialTLS(ctx context.Context, network, addr, identity string) (net.Conn, error) {
	c, err := p.dial(ctx, network, addr, nil)
	if err != nil {
		return nil, err
	}
	cfg := p.ClientTLS(identity)
	cfg.NextProtos = []string{http2.NextProtoTLS}
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, &ConnectError{Addr: addr, Err: fmt.Errorf("TLS handshake: %w", err)}
	}
	return tc, nil
}

// dial opens a plain TCP connection (h2c prior knowledge: no TLS despite the
// Transport's hook name) and tracks it so Close can end it.
func (p *Pool) dial(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
	timeout := p.ConnectTimeout
	if timeout <= 0 {
		timeout = DefaultConnectTimeout
	}
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, &ConnectError{Addr: addr, Err: err}
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	tc := &trackedConn{Conn: c, pool: p}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.Close()
		return nil, &ConnectError{Addr: addr, Err: ErrPoolClosed}
	}
	p.conns[tc] = struct{}{}
	p.mu.Unlock()
	return tc, nil
}

// RoundTrip sends req to the endpoint named by req.URL.Host (scheme "http"),
// with req.Host as the :authority. It is an http.RoundTripper.
func (p *Pool) RoundTrip(req *http.Request) (*http.Response, error) {
	p.init()
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, ErrPoolClosed
	}
	return p.tr.RoundTrip(req)
}

// RoundTripTo is RoundTrip to an endpoint that must present the mesh
// identity identity: over mutual TLS when ClientTLS is set and identity is
// not empty, else as RoundTrip (h2c).
func (p *Pool) RoundTripTo(req *http.Request, identity string) (*http.Response, error) {
	if identity == "" || p.ClientTLS == nil {
		return p.RoundTrip(req)
	}
	p.init()
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, ErrPoolClosed
	}
	return p.meshTransport(identity).RoundTrip(req)
}

// Unprocessed reports whether an error of RoundTrip or RoundTripTo means the
// endpoint never processed the request (a failed connect or TLS handshake, a
// refused stream, a graceful GOAWAY), so that sending it again is safe.
func (p *Pool) Unprocessed(err error) bool { return unprocessed(err) }

// Close closes every upstream connection, idle or not; requests in flight fail.
func (p *Pool) Close() {
	p.init()
	p.mu.Lock()
	p.closed = true
	conns := make([]*trackedConn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	meshed := make([]*http2.Transport, 0, len(p.meshed))
	for _, tr := range p.meshed {
		meshed = append(meshed, tr)
	}
	p.mu.Unlock()
	p.tr.CloseIdleConnections()
	for _, tr := range meshed {
		tr.CloseIdleConnections()
	}
	for _, c := range conns {
		c.Close()
	}
}

// openConns reports how many upstream connections are open (for tests).
func (p *Pool) openConns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// trackedConn removes itself from its pool when closed.
type trackedConn struct {
	net.Conn
	pool *Pool
	once sync.Once
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.pool.mu.Lock()
		delete(c.pool.conns, c)
		c.pool.mu.Unlock()
	})
	return err
}
