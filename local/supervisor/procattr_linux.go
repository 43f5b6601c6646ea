package supervisor

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// procAttr puts a child in its own process group (so that stopping it stops
// everything it started) and has the kernel kill it if the supervisor dies.
func procAttr() *syscall.SysProcAttr {
	becomeSubreaper()
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

var subreaperOnce sync.Once

// becomeSubreaper makes this process the reaper of its orphaned descendants:
// the children a stopped application leaves behind are reparented here
// rather than to init, so that waitGroupGone can reap them at once instead of
// leaving them to init, which may take its time.
func becomeSubreaper() {
	subreaperOnce.Do(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) })
}

// waitGroupGone waits, up to limit, until no process of the group pgid is
// left, reaping the group's zombies that were reparented to this process.
// The group's leader must have been waited for already.
func waitGroupGone(pgid int, limit time.Duration) {
	deadline := time.Now().Add(limit)
	self := os.Getpid()
	for {
		members := groupMembers(pgid)
		if len(members) == 0 {
			return
		}
		for _, m := range members {
			if m.pid != pgid && m.ppid == self && m.state == 'Z' {
				var ws unix.WaitStatus
				_, _ = unix.Wait4(m.pid, &ws, unix.WNOHANG, nil)
			}
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type procInfo struct {
	pid, ppid int
	state     byte
}

// groupMembers lists the processes of a process group from /proc.
func groupMembers(pgid int) []procInfo {
	if syscall.Kill(-pgid, 0) == syscall.ESRCH {
		return nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return []procInfo{{pid: pgid}}
	}
	var out []procInfo
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...
		i := bytes.LastIndexByte(data, ')')
		if i < 0 {
			continue
		}
		f := bytes.Fields(data[i+1:])
		if len(f) < 3 {
			continue
		}
		ppid, _ := strconv.Atoi(string(f[1]))
		pg, _ := strconv.Atoi(string(f[2]))
		if pg == pgid {
			out = append(out, procInfo{pid: pid, ppid: ppid, state: f[0][0]})
		}
	}
	return out
}
