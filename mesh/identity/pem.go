package identity

import (
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
// Such a CA has no files: swap its issuer with SetIssuerPEM, its anchors
// with SetTrustAnchorsPEM, or both at once with SetPEM. Reload and
// WatchIssuer read a CA directory, and must not be used with it.
func NewCAFromPEM(anchorPEM, issuerCertPEM, issuerKeyPEM []byte, now func() time.Time) (*CA, error) {
	if now == nil {
		now = time.Now
	}
	c := &CA{now: now}
	if err := c.SetPEM(anchorPEM, issuerCertPEM, issuerKeyPEM); err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	return c, nil
}

// SetIssuerPEM validates a new issuer (certificate then intermediates, and
// its ECDSA key, PEM) against the trust anchors and the clock, as
// NewCAFromPEM does, and signs with it from now on. On error the current
// issuer stays in use. Setting the issuer already in use changes nothing.
func (c *CA) SetIssuerPEM(certPEM, keyPEM []byte) error {
	c.setMu.Lock()
	defer c.setMu.Unlock()
	if cur := c.issuer.Load(); cur != nil && cur.sum == issuerSum(certPEM, keyPEM) {
		return nil
	}
	iss, err := c.parseIssuer(c.trust.Load(), certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("issuer: %w", err)
	}
	c.issuer.Store(iss)
	return nil
}

// SetPEM replaces the trust anchors and the issuer together: the issuer
// must chain to one of the new anchors. It is how a CA follows a rotation
// of its trust anchors: leaves signed from then on carry the chain up to
// the new anchors, and TrustAnchorPEM returns the new bundle. On error
// nothing changes; the error wraps ErrInvalidTrustAnchors when the bundle
// is unusable and ErrIssuerNotTrusted when the issuer does not chain to it.
func (c *CA) SetPEM(anchorPEM, issuerCertPEM, issuerKeyPEM []byte) error {
	anchors, err := parseAnchors(anchorPEM)
	if err != nil {
		return fmt.Errorf("trust anchors: %w", err)
	}
	c.setMu.Lock()
	defer c.setMu.Unlock()
	return c.setLocked(anchors, issuerCertPEM, issuerKeyPEM)
}

// setLocked validates the issuer against anchors and stores both; c.setMu
// is held.
func (c *CA) setLocked(anchors *anchorSet, issuerCertPEM, issuerKeyPEM []byte) error {
	iss, err := c.parseIssuer(anchors, issuerCertPEM, issuerKeyPEM)
	if err != nil {
		return fmt.Errorf("issuer: %w", err)
	}
	c.trust.Store(anchors)
	c.issuer.Store(iss)
	return nil
}

// SetTrustAnchorsPEM replaces the trust anchors and keeps the issuer in
// use, which must chain to one of them (as when a new anchor is added
// beside the old one before a new issuer is rolled out). On error nothing
// changes; the errors are SetPEM's.
func (c *CA) SetTrustAnchorsPEM(anchorPEM []byte) error {
	anchors, err := parseAnchors(anchorPEM)
	if err != nil {
		return fmt.Errorf("trust anchors: %w", err)
	}
	c.setMu.Lock()
	defer c.setMu.Unlock()
	cur := c.issuer.Load()
	if cur == nil {
		return errors.New("trust anchors: the CA has no issuer yet")
	}
	return c.setLocked(anchors, cur.certPEM, cur.keyPEM)
}
