// Command pause is the process of a pod's sandbox ("pause") container: it
// holds the pod's namespaces open by doing nothing until SIGTERM or SIGINT,
// on which it exits 0. As PID 1 of a pod that shares its process namespace it
// reaps orphaned children; it also makes itself a child subreaper, so it does
// so even when it is not PID 1.
//
// It is built statically into the image registry.k8s.io/pause:3.10 by
// hack/images, for clusters that cannot pull the upstream one.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if len(os.Args) > 1 {
		if os.Args[1] == "-v" || os.Args[1] == "--version" {
			fmt.Println("pause", version)
			return
		}
		fmt.Fprintf(os.Stderr, "pause: unexpected arguments %q (only -v is accepted)\n", os.Args[1:])
		os.Exit(2)
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	if os.Getpid() != 1 {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			fmt.Fprintf(os.Stderr, "pause: becoming a child subreaper: %v\n", err)
		}
	}
	reap() // children inherited before the handler was installed
	for sig := range sigs {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		fmt.Fprintf(os.Stderr, "pause: shutting down on %s\n", sig)
		os.Exit(0)
	}
}

// reap collects every child that has exited, without blocking.
func reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
