package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/sluicehq/sluice/mesh/api/certs"
	"github.com/sluicehq/sluice/mesh/api/meshv1"
)

// Defaults and bounds of Identity.
const (
	// DefaultRefresh is the share of a certificate's lifetime after which it
	// is renewed.
	DefaultRefresh = certs.RenewShare
	// MinRetryBackoff and MaxRetryBackoff bound the jittered wait between
	// failed Certify attempts.
	MinRetryBackoff = time.Second
	MaxRetryBackoff = 30 * time.Second
	// minRefresh is the shortest wait before a renewal, so that a server
	// handing out nearly expired certificates is not called in a loop.
	minRefresh = 100 * time.Millisecond
	// certifyTimeout bounds one Certify call.
	certifyTimeout = 10 * time.Second
)

// IdentityOptions configure an Identity.
type IdentityOptions struct {
	// Conn reaches the identity service.
	Conn grpc.ClientConnInterface
	// Name is the identity to request
	// ("web.shop.serviceaccount.identity.sluice.cluster.local").
	Name string
	// Token returns the proof of identity. It is called before every Certify,
	// so a rotated token file is picked up.
	Token func() ([]byte, error)
	// TrustAnchorsPEM are the roots the issued certificate, and every peer,
	// must chain to.
	TrustAnchorsPEM []byte
	// Refresh is the share of the lifetime after which the certificate is
	// renewed, counted from when it was received (default DefaultRefresh).
	Refresh float64
	// Clock returns the current time (default time.Now). It decides when to
	// renew and whether the certificate has expired.
	Clock func() time.Time
	// After waits on Clock's time line (default: a real timer). Tests pass a
	// fake clock's to drive renewals without sleeping.
	After func(time.Duration) <-chan time.Time
	// Logger receives certification results (nil: slog.Default).
	Logger *slog.Logger
	// OnCertified, if set, is called with the NotAfter of every certificate
	// obtained (for metrics such as the certificate expiry timestamp).
	OnCertified func(notAfter time.Time)
}

// Identity obtains and refreshes the proxy's certificate from the Identity
// API.
//
// Its private key lives only in memory and is never written anywhere. Unlike
// Linkerd, which reuses one key for the life of the proxy, every renewal
// generates a new key and CSR: a leaked key is then good for one certificate
// lifetime at most, and the cost (one P-256 key per renewal) is negligible.
//
// While a renewal fails the current certificate stays in use; the proxy is
// ready as long as it holds an unexpired certificate.
type Identity struct {
	opts    IdentityOptions
	client  meshv1.IdentityClient
	roots   *x509.CertPool
	log     *slog.Logger
	cert    atomic.Pointer[tls.Certificate]
	running atomic.Bool

	mu      sync.Mutex
	lastErr error // of the last attempt; nil after a success

	certified     chan struct{} // closed when the first certificate is stored
	certifiedOnce sync.Once
}

