package origdst

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// ip6tSoOriginalDst is IP6T_SO_ORIGINAL_DST from linux/netfilter_ipv6/ip6_tables.h;
// it has the same value as SO_ORIGINAL_DST but lives at level SOL_IPV6.
const ip6tSoOriginalDst = 80

func lookup(c *net.TCPConn) (netip.AddrPort, error) {
	local, ok := localAddrPort(c)
	if !ok {
		return netip.AddrPort{}, errors.New("original destination: connection has no TCP local address")
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination of %v: %w", local, err)
	}
	var dst netip.AddrPort
	var serr error
	cerr := rc.Control(func(fd uintptr) {
		if local.Addr().Is4() {
			dst, serr = getOrigDst4(int(fd))
		} else {
			dst, serr = getOrigDst6(int(fd))
		}
	})
	if cerr != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination of %v: %w", local, cerr)
	}
	if errors.Is(serr, unix.ENOENT) {
		return netip.AddrPort{}, fmt.Errorf("original destination of %v: %w (no connection tracking entry)", local, ErrNotRedirected)
	}
	if serr != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination of %v: getsockopt SO_ORIGINAL_DST: %w", local, serr)
	}
	if dst == local {
		return netip.AddrPort{}, fmt.Errorf("original destination of %v: %w (the kernel returned the local address)", local, ErrNotRedirected)
	}
	return dst, nil
}

// getOrigDst4 reads a struct sockaddr_in. IPv6Mreq (20 bytes) is merely a
// buffer large enough for it (16 bytes), filled in by the kernel.
func getOrigDst4(fd int) (netip.AddrPort, error) {
	m, err := unix.GetsockoptIPv6Mreq(fd, unix.SOL_IP, unix.SO_ORIGINAL_DST)
	if err != nil {
		return netip.AddrPort{}, err
	}
	b := m.Multiaddr // sockaddr_in: family (2 bytes, native order), port (2, network order), addr (4)
	if fam := binary.NativeEndian.Uint16(b[0:2]); fam != unix.AF_INET {
		return netip.AddrPort{}, fmt.Errorf("unexpected address family %d", fam)
	}
	port := binary.BigEndian.Uint16(b[2:4])
	addr := netip.AddrFrom4([4]byte(b[4:8]))
	return netip.AddrPortFrom(addr, port), nil
}

// getOrigDst6 reads a struct sockaddr_in6 into the RawSockaddrInet6 that opens
// IPv6MTUInfo (32 bytes, large enough for the kernel's 28).
func getOrigDst6(fd int) (netip.AddrPort, error) {
	m, err := unix.GetsockoptIPv6MTUInfo(fd, unix.SOL_IPV6, ip6tSoOriginalDst)
	if err != nil {
		return netip.AddrPort{}, err
	}
	sa := m.Addr
	if sa.Family != unix.AF_INET6 {
		return netip.AddrPort{}, fmt.Errorf("unexpected address family %d", sa.Family)
	}
	// Port holds network-order bytes in a native-order integer.
	var pb [2]byte
	binary.NativeEndian.PutUint16(pb[:], sa.Port)
	port := binary.BigEndian.Uint16(pb[:])
	addr := netip.AddrFrom16(sa.Addr)
	if sa.Scope_id != 0 {
		addr = addr.WithZone(fmt.Sprint(sa.Scope_id))
	}
	return netip.AddrPortFrom(addr, port), nil
}
