package identity

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// The files of a CA directory.
const (
	// AnchorFile holds the trust anchors, PEM certificates (several while
	// anchors are rotated).
	AnchorFile = "ca.crt"
	// AnchorKeyFile holds the key of a generated trust anchor, used only to
	// sign a new issuer when the issuer files are missing. It may be kept
	// offline: a CA with an issuer needs no anchor key.
	AnchorKeyFile = "ca.key"
	// IssuerFile holds the issuer certificate, then any intermediates between
	// it and an anchor, PEM.
	IssuerFile = "issuer.crt"
	// IssuerKeyFile holds the issuer's ECDSA key, PEM (PKCS#8 or SEC 1).
	IssuerKeyFile = "issuer.key"
)

// Lifetimes and tolerances of generated certificates.
const (
	// AnchorLifetime is how long a generated trust anchor is valid.
	AnchorLifetime = 10 * 365 * 24 * time.Hour
	// IssuerLifetime is how long a generated issuer is valid.
	IssuerLifetime = 365 * 24 * time.Hour
	// DefaultLeafLifetime is how long an issued leaf is valid.
	DefaultLeafLifetime = 24 * time.Hour
	// ClockSkew backdates NotBefore so peers with slightly slow clocks accept
	// a fresh certificate.
	ClockSkew = 20 * time.Second
	// DefaultWatchInterval is how often WatchIssuer looks at the issuer files.
	DefaultWatchInterval = 2 * time.Second
)

var (
	// ErrIssuerNotValid means the issuer cannot sign now: it has expired or
	// is not valid yet. Rotating the issuer files fixes it.
	ErrIssuerNotValid = errors.New("issuer certificate is not valid now")
	// ErrInvalidCSR means a certificate signing request cannot be signed.
	ErrInvalidCSR = errors.New("invalid certificate signing request")
	// ErrInvalidTrustAnchors means a trust-anchor bundle cannot be used: it
	// is empty, is not PEM certificates, or holds a certificate that is not
	// a CA.
	ErrInvalidTrustAnchors = errors.New("invalid trust anchors")
	// ErrIssuerNotTrusted means the issuer does not chain to any of the
	// trust anchors (now): it is signed by another root, or a certificate
	// of its chain has expired.
	ErrIssuerNotTrusted = errors.New("issuer does not chain to the trust anchors")
)

// CA is a certificate authority for mesh identities: trust anchors and an
// issuer that signs leaf certificates. It is safe for concurrent use; the
// issuer and the anchors can be swapped (Reload, WatchIssuer, SetIssuerPEM,
// SetPEM) while leaves are being signed.
type CA struct {
	dir string
	now func() time.Time
	// trust is the bundle new issuers are validated against; the issuer in
	// use points to the bundle it was validated against, which is the
	// same once construction is over.
	trust  atomic.Pointer[anchorSet]
	issuer atomic.Pointer[issuer]
	// setMu serializes the setters, so that an issuer is never stored
	// against anchors another setter has just replaced.
	setMu sync.Mutex
}

// anchorSet is one bundle of trust anchors, immutable once built.
type anchorSet struct {
	pem   []byte
	certs []*x509.Certificate
	roots *x509.CertPool
}

// parseAnchors parses a bundle of trust anchors; errors wrap
// ErrInvalidTrustAnchors.
func parseAnchors(pemBytes []byte) (*anchorSet, error) {
	if len(bytes.TrimSpace(pemBytes)) == 0 {
		return nil, classify(ErrInvalidTrustAnchors, errors.New("no trust anchors given"))
	}
	certs, err := parseCertificates(pemBytes)
	if err != nil {
		return nil, classify(ErrInvalidTrustAnchors, err)
	}
	set := &anchorSet{pem: bytes.Clone(pemBytes), certs: certs, roots: x509.NewCertPool()}
	for i, a := range certs {
		if !a.BasicConstraintsValid || !a.IsCA {
			return nil, classify(ErrInvalidTrustAnchors, fmt.Errorf("certificate %d (%q) is not a CA certificate", i+1, a.Subject.CommonName))
		}
		set.roots.AddCert(a)
	}
	return set, nil
}