// NewIdentity checks the options and parses the trust anchors. No key exists
// until Run.
func NewIdentity(opts IdentityOptions) (*Identity, error) {
	if opts.Conn == nil {
		return nil, errors.New("identity: no connection to the identity service (IdentityOptions.Conn)")
	}
	if opts.Name == "" {
		return nil, errors.New("identity: no identity name to request (IdentityOptions.Name)")
	}
	if opts.Token == nil {
		return nil, fmt.Errorf("identity %s: no token source (IdentityOptions.Token)", opts.Name)
	}
	if opts.Refresh == 0 {
		opts.Refresh = DefaultRefresh
	}
	if opts.Refresh <= 0 || opts.Refresh >= 1 {
		return nil, fmt.Errorf("identity %s: refresh share %v must be between 0 and 1", opts.Name, opts.Refresh)
	}
	roots, err := certs.ParseRoots(opts.TrustAnchorsPEM)
	if err != nil {
		return nil, fmt.Errorf("identity %s: %w", opts.Name, err)
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Identity{
		opts:   opts,
		client: meshv1.NewIdentityClient(opts.Conn),
		roots:  roots,
		log:    opts.Logger.With("component", "identity", "identity", opts.Name),

		certified: make(chan struct{}),
	}, nil
}

// Run certifies at once, then renews each certificate after Refresh of its
// lifetime, until ctx ends; then it returns nil. A failed attempt is retried
// after a jittered backoff of 1 s to 30 s while the current certificate, if
// any, stays in use. Run may be called only once.
func (i *Identity) Run(ctx context.Context) error {
	if !i.running.CompareAndSwap(false, true) {
		return fmt.Errorf("identity %s: Run called more than once", i.opts.Name)
	}
	bo := backoff{min: MinRetryBackoff, max: MaxRetryBackoff}
	for {
		wait, err := i.certify(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			wait = bo.next()
			i.mu.Lock()
			i.lastErr = err
			i.mu.Unlock()
			attrs := []any{"error", err, "retry_in", wait}
			if c := i.cert.Load(); c != nil {
				attrs = append(attrs, "current_valid_until", c.Leaf.NotAfter)
			}
			i.log.Warn("certification failed", attrs...)
		} else {
			bo.reset()
		}
		if !i.wait(ctx, wait) {
			return nil
		}
	}
}

// certify obtains one certificate with a new key, installs it, and returns
// when to renew it.
func (i *Identity) certify(ctx context.Context) (time.Duration, error) {
	token, err := i.opts.Token()
	if err != nil {
		return 0, fmt.Errorf("read the identity token: %w", err)
	}
	key, csr, err := certs.NewCSR(i.opts.Name)
	if err != nil {
		return 0, err
	}
	cctx, cancel := context.WithTimeout(ctx, certifyTimeout)
	defer cancel()
	resp, err := i.client.Certify(cctx, &meshv1.CertifyRequest{
		Identity:                  i.opts.Name,
		Token:                     token,
		CertificateSigningRequest: csr,
	})
	if err != nil {
		return 0, fmt.Errorf("certify %s: %w", i.opts.Name, err)
	}
	cert, err := certs.Certificate(key, resp, i.roots, i.opts.Name)
	if err != nil {
		return 0, fmt.Errorf("the identity service answered with an unusable certificate: %w", err)
	}
	received := i.opts.Clock()
	notAfter := cert.Leaf.NotAfter
	i.cert.Store(cert)
	i.certifiedOnce.Do(func() { close(i.certified) })
	i.mu.Lock()
	i.lastErr = nil
	i.mu.Unlock()
	refresh := max(time.Duration(float64(notAfter.Sub(received))*i.opts.Refresh), minRefresh)
	i.log.Info("certified", "valid_until", notAfter, "refresh_in", refresh)
	if i.opts.OnCertified != nil {
		i.opts.OnCertified(notAfter)
	}
	return refresh, nil
}

// wait waits d on the configured time line, and reports whether it ran out
// before ctx ended.
func (i *Identity) wait(ctx context.Context, d time.Duration) bool {
	if i.opts.After == nil {
		return sleep(ctx, d)
	}
	select {
	case <-ctx.Done():
		return false
	case <-i.opts.After(d):
		return true
	}
}

// Ready reports whether the proxy holds an unexpired certificate, and if not
// why: "not certified yet", or that the certificate expired, followed by the
// last error.
func (i *Identity) Ready() (bool, string) {
	c := i.cert.Load()
	i.mu.Lock()
	lastErr := i.lastErr
	i.mu.Unlock()
	var reason string
	switch {
	case c == nil:
		reason = "not certified yet"
	case !i.opts.Clock().Before(c.Leaf.NotAfter):
		reason = fmt.Sprintf("certificate for %s expired at %s", i.opts.Name, c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	default:
		return true, ""
	}
	if lastErr != nil {
		reason += ": " + lastErr.Error()
	}
	return false, reason
}

// Certificate returns the current certificate, nil before the first. It may
// have expired if renewals kept failing (Ready says so).
func (i *Identity) Certificate() *tls.Certificate { return i.cert.Load() }

// GetCertificate serves the current certificate for tls.Config.GetCertificate,
// so every handshake uses the latest one.
func (i *Identity) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return i.current()
}

// GetClientCertificate serves the current certificate for
// tls.Config.GetClientCertificate.
func (i *Identity) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return i.current()
}

func (i *Identity) current() (*tls.Certificate, error) {
	if c := i.cert.Load(); c != nil {
		return c, nil
	}
	return nil, fmt.Errorf("no certificate for identity %s yet", i.opts.Name)
}

// Roots returns the trust anchors. The pool is shared and must not be
// modified.
func (i *Identity) Roots() *x509.CertPool { return i.roots }

// Name returns the identity requested.
func (i *Identity) Name() string { return i.opts.Name }
