package identity

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// NewCAFromPEM builds a CA from PEM bytes rather than a directory, as on
// Kubernetes, where the trust anchors come from a ConfigMap and the issuer
// from a Secret: anchorPEM holds the trust anchors, issuerCertPEM the issuer
// certificate then any intermediates, issuerKeyPEM the issuer's ECDSA key.
// They are validated as LoadOrCreate validates files: every anchor must be a
// CA certificate, and the issuer an ECDSA CA certificate matching its key,
// chaining to an anchor and valid now. now is the clock (nil: time.Now).
//
// Such a CA has no files: swap its issuer with SetIssuerPEM. Reload and
// WatchIssuer read a CA directory, and must not be used with it.
func NewCAFromPEM(anchorPEM, issuerCertPEM, issuerKeyPEM []byte, now func() time.Time) (*CA, error) {
	if now == nil {
		now = time.Now
	}
	if len(bytes.TrimSpace(anchorPEM)) == 0 {
		return nil, errors.New("CA: no trust anchors given")
	}
	anchors, err := parseCertificates(anchorPEM)
	if err != nil {
		return nil, fmt.Errorf("CA: trust anchors: %w", err)
	}
	c := &CA{now: now, roots: x509.NewCertPool()}
	for i, a := range anchors {
		if !a.BasicConstraintsValid || !a.IsCA {
			return nil, fmt.Errorf("CA: trust anchor %d (%q) is not a CA certificate", i+1, a.Subject.CommonName)
		}
		c.roots.AddCert(a)
	}
	c.anchorPEM, c.anchors = bytes.Clone(anchorPEM), anchors
	if err := c.SetIssuerPEM(issuerCertPEM, issuerKeyPEM); err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	return c, nil
}

// SetIssuerPEM validates a new issuer (certificate then intermediates, and
// its ECDSA key, PEM) against the trust anchors and the clock, as
// NewCAFromPEM does, and signs with it from now on. On error the current
// issuer stays in use. Setting the issuer already in use changes nothing.
func (c *CA) SetIssuerPEM(certPEM, keyPEM []byte) error {
	if cur := c.issuer.Load(); cur != nil && cur.sum == issuerSum(certPEM, keyPEM) {
		return nil
	}
	iss, err := c.parseIssuer(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("issuer: %w", err)
	}
	c.issuer.Store(iss)
	return nil
}
