package detect

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestProtocolString(t *testing.T) {
	for p, want := range map[Protocol]string{Opaque: "opaque", HTTP1: "http1", HTTP2: "http2", Protocol(9): "Protocol(9)"} {
		if got := p.String(); got != want {
			t.Errorf("Protocol(%d).String() = %q, want %q", int(p), got, want)
		}
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		in      string
		want    Protocol
		decided bool
	}{
		{"", Opaque, false},
		{"P", Opaque, false},
		{"PRI * HTTP/2.0", Opaque, false},
		{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r", Opaque, false},
		{Preface, HTTP2, true},
		{Preface + "\x00\x00\x12\x04", HTTP2, true},
		{"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", Opaque, true},
		{"PRI / HTTP/1.1\r\n", HTTP1, true},
		{"GET / HTTP/1.1\r\n", HTTP1, true},
		{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", HTTP1, true},
		{"GET / HTTP/1.0\n", HTTP1, true},
		{"\r\n\r\nPOST /a?b=c HTTP/1.1\r\n", HTTP1, true},
		{"\n\nGET / HTTP/1.1\r\n", HTTP1, true},
		{"CONNECT example.com:443 HTTP/1.1\r\n", HTTP1, true},
		{"OPTIONS * HTTP/1.1\r\n", HTTP1, true},
		{"M-SEARCH * HTTP/1.1\r\n", HTTP1, true},
		{"get http://x/y HTTP/1.1\r\n", HTTP1, true},
		{"G", Opaque, false},
		{"GET", Opaque, false},
		{"GET ", Opaque, false},
		{"GET /index", Opaque, false},
		{"GET / ", Opaque, false},
		{"GET / HTTP/", Opaque, false},
		{"GET / HTTP/1.", Opaque, false},
		{"GET / HTTP/1.1", Opaque, false},
		{"GET / HTTP/1.1\r", Opaque, false},
		{"\r", Opaque, false},
		{"\r\n", Opaque, false},
		{"\rX", Opaque, true},
		{"GET / HTTP/1.1\rX", Opaque, true},
		{"GET / HTTP/1.1 \r\n", Opaque, true},
		{"GET / HTTP/2.0\r\n", Opaque, true},
		{"GET / HTTP/1.x\r\n", Opaque, true},
		{"GET / HTTPS/1.1\r\n", Opaque, true},
		{"GET  / HTTP/1.1\r\n", Opaque, true},
		{" GET / HTTP/1.1\r\n", Opaque, true},
		{"GET /a\x7fb HTTP/1.1\r\n", Opaque, true},
		{"G(T / HTTP/1.1\r\n", Opaque, true},
		{"\x16\x03\x01\x02\x00\x01", Opaque, true},      // TLS ClientHello
		{"\x0a\x00\x00\x00\x0a5.7.0\x00", Opaque, true}, // LF then a MySQL greeting
		{"SSH-2.0-OpenSSH_9.2\r\n", Opaque, true},       // no space after a token
		{"*1\r\n$4\r\nPING\r\n", Opaque, true},          // Redis RESP
		{"EHLO mail.example.com\r\n", Opaque, true},     // SMTP: two fields only
		{"HELO a b\r\n", Opaque, true},                  // three fields, not HTTP
		{strings.Repeat("A", 2000), Opaque, false},      // caller stops at MaxPeek
		{"GET /" + strings.Repeat("a", 2000) + " HTTP/1.1\r\n", HTTP1, true},
	}
	for _, tt := range tests {
		got, decided := Classify([]byte(tt.in))
		if got != tt.want || decided != tt.decided {
			t.Errorf("Classify(%q) = %v, %v; want %v, %v", tt.in, got, decided, tt.want, tt.decided)
		}
	}
}

// scriptConn is a net.Conn whose reads return scripted chunks and then a final error.
type scriptConn struct {
	net.Conn
	chunks    [][]byte
	final     error
	deadlines []time.Time
	reads     int
}

func (c *scriptConn) Read(p []byte) (int, error) {
	c.reads++
	if len(c.chunks) == 0 {
		return 0, c.final
	}
	n := copy(p, c.chunks[0])
	c.chunks[0] = c.chunks[0][n:]
	if len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

func (c *scriptConn) SetReadDeadline(t time.Time) error {
	c.deadlines = append(c.deadlines, t)
	return nil
}

func split(s string, sizes ...int) [][]byte {
	var out [][]byte
	for _, n := range sizes {
		out = append(out, []byte(s[:n]))
		s = s[n:]
	}
	if s != "" {
		out = append(out, []byte(s))
	}
	return out
}

func TestDetectScripted(t *testing.T) {
	const get = "GET /hello HTTP/1.1\r\nHost: a\r\n\r\n"
	tests := []struct {
		name       string
		chunks     [][]byte
		final      error
		want       Protocol
		wantPeeked string
		timedOut   bool
		wantErr    error
	}{
		{name: "request line in one read", chunks: split(get), final: io.EOF, want: HTTP1, wantPeeked: get},
		{name: "request line byte by byte", chunks: split(get[:21], 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), final: os.ErrDeadlineExceeded, want: HTTP1, wantPeeked: get[:21]},
		{name: "request line in pieces", chunks: split(get, 3, 5, 9), final: io.EOF, want: HTTP1, wantPeeked: get},
		{name: "preface in pieces", chunks: split(Preface+"\x00\x00", 3, 11, 4), final: io.EOF, want: HTTP2, wantPeeked: Preface + "\x00\x00"},
		{name: "TLS", chunks: split("\x16\x03\x01\x00\xa5"), final: io.EOF, want: Opaque, wantPeeked: "\x16\x03\x01\x00\xa5"},
		{name: "partial then timeout", chunks: split("GET / HT"), final: os.ErrDeadlineExceeded, want: Opaque, wantPeeked: "GET / HT", timedOut: true},
		{name: "nothing then timeout", final: os.ErrDeadlineExceeded, want: Opaque, timedOut: true},
		{name: "partial then EOF", chunks: split("GET /"), final: io.EOF, want: Opaque, wantPeeked: "GET /"},
		{name: "EOF first", final: io.EOF, wantErr: io.EOF},
		{name: "reset", chunks: split("GE"), final: errors.New("connection reset by peer"), wantErr: errors.New("detect: read after 2 bytes: connection reset by peer")},
		{name: "limit without decision", chunks: split("GET /"+strings.Repeat("a", 1500), 100, 900, 100), final: io.EOF, want: Opaque, wantPeeked: ("GET /" + strings.Repeat("a", 1500))[:MaxPeek]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc := &scriptConn{chunks: tt.chunks, final: tt.final}
			before := time.Now()
			got, c, err := Detect(sc, 0)
			if tt.wantErr != nil {
				if err == nil || err.Error() != tt.wantErr.Error() {
					t.Fatalf("Detect error = %v, want %v", err, tt.wantErr)
				}
				if errors.Is(tt.wantErr, io.EOF) && !errors.Is(err, io.EOF) {
					t.Fatalf("Detect error %v is not io.EOF", err)
				}
			} else {
				if err != nil {
					t.Fatalf("Detect: %v", err)
				}
				if got != tt.want {
					t.Errorf("protocol = %v, want %v", got, tt.want)
				}
				if string(c.Peeked()) != tt.wantPeeked {
					t.Errorf("Peeked = %q, want %q", c.Peeked(), tt.wantPeeked)
				}
				if c.TimedOut() != tt.timedOut {
					t.Errorf("TimedOut = %v, want %v", c.TimedOut(), tt.timedOut)
				}
				if c.Raw() != net.Conn(sc) {
					t.Errorf("Raw() is not the original connection")
				}
			}
			if len(sc.deadlines) != 2 {
				t.Fatalf("SetReadDeadline called %d times, want 2 (set and clear)", len(sc.deadlines))
			}
			if d := sc.deadlines[0].Sub(before); d < DefaultTimeout || d > DefaultTimeout+time.Minute {
				t.Errorf("deadline set %v ahead, want the default %v", d, DefaultTimeout)
			}
			if !sc.deadlines[1].IsZero() {
				t.Errorf("deadline not cleared: last SetReadDeadline(%v)", sc.deadlines[1])
			}
		})
	}
}

func TestDetectStopsReadingOnceDecided(t *testing.T) {
	sc := &scriptConn{chunks: split("GET / HTTP/1.1\r\n", 16), final: errors.New("must not be read")}
	p, c, err := Detect(sc, time.Second)
	if err != nil || p != HTTP1 {
		t.Fatalf("Detect = %v, %v", p, err)
	}
	if sc.reads != 1 {
		t.Errorf("Detect made %d reads, want 1", sc.reads)
	}
	// Reading through the Conn replays the peeked bytes in small reads, then reads on.
	var got []byte
	buf := make([]byte, 5)
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			if err.Error() != "must not be read" {
				t.Fatalf("Read: %v", err)
			}
			break
		}
	}
	if string(got) != "GET / HTTP/1.1\r\n" || len(c.Peeked()) != 0 {
		t.Errorf("read %q, Peeked %q", got, c.Peeked())
	}
}

