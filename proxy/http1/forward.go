package http1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/proxy/balance"
	"github.com/sluicehq/sluice/proxy/dispatch"
	"github.com/sluicehq/sluice/proxy/retry"
	"github.com/sluicehq/sluice/proxy/route"
	"github.com/sluicehq/sluice/proxy/tcp"
)

// expectContinueTimeout is how long the proxy waits for an upstream's
// 100 Continue before sending the body anyway (an upstream that ignores
// Expect would otherwise wait for a body the client is holding back).
const expectContinueTimeout = time.Second

// senderGrace is how long a finished response waits for a request body still
// being streamed before both connections are given up.
const senderGrace = 100 * time.Millisecond

// drainLimit is the most response body read to keep an upstream connection
// when a response is discarded; a larger one closes the connection instead.
const drainLimit = 4 << 10

var bodyBufs = sync.Pool{New: func() any { b := make([]byte, 0, retry.MaxBufferedBody); return &b }}

// handle routes and forwards one parsed request.
func (cc *clientConn) handle() {
	s := cc.s
	req := &cc.req
	cc.body, cc.bodyPeeked, cc.bodyRead, cc.bodyTouched, cc.upgraded = nil, false, !req.hasBody(), false, nil
	defer cc.releaseBody()

	svc, perr := dispatch.ResolveRequest(cc.resolver, req.method, req.path, req.authority)
	if perr != nil {
		cc.writeError(perr)
		return
	}
	plan, perr := s.Dispatcher.Route(svc, req, false)
	if perr != nil {
		cc.writeError(perr)
		return
	}
	cc.plan = plan
	defer func() { cc.plan = nil }()
	rule := plan.Rule
	if loc, status, ok := rule.RedirectLocation("http", req.authority, svc.Spec.Port, req.path, req.rawQuery); ok {
		cc.writeRedirect(status, loc)
		return
	}
	if rule.Invalid() {
		cc.writeError(&dispatch.Error{Status: 500, GRPC: dispatch.GRPCInternal, Reason: "invalid route rule: no backends"})
		return
	}
	f := &rule.Spec.Filters
	route.ApplyHeaders(f.RequestHeaders, req)
	cc.path = req.path
	if rw := f.URLRewrite; rw != nil {
		if rw.Hostname != "" {
			req.authority = rw.Hostname
		}
		cc.path = rule.RewritePath(req.path)
	}

	replayable := cc.bufferBody()
	if cc.closing { // reading the body failed
		return
	}
	if replayable {
		if keys := rule.Mirrors(rand.Uint64); len(keys) > 0 {
			cc.mirror(keys)
		}
	}
	res := s.Dispatcher.Forward(cc.ctx, plan, replayable, cc.attemptFn)
	if !res.Written && res.Err != nil {
		cc.writeError(dispatch.AsError(res.Err))
		return
	}
	if up := cc.upgraded; up != nil {
		cc.upgraded = nil
		cc.splice(up)
		return
	}
	if !cc.bodyRead && !cc.finishRequestBody() {
		cc.closing = true
	}
}

// bufferBody reads a request body small enough to replay (Content-Length up to
// retry.MaxBufferedBody, no Expect) and reports whether the request can be
// replayed. The idle deadline set for the head stays when nothing more is read
// from the client during the exchange; a streamed body clears it.
func (cc *clientConn) bufferBody() bool {
	req := &cc.req
	c := cc.c
	if !req.hasBody() {
		return true
	}
	if req.chunked || req.expectContinue || req.contentLength > retry.MaxBufferedBody {
		c.SetReadDeadline(time.Time{})
		return false
	}
	n := int(req.contentLength)
	if n <= cc.br.Buffered() {
		// The body arrived with the head: use it where it lies.
		cc.body, _ = cc.br.Peek(n)
		cc.bodyPeeked = true
		cc.bodyRead = true
		return true
	}
	c.SetReadDeadline(time.Now().Add(cc.s.idleTimeout()))
	bp := bodyBufs.Get().(*[]byte)
	b := (*bp)[:n]
	if _, err := io.ReadFull(cc.br, b); err != nil {
		bodyBufs.Put(bp)
		cc.closing = true
		if errors.Is(err, os.ErrDeadlineExceeded) {
			cc.writeLocal(&requestError{status: 408, reason: "timed out reading the request body"})
		}
		return false
	}
	cc.bodyBuf, cc.body, cc.bodyRead = bp, b, true
	return true
}

