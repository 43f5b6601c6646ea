package http1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/proxy/balance"
	"github.com/sluicehq/sluice/proxy/dispatch"
	"github.com/sluicehq/sluice/proxy/route"
)

// MeshTransport carries HTTP/2 requests to meshed endpoints over mutual TLS.
// The http2 package's Pool implements it.
type MeshTransport interface {
	// RoundTripTo sends req to the endpoint req.URL.Host names, over mutual
	// TLS with a peer that must present identity.
	RoundTripTo(req *http.Request, identity string) (*http.Response, error)
	// Unprocessed reports whether an error of RoundTripTo means the peer did
	// not process the request, so that sending it again is safe.
	Unprocessed(err error) bool
}

// origProto is the sluice-orig-proto header as an http.Header key.
var origProto = textproto.CanonicalMIMEHeaderKey(dispatch.OrigProtoHeader)

// attemptMesh is one try of the current request on a meshed endpoint: the
// request travels as an HTTP/2 stream over the mesh's mutual TLS connection to
// the peer proxy, marked with sluice-orig-proto, and its response is written to
// the client as HTTP/1 again. It is not the allocation-free path: the request
// and response go through net/http's types.
func (cc *clientConn) attemptMesh(ctx context.Context, t *dispatch.Target, att *balance.Attempt, last bool, identity string) dispatch.Result {
	req := &cc.req
	addr := t.Endpoint.Addr()
	if cc.bodyTouched {
		return dispatch.Result{Err: errBodyConsumed, GRPCStatus: -1}
	}

	hl := req.headers
	host := req.authority
	if b := t.Backend; b != nil && b.RequestHeaders != nil {
		cc.ed.list = append(cc.ed.list[:0], req.headers...)
		cc.ed.authority = req.authority
		route.ApplyHeaders(b.RequestHeaders, &cc.ed)
		hl, host = cc.ed.list, cc.ed.authority
	}
	if host == "" {
		host = addr
	}
	h := make(http.Header, len(hl)+1)
	for i := range hl {
		f := &hl[i]
		if f.hop {
			continue
		}
		switch f.kind {
		case kOther:
		case kClientID:
			if cc.s.ClientID != nil {
				continue
			}
		default: // framing, connection management and Host travel as HTTP/2 does them
			continue
		}
		k := textproto.CanonicalMIMEHeaderKey(f.name)
		h[k] = append(h[k], f.value)
	}
	if cc.clientID != "" {
		h[textproto.CanonicalMIMEHeaderKey(clientIDHeader)] = []string{cc.clientID}
	}
	h[origProto] = []string{"HTTP/1." + strconv.Itoa(req.minor)}

	u := &url.URL{Scheme: "http", Host: addr, RawQuery: req.rawQuery}
	if p, err := url.PathUnescape(cc.path); err == nil {
		u.Path, u.RawPath = p, cc.path
	} else {
		u.Opaque = cc.path
	}
	out := &http.Request{
		Method:     req.method,
		URL:        u,
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     h,
		Host:       host,
	}
	var pump *bodyPump
	switch {
	case !req.hasBody():
	case cc.bodyRead:
		// The buffered body may alias the connection's read buffer, which the
		// next request reuses while the Transport could still be sending.
		body := bytes.Clone(cc.body)
		out.ContentLength = int64(len(body))
		out.Body = io.NopCloser(bytes.NewReader(body))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	default:
		pump = cc.startPump()
		out.Body = pump.pr
		out.ContentLength = req.contentLength
		if req.chunked {
			out.ContentLength = -1
		}
	}

	start := time.Now()
	resp, err := cc.s.Mesh.RoundTripTo(out.WithContext(ctx), identity)
	if err != nil {
		if pump != nil {
			var bre *bodyReadError
			if perr := cc.stopPump(pump, true); errors.As(perr, &bre) && ctx.Err() == nil {
				return dispatch.Result{Err: &dispatch.Error{Status: 400, GRPC: dispatch.GRPCInternal, Reason: "invalid request body: " + bre.err.Error()}, GRPCStatus: -1}
			}
		}
		return dispatch.Result{
			Err:        fmt.Errorf("mesh request to %s (%s): %w", addr, identity, err),
			GRPCStatus: -1,
			Retryable:  pump == nil && cc.s.Mesh.Unprocessed(err),
		}
	}
	att.FirstByte()
	if pump == nil && resp.Header.Get(dispatch.HeaderUnprocessed) != "" {
		// The peer proxy could not reach its application: nothing was
		// processed, so the request goes to another endpoint.
		resp.Body.Close()
		return dispatch.Result{Err: dispatch.PeerUnprocessed(addr, resp.Header.Get(dispatch.HeaderName)), GRPCStatus: -1, Retryable: true}
	}
	res := dispatch.Result{Status: resp.StatusCode, GRPCStatus: -1, Latency: time.Since(start)}
	if !last && pump == nil && cc.plan.Retry.RetryableStatus(resp.StatusCode) {
		resp.Body.Close()
		res.Retryable = true
		return res
	}
	res.Err = cc.writeMeshResponse(resp, t)
	res.Written = true
	resp.Body.Close()
	if pump != nil {
		if err := cc.stopPump(pump, false); err != nil {
			cc.closing = true
		}
	}
	return res
}

// headerEditor lets route filters edit an http.Header.
type headerEditor http.Header

func (e headerEditor) Set(name, value string) { http.Header(e).Set(name, value) }
func (e headerEditor) Add(name, value string) { http.Header(e).Add(name, value) }
func (e headerEditor) Del(name string)        { http.Header(e).Del(name) }

