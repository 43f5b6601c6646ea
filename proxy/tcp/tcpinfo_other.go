//go:build !linux

package tcp

import (
	"errors"
	"net"
	"time"
)

// sinceLastReceive is only used with splice, which is Linux-only.
func sinceLastReceive(*net.TCPConn) (time.Duration, error) {
	return 0, errors.New("tcp: TCP_INFO is not supported on this platform")
}
