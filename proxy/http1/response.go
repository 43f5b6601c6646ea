package http1

import (
	"errors"
	"fmt"
	"strconv"
)

// errBadResponse wraps every malformed response from upstream.
var errBadResponse = errors.New("malformed response from upstream")

func badResponse(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadResponse, fmt.Sprintf(format, args...))
}

// framing is how a message body is delimited.
type framing uint8

const (
	// frameNone: no body.
	frameNone framing = iota
	// frameLength: Content-Length bytes.
	frameLength
	// frameChunked: chunked transfer coding.
	frameChunked
	// frameClose: the body runs until the connection closes.
	frameClose
)

// responseHead is a parsed HTTP/1.x response head from upstream. It implements
// route.HeaderEditor for response filters.
type responseHead struct {
	raw          string
	major, minor int
	status       int
	reason       string
	headers      headerList

	// contentLength is the Content-Length value, -1 when absent.
	contentLength int64
	chunked       bool
	// close says the upstream closes the connection after this response.
	close   bool
	upgrade string
}

// Set replaces a header field.
func (h *responseHead) Set(name, value string) { h.headers.set(name, value) }

// Add appends a header field.
func (h *responseHead) Add(name, value string) { h.headers.add(name, value) }

// Del removes a header field.
func (h *responseHead) Del(name string) { h.headers.del(name) }

func (h *responseHead) reset() {
	clear(h.headers)
	*h = responseHead{headers: h.headers[:0], contentLength: -1}
}

// parse parses a response head read by readHead.
func (h *responseHead) parse(raw string) error {
	h.reset()
	h.raw = raw
	line, rest, ok := nextLine(raw)
	if !ok || len(line) < 12 {
		return badResponse("status line %q", truncate(line, 64))
	}
	major, minor, ok := parseVersion(line[:8])
	if !ok || major != 1 || line[8] != ' ' {
		return badResponse("status line %q", truncate(line, 64))
	}
	h.major, h.minor = major, minor
	code := line[9:12]
	for i := 0; i < 3; i++ {
		if code[i] < '0' || code[i] > '9' {
			return badResponse("status code %q", code)
		}
	}
	h.status = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	if h.status < 100 {
		return badResponse("status code %q", code)
	}
	if len(line) > 12 {
		if line[12] != ' ' {
			return badResponse("status line %q", truncate(line, 64))
		}
		h.reason = line[13:]
		if !validValue(h.reason) {
			return badResponse("reason phrase")
		}
	}

	var lengths, encodings int
	connClose, connKeepAlive := false, false
	var connection []string
	for rest != "" {
		line, rest, ok = nextLine(rest)
		if !ok {
			return badResponse("header line")
		}
		if line == "" {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return badResponse("obsolete line folding")
		}
		name, value, ok := parseHeaderLine(line)
		if !ok {
			return badResponse("header field %q", truncate(line, 64))
		}
		k := classify(name)
		switch k {
		case kContentLength:
			n, ok := parseContentLength(value)
			if !ok {
				return badResponse("Content-Length %q", truncate(value, 32))
			}
			if lengths > 0 && n != h.contentLength {
				return badResponse("conflicting Content-Length headers")
			}
			lengths++
			h.contentLength = n
		case kTransferEncoding:
			encodings++
			if !equalFold(value, "chunked") || encodings > 1 {
				return badResponse("unsupported Transfer-Encoding %q", truncate(value, 32))
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
				}
			})
		case kUpgrade:
			h.upgrade = value
		}
		h.headers = append(h.headers, header{name: name, value: value, kind: k})
	}
	for _, v := range connection {
		forEachToken(v, func(tok string) {
			for i := range h.headers {
				if h.headers[i].kind == kOther && equalFold(h.headers[i].name, tok) {
					h.headers[i].hop = true
				}
			}
		})
	}
	if h.chunked && lengths > 0 {
		// Transfer-Encoding wins; a message with both cannot be trusted for reuse.
		h.contentLength = -1
		connClose = true
	}
	if minor >= 1 {
		h.close = connClose
	} else {
		h.close = connClose || !connKeepAlive
	}
	return nil
}

// bodyFraming says how the body of this response to a request with method is
// delimited (RFC 9112 §6.3).
func (h *responseHead) bodyFraming(method string) framing {
	switch {
	case method == "HEAD", h.status < 200, h.status == 204, h.status == 304:
		return frameNone
	case h.chunked:
		return frameChunked
	case h.contentLength == 0:
		return frameNone
	case h.contentLength > 0:
		return frameLength
	}
	return frameClose
}

// appendHead appends the response head for the client: the fields the upstream
// sent without hop-by-hop ones, the framing out, and the connection decision.
// A 101 keeps its Upgrade and says Connection: Upgrade.
func (h *responseHead) appendHead(b []byte, out framing, in framing, closeConn, http10KeepAlive bool) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(h.status), 10)
	b = append(b, ' ')
	if h.reason != "" {
		b = append(b, h.reason...)
	} else {
		b = append(b, statusText(h.status)...)
	}
	b = append(b, "\r\n"...)
	for i := range h.headers {
		f := &h.headers[i]
		if f.hop {
			continue
		}
		switch f.kind {
		case kOther, kExpect, kHost, kClientID:
		case kTrailer:
			if out != frameChunked || in != frameChunked {
				continue
			}
		case kUpgrade:
			if h.status != 101 {
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
	switch {
	case out == frameChunked:
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	case h.contentLength >= 0 && !h.chunked && h.status >= 200 && h.status != 204:
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, h.contentLength, 10)
		b = append(b, "\r\n"...)
	}
	switch {
	case h.status == 101:
		b = append(b, "Connection: Upgrade\r\n"...)
	case closeConn:
		b = append(b, "Connection: close\r\n"...)
	case http10KeepAlive:
		b = append(b, "Connection: keep-alive\r\n"...)
	}
	return append(b, "\r\n"...)
}

// statusText is the reason phrase the proxy uses for its own responses and for
// upstream responses that sent none.
func statusText(code int) string {
	switch code {
	case 100:
		return "Continue"
	case 101:
		return "Switching Protocols"
	case 200:
		return "OK"
	case 301:
		return "Moved Permanently"
	case 302:
		return "Found"
	case 303:
		return "See Other"
	case 307:
		return "Temporary Redirect"
	case 308:
		return "Permanent Redirect"
	case 400:
		return "Bad Request"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 405:
		return "Method Not Allowed"
	case 408:
		return "Request Timeout"
	case 417:
		return "Expectation Failed"
	case 429:
		return "Too Many Requests"
	case 431:
		return "Request Header Fields Too Large"
	case 500:
		return "Internal Server Error"
	case 501:
		return "Not Implemented"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	case 504:
		return "Gateway Timeout"
	case 505:
		return "HTTP Version Not Supported"
	}
	return "Status " + strconv.Itoa(code)
}
