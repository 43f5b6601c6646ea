// Package http1 is the sidecar's HTTP/1.x data path: a hand-written server loop
// that parses requests into reusable heads, routes them through the shared
// dispatch pipeline, and forwards them over a pool of keep-alive upstream
// connections, streaming bodies with their framing preserved or re-framed.
//
// It does not use net/http's Server or httputil.ReverseProxy: per request it
// reads the head once, writes the upstream request with one buffered write,
// copies the response through the client connection's buffer, and allocates only
// the head strings and what the dispatcher needs. Buffers and heads belong to the
// client connection and are pooled between connections.
//
// A sidecar is transparent: the proxy adds no Forwarded or X-Forwarded-For
// headers, it only drops hop-by-hop fields and re-frames bodies when it must.
package http1

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/proxy/dispatch"
)

// Server defaults.
const (
	DefaultMaxHeaderBytes = 64 << 10
	DefaultHeaderTimeout  = 10 * time.Second
	DefaultIdleTimeout    = 90 * time.Second
)

// client connection buffer sizes.
const (
	clientReadBuf  = 4 << 10
	clientWriteBuf = 4 << 10
)

// maxMirrors bounds the mirrored requests in flight; more are dropped.
const maxMirrors = 64

// Server serves HTTP/1.x connections through a dispatcher. Set the fields before
// the first ServeConn; a Server must not be copied after first use.
type Server struct {
	// Dispatcher routes every request and runs the attempt loop.
	Dispatcher *dispatch.Dispatcher
	// Pool holds the upstream connections; nil uses a private pool, which
	// Shutdown closes.
	Pool *Pool
	// MaxHeaderBytes bounds a request head (default 64 KiB); a larger one gets
	// 431 and the connection is closed. It also bounds response heads and trailers.
	MaxHeaderBytes int
	// HeaderTimeout bounds reading a request head once its first byte arrived
	// (default 10s); a client that stalls gets 408 and the connection is closed.
	HeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle that long between requests
	// (default 90s). It also bounds reading a buffered request body.
	IdleTimeout time.Duration
	// Logger receives connection-level problems; nil uses slog.Default().
	Logger *slog.Logger
	// ClientID, when set, is called once per connection; a non-empty identity is
	// sent upstream in the sluice-client-id header on every request of the
	// connection. When it is set, a sluice-client-id header the client sent
	// itself is always dropped, so that it cannot be forged.
	ClientID func(conn net.Conn) string
	// Mesh, when set, carries requests to endpoints that have a TLS identity
	// over mutual TLS as HTTP/2 streams, many on one connection per endpoint,
	// marked with sluice-orig-proto so that the peer proxy hands them to its
	// application as HTTP/1 again. Requests that upgrade the connection
	// (WebSocket) cannot ride HTTP/2: they go as HTTP/1 over a TLS connection
	// from Pool (Pool.DialTLS). Without Mesh every request is HTTP/1.
	Mesh MeshTransport

	initOnce sync.Once
	pool     *Pool
	log      *slog.Logger
	mirrors  chan struct{}

	mu       sync.Mutex
	conns    map[*clientConn]struct{}
	shutdown atomic.Bool
	inFlight atomic.Int64 // mirrors running

	mirrorsDropped atomic.Int64
}

// connection states, for Shutdown.
const (
	stateActive int32 = iota
	stateIdle
	stateClosing
)

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.pool = s.Pool
		if s.pool == nil {
			s.pool = &Pool{}
		}
		s.log = s.Logger
		if s.log == nil {
			s.log = slog.Default()
		}
		s.mirrors = make(chan struct{}, maxMirrors)
		s.conns = map[*clientConn]struct{}{}
	})
}

func (s *Server) maxHeaderBytes() int {
	if s.MaxHeaderBytes > 0 {
		return s.MaxHeaderBytes
	}
	return DefaultMaxHeaderBytes
}

func (s *Server) headerTimeout() time.Duration {
	if s.HeaderTimeout > 0 {
		return s.HeaderTimeout
	}
	return DefaultHeaderTimeout
}

func (s *Server) idleTimeout() time.Duration {
	if s.IdleTimeout > 0 {
		return s.IdleTimeout
	}
	return DefaultIdleTimeout
}

var connPool sync.Pool

