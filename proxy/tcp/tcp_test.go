package tcp

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/proxy/detect"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// guard bounds every wait so that a broken proxy fails instead of hanging.
const guard = 20 * time.Second

type counts struct{ read, write atomic.Int64 }

func (c *counts) AddRead(n int)  { c.read.Add(int64(n)) }
func (c *counts) AddWrite(n int) { c.write.Add(int64(n)) }

// noSplice hides the *net.TCPConn type (so Proxy copies through its buffer)
// while keeping CloseWrite.
type noSplice struct{ *net.TCPConn }

// proxyOpts configures a test proxy.
type proxyOpts struct {
	idle    time.Duration
	stats   Stats
	split   bool          // wrap both sides in noSplice
	detect  time.Duration // > 0: run detect.Detect on the client first
	ctx     context.Context
	wrapped func(client, upstream net.Conn) (net.Conn, net.Conn)
}

// startProxy listens on loopback and proxies one accepted connection to
// upstream; the returned channel yields Proxy's result.
func startProxy(t *testing.T, upstream string, o proxyOpts) (addr string, done <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx := o.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	ch := make(chan error, 1)
	go func() {
		defer ln.Close()
		c, err := ln.Accept()
		if err != nil {
			ch <- err
			return
		}
		var client net.Conn = c
		if o.detect > 0 {
			_, dc, err := detect.Detect(c, o.detect)
			if err != nil {
				c.Close()
				ch <- err
				return
			}
			client = dc
		}
		up, err := Dial(ctx, upstream, guard)
		if err != nil {
			c.Close()
			ch <- err
			return
		}
		if o.split {
			client = noSplice{client.(*net.TCPConn)}
			up = noSplice{up.(*net.TCPConn)}
		}
		if o.wrapped != nil {
			client, up = o.wrapped(client, up)
		}
		ch <- Proxy(ctx, client, up, o.idle, o.stats)
	}()
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String(), ch
}

// startServer runs handle for each connection accepted on a loopback listener
// until the test ends.
func startServer(t *testing.T, handle func(c *net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			handle(c.(*net.TCPConn))
		}
	}()
	t.Cleanup(func() { ln.Close(); <-stopped })
	return ln.Addr().String()
}

// echo copies everything back, then half-closes, then waits for the peer to close.
func echo(c *net.TCPConn) {
	defer c.Close()
	io.Copy(c, c)
	c.CloseWrite()
	io.Copy(io.Discard, c)
}

func wait(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(guard):
		t.Fatal("Proxy did not return")
		return nil
	}
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(guard))
	return c.(*net.TCPConn)
}

func TestEchoLargePayload(t *testing.T) {
	for _, split := range []bool{false, true} {
		t.Run("splice="+strconv.FormatBool(!split), func(t *testing.T) {
			upstream := startServer(t, echo)
			var st counts
			addr, done := startProxy(t, upstream, proxyOpts{stats: &st, split: split})
			c := dial(t, addr)

			const size = 8<<20 + 12345
			payload := make([]byte, size)
			rand.Read(payload)
			werr := make(chan error, 1)
			go func() {
				_, err := c.Write(payload)
				if err == nil {
					err = c.CloseWrite()
				}
				werr <- err
			}()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("reading the echo: %v", err)
			}
			if err := <-werr; err != nil {
				t.Fatalf("writing: %v", err)
			}
			if !bytes.Equal(got, payload) {
				t.Fatalf("echo differs: got %d bytes, want %d", len(got), len(payload))
			}
			c.Close()
			if err := wait(t, done); err != nil {
				t.Fatalf("Proxy: %v", err)
			}
			if r, w := st.read.Load(), st.write.Load(); r != size || w != size {
				t.Errorf("counted read %d, write %d; want %d each", r, w, size)
			}
		})
	}
}

