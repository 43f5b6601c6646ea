package injector

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// secretVolume writes files as the kubelet writes a mounted Secret: into a
// new timestamped directory, then swaps the ..data symbolic link to it; the
// files' names are links through ..data. Each call is one atomic update.
type secretVolume struct {
	dir string
	n   int
}

func (v *secretVolume) write(t *testing.T, files map[string][]byte) {
	t.Helper()
	v.n++
	gen := "..gen" + strings.Repeat("x", v.n)
	if err := os.Mkdir(filepath.Join(v.dir, gen), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(v.dir, gen, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(v.dir, name)
		if _, err := os.Lstat(link); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				t.Fatal(err)
			}
		}
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(gen, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

// handshakeCert connects to addr and returns the certificate it presents.
func handshakeCert(t *testing.T, addr string) []byte {
	t.Helper()
	d := &net.Dialer{Timeout: 10 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the test compares the certificate itself
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Raw
}

func certDER(t *testing.T, certPEM, keyPEM []byte) []byte {
	t.Helper()
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c.Certificate[0]
}

// TestCertificateReload: a new TLS handshake sees the certificate the
// files hold now, after a kubelet-style atomic update and after a plain
// rewrite; a broken pair leaves the previous certificate in use.
func TestCertificateReload(t *testing.T) {
	vol := &secretVolume{dir: t.TempDir()}
	cert1, key1, _ := selfSigned(t)
	vol.write(t, map[string][]byte{"tls.crt": cert1, "tls.key": key1})
	certFile, keyFile := filepath.Join(vol.dir, "tls.crt"), filepath.Join(vol.dir, "tls.key")

	certs, err := LoadCertificateFiles(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	watched := make(chan struct{})
	go func() { done <- (&Handler{}).ServeTLS(ctx, ln, certs.GetCertificate) }()
	go func() { certs.Watch(ctx, 20*time.Millisecond); close(watched) }()
	t.Cleanup(func() {
		cancel()
		<-watched
		if err := <-done; err != nil {
			t.Errorf("ServeTLS: %v", err)
		}
	})
	addr := ln.Addr().String()

	if got := handshakeCert(t, addr); !bytes.Equal(got, certDER(t, cert1, key1)) {
		t.Fatal("the server does not present the certificate of the files")
	}
	waitFor := func(what string, want []byte) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !bytes.Equal(handshakeCert(t, addr), want) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: a new handshake still sees the previous certificate", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// The kubelet's atomic update of a mounted Secret.
	cert2, key2, _ := selfSigned(t)
	vol.write(t, map[string][]byte{"tls.crt": cert2, "tls.key": key2})
	waitFor("after the symbolic link swap", certDER(t, cert2, key2))

	// A key that does not match: the previous certificate stays.
	cert3, key3, _ := selfSigned(t)
	if err := os.WriteFile(filepath.Join(vol.dir, "..data", "tls.crt"), cert3, 0o600); err != nil {
		t.Fatal(err)
	}
	if changed, err := certs.Reload(); changed || err == nil || !strings.Contains(err.Error(), certFile) {
		t.Errorf("Reload of a mismatched pair: changed %v, err %v; want an error naming %s", changed, err, certFile)
	}
	if got := handshakeCert(t, addr); !bytes.Equal(got, certDER(t, cert2, key2)) {
		t.Error("a mismatched pair replaced the certificate")
	}
	// Then the key too, written in place.
	if err := os.WriteFile(filepath.Join(vol.dir, "..data", "tls.key"), key3, 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor("after rewriting the files in place", certDER(t, cert3, key3))
}

func TestLoadCertificateFilesErrors(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM, _ := selfSigned(t)
	otherCert, _, _ := selfSigned(t)
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good, key := write("tls.crt", certPEM), write("tls.key", keyPEM)
	other := write("other.crt", otherCert)
	garbage := write("garbage", []byte("not PEM"))
	missing := filepath.Join(dir, "missing")
	tests := []struct {
		name, cert, key string
		want            []string
	}{
		{"missing certificate", missing, key, []string{"certificate", missing, "no such file"}},
		{"missing key", good, missing, []string{"key", missing, "no such file"}},
		{"not PEM", garbage, key, []string{garbage, key}},
		{"mismatched pair", other, key, []string{other, key, "private key does not match"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadCertificateFiles(tc.cert, tc.key, nil)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
