package http1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"

	"github.com/sluicehq/sluice/proxy/dispatch"
)

// kind classifies the header fields the proxy interprets itself.
type kind uint8

const (
	kOther kind = iota
	kHost
	kContentLength
	kTransferEncoding
	kConnection
	kKeepAlive
	kProxyConnection
	kTE
	kTrailer
	kUpgrade
	kExpect
	kClientID
)

// clientIDHeader carries the verified identity of the client on inbound requests.
const clientIDHeader = dispatch.ClientIDHeader

// classify returns the kind of a header name, case-insensitively.
func classify(name string) kind {
	switch len(name) {
	case 2:
		if equalFold(name, "te") {
			return kTE
		}
	case 4:
		if equalFold(name, "host") {
			return kHost
		}
	case 6:
		if equalFold(name, "expect") {
			return kExpect
		}
	case 7:
		if equalFold(name, "trailer") {
			return kTrailer
		}
		if equalFold(name, "upgrade") {
			return kUpgrade
		}
	case 10:
		if equalFold(name, "connection") {
			return kConnection
		}
		if equalFold(name, "keep-alive") {
			return kKeepAlive
		}
	case 14:
		if equalFold(name, "content-length") {
			return kContentLength
		}
	case 16:
		if equalFold(name, "proxy-connection") {
			return kProxyConnection
		}
		if equalFold(name, clientIDHeader) {
			return kClientID
		}
	case 17:
		if equalFold(name, "transfer-encoding") {
			return kTransferEncoding
		}
	}
	return kOther
}

// header is one header field. Name and value are substrings of the head they
// were parsed from, or strings a filter set.
type header struct {
	name, value string
	kind        kind
	// hop marks a field named by a Connection option: it is not forwarded.
	hop bool
}

// headerList is an ordered list of header fields with case-insensitive lookup.
// It keeps the case and order the peer sent.
type headerList []header

// get returns the first value of name.
func (hl headerList) get(name string) (string, bool) {
	for i := range hl {
		if equalFold(hl[i].name, name) {
			return hl[i].value, true
		}
	}
	return "", false
}

// set replaces every field called name with one field name: value, in the place
// of the first.
func (hl *headerList) set(name, value string) {
	l := *hl
	for i := range l {
		if equalFold(l[i].name, name) {
			l[i] = header{name: name, value: value, kind: classify(name)}
			*hl = append(l[:i+1], deleteFold(l[i+1:], name)...)
			return
		}
	}
	*hl = append(l, header{name: name, value: value, kind: classify(name)})
}

// add appends a field.
func (hl *headerList) add(name, value string) {
	*hl = append(*hl, header{name: name, value: value, kind: classify(name)})
}

// del removes every field called name.
func (hl *headerList) del(name string) { *hl = deleteFold(*hl, name) }

// deleteFold removes the fields called name from l, in place.
func deleteFold(l headerList, name string) headerList {
	out := l[:0]
	for _, h := range l {
		if !equalFold(h.name, name) {
			out = append(out, h)
		}
	}
	clear(l[len(out):])
	return out
}

// equalFold reports whether two ASCII strings are equal ignoring case.
func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x == y {
			continue
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// Errors reading a message head.
var (
	errHeadTooLarge = errors.New("message head too large")
	errBadLineEnd   = errors.New("bare CR in message head")
)

// headEnd returns the length of the head at the start of b (through the empty
// line that ends it), or -1 when b holds no complete head.
func headEnd(b []byte) int {
	i := 0
	for {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		i += j + 1
		if i < len(b) && b[i] == '\n' {
			return i + 1
		}
		if i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n' {
			return i + 2
		}
	}
}