// TestHalfClose: the client sends a request and shuts down its writing side;
// the server reads to EOF, only then replies, and closes.
func TestHalfClose(t *testing.T) {
	for _, split := range []bool{false, true} {
		t.Run("splice="+strconv.FormatBool(!split), func(t *testing.T) {
			gotReq := make(chan string, 1)
			upstream := startServer(t, func(c *net.TCPConn) {
				defer c.Close()
				req, _ := io.ReadAll(c)
				gotReq <- string(req)
				c.Write([]byte("reply to " + string(req)))
			})
			var st counts
			addr, done := startProxy(t, upstream, proxyOpts{stats: &st, split: split})
			c := dial(t, addr)
			if _, err := c.Write([]byte("request")); err != nil {
				t.Fatal(err)
			}
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			reply, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("reading the reply: %v", err)
			}
			if string(reply) != "reply to request" || <-gotReq != "request" {
				t.Errorf("reply = %q", reply)
			}
			if err := wait(t, done); err != nil {
				t.Fatalf("Proxy: %v", err)
			}
			if st.read.Load() != 7 || st.write.Load() != 16 {
				t.Errorf("counted read %d, write %d; want 7, 16", st.read.Load(), st.write.Load())
			}
		})
	}
}

func TestCancel(t *testing.T) {
	for _, split := range []bool{false, true} {
		t.Run("splice="+strconv.FormatBool(!split), func(t *testing.T) {
			upstream := startServer(t, echo)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			addr, done := startProxy(t, upstream, proxyOpts{ctx: ctx, split: split})
			c := dial(t, addr)
			// One round trip proves the proxy is running before it is cancelled.
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
				t.Fatal(err)
			}
			cancel()
			if err := wait(t, done); !errors.Is(err, context.Canceled) {
				t.Fatalf("Proxy = %v, want context.Canceled", err)
			}
			if _, err := io.ReadAll(c); err != nil {
				t.Fatalf("client read after cancel: %v (want EOF: the proxy closes the client)", err)
			}
		})
	}
}

// TestIdleTimeout: a connection that carried traffic and then none is closed.
// The idle timeout also runs between the proxy's start and the test's first
// write, so it must outlast a loaded scheduler's pause there: 400 ms, where
// 100 ms was within reach of a pause on a busy 2-core machine.
func TestIdleTimeout(t *testing.T) {
	for _, split := range []bool{false, true} {
		t.Run("splice="+strconv.FormatBool(!split), func(t *testing.T) {
			upstream := startServer(t, echo)
			addr, done := startProxy(t, upstream, proxyOpts{idle: 400 * time.Millisecond, split: split})
			c := dial(t, addr)
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
				t.Fatal(err)
			}
			if err := wait(t, done); !errors.Is(err, ErrIdle) {
				t.Fatalf("Proxy = %v, want ErrIdle", err)
			}
			if _, err := io.ReadAll(c); err != nil {
				t.Fatalf("client read after idle close: %v", err)
			}
		})
	}
}

