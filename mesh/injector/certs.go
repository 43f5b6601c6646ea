package injector

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultCertificatePollInterval is how often CertificateFiles.Watch reads
// the certificate files. The kubelet updates a mounted Secret within about
// a minute of its change, so a few seconds more go unnoticed.
const DefaultCertificatePollInterval = 5 * time.Second

// CertificateFiles is a TLS serving certificate read from a certificate and
// a key file (PEM), reloaded when their content changes: Watch polls them,
// and GetCertificate hands every new TLS connection the latest certificate.
//
// Polling the content, rather than watching for file events, sees every way
// the files change, including the kubelet's update of a mounted Secret (it
// writes a new directory and swaps a symbolic link to it). A pair that does
// not load (the key does not match the certificate, a file half-written)
// leaves the previous certificate in use until a later poll loads one.
type CertificateFiles struct {
	certFile, keyFile string
	log               *slog.Logger

	current atomic.Pointer[tls.Certificate]

	mu                sync.Mutex // serializes Reload
	lastCert, lastKey []byte
}

// LoadCertificateFiles reads the certificate in certFile and its key in
// keyFile. Its error names the file that could not be read, or both when
// they are not a matching pair. log receives a line per reload; nil
// discards them.
func LoadCertificateFiles(certFile, keyFile string, log *slog.Logger) (*CertificateFiles, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &CertificateFiles{certFile: certFile, keyFile: keyFile, log: log}
	if _, err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload reads the files again and, if their content changed and is a valid
// pair, serves the new certificate from now on. changed reports whether it
// did; on error the previous certificate stays.
func (c *CertificateFiles) Reload() (changed bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	certPEM, err := os.ReadFile(c.certFile)
	if err != nil {
		return false, fmt.Errorf("reading the serving certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(c.keyFile)
	if err != nil {
		return false, fmt.Errorf("reading the serving certificate's key: %w", err)
	}
	if c.current.Load() != nil && bytes.Equal(certPEM, c.lastCert) && bytes.Equal(keyPEM, c.lastKey) {
		return false, nil
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return false, fmt.Errorf("serving certificate %s with key %s: %w", c.certFile, c.keyFile, err)
	}
	c.current.Store(&cert)
	c.lastCert, c.lastKey = certPEM, keyPEM
	attrs := []any{"certFile", c.certFile}
	if leaf := cert.Leaf; leaf != nil {
		attrs = append(attrs, "subject", leaf.Subject.String(), "dnsNames", leaf.DNSNames, "notAfter", leaf.NotAfter)
	}
	c.log.Info("serving certificate loaded", attrs...)
	return true, nil
}

// GetCertificate returns the current certificate; it is a
// tls.Config.GetCertificate.
func (c *CertificateFiles) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cert := c.current.Load()
	if cert == nil {
		return nil, errors.New("no serving certificate loaded")
	}
	return cert, nil
}

// Loaded reports whether a certificate is being served.
func (c *CertificateFiles) Loaded() bool { return c.current.Load() != nil }

// Watch reloads the files every interval (DefaultCertificatePollInterval
// when not positive) until ctx ends. A failed reload is logged, and the
// previous certificate stays in use.
func (c *CertificateFiles) Watch(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultCertificatePollInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	lastErr := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_, err := c.Reload()
		switch {
		case err == nil:
			lastErr = ""
		case err.Error() != lastErr: // once per distinct problem, not every poll
			lastErr = err.Error()
			c.log.Warn("serving certificate not reloaded, the previous one stays in use", "err", err)
		}
	}
}
