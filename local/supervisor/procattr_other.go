//go:build unix && !linux

package supervisor

import (
	"syscall"
	"time"
)

// procAttr puts a child in its own process group, so that stopping it stops
// everything it started.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// waitGroupGone waits, up to limit, until no process of the group pgid is
// left (killed members are reaped by init).
func waitGroupGone(pgid int, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for syscall.Kill(-pgid, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}
