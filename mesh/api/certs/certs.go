// Package certs is the proxy's side of mesh identity: it makes the key and
// certificate signing request a proxy sends to the identity service, turns the
// answer into a TLS certificate, and verifies peers against the trust anchors
// and the identity service discovery said to expect.
//
// Mesh TLS is TLS 1.3 only, with X25519MLKEM768 preferred for key exchange.
// A peer's identity is the DNS SAN of its leaf certificate
// ("web.shop.serviceaccount.identity.sluice.cluster.local").
//
// The proxy imports this package, so it depends on nothing but the standard
// library and mesh/api.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sluicehq/sluice/mesh/api/meshv1"
)

// NewCSR generates an ECDSA P-256 key and a DER certificate signing request
// whose common name and only SAN (a DNS name) are identity: what the identity
// service's Certify accepts.
func NewCSR(identity string) (*ecdsa.PrivateKey, []byte, error) {
	if identity == "" {
		return nil, nil, errors.New("new CSR: identity is empty")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("new CSR for %s: generate key: %w", identity, err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:            pkix.Name{CommonName: identity},
		DNSNames:           []string{identity},
		SignatureAlgorithm: x509.ECDSAWithSHA256,
	}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("new CSR for %s: %w", identity, err)
	}
	return key, der, nil
}

// ParseRoots reads PEM trust anchors into a pool. It fails if the PEM holds a
// block that is not a certificate, a certificate that does not parse, or no
// certificate at all.
func ParseRoots(pemBytes []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for rest := pemBytes; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		n++
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("trust anchors: PEM block %d is a %q, want CERTIFICATE", n, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("trust anchors: certificate %d: %w", n, err)
		}
		pool.AddCert(c)
	}
	if n == 0 {
		return nil, errors.New("trust anchors: no PEM certificate found")
	}
	return pool, nil
}

// Certificate turns a Certify answer and the key its CSR was made with into a
// TLS certificate (leaf first, then the intermediates), after checking that
// the leaf belongs to key, names identity, and verifies against roots.
func Certificate(key *ecdsa.PrivateKey, resp *meshv1.CertifyResponse, roots *x509.CertPool, identity string) (*tls.Certificate, error) {
	if key == nil || resp == nil {
		return nil, errors.New("certificate: key and response are required")
	}
	leaf, err := x509.ParseCertificate(resp.GetLeafCertificate())
	if err != nil {
		return nil, fmt.Errorf("certificate for %s: leaf: %w", identity, err)
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return nil, fmt.Errorf("certificate for %s: the leaf is not for our key", identity)
	}
	chain := []*x509.Certificate{leaf}
	raw := [][]byte{leaf.Raw}
	for i, der := range resp.GetIntermediateCertificates() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("certificate for %s: intermediate %d: %w", identity, i, err)
		}
		chain = append(chain, c)
		raw = append(raw, der)
	}
	if err := verifyChain(roots, identity, chain, time.Time{}); err != nil {
		return nil, fmt.Errorf("certificate for %s: %w", identity, err)
	}
	return &tls.Certificate{Certificate: raw, PrivateKey: key, Leaf: leaf}, nil
}

// VerifyPeer returns a tls.Config.VerifyPeerCertificate callback that accepts
// a peer whose chain verifies against roots and whose leaf has expected as a
// DNS SAN. An empty expected accepts any identity the roots vouch for. The
// error names the expected and the presented identity.
//
// Use it with InsecureSkipVerify (a mesh identity is not a host name the
// standard verification would check) and without client session caching:
// the callback does not run on resumed sessions. ClientConfig does both.
func VerifyPeer(roots *x509.CertPool, expected string) func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
	return func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
		certs := make([]*x509.Certificate, 0, len(rawCerts))
		for i, der := range rawCerts {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return fmt.Errorf("peer certificate %d does not parse: %w", i, err)
			}
			certs = append(certs, c)
		}
		return verifyChain(roots, expected, certs, time.Time{})
	}
}