// TestActiveNotIdle keeps a connection busy for several idle periods: the
// traffic gap (5 ms) is tiny next to the idle timeout (1 s), so only a proxy
// that ignores traffic closes it.
func TestActiveNotIdle(t *testing.T) {
	if testing.Short() {
		t.Skip("takes a few seconds")
	}
	for _, split := range []bool{false, true} {
		t.Run("splice="+strconv.FormatBool(!split), func(t *testing.T) {
			upstream := startServer(t, echo)
			const idle = time.Second
			addr, done := startProxy(t, upstream, proxyOpts{idle: idle, split: split})
			c := dial(t, addr)
			buf := make([]byte, 4)
			for end := time.Now().Add(3 * idle); time.Now().Before(end); {
				if _, err := c.Write([]byte("ping")); err != nil {
					t.Fatalf("write: %v", err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					t.Fatalf("connection closed while active: %v", err)
				}
				time.Sleep(5 * time.Millisecond)
			}
			c.CloseWrite()
			io.ReadAll(c)
			if err := wait(t, done); err != nil {
				t.Fatalf("Proxy: %v", err)
			}
		})
	}
}

func TestUserActivity(t *testing.T) {
	now := time.Unix(1000, 0)
	a := &userActivity{base: now, now: func() time.Time { return now }}
	if a.idleFor() != 0 {
		t.Fatalf("fresh idleFor = %v", a.idleFor())
	}
	now = now.Add(3 * time.Second)
	if a.idleFor() != 3*time.Second {
		t.Fatalf("idleFor = %v, want 3s", a.idleFor())
	}
	a.touch()
	now = now.Add(time.Second)
	if a.idleFor() != time.Second {
		t.Fatalf("idleFor after touch = %v, want 1s", a.idleFor())
	}
}

func TestKernelActivity(t *testing.T) {
	if !canSplice {
		t.Skip("TCP_INFO is read only where splice is used")
	}
	received := make(chan *net.TCPConn, 1)
	addr := startServer(t, func(c *net.TCPConn) { received <- c })
	c := dial(t, addr)
	s := <-received
	defer s.Close()
	k := kernelActivity{c, s}
	// Data just arrived at s: idle time starts again from about zero.
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if d := k.idleFor(); d > guard {
		t.Fatalf("idleFor right after traffic = %v", d)
	}
	// Without traffic it grows.
	deadline := time.Now().Add(guard)
	for k.idleFor() < 50*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatalf("idleFor stuck at %v", k.idleFor())
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.Close()
	if d := k.idleFor(); d != 0 {
		t.Errorf("idleFor on a closed socket = %v, want 0", d)
	}
}

// TestPeekedForwardedFirst: the bytes read by detection reach the upstream
// first, in order, and are counted.
func TestPeekedForwardedFirst(t *testing.T) {
	for _, split := range []bool{false, true} {
		t.Run("splice="+strconv.FormatBool(!split), func(t *testing.T) {
			got := make(chan string, 1)
			upstream := startServer(t, func(c *net.TCPConn) {
				defer c.Close()
				b, _ := io.ReadAll(c)
				got <- string(b)
			})
			var st counts
			opts := proxyOpts{stats: &st, detect: guard}
			if split {
				// Keep the *detect.Conn and hide only the upstream's type.
				opts.wrapped = func(client, up net.Conn) (net.Conn, net.Conn) {
					return client, noSplice{up.(*net.TCPConn)}
				}
			}
			addr, done := startProxy(t, upstream, opts)
			c := dial(t, addr)
			head := "GET /x HTTP/1.1\r\nHost: a\r\n"
			if _, err := c.Write([]byte(head)); err != nil {
				t.Fatal(err)
			}
			// Wait for the proxy to start copying after detection before sending more.
			waitFor(t, func() bool { return st.read.Load() >= int64(len(head)) })
			tail := strings.Repeat("body", 50000)
			if _, err := c.Write([]byte(tail)); err != nil {
				t.Fatal(err)
			}
			c.CloseWrite()
			if b := <-got; b != head+tail {
				t.Errorf("upstream got %d bytes starting %q, want %d starting %q", len(b), b[:min(len(b), 30)], len(head+tail), head[:30])
			}
			io.ReadAll(c)
			if err := wait(t, done); err != nil {
				t.Fatalf("Proxy: %v", err)
			}
			if n := st.read.Load(); n != int64(len(head+tail)) {
				t.Errorf("counted read %d, want %d", n, len(head+tail))
			}
		})
	}
}

// TestUpstreamPeeked: an upstream *detect.Conn's peeked bytes go to the client.
func TestUpstreamPeeked(t *testing.T) {
	client, clientPeer := net.Pipe()
	upstreamPeer, upstream := net.Pipe()
	sc := &scripted{Conn: upstream}
	go func() { upstreamPeer.Write([]byte("\x16\x03hello")); upstreamPeer.Close() }()
	_, dc, err := detect.Detect(sc, guard)
	if err != nil {
		t.Fatal(err)
	}
	var st counts
	done := make(chan error, 1)
	go func() { done <- Proxy(context.Background(), clientPeer, dc, 0, &st) }()
	got, err := io.ReadAll(client)
	if err != nil || string(got) != "\x16\x03hello" {
		t.Fatalf("client read %q, %v", got, err)
	}
	client.Close()
	if err := wait(t, done); err != nil {
		t.Fatalf("Proxy: %v", err)
	}
	if st.write.Load() != 7 {
		t.Errorf("counted write %d, want 7", st.write.Load())
	}
}

// scripted lets net.Pipe ignore the read deadline calls of detection.
type scripted struct{ net.Conn }

func (s *scripted) SetReadDeadline(time.Time) error { return nil }

// TestNoHalfClose: connections without CloseWrite are closed outright when one
// direction ends, which ends the other.
func TestNoHalfClose(t *testing.T) {
	client, clientPeer := net.Pipe()
	upstreamPeer, upstream := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- Proxy(context.Background(), clientPeer, upstream, 0, nil) }()
	go func() { client.Write([]byte("abc")); client.Close() }()
	got, _ := io.ReadAll(upstreamPeer)
	if string(got) != "abc" {
		t.Errorf("upstream read %q", got)
	}
	if err := wait(t, done); err != nil {
		t.Fatalf("Proxy: %v", err)
	}
	upstreamPeer.Close()
}

