package http2

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/sluicehq/sluice/proxy/balance"
	"github.com/sluicehq/sluice/proxy/dispatch"
	"github.com/sluicehq/sluice/proxy/retry"
	"github.com/sluicehq/sluice/proxy/route"
)

// handler serves the requests of one client connection.
type handler struct {
	s        *Server
	resolver dispatch.Resolver
	clientID string // the connection's verified client identity, for ClientID
}

// Header keys the mesh uses, canonical.
var (
	headerClientID  = textproto.CanonicalMIMEHeaderKey(dispatch.ClientIDHeader)
	headerOrigProto = textproto.CanonicalMIMEHeaderKey(dispatch.OrigProtoHeader)
)

// routeRequest lets route match an *http.Request; being pointer-shaped, it
// converts to route.Request without allocating.
type routeRequest struct{ r *http.Request }

func (q routeRequest) Method() string   { return q.r.Method }
func (q routeRequest) Path() string     { return q.r.URL.Path }
func (q routeRequest) RawQuery() string { return q.r.URL.RawQuery }
func (q routeRequest) Header(name string) (string, bool) {
	v := q.r.Header[textproto.CanonicalMIMEHeaderKey(name)]
	if len(v) == 0 {
		return "", false
	}
	return v[0], true
}

// request is the state of one proxied request shared by its attempts.
type request struct {
	s    *Server
	w    http.ResponseWriter
	r    *http.Request
	plan *dispatch.Plan

	// What goes upstream: the request's (filtered) headers, shared read-only by
	// attempts unless a backend adds its own filters; the path after rewrites.
	header   http.Header
	host     string
	path     string
	rawPath  string
	body     *replayBody // nil when the request has no body
	attempts int
	prev     dispatch.Result // the last attempt's result, for a retry that cannot replay

	// abort is set when an HTTP (not gRPC) response broke after it started: the
	// client stream is reset so that the client does not take it as complete.
	abort bool
	// downgrade sends the request to its endpoint as HTTP/1 (Server.Downgrade).
	downgrade bool
}

// ServeHTTP routes the request and forwards it.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := h.s
	if s.ClientID != nil {
		delete(r.Header, headerClientID)
		if h.clientID != "" {
			r.Header[headerClientID] = []string{h.clientID}
		}
	}
	downgrade := false
	if s.Downgrade != nil {
		if _, ok := r.Header[headerOrigProto]; ok {
			delete(r.Header, headerOrigProto)
			downgrade = true
		}
	}
	grpc := isGRPC(r.Header.Get("Content-Type"))
	svc, perr := dispatch.ResolveRequest(h.resolver, r.Method, r.URL.Path, r.Host)
	if perr != nil {
		writeError(w, perr, grpc)
		return
	}
	plan, perr := s.Dispatcher.Route(svc, routeRequest{r}, grpc)
	if perr != nil {
		writeError(w, perr, grpc)
		return
	}
	rule := plan.Rule
	if loc, status, ok := rule.RedirectLocation("http", r.Host, svc.Spec.Port, r.URL.Path, r.URL.RawQuery); ok {
		w.Header().Set("Location", loc)
		w.WriteHeader(status)
		return
	}

	req := &request{s: s, w: w, r: r, plan: plan, header: r.Header, host: r.Host, path: r.URL.Path, rawPath: r.URL.RawPath, downgrade: downgrade}
	removeHopHeaders(req.header)
	route.ApplyHeaders(rule.Spec.Filters.RequestHeaders, req.header)
	if rw := rule.Spec.Filters.URLRewrite; rw != nil {
		if rw.Hostname != "" {
			req.host = rw.Hostname
		}
		if p := rule.RewritePath(r.URL.Path); p != r.URL.Path {
			req.path, req.rawPath = p, ""
		}
	}
	mirrors := rule.Mirrors(rand.Uint64)

	// Remember the body for a replay only when something could use it: a retry
	// policy or a mirror, and a body not declared larger than the retry buffer.
	replayable := true
	if r.ContentLength != 0 {
		var limit int64
		if (plan.Retry != nil || len(mirrors) > 0) && r.ContentLength <= retry.MaxBufferedBody {
			limit = retry.MaxBufferedBody
		}
		replayable = limit > 0
		req.body = newReplayBody(r.Body, limit)
	}

	res := s.Dispatcher.Forward(r.Context(), plan, replayable, req.attempt)
	if !res.Written {
		err := res.Err
		if err == nil {
			err = errors.New("no response from upstream")
		}
		if r.Context().Err() == nil {
			s.log.Debug("http2: proxy error", "authority", r.Host, "path", r.URL.Path, "err", err)
		}
		writeError(w, dispatch.AsError(err), grpc)
	}
	if len(mirrors) > 0 {
		req.mirror(mirrors)
	}
	if req.abort {
		// Reset the client's stream: the response it started receiving is broken.
		panic(http.ErrAbortHandler)
	}
}

