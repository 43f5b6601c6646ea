package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/mesh/api/meshv1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	webID = "web.shop.serviceaccount.identity.sluice.cluster.local"
	apiID = "api.shop.serviceaccount.identity.sluice.cluster.local"
)

// testCA is a root that signs an intermediate that signs leaves, as the
// identity service does.
type testCA struct {
	root, issuer       *x509.Certificate
	rootKey, issuerKey *ecdsa.PrivateKey
	roots              *x509.CertPool
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sign(t *testing.T, tmpl, parent *x509.Certificate, pub any, parentKey *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var serial int64

func caTemplate(name string) *x509.Certificate {
	serial++
	return &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	ca := &testCA{rootKey: newKey(t), issuerKey: newKey(t)}
	rt := caTemplate("root")
	ca.root = sign(t, rt, rt, &ca.rootKey.PublicKey, ca.rootKey)
	ca.issuer = sign(t, caTemplate("issuer"), ca.root, &ca.issuerKey.PublicKey, ca.rootKey)
	ca.roots = x509.NewCertPool()
	ca.roots.AddCert(ca.root)
	return ca
}

// leaf issues a mesh leaf for key naming dnsNames, valid from notBefore to notAfter.
func (ca *testCA) leaf(t *testing.T, key *ecdsa.PrivateKey, notBefore, notAfter time.Time, dnsNames ...string) *x509.Certificate {
	t.Helper()
	serial++
	return sign(t, &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		DNSNames:     dnsNames,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, ca.issuer, &key.PublicKey, ca.issuerKey)
}

func (ca *testCA) tlsCert(t *testing.T, id string) *tls.Certificate {
	t.Helper()
	key := newKey(t)
	l := ca.leaf(t, key, time.Now().Add(-time.Minute), time.Now().Add(time.Hour), id)
	return &tls.Certificate{Certificate: [][]byte{l.Raw, ca.issuer.Raw}, PrivateKey: key, Leaf: l}
}

func TestNewCSR(t *testing.T) {
	key, der, err := NewCSR(webID)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatalf("CSR does not parse: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Errorf("CSR signature: %v", err)
	}
	if len(csr.DNSNames) != 1 || csr.DNSNames[0] != webID || csr.Subject.CommonName != webID {
		t.Errorf("CSR names DNS %v, CN %q; want only %q", csr.DNSNames, csr.Subject.CommonName, webID)
	}
	if len(csr.IPAddresses)+len(csr.URIs)+len(csr.EmailAddresses) != 0 {
		t.Errorf("CSR has other SANs: %v %v %v", csr.IPAddresses, csr.URIs, csr.EmailAddresses)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() || !pub.Equal(&key.PublicKey) {
		t.Errorf("CSR key is %T, not the returned P-256 key", csr.PublicKey)
	}
	if _, _, err := NewCSR(""); err == nil {
		t.Error("NewCSR(\"\") succeeded")
	}
}

func TestParseRoots(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	good := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.root.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.root.Raw})...)
	tests := []struct {
		name    string
		pem     []byte
		wantErr string
	}{
		{"two anchors", good, ""},
		{"empty", nil, "no PEM certificate found"},
		{"not PEM", []byte("hello"), "no PEM certificate found"},
		{"a key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{1}}), `PEM block 1 is a "EC PRIVATE KEY"`},
		{"bad certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2}}), "certificate 1:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool, err := ParseRoots(tt.pem)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []*testCA{ca, other} {
				l := c.leaf(t, newKey(t), time.Now().Add(-time.Minute), time.Now().Add(time.Hour), webID)
				if err := verifyChain(pool, webID, []*x509.Certificate{l, c.issuer}, time.Time{}); err != nil {
					t.Errorf("leaf of a parsed anchor does not verify: %v", err)
				}
			}
		})
	}
}

