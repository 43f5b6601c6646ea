package http2

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"golang.org/x/net/http2"
)

// Connection-level work done before x/net/http2 sees a client connection.
//
// Four h2spec cases fail with x/net/http2's server alone, and all are fixed here
// rather than in the protocol code (the last two in malformed.go):
//
//   - An invalid connection preface: x/net closes the socket with the rest of the
//     client's bytes unread, so the kernel answers with a TCP RST instead of
//     closing. We read the preface ourselves and, when it is wrong, half-close
//     and drain before closing (h2spec 3.5 #2).
//   - A SETTINGS frame naming one parameter twice: RFC 9113 §6.5.3 says the
//     values are processed in order, x/net hangs up on duplicates as a hardening
//     measure. settingsFilter rewrites such a frame to keep each parameter's last
//     value, which has the same effect as processing them in order (h2spec 6.5.3 #1).
//   - A request with a connection-specific header field or TE other than
//     "trailers": x/net answers 400 where RFC 9113 §8.2.2 asks for a stream
//     error of type PROTOCOL_ERROR (h2spec 8.1.2.2 #1 and #2).

const (
	// prefaceTimeout bounds the wait for the client preface (x/net uses the same).
	prefaceTimeout = 10 * time.Second
	// drainTimeout bounds how long a rejected connection is drained before closing.
	drainTimeout = time.Second
	// maxFilteredSettings is the largest SETTINGS frame the filter rewrites
	// (x/net refuses frames with more than 100 settings anyway).
	maxFilteredSettings = 100
	frameHeaderLen      = 9
	frameTypeSettings   = 0x4
	flagSettingsAck     = 0x1
)

// errBadPreface is returned when a connection does not start with the HTTP/2 client preface.
var errBadPreface = errors.New("invalid HTTP/2 connection preface")

// readPreface consumes the client connection preface from c.
func readPreface(c net.Conn) error {
	if err := c.SetReadDeadline(time.Now().Add(prefaceTimeout)); err != nil {
		return fmt.Errorf("reading HTTP/2 preface: %w", err)
	}
	var buf [len(http2.ClientPreface)]byte
	_, err := io.ReadFull(c, buf[:])
	if derr := c.SetReadDeadline(time.Time{}); err == nil && derr != nil {
		err = derr
	}
	if err != nil {
		return fmt.Errorf("reading HTTP/2 preface: %w", err)
	}
	if string(buf[:]) != http2.ClientPreface {
		return fmt.Errorf("%w: %q", errBadPreface, buf[:])
	}
	return nil
}

// closeGracefully closes c without a TCP reset: it half-closes, discards what
// the peer still sends for a short while, then closes.
func closeGracefully(c net.Conn) {
	type closeWriter interface{ CloseWrite() error }
	cw, ok := c.(closeWriter)
	if !ok {
		cw, ok = underlying(c).(closeWriter)
	}
	if ok {
		_ = cw.CloseWrite()
		_ = c.SetReadDeadline(time.Now().Add(drainTimeout))
		_, _ = io.Copy(io.Discard, io.LimitReader(c, 1<<20))
	}
	c.Close()
}

// underlying unwraps connections that expose the connection they wrap.
func underlying(c net.Conn) net.Conn {
	for {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return c
		}
		next := u.NetConn()
		if next == nil || next == c {
			return c
		}
		c = next
	}
}

// settingsFilter is a client connection as x/net reads it, with SETTINGS frames
// that repeat a parameter rewritten to keep its last value. Every other byte
// passes through unchanged; reads are buffered, which also saves x/net's framer
// a system call per frame header.
type settingsFilter struct {
	net.Conn
	r       *bufio.Reader
	pending []byte // a rewritten frame not yet delivered
	left    int    // bytes of the current frame still to pass through
	headers *headerMirror
	hbuf    []byte // the header frame being inspected
}

// tlsSettingsFilter keeps the TLS state of a TLS client connection visible to x/net.
type tlsSettingsFilter struct {
	*settingsFilter
	cs interface{ ConnectionState() tls.ConnectionState }
}

func (f *tlsSettingsFilter) ConnectionState() tls.ConnectionState { return f.cs.ConnectionState() }