// attempt is the dispatch.AttemptFunc: one try of the request to t.
func (q *request) attempt(ctx context.Context, t *dispatch.Target, att *balance.Attempt, last bool) dispatch.Result {
	q.attempts++
	if q.attempts > 1 && q.body != nil && !q.body.replayable() {
		// A retry the body cannot support (it was decided elsewhere, e.g. on an
		// attempt timeout): answer with what the previous attempt got.
		res := q.prev
		res.Retryable = false
		if res.Err == nil {
			res.Err = errBodyNotReplayable
		}
		return res
	}

	out := &http.Request{
		Method:     q.r.Method,
		URL:        &url.URL{Scheme: "http", Host: t.Endpoint.Addr(), Path: q.path, RawPath: q.rawPath, RawQuery: q.r.URL.RawQuery},
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     q.header,
		Host:       q.host,
	}
	if t.Backend != nil && t.Backend.RequestHeaders != nil {
		// Attempts may overlap an abandoned one still encoding its headers:
		// never modify the shared map.
		out.Header = q.header.Clone()
		route.ApplyHeaders(t.Backend.RequestHeaders, out.Header)
	}
	views := &viewSet{}
	if q.body != nil {
		out.ContentLength = q.r.ContentLength
		out.Body = views.add(q.body.view())
		out.Trailer = q.r.Trailer
		// The Transport re-sends a request its peer did not process (GOAWAY, a
		// refused stream) once on its own; after that the dispatcher decides.
		redo := 0
		out.GetBody = func() (io.ReadCloser, error) {
			redo++
			if redo > 1 || !q.body.replayable() {
				return nil, errUnprocessed
			}
			return views.add(q.body.view()), nil
		}
	}
	out = out.WithContext(ctx)

	start := time.Now()
	var resp *http.Response
	var err error
	if q.downgrade {
		out.Proto, out.ProtoMajor, out.ProtoMinor = "HTTP/1.1", 1, 1
		if _, ok := out.Header["User-Agent"]; !ok {
			// net/http would add its own; a proxy adds nothing.
			out.Header = out.Header.Clone()
			out.Header["User-Agent"] = []string{""}
		}
		resp, err = q.s.Downgrade.RoundTrip(out)
		if err == nil {
			for _, k := range hopHeaders {
				delete(resp.Header, k)
			}
		}
	} else {
		var identity string
		if q.s.Pool.ClientTLS != nil {
			identity = t.Endpoint.Spec().Identity
		}
		resp, err = q.s.Pool.RoundTripTo(out, identity)
	}
	if err != nil {
		views.close()
		if q.clientFault() {
			return clientFaultResult
		}
		res := dispatch.Result{Err: err, GRPCStatus: -1}
		res.Retryable = (unprocessed(err) || dispatch.IsConnectError(err)) && (q.body == nil || q.body.replayable())
		q.prev = res
		return res
	}
	att.FirstByte()
	if !q.downgrade && q.s.Pool.ClientTLS != nil && t.Endpoint.Spec().Identity != "" && resp.Header.Get(dispatch.HeaderUnprocessed) != "" &&
		(q.body == nil || q.body.replayable()) {
		// The peer proxy could not reach its application: nothing was
		// processed, so the request goes to another endpoint.
		resp.Body.Close()
		views.close()
		res := dispatch.Result{Err: dispatch.PeerUnprocessed(t.Endpoint.Spec().Address, resp.Header.Get(dispatch.HeaderName)), GRPCStatus: -1, Retryable: true}
		q.prev = res
		return res
	}
	res := dispatch.Result{Status: resp.StatusCode, GRPCStatus: -1, Latency: time.Since(start)}
	// The stream ended with its headers: a gRPC trailers-only response, or an
	// empty body.
	headersOnly := resp.ContentLength == 0 && resp.Header["Content-Length"] == nil
	if q.plan.GRPC {
		if code, ok := grpcStatus(resp.Header); ok && headersOnly {
			res.GRPCStatus = code
		}
	}

	if !last && q.retryableResponse(&res, headersOnly) {
		if q.body == nil || q.body.claim(views.list()) {
			resp.Body.Close()
			views.close()
			res.Retryable = true
			q.prev = res
			return res
		}
	}

	q.writeResponse(ctx, t, resp, &res, headersOnly)
	resp.Body.Close()
	views.close()
	return res
}

