package http2

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/sluicehq/sluice/mesh/api/certs"
	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/proxy/dispatch"
)

// testCA issues mesh certificates for tests.
type testCA struct {
	t     *testing.T
	cert  *x509.Certificate
	key   *ecdsa.PrivateKey
	roots *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "root.test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	return &testCA{t: t, cert: cert, key: key, roots: roots}
}

// leaf issues a certificate for a mesh identity.
func (ca *testCA) leaf(identity string) *tls.Certificate {
	ca.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		ca.t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: identity},
		DNSNames:     []string{identity},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// startMeshH2 serves h over HTTP/2 on mutual TLS as identity, and records the
// identities of its clients.
func startMeshH2(t *testing.T, ca *testCA, identity string, h http.Handler) string {
	t.Helper()
	cert := ca.leaf(identity)
	cfg := certs.ServerConfig(ca.roots, func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert, nil })
	cfg.NextProtos = []string{"h2"}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, TLSConfig: cfg, ErrorLog: log.New(io.Discard, "", 0)}
	if err := http2.ConfigureServer(srv, nil); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// startBoth serves h over HTTP/1.1 and cleartext HTTP/2 on loopback.
func startBoth(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &protos}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// TestPoolMutualTLS: RoundTripTo verifies the peer's identity, presents the
// client's certificate, and keeps connections apart per identity; a peer with
// another identity fails the request before anything is sent, with an error
// naming both identities.
func TestPoolMutualTLS(t *testing.T) {
	ca := newTestCA(t)
	const webID = "web.shop.serviceaccount.identity.sluice.cluster.local"
	const frontID = "frontend.shop.serviceaccount.identity.sluice.cluster.local"
	var mu sync.Mutex
	var clients []string
	addr := startMeshH2(t, ca, webID, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		clients = append(clients, certs.PeerIdentity(*r.TLS))
		mu.Unlock()
		io.WriteString(w, r.Proto)
	}))
	clientCert := ca.leaf(frontID)
	p := &Pool{ClientTLS: func(identity string) *tls.Config {
		return certs.ClientConfig(ca.roots, identity, func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return clientCert, nil })
	}}
	defer p.Close()
	do := func(identity string) (string, error) {
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		resp, err := p.RoundTripTo(req, identity)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	for range 3 {
		if got, err := do(webID); err != nil || got != "HTTP/2.0" {
			t.Fatalf("request to %s: %q, %v", webID, got, err)
		}
	}
	if got := p.openConns(); got != 1 {
		t.Errorf("%d connections for 3 requests, want 1", got)
	}
	mu.Lock()
	if len(clients) != 3 || clients[0] != frontID {
		t.Errorf("the server saw clients %q, want %s", clients, frontID)
	}
	mu.Unlock()

	const billingID = "billing.shop.serviceaccount.identity.sluice.cluster.local"
	_, err := do(billingID)
	var ce *ConnectError
	if !errors.As(err, &ce) || !p.Unprocessed(err) {
		t.Fatalf("request expecting %s: %v, want a ConnectError", billingID, err)
	}
	if msg := err.Error(); !strings.Contains(msg, `expected "`+billingID+`"`) || !strings.Contains(msg, webID) {
		t.Errorf("error %q does not name the expected and presented identities", msg)
	}
	mu.Lock()
	if len(clients) != 3 {
		t.Errorf("a request reached the wrong peer")
	}
	mu.Unlock()
}

// TestDowngradeAndClientID: a request marked sluice-orig-proto reaches its
// endpoint as HTTP/1.1 without the marker, and the connection's client
// identity replaces whatever sluice-client-id the client sent; unmarked
// requests stay HTTP/2.
func TestDowngradeAndClientID(t *testing.T) {
	type seen struct {
		proto, clientID, orig, agent string
		hasAgent                     bool
	}
	got := make(chan seen, 10)
	backend := startBoth(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, hasAgent := r.Header["User-Agent"]
		got <- seen{r.Proto, strings.Join(r.Header.Values("Sluice-Client-Id"), ","), r.Header.Get("Sluice-Orig-Proto"), r.Header.Get("User-Agent"), hasAgent}
		w.Header().Set("Connection", "keep-alive")
		io.WriteString(w, "echo:"+string(body))
	}))
	down := &http.Transport{TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
	defer down.CloseIdleConnections()
	const id = "frontend.shop.serviceaccount.identity.sluice.cluster.local"
	p := startProxy(t, []routetable.Service{service("web", []string{backend})}, func(_ *dispatch.Options, s *Server) {
		s.Downgrade = down
		s.ClientID = func(net.Conn) string { return id }
	})
	client := h2cClient(t)
	cases := []struct {
		name   string
		header map[string]string
		body   string
		want   seen
	}{
		// No User-Agent: the downgrade must not add Go's.
		{"marked", map[string]string{"Sluice-Orig-Proto": "HTTP/1.1", "Sluice-Client-Id": "forged", "User-Agent": ""}, "", seen{proto: "HTTP/1.1", clientID: id}},
		{"marked with a body of unknown length", map[string]string{"Sluice-Orig-Proto": "HTTP/1.1", "User-Agent": "curl/8"}, "hello", seen{proto: "HTTP/1.1", clientID: id, agent: "curl/8", hasAgent: true}},
		{"unmarked", map[string]string{"Sluice-Client-Id": "forged", "User-Agent": "curl/8"}, "", seen{proto: "HTTP/2.0", clientID: id, agent: "curl/8", hasAgent: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.body != "" {
				body = io.MultiReader(strings.NewReader(tc.body)) // unknown length
			}
			req, _ := http.NewRequest("POST", "http://"+p.addr+"/x", body)
			for k, v := range tc.header {
				req.Header[http.CanonicalHeaderKey(k)] = []string{v}
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "echo:"+tc.body {
				t.Fatalf("got %d %q", resp.StatusCode, b)
			}
			if s := <-got; s != tc.want {
				t.Errorf("backend saw %+v, want %+v", s, tc.want)
			}
		})
	}
}

// TestDowngradeConnectError: a downgraded request to an endpoint that
// refuses connections is retried on another endpoint.
func TestDowngradeConnectError(t *testing.T) {
	backend := startBoth(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) }))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	down := &http.Transport{TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
	defer down.CloseIdleConnections()
	p := startProxy(t, []routetable.Service{service("web", []string{dead, backend})}, func(_ *dispatch.Options, s *Server) { s.Downgrade = down })
	client := h2cClient(t)
	for range 10 {
		req, _ := http.NewRequestWithContext(context.Background(), "GET", "http://"+p.addr+"/", nil)
		req.Header.Set("Sluice-Orig-Proto", "HTTP/1.1")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "HTTP/1.1" {
			t.Fatalf("got %d %q (%s)", resp.StatusCode, b, resp.Header.Get(dispatch.HeaderName))
		}
	}
}
