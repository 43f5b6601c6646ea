// Package detect decides which protocol a freshly accepted connection speaks by
// peeking at its first bytes: the HTTP/2 prior-knowledge preface, an HTTP/1
// request line, or anything else (opaque). The bytes read while deciding are kept
// and replayed to whoever reads the connection next, so nothing is lost.
//
// Detection follows Linkerd's rules (a request line or preface within the first
// 1024 bytes, a 10 s timeout after which the connection is treated as opaque) with
// one difference: where Linkerd decides from a single read, Detect keeps reading
// while what it has seen so far is still a valid prefix, because a client may
// write its request line in several small pieces.
package detect

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// Protocol is the outcome of detection.
type Protocol int

const (
	// Opaque is anything that is not recognisably HTTP; it is forwarded as bytes.
	Opaque Protocol = iota
	// HTTP1 is an HTTP/1.x request line.
	HTTP1
	// HTTP2 is the HTTP/2 prior-knowledge connection preface.
	HTTP2
)

// String returns "opaque", "http1" or "http2".
func (p Protocol) String() string {
	switch p {
	case Opaque:
		return "opaque"
	case HTTP1:
		return "http1"
	case HTTP2:
		return "http2"
	}
	return fmt.Sprintf("Protocol(%d)", int(p))
}

const (
	// DefaultTimeout is how long Detect waits for a decision when given no timeout.
	DefaultTimeout = 10 * time.Second
	// MaxPeek is the most bytes Detect reads before giving up and answering Opaque.
	MaxPeek = 1024
)

// Preface is the HTTP/2 client connection preface (RFC 9113 §3.4).
const Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// Conn is a net.Conn whose first bytes were read for detection and are replayed
// to the next reader before anything else is read from the network.
//
// A Conn is not safe for concurrent reads (neither is the replay of a net.Conn);
// writes, deadlines and Close go straight to the underlying connection.
type Conn struct {
	net.Conn
	peeked   []byte
	timedOut bool
}

