package http2

import (
	"golang.org/x/net/http2/hpack"
)

// Malformed requests (RFC 9113 §8.2.2): a request carrying a
// connection-specific header field, or TE with a value other than "trailers",
// must be answered with a stream error of type PROTOCOL_ERROR. x/net's server
// answers them with a 400 response instead (h2spec http2/8.1.2.2 #1 and #2).
//
// The filter that reads client frames for x/net therefore decodes every header
// block with its own HPACK decoder, a mirror of x/net's: both see the same
// blocks in the same order, so their dynamic tables stay equal. When a block
// is malformed, the filter appends one literal header field "without
// indexing" whose name is not a valid field name to the block's last frame.
// Such a field changes no HPACK state, and x/net rejects a header block with
// an invalid field name with RST_STREAM(PROTOCOL_ERROR) — what the RFC asks.

const (
	frameTypeHeaders      = 0x1
	frameTypeContinuation = 0x9
	flagEndHeaders        = 0x4
	flagPadded            = 0x8
	flagPriority          = 0x20
	// decoderTableSize is x/net's server's SETTINGS_HEADER_TABLE_SIZE (the
	// HPACK default; Server.MaxDecoderHeaderTableSize is not set).
	decoderTableSize = 4096
)

// malformedMarker is the literal header field appended to a malformed block:
// "literal without indexing, new name" (0x00), a 7-byte name with a space
// (never a valid field name) and an empty value.
var malformedMarker = []byte{0x00, 0x07, 'b', 'a', 'd', ' ', 'r', 'e', 'q', 0x00}

// headerMirror follows the client's header blocks with its own HPACK decoder.
type headerMirror struct {
	dec     *hpack.Decoder
	inBlock bool // a HEADERS frame without END_HEADERS was seen
	bad     bool // the current block is malformed
	off     bool // the mirror lost track (a decoding error): it passes frames on
}

func newHeaderMirror() *headerMirror {
	m := &headerMirror{}
	m.dec = hpack.NewDecoder(decoderTableSize, m.field)
	return m
}

// field checks one decoded field of the current block.
func (m *headerMirror) field(f hpack.HeaderField) {
	switch f.Name {
	case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
		m.bad = true
	case "te":
		if f.Value != "trailers" {
			m.bad = true
		}
	}
}

// frame inspects one whole HEADERS or CONTINUATION frame (header included)
// and returns what x/net should read instead: the frame itself, or for the
// last frame of a malformed block the frame with malformedMarker appended
// to its fragment. maxFrame is the largest payload x/net accepts.
func (m *headerMirror) frame(frame []byte, maxFrame int) []byte {
	if m.off {
		return frame
	}
	typ, flags := frame[3], frame[4]
	payload := frame[frameHeaderLen:]
	start, end := 0, len(payload)
	switch typ {
	case frameTypeHeaders:
		if flags&flagPadded != 0 {
			if len(payload) < 1 {
				return frame // x/net rejects the frame
			}
			start++
			end -= int(payload[0])
		}
		if flags&flagPriority != 0 {
			start += 5
		}
		if start > end {
			return frame
		}
		m.inBlock, m.bad = true, false
	case frameTypeContinuation:
		if !m.inBlock {
			return frame // x/net rejects a CONTINUATION out of place
		}
	default:
		return frame
	}
	if _, err := m.dec.Write(payload[start:end]); err != nil {
		// x/net fails on the same bytes with a COMPRESSION_ERROR and ends
		// the connection; nothing is left to keep in step with.
		m.off = true
		return frame
	}
	if flags&flagEndHeaders == 0 {
		return frame
	}
	m.inBlock = false
	if err := m.dec.Close(); err != nil {
		m.off = true
		return frame
	}
	if !m.bad || len(payload)+len(malformedMarker) > maxFrame {
		return frame
	}
	out := make([]byte, 0, len(frame)+len(malformedMarker))
	out = append(out, frame[:frameHeaderLen+end]...)
	out = append(out, malformedMarker...)
	out = append(out, payload[end:]...)
	l := len(out) - frameHeaderLen
	out[0], out[1], out[2] = byte(l>>16), byte(l>>8), byte(l)
	return out
}