// classifiedError is an error that also matches a sentinel (errors.Is)
// without repeating the sentinel's text.
type classifiedError struct{ kind, err error }

func classify(kind, err error) error { return &classifiedError{kind: kind, err: err} }

func (e *classifiedError) Error() string   { return e.err.Error() }
func (e *classifiedError) Unwrap() []error { return []error{e.kind, e.err} }

// issuer is one loaded issuer, immutable once built.
type issuer struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// anchors are the trust anchors the issuer was validated against.
	anchors *anchorSet
	// certPEM and keyPEM are what it was loaded from, to validate it again
	// against new anchors.
	certPEM, keyPEM []byte
	// chain is what a leaf is served with: the issuer then intermediates, DER,
	// without the trust anchor.
	chain [][]byte
	// notBefore and notAfter bound the whole chain up to its anchor.
	notBefore, notAfter time.Time
	// sum identifies the file contents it was loaded from.
	sum [sha256.Size]byte
}

// LoadOrCreate opens the CA kept in dir, generating what is missing: a trust
// anchor (a self-signed ECDSA P-256 root valid for 10 years, ca.crt, with its
// key ca.key) when there is none, and an issuer (valid for a year and never
// beyond the anchor, issuer.crt and issuer.key) signed by ca.key when there is
// none. Keys are written 0600. Existing files are validated: the issuer must
// be an ECDSA CA certificate matching its key and chaining to an anchor, and
// be valid now. now is the clock (nil: time.Now); trustDomain names the
// generated certificates (empty: cluster.local).
func LoadOrCreate(dir, trustDomain string, now func() time.Time) (*CA, error) {
	if now == nil {
		now = time.Now
	}
	if trustDomain == "" {
		trustDomain = DefaultTrustDomain
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("CA directory: %w", err)
	}
	c := &CA{dir: dir, now: now}
	path := func(name string) string { return filepath.Join(dir, name) }
	hasAnchor, err := exists(path(AnchorFile))
	if err != nil {
		return nil, err
	}
	hasIssuer, err := exists(path(IssuerFile))
	if err != nil {
		return nil, err
	}
	hasIssuerKey, err := exists(path(IssuerKeyFile))
	if err != nil {
		return nil, err
	}
	switch {
	case hasIssuer && !hasIssuerKey:
		return nil, fmt.Errorf("CA %s: %s exists but %s does not; restore the key or remove both to generate a new issuer", dir, IssuerFile, IssuerKeyFile)
	case !hasIssuer && hasIssuerKey:
		return nil, fmt.Errorf("CA %s: %s exists but %s does not; restore the certificate or remove both to generate a new issuer", dir, IssuerKeyFile, IssuerFile)
	case !hasAnchor && hasIssuer:
		return nil, fmt.Errorf("CA %s: %s exists but the trust anchor %s does not, so the issuer cannot be verified; restore %s or remove the issuer files to generate a new CA", dir, IssuerFile, AnchorFile, AnchorFile)
	}

	if !hasAnchor {
		if err := generateAnchor(dir, trustDomain, now()); err != nil {
			return nil, fmt.Errorf("CA %s: %w", dir, err)
		}
	}
	if err := c.loadAnchors(); err != nil {
		return nil, fmt.Errorf("CA %s: %w", dir, err)
	}
	if !hasIssuer {
		if err := c.generateIssuer(trustDomain); err != nil {
			return nil, fmt.Errorf("CA %s: %w", dir, err)
		}
	}
	if err := c.loadIssuer(); err != nil {
		return nil, fmt.Errorf("CA %s: %w", dir, err)
	}
	return c, nil
}

// TrustAnchorPEM returns the trust anchors the issuer in use chains to,
// PEM, as proxies must be given them.
func (c *CA) TrustAnchorPEM() []byte { return bytes.Clone(c.anchorsInUse().pem) }

