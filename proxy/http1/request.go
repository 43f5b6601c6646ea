package http1

import (
	"fmt"
	"strconv"

	"github.com/sluicehq/sluice/proxy/route"
)

// requestError is a request the proxy refuses before routing it.
type requestError struct {
	status int
	reason string
}

func (e *requestError) Error() string { return fmt.Sprintf("%d %s", e.status, e.reason) }

func badRequest(format string, args ...any) *requestError {
	return &requestError{status: 400, reason: fmt.Sprintf(format, args...)}
}

// requestHead is a parsed HTTP/1.x request head. One lives in each client
// connection and is reused for every request on it; the strings are substrings
// of raw (or strings a filter set), so parsing allocates only raw itself.
//
// It implements route.Request and route.HeaderEditor.
type requestHead struct {
	raw string

	method string
	// target is the request-target as received; path and query are its parts.
	target   string
	path     string
	rawQuery string
	// authority is the Host header, or the authority of an absolute-form target.
	authority string
	absolute  bool

	major, minor int
	headers      headerList

	// contentLength is the body length; -1 means chunked, 0 no body.
	contentLength int64
	chunked       bool
	// keepAlive says the client wants the connection kept open after this exchange.
	keepAlive bool
	// expectContinue is "Expect: 100-continue" on a request with a body.
	expectContinue bool
	// upgrade is the Upgrade header of a request that asks to switch protocols.
	upgrade string
	// hasTrailer says a Trailer header announces trailer fields.
	hasTrailer bool
}

// Method is the request method.
func (h *requestHead) Method() string { return h.method }

// Path is the request path without the query.
func (h *requestHead) Path() string { return h.path }

// RawQuery is the query without its '?'.
func (h *requestHead) RawQuery() string { return h.rawQuery }

// Header returns the first value of a header field, case-insensitively.
func (h *requestHead) Header(name string) (string, bool) {
	if equalFold(name, "host") {
		return h.authority, h.authority != ""
	}
	return h.headers.get(name)
}

// Set replaces a header field; setting Host changes the authority forwarded.
func (h *requestHead) Set(name, value string) {
	if equalFold(name, "host") {
		h.authority = value
		return
	}
	h.headers.set(name, value)
}

// Add appends a header field.
func (h *requestHead) Add(name, value string) {
	if equalFold(name, "host") {
		h.authority = value
		return
	}
	h.headers.add(name, value)
}

// Del removes a header field. Host cannot be removed.
func (h *requestHead) Del(name string) {
	if equalFold(name, "host") {
		return
	}
	h.headers.del(name)
}

// hasBody reports whether a request body follows the head.
func (h *requestHead) hasBody() bool { return h.chunked || h.contentLength > 0 }