// statusClientClosedRequest is the status recorded for an attempt the client
// ended (nginx's convention); nothing is written to the client.
const statusClientClosedRequest = 499

// clientFaultResult is the outcome of an attempt that failed because of the
// client: it went away, or its request body broke (a reset stream, a body not
// matching its content-length; x/net has already reset that stream). Nothing
// more can be written to it, so the result says Written, and it carries no Err
// so that the endpoint is not penalised for the client's doing.
var clientFaultResult = dispatch.Result{Status: statusClientClosedRequest, GRPCStatus: -1, Written: true}

// clientFault reports whether the request failed because of the client.
func (q *request) clientFault() bool {
	return q.r.Context().Err() != nil || (q.body != nil && q.body.failed())
}

// retryableResponse reports whether the plan retries this response.
func (q *request) retryableResponse(res *dispatch.Result, headersOnly bool) bool {
	p := q.plan.Retry
	if p == nil {
		return false
	}
	if p.RetryableStatus(res.Status) {
		return true
	}
	return q.plan.GRPC && headersOnly && res.GRPCStatus > 0 && p.RetryableGRPC(res.GRPCStatus)
}

// writeResponse streams resp to the client, flushing after every read so that
// streaming calls flow, and copies its trailers. It fills in res.
func (q *request) writeResponse(ctx context.Context, t *dispatch.Target, resp *http.Response, res *dispatch.Result, headersOnly bool) {
	w := q.w
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	// x/net/http2 adds Date, Content-Type (sniffed) and Content-Length headers
	// the upstream did not send; a nil value stops it.
	for _, k := range [...]string{"Date", "Content-Type", "Content-Length"} {
		if _, ok := h[k]; !ok {
			h[k] = nil
		}
	}
	route.ApplyHeaders(q.plan.Rule.Spec.Filters.ResponseHeaders, h)
	if t.Backend != nil {
		route.ApplyHeaders(t.Backend.ResponseHeaders, h)
	}
	w.WriteHeader(resp.StatusCode)
	res.Written = true
	flusher, _ := w.(http.Flusher)
	if !headersOnly && flusher != nil {
		// Send the headers now: a streaming peer may wait for them.
		flusher.Flush()
	}

	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	buf := *bp
	var readErr error
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return // the client went away: not the upstream's failure
			}
			if flusher != nil {
				flusher.Flush()
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
		if q.clientFault() {
			return // the client went away, which cancelled the upstream stream
		}
		res.Err = readErr
		q.breakStream(ctx, res, readErr)
		return
	}
	for k, v := range resp.Trailer {
		if v != nil {
			h[http.TrailerPrefix+k] = v
		}
	}
	if q.plan.GRPC && res.GRPCStatus < 0 {
		if code, ok := grpcStatus(resp.Trailer); ok {
			res.GRPCStatus = code
		}
	}
}

