package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"time"
)

// This file generates and checks the certificates an installation starts
// from, when there is no CA directory: `sluice install` puts them into the
// trust-anchors ConfigMap, the issuer Secret and the webhook's Secret.

// KeyPair is a certificate and its ECDSA private key, both PEM (the key
// PKCS#8, as tls.X509KeyPair and NewCAFromPEM read it).
type KeyPair struct {
	CertPEM []byte
	KeyPEM  []byte
}

// IssuerCommonName is the common name of a mesh's issuer:
// identity.<controlNamespace>.<trustDomain>, with the defaults of Name for
// empty arguments.
func IssuerCommonName(controlNamespace, trustDomain string) string {
	if controlNamespace == "" {
		controlNamespace = DefaultControlNamespace
	}
	if trustDomain == "" {
		trustDomain = DefaultTrustDomain
	}
	return "identity." + controlNamespace + "." + trustDomain
}

// NewRootCA generates a self-signed ECDSA P-256 CA certificate named
// commonName, valid from now (backdated by ClockSkew) for lifetime.
func NewRootCA(commonName string, now time.Time, lifetime time.Duration) (KeyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return KeyPair{}, fmt.Errorf("generate the key of %q: %w", commonName, err)
	}
	tmpl, err := caTemplate(commonName, now, now.Add(lifetime))
	if err != nil {
		return KeyPair{}, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return KeyPair{}, fmt.Errorf("sign %q: %w", commonName, err)
	}
	return keyPair(der, key)
}

// NewIntermediateCA generates an ECDSA P-256 CA certificate named
// commonName and signed by parent, valid from now for lifetime but never
// beyond parent.
func NewIntermediateCA(parent KeyPair, commonName string, now time.Time, lifetime time.Duration) (KeyPair, error) {
	parentCert, parentKey, err := parent.parse()
	if err != nil {
		return KeyPair{}, fmt.Errorf("signing CA of %q: %w", commonName, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return KeyPair{}, fmt.Errorf("generate the key of %q: %w", commonName, err)
	}
	notAfter := now.Add(lifetime)
	if notAfter.After(parentCert.NotAfter) {
		notAfter = parentCert.NotAfter
	}
	tmpl, err := caTemplate(commonName, now, notAfter)
	if err != nil {
		return KeyPair{}, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, &key.PublicKey, parentKey)
	if err != nil {
		return KeyPair{}, fmt.Errorf("sign %q: %w", commonName, err)
	}
	return keyPair(der, key)
}

// NewServingCertificate generates an ECDSA P-256 TLS server certificate
// for dnsNames (the first is also its common name; IP literals among them
// become IP addresses of the certificate), signed by ca, valid from now for
// lifetime but never beyond ca.
func NewServingCertificate(ca KeyPair, dnsNames []string, now time.Time, lifetime time.Duration) (KeyPair, error) {
	if len(dnsNames) == 0 {
		return KeyPair{}, errors.New("a serving certificate needs at least one DNS name")
	}
	caCert, caKey, err := ca.parse()
	if err != nil {
		return KeyPair{}, fmt.Errorf("signing CA of %q: %w", dnsNames[0], err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return KeyPair{}, fmt.Errorf("generate the key of %q: %w", dnsNames[0], err)
	}
	serial, err := newSerial()
	if err != nil {
		return KeyPair{}, err
	}
	notAfter := now.Add(lifetime)
	if notAfter.After(caCert.NotAfter) {
		notAfter = caCert.NotAfter
	}
	var dns []string
	var ips []net.IP
	for _, n := range dnsNames {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, n)
		}
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: dnsNames[0]},
		DNSNames:              dns,
		IPAddresses:           ips,
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return KeyPair{}, fmt.Errorf("sign %q: %w", dnsNames[0], err)
	}
	return keyPair(der, key)
}

// IssuerInput names one of the three inputs CheckIssuer validates.
type IssuerInput int

// The inputs of CheckIssuer.
const (
	TrustAnchorsInput IssuerInput = iota + 1
	IssuerCertificateInput
	IssuerKeyInput
)

