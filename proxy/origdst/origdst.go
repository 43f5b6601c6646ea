// Package origdst recovers the destination a connection was addressed to before
// iptables redirected it to the proxy (the SO_ORIGINAL_DST socket option of
// Linux's netfilter connection tracking).
package origdst

import (
	"errors"
	"net"
	"net/netip"
)

// ErrNotRedirected means the connection reached the proxy directly: its original
// destination is the proxy's own listening address, so it tells nothing about
// where the client meant to go. Lookup's error wraps it.
var ErrNotRedirected = errors.New("connection was not redirected")

// Lookup returns the address a redirected connection was originally sent to
// (iptables REDIRECT or DNAT), via getsockopt SO_ORIGINAL_DST for IPv4 and
// IP6T_SO_ORIGINAL_DST for IPv6 (IPv4 traffic on a dual-stack socket uses the
// IPv4 option). It is Linux-only; elsewhere it returns an error.
//
// c must be a connection the proxy accepted. (On a connection it dialled the
// kernel answers with the remote address, which is not what Lookup is for.)
//
// For a connection that was not redirected, the kernel answers in one of two
// ways: when connection tracking is active (as it is once any nat rule exists)
// it returns the connection's own local address, and when it is not (no
// conntrack entry) the call fails with ENOENT. Both give an error wrapping
// ErrNotRedirected.
func Lookup(c *net.TCPConn) (netip.AddrPort, error) {
	if c == nil {
		return netip.AddrPort{}, errors.New("original destination: nil connection")
	}
	return lookup(c)
}

// localAddrPort returns the connection's local address, with IPv4-mapped IPv6
// addresses unmapped so they compare equal to what the IPv4 option returns.
func localAddrPort(c *net.TCPConn) (netip.AddrPort, bool) {
	la, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok || la == nil {
		return netip.AddrPort{}, false
	}
	ap := la.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}
