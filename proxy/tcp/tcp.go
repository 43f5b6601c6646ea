// Package tcp forwards opaque TCP connections: bytes both ways, half-close
// propagated, byte counts for the tcp_* metrics, an idle timeout, and splice(2)
// on Linux so that the bytes of an opaque stream never enter user space.
package tcp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/proxy/detect"
)

// Stats receives byte counts; the metrics package's TCPStats implements it.
type Stats interface {
	// AddRead counts bytes read from the client.
	AddRead(n int)
	// AddWrite counts bytes written to the client.
	AddWrite(n int)
}

// ErrIdle is returned by Proxy when it closed a connection that carried no
// traffic in either direction for the idle timeout.
var ErrIdle = errors.New("tcp: idle timeout")

// spliceChunk is how many bytes one splice-backed ReadFrom may move before it
// returns so that the bytes are counted. It equals the Go runtime's splice pipe
// size, so chunking costs no extra system calls.
const spliceChunk = 1 << 20

// bufSize is the copy buffer for connections that cannot splice (TLS, pipes).
const bufSize = 32 << 10

var buffers = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// Proxy copies bytes both ways between client and upstream until both directions
// have finished, then closes both connections. When one side finishes sending
// (EOF), Proxy shuts down the writing half of the other side (CloseWrite) and
// keeps copying the opposite direction, so protocols that half-close work. A
// side that cannot half-close is closed outright, ending both directions.
//
// It returns nil when both directions ended with EOF, ctx.Err() when ctx was
// cancelled, ErrIdle when idle (if > 0) passed with no traffic either way, or
// the first copy error (a reset, a broken pipe); in every case both connections
// are closed and every goroutine Proxy started has exited.
//
// If client (or upstream) is a *detect.Conn, its peeked bytes are forwarded
// first. When both connections are then *net.TCPConn on Linux, each direction is
// moved with splice(2) through (*net.TCPConn).ReadFrom, which is what io.Copy
// does between two TCP connections; to count bytes while the stream is live, the
// source is wrapped in an *io.LimitedReader (which ReadFrom still splices) of
// 1 MiB, so counts are reported at least every MiB and when a direction ends,
// never per read. Idleness is then read from the kernel (TCP_INFO's time since
// data was last received on either socket). Other connections (TLS, pipes) are
// copied through a pooled 32 KiB buffer and counted per read.
//
// Idleness is checked every idle/4, so a connection is closed between idle and
// 1.25×idle after its last byte.
func Proxy(ctx context.Context, client, upstream net.Conn, idle time.Duration, stats Stats) error {
	if stats == nil {
		stats = nopStats{}
	}
	clientRaw, clientPeek := unwrap(client)
	upstreamRaw, upstreamPeek := unwrap(upstream)

	clientTCP, ok1 := clientRaw.(*net.TCPConn)
	upstreamTCP, ok2 := upstreamRaw.(*net.TCPConn)
	useSplice := ok1 && ok2 && canSplice

	var act activity
	if useSplice && idle > 0 {
		act = kernelActivity{clientTCP, upstreamTCP}
	} else {
		act = newUserActivity()
	}

	results := make(chan result, 2)
	run := func(dir string, dst, src net.Conn, peeked []byte, count func(int)) {
		results <- forward(dir, dst, src, peeked, count, useSplice, act)
	}
	go run("client to upstream", upstreamRaw, clientRaw, clientPeek, stats.AddRead)
	go run("upstream to client", clientRaw, upstreamRaw, upstreamPeek, stats.AddWrite)

	closeBoth := func() {
		clientRaw.Close()
		upstreamRaw.Close()
	}
	pending := 2
	finish := func(err error) error {
		closeBoth()
		for ; pending > 0; pending-- {
			<-results
		}
		return err
	}

	var tick <-chan time.Time
	if idle > 0 {
		t := time.NewTicker(max(idle/4, time.Millisecond))
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return finish(ctx.Err())
		case r := <-results:
			pending--
			if r.err != nil || r.closeAll || pending == 0 {
				return finish(r.err)
			}
		case <-tick:
			if act.idleFor() >= idle {
				return finish(ErrIdle)
			}
		}
	}
}

type result struct {
	err      error
	closeAll bool // dst cannot half-close: end both directions
}