// releaseBody returns the buffered body's storage.
func (cc *clientConn) releaseBody() {
	if cc.bodyPeeked {
		cc.br.Discard(len(cc.body))
		cc.bodyPeeked = false
	}
	if cc.bodyBuf != nil {
		bodyBufs.Put(cc.bodyBuf)
		cc.bodyBuf = nil
	}
	cc.body = nil
}

// finishRequestBody consumes a request body nobody forwarded so that the
// connection can carry the next request. It reports false when the connection
// must close instead: the body is large, streamed, or held back by Expect.
func (cc *clientConn) finishRequestBody() bool {
	req := &cc.req
	if cc.bodyRead || !req.hasBody() {
		return true
	}
	if req.chunked || req.expectContinue || req.contentLength > drainLimit {
		return false
	}
	cc.c.SetReadDeadline(time.Now().Add(cc.s.headerTimeout()))
	err := discardN(cc.br, req.contentLength)
	cc.c.SetReadDeadline(time.Time{})
	cc.bodyRead = err == nil
	return err == nil
}

// attemptHeaders is the header set of one attempt: the request's fields after
// the rule's filters, plus the backend's own edits. It implements
// route.HeaderEditor without touching the request, so that a retry to another
// backend starts clean.
type attemptHeaders struct {
	list      headerList
	authority string
}

func (a *attemptHeaders) Set(name, value string) {
	if equalFold(name, "host") {
		a.authority = value
		return
	}
	a.list.set(name, value)
}

func (a *attemptHeaders) Add(name, value string) {
	if equalFold(name, "host") {
		a.authority = value
		return
	}
	a.list.add(name, value)
}

func (a *attemptHeaders) Del(name string) {
	if !equalFold(name, "host") {
		a.list.del(name)
	}
}

// attempt is the dispatch.AttemptFunc: one try of the request on t.
func (cc *clientConn) attempt(ctx context.Context, t *dispatch.Target, att *balance.Attempt, last bool) dispatch.Result {
	addr := t.Endpoint.Addr()
	var identity string
	if cc.s.Mesh != nil || cc.s.pool.DialTLS != nil {
		identity = t.Endpoint.Spec().Identity
	}
	if identity != "" && cc.s.Mesh != nil && cc.req.upgrade == "" {
		return cc.attemptMesh(ctx, t, att, last, identity)
	}
	start := time.Now()
	streaming := !cc.bodyRead
	if cc.bodyTouched {
		// An earlier attempt streamed (part of) the body: it cannot be sent again.
		return dispatch.Result{Err: errBodyConsumed, GRPCStatus: -1}
	}
	for try := 0; ; try++ {
		var up *upConn
		var err error
		if try == 0 {
			// A request that cannot be sent twice (a streamed body, a method that
			// is not idempotent) takes no chance on a pooled connection the
			// upstream already closed: it is probed first, for one syscall.
			if up = cc.s.pool.getIdle(cc.s.pool.key(addr, identity)); up != nil && (streaming || !cc.req.idempotent()) && !alive(up.Conn) {
				up.Conn.Close()
				up = nil
			}
		}
		if up == nil {
			up, err = cc.s.pool.dialFor(ctx, addr, identity)
		}
		if err != nil {
			return dispatch.Result{Err: err, GRPCStatus: -1, Retryable: true}
		}
		res, stale := cc.exchange(ctx, up, t, att, last, start)
		if stale && try == 0 {
			continue // the keep-alive race: the upstream closed an idle connection
		}
		return res
	}
}

// sender streams a request body upstream while the response is read. With
// Expect: 100-continue it first waits for a decision: send (100 Continue, or no
// answer within expectContinueTimeout) or abandon (a final response came first).
type sender struct {
	done chan error

	mu      sync.Mutex
	state   int // senderWaiting, senderSending, senderAbandoned
	decided chan struct{}
}

const (
	senderWaiting = iota
	senderSending
	senderAbandoned
)

