package http1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Pool defaults.
const (
	DefaultConnectTimeout = time.Second
	DefaultPoolIdle       = 90 * time.Second
	DefaultMaxIdlePerHost = 256
)

// probeAfter is how long a connection must have been idle before Get checks,
// with a non-blocking peek, that the upstream has not closed it. Connections
// reused sooner skip the check: under load it would cost a syscall per request,
// and a stale connection is still retried transparently.
const probeAfter = time.Second

// upstream buffer sizes.
const upBufSize = 4 << 10

// Pool keeps keep-alive connections to upstream endpoints, per address. Idle
// connections are reused last-in first-out (the warmest first), closed after
// IdleTimeout idle, and at most MaxIdlePerHost are kept per address. The zero
// value is ready to use; set the fields before first use.
type Pool struct {
	// ConnectTimeout bounds a dial (default 1s).
	ConnectTimeout time.Duration
	// IdleTimeout closes connections idle that long (default 90s).
	IdleTimeout time.Duration
	// MaxIdlePerHost caps the idle connections kept per address (default 256).
	MaxIdlePerHost int
	// Dial, when set, opens connections instead of a plain TCP dial. It must
	// honour ctx.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// DialTLS, when set, opens the connections to endpoints that must present
	// a mesh identity: TCP then a mutual TLS handshake verifying identity. It
	// must honour ctx. Such connections are pooled apart, per identity and
	// address. Without it, an identity is ignored and the dial is plain.
	DialTLS func(ctx context.Context, addr, identity string) (net.Conn, error)

	hosts  sync.Map // addr -> *hostPool
	closed atomic.Bool

	timerMu sync.Mutex
	timer   *time.Timer
	armed   atomic.Bool

	// now is the clock; tests replace it.
	now func() time.Time
}

// hostPool is the idle connections of one address, oldest first.
type hostPool struct {
	mu       sync.Mutex
	idle     []*upConn
	lastUsed time.Time
	dead     bool // removed from the pool's map; look the address up again
}

// upConn is one upstream connection with its buffers.
type upConn struct {
	net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	addr string
	key  string // pool key: addr, or identity@addr over TLS
	pool *Pool

	idleSince time.Time
	// reused says the connection served a request before this one.
	reused bool
	// deadline is the I/O deadline currently set on the connection.
	deadline time.Time
}

// Close closes every idle connection. Connections in use are closed when they
// are released.
func (p *Pool) Close() {
	if p.closed.Swap(true) {
		return
	}
	p.timerMu.Lock()
	if p.timer != nil {
		p.timer.Stop()
	}
	p.timerMu.Unlock()
	p.hosts.Range(func(k, v any) bool {
		hp := v.(*hostPool)
		hp.mu.Lock()
		idle := hp.idle
		hp.idle = nil
		hp.dead = true
		hp.mu.Unlock()
		for _, c := range idle {
			c.Conn.Close()
		}
		p.hosts.Delete(k)
		return true
	})
}

func (p *Pool) clock() time.Time {
	if p.now != nil {
		return p.now()
	}
	return time.Now()
}

func (p *Pool) idleTimeout() time.Duration {
	if p.IdleTimeout > 0 {
		return p.IdleTimeout
	}
	return DefaultPoolIdle
}

func (p *Pool) host(key string) *hostPool {
	if v, ok := p.hosts.Load(key); ok {
		return v.(*hostPool)
	}
	v, _ := p.hosts.LoadOrStore(key, &hostPool{})
	return v.(*hostPool)
}

// get returns an idle connection to addr, or dials a new one.
func (p *Pool) get(ctx context.Context, addr string) (*upConn, error) {
	return p.getFor(ctx, addr, "")
}

// getFor returns an idle connection to addr for identity ("" for plain
// text), or dials a new one.
func (p *Pool) getFor(ctx context.Context, addr, identity string) (*upConn, error) {
	if c := p.getIdle(p.key(addr, identity)); c != nil {
		return c, nil
	}
	return p.dialFor(ctx, addr, identity)
}

// key is the pool key of connections to addr that verified identity.
func (p *Pool) key(addr, identity string) string {
	if identity == "" || p.DialTLS == nil {
		return addr
	}
	return identity + "@" + addr
}

// getIdle pops the most recently used live idle connection under key (see
// Pool.key).
func (p *Pool) getIdle(key string) *upConn {
	if p.closed.Load() {
		return nil
	}
	now := p.clock()
	ttl := p.idleTimeout()
	for {
		hp := p.host(key)
		hp.mu.Lock()
		if hp.dead {
			hp.mu.Unlock()
			if p.closed.Load() {
				return nil
			}
			continue
		}
		n := len(hp.idle)
		if n == 0 {
			hp.mu.Unlock()
			return nil
		}
		c := hp.idle[n-1]
		hp.idle[n-1] = nil
		hp.idle = hp.idle[:n-1]
		hp.mu.Unlock()
		idle := now.Sub(c.idleSince)
		if idle >= ttl || (idle >= probeAfter && !alive(c.Conn)) {
			c.Conn.Close()
			continue
		}
		c.reused = true
		return c
	}
}