// ServeConn serves requests on c until the client closes it, an error or the
// client asks to close, ctx is cancelled (c is then closed at once, aborting a
// request in flight), or Shutdown was called (after the request in flight).
// resolver maps each request's authority to a service. ServeConn closes c.
func (s *Server) ServeConn(ctx context.Context, c net.Conn, resolver dispatch.Resolver) {
	s.init()
	cc, _ := connPool.Get().(*clientConn)
	if cc == nil {
		cc = &clientConn{
			br: bufio.NewReaderSize(c, clientReadBuf),
			bw: bufio.NewWriterSize(c, clientWriteBuf),
		}
		cc.attemptFn = cc.attempt
	} else {
		cc.br.Reset(c)
		cc.bw.Reset(c)
	}
	cc.s, cc.c, cc.ctx, cc.resolver = s, c, ctx, resolver
	cc.closing = false
	cc.state.Store(stateActive)
	defer func() {
		c.Close()
		s.untrack(cc)
		cc.release()
		connPool.Put(cc)
	}()
	if !s.track(cc) {
		return
	}
	if s.ClientID != nil {
		cc.clientID = s.ClientID(c)
	}
	aborted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(aborted)
		cc.abort()
	})
	defer func() {
		if !stop() {
			<-aborted // abort must be over before cc is reused
		}
	}()
	for !cc.closing && ctx.Err() == nil {
		cc.serveOne()
	}
}

func (s *Server) track(cc *clientConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown.Load() {
		return false
	}
	s.conns[cc] = struct{}{}
	return true
}

func (s *Server) untrack(cc *clientConn) {
	s.mu.Lock()
	delete(s.conns, cc)
	s.mu.Unlock()
}

// aLongTimeAgo is a deadline in the past, to wake a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