// decide settles a waiting sender; it reports whether the body is (being) sent.
func (s *sender) decide(send bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == senderWaiting {
		s.state = senderAbandoned
		if send {
			s.state = senderSending
		}
		close(s.decided)
	}
	return s.state == senderSending
}

var (
	errAbandoned    = errors.New("request body not sent")
	errBodyConsumed = errors.New("request body already streamed to an earlier attempt")
)

// exchange sends the request on up and relays the response. stale reports a
// reused connection that failed before the upstream could have seen the
// request: the caller retries once on a fresh connection.
func (cc *clientConn) exchange(ctx context.Context, up *upConn, t *dispatch.Target, att *balance.Attempt, last bool, start time.Time) (res dispatch.Result, stale bool) {
	res.GRPCStatus = -1
	req := &cc.req
	cc.cur.Store(up)
	defer cc.cur.Store(nil)
	up.setDeadline(ctx)

	// The head, with the backend's header edits on a copy of the fields.
	hl := req.headers
	host := req.authority
	if b := t.Backend; b != nil && b.RequestHeaders != nil {
		cc.ed.list = append(cc.ed.list[:0], req.headers...)
		cc.ed.authority = req.authority
		route.ApplyHeaders(b.RequestHeaders, &cc.ed)
		hl, host = cc.ed.list, cc.ed.authority
	}
	if host == "" {
		host = up.addr
	}
	cc.wbuf = req.appendHead(cc.wbuf[:0], hl, cc.path, req.rawQuery, host, cc.clientID, cc.s.ClientID != nil)
	up.bw.Write(cc.wbuf)
	streaming := !cc.bodyRead
	if cc.body != nil {
		up.bw.Write(cc.body)
	}
	var snd *sender
	var writeErr error
	if streaming {
		if err := up.bw.Flush(); err != nil {
			up.Conn.Close() // nothing of the body was read yet: another try is safe
			return dispatch.Result{Err: fmt.Errorf("writing request to %s: %w", up.addr, err), GRPCStatus: -1, Retryable: true}, false
		}
		snd = cc.startSender(up)
	} else if err := up.bw.Flush(); err != nil {
		if up.reused {
			up.Conn.Close()
			return res, true
		}
		writeErr = err // the upstream may still have answered; read before giving up
	}

	// Response heads, relaying interim ones.
	resp := &cc.resp
	firstByte := false
	for {
		if _, err := up.br.Peek(1); err != nil {
			if !firstByte && up.reused && snd == nil && (req.idempotent() || writeErr != nil) && isStale(err) {
				up.Conn.Close()
				return res, true
			}
			return cc.failAttempt(ctx, up, snd, fmt.Errorf("reading response from %s: %w", up.addr, orWrite(err, writeErr)))
		}
		if !firstByte {
			firstByte = true
			att.FirstByte()
			res.Latency = time.Since(start)
		}
		raw, hbuf, err := readHead(up.br, cc.hbuf, cc.s.maxHeaderBytes(), false)
		cc.hbuf = hbuf
		if err == nil {
			err = resp.parse(raw)
		}
		if err != nil {
			return cc.failAttempt(ctx, up, snd, fmt.Errorf("reading response from %s: %w", up.addr, err))
		}
		if resp.status >= 200 || resp.status == 101 {
			break
		}
		// 1xx: 100 Continue lets a held-back body go; relay every one to 1.1 clients.
		if resp.status == 100 && snd != nil {
			snd.decide(true)
		}
		if req.minor >= 1 {
			cc.wbuf = resp.appendHead(cc.wbuf[:0], frameNone, frameNone, false, false)
			cc.bw.Write(cc.wbuf)
			if err := cc.bw.Flush(); err != nil {
				cc.closing = true
				up.Conn.Close()
				cc.stopSender(up, snd, true)
				return dispatch.Result{Status: resp.status, GRPCStatus: -1, Written: true}, false
			}
		}
	}
	if snd != nil && !snd.decide(false) {
		// A final answer before 100 Continue: the client still holds its body back.
		cc.closing = true
	}
	res.Status = resp.status

	if resp.status == 101 {
		if req.upgrade == "" {
			return cc.failAttempt(ctx, up, snd, fmt.Errorf("%w: 101 Switching Protocols to a request that did not ask to upgrade", errBadResponse))
		}
		if err := cc.stopSender(up, snd, false); err != nil { // a body before the switch must be complete
			return cc.failAttempt(ctx, up, nil, fmt.Errorf("sending request body to %s: %w", up.addr, err))
		}
		up.setDeadline(context.Background())
		cc.wbuf = resp.appendHead(cc.wbuf[:0], frameNone, frameNone, false, false)
		cc.bw.Write(cc.wbuf)
		res.Written = true
		if err := cc.bw.Flush(); err != nil {
			cc.closing = true
			up.Conn.Close()
			return res, false
		}
		cc.upgraded = up // spliced once Forward returns
		cc.closing = true
		return res, false
	}

	in := resp.bodyFraming(req.method)
	if !last && cc.bodyRead && !streaming && cc.plan.Retry.RetryableStatus(resp.status) {
		// Try again elsewhere: discard this answer, keeping the connection if cheap.
		reusable := !resp.close && cc.discardResponse(up, in)
		up.release(reusable)
		res.Retryable = true
		return res, false
	}

	route.ApplyHeaders(cc.plan.Rule.Spec.Filters.ResponseHeaders, resp)
	if b := t.Backend; b != nil {
		route.ApplyHeaders(b.ResponseHeaders, resp)
	}
	out := in
	if in == frameChunked || in == frameClose {
		if req.minor >= 1 {
			out = frameChunked
		} else {
			out = frameClose
			cc.closing = true
		}
	}
	if !req.keepAlive || cc.s.shutdown.Load() {
		cc.closing = true
	}
	cc.wbuf = resp.appendHead(cc.wbuf[:0], out, in, cc.closing, req.minor == 0)
	cc.bw.Write(cc.wbuf)
	res.Written = true

	var ce copyError
	switch in {
	case frameLength:
		ce = copyN(cc.bw, up.br, resp.contentLength)
	case frameChunked:
		ce = copyChunked(cc.bw, up.br, out == frameChunked, true, cc.s.maxHeaderBytes())
	case frameClose:
		ce = copyUntilEOF(cc.bw, up.br, out == frameChunked)
	}
	if ce.writeErr == nil && ce.readErr == nil {
		ce.writeErr = cc.bw.Flush()
	}
	reusable := !resp.close && in != frameClose && ce.readErr == nil && ce.writeErr == nil
	if ce.readErr != nil || ce.writeErr != nil {
		cc.closing = true // the client's response is cut short
	}
	if snd != nil {
		if err := cc.stopSender(up, snd, false); err != nil {
			reusable = false
		}
	}
	if writeErr != nil {
		reusable = false
	}
	up.release(reusable)
	if ce.readErr != nil {
		res.Err = fmt.Errorf("reading response body from %s: %w", up.addr, cc.ctxErr(ctx, ce.readErr))
	}
	return res, false
}