// forward copies one direction and half-closes dst at EOF.
func forward(dir string, dst, src net.Conn, peeked []byte, count func(int), useSplice bool, act activity) result {
	if len(peeked) > 0 {
		n, err := dst.Write(peeked)
		count(n)
		act.touch()
		if err != nil {
			return result{err: fmt.Errorf("tcp: %s: %w", dir, err)}
		}
	}
	var err error
	if useSplice {
		err = copySplice(dst.(*net.TCPConn), src.(*net.TCPConn), count)
	} else {
		err = copyBuffer(dst, src, count, act)
	}
	if err != nil {
		return result{err: fmt.Errorf("tcp: %s: %w", dir, err)}
	}
	cw, ok := dst.(interface{ CloseWrite() error })
	if !ok {
		return result{closeAll: true}
	}
	// A failed CloseWrite (the peer already gone) is not worth reporting: the
	// opposite direction sees the failure itself.
	_ = cw.CloseWrite()
	return result{}
}

// copySplice moves src to dst until EOF with splice, in counted chunks.
func copySplice(dst, src *net.TCPConn, count func(int)) error {
	lr := &io.LimitedReader{R: src}
	for {
		lr.N = spliceChunk
		n, err := dst.ReadFrom(lr)
		count(int(n))
		if err != nil {
			return err
		}
		if n < spliceChunk {
			return nil // EOF
		}
	}
}

// copyBuffer moves src to dst until EOF through a pooled buffer.
func copyBuffer(dst, src net.Conn, count func(int), act activity) error {
	bp := buffers.Get().(*[]byte)
	defer buffers.Put(bp)
	buf := *bp
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			act.touch()
			w, werr := dst.Write(buf[:n])
			count(w)
			if werr != nil {
				return werr
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// unwrap returns the connection under a *detect.Conn and its unread peeked bytes.
func unwrap(c net.Conn) (net.Conn, []byte) {
	if dc, ok := c.(*detect.Conn); ok {
		p := dc.Peeked()
		dc.Discard()
		return dc.Raw(), p
	}
	return c, nil
}

// activity tells how long a connection pair has carried no traffic.
type activity interface {
	touch()
	idleFor() time.Duration
}

// userActivity tracks traffic copied in user space.
type userActivity struct {
	base time.Time // monotonic origin
	last atomic.Int64
	now  func() time.Time
}

func newUserActivity() *userActivity {
	return &userActivity{base: time.Now(), now: time.Now}
}

func (a *userActivity) touch() { a.last.Store(int64(a.now().Sub(a.base))) }

func (a *userActivity) idleFor() time.Duration {
	return a.now().Sub(a.base) - time.Duration(a.last.Load())
}

// kernelActivity asks the kernel how long ago each socket last received data:
// spliced bytes never pass through Proxy, so it cannot see them itself.
type kernelActivity struct{ a, b *net.TCPConn }

func (kernelActivity) touch() {}

func (k kernelActivity) idleFor() time.Duration {
	a, errA := sinceLastReceive(k.a)
	b, errB := sinceLastReceive(k.b)
	if errA != nil || errB != nil {
		return 0 // closing or closed: the copies will end on their own
	}
	return min(a, b)
}

type nopStats struct{}

func (nopStats) AddRead(int)  {}
func (nopStats) AddWrite(int) {}

// canSplice is whether (*net.TCPConn).ReadFrom splices on this platform.
var canSplice = runtime.GOOS == "linux"

// DialError is a failed connection attempt; its message names the address:
// "connect to 10.0.0.1:80: connection refused".
type DialError struct {
	// Addr is the address dialled.
	Addr string
	// ConnectTimeout is the connect timeout when it was the binding limit (0: none,
	// or ctx's deadline came first).
	ConnectTimeout time.Duration
	// Err is the error from the dialer.
	Err error
}

// Error returns "connect to ADDR: REASON".
func (e *DialError) Error() string { return "connect to " + e.Addr + ": " + e.reason() }

// Unwrap returns the dialer's error.
func (e *DialError) Unwrap() error { return e.Err }

// Timeout reports whether the attempt timed out.
func (e *DialError) Timeout() bool {
	var ne net.Error
	return errors.As(e.Err, &ne) && ne.Timeout()
}

func (e *DialError) reason() string {
	var se *os.SyscallError
	switch {
	case errors.As(e.Err, &se):
		return se.Err.Error()
	case errors.Is(e.Err, context.Canceled):
		return "canceled"
	case e.Timeout() && e.ConnectTimeout > 0:
		return fmt.Sprintf("timed out after %v", e.ConnectTimeout)
	}
	var oe *net.OpError
	if errors.As(e.Err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return e.Err.Error()
}

// Dial connects to addr over TCP, giving up after timeout (0: no limit but
// ctx's). Its error is a *DialError naming the address.
func Dial(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	start := time.Now()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		e := &DialError{Addr: addr, Err: err}
		// Name the connect timeout only when it, not ctx's deadline, was the limit.
		if dl, ok := ctx.Deadline(); timeout > 0 && (!ok || dl.Sub(start) > timeout) {
			e.ConnectTimeout = timeout
		}
		return nil, e
	}
	return c, nil
}
