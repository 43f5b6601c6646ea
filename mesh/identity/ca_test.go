package identity

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// Certify logs every issuance; a test's output is what it reports.
	slog.SetDefault(slog.New(slog.DiscardHandler))
	goleak.VerifyTestMain(m)
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// t0 is whole seconds, as certificate times are.
var t0 = time.Date(2031, 3, 14, 15, 9, 26, 0, time.UTC)

const webID = "web.shop.serviceaccount.identity.sluice.cluster.local"

func newTestCA(t *testing.T, clk *fakeClock) (*CA, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := LoadOrCreate(dir, "", clk.Now)
	if err != nil {
		t.Fatalf("LoadOrCreate: %v", err)
	}
	return ca, dir
}

func csrFor(t *testing.T, curve elliptic.Curve, tmpl *x509.CertificateRequest) *x509.CertificateRequest {
	t.Helper()
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := parseCertificates(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return certs[0]
}

func TestName(t *testing.T) {
	tests := []struct {
		sa, ns, controlNS, td string
		want                  string
	}{
		{"web", "shop", "", "", "web.shop.serviceaccount.identity.sluice.cluster.local"},
		{"default", "default", "mesh", "example.org", "default.default.serviceaccount.identity.mesh.example.org"},
	}
	for _, tt := range tests {
		if got := Name(tt.sa, tt.ns, tt.controlNS, tt.td); got != tt.want {
			t.Errorf("Name(%q, %q, %q, %q) = %q, want %q", tt.sa, tt.ns, tt.controlNS, tt.td, got, tt.want)
		}
	}
}

func TestLoadOrCreateGeneratesThenLoads(t *testing.T) {
	clk := newClock(t0)
	ca, dir := newTestCA(t, clk)

	for name, perm := range map[string]os.FileMode{AnchorFile: 0o644, AnchorKeyFile: 0o600, IssuerFile: 0o644, IssuerKeyFile: 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("%s was not written: %v", name, err)
		}
		if fi.Mode().Perm() != perm {
			t.Errorf("%s has mode %v, want %v", name, fi.Mode().Perm(), perm)
		}
	}
	anchor := readCert(t, filepath.Join(dir, AnchorFile))
	iss := readCert(t, filepath.Join(dir, IssuerFile))
	if !anchor.IsCA || anchor.CheckSignatureFrom(anchor) != nil {
		t.Error("trust anchor is not a self-signed CA")
	}
	if want := t0.Add(AnchorLifetime); !anchor.NotAfter.Equal(want) {
		t.Errorf("anchor expires %v, want %v", anchor.NotAfter, want)
	}
	if err := iss.CheckSignatureFrom(anchor); err != nil || !iss.IsCA {
		t.Errorf("issuer is not a CA signed by the anchor: %v", err)
	}
	if want := t0.Add(IssuerLifetime); !iss.NotAfter.Equal(want) {
		t.Errorf("issuer expires %v, want %v", iss.NotAfter, want)
	}
	for _, c := range []*x509.Certificate{anchor, iss} {
		if k, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
			t.Errorf("%s key is not ECDSA P-256", c.Subject.CommonName)
		}
	}
	fileAnchor, _ := os.ReadFile(filepath.Join(dir, AnchorFile))
	if !bytes.Equal(ca.TrustAnchorPEM(), fileAnchor) {
		t.Error("TrustAnchorPEM differs from ca.crt")
	}
	if !ca.Issuer().Equal(iss) {
		t.Error("Issuer() is not the issuer in issuer.crt")
	}

	// A second start, later, loads the same CA from disk and writes nothing.
	before := snapshot(t, dir)
	clk.Set(t0.Add(30 * 24 * time.Hour))
	again, err := LoadOrCreate(dir, "", clk.Now)
	if err != nil {
		t.Fatalf("second LoadOrCreate: %v", err)
	}
	if !bytes.Equal(again.TrustAnchorPEM(), ca.TrustAnchorPEM()) {
		t.Error("second LoadOrCreate has another trust anchor")
	}
	if !again.Issuer().Equal(ca.Issuer()) {
		t.Error("second LoadOrCreate has another issuer")
	}
	if after := snapshot(t, dir); !equalMaps(before, after) {
		t.Error("second LoadOrCreate changed the CA directory")
	}

	// Without issuer files, a new issuer is signed by the same anchor.
	os.Remove(filepath.Join(dir, IssuerFile))
	os.Remove(filepath.Join(dir, IssuerKeyFile))
	third, err := LoadOrCreate(dir, "", clk.Now)
	if err != nil {
		t.Fatalf("LoadOrCreate without issuer: %v", err)
	}
	if !bytes.Equal(third.TrustAnchorPEM(), ca.TrustAnchorPEM()) || third.Issuer().Equal(ca.Issuer()) {
		t.Error("want the same anchor and a new issuer")
	}
	if err := third.Issuer().CheckSignatureFrom(anchor); err != nil {
		t.Errorf("new issuer is not signed by the anchor: %v", err)
	}
}

