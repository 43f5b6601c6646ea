package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestBootstrapCertificates(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	year := 365 * 24 * time.Hour
	anchor, err := NewRootCA("root.identity.sluice.cluster.local", now, year)
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := NewIntermediateCA(anchor, IssuerCommonName("", ""), now, 2*year)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckIssuer(anchor.CertPEM, issuer.CertPEM, issuer.KeyPEM, now); err != nil {
		t.Fatalf("CheckIssuer of a generated issuer: %v", err)
	}
	if _, err := NewCAFromPEM(anchor.CertPEM, issuer.CertPEM, issuer.KeyPEM, func() time.Time { return now }); err != nil {
		t.Fatalf("NewCAFromPEM of a generated issuer: %v", err)
	}
	iss, _, err := issuer.parse()
	if err != nil {
		t.Fatal(err)
	}
	anc, _, _ := anchor.parse()
	if iss.Subject.CommonName != "identity.sluice.cluster.local" {
		t.Errorf("issuer named %q", iss.Subject.CommonName)
	}
	if !iss.NotAfter.Equal(anc.NotAfter) {
		t.Errorf("issuer valid until %s, beyond its anchor's %s", iss.NotAfter, anc.NotAfter)
	}

	web, err := NewRootCA("webhook.sluice.dev", now, year)
	if err != nil {
		t.Fatal(err)
	}
	serving, err := NewServingCertificate(web, []string{"sluice-injector.sluice.svc", "127.0.0.1"}, now, year)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(serving.CertPEM, serving.KeyPEM)
	if err != nil {
		t.Fatalf("the serving certificate is not a TLS key pair: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(web.CertPEM)
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{DNSName: "sluice-injector.sluice.svc", Roots: roots, CurrentTime: now}); err != nil {
		t.Errorf("the serving certificate does not verify with its CA: %v", err)
	}
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{DNSName: "127.0.0.1", Roots: roots, CurrentTime: now}); err != nil {
		t.Errorf("the serving certificate does not verify for its IP address: %v", err)
	}
	if len(pair.Leaf.DNSNames) != 1 {
		t.Errorf("DNS names %q: an IP literal among them", pair.Leaf.DNSNames)
	}
	if _, err := NewServingCertificate(web, nil, now, year); err == nil {
		t.Error("a serving certificate without a name was generated")
	}
}

func TestCheckIssuerErrors(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	year := 365 * 24 * time.Hour
	must := func(kp KeyPair, err error) KeyPair {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return kp
	}
	anchor := must(NewRootCA("anchor", now, year))
	other := must(NewRootCA("other", now, year))
	issuer := must(NewIntermediateCA(anchor, "issuer", now, year))
	stranger := must(NewIntermediateCA(other, "stranger", now, year))
	leaf := must(NewServingCertificate(anchor, []string{"leaf"}, now, year))
	expired := must(NewIntermediateCA(anchor, "old", now.Add(-2*time.Hour), time.Hour))

	for _, tc := range []struct {
		name              string
		anchors, crt, key []byte
		input             IssuerInput
		want              string
	}{
		{"anchors not PEM", []byte("nope"), issuer.CertPEM, issuer.KeyPEM, TrustAnchorsInput, "no PEM certificate"},
		{"anchor not a CA", leaf.CertPEM, issuer.CertPEM, issuer.KeyPEM, TrustAnchorsInput, "not a CA"},
		{"issuer not PEM", anchor.CertPEM, []byte(""), issuer.KeyPEM, IssuerCertificateInput, "no PEM certificate"},
		{"issuer not a CA", anchor.CertPEM, leaf.CertPEM, leaf.KeyPEM, IssuerCertificateInput, "not a CA"},
		{"issuer expired", anchor.CertPEM, expired.CertPEM, expired.KeyPEM, IssuerCertificateInput, "expired on"},
		{"issuer of another anchor", anchor.CertPEM, stranger.CertPEM, stranger.KeyPEM, IssuerCertificateInput, "does not chain"},
		{"key not PEM", anchor.CertPEM, issuer.CertPEM, []byte("x"), IssuerKeyInput, "no PEM key"},
		{"key of another certificate", anchor.CertPEM, issuer.CertPEM, stranger.KeyPEM, IssuerKeyInput, "not the key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckIssuer(tc.anchors, tc.crt, tc.key, now)
			var ie *IssuerError
			if !errors.As(err, &ie) {
				t.Fatalf("CheckIssuer: %v, want an *IssuerError", err)
			}
			if ie.Input != tc.input || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("CheckIssuer: %v (input %s); want input %s and %q", err, ie.Input, tc.input, tc.want)
			}
		})
	}
}