// Read returns the peeked bytes first, then reads from the underlying connection.
func (c *Conn) Read(p []byte) (int, error) {
	if len(c.peeked) > 0 {
		n := copy(p, c.peeked)
		c.peeked = c.peeked[n:]
		if len(c.peeked) == 0 {
			c.peeked = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// Peeked returns the bytes read during detection that no Read has consumed yet.
// The caller must not modify them. To forward a connection without copying
// through user space, write Peeked to the destination, call Discard, and then
// copy from Raw.
func (c *Conn) Peeked() []byte { return c.peeked }

// Discard drops the peeked bytes that have not been read, for a caller that has
// forwarded them itself.
func (c *Conn) Discard() { c.peeked = nil }

// Raw returns the underlying connection. Reading from it skips any peeked bytes
// still buffered, so drain Peeked first.
func (c *Conn) Raw() net.Conn { return c.Conn }

// TimedOut reports whether detection ended because the timeout expired before a
// decision (the protocol is then Opaque). Linkerd's inbound side uses this to
// fall back to HTTP/1 when policy hints at it, and logs it on the outbound side.
func (c *Conn) TimedOut() bool { return c.timedOut }

// CloseWrite shuts down the writing side of the underlying connection, when it
// supports half-close (*net.TCPConn, *tls.Conn, ...).
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("detect: %T does not support half-close", c.Conn)
}

var scratch = sync.Pool{New: func() any { b := make([]byte, MaxPeek); return &b }}

// Detect reads from conn until it can tell the protocol: the HTTP/2 preface
// gives HTTP2, a complete valid HTTP/1 request line ("METHOD SP target SP
// HTTP/1.x CRLF") gives HTTP1, and anything that cannot be a prefix of either
// gives Opaque. It reads at most MaxPeek bytes and waits at most timeout (zero or
// negative means DefaultTimeout); when either runs out before a decision the
// answer is Opaque with a nil error, and the connection goes on as opaque: this
// is what lets server-speaks-first protocols (MySQL, SMTP) work on ports that
// are not marked opaque, at the cost of the timeout.
//
// The returned Conn replays every byte read. EOF before any byte is io.EOF; EOF
// after some bytes that are not yet HTTP gives Opaque, so that they are still
// forwarded. Any other read error is returned wrapped. Detect clears the read
// deadline it set before returning.
func Detect(conn net.Conn, timeout time.Duration) (Protocol, *Conn, error) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if err := conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return Opaque, nil, fmt.Errorf("detect: set read deadline: %w", err)
	}
	bp := scratch.Get().(*[]byte)
	defer scratch.Put(bp)
	buf := (*bp)[:0]

	proto, decided, readErr := Opaque, false, error(nil)
	for !decided && len(buf) < MaxPeek {
		n, err := conn.Read(buf[len(buf):MaxPeek])
		buf = buf[:len(buf)+n]
		if n > 0 {
			proto, decided = Classify(buf)
		}
		if err != nil && !decided {
			readErr = err
			break
		}
	}
	clearErr := conn.SetReadDeadline(time.Time{})

	c := &Conn{Conn: conn}
	if len(buf) > 0 {
		c.peeked = append([]byte(nil), buf...)
	}
	switch {
	case decided:
	case readErr == nil: // MaxPeek bytes without a decision
		proto = Opaque
	case isTimeout(readErr):
		proto, c.timedOut = Opaque, true
	case errors.Is(readErr, io.EOF):
		if len(buf) == 0 {
			return Opaque, nil, io.EOF
		}
		proto = Opaque
	default:
		return Opaque, nil, fmt.Errorf("detect: read after %d bytes: %w", len(buf), readErr)
	}
	if clearErr != nil {
		return Opaque, nil, fmt.Errorf("detect: clear read deadline: %w", clearErr)
	}
	return proto, c, nil
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Classify decides the protocol from the first bytes of a connection. decided is
// false while b is still a valid prefix of both an HTTP/2 preface or an HTTP/1
// request line, that is when more bytes are needed.
func Classify(b []byte) (p Protocol, decided bool) {
	if len(b) == 0 {
		return Opaque, false
	}
	// The HTTP/2 preface.
	n := min(len(b), len(Preface))
	if string(b[:n]) == Preface[:n] {
		if n == len(Preface) {
			return HTTP2, true
		}
		// Still a prefix of the preface; "PRI" is also a valid HTTP/1 method,
		// but "PRI * HTTP/2.0" is not an HTTP/1 request line, so wait.
		return Opaque, false
	}
	return classifyHTTP1(b)
}

// classifyHTTP1 checks for "METHOD SP request-target SP HTTP/1.d (CR)LF",
// allowing empty lines before it as RFC 9112 §2.2 asks servers to.
func classifyHTTP1(b []byte) (Protocol, bool) {
	i := 0
	// Leading empty lines.
	for i < len(b) && (b[i] == '\r' || b[i] == '\n') {
		if b[i] == '\r' {
			if i+1 == len(b) {
				return Opaque, false
			}
			if b[i+1] != '\n' {
				return Opaque, true
			}
			i++
		}
		i++
	}
	if i == len(b) {
		return Opaque, false
	}
	// Method: one or more token characters.
	start := i
	for i < len(b) && isTokenChar(b[i]) {
		i++
	}
	if i == len(b) {
		return Opaque, false
	}
	if i == start || b[i] != ' ' {
		return Opaque, true
	}
	i++
	// Request target: one or more visible characters.
	start = i
	for i < len(b) && b[i] > ' ' && b[i] != 0x7f {
		i++
	}
	if i == len(b) {
		return Opaque, false
	}
	if i == start || b[i] != ' ' {
		return Opaque, true
	}
	i++
	// Version.
	const version = "HTTP/1."
	for j := 0; j < len(version); j, i = j+1, i+1 {
		if i == len(b) {
			return Opaque, false
		}
		if b[i] != version[j] {
			return Opaque, true
		}
	}
	if i == len(b) {
		return Opaque, false
	}
	if b[i] < '0' || b[i] > '9' {
		return Opaque, true
	}
	i++
	// Line end: CRLF, or a bare LF as lenient servers accept.
	if i == len(b) {
		return Opaque, false
	}
	switch b[i] {
	case '\n':
		return HTTP1, true
	case '\r':
		if i+1 == len(b) {
			return Opaque, false
		}
		if b[i+1] == '\n' {
			return HTTP1, true
		}
	}
	return Opaque, true
}

// isTokenChar reports whether c is an RFC 9110 tchar.
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}
