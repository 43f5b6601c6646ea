package http1

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// holdServer accepts connections and reports each one's close (EOF seen).
type holdServer struct {
	addr     string
	accepted atomic.Int64
	closed   atomic.Int64
	mu       sync.Mutex
	conns    []net.Conn
}

func startHold(t *testing.T) *holdServer {
	h := &holdServer{}
	h.addr = startRaw(t, func(c net.Conn) {
		h.mu.Lock()
		h.conns = append(h.conns, c)
		h.mu.Unlock()
		h.accepted.Add(1)
		io.Copy(io.Discard, c)
		h.closed.Add(1)
	})
	return h
}

// closeAll closes the server side of every connection accepted so far.
func (h *holdServer) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.conns {
		c.Close()
	}
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) Add(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

func TestPoolReuseLIFO(t *testing.T) {
	h := startHold(t)
	p := &Pool{}
	defer p.Close()
	ctx := context.Background()
	c1, err := p.get(ctx, h.addr)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := p.get(ctx, h.addr)
	if err != nil {
		t.Fatal(err)
	}
	if c1.reused || c2.reused {
		t.Fatal("fresh connections marked reused")
	}
	p.put(c1)
	p.put(c2)
	got, err := p.get(ctx, h.addr)
	if err != nil {
		t.Fatal(err)
	}
	if got != c2 || !got.reused {
		t.Fatal("get did not return the most recently released connection")
	}
	got2, _ := p.get(ctx, h.addr)
	if got2 != c1 {
		t.Fatal("second get did not return the older connection")
	}
	got.release(false)
	got2.release(false)
	waitFor(t, "server to see both closes", func() bool { return h.closed.Load() == 2 })
	eq(t, h.accepted.Load(), int64(2))
}

func TestPoolMaxIdle(t *testing.T) {
	h := startHold(t)
	p := &Pool{MaxIdlePerHost: 2}
	defer p.Close()
	var cs []*upConn
	for i := 0; i < 3; i++ {
		c, err := p.get(context.Background(), h.addr)
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	for _, c := range cs {
		p.put(c)
	}
	eq(t, p.idleCount(h.addr), 2)
	waitFor(t, "the connection over the cap to close", func() bool { return h.closed.Load() == 1 })
}

func TestPoolIdleTimeout(t *testing.T) {
	h := startHold(t)
	clk := &fakeClock{now: time.Unix(1000, 0)}
	p := &Pool{IdleTimeout: time.Minute, now: clk.Now}
	defer p.Close()
	c1, _ := p.get(context.Background(), h.addr)
	c2, _ := p.get(context.Background(), h.addr)
	p.put(c1)
	clk.Add(30 * time.Second)
	p.put(c2)

	clk.Add(40 * time.Second) // c1 idle 70s, c2 40s
	next := p.sweep()
	eq(t, p.idleCount(h.addr), 1)
	eq(t, next, 20*time.Second)
	waitFor(t, "expired connection to close", func() bool { return h.closed.Load() == 1 })

	clk.Add(30 * time.Second)
	// get refuses the expired connection even before a sweep.
	c3, err := p.get(context.Background(), h.addr)
	if err != nil {
		t.Fatal(err)
	}
	if c3 == c2 || c3.reused {
		t.Fatal("get returned an expired connection")
	}
	c3.release(false)
	waitFor(t, "all closed", func() bool { return h.closed.Load() == 3 })

	// An address unused for IdleTimeout is forgotten.
	clk.Add(2 * time.Minute)
	p.sweep()
	if _, ok := p.hosts.Load(h.addr); ok {
		t.Fatal("unused address still tracked")
	}
}

func TestPoolSweepTimer(t *testing.T) {
	h := startHold(t)
	p := &Pool{IdleTimeout: 20 * time.Millisecond}
	defer p.Close()
	c, err := p.get(context.Background(), h.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.put(c)
	waitFor(t, "the sweeper to close the idle connection", func() bool { return h.closed.Load() == 1 })
	eq(t, p.idleCount(h.addr), 0)
}

func TestPoolProbeStale(t *testing.T) {
	h := startHold(t)
	clk := &fakeClock{now: time.Unix(1000, 0)}
	p := &Pool{now: clk.Now}
	defer p.Close()
	c, _ := p.get(context.Background(), h.addr)
	p.put(c)
	waitFor(t, "the server to accept", func() bool { return h.accepted.Load() == 1 })
	h.closeAll()
	// The FIN arrives asynchronously; the probe must see it.
	waitFor(t, "the upstream close to be visible", func() bool { return !alive(c.Conn) })
	clk.Add(probeAfter)
	if got := p.getIdle(h.addr); got != nil {
		t.Fatal("getIdle returned a connection the upstream closed")
	}
}

func TestPoolClose(t *testing.T) {
	h := startHold(t)
	p := &Pool{}
	c1, _ := p.get(context.Background(), h.addr)
	c2, _ := p.get(context.Background(), h.addr)
	p.put(c1)
	p.Close()
	waitFor(t, "idle connection to close", func() bool { return h.closed.Load() == 1 })
	p.put(c2) // released after Close: closed
	waitFor(t, "released connection to close", func() bool { return h.closed.Load() == 2 })
	if _, err := p.get(context.Background(), h.addr); err == nil {
		t.Fatal("get after Close succeeded")
	}
}

func TestPoolDialError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := &Pool{}
	defer p.Close()
	_, err = p.get(context.Background(), addr)
	if err == nil {
		t.Fatal("dial to a closed port succeeded")
	}
	if !strings.Contains(err.Error(), "connect to "+addr) {
		t.Fatalf("error does not name the address: %v", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "dial" {
		t.Fatalf("error is not a dial OpError: %v", err)
	}
}

func TestPoolConnectTimeout(t *testing.T) {
	calls := 0
	p := &Pool{ConnectTimeout: 10 * time.Millisecond, Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		calls++
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	defer p.Close()
	_, err := p.get(context.Background(), "127.0.0.1:9")
	if err == nil || !strings.Contains(err.Error(), "connect to 127.0.0.1:9") || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("err = %v", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "dial" {
		t.Fatalf("a connect timeout must stay a dial error: %v", err)
	}
	eq(t, calls, 1)
}
