package origdst

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// requireNetns skips the test unless it runs as root with ip and iptables
// available; with SLUICE_REQUIRE_NETNS=1 (CI) a missing prerequisite fails it.
func requireNetns(t *testing.T, tools ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "network namespace test needs " + strings.Join(missing, ", ")
	if os.Getenv("SLUICE_REQUIRE_NETNS") == "1" {
		t.Fatal(msg + " (SLUICE_REQUIRE_NETNS=1)")
	}
	t.Skip(msg)
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// newNetns creates a network namespace with only its loopback up and a route
// for testNet through it, removed when the test ends (even if it fails).
// Everything the test sends stays inside it.
func newNetns(t *testing.T) (name string, nsexec func(args ...string)) {
	t.Helper()
	name = fmt.Sprintf("sluice-origdst-%d-%d", os.Getpid(), time.Now().UnixNano()%1e9)
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", name, err, out)
		}
	})
	nsexec = func(args ...string) {
		t.Helper()
		run(t, "ip", append([]string{"netns", "exec", name}, args...)...)
	}
	nsexec("ip", "link", "set", "lo", "up")
	return name, nsexec
}

// inNetns runs f on a fresh OS thread that has entered the named network
// namespace. The thread is never unlocked, so the Go runtime discards it when f
// returns instead of reusing it elsewhere.
func inNetns(t *testing.T, name string, f func() error) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open(filepath.Join("/var/run/netns", name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", name, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// TestRedirectInNetns installs an iptables nat OUTPUT REDIRECT, as the proxy's
// init step does, inside a private network namespace, connects to the virtual
// address, and checks that Lookup recovers it, for IPv4 and IPv6.
func TestRedirectInNetns(t *testing.T) {
	for _, tc := range []struct {
		name, iptables, listen, virtual, route string
	}{
		{"ipv4", "iptables", "127.0.0.1:0", "10.123.0.1:80", "10.123.0.0/24"},
		{"ipv6", "ip6tables", "[::1]:0", "[fd00:123::1]:80", "fd00:123::/64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requireNetns(t, "ip", tc.iptables)
			name, nsexec := newNetns(t)
			virtual := netip.MustParseAddrPort(tc.virtual)
			family := "-4"
			if virtual.Addr().Is6() {
				family = "-6"
			}
			// The virtual address needs a route for connect to get as far as
			// the nat OUTPUT hook; loopback keeps the packets in the namespace.
			nsexec("ip", family, "route", "add", tc.route, "dev", "lo")

			var ln net.Listener
			if err := inNetns(t, name, func() (err error) {
				ln, err = net.Listen("tcp", tc.listen)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			port := ln.Addr().(*net.TCPAddr).Port
			nsexec(tc.iptables, "-t", "nat", "-A", "OUTPUT", "-p", "tcp",
				"-d", virtual.Addr().String(), "--dport", fmt.Sprint(virtual.Port()),
				"-j", "REDIRECT", "--to-ports", fmt.Sprint(port))

			accepted := make(chan *net.TCPConn, 2)
			acceptErr := make(chan error, 1)
			go func() {
				for range 2 {
					c, err := ln.Accept()
					if err != nil {
						acceptErr <- err
						return
					}
					accepted <- c.(*net.TCPConn)
				}
			}()

			var redirected, direct net.Conn
			if err := inNetns(t, name, func() (err error) {
				d := net.Dialer{Timeout: 10 * time.Second}
				if redirected, err = d.Dial("tcp", virtual.String()); err != nil {
					return fmt.Errorf("dial %v: %w", virtual, err)
				}
				if direct, err = d.Dial("tcp", ln.Addr().String()); err != nil {
					return fmt.Errorf("dial %v: %w", ln.Addr(), err)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			defer redirected.Close()
			defer direct.Close()

			byPeer := map[string]*net.TCPConn{}
			for range 2 {
				select {
				case c := <-accepted:
					defer c.Close()
					byPeer[c.RemoteAddr().String()] = c
				case err := <-acceptErr:
					t.Fatal(err)
				case <-time.After(10 * time.Second):
					t.Fatal("no connection accepted")
				}
			}

			got, err := Lookup(byPeer[redirected.LocalAddr().String()])
			if err != nil {
				t.Fatalf("Lookup on the redirected connection: %v", err)
			}
			if got != virtual {
				t.Errorf("Lookup = %v, want %v", got, virtual)
			}

			// With conntrack now active, a direct connection gets its own local
			// address back from the kernel: Lookup must say it was not redirected.
			if got, err := Lookup(byPeer[direct.LocalAddr().String()]); !errors.Is(err, ErrNotRedirected) {
				t.Errorf("Lookup on the direct connection = %v, %v; want ErrNotRedirected", got, err)
			} else {
				t.Logf("direct: %v", err)
			}
		})
	}
}
