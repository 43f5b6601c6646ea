package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sluicehq/sluice/mesh/api/certs"
)

// SelfCertificate is the certificate a process holding the CA (the
// identity service, `sluice up`'s control plane) serves its own gRPC with:
// a leaf for its own mesh identity, issued from the CA in process with a new
// key, so that proxies verify it against the trust anchors they already have.
//
// It is issued on the first handshake, replaced on the first handshake after
// certs.RenewShare of its lifetime, and replaced as soon as the CA's issuer
// changes. When a replacement fails (the issuer expired) the current
// certificate is served until it expires. It needs no goroutine.
type SelfCertificate struct {
	ca       *CA
	name     string
	lifetime time.Duration

	mu      sync.Mutex
	cert    *tls.Certificate
	renewAt time.Time
	issuer  *x509.Certificate // that signed cert
}

// NewSelfCertificate returns the serving certificate of identity name,
// issued by ca with leaves valid for lifetime (DefaultLeafLifetime if zero or
// less). It issues nothing until asked.
func NewSelfCertificate(ca *CA, name string, lifetime time.Duration) (*SelfCertificate, error) {
	if ca == nil {
		return nil, errors.New("serving certificate: no CA")
	}
	if err := checkDNSName(name); err != nil {
		return nil, fmt.Errorf("serving certificate: identity %q is not a DNS name: %w", name, err)
	}
	if lifetime <= 0 {
		lifetime = DefaultLeafLifetime
	}
	return &SelfCertificate{ca: ca, name: name, lifetime: lifetime}, nil
}

// Name is the identity the certificate is for.
func (s *SelfCertificate) Name() string { return s.name }

// GetCertificate serves the current certificate for
// tls.Config.GetCertificate, issuing a new one first when there is none, it
// is due for renewal, or the issuer changed.
func (s *SelfCertificate) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.Current()
}

// Current is GetCertificate without the handshake: the certificate to
// serve, renewed if due, or why there is none.
func (s *SelfCertificate) Current() (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.ca.now()
	if s.cert != nil && now.Before(s.renewAt) && s.issuer == s.ca.Issuer() {
		return s.cert, nil
	}
	err := s.issueLocked(now)
	switch {
	case err == nil:
		return s.cert, nil
	case s.cert != nil && now.Before(s.cert.Leaf.NotAfter):
		return s.cert, nil // keep serving the current one
	}
	return nil, err
}

// Ready reports whether an unexpired certificate can be served, issuing it
// if needed; the error says why not (the issuer expired, ...).
func (s *SelfCertificate) Ready() error {
	_, err := s.Current()
	return err
}

// issueLocked issues a new certificate with a new key.
func (s *SelfCertificate) issueLocked(now time.Time) error {
	iss := s.ca.Issuer()
	key, der, err := certs.NewCSR(s.name)
	if err != nil {
		return err
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return fmt.Errorf("serving certificate for %s: %w", s.name, err)
	}
	leaf, chain, notAfter, err := s.ca.Sign(csr, s.name, s.lifetime)
	if err != nil {
		return fmt.Errorf("cannot issue the serving certificate for %s: %w", s.name, err)
	}
	parsed, err := x509.ParseCertificate(leaf)
	if err != nil {
		return fmt.Errorf("serving certificate for %s: %w", s.name, err)
	}
	s.cert = &tls.Certificate{Certificate: append([][]byte{leaf}, chain...), PrivateKey: key, Leaf: parsed}
	s.issuer = iss
	s.renewAt = now.Add(time.Duration(float64(notAfter.Sub(now)) * certs.RenewShare))
	return nil
}