// VerifyChain checks that chain (leaf first, as tls.ConnectionState's
// PeerCertificates) chains to roots now and, unless expected is empty, that
// the leaf names expected.
func VerifyChain(roots *x509.CertPool, expected string, chain []*x509.Certificate) error {
	return verifyChain(roots, expected, chain, time.Time{})
}

// PeerIdentity is the identity the peer presented on a connection: the first
// DNS SAN of its leaf certificate, or "" when it presented none. It says who
// the peer claims to be; the connection's configuration must have verified
// the chain (ServerConfig and ClientConfig do).
func PeerIdentity(cs tls.ConnectionState) string {
	if len(cs.PeerCertificates) == 0 || len(cs.PeerCertificates[0].DNSNames) == 0 {
		return ""
	}
	return cs.PeerCertificates[0].DNSNames[0]
}

// RenewShare is the share of a mesh certificate's lifetime after which its
// holder renews it: proxies and the control plane's own serving certificates
// alike.
const RenewShare = 0.7

// CurvePreferences is the key exchange order of mesh TLS: post-quantum hybrid
// first, then the classical groups.
func CurvePreferences() []tls.CurveID {
	return []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256, tls.CurveP384}
}

// ClientConfig is the TLS configuration for connecting to a meshed peer that
// must present expected (empty: any mesh identity). getCertificate supplies
// our own certificate, so a rotated one is used from the next handshake on.
func ClientConfig(roots *x509.CertPool, expected string, getCertificate func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		MaxVersion:       tls.VersionTLS13,
		CurvePreferences: CurvePreferences(),
		ServerName:       expected,
		// The standard verification checks host names; VerifyConnection below
		// checks the chain and the mesh identity instead, on every handshake.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyChain(roots, expected, cs.PeerCertificates, time.Time{})
		},
		GetClientCertificate: getCertificate,
	}
}

// ServerConfig is the TLS configuration of a meshed listener. It asks clients
// for a certificate and verifies one if given, but admits clients without
// one: inbound policy decides whether an unauthenticated client may proceed
// (PeerIdentity is "" for it).
func ServerConfig(roots *x509.CertPool, getCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		MaxVersion:       tls.VersionTLS13,
		CurvePreferences: CurvePreferences(),
		GetCertificate:   getCertificate,
		ClientAuth:       tls.VerifyClientCertIfGiven,
		ClientCAs:        roots,
	}
}

// verifyChain checks that certs (leaf first) chain to roots at now (zero: the
// current time) and, unless expected is empty, that the leaf names expected.
func verifyChain(roots *x509.CertPool, expected string, certs []*x509.Certificate, now time.Time) error {
	if len(certs) == 0 {
		if expected == "" {
			return errors.New("peer presented no certificate")
		}
		return fmt.Errorf("peer presented no certificate, expected identity %q", expected)
	}
	if roots == nil {
		return errors.New("no trust anchors to verify the peer against")
	}
	leaf := certs[0]
	intermediates := x509.NewCertPool()
	for _, c := range certs[1:] {
		intermediates.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return fmt.Errorf("peer certificate (identity %s) does not verify against the trust anchors: %w", presented(leaf), err)
	}
	if expected == "" {
		return nil
	}
	for _, name := range leaf.DNSNames {
		if strings.EqualFold(name, expected) {
			return nil
		}
	}
	return fmt.Errorf("peer presented identity %s, expected %q", presented(leaf), expected)
}

// presented describes the identities a certificate names, for errors.
func presented(c *x509.Certificate) string {
	switch len(c.DNSNames) {
	case 0:
		return fmt.Sprintf("none (no DNS SAN; subject %q)", c.Subject.CommonName)
	case 1:
		return fmt.Sprintf("%q", c.DNSNames[0])
	}
	return fmt.Sprintf("%q", c.DNSNames)
}