// TrustAnchors returns the trust anchors the issuer in use chains to, as a
// pool.
func (c *CA) TrustAnchors() *x509.CertPool { return c.anchorsInUse().roots.Clone() }

// anchorsInUse are the anchors of the issuer in use, or (while a CA is
// being built) the anchors loaded so far.
func (c *CA) anchorsInUse() *anchorSet {
	if iss := c.issuer.Load(); iss != nil {
		return iss.anchors
	}
	return c.trust.Load()
}

// Issuer returns the issuer certificate currently used for signing.
func (c *CA) Issuer() *x509.Certificate { return c.issuer.Load().cert }

// Sign issues a leaf certificate for csr's public key, with identity as its
// common name and only SAN (a DNS name), for server and client
// authentication, valid from now (less ClockSkew) for lifetime but never
// beyond the issuer chain's expiry. It returns the leaf and the chain to send
// with it (DER, issuer first, no anchor) and the leaf's NotAfter.
//
// Sign checks the CSR's signature and that its key is ECDSA P-256 (errors wrap
// ErrInvalidCSR); which names the CSR asks for is the caller's business
// (ValidateCSR). It fails with ErrIssuerNotValid when the issuer has expired
// or is not valid yet.
func (c *CA) Sign(csr *x509.CertificateRequest, identity string, lifetime time.Duration) (leaf []byte, chain [][]byte, notAfter time.Time, err error) {
	if identity == "" {
		return nil, nil, time.Time{}, errors.New("sign: identity is empty")
	}
	if lifetime <= 0 {
		return nil, nil, time.Time{}, fmt.Errorf("sign %s: lifetime %s must be positive", identity, lifetime)
	}
	if csr == nil {
		return nil, nil, time.Time{}, fmt.Errorf("sign %s: %w: none given", identity, ErrInvalidCSR)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("sign %s: %w: signature does not verify: %v", identity, ErrInvalidCSR, err)
	}
	if err := checkKey(csr.PublicKey); err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("sign %s: %w: %v", identity, ErrInvalidCSR, err)
	}
	iss := c.issuer.Load()
	now := c.now()
	if now.Before(iss.notBefore) {
		return nil, nil, time.Time{}, fmt.Errorf("sign %s: %w: issuer %q is not valid until %s", identity, ErrIssuerNotValid, iss.cert.Subject.CommonName, iss.notBefore.UTC().Format(time.RFC3339))
	}
	if !now.Before(iss.notAfter) {
		return nil, nil, time.Time{}, fmt.Errorf("sign %s: %w: issuer %q expired at %s", identity, ErrIssuerNotValid, iss.cert.Subject.CommonName, iss.notAfter.UTC().Format(time.RFC3339))
	}
	notAfter = now.Add(lifetime)
	if notAfter.After(iss.notAfter) {
		notAfter = iss.notAfter
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("sign %s: %w", identity, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: identity},
		DNSNames:              []string{identity},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	leaf, err = x509.CreateCertificate(rand.Reader, tmpl, iss.cert, csr.PublicKey, iss.key)
	if err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("sign %s: %w", identity, err)
	}
	chain = make([][]byte, len(iss.chain))
	for i, der := range iss.chain {
		chain[i] = bytes.Clone(der)
	}
	return leaf, chain, notAfter, nil
}

// Reload reads the issuer files again and, if they hold a valid issuer,
// signs with it from now on. On error the current issuer stays in use.
func (c *CA) Reload() error {
	if err := c.loadIssuer(); err != nil {
		return fmt.Errorf("reload issuer from %s: %w", c.dir, err)
	}
	return nil
}

func (c *CA) loadIssuer() error {
	crtPEM, keyPEM, err := c.readIssuerFiles()
	if err != nil {
		return err
	}
	c.setMu.Lock()
	defer c.setMu.Unlock()
	iss, err := c.parseIssuer(c.trust.Load(), crtPEM, keyPEM)
	if err != nil {
		return err
	}
	c.issuer.Store(iss)
	return nil
}