// failAttempt ends an attempt that got no usable response: the upstream
// connection is closed and a streaming body abandoned.
func (cc *clientConn) failAttempt(ctx context.Context, up *upConn, snd *sender, err error) (dispatch.Result, bool) {
	up.Conn.Close()
	var bre *bodyReadError
	if serr := cc.stopSender(up, snd, true); errors.As(serr, &bre) && !errors.Is(bre.err, os.ErrDeadlineExceeded) {
		// The client's body failed first; that is what ended the exchange.
		return dispatch.Result{Err: &dispatch.Error{Status: 400, GRPC: dispatch.GRPCInternal, Reason: "invalid request body: " + bre.err.Error()}, GRPCStatus: -1}, false
	}
	return dispatch.Result{Err: cc.ctxErr(ctx, err), GRPCStatus: -1}, false
}

// bodyReadError is a failure reading the request body from the client.
type bodyReadError struct{ err error }

func (e *bodyReadError) Error() string { return "reading request body: " + e.err.Error() }
func (e *bodyReadError) Unwrap() error { return e.err }

// ctxErr replaces an I/O deadline error with the context's error when the
// context's deadline is what expired, so that the dispatcher reports a timeout.
func (cc *clientConn) ctxErr(ctx context.Context, err error) error {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		<-ctx.Done() // the context's own timer fires at the same instant
		return fmt.Errorf("%w: %w", ctx.Err(), err)
	}
	return err
}

