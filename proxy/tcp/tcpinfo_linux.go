package tcp

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// sinceLastReceive returns how long ago the socket last received data, from TCP_INFO.
func sinceLastReceive(c *net.TCPConn) (time.Duration, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var info *unix.TCPInfo
	var serr error
	if err := rc.Control(func(fd uintptr) {
		info, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, serr
	}
	return time.Duration(info.Last_data_recv) * time.Millisecond, nil
}