// TestServerSpeaksFirst is MySQL on a port not marked opaque: detection times
// out, the connection goes on as opaque, and the greeting flows.
func TestServerSpeaksFirst(t *testing.T) {
	upstream := startServer(t, func(c *net.TCPConn) {
		defer c.Close()
		c.Write([]byte("220 mail.example ESMTP\r\n"))
		line := make([]byte, 16)
		n, _ := c.Read(line)
		c.Write([]byte("250 hello " + string(line[:n])))
		c.CloseWrite()
		io.Copy(io.Discard, c)
	})
	addr, done := startProxy(t, upstream, proxyOpts{detect: 50 * time.Millisecond})
	c := dial(t, addr)
	greeting := make([]byte, 24)
	if _, err := io.ReadFull(c, greeting); err != nil {
		t.Fatalf("no greeting through the proxy: %v", err)
	}
	if string(greeting) != "220 mail.example ESMTP\r\n" {
		t.Fatalf("greeting = %q", greeting)
	}
	c.Write([]byte("EHLO me"))
	rest, err := io.ReadAll(c)
	if err != nil || string(rest) != "250 hello EHLO me" {
		t.Fatalf("reply = %q, %v", rest, err)
	}
	c.Close()
	if err := wait(t, done); err != nil {
		t.Fatalf("Proxy: %v", err)
	}
}

func TestUpstreamReset(t *testing.T) {
	upstream := startServer(t, func(c *net.TCPConn) {
		c.Read(make([]byte, 4))
		c.SetLinger(0)
		c.Close() // RST
	})
	addr, done := startProxy(t, upstream, proxyOpts{})
	c := dial(t, addr)
	c.Write([]byte("ping"))
	io.ReadAll(c)
	err := wait(t, done)
	if err == nil || errors.Is(err, ErrIdle) || !strings.Contains(err.Error(), "upstream to client") {
		t.Fatalf("Proxy = %v, want a reset error on the upstream side", err)
	}
}

func TestDialRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = Dial(context.Background(), addr, time.Second)
	if err == nil {
		t.Fatal("Dial to a closed port succeeded")
	}
	if want := "connect to " + addr + ": connection refused"; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
	var de *DialError
	var oe *net.OpError
	if !errors.As(err, &de) || !errors.As(err, &oe) || de.Timeout() {
		t.Errorf("error %v does not unwrap to a *DialError and a *net.OpError, or claims a timeout", err)
	}
}

func TestDialCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Dial(ctx, "127.0.0.1:1", time.Second)
	if err == nil || err.Error() != "connect to 127.0.0.1:1: canceled" || !errors.Is(err, context.Canceled) {
		t.Errorf("error = %v", err)
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestDialErrorMessages(t *testing.T) {
	op := &net.OpError{Op: "dial", Net: "tcp", Err: timeoutErr{}}
	tests := []struct {
		err  *DialError
		want string
	}{
		{&DialError{Addr: "10.0.0.1:80", ConnectTimeout: time.Second, Err: op}, "connect to 10.0.0.1:80: timed out after 1s"},
		{&DialError{Addr: "10.0.0.1:80", Err: op}, "connect to 10.0.0.1:80: i/o timeout"},
		{&DialError{Addr: "nope:80", Err: &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "nope"}}}, "connect to nope:80: lookup nope: no such host"},
		{&DialError{Addr: "x:1", Err: errors.New("boom")}, "connect to x:1: boom"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	if !tests[0].err.Timeout() {
		t.Error("Timeout() = false for a timeout")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met before the deadline")
		}
		time.Sleep(time.Millisecond)
	}
}

func benchmarkProxy(b *testing.B, split bool) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	go func() {
		c, err := sink.Accept()
		if err != nil {
			return
		}
		io.Copy(io.Discard, c)
		c.Close()
	}()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		up, err := Dial(context.Background(), sink.Addr().String(), time.Second)
		if err != nil {
			done <- err
			return
		}
		if split {
			c, up = noSplice{c.(*net.TCPConn)}, noSplice{up.(*net.TCPConn)}
		}
		done <- Proxy(context.Background(), c, up, 0, nil)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 256<<10)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
	<-done
}

func BenchmarkProxySplice(b *testing.B) { benchmarkProxy(b, false) }
func BenchmarkProxyBuffer(b *testing.B) { benchmarkProxy(b, true) }