// filterConn wraps c for x/net after the preface has been read.
func filterConn(c net.Conn) net.Conn {
	f := &settingsFilter{Conn: c, r: bufio.NewReaderSize(c, 16<<10), headers: newHeaderMirror()}
	if cs, ok := c.(interface{ ConnectionState() tls.ConnectionState }); ok {
		return &tlsSettingsFilter{settingsFilter: f, cs: cs}
	}
	return f
}

// NetConn returns the wrapped connection.
func (f *settingsFilter) NetConn() net.Conn { return f.Conn }

// Read delivers the client's frames, rewriting SETTINGS frames with duplicates.
func (f *settingsFilter) Read(p []byte) (int, error) {
	for {
		if len(f.pending) > 0 {
			n := copy(p, f.pending)
			f.pending = f.pending[n:]
			return n, nil
		}
		if f.left > 0 {
			if len(p) > f.left {
				p = p[:f.left]
			}
			n, err := f.r.Read(p)
			f.left -= n
			return n, err
		}
		hdr, err := f.r.Peek(frameHeaderLen)
		if err != nil {
			if len(hdr) > 0 {
				// A truncated frame header: deliver it; the error follows.
				f.left = len(hdr)
				continue
			}
			return 0, err
		}
		length := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
		if hdr[3] == frameTypeSettings && hdr[4]&flagSettingsAck == 0 &&
			length > 6 && length%6 == 0 && length <= 6*maxFilteredSettings {
			if frame, err := f.r.Peek(frameHeaderLen + length); err == nil {
				if out, ok := dedupeSettings(frame); ok {
					_, _ = f.r.Discard(len(frame))
					f.pending = out
					continue
				}
			}
		}
		if (hdr[3] == frameTypeHeaders || hdr[3] == frameTypeContinuation) && length <= minMaxFrameSize && !f.headers.off {
			// Header blocks are read whole and checked (malformed.go).
			// Larger frames are x/net's to refuse.
			n := frameHeaderLen + length
			if cap(f.hbuf) < n {
				f.hbuf = make([]byte, n)
			}
			frame := f.hbuf[:n]
			if _, err := io.ReadFull(f.r, frame); err != nil {
				return 0, err // the connection ended mid-frame
			}
			f.pending = f.headers.frame(frame, minMaxFrameSize)
			continue
		}
		f.left = frameHeaderLen + length
	}
}

// dedupeSettings returns a copy of a SETTINGS frame keeping only the last value
// of each parameter, and false when the frame has no duplicates or must stay as
// it is: an invalid value anywhere (x/net must see and reject it) or a repeated
// SETTINGS_HEADER_TABLE_SIZE (HPACK must signal the smallest of its values).
func dedupeSettings(frame []byte) ([]byte, bool) {
	payload := frame[frameHeaderLen:]
	n := len(payload) / 6
	dup := false
	for i := 0; i < n && !dup; i++ {
		id := binary.BigEndian.Uint16(payload[i*6:])
		for j := i + 1; j < n; j++ {
			if binary.BigEndian.Uint16(payload[j*6:]) == id {
				dup = true
				break
			}
		}
	}
	if !dup {
		return nil, false
	}
	var out bytes.Buffer
	out.Grow(len(frame))
	out.Write(frame[:frameHeaderLen])
	for i := 0; i < n; i++ {
		s := http2.Setting{ID: http2.SettingID(binary.BigEndian.Uint16(payload[i*6:])), Val: binary.BigEndian.Uint32(payload[i*6+2:])}
		if s.Valid() != nil {
			return nil, false
		}
		later := false
		for j := i + 1; j < n; j++ {
			if binary.BigEndian.Uint16(payload[j*6:]) == uint16(s.ID) {
				later = true
				break
			}
		}
		if later {
			if s.ID == http2.SettingHeaderTableSize {
				return nil, false
			}
			continue
		}
		out.Write(payload[i*6 : i*6+6])
	}
	b := out.Bytes()
	l := len(b) - frameHeaderLen
	b[0], b[1], b[2] = byte(l>>16), byte(l>>8), byte(l)
	return b, true
}