// idempotent reports whether the method may be sent twice safely.
func (h *requestHead) idempotent() bool {
	switch h.method {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

// reset clears h for the next request, keeping the header slice's storage.
func (h *requestHead) reset() {
	clear(h.headers)
	*h = requestHead{headers: h.headers[:0]}
}

// parse parses a request head read by readHead. Errors are *requestError.
func (h *requestHead) parse(raw string) error {
	h.reset()
	h.raw = raw
	line, rest, ok := nextLine(raw)
	if !ok {
		return badRequest("malformed request line")
	}
	// method SP request-target SP HTTP-version
	sp1 := -1
	for i := 0; i < len(line); i++ {
		if line[i] == ' ' {
			sp1 = i
			break
		}
	}
	if sp1 <= 0 {
		return badRequest("malformed request line")
	}
	sp2 := -1
	for i := len(line) - 1; i > sp1; i-- {
		if line[i] == ' ' {
			sp2 = i
			break
		}
	}
	if sp2 < 0 {
		return badRequest("malformed request line")
	}
	h.method = line[:sp1]
	h.target = line[sp1+1 : sp2]
	version := line[sp2+1:]
	if !isToken(h.method) {
		return badRequest("invalid method %q", h.method)
	}
	if h.target == "" {
		return badRequest("empty request target")
	}
	for i := 0; i < len(h.target); i++ {
		if c := h.target[i]; c <= ' ' || c == 0x7f {
			return badRequest("invalid character in request target")
		}
	}
	major, minor, ok := parseVersion(version)
	if !ok {
		return badRequest("malformed HTTP version %q", version)
	}
	if major != 1 {
		return &requestError{status: 505, reason: fmt.Sprintf("HTTP version %s is not supported", version)}
	}
	h.major, h.minor = major, minor

	var (
		hosts, lengths, encodings int
		connClose, connKeepAlive  bool
		connUpgrade               bool
		expect                    string
		upgrade                   string
		connection                []string // values of Connection headers, checked after all are read
	)
	for rest != "" {
		line, rest, ok = nextLine(rest)
		if !ok {
			return badRequest("malformed header line")
		}
		if line == "" {
			if rest != "" {
				return badRequest("malformed header section")
			}
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return badRequest("obsolete line folding is not accepted")
		}
		name, value, ok := parseHeaderLine(line)
		if !ok {
			return badRequest("malformed header field %q", truncate(line, 64))
		}
		k := classify(name)
		switch k {
		case kHost:
			hosts++
			h.authority = value
			continue // kept as h.authority, written first
		case kContentLength:
			n, ok := parseContentLength(value)
			if !ok {
				return badRequest("invalid Content-Length %q", truncate(value, 32))
			}
			if lengths > 0 && n != h.contentLength {
				return badRequest("conflicting Content-Length headers")
			}
			lengths++
			h.contentLength = n
		case kTransferEncoding:
			encodings++
			if !equalFold(value, "chunked") || encodings > 1 {
				return badRequest("unsupported Transfer-Encoding %q", truncate(value, 32))
			}
			h.chunked = true
		case kConnection, kProxyConnection:
			if k == kConnection {
				connection = append(connection, value)
			}
			forEachToken(value, func(tok string) {
				switch {
				case equalFold(tok, "close"):
					connClose = true
				case equalFold(tok, "keep-alive"):
					connKeepAlive = true
				case equalFold(tok, "upgrade"):
					connUpgrade = true
				}
			})
		case kExpect:
			expect = value
		case kUpgrade:
			upgrade = value
		case kTrailer:
			h.hasTrailer = true
		}
		h.headers = append(h.headers, header{name: name, value: value, kind: k})
	}
	if lengths > 0 && encodings > 0 {
		return badRequest("both Content-Length and Transfer-Encoding")
	}
	if encodings > 0 && minor == 0 {
		return badRequest("Transfer-Encoding in an HTTP/1.0 request")
	}
	if hosts > 1 {
		return badRequest("more than one Host header")
	}
	if hosts == 0 && minor >= 1 {
		return badRequest("missing Host header")
	}
	if h.chunked {
		h.contentLength = -1
	}
	for _, v := range connection {
		forEachToken(v, func(tok string) {
			if equalFold(tok, "close") || equalFold(tok, "keep-alive") || equalFold(tok, "upgrade") {
				return
			}
			for i := range h.headers {
				if h.headers[i].kind == kOther && equalFold(h.headers[i].name, tok) {
					h.headers[i].hop = true
				}
			}
		})
	}
	if minor >= 1 {
		h.keepAlive = !connClose
	} else {
		h.keepAlive = connKeepAlive && !connClose
	}
	if expect != "" && minor >= 1 {
		if !equalFold(expect, "100-continue") {
			return &requestError{status: 417, reason: fmt.Sprintf("unsupported expectation %q", truncate(expect, 32))}
		}
		h.expectContinue = h.hasBody()
		if !h.expectContinue {
			h.headers.del("expect") // nothing to wait for
		}
	}
	if connUpgrade && upgrade != "" && minor >= 1 {
		h.upgrade = upgrade
	}
	return h.parseTarget()
}

// parseTarget splits the request-target into path and query, and takes the
// authority of an absolute-form target.
func (h *requestHead) parseTarget() error {
	t := h.target
	switch {
	case t[0] == '/':
	case t == "*":
		if h.method != "OPTIONS" {
			return badRequest("asterisk-form target with method %s", h.method)
		}
		h.path = "*"
		return nil
	case h.method == "CONNECT":
		return &requestError{status: 405, reason: "CONNECT is not supported"}
	default:
		// absolute-form: scheme "://" authority [path-abempty] ["?" query]
		i := 0
		for i < len(t) && t[i] != ':' {
			i++
		}
		scheme := t[:i]
		if !equalFold(scheme, "http") && !equalFold(scheme, "https") || len(t) < i+3 || t[i:i+3] != "://" {
			return badRequest("malformed request target")
		}
		t = t[i+3:]
		j := 0
		for j < len(t) && t[j] != '/' && t[j] != '?' {
			j++
		}
		if j == 0 {
			return badRequest("absolute-form target without authority")
		}
		h.authority = t[:j]
		h.absolute = true
		t = t[j:]
	}
	for i := 0; i < len(t); i++ {
		if t[i] == '?' {
			h.path, h.rawQuery = t[:i], t[i+1:]
			if h.path == "" {
				h.path = "/"
			}
			return nil
		}
	}
	h.path = t
	if h.path == "" {
		h.path = "/"
	}
	return nil
}

// truncate shortens s for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// appendHead appends the head to forward upstream: HTTP/1.1, origin-form
// target built from path and rawQuery (possibly rewritten), Host first, the
// fields of hl (the request's, after per-backend edits) without hop-by-hop ones,
// and the framing the proxy chose. A non-empty clientID is added as
// sluice-client-id; stripClientID drops any such field the client sent.
func (h *requestHead) appendHead(b []byte, hl headerList, path, rawQuery, host, clientID string, stripClientID bool) []byte {
	b = append(b, h.method...)
	b = append(b, ' ')
	b = append(b, path...)
	if rawQuery != "" {
		b = append(b, '?')
		b = append(b, rawQuery...)
	}
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\n"...)
	for i := range hl {
		f := &hl[i]
		if f.hop {
			continue
		}
		switch f.kind {
		case kOther:
		case kExpect:
			if !h.expectContinue { // HTTP/1.0 expectations are ignored, not forwarded
				continue
			}
		case kTrailer:
			if !h.chunked {
				continue
			}
		case kClientID:
			if stripClientID {
				continue
			}
		default:
			continue
		}
		b = append(b, f.name...)
		b = append(b, ": "...)
		b = append(b, f.value...)
		b = append(b, "\r\n"...)
	}
	if clientID != "" {
		b = append(b, clientIDHeader+": "...)
		b = append(b, clientID...)
		b = append(b, "\r\n"...)
	}
	switch {
	case h.chunked:
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	case h.contentLength > 0 || (h.contentLength == 0 && needsZeroLength(h.method)):
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, h.contentLength, 10)
		b = append(b, "\r\n"...)
	}
	if h.upgrade != "" {
		b = append(b, "Connection: Upgrade\r\nUpgrade: "...)
		b = append(b, h.upgrade...)
		b = append(b, "\r\n"...)
	}
	return append(b, "\r\n"...)
}

// needsZeroLength reports whether a body-less request of this method should say
// Content-Length: 0 (methods that normally carry a body).
func needsZeroLength(method string) bool {
	return method == "POST" || method == "PUT" || method == "PATCH"
}

// The request head is what routing reads and what request filters edit.
var (
	_ route.Request      = (*requestHead)(nil)
	_ route.HeaderEditor = (*requestHead)(nil)
	_ route.HeaderEditor = (*responseHead)(nil)
	_ route.HeaderEditor = (*attemptHeaders)(nil)
)
