package identity

import (
	"bytes"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// caFiles is the PEM content of a CA directory.
type caFiles struct{ anchor, issuer, issuerKey []byte }

func readCAFiles(t *testing.T, dir string) caFiles {
	t.Helper()
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return caFiles{read(AnchorFile), read(IssuerFile), read(IssuerKeyFile)}
}

func TestNewCAFromPEM(t *testing.T) {
	clk := newClock(t0)
	_, dir := newTestCA(t, clk)
	f := readCAFiles(t, dir)

	ca, err := NewCAFromPEM(f.anchor, f.issuer, f.issuerKey, clk.Now)
	if err != nil {
		t.Fatalf("NewCAFromPEM: %v", err)
	}
	if !bytes.Equal(ca.TrustAnchorPEM(), f.anchor) {
		t.Error("TrustAnchorPEM is not the anchors given")
	}
	if err := verifyLeaf(t, ca, ca.TrustAnchors(), t0); err != nil {
		t.Errorf("leaf does not verify against the anchors: %v", err)
	}
}

func TestNewCAFromPEMRejects(t *testing.T) {
	clk := newClock(t0)
	dirCA, dir := newTestCA(t, clk)
	f := readCAFiles(t, dir)
	_, otherDir := newTestCA(t, clk)
	other := readCAFiles(t, otherDir)
	leafDER, _, _, err := dirCA.Sign(csrFor(t, elliptic.P256(), &x509.CertificateRequest{DNSNames: []string{webID}}), webID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leafPEM := pemCert(leafDER)

	tests := []struct {
		name                string
		anchor, issuer, key []byte
		now                 time.Time
		want                string
	}{
		{"no anchors", nil, f.issuer, f.issuerKey, t0, "no trust anchors"},
		{"garbage anchors", []byte("garbage"), f.issuer, f.issuerKey, t0, "trust anchors: no PEM certificate found"},
		{"anchor is a leaf", leafPEM, f.issuer, f.issuerKey, t0, "is not a CA certificate"},
		{"issuer from another CA", f.anchor, other.issuer, other.issuerKey, t0, "does not verify against the trust anchors"},
		{"key of another issuer", f.anchor, f.issuer, other.issuerKey, t0, "does not hold the key"},
		{"issuer expired", f.anchor, f.issuer, f.issuerKey, t0.Add(IssuerLifetime + time.Hour), "does not verify"},
		{"garbage key", f.anchor, f.issuer, []byte("garbage"), t0, "issuer.key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := tt.now
			_, err := NewCAFromPEM(tt.anchor, tt.issuer, tt.key, func() time.Time { return now })
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewCAFromPEM: got error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestSetIssuerPEM(t *testing.T) {
	clk := newClock(t0)
	dirCA, dir := newTestCA(t, clk)
	f := readCAFiles(t, dir)
	ca, err := NewCAFromPEM(f.anchor, f.issuer, f.issuerKey, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	old := ca.Issuer()

	// The same issuer again changes nothing.
	if err := ca.SetIssuerPEM(f.issuer, f.issuerKey); err != nil || ca.Issuer() != old {
		t.Fatalf("SetIssuerPEM of the current issuer: err %v, replaced %v", err, ca.Issuer() != old)
	}
	// A bad issuer is rejected and the current one stays.
	_, otherDir := newTestCA(t, clk)
	other := readCAFiles(t, otherDir)
	if err := ca.SetIssuerPEM(other.issuer, other.issuerKey); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("SetIssuerPEM of a foreign issuer: got %v", err)
	}
	if !ca.Issuer().Equal(old) {
		t.Fatal("a rejected issuer replaced the current one")
	}
	// A new issuer from the same anchor is used from then on.
	clk.Set(t0.Add(time.Hour))
	if err := dirCA.generateIssuer("cluster.local"); err != nil {
		t.Fatal(err)
	}
	g := readCAFiles(t, dir)
	if err := ca.SetIssuerPEM(g.issuer, g.issuerKey); err != nil {
		t.Fatalf("SetIssuerPEM: %v", err)
	}
	if ca.Issuer().Equal(old) {
		t.Fatal("SetIssuerPEM kept the old issuer")
	}
	leafDER, _, _, err := ca.Sign(csrFor(t, elliptic.P256(), &x509.CertificateRequest{DNSNames: []string{webID}}), webID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(leafDER)
	if err := leaf.CheckSignatureFrom(ca.Issuer()); err != nil {
		t.Errorf("leaf is not from the new issuer: %v", err)
	}
}

// verifyLeaf signs a leaf for webID and verifies it against roots at the
// time at with the chain the CA sends.
func verifyLeaf(t *testing.T, ca *CA, roots *x509.CertPool, at time.Time) error {
	t.Helper()
	leafDER, chain, _, err := ca.Sign(csrFor(t, elliptic.P256(), &x509.CertificateRequest{DNSNames: []string{webID}}), webID, time.Hour)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		inter.AddCert(c)
	}
	_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err
}

// TestTrustAnchorRotation follows a trust-anchor rotation: the bundle grows
// to old+new, the issuer moves to the new anchor, the old anchor goes.
func TestTrustAnchorRotation(t *testing.T) {
	clk := newClock(t0)
	_, oldDir := newTestCA(t, clk)
	oldF := readCAFiles(t, oldDir)
	newCA, newDir := newTestCA(t, clk)
	newF := readCAFiles(t, newDir)
	_, otherDir := newTestCA(t, clk)
	otherF := readCAFiles(t, otherDir)
	clk.Set(t0.Add(time.Hour))

	ca, err := NewCAFromPEM(oldF.anchor, oldF.issuer, oldF.issuerKey, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	both := append(append([]byte{}, oldF.anchor...), newF.anchor...)

	// Step 1: old+new anchors, the old issuer stays and keeps issuing.
	oldIssuer := ca.Issuer()
	if err := ca.SetTrustAnchorsPEM(both); err != nil {
		t.Fatalf("SetTrustAnchorsPEM(old+new): %v", err)
	}
	if !bytes.Equal(ca.TrustAnchorPEM(), both) || !ca.Issuer().Equal(oldIssuer) {
		t.Fatal("after adding an anchor: want the two-anchor bundle and the same issuer")
	}
	if err := verifyLeaf(t, ca, ca.TrustAnchors(), t0.Add(2*time.Hour)); err != nil {
		t.Errorf("a leaf issued with old+new anchors does not verify against them: %v", err)
	}

	// Step 2: the issuer of the new anchor.
	if err := ca.SetPEM(both, newF.issuer, newF.issuerKey); err != nil {
		t.Fatalf("SetPEM(old+new, new issuer): %v", err)
	}
	if err := verifyLeaf(t, ca, newCA.TrustAnchors(), t0.Add(2*time.Hour)); err != nil {
		t.Errorf("a leaf of the new issuer does not verify against the new anchor: %v", err)
	}

	// Step 3: the old anchor goes.
	if err := ca.SetTrustAnchorsPEM(newF.anchor); err != nil {
		t.Fatalf("SetTrustAnchorsPEM(new): %v", err)
	}
	if !bytes.Equal(ca.TrustAnchorPEM(), newF.anchor) {
		t.Error("TrustAnchorPEM is not the new anchor alone")
	}

	// Rejected: nothing changes.
	tests := []struct {
		name    string
		set     func() error
		wantErr error
		want    string
	}{
		{"anchors the issuer does not chain to", func() error { return ca.SetTrustAnchorsPEM(otherF.anchor) },
			ErrIssuerNotTrusted, "does not verify against the trust anchors"},
		{"garbage anchors", func() error { return ca.SetTrustAnchorsPEM([]byte("garbage")) },
			ErrInvalidTrustAnchors, "trust anchors: no PEM certificate found"},
		{"no anchors", func() error { return ca.SetPEM(nil, newF.issuer, newF.issuerKey) },
			ErrInvalidTrustAnchors, "no trust anchors given"},
		{"issuer of another anchor", func() error { return ca.SetPEM(newF.anchor, otherF.issuer, otherF.issuerKey) },
			ErrIssuerNotTrusted, "does not verify"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := ca.Issuer()
			err := tt.set()
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v; want %v saying %q", err, tt.wantErr, tt.want)
			}
			if ca.Issuer() != before || !bytes.Equal(ca.TrustAnchorPEM(), newF.anchor) {
				t.Error("a rejected change replaced the issuer or the anchors")
			}
		})
	}
}