// dialFor opens a new connection to addr within ConnectTimeout: over mutual
// TLS verifying identity when identity is set and DialTLS is configured.
func (p *Pool) dialFor(ctx context.Context, addr, identity string) (*upConn, error) {
	if p.closed.Load() {
		return nil, fmt.Errorf("connect to %s: %w", addr, errPoolClosed)
	}
	timeout := p.ConnectTimeout
	if timeout <= 0 {
		timeout = DefaultConnectTimeout
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var (
		nc  net.Conn
		err error
	)
	tlsDial := identity != "" && p.DialTLS != nil
	switch {
	case tlsDial:
		nc, err = p.DialTLS(dctx, addr, identity)
	case p.Dial != nil:
		nc, err = p.Dial(dctx, addr)
	default:
		var d net.Dialer
		nc, err = d.DialContext(dctx, "tcp", addr)
	}
	if err != nil {
		if ctx.Err() == nil && dctx.Err() == context.DeadlineExceeded {
			err = &net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("timed out after %s", timeout)}
		}
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	return &upConn{
		Conn: nc,
		br:   bufio.NewReaderSize(nc, upBufSize),
		bw:   bufio.NewWriterSize(nc, upBufSize),
		addr: addr,
		key:  p.key(addr, identity),
		pool: p,
	}, nil
}

var errPoolClosed = errors.New("connection pool closed")

// put returns a connection that finished a response cleanly and may be reused.
func (p *Pool) put(c *upConn) {
	if p.closed.Load() || c.br.Buffered() > 0 {
		c.Conn.Close()
		return
	}
	if !c.deadline.IsZero() {
		if c.Conn.SetDeadline(time.Time{}) != nil {
			c.Conn.Close()
			return
		}
		c.deadline = time.Time{}
	}
	max := p.MaxIdlePerHost
	if max <= 0 {
		max = DefaultMaxIdlePerHost
	}
	now := p.clock()
	c.idleSince = now
	for {
		hp := p.host(c.key)
		hp.mu.Lock()
		if hp.dead {
			hp.mu.Unlock()
			if p.closed.Load() {
				c.Conn.Close()
				return
			}
			continue
		}
		if len(hp.idle) >= max {
			hp.mu.Unlock()
			c.Conn.Close()
			return
		}
		hp.idle = append(hp.idle, c)
		hp.lastUsed = now
		hp.mu.Unlock()
		break
	}
	if !p.armed.Load() {
		p.arm(p.idleTimeout())
	}
	if p.closed.Load() { // Close ran concurrently and may have missed c
		p.Close()
		c.Conn.Close()
	}
}

// arm schedules a sweep after d unless one is pending.
func (p *Pool) arm(d time.Duration) {
	p.timerMu.Lock()
	defer p.timerMu.Unlock()
	if p.closed.Load() || p.armed.Load() {
		return
	}
	p.armed.Store(true)
	if p.timer == nil {
		p.timer = time.AfterFunc(d, p.sweepTimer)
	} else {
		p.timer.Reset(d)
	}
}

func (p *Pool) sweepTimer() {
	p.armed.Store(false)
	if next := p.sweep(); next > 0 {
		p.arm(next)
	}
}

// sweep closes connections idle for IdleTimeout or more and forgets addresses
// unused that long. It returns when the next connection expires, or 0 when
// nothing is idle.
func (p *Pool) sweep() time.Duration {
	now := p.clock()
	ttl := p.idleTimeout()
	var next time.Duration
	var expired []*upConn
	p.hosts.Range(func(k, v any) bool {
		hp := v.(*hostPool)
		hp.mu.Lock()
		i := 0
		for i < len(hp.idle) && now.Sub(hp.idle[i].idleSince) >= ttl {
			i++
		}
		if i > 0 {
			expired = append(expired, hp.idle[:i]...)
			n := copy(hp.idle, hp.idle[i:])
			clear(hp.idle[n:])
			hp.idle = hp.idle[:n]
		}
		if len(hp.idle) > 0 {
			if d := ttl - now.Sub(hp.idle[0].idleSince); next == 0 || d < next {
				next = d
			}
		} else if now.Sub(hp.lastUsed) >= ttl {
			hp.dead = true
			p.hosts.Delete(k)
		}
		hp.mu.Unlock()
		return true
	})
	for _, c := range expired {
		c.Conn.Close()
	}
	if next > 0 && next < time.Millisecond {
		next = time.Millisecond
	}
	return next
}

// idleCount returns the number of idle connections to addr (for tests and stats).
func (p *Pool) idleCount(addr string) int {
	v, ok := p.hosts.Load(addr)
	if !ok {
		return 0
	}
	hp := v.(*hostPool)
	hp.mu.Lock()
	defer hp.mu.Unlock()
	return len(hp.idle)
}

// release gives c back to the pool when reusable, else closes it.
func (c *upConn) release(reusable bool) {
	if reusable {
		c.pool.put(c)
		return
	}
	c.Conn.Close()
}

// setDeadline applies ctx's deadline to the connection's I/O (none when ctx has
// none), skipping the call when nothing changes.
func (c *upConn) setDeadline(ctx context.Context) {
	d, _ := ctx.Deadline()
	if d.Equal(c.deadline) {
		return
	}
	c.deadline = d
	c.Conn.SetDeadline(d)
}

// alive reports whether an idle connection is still open: a non-blocking peek
// that finds neither EOF nor unexpected bytes. Connections that cannot be peeked
// at are assumed alive.
func alive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var buf [1]byte
	live := true
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK:
			live = true
		case err != nil, n == 0: // error, or EOF
			live = false
		default: // bytes nobody asked for: the upstream is confused or closing
			live = false
		}
		return true
	})
	return err == nil && live
}
