//go:build !linux

package origdst

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
)

func lookup(c *net.TCPConn) (netip.AddrPort, error) {
	return netip.AddrPort{}, fmt.Errorf("original destination: SO_ORIGINAL_DST is not supported on %s", runtime.GOOS)
}