func (in IssuerInput) String() string {
	switch in {
	case TrustAnchorsInput:
		return "trust anchors"
	case IssuerCertificateInput:
		return "issuer certificate"
	case IssuerKeyInput:
		return "issuer key"
	}
	return fmt.Sprintf("IssuerInput(%d)", int(in))
}

// IssuerError is a problem CheckIssuer found, and the input it lies in, so
// that a caller can name the flag or file to fix.
type IssuerError struct {
	Input IssuerInput
	Err   error
}

func (e *IssuerError) Error() string { return e.Input.String() + ": " + e.Err.Error() }

// Unwrap returns the problem.
func (e *IssuerError) Unwrap() error { return e.Err }

// CheckIssuer validates trust anchors and an issuer given by a user, PEM,
// before they are installed: every anchor is a CA certificate valid at now;
// the issuer certificate (then any intermediates) is a CA that may sign
// certificates, is valid at now, chains to an anchor, and its key is
// issuerKeyPEM, ECDSA. Each problem is an *IssuerError naming its input.
func CheckIssuer(anchorPEM, issuerCertPEM, issuerKeyPEM []byte, now time.Time) error {
	fail := func(in IssuerInput, format string, args ...any) error {
		return &IssuerError{Input: in, Err: fmt.Errorf(format, args...)}
	}
	anchors, err := parseCertificates(anchorPEM)
	if err != nil {
		return fail(TrustAnchorsInput, "%w", err)
	}
	roots := x509.NewCertPool()
	for i, a := range anchors {
		if !a.BasicConstraintsValid || !a.IsCA {
			return fail(TrustAnchorsInput, "certificate %d (%q) is not a CA certificate", i+1, a.Subject.CommonName)
		}
		if err := validAt(a, now); err != nil {
			return fail(TrustAnchorsInput, "certificate %d (%q) %w", i+1, a.Subject.CommonName, err)
		}
		roots.AddCert(a)
	}
	certs, err := parseCertificates(issuerCertPEM)
	if err != nil {
		return fail(IssuerCertificateInput, "%w", err)
	}
	cert := certs[0]
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return fail(IssuerCertificateInput, "%q is not a CA certificate (basic constraints CA:TRUE), so it cannot issue proxy certificates", cert.Subject.CommonName)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fail(IssuerCertificateInput, "%q may not sign certificates (no certSign key usage)", cert.Subject.CommonName)
	}
	if err := validAt(cert, now); err != nil {
		return fail(IssuerCertificateInput, "%q %w", cert.Subject.CommonName, err)
	}
	key, err := parseECKey(issuerKeyPEM)
	if err != nil {
		return fail(IssuerKeyInput, "%w", err)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return fail(IssuerKeyInput, "it is not the key of the issuer certificate %q", cert.Subject.CommonName)
	}
	intermediates := x509.NewCertPool()
	for _, ic := range certs[1:] {
		intermediates.AddCert(ic)
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return fail(IssuerCertificateInput, "%q does not chain to the trust anchors: %w", cert.Subject.CommonName, err)
	}
	return nil
}

// validAt says when a certificate is not valid at now.
func validAt(c *x509.Certificate, now time.Time) error {
	switch {
	case now.After(c.NotAfter):
		return fmt.Errorf("expired on %s", c.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(c.NotBefore):
		return fmt.Errorf("is not valid before %s", c.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// parse decodes the pair, checking that the key is the certificate's.
func (kp KeyPair) parse() (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certs, err := parseCertificates(kp.CertPEM)
	if err != nil {
		return nil, nil, err
	}
	key, err := parseECKey(kp.KeyPEM)
	if err != nil {
		return nil, nil, err
	}
	if pub, ok := certs[0].PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return nil, nil, fmt.Errorf("the key is not the key of %q", certs[0].Subject.CommonName)
	}
	return certs[0], key, nil
}

func keyPair(der []byte, key *ecdsa.PrivateKey) (KeyPair, error) {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return KeyPair{}, fmt.Errorf("encode key: %w", err)
	}
	return KeyPair{
		CertPEM: pemCert(der),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}
