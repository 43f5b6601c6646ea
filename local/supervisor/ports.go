package supervisor

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
)

// Ports hands out TCP ports on 127.0.0.1: ports free now (nothing listens on
// them) and not handed out already by this Ports and not released since. A
// port is only known free when it is handed out; whoever gets it must bind it
// soon. The zero value is ready to use and safe for concurrent use.
type Ports struct {
	// Bindable reports whether a port can be bound on 127.0.0.1 now; nil
	// tries to listen on it. Tests replace it.
	Bindable func(port int) bool

	mu    sync.Mutex
	inUse map[int]bool
}

// maxScan is how many ports Preferred tries above the one asked for before
// taking any free port.
const maxScan = 100

// ErrNoFreePort is returned (wrapped) when no port can be found.
var ErrNoFreePort = errors.New("no free port")

// Free returns a port chosen by the operating system, reserved until Release.
func (p *Ports) Free() (int, error) {
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("finding a free port on 127.0.0.1: %w", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if p.reserve(port) {
			return port, nil
		}
	}
	return 0, fmt.Errorf("finding a free port on 127.0.0.1: %w", ErrNoFreePort)
}

// Preferred returns want if it is free, or else the first free port above it
// (trying up to 100), or else any free port. skipped lists the ports tried
// and found taken (by another program, or handed out already), so the caller
// can say why it did not get want. want 0 means any free port.
func (p *Ports) Preferred(want int) (port int, skipped []int, err error) {
	if want <= 0 {
		port, err := p.Free()
		return port, nil, err
	}
	for c := want; c < want+maxScan && c <= 65535; c++ {
		if p.take(c) {
			return c, skipped, nil
		}
		skipped = append(skipped, c)
	}
	port, err = p.Free()
	return port, skipped, err
}

// Reserve marks a port as handed out if it is free; it reports whether it was.
func (p *Ports) Reserve(port int) bool { return p.take(port) }

// Release gives a port back.
func (p *Ports) Release(ports ...int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, port := range ports {
		delete(p.inUse, port)
	}
}

// take reserves port if it is not handed out and can be bound.
func (p *Ports) take(port int) bool {
	p.mu.Lock()
	if p.inUse[port] {
		p.mu.Unlock()
		return false
	}
	p.mu.Unlock()
	bindable := p.Bindable
	if bindable == nil {
		bindable = canBind
	}
	if !bindable(port) {
		return false
	}
	return p.reserve(port)
}

func (p *Ports) reserve(port int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inUse[port] {
		return false
	}
	if p.inUse == nil {
		p.inUse = map[int]bool{}
	}
	p.inUse[port] = true
	return true
}

// canBind reports whether 127.0.0.1:port can be listened on now.
func canBind(port int) bool {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// CheckListen reports, as a clear error, that addr cannot be listened on
// (typically because another program uses the port).
func CheckListen(what, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s %s cannot be used: %w (is another program, or another sluice up, using it?)", what, addr, err)
	}
	return ln.Close()
}