func TestVerifyPeer(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	now := time.Now()
	key := newKey(t)
	good := ca.leaf(t, key, now.Add(-time.Minute), now.Add(time.Hour), webID)
	tests := []struct {
		name     string
		certs    []*x509.Certificate
		expected string
		wantErr  []string // all must appear; none means success
	}{
		{"good", []*x509.Certificate{good, ca.issuer}, webID, nil},
		{"case-insensitive", []*x509.Certificate{good, ca.issuer}, strings.ToUpper(webID), nil},
		{"any identity", []*x509.Certificate{good, ca.issuer}, "", nil},
		{"wrong identity", []*x509.Certificate{good, ca.issuer}, apiID, []string{`presented identity "` + webID + `"`, `expected "` + apiID + `"`}},
		{"no SAN", []*x509.Certificate{ca.leaf(t, key, now.Add(-time.Minute), now.Add(time.Hour)), ca.issuer}, webID, []string{"presented identity none", webID}},
		{"missing intermediate", []*x509.Certificate{good}, webID, []string{"does not verify against the trust anchors"}},
		{"other CA", []*x509.Certificate{other.leaf(t, key, now.Add(-time.Minute), now.Add(time.Hour), webID), other.issuer}, webID, []string{"does not verify against the trust anchors", webID}},
		{"expired", []*x509.Certificate{ca.leaf(t, key, now.Add(-2*time.Hour), now.Add(-time.Hour), webID), ca.issuer}, webID, []string{"does not verify", "expired"}},
		{"no certificate", nil, webID, []string{"presented no certificate", webID}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var raw [][]byte
			for _, c := range tt.certs {
				raw = append(raw, c.Raw)
			}
			err := VerifyPeer(ca.roots, tt.expected)(raw, nil)
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted; want an error containing %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	if err := VerifyPeer(ca.roots, webID)([][]byte{{1, 2, 3}}, nil); err == nil || !strings.Contains(err.Error(), "does not parse") {
		t.Errorf("garbage certificate: got %v", err)
	}
}

func TestCertificate(t *testing.T) {
	ca := newTestCA(t)
	now := time.Now()
	key := newKey(t)
	leaf := ca.leaf(t, key, now.Add(-time.Minute), now.Add(time.Hour), webID)
	resp := &meshv1.CertifyResponse{LeafCertificate: leaf.Raw, IntermediateCertificates: [][]byte{ca.issuer.Raw}}

	cert, err := Certificate(key, resp, ca.roots, webID)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.Certificate) != 2 || cert.Leaf == nil || cert.Leaf.SerialNumber.Cmp(leaf.SerialNumber) != 0 || cert.PrivateKey != key {
		t.Errorf("certificate is not leaf+issuer with our key: %+v", cert)
	}

	tests := []struct {
		name     string
		key      *ecdsa.PrivateKey
		resp     *meshv1.CertifyResponse
		identity string
		wantErr  string
	}{
		{"other key", newKey(t), resp, webID, "not for our key"},
		{"other identity", key, resp, apiID, "presented identity"},
		{"no intermediates", key, &meshv1.CertifyResponse{LeafCertificate: leaf.Raw}, webID, "does not verify"},
		{"bad leaf", key, &meshv1.CertifyResponse{LeafCertificate: []byte{1}}, webID, "leaf:"},
		{"bad intermediate", key, &meshv1.CertifyResponse{LeafCertificate: leaf.Raw, IntermediateCertificates: [][]byte{{1}}}, webID, "intermediate 0:"},
		{"nil response", key, nil, webID, "required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Certificate(tt.key, tt.resp, ca.roots, tt.identity)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// handshake runs one mesh TLS handshake over 127.0.0.1 and returns what each
// side saw and the client's error; a server-side failure fails the test
// unless wantServerErr.
func handshake(t *testing.T, server, client *tls.Config, wantServerErr bool) (tls.ConnectionState, tls.ConnectionState, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		cs  tls.ConnectionState
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		tc := tls.Server(c, server)
		if err := tc.HandshakeContext(ctx); err != nil {
			done <- result{err: err}
			return
		}
		// Wait for the client to finish with the connection.
		_, _ = io.Copy(io.Discard, tc)
		done <- result{cs: tc.ConnectionState()}
	}()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(raw, client)
	cerr := tc.HandshakeContext(ctx)
	ccs := tc.ConnectionState()
	raw.Close()
	r := <-done
	if (r.err != nil) != wantServerErr {
		t.Fatalf("server handshake error %v, want error: %v", r.err, wantServerErr)
	}
	return r.cs, ccs, cerr
}

func TestMeshTLS(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	serverCert := ca.tlsCert(t, apiID)
	clientCert := ca.tlsCert(t, webID)
	serve := ServerConfig(ca.roots, func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return serverCert, nil })
	withCert := func(c *tls.Certificate) func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return c, nil }
	}

	t.Run("mutual", func(t *testing.T) {
		scs, ccs, err := handshake(t, serve, ClientConfig(ca.roots, apiID, withCert(clientCert)), false)
		if err != nil {
			t.Fatal(err)
		}
		if got := PeerIdentity(scs); got != webID {
			t.Errorf("server sees client identity %q, want %q", got, webID)
		}
		if got := PeerIdentity(ccs); got != apiID {
			t.Errorf("client sees server identity %q, want %q", got, apiID)
		}
		if ccs.Version != tls.VersionTLS13 {
			t.Errorf("version %x, want TLS 1.3", ccs.Version)
		}
		if ccs.CurveID != tls.X25519MLKEM768 {
			t.Errorf("key exchange %v, want X25519MLKEM768", ccs.CurveID)
		}
	})
	t.Run("client without certificate", func(t *testing.T) {
		scs, _, err := handshake(t, serve, ClientConfig(ca.roots, apiID, withCert(&tls.Certificate{})), false)
		if err != nil {
			t.Fatal(err)
		}
		if got := PeerIdentity(scs); got != "" {
			t.Errorf("server sees identity %q for a client without certificate", got)
		}
	})
	t.Run("wrong server identity", func(t *testing.T) {
		_, _, err := handshake(t, serve, ClientConfig(ca.roots, webID, withCert(clientCert)), true)
		if err == nil || !strings.Contains(err.Error(), `presented identity "`+apiID+`", expected "`+webID+`"`) {
			t.Errorf("got %v, want an identity mismatch naming both", err)
		}
	})
	t.Run("server from another CA", func(t *testing.T) {
		_, _, err := handshake(t, serve, ClientConfig(other.roots, apiID, withCert(clientCert)), true)
		if err == nil || !strings.Contains(err.Error(), "does not verify against the trust anchors") {
			t.Errorf("got %v, want a trust failure", err)
		}
	})
	t.Run("client from another CA", func(t *testing.T) {
		// The server rejects it (handshake asserts that); in TLS 1.3 the
		// client may consider its side done before the alert arrives.
		handshake(t, serve, ClientConfig(ca.roots, apiID, withCert(other.tlsCert(t, webID))), true)
	})
	t.Run("TLS 1.2 refused", func(t *testing.T) {
		c := ClientConfig(ca.roots, apiID, withCert(clientCert))
		c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		if _, _, err := handshake(t, serve, c, true); err == nil {
			t.Error("a TLS 1.2 client completed a handshake")
		}
	})
}