// responseHop are response fields that never reach an HTTP/1 client from an
// HTTP/2 response: framing the proxy decides itself, and connection fields.
var responseHop = map[string]bool{
	"Content-Length":    true,
	"Transfer-Encoding": true,
	"Connection":        true,
	"Keep-Alive":        true,
	"Proxy-Connection":  true,
	"Upgrade":           true,
	"Trailer":           true,
}

// writeMeshResponse writes an HTTP/2 response to the client as HTTP/1.1 with
// the framing the client can take, then its body. It returns an error when
// the response body broke (the client's response is then cut short and the
// connection closes).
func (cc *clientConn) writeMeshResponse(resp *http.Response, t *dispatch.Target) error {
	req := &cc.req
	route.ApplyHeaders(cc.plan.Rule.Spec.Filters.ResponseHeaders, headerEditor(resp.Header))
	if b := t.Backend; b != nil {
		route.ApplyHeaders(b.ResponseHeaders, headerEditor(resp.Header))
	}
	status := resp.StatusCode
	noBody := req.method == "HEAD" || status == 204 || status == 304 || status < 200
	out := frameNone
	switch {
	case noBody:
	case resp.ContentLength >= 0 && len(resp.Trailer) == 0:
		out = frameLength
	case req.minor >= 1:
		out = frameChunked
	default:
		out = frameClose
		cc.closing = true
	}
	if !req.keepAlive || cc.s.shutdown.Load() {
		cc.closing = true
	}

	b := cc.wbuf[:0]
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, statusText(status)...)
	b = append(b, "\r\n"...)
	for k, vs := range resp.Header {
		if responseHop[k] {
			continue
		}
		for _, v := range vs {
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, sanitize(v)...)
			b = append(b, "\r\n"...)
		}
	}
	switch {
	case out == frameLength:
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, resp.ContentLength, 10)
		b = append(b, "\r\n"...)
	case out == frameChunked:
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	case noBody && status != 204 && status >= 200:
		// HEAD and 304 repeat the length the full response would have.
		if v := resp.Header.Get("Content-Length"); v != "" {
			b = append(b, "Content-Length: "...)
			b = append(b, sanitize(v)...)
			b = append(b, "\r\n"...)
		}
	}
	b = cc.appendConnection(b)
	b = append(b, "\r\n"...)
	cc.wbuf = b
	if _, err := cc.bw.Write(b); err != nil {
		cc.closing = true
		return nil // the client went away: not the upstream's failure
	}
	if out == frameNone {
		if cc.bw.Flush() != nil {
			cc.closing = true
		}
		return nil
	}

	bp := bigBufs.Get().(*[]byte)
	defer bigBufs.Put(bp)
	buf := *bp
	var readErr error
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if out == frameChunked {
				writeChunkHeader(cc.bw, int64(n))
			}
			cc.bw.Write(buf[:n])
			if out == frameChunked {
				cc.bw.WriteString("\r\n")
			}
			if cc.bw.Flush() != nil {
				cc.closing = true
				return nil
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			readErr = err
			break
		}
	}
	if readErr != nil {
		cc.closing = true
		cc.bw.Flush()
		return fmt.Errorf("reading response body from %s: %w", t.Endpoint.Addr(), readErr)
	}
	if out == frameChunked {
		cc.bw.WriteString("0\r\n")
		for k, vs := range resp.Trailer {
			for _, v := range vs {
				cc.bw.WriteString(k)
				cc.bw.WriteString(": ")
				cc.bw.WriteString(sanitize(v))
				cc.bw.WriteString("\r\n")
			}
		}
		cc.bw.WriteString("\r\n")
	}
	if cc.bw.Flush() != nil {
		cc.closing = true
	}
	return nil
}

// bodyPump streams a request body from the client into a pipe that the
// HTTP/2 Transport reads as the upstream request's body.
type bodyPump struct {
	pr   *io.PipeReader
	done chan error
}

// startPump starts streaming the request body; a client waiting for
// 100 Continue is told to send it.
func (cc *clientConn) startPump() *bodyPump {
	cc.bodyTouched = true
	cc.c.SetReadDeadline(time.Time{})
	if cc.req.expectContinue && cc.req.minor >= 1 {
		cc.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		cc.bw.Flush()
	}
	pr, pw := io.Pipe()
	p := &bodyPump{pr: pr, done: make(chan error, 1)}
	go func() {
		w := bufio.NewWriterSize(pw, upBufSize)
		var ce copyError
		if cc.req.chunked {
			ce = copyChunked(w, cc.br, false, false, cc.s.maxHeaderBytes())
		} else {
			ce = copyN(w, cc.br, cc.req.contentLength)
		}
		if ce.readErr == nil && ce.writeErr == nil {
			ce.writeErr = w.Flush()
		}
		var err error
		switch {
		case ce.readErr != nil:
			err = &bodyReadError{ce.readErr}
		case ce.writeErr != nil:
			err = fmt.Errorf("writing request body: %w", ce.writeErr)
		}
		if err != nil {
			pw.CloseWithError(err)
		} else {
			pw.Close()
		}
		p.done <- err
	}()
	return p
}

// stopPump waits for the body to be streamed (at most senderGrace after the
// response, none with abort), then cuts it off: the client connection is then
// given up. It returns the pump's error; the body counts as read on success.
func (cc *clientConn) stopPump(p *bodyPump, abort bool) error {
	var err error
	finished := false
	if !abort {
		t := time.NewTimer(senderGrace)
		select {
		case err = <-p.done:
			finished = true
		case <-t.C:
		}
		t.Stop()
	}
	if !finished {
		p.pr.CloseWithError(errAbandoned)
		cc.c.SetReadDeadline(aLongTimeAgo)
		err = <-p.done
	}
	if err == nil {
		cc.bodyRead = true
		return nil
	}
	cc.closing = true
	return err
}