// readHead reads one message head (start line and header fields, through the
// empty line) from br and returns it as one string, so that the parsed fields can
// be substrings of it. buf is scratch space for heads that do not fit br's buffer;
// it is returned for reuse. skipBlank drops empty lines before the start line, as
// servers should for requests. io.EOF means the peer closed before sending a byte.
func readHead(br *bufio.Reader, buf []byte, max int, skipBlank bool) (string, []byte, error) {
	if skipBlank {
		for n := 0; n < 8; n++ {
			b, err := br.Peek(1)
			if err != nil {
				return "", buf, err
			}
			if b[0] != '\r' && b[0] != '\n' {
				break
			}
			if b[0] == '\r' {
				b, err = br.Peek(2)
				if err != nil {
					return "", buf, eofUnexpected(err)
				}
				if b[1] != '\n' {
					return "", buf, errBadLineEnd
				}
				br.Discard(2)
			} else {
				br.Discard(1)
			}
		}
	}
	// Fast path: the whole head is already buffered.
	if br.Buffered() == 0 {
		if _, err := br.Peek(1); err != nil {
			return "", buf, err
		}
	}
	b, _ := br.Peek(br.Buffered())
	if n := headEnd(b); n > 0 {
		if n > max {
			return "", buf, errHeadTooLarge
		}
		s := string(b[:n])
		br.Discard(n)
		return s, buf, nil
	}
	if len(b) > max {
		return "", buf, errHeadTooLarge
	}
	// Slow path: accumulate lines.
	buf = buf[:0]
	lineStart := 0
	for {
		line, err := br.ReadSlice('\n')
		if len(buf)+len(line) > max {
			return "", buf, errHeadTooLarge
		}
		buf = append(buf, line...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return "", buf, eofUnexpected(err)
		}
		l := buf[lineStart:]
		if len(l) == 1 || (len(l) == 2 && l[0] == '\r') {
			if lineStart == 0 {
				return "", buf, errors.New("empty start line")
			}
			return string(buf), buf, nil
		}
		lineStart = len(buf)
	}
}

// eofUnexpected turns io.EOF in the middle of a message into io.ErrUnexpectedEOF.
func eofUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// nextLine splits s at its first line end ("\r\n" or "\n") and returns the line
// without it and the rest. ok is false when s holds no line end. A bare CR
// inside the line is left for the field checks to refuse.
func nextLine(s string) (line, rest string, ok bool) {
	i := strings.IndexByte(s, '\n')
	if i < 0 {
		return "", "", false
	}
	line, rest = s[:i], s[i+1:]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, rest, true
}

// tokenTable marks the characters of an RFC 9110 token.
var tokenTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenTable[s[i]] {
			return false
		}
	}
	return true
}

// validValue reports whether s may be a header field value: no control
// characters other than horizontal tab.
func validValue(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// trimOWS removes optional whitespace (SP, HTAB) around s.
func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// parseHeaderLine splits "name: value" into its trimmed parts.
func parseHeaderLine(line string) (name, value string, ok bool) {
	colon := -1
	for i := 0; i < len(line); i++ {
		if line[i] == ':' {
			colon = i
			break
		}
	}
	if colon <= 0 {
		return "", "", false
	}
	name = line[:colon]
	if !isToken(name) { // also rejects whitespace before the colon
		return "", "", false
	}
	value = trimOWS(line[colon+1:])
	if !validValue(value) {
		return "", "", false
	}
	return name, value, true
}

// parseContentLength parses a Content-Length value: decimal digits only.
func parseContentLength(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// forEachToken calls fn with each comma-separated, trimmed, non-empty element of a
// list-valued header.
func forEachToken(s string, fn func(tok string)) {
	for s != "" {
		i := 0
		for i < len(s) && s[i] != ',' {
			i++
		}
		if tok := trimOWS(s[:i]); tok != "" {
			fn(tok)
		}
		if i == len(s) {
			return
		}
		s = s[i+1:]
	}
}

// parseVersion parses "HTTP/1.0" or "HTTP/1.1". For another well-formed version
// it returns ok with major != 1.
func parseVersion(s string) (major, minor int, ok bool) {
	if len(s) != 8 || s[:5] != "HTTP/" || s[6] != '.' {
		return 0, 0, false
	}
	if s[5] < '0' || s[5] > '9' || s[7] < '0' || s[7] > '9' {
		return 0, 0, false
	}
	return int(s[5] - '0'), int(s[7] - '0'), true
}
