package identity

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"
)

func TestSelfCertificate(t *testing.T) {
	clk := newClock(t0)
	ca, _ := newTestCA(t, clk)
	name := ControlPlaneName(IdentityServiceAccount, "", "")
	if name != "sluice-identity.sluice.serviceaccount.identity.sluice.cluster.local" {
		t.Fatalf("ControlPlaneName = %q", name)
	}
	s, err := NewSelfCertificate(ca, name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	verify := func(t *testing.T, at time.Time) *x509.Certificate {
		t.Helper()
		c, err := s.GetCertificate(nil)
		if err != nil {
			t.Fatalf("GetCertificate: %v", err)
		}
		inter := x509.NewCertPool()
		for _, der := range c.Certificate[1:] {
			ic, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			inter.AddCert(ic)
		}
		if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: ca.TrustAnchors(), Intermediates: inter, DNSName: name, CurrentTime: at,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Fatalf("the serving certificate does not verify against the anchors: %v", err)
		}
		return c.Leaf
	}
	first := verify(t, t0)
	if again := verify(t, t0); again.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Error("a fresh certificate was replaced")
	}

	// Past 70 % of its lifetime it is replaced.
	clk.Set(t0.Add(43 * time.Minute))
	renewed := verify(t, t0.Add(43*time.Minute))
	if renewed.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Error("a certificate past 70 % of its lifetime was not renewed")
	}

	// A new issuer means a new certificate at once.
	if err := ca.Reload(); err != nil { // same files: same issuer content, new pointer
		t.Fatal(err)
	}
	reissued := verify(t, t0.Add(43*time.Minute))
	if reissued.SerialNumber.Cmp(renewed.SerialNumber) == 0 {
		t.Error("the certificate was not re-issued after the issuer was reloaded")
	}

	// Issuer expired: the current certificate stays until it expires, then
	// Ready says why.
	expiry := ca.Issuer().NotAfter
	clk.Set(expiry.Add(time.Second))
	if err := s.Ready(); err == nil || !strings.Contains(err.Error(), "expired") || !strings.Contains(err.Error(), name) {
		t.Errorf("Ready with an expired issuer = %v, want an error naming %s and the expired issuer", err, name)
	}
}

func TestNewSelfCertificateRejects(t *testing.T) {
	ca, _ := newTestCA(t, newClock(t0))
	if _, err := NewSelfCertificate(ca, "Not A Name", 0); err == nil || !strings.Contains(err.Error(), "Not A Name") {
		t.Errorf("bad name: err = %v", err)
	}
	if _, err := NewSelfCertificate(nil, "x.y", 0); err == nil {
		t.Error("nil CA: no error")
	}
}
