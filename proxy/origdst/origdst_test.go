package origdst

import (
	"errors"
	"net"
	"runtime"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// loopbackPair connects to a fresh listener on addr and returns both ends.
func loopbackPair(t *testing.T, network, addr string) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("no %s loopback: %v", network, err)
	}
	defer ln.Close()
	cc, err := net.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		cc.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close(); sc.Close() })
	return cc.(*net.TCPConn), sc.(*net.TCPConn)
}

// TestNotRedirected: a plain loopback connection has no original destination
// other than its own address. Depending on whether connection tracking is
// active in this network namespace the kernel returns the local address or
// ENOENT; Lookup must turn both into ErrNotRedirected.
func TestNotRedirected(t *testing.T) {
	for _, tc := range []struct{ network, addr string }{
		{"tcp4", "127.0.0.1:0"},
		{"tcp6", "[::1]:0"},
	} {
		t.Run(tc.network, func(t *testing.T) {
			_, server := loopbackPair(t, tc.network, tc.addr)
			dst, err := Lookup(server)
			if runtime.GOOS != "linux" {
				if err == nil {
					t.Errorf("Lookup = %v on %s, want an error", dst, runtime.GOOS)
				}
				return
			}
			if !errors.Is(err, ErrNotRedirected) {
				t.Fatalf("Lookup = %v, %v; want ErrNotRedirected", dst, err)
			}
			t.Log(err)
		})
	}
}

func TestNil(t *testing.T) {
	if _, err := Lookup(nil); err == nil {
		t.Error("Lookup(nil) succeeded")
	}
}

func TestClosed(t *testing.T) {
	_, server := loopbackPair(t, "tcp4", "127.0.0.1:0")
	server.Close()
	if _, err := Lookup(server); err == nil || errors.Is(err, ErrNotRedirected) {
		t.Errorf("Lookup on a closed connection = %v, want a plain error", err)
	}
}
