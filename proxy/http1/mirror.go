package http1

import (
	"bufio"
	"context"
	"io"
	"time"

	"github.com/sluicehq/sluice/proxy/dispatch"
)

// mirrorTimeout bounds one mirrored exchange when the route sets no request timeout.
const mirrorTimeout = 10 * time.Second

// mirror sends a copy of the current request (its head after the rule's filters,
// and its buffered body) to one endpoint of each mirror service. Mirrors are
// fire-and-forget: their responses are read and dropped, at most maxMirrors run
// at once (more are dropped), they never delay the request itself, and they stop
// when ServeConn's context ends.
func (cc *clientConn) mirror(keys []string) {
	s := cc.s
	var data []byte
	timeout := mirrorTimeout
	if rt := cc.plan.RequestTimeout; rt > 0 && rt < timeout {
		timeout = rt
	}
	for _, key := range keys {
		t, perr := s.Dispatcher.PickTarget(key)
		if perr != nil {
			s.log.Debug("mirror target unavailable", "service", key, "error", perr)
			continue
		}
		select {
		case s.mirrors <- struct{}{}:
		default:
			s.mirrorsDropped.Add(1)
			continue // too many in flight: drop
		}
		if data == nil {
			req := &cc.req
			host := req.authority
			if host == "" {
				host = t.Endpoint.Addr()
			}
			data = req.appendHead(make([]byte, 0, len(req.raw)+len(cc.body)+64), req.headers, cc.path, req.rawQuery, host, cc.clientID, s.ClientID != nil)
			data = append(data, cc.body...)
		}
		s.inFlight.Add(1)
		go s.sendMirror(cc.ctx, t, cc.req.method, data, timeout)
	}
}

// sendMirror performs one mirrored exchange and drops the response.
func (s *Server) sendMirror(ctx context.Context, t *dispatch.Target, method string, data []byte, timeout time.Duration) {
	defer func() {
		<-s.mirrors
		s.inFlight.Add(-1)
	}()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	att := t.Endpoint.Start()
	failed := true
	defer func() { att.Done(failed) }()

	addr := t.Endpoint.Addr()
	var identity string
	if s.pool.DialTLS != nil {
		identity = t.Endpoint.Spec().Identity
	}
	up, err := s.pool.getFor(ctx, addr, identity)
	if err != nil {
		s.log.Debug("mirror connect failed", "addr", addr, "error", err)
		return
	}
	stop := context.AfterFunc(ctx, func() { up.Conn.SetDeadline(aLongTimeAgo) })
	up.setDeadline(ctx)
	reusable := false
	defer func() {
		if !stop() {
			reusable = false // the deadline was forced into the past
		}
		up.release(reusable)
	}()
	if _, err := up.bw.Write(data); err != nil {
		return
	}
	if err := up.bw.Flush(); err != nil {
		return
	}
	var resp responseHead
	for {
		raw, _, err := readHead(up.br, nil, s.maxHeaderBytes(), false)
		if err == nil {
			err = resp.parse(raw)
		}
		if err != nil {
			s.log.Debug("mirror response unreadable", "addr", addr, "error", err)
			return
		}
		if resp.status >= 200 {
			break
		}
		if resp.status == 101 {
			return
		}
	}
	att.FirstByte()
	sink := bufio.NewWriterSize(io.Discard, 512)
	var ce copyError
	in := resp.bodyFraming(method)
	switch in {
	case frameLength:
		ce = copyN(sink, up.br, resp.contentLength)
	case frameChunked:
		ce = copyChunked(sink, up.br, false, false, s.maxHeaderBytes())
	case frameClose:
		ce = copyUntilEOF(sink, up.br, false)
	}
	failed = ce.readErr != nil || resp.status >= 500
	reusable = ce.readErr == nil && !resp.close && in != frameClose
}
