package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/sluicehq/sluice/mesh/api/certs"
)

// TLSOptions say how to reach one control-plane service over TLS.
type TLSOptions struct {
	// Service names the service in errors: "identity" or "destination".
	Service string
	// Address is the host:port dialled, for errors.
	Address string
	// ServerName is the mesh identity the server must present
	// ("sluice-identity.sluice.serviceaccount.identity.sluice.cluster.local").
	ServerName string
	// Roots are the trust anchors the server's certificate must chain to.
	Roots *x509.CertPool
	// GetClientCertificate, if set, supplies the client certificate (the
	// proxy's mesh certificate: Identity.GetClientCertificate). Without it
	// the client presents none, as a proxy does towards identity before it
	// holds a certificate.
	GetClientCertificate func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
}

// TransportCredentials returns gRPC credentials for a control-plane service:
// TLS 1.3 (mesh TLS's settings), the server's chain verified against the
// trust anchors and its identity checked against ServerName on every
// handshake. A failed check says which service at which address presented
// what, and what was expected.
func TransportCredentials(o TLSOptions) (credentials.TransportCredentials, error) {
	cfg, err := ClientTLSConfig(o)
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(cfg), nil
}

// ClientTLSConfig is the tls.Config behind TransportCredentials.
func ClientTLSConfig(o TLSOptions) (*tls.Config, error) {
	if o.ServerName == "" {
		return nil, fmt.Errorf("the %s service at %s: no identity to expect of its certificate", o.Service, o.Address)
	}
	if o.Roots == nil {
		return nil, fmt.Errorf("the %s service at %s: no trust anchors to verify its certificate against", o.Service, o.Address)
	}
	getCert := o.GetClientCertificate
	if getCert == nil {
		getCert = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tls.Certificate{}, nil }
	}
	cfg := certs.ClientConfig(o.Roots, o.ServerName, getCert)
	cfg.VerifyConnection = func(cs tls.ConnectionState) error { return verifyServer(o, cs.PeerCertificates) }
	return cfg, nil
}

// verifyServer checks a control-plane server's chain, then its name, with
// errors that tell the two apart.
func verifyServer(o TLSOptions, peer []*x509.Certificate) error {
	if len(peer) == 0 {
		return fmt.Errorf("the %s service at %s presented no certificate (expected identity %s)", o.Service, o.Address, o.ServerName)
	}
	if err := certs.VerifyChain(o.Roots, "", peer); err != nil {
		return fmt.Errorf("the %s service's certificate at %s is not signed by the configured trust anchors (expected identity %s): %w",
			o.Service, o.Address, o.ServerName, err)
	}
	if !slices.Contains(peer[0].DNSNames, o.ServerName) {
		return fmt.Errorf("the %s service at %s presented identity %q, expected %s",
			o.Service, o.Address, peer[0].DNSNames, o.ServerName)
	}
	return nil
}

// WaitCertified blocks until the Identity holds its first certificate, or
// ctx ends. While it waits it logs, every logEvery, that it does so and the
// last certification error: discovery over mutual TLS needs the
// certificate first.
func (i *Identity) WaitCertified(ctx context.Context, what string) error {
	const logEvery = 5 * time.Second
	if i.cert.Load() != nil {
		return nil
	}
	i.log.Info("waiting for the first certificate before starting " + what)
	t := time.NewTicker(logEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-i.certified:
			return nil
		case <-t.C:
			i.mu.Lock()
			lastErr := i.lastErr
			i.mu.Unlock()
			var attrs []any
			if lastErr != nil {
				attrs = append(attrs, "last_error", lastErr)
			}
			i.log.Warn("still waiting for the first certificate before starting "+what, attrs...)
		}
	}
}