func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = string(b)
	}
	return m
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	// Atomically, so that a watcher never reads half a file.
	if err := writeFileAtomic(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestLoadOrCreateRejects(t *testing.T) {
	tests := []struct {
		name    string
		break_  func(t *testing.T, dir, otherDir string, clk *fakeClock)
		wantErr []string
	}{
		{"issuer key missing", func(t *testing.T, dir, _ string, _ *fakeClock) {
			os.Remove(filepath.Join(dir, IssuerKeyFile))
		}, []string{"issuer.crt exists but issuer.key does not"}},
		{"issuer certificate missing", func(t *testing.T, dir, _ string, _ *fakeClock) {
			os.Remove(filepath.Join(dir, IssuerFile))
		}, []string{"issuer.key exists but issuer.crt does not"}},
		{"anchor missing", func(t *testing.T, dir, _ string, _ *fakeClock) {
			os.Remove(filepath.Join(dir, AnchorFile))
		}, []string{"the trust anchor ca.crt does not"}},
		{"anchor key missing with no issuer", func(t *testing.T, dir, _ string, _ *fakeClock) {
			os.Remove(filepath.Join(dir, AnchorKeyFile))
			os.Remove(filepath.Join(dir, IssuerFile))
			os.Remove(filepath.Join(dir, IssuerKeyFile))
		}, []string{"no ca.key to sign a new issuer"}},
		{"issuer of another CA", func(t *testing.T, dir, other string, _ *fakeClock) {
			copyFile(t, filepath.Join(other, IssuerFile), filepath.Join(dir, IssuerFile))
			copyFile(t, filepath.Join(other, IssuerKeyFile), filepath.Join(dir, IssuerKeyFile))
		}, []string{"does not verify against the trust anchors in ca.crt"}},
		{"issuer key of another CA", func(t *testing.T, dir, other string, _ *fakeClock) {
			copyFile(t, filepath.Join(other, IssuerKeyFile), filepath.Join(dir, IssuerKeyFile))
		}, []string{"issuer.key does not hold the key of the certificate in issuer.crt"}},
		{"issuer is not a CA", func(t *testing.T, dir, _ string, clk *fakeClock) {
			ca, err := LoadOrCreate(dir, "", clk.Now)
			if err != nil {
				t.Fatal(err)
			}
			key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{webID}}, key)
			csr, _ := x509.ParseCertificateRequest(der)
			leaf, _, _, err := ca.Sign(csr, webID, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, IssuerFile), pemCert(leaf), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := writeKey(filepath.Join(dir, IssuerKeyFile), key); err != nil {
				t.Fatal(err)
			}
		}, []string{`issuer.crt: "` + webID + `" is not a CA certificate`}},
		{"issuer expired", func(t *testing.T, _, _ string, clk *fakeClock) {
			clk.Set(t0.Add(IssuerLifetime + time.Second))
		}, []string{"issuer.crt", "expired"}},
		{"garbage anchor", func(t *testing.T, dir, _ string, _ *fakeClock) {
			os.WriteFile(filepath.Join(dir, AnchorFile), []byte("not PEM"), 0o644)
		}, []string{"ca.crt: no PEM certificate found"}},
		{"issuer key of the wrong type", func(t *testing.T, dir, _ string, _ *fakeClock) {
			os.WriteFile(filepath.Join(dir, IssuerKeyFile), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: []byte{1}}), 0o600)
		}, []string{`issuer.key: PEM block is a "RSA PRIVATE KEY"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock(t0)
			_, dir := newTestCA(t, clk)
			_, other := newTestCA(t, clk)
			tt.break_(t, dir, other, clk)
			_, err := LoadOrCreate(dir, "", clk.Now)
			if err == nil {
				t.Fatalf("LoadOrCreate succeeded; want an error containing %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestSign(t *testing.T) {
	clk := newClock(t0)
	ca, _ := newTestCA(t, clk)
	iss := ca.Issuer()
	p256 := &x509.CertificateRequest{DNSNames: []string{webID}}
	tests := []struct {
		name         string
		at           time.Time
		curve        elliptic.Curve
		wantNotAfter time.Time
		wantErr      error
	}{
		{"24h", t0.Add(time.Hour), elliptic.P256(), t0.Add(25 * time.Hour), nil},
		{"capped by the issuer", iss.NotAfter.Add(-time.Hour), elliptic.P256(), iss.NotAfter, nil},
		{"issuer expired", iss.NotAfter, elliptic.P256(), time.Time{}, ErrIssuerNotValid},
		{"issuer not yet valid", iss.NotBefore.Add(-time.Second), elliptic.P256(), time.Time{}, ErrIssuerNotValid},
		{"P-384 key", t0, elliptic.P384(), time.Time{}, ErrInvalidCSR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk.Set(tt.at)
			leafDER, chain, notAfter, err := ca.Sign(csrFor(t, tt.curve, p256), webID, DefaultLeafLifetime)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			leaf, err := x509.ParseCertificate(leafDER)
			if err != nil {
				t.Fatal(err)
			}
			if !leaf.NotAfter.Equal(tt.wantNotAfter) || !notAfter.Equal(tt.wantNotAfter) {
				t.Errorf("leaf expires %v (reported %v), want %v", leaf.NotAfter, notAfter, tt.wantNotAfter)
			}
			if want := tt.at.Add(-ClockSkew); !leaf.NotBefore.Equal(want) {
				t.Errorf("leaf valid from %v, want %v", leaf.NotBefore, want)
			}
			if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != webID || leaf.Subject.CommonName != webID {
				t.Errorf("leaf names %v / %q", leaf.DNSNames, leaf.Subject.CommonName)
			}
			if leaf.IsCA || len(leaf.IPAddresses)+len(leaf.URIs)+len(leaf.EmailAddresses) != 0 {
				t.Error("leaf is a CA or has other SANs")
			}
			if len(chain) != 1 || !bytes.Equal(chain[0], iss.Raw) {
				t.Fatalf("chain is %d certificates, want the issuer", len(chain))
			}
			inter := x509.NewCertPool()
			inter.AddCert(iss)
			for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
				if _, err := leaf.Verify(x509.VerifyOptions{
					Roots: ca.TrustAnchors(), Intermediates: inter, CurrentTime: tt.at,
					DNSName: webID, KeyUsages: []x509.ExtKeyUsage{usage},
				}); err != nil {
					t.Errorf("leaf does not verify for %v: %v", usage, err)
				}
			}
		})
	}
}

func TestSignRejects(t *testing.T) {
	clk := newClock(t0)
	ca, _ := newTestCA(t, clk)
	good := csrFor(t, elliptic.P256(), &x509.CertificateRequest{DNSNames: []string{webID}})
	tampered := *good
	tampered.Signature = bytes.Clone(good.Signature)
	tampered.Signature[len(tampered.Signature)-1] ^= 0xff
	if _, _, _, err := ca.Sign(&tampered, webID, time.Hour); !errors.Is(err, ErrInvalidCSR) {
		t.Errorf("tampered CSR: got %v, want ErrInvalidCSR", err)
	}
	if _, _, _, err := ca.Sign(nil, webID, time.Hour); !errors.Is(err, ErrInvalidCSR) {
		t.Errorf("nil CSR: got %v, want ErrInvalidCSR", err)
	}
	if _, _, _, err := ca.Sign(good, "", time.Hour); err == nil {
		t.Error("empty identity accepted")
	}
	if _, _, _, err := ca.Sign(good, webID, 0); err == nil {
		t.Error("zero lifetime accepted")
	}
}

func TestReload(t *testing.T) {
	clk := newClock(t0)
	ca, dir := newTestCA(t, clk)
	old := ca.Issuer()

	// A bad file keeps the current issuer and says what is wrong.
	if err := os.WriteFile(filepath.Join(dir, IssuerFile), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := ca.Reload()
	if err == nil || !strings.Contains(err.Error(), "issuer.crt: no PEM certificate found") {
		t.Fatalf("Reload of a bad file: got %v", err)
	}
	if !ca.Issuer().Equal(old) {
		t.Fatal("a failed Reload replaced the issuer")
	}
	if _, _, _, err := ca.Sign(csrFor(t, elliptic.P256(), &x509.CertificateRequest{DNSNames: []string{webID}}), webID, time.Hour); err != nil {
		t.Fatalf("Sign after a failed Reload: %v", err)
	}

	// New valid files are picked up, and leaves chain to the new issuer.
	clk.Set(t0.Add(time.Hour))
	if err := ca.generateIssuer("cluster.local"); err != nil {
		t.Fatal(err)
	}
	if err := ca.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if ca.Issuer().Equal(old) {
		t.Fatal("Reload kept the old issuer")
	}
	leafDER, chain, _, err := ca.Sign(csrFor(t, elliptic.P256(), &x509.CertificateRequest{DNSNames: []string{webID}}), webID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(leafDER)
	if err := leaf.CheckSignatureFrom(ca.Issuer()); err != nil || !bytes.Equal(chain[0], ca.Issuer().Raw) {
		t.Errorf("leaf is not from the reloaded issuer: %v", err)
	}
}

func TestWatchIssuer(t *testing.T) {
	clk := newClock(t0)
	ca, dir := newTestCA(t, clk)
	old := ca.Issuer()
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan error, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ca.WatchIssuer(ctx, 5*time.Millisecond, func(err error) { events <- err })
	}()
	defer func() {
		cancel()
		<-done
	}()
	next := func() error {
		t.Helper()
		select {
		case err := <-events:
			return err
		case <-time.After(30 * time.Second):
			t.Fatal("WatchIssuer reported nothing")
			return nil
		}
	}

	// A key that does not match the certificate is reported and not used.
	other := filepath.Join(t.TempDir(), "other")
	if _, err := LoadOrCreate(other, "", clk.Now); err != nil {
		t.Fatal(err)
	}
	copyFile(t, filepath.Join(other, IssuerKeyFile), filepath.Join(dir, IssuerKeyFile))
	if err := next(); err == nil || !strings.Contains(err.Error(), "does not hold the key") {
		t.Fatalf("got %v, want a key mismatch", err)
	}
	if !ca.Issuer().Equal(old) {
		t.Fatal("a rejected issuer was used")
	}

	// A new valid issuer is picked up.
	if err := ca.generateIssuer("cluster.local"); err != nil {
		t.Fatal(err)
	}
	want := readCert(t, filepath.Join(dir, IssuerFile))
	for {
		err := next()
		if err == nil {
			break
		}
		t.Logf("intermediate state reported: %v", err)
	}
	if !ca.Issuer().Equal(want) {
		t.Fatal("WatchIssuer did not switch to the new issuer")
	}

	// A file that disappears is reported; the issuer stays; when it comes
	// back it is loaded again.
	keyPath := filepath.Join(dir, IssuerKeyFile)
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(keyPath); err != nil {
		t.Fatal(err)
	}
	if err := next(); err == nil || !strings.Contains(err.Error(), IssuerKeyFile) {
		t.Fatalf("got %v, want an error naming %s", err, IssuerKeyFile)
	}
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := next(); err != nil {
		t.Fatalf("restored key: %v", err)
	}
	if !ca.Issuer().Equal(want) {
		t.Fatal("the issuer changed across a missing file")
	}
}

func TestStaticTokens(t *testing.T) {
	var s StaticTokens
	ctx := context.Background()
	if err := s.Authenticate(ctx, webID, []byte("x")); !errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), "no bootstrap token is registered") {
		t.Errorf("unknown identity: %v", err)
	}
	tok, err := s.Issue(webID)
	if err != nil || len(tok) != 64 {
		t.Fatalf("Issue: %q, %v", tok, err)
	}
	if err := s.Authenticate(ctx, webID, tok); err != nil {
		t.Errorf("issued token rejected: %v", err)
	}
	if err := s.Authenticate(ctx, webID, append(bytes.Clone(tok[:63]), 'x')); !errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), "not the bootstrap token") {
		t.Errorf("wrong token: %v", err)
	}
	if err := s.Authenticate(ctx, webID, nil); !errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty token: %v", err)
	}
	other := "api.shop.serviceaccount.identity.sluice.cluster.local"
	s.Add(other, []byte("api-token"))
	if err := s.Authenticate(ctx, webID, []byte("api-token")); err == nil {
		t.Error("another identity's token accepted")
	}
	s.Remove(webID)
	if err := s.Authenticate(ctx, webID, tok); err == nil {
		t.Error("removed identity's token accepted")
	}
}

func TestStaticTokensConcurrent(t *testing.T) {
	var s StaticTokens
	s.Add("stable", []byte("stable-token"))
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := string(rune('a' + g))
			for range 200 {
				tok, err := s.Issue(id)
				if err != nil {
					errs <- err
					return
				}
				_ = s.Authenticate(context.Background(), id, tok)
				s.Remove(id)
				if err := s.Authenticate(context.Background(), "stable", []byte("stable-token")); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// csrTemplate is a CSR naming cn and dns.
func csrTemplate(cn string, dns ...string) *x509.CertificateRequest {
	return &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}, DNSNames: dns}
}