// breakStream ends a response whose upstream failed after it started: a gRPC
// call gets a grpc-status trailer saying why; any other request has its stream
// reset once the dispatcher has recorded the outcome.
func (q *request) breakStream(ctx context.Context, res *dispatch.Result, err error) {
	if !q.plan.GRPC {
		q.abort = true
		return
	}
	code, reason := grpcUnavailable, "upstream stream failed: "+err.Error()
	var se http2.StreamError
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		code, reason = grpcDeadlineExceeded, "request timeout"
	case errors.As(err, &se):
		code = grpcCodeForReset(se.Code)
	}
	h := q.w.Header()
	h[http.TrailerPrefix+headerGRPCStatus] = []string{strconv.Itoa(code)}
	h[http.TrailerPrefix+headerGRPCMessage] = []string{encodeGRPCMessage(reason)}
	h[http.TrailerPrefix+dispatch.HeaderName] = []string{headerValue(reason)}
	res.GRPCStatus = code
}

// grpcCodeForReset maps an RST_STREAM code to a gRPC status as gRPC clients do.
func grpcCodeForReset(c http2.ErrCode) int {
	switch c {
	case http2.ErrCodeRefusedStream:
		return grpcUnavailable
	case http2.ErrCodeCancel:
		return 1 // CANCELLED
	case http2.ErrCodeEnhanceYourCalm:
		return 8 // RESOURCE_EXHAUSTED
	case http2.ErrCodeInadequateSecurity:
		return 7 // PERMISSION_DENIED
	}
	return grpcInternal
}

// mirror sends a copy of the request to each mirror target, after the main
// response is done, when its whole body is known (no body, or read to its end
// within the retry buffer). Mirrors never delay the main request; their answers
// are discarded; at most maxMirrorsInFlight run at once per Server.
func (q *request) mirror(keys []string) {
	var body []byte
	if q.body != nil {
		b, ok := q.body.complete()
		if !ok {
			q.s.log.Debug("http2: request body too large or unfinished to mirror", "path", q.r.URL.Path)
			return
		}
		body = b
	}
	timeout := q.plan.RequestTimeout
	if timeout <= 0 {
		timeout = mirrorTimeout
	}
	for _, key := range keys {
		t, perr := q.s.Dispatcher.PickTarget(key)
		if perr != nil {
			q.s.log.Debug("http2: no mirror target", "backend", key, "err", perr)
			continue
		}
		select {
		case q.s.mirrorSlots <- struct{}{}:
		default:
			q.s.log.Debug("http2: too many mirrored requests in flight; dropping one", "backend", key)
			continue
		}
		out := &http.Request{
			Method:        q.r.Method,
			URL:           &url.URL{Scheme: "http", Host: t.Endpoint.Addr(), Path: q.path, RawPath: q.rawPath, RawQuery: q.r.URL.RawQuery},
			Proto:         "HTTP/2.0",
			ProtoMajor:    2,
			Header:        q.header.Clone(),
			Host:          q.host,
			ContentLength: int64(len(body)),
		}
		if len(body) > 0 {
			out.Body = io.NopCloser(bytes.NewReader(body))
		}
		q.s.mu.Lock()
		if q.s.mirrorsDone {
			q.s.mu.Unlock()
			<-q.s.mirrorSlots
			return
		}
		q.s.mirrorWG.Add(1)
		q.s.mu.Unlock()
		go func() {
			defer func() {
				<-q.s.mirrorSlots
				q.s.mirrorWG.Done()
			}()
			ctx, cancel := context.WithTimeout(q.s.mirrorCtx, timeout)
			defer cancel()
			att := t.Endpoint.Start()
			var identity string
			if q.s.Pool.ClientTLS != nil {
				identity = t.Endpoint.Spec().Identity
			}
			resp, err := q.s.Pool.RoundTripTo(out.WithContext(ctx), identity)
			if err != nil {
				att.Done(true)
				return
			}
			att.FirstByte()
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			att.Done(resp.StatusCode >= 500)
		}()
	}
}