// Shutdown stops accepting requests: idle connections close at once, and every
// connection with a request in flight closes after its response (which says
// Connection: close). It also waits for mirrored requests. It returns when all
// are done, or ctx.Err() when ctx ends first; connections still open then are
// left to finish (cancel ServeConn's ctx to abort them).
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.shutdown.Store(true)
	s.mu.Lock()
	for cc := range s.conns {
		if cc.state.CompareAndSwap(stateIdle, stateClosing) {
			cc.c.SetReadDeadline(aLongTimeAgo)
		}
	}
	s.mu.Unlock()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 && s.inFlight.Load() == 0 {
			if s.Pool == nil {
				s.pool.Close()
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// clientConn is the state of one client connection, reused across requests and
// pooled across connections.
type clientConn struct {
	s        *Server
	c        net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	ctx      context.Context
	resolver dispatch.Resolver
	clientID string

	state   atomic.Int32
	closing bool // close the connection after this exchange
	cur     atomic.Pointer[upConn]

	req  requestHead
	resp responseHead
	hbuf []byte // heads that do not fit a bufio buffer
	wbuf []byte // heads being written
	ed   attemptHeaders

	// per request
	plan        *dispatch.Plan
	path        string // after rewrite
	body        []byte // the buffered (replayable) request body
	bodyBuf     *[]byte
	bodyPeeked  bool // body aliases br's buffer: discard it after the exchange
	bodyRead    bool // the request body has been read from the client
	bodyTouched bool // a streaming attempt started reading the body
	upgraded    *upConn
	attemptFn   dispatch.AttemptFunc
}

// release drops per-connection references before pooling.
func (cc *clientConn) release() {
	cc.releaseBody()
	cc.s, cc.c, cc.ctx, cc.resolver, cc.clientID, cc.plan = nil, nil, nil, nil, "", nil
	cc.req.reset()
	cc.resp.reset()
	cc.req.raw, cc.resp.raw = "", ""
	clear(cc.ed.list)
	cc.ed = attemptHeaders{list: cc.ed.list[:0]}
	cc.br.Reset(nil)
	cc.bw.Reset(nil)
	if cap(cc.hbuf) > 8<<10 {
		cc.hbuf = nil
	}
	// A connection that once carried thousands of header fields does not keep
	// their storage in the pool.
	if cap(cc.req.headers) > 128 {
		cc.req.headers = nil
	}
	if cap(cc.resp.headers) > 128 {
		cc.resp.headers = nil
	}
	if cap(cc.ed.list) > 128 {
		cc.ed.list = nil
	}
	if cap(cc.wbuf) > 8<<10 {
		cc.wbuf = nil
	}
}

// abort closes the connection and the upstream connection in use: ServeConn's
// context ended.
func (cc *clientConn) abort() {
	cc.c.Close()
	if up := cc.cur.Load(); up != nil {
		up.Conn.Close()
	}
}

// serveOne waits for, reads and handles one request.
func (cc *clientConn) serveOne() {
	s := cc.s
	c := cc.c
	c.SetReadDeadline(time.Now().Add(s.idleTimeout()))
	cc.state.Store(stateIdle)
	if s.shutdown.Load() {
		cc.closing = true
		return
	}
	_, err := cc.br.Peek(1)
	if !cc.state.CompareAndSwap(stateIdle, stateActive) || err != nil {
		cc.closing = true // shutdown, idle timeout, client closed
		return
	}
	if b, _ := cc.br.Peek(cc.br.Buffered()); headEnd(b) < 0 {
		c.SetReadDeadline(time.Now().Add(s.headerTimeout()))
	}
	raw, hbuf, err := readHead(cc.br, cc.hbuf, s.maxHeaderBytes(), true)
	cc.hbuf = hbuf
	if err != nil {
		cc.closing = true
		switch {
		case errors.Is(err, errHeadTooLarge):
			cc.writeLocal(&requestError{status: 431, reason: "request headers too large"})
		case errors.Is(err, os.ErrDeadlineExceeded) && !s.shutdown.Load():
			cc.writeLocal(&requestError{status: 408, reason: "timed out reading the request head"})
		case errors.Is(err, errBadLineEnd):
			cc.writeLocal(badRequest("malformed request"))
		}
		return
	}
	if err := cc.req.parse(raw); err != nil {
		cc.closing = true
		var re *requestError
		if errors.As(err, &re) {
			cc.writeLocal(re)
		}
		return
	}
	cc.handle()
}

// writeLocal answers a request the proxy refused before routing; the
// connection closes after.
func (cc *clientConn) writeLocal(e *requestError) {
	cc.closing = true
	cc.writeError(&dispatch.Error{Status: e.status, Reason: e.reason})
}

// writeError writes a response the proxy makes itself.
func (cc *clientConn) writeError(e *dispatch.Error) {
	switch e.Status {
	case 400, 408, 431:
		cc.closing = true
	}
	if !cc.closing && !cc.finishRequestBody() {
		cc.closing = true
	}
	reason := sanitize(e.Reason)
	body := reason + "\n"
	b := cc.wbuf[:0]
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, ' ')
	b = append(b, statusText(e.Status)...)
	b = append(b, "\r\nContent-Type: text/plain; charset=utf-8\r\n"...)
	b = append(b, dispatch.HeaderName...)
	b = append(b, ": "...)
	b = append(b, reason...)
	if e.Unprocessed {
		b = append(b, "\r\n"...)
		b = append(b, dispatch.HeaderUnprocessed...)
		b = append(b, ": 1"...)
	}
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n"...)
	b = cc.appendConnection(b)
	b = append(b, "\r\n"...)
	if cc.req.method != "HEAD" {
		b = append(b, body...)
	}
	cc.wbuf = b
	cc.bw.Write(b)
	if cc.bw.Flush() != nil {
		cc.closing = true
	}
}

// writeRedirect answers with a redirect filter's Location.
func (cc *clientConn) writeRedirect(status int, location string) {
	if !cc.finishRequestBody() {
		cc.closing = true
	}
	b := cc.wbuf[:0]
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, statusText(status)...)
	b = append(b, "\r\nLocation: "...)
	b = append(b, sanitize(location)...)
	b = append(b, "\r\nContent-Length: 0\r\n"...)
	b = cc.appendConnection(b)
	b = append(b, "\r\n"...)
	cc.wbuf = b
	cc.bw.Write(b)
	if cc.bw.Flush() != nil {
		cc.closing = true
	}
}

// appendConnection adds the Connection field a proxy-made response needs.
func (cc *clientConn) appendConnection(b []byte) []byte {
	if cc.closing || !cc.req.keepAlive || cc.s.shutdown.Load() {
		cc.closing = true
		return append(b, "Connection: close\r\n"...)
	}
	if cc.req.minor == 0 {
		return append(b, "Connection: keep-alive\r\n"...)
	}
	return b
}

// sanitize makes s safe as a header value.
func sanitize(s string) string {
	if validValue(s) {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			b[i] = ' '
		}
	}
	return string(b)
}