// WatchIssuer looks at the issuer files every interval (DefaultWatchInterval
// if zero or less) until ctx is done, and reloads the issuer when their
// contents change. After each attempt it calls onReload (if not nil) with nil
// or the reason the new files were rejected; a rejected issuer leaves the
// current one in use, and is tried again once the files change again (as
// when a certificate is written before its key).
func (c *CA) WatchIssuer(ctx context.Context, interval time.Duration, onReload func(error)) {
	if interval <= 0 {
		interval = DefaultWatchInterval
	}
	if onReload == nil {
		onReload = func(error) {}
	}
	last := c.issuer.Load().sum
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		crtPEM, keyPEM, err := c.readIssuerFiles()
		if err != nil {
			// A missing file in the middle of a rotation: report it once
			// per state, and look again next time.
			sum := sha256.Sum256([]byte(err.Error()))
			if sum != last {
				last = sum
				onReload(fmt.Errorf("reload issuer: %w", err))
			}
			continue
		}
		sum := issuerSum(crtPEM, keyPEM)
		if sum == last {
			continue
		}
		last = sum
		c.setMu.Lock()
		iss, err := c.parseIssuer(c.trust.Load(), crtPEM, keyPEM)
		if err == nil {
			c.issuer.Store(iss)
		}
		c.setMu.Unlock()
		if err != nil {
			onReload(fmt.Errorf("reload issuer from %s: %w", c.dir, err))
			continue
		}
		onReload(nil)
	}
}

func (c *CA) readIssuerFiles() (crtPEM, keyPEM []byte, err error) {
	crtPEM, err = os.ReadFile(filepath.Join(c.dir, IssuerFile))
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = os.ReadFile(filepath.Join(c.dir, IssuerKeyFile))
	if err != nil {
		return nil, nil, err
	}
	return crtPEM, keyPEM, nil
}

func issuerSum(crtPEM, keyPEM []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write(crtPEM)
	h.Write([]byte{0})
	h.Write(keyPEM)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// parseIssuer validates issuer files against anchors at the current time.
// A chain that does not verify is an error wrapping ErrIssuerNotTrusted.
func (c *CA) parseIssuer(anchors *anchorSet, crtPEM, keyPEM []byte) (*issuer, error) {
	certs, err := parseCertificates(crtPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", IssuerFile, err)
	}
	key, err := parseECKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", IssuerKeyFile, err)
	}
	cert := certs[0]
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, fmt.Errorf("%s: %q is not a CA certificate", IssuerFile, cert.Subject.CommonName)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("%s: %q may not sign certificates (no certSign key usage)", IssuerFile, cert.Subject.CommonName)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return nil, fmt.Errorf("%s does not hold the key of the certificate in %s", IssuerKeyFile, IssuerFile)
	}
	intermediates := x509.NewCertPool()
	for _, ic := range certs[1:] {
		intermediates.AddCert(ic)
	}
	chains, err := cert.Verify(x509.VerifyOptions{
		Roots:         anchors.roots,
		Intermediates: intermediates,
		CurrentTime:   c.now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, classify(ErrIssuerNotTrusted, fmt.Errorf("%s: %q does not verify against the trust anchors in %s: %w", IssuerFile, cert.Subject.CommonName, AnchorFile, err))
	}
	iss := &issuer{
		cert: cert, key: key, anchors: anchors,
		certPEM: bytes.Clone(crtPEM), keyPEM: bytes.Clone(keyPEM),
		sum: issuerSum(crtPEM, keyPEM),
	}
	iss.notBefore, iss.notAfter = cert.NotBefore, cert.NotAfter
	for _, cc := range chains[0] {
		if cc.NotBefore.After(iss.notBefore) {
			iss.notBefore = cc.NotBefore
		}
		if cc.NotAfter.Before(iss.notAfter) {
			iss.notAfter = cc.NotAfter
		}
	}
	for _, cc := range certs {
		if !anchors.contains(cc) {
			iss.chain = append(iss.chain, cc.Raw)
		}
	}
	return iss, nil
}