func TestDetectDiscard(t *testing.T) {
	sc := &scriptConn{chunks: split("\x16\x03"), final: io.EOF}
	_, c, err := Detect(sc, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Discard()
	if n, err := c.Read(make([]byte, 4)); n != 0 || err != io.EOF {
		t.Errorf("Read after Discard = %d, %v; want 0, EOF", n, err)
	}
}

// pair returns both ends of a loopback TCP connection.
func pair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := ln.Accept(); ch <- res{c, err} }()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { cc.Close(); r.c.Close() })
	return cc.(*net.TCPConn), r.c.(*net.TCPConn)
}

func TestDetectTCP(t *testing.T) {
	tests := []struct {
		name   string
		pieces []string
		want   Protocol
	}{
		{"http1", []string{"GET / HTTP/1.1\r\nHost: x\r\n\r\n"}, HTTP1},
		{"http1 in pieces", []string{"GE", "T /pa", "th HTTP/1", ".1\r", "\nHost: x\r\n\r\n"}, HTTP1},
		{"http2", []string{Preface, "\x00\x00\x00\x04\x00\x00\x00\x00\x00"}, HTTP2},
		{"http2 in pieces", []string{"PRI * HTTP/2.0\r\n", "\r\nSM\r\n\r\n"}, HTTP2},
		{"opaque", []string{"\x16\x03\x01\x00\x05hello"}, Opaque},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := pair(t)
			all := strings.Join(tt.pieces, "")
			done := make(chan error, 1)
			go func() {
				for _, p := range tt.pieces {
					if _, err := client.Write([]byte(p)); err != nil {
						done <- err
						return
					}
				}
				done <- client.CloseWrite()
			}()
			p, c, err := Detect(server, 5*time.Second)
			if err != nil {
				t.Fatalf("Detect: %v", err)
			}
			if p != tt.want {
				t.Errorf("protocol = %v, want %v", p, tt.want)
			}
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("ReadAll: %v", err)
			}
			if string(got) != all {
				t.Errorf("read through = %q, want %q", got, all)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestServerSpeaksFirst is a MySQL-style exchange on a port that is not marked
// opaque: the client waits for the server's greeting, so detection times out and
// the connection must then work as opaque, with no deadline left behind.
func TestServerSpeaksFirst(t *testing.T) {
	client, server := pair(t)
	greeting := []byte("\x4a\x00\x00\x00\x0a8.0.36\x00")
	reply := []byte("\x20\x00\x00\x01login")

	clientDone := make(chan error, 1)
	go func() {
		buf := make([]byte, len(greeting))
		if _, err := io.ReadFull(client, buf); err != nil {
			clientDone <- err
			return
		}
		if !bytes.Equal(buf, greeting) {
			clientDone <- errors.New("client got a wrong greeting")
			return
		}
		_, err := client.Write(reply)
		clientDone <- err
	}()

	p, c, err := Detect(server, 50*time.Millisecond)
	if err != nil {
		t.Fatalf("Detect: %v", err)
	}
	if p != Opaque || !c.TimedOut() || len(c.Peeked()) != 0 {
		t.Fatalf("Detect = %v, timedOut %v, peeked %q; want opaque after timeout with nothing peeked", p, c.TimedOut(), c.Peeked())
	}
	if _, err := c.Write(greeting); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(reply))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("reading the reply after detection: %v", err)
	}
	if !bytes.Equal(buf, reply) {
		t.Errorf("reply = %q, want %q", buf, reply)
	}
	if err := <-clientDone; err != nil {
		t.Fatal(err)
	}
}

func TestDetectTCPEOF(t *testing.T) {
	client, server := pair(t)
	client.Close()
	if _, _, err := Detect(server, 5*time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("Detect on a closed connection = %v, want io.EOF", err)
	}
}

func TestCloseWrite(t *testing.T) {
	client, server := pair(t)
	if _, err := client.Write([]byte("GET / HTTP/1.1\r\n")); err != nil {
		t.Fatal(err)
	}
	_, c, err := Detect(server, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	if n, err := client.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("client read after CloseWrite = %d, %v; want EOF", n, err)
	}
	sc := &Conn{Conn: &scriptConn{}}
	if err := sc.CloseWrite(); err == nil {
		t.Error("CloseWrite on a connection without half-close succeeded")
	}
}
