package http2

import (
	"bytes"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

// rawClient speaks HTTP/2 frame by frame, with an HPACK encoder that indexes
// every field, so that the server's decoder state depends on every block.
type rawClient struct {
	t    *testing.T
	c    net.Conn
	fr   *http2.Framer
	enc  *hpack.Encoder
	buf  bytes.Buffer
	next uint32
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	rc := &rawClient{t: t, c: c, fr: http2.NewFramer(c, c), next: 1}
	rc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	rc.enc = hpack.NewEncoder(&rc.buf)
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatalf("preface: %v", err)
	}
	if err := rc.fr.WriteSettings(); err != nil {
		t.Fatalf("settings: %v", err)
	}
	return rc
}

// block encodes a request's header block with fields after the pseudo-headers.
func (rc *rawClient) block(path string, extra ...string) []byte {
	rc.buf.Reset()
	for _, f := range []hpack.HeaderField{
		{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: "web.default"}, {Name: ":path", Value: path},
	} {
		_ = rc.enc.WriteField(f)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		_ = rc.enc.WriteField(hpack.HeaderField{Name: extra[i], Value: extra[i+1]})
	}
	return bytes.Clone(rc.buf.Bytes())
}

// send writes a request as HEADERS (padded when pad) and, when split, one
// CONTINUATION per 3 bytes of the block; it returns the stream ID.
func (rc *rawClient) send(block []byte, pad, split bool) uint32 {
	id := rc.next
	rc.next += 2
	first, rest := block, []byte(nil)
	if split && len(block) > 3 {
		first, rest = block[:3], block[3:]
	}
	p := http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: true, EndHeaders: len(rest) == 0}
	if pad {
		p.PadLength = 7
	}
	if err := rc.fr.WriteHeaders(p); err != nil {
		rc.t.Fatalf("headers: %v", err)
	}
	for len(rest) > 0 {
		n := min(3, len(rest))
		if err := rc.fr.WriteContinuation(id, n == len(rest), rest[:n]); err != nil {
			rc.t.Fatalf("continuation: %v", err)
		}
		rest = rest[n:]
	}
	return id
}

// outcome reads frames until stream id ends: its :status, or the RST_STREAM code.
func (rc *rawClient) outcome(id uint32) (status string, rst http2.ErrCode, reset bool) {
	rc.t.Helper()
	_ = rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			rc.t.Fatalf("reading the answer to stream %d: %v", id, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = rc.fr.WriteSettingsAck()
			}
		case *http2.GoAwayFrame:
			rc.t.Fatalf("GOAWAY %v while waiting for stream %d", f.ErrCode, id)
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return "", f.ErrCode, true
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				status = f.PseudoValue("status")
				if f.StreamEnded() {
					return status, 0, false
				}
			}
		case *http2.DataFrame:
			if f.StreamID == id && f.StreamEnded() {
				return status, 0, false
			}
		}
	}
}

// TestMalformedRequestsAreStreamErrors checks that a request with a
// connection-specific header field or a TE other than "trailers" is reset
// with PROTOCOL_ERROR and never forwarded, and that the connection goes on:
// later requests, whose header blocks refer to fields the earlier ones
// indexed, are decoded right (the filter's HPACK mirror stays in step).
func TestMalformedRequestsAreStreamErrors(t *testing.T) {
	var served atomic.Int32
	backend, _ := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		if r.Header.Get("x-token") != "abc" {
			w.WriteHeader(http.StatusTeapot) // a header decoded wrong
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	p := startProxy(t, []routetable.Service{service("web", []string{backend})})
	rc := dialRaw(t, p.addr)

	steps := []struct {
		name       string
		extra      []string
		pad, split bool
		wantRST    bool
	}{
		{"valid, indexing x-token", []string{"x-token", "abc"}, false, false, false},
		{"connection header", []string{"x-token", "abc", "connection", "keep-alive"}, false, false, true},
		{"valid after it", []string{"x-token", "abc"}, false, false, false},
		{"TE gzip, padded", []string{"x-token", "abc", "te", "gzip"}, true, false, true},
		{"TE trailers is fine", []string{"x-token", "abc", "te", "trailers"}, false, false, false},
		{"upgrade, in CONTINUATION frames", []string{"x-token", "abc", "upgrade", "h2c"}, false, true, true},
		{"transfer-encoding", []string{"x-token", "abc", "transfer-encoding", "chunked"}, true, true, true},
		{"valid, split and padded", []string{"x-token", "abc", "x-other", "1"}, true, true, false},
		{"valid at the end", []string{"x-token", "abc"}, false, false, false},
	}
	wantServed := int32(0)
	for _, s := range steps {
		id := rc.send(rc.block("/"+s.name, s.extra...), s.pad, s.split)
		status, code, reset := rc.outcome(id)
		switch {
		case s.wantRST && (!reset || code != http2.ErrCodeProtocol):
			t.Errorf("%s: status %q reset %v (%v), want RST_STREAM PROTOCOL_ERROR", s.name, status, reset, code)
		case !s.wantRST && (reset || status != "204"):
			t.Errorf("%s: status %q reset %v (%v), want 204 from the backend", s.name, status, reset, code)
		}
		if !s.wantRST {
			wantServed++
		}
	}
	if got := served.Load(); got != wantServed {
		t.Errorf("the backend served %d requests, want %d: malformed ones must not be forwarded", got, wantServed)
	}
}

// BenchmarkHeaderMirror measures what the HPACK mirror adds to each request:
// a gRPC-like header block, indexed after the first request as clients do.
func BenchmarkHeaderMirror(b *testing.B) {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	m := newHeaderMirror()
	var frame []byte
	fields := []hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: "/grpc.testing.TestService/UnaryCall"}, {Name: ":authority", Value: "backend.default.svc.cluster.local:8080"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "user-agent", Value: "grpc-go/1.85.0"},
		{Name: "te", Value: "trailers"}, {Name: "grpc-timeout", Value: "4999m"},
	}
	for range 2 { // the second block refers to the table the first filled
		buf.Reset()
		for _, f := range fields {
			_ = enc.WriteField(f)
		}
		frame = append([]byte{0, 0, byte(buf.Len()), frameTypeHeaders, flagEndHeaders, 0, 0, 0, 1}, buf.Bytes()...)
		m.frame(frame, minMaxFrameSize)
	}
	frame = append([]byte{0, 0, byte(buf.Len()), frameTypeHeaders, flagEndHeaders, 0, 0, 0, 1}, buf.Bytes()...)
	b.ReportAllocs()
	for b.Loop() {
		m.frame(frame, minMaxFrameSize)
	}
}