// contains reports whether cert is one of the anchors.
func (s *anchorSet) contains(cert *x509.Certificate) bool {
	for _, a := range s.certs {
		if a.Equal(cert) {
			return true
		}
	}
	return false
}

func (c *CA) loadAnchors() error {
	anchorPEM, err := os.ReadFile(filepath.Join(c.dir, AnchorFile))
	if err != nil {
		return err
	}
	anchors, err := parseAnchors(anchorPEM)
	if err != nil {
		return fmt.Errorf("%s: %w", AnchorFile, err)
	}
	c.trust.Store(anchors)
	return nil
}

// generateAnchor writes a new self-signed root and its key.
func generateAnchor(dir, trustDomain string, now time.Time) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate trust anchor key: %w", err)
	}
	tmpl, err := caTemplate("root.identity."+trustDomain, now, now.Add(AnchorLifetime))
	if err != nil {
		return err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("generate trust anchor: %w", err)
	}
	// Key first: a certificate without its key would be a broken CA.
	if err := writeKey(filepath.Join(dir, AnchorKeyFile), key); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, AnchorFile), pemCert(der), 0o644)
}

// generateIssuer writes a new issuer signed by the anchor key.
func (c *CA) generateIssuer(trustDomain string) error {
	keyPEM, err := os.ReadFile(filepath.Join(c.dir, AnchorKeyFile))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s and %s are missing and there is no %s to sign a new issuer with; provide an issuer signed by the trust anchor", IssuerFile, IssuerKeyFile, AnchorKeyFile)
	}
	if err != nil {
		return err
	}
	anchorKey, err := parseECKey(keyPEM)
	if err != nil {
		return fmt.Errorf("%s: %w", AnchorKeyFile, err)
	}
	var anchor *x509.Certificate
	for _, a := range c.trust.Load().certs {
		if pub, ok := a.PublicKey.(*ecdsa.PublicKey); ok && pub.Equal(&anchorKey.PublicKey) {
			anchor = a
		}
	}
	if anchor == nil {
		return fmt.Errorf("%s is not the key of any certificate in %s", AnchorKeyFile, AnchorFile)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate issuer key: %w", err)
	}
	now := c.now()
	notAfter := now.Add(IssuerLifetime)
	if notAfter.After(anchor.NotAfter) {
		notAfter = anchor.NotAfter
	}
	tmpl, err := caTemplate("identity."+trustDomain, now, notAfter)
	if err != nil {
		return err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, anchor, &key.PublicKey, anchorKey)
	if err != nil {
		return fmt.Errorf("generate issuer: %w", err)
	}
	if err := writeKey(filepath.Join(c.dir, IssuerKeyFile), key); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(c.dir, IssuerFile), pemCert(der), 0o644)
}

func caTemplate(name string, now, notAfter time.Time) (*x509.Certificate, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil
}

// newSerial returns a random positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// checkKey accepts only ECDSA P-256 public keys.
func checkKey(pub any) error {
	if k, ok := pub.(*ecdsa.PublicKey); ok && k.Curve == elliptic.P256() {
		return nil
	}
	return fmt.Errorf("key is %s, want ECDSA P-256", describeKey(pub))
}

func describeKey(pub any) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return fmt.Sprintf("%T", pub)
}

func parseCertificates(pemBytes []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := pemBytes; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is a %q, want CERTIFICATE", len(certs)+1, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

func parseECKey(pemBytes []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("no PEM key found")
	}
	switch block.Type {
	case "EC PRIVATE KEY":
		k, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("EC private key: %w", err)
		}
		return k, nil
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PKCS#8 private key: %w", err)
		}
		ec, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("key is %T, want ECDSA", k)
		}
		return ec, nil
	}
	return nil, fmt.Errorf("PEM block is a %q, want PRIVATE KEY or EC PRIVATE KEY", block.Type)
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode %s: %w", filepath.Base(path), err)
	}
	return writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// writeFileAtomic writes data to path through a temporary file and a rename,
// so that a reader sees the old contents or the new, never part of them.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename there is nothing to remove
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, err
}