// errUnprocessed reports that the upstream refused the request before processing
// it and the Transport's own retry was used up: the dispatcher may retry it.
var errUnprocessed = errors.New("upstream did not process the request (refused stream or GOAWAY)")

// unprocessed reports whether err means the request never reached the upstream's
// application, so that sending it again is safe.
func unprocessed(err error) bool {
	var ce *ConnectError
	if errors.As(err, &ce) || errors.Is(err, errUnprocessed) {
		return true
	}
	var se http2.StreamError
	if errors.As(err, &se) && se.Code == http2.ErrCodeRefusedStream {
		return true
	}
	var ga http2.GoAwayError
	return errors.As(err, &ga) && ga.ErrCode == http2.ErrCodeNo
}

// viewSet is the body views one attempt handed to the Transport.
type viewSet struct {
	mu    sync.Mutex
	views []*bodyView
}

func (s *viewSet) add(v *bodyView) *bodyView {
	s.mu.Lock()
	s.views = append(s.views, v)
	s.mu.Unlock()
	return v
}

func (s *viewSet) list() []*bodyView {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*bodyView(nil), s.views...)
}

func (s *viewSet) close() {
	for _, v := range s.list() {
		v.Close()
	}
}

// copyBufPool holds the buffers responses are copied through.
var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// hopHeaders are connection-specific fields that never travel upstream (RFC 9113
// §8.2.2); the Transport refuses requests carrying them.
var hopHeaders = [...]string{"Connection", "Proxy-Connection", "Keep-Alive", "Transfer-Encoding", "Upgrade"}

func removeHopHeaders(h http.Header) {
	for _, k := range hopHeaders {
		delete(h, k)
	}
	if te, ok := h["Te"]; ok && !(len(te) == 1 && te[0] == "trailers") {
		delete(h, "Te")
	}
}

// writeError writes a response the proxy makes itself: for gRPC a trailers-only
// response with grpc-status and grpc-message; otherwise the HTTP status with a
// short text body. Both carry the reason in sluice-proxy-error.
func writeError(w http.ResponseWriter, e *dispatch.Error, grpc bool) {
	h := w.Header()
	reason := headerValue(e.Reason)
	h.Set(dispatch.HeaderName, reason)
	if e.Unprocessed {
		h.Set(dispatch.HeaderUnprocessed, "1")
	}
	if grpc {
		h.Set("Content-Type", "application/grpc")
		h.Set(headerGRPCStatus, strconv.Itoa(e.GRPC))
		h.Set(headerGRPCMessage, encodeGRPCMessage(e.Reason))
		h["Content-Length"] = nil // one HEADERS frame ending the stream, nothing else
		w.WriteHeader(http.StatusOK)
		return
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	if e.Status == http.StatusBadRequest || e.Status == http.StatusRequestHeaderFieldsTooLarge {
		h.Set("Connection", "close") // x/net/http2 turns this into a GOAWAY
	}
	w.WriteHeader(e.Status)
	_, _ = io.WriteString(w, e.Reason+"\n")
}

// headerValue makes s safe as a header field value.
func headerValue(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; (c < 0x20 && c != '\t') || c == 0x7f {
					b[j] = ' '
				}
			}
			return string(b)
		}
	}
	return s
}