func orWrite(readErr, writeErr error) error {
	if writeErr != nil && (readErr == io.EOF || isStale(readErr)) {
		return writeErr
	}
	return readErr
}

// isStale reports an error that a connection closed by its peer gives.
func isStale(err error) bool {
	return err == io.EOF || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrUnexpectedEOF)
}

// discardResponse reads and drops a small response body; false when the body
// is large or unbounded and the connection should be closed instead.
func (cc *clientConn) discardResponse(up *upConn, in framing) bool {
	switch in {
	case frameNone:
		return true
	case frameLength:
		if cc.resp.contentLength > drainLimit {
			return false
		}
		return discardN(up.br, cc.resp.contentLength) == nil
	}
	return false
}

// startSender streams the request body upstream in its own goroutine, so that
// an upstream answering while it reads (or before) is never deadlocked. With
// Expect: 100-continue it waits for the go-ahead.
func (cc *clientConn) startSender(up *upConn) *sender {
	snd := &sender{done: make(chan error, 1), decided: make(chan struct{})}
	cc.bodyTouched = true
	expect := cc.req.expectContinue
	if !expect {
		snd.decide(true)
	}
	go func() {
		if expect {
			t := time.NewTimer(expectContinueTimeout)
			select {
			case <-snd.decided:
			case <-t.C:
			}
			t.Stop()
			if !snd.decide(true) {
				snd.done <- errAbandoned
				return
			}
		}
		err := cc.copyRequestBody(up.bw)
		if err != nil {
			up.Conn.Close() // wakes the response read: this exchange is over
		}
		snd.done <- err
	}()
	return snd
}

// stopSender waits for a streaming body to finish. With abort, or when it is
// still running senderGrace after the response ended, it is cut off (both
// connections are then given up). It returns the sender's error.
func (cc *clientConn) stopSender(up *upConn, snd *sender, abort bool) error {
	if snd == nil {
		return nil
	}
	snd.decide(false)
	var err error
	if !abort {
		t := time.NewTimer(senderGrace)
		select {
		case err = <-snd.done:
			t.Stop()
			if err == nil {
				cc.bodyRead = true
				return nil
			}
		case <-t.C:
			abort = true
		}
	}
	if abort {
		up.deadline = aLongTimeAgo // recorded, so that a release resets it
		up.Conn.SetDeadline(aLongTimeAgo)
		cc.c.SetReadDeadline(aLongTimeAgo)
		err = <-snd.done
		if err == nil {
			cc.bodyRead = true
		}
	}
	if err != nil {
		cc.closing = true
	}
	return err
}

// copyRequestBody streams the request body from the client to w and flushes.
func (cc *clientConn) copyRequestBody(w *bufio.Writer) error {
	var ce copyError
	if cc.req.chunked {
		ce = copyChunked(w, cc.br, true, true, cc.s.maxHeaderBytes())
	} else {
		ce = copyN(w, cc.br, cc.req.contentLength)
	}
	if ce.readErr == nil && ce.writeErr == nil {
		ce.writeErr = w.Flush()
	}
	if ce.readErr != nil {
		return &bodyReadError{ce.readErr}
	}
	if ce.writeErr != nil {
		return fmt.Errorf("writing request body: %w", ce.writeErr)
	}
	return nil
}

// splice joins the client and upstream connections after a 101 response, bytes
// both ways until both sides are done. The upstream connection is not reused.
func (cc *clientConn) splice(up *upConn) {
	cc.closing = true
	up.Conn.SetDeadline(time.Time{})
	cc.c.SetDeadline(time.Time{})
	// Bytes already read past the heads go first.
	if n := up.br.Buffered(); n > 0 {
		b, _ := up.br.Peek(n)
		if _, err := cc.c.Write(b); err != nil {
			up.Conn.Close()
			return
		}
	}
	if n := cc.br.Buffered(); n > 0 {
		b, _ := cc.br.Peek(n)
		if _, err := up.Conn.Write(b); err != nil {
			up.Conn.Close()
			return
		}
		cc.br.Discard(n)
	}
	if err := tcp.Proxy(cc.ctx, cc.c, up.Conn, 0, nil); err != nil && !errors.Is(err, net.ErrClosed) {
		cc.s.log.Debug("upgraded connection ended", "upstream", up.addr, "error", err)
	}
}
