package identity

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/mesh/api/certs"
	"github.com/sluicehq/sluice/mesh/api/meshv1"
)

const apiID = "api.shop.serviceaccount.identity.sluice.cluster.local"

// authFunc adapts a function to Authenticator.
type authFunc func(ctx context.Context, identity string, token []byte) error

func (f authFunc) Authenticate(ctx context.Context, identity string, token []byte) error {
	return f(ctx, identity, token)
}

// serve runs an Identity server on 127.0.0.1 and returns a client for it.
func serve(t *testing.T, srv *Server) meshv1.IdentityClient {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	meshv1.RegisterIdentityServer(gs, srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = gs.Serve(ln)
	}()
	conn, err := grpc.NewClient("passthrough:///"+ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		gs.Stop()
		<-done
	})
	return meshv1.NewIdentityClient(conn)
}

func csrDER(t *testing.T, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func genKey(t *testing.T, curve elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestCertify(t *testing.T) {
	// The clock starts at the real time so that certs.Certificate, which
	// verifies at the real time, accepts what was issued.
	start := time.Now().Truncate(time.Second)
	clk := newClock(start)
	ca, _ := newTestCA(t, clk)
	var tokens StaticTokens
	webToken, err := tokens.Issue(webID)
	if err != nil {
		t.Fatal(err)
	}
	client := serve(t, NewServer(ca, &tokens, 0))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("good", func(t *testing.T) {
		key, csr, err := certs.NewCSR(webID)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Certify(ctx, &meshv1.CertifyRequest{Identity: webID, Token: webToken, CertificateSigningRequest: csr})
		if err != nil {
			t.Fatalf("Certify: %v", err)
		}
		cert, err := certs.Certificate(key, resp, ca.TrustAnchors(), webID)
		if err != nil {
			t.Fatalf("the answer does not make a mesh certificate: %v", err)
		}
		if got := cert.Leaf.NotAfter.Sub(start); got != DefaultLeafLifetime {
			t.Errorf("leaf lifetime %v, want %v", got, DefaultLeafLifetime)
		}
		if !resp.GetValidUntil().AsTime().Equal(cert.Leaf.NotAfter) {
			t.Errorf("valid_until %v differs from the leaf's NotAfter %v", resp.GetValidUntil().AsTime(), cert.Leaf.NotAfter)
		}
		if len(resp.GetIntermediateCertificates()) != 1 || !bytes.Equal(resp.GetIntermediateCertificates()[0], ca.Issuer().Raw) {
			t.Error("intermediates are not the issuer")
		}
		if err := certs.VerifyPeer(ca.TrustAnchors(), apiID)(cert.Certificate, nil); err == nil {
			t.Error("the leaf passes as another identity")
		}
	})

	t.Run("capped by the issuer", func(t *testing.T) {
		at := ca.Issuer().NotAfter.Add(-time.Hour)
		clk.Set(at)
		defer clk.Set(start)
		_, csr, _ := certs.NewCSR(webID)
		resp, err := client.Certify(ctx, &meshv1.CertifyRequest{Identity: webID, Token: webToken, CertificateSigningRequest: csr})
		if err != nil {
			t.Fatalf("Certify: %v", err)
		}
		leaf, err := x509.ParseCertificate(resp.GetLeafCertificate())
		if err != nil {
			t.Fatal(err)
		}
		if !leaf.NotAfter.Equal(ca.Issuer().NotAfter) {
			t.Errorf("leaf expires %v, after or before the issuer's %v", leaf.NotAfter, ca.Issuer().NotAfter)
		}
		inter := x509.NewCertPool()
		inter.AddCert(ca.Issuer())
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.TrustAnchors(), Intermediates: inter, CurrentTime: at, DNSName: webID}); err != nil {
			t.Errorf("capped leaf does not verify: %v", err)
		}
	})

	p256 := genKey(t, elliptic.P256())
	goodCSR := csrDER(t, p256, csrTemplate(webID, webID))
	badSig := bytes.Clone(goodCSR)
	badSig[len(badSig)-1] ^= 0xff
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	withExtras := csrTemplate("", webID)
	withExtras.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	withExtras.URIs = []*url.URL{{Scheme: "spiffe", Host: "cluster.local", Path: "/ns/shop/sa/web"}}
	withExtras.EmailAddresses = []string{"web@shop"}

	tests := []struct {
		name     string
		req      *meshv1.CertifyRequest
		at       func() time.Time // clock during the call; nil: start
		code     codes.Code
		contains []string
	}{
		{"no identity", &meshv1.CertifyRequest{Token: webToken, CertificateSigningRequest: goodCSR},
			nil, codes.InvalidArgument, []string{"identity is required"}},
		{"identity not a DNS name", &meshv1.CertifyRequest{Identity: "Web.shop", Token: webToken, CertificateSigningRequest: goodCSR},
			nil, codes.InvalidArgument, []string{`identity "Web.shop" is not a DNS name`, "'W'"}},
		{"wrong token", &meshv1.CertifyRequest{Identity: webID, Token: []byte("guess"), CertificateSigningRequest: goodCSR},
			nil, codes.Unauthenticated, []string{`token for identity "` + webID + `" is not valid`, "not the bootstrap token"}},
		{"no token", &meshv1.CertifyRequest{Identity: webID, CertificateSigningRequest: goodCSR},
			nil, codes.Unauthenticated, []string{"token is empty"}},
		{"identity without a token", &meshv1.CertifyRequest{Identity: apiID, Token: webToken, CertificateSigningRequest: csrDER(t, p256, csrTemplate("", apiID))},
			nil, codes.Unauthenticated, []string{`token for identity "` + apiID + `" is not valid`, "no bootstrap token is registered"}},
		{"CSR for another identity", &meshv1.CertifyRequest{Identity: webID, Token: webToken, CertificateSigningRequest: csrDER(t, p256, csrTemplate(apiID, apiID))},
			nil, codes.InvalidArgument, []string{`single DNS SAN "` + webID + `"`, `common name is "` + apiID + `"`, `DNS SANs are ["` + apiID + `"]`}},
		{"CSR with an extra DNS SAN", &meshv1.CertifyRequest{Identity: webID, Token: webToken, CertificateSigningRequest: csrDER(t, p256, csrTemplate("", webID, "evil.example.com"))},
			nil, codes.InvalidArgument, []string{`DNS SANs are ["` + webID + `" "evil.example.com"]`}},
		{"CSR with IP, URI and email SANs", &meshv1.CertifyRequest{Identity: webID, Token: webToken, CertificateSigningRequest: csrDER(t, p256, withExtras)},
			nil, codes.InvalidArgument, []string{"IP SANs [127.0.0.1]", `URI SANs ["spiffe://cluster.local/ns/shop/sa/web"]`, `email SANs ["web@shop"]`}},
		{"CSR without SAN", &meshv1.CertifyRequest{Identity: webID, Token: webToken, CertificateSigningRequest: csrDER(t, p256, csrTemplate(webID))},
			nil, codes.InvalidArgument, []string{"DNS SANs are []"}},
		{"P-384 key", &meshv1.CertifyRequest{Identity: webID, Token: webToken, CertificateSigningRequest: csrDER(t, genKey(t, elliptic.P384()), csrTemplate("", webID))},
			nil, codes.InvalidArgument, []string{"key is ECDSA P-384, want ECDSA P-256"}},
		{"RSA key", &meshv1.CertifyRequest{Identity: webID, Token: webToken, CertificateSigningRequest: csrDER(t, rsaKey, csrTemplate("", webID))},
			nil, codes.InvalidArgument, []string{"key is RSA 1024, want ECDSA P-256"}},
		{"Ed25519 key", &meshv1.CertifyRequest{Identity: webID, Token: webToken, CertificateSigningRequest: csrDER(t, edKey, csrTemplate("", webID))},
			nil, codes.InvalidArgument, []string{"key is Ed25519, want ECDSA P-256"}},
		{"no CSR", &meshv1.CertifyRequest{Identity: webID, Token: webToken},
			nil, codes.InvalidArgument, []string{"certificate_signing_request is required"}},
		{"CSR not DER", &meshv1.CertifyRequest{Identity: webID, Token: webToken, CertificateSigningRequest: []byte("-----BEGIN CERTIFICATE REQUEST-----")},
			nil, codes.InvalidArgument, []string{"certificate_signing_request is not a DER PKCS#10 request"}},
		{"CSR badly signed", &meshv1.CertifyRequest{Identity: webID, Token: webToken, CertificateSigningRequest: badSig},
			nil, codes.InvalidArgument, []string{"certificate_signing_request signature does not verify"}},
		{"issuer expired", &meshv1.CertifyRequest{Identity: webID, Token: webToken, CertificateSigningRequest: goodCSR},
			func() time.Time { return ca.Issuer().NotAfter.Add(time.Second) }, codes.Unavailable, []string{"issuer", "expired at"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.at != nil {
				clk.Set(tt.at())
				defer clk.Set(start)
			}
			resp, err := client.Certify(ctx, tt.req)
			if err == nil {
				t.Fatalf("Certify succeeded (%d bytes of leaf); want %v", len(resp.GetLeafCertificate()), tt.code)
			}
			st := status.Convert(err)
			if st.Code() != tt.code {
				t.Errorf("code %v (%q), want %v", st.Code(), st.Message(), tt.code)
			}
			for _, c := range tt.contains {
				if !strings.Contains(st.Message(), c) {
					t.Errorf("message %q does not contain %q", st.Message(), c)
				}
			}
		})
	}
}

func TestCertifyAuthenticatorErrors(t *testing.T) {
	clk := newClock(time.Now())
	ca, _ := newTestCA(t, clk)
	tests := []struct {
		err  error
		code codes.Code
	}{
		{fmt.Errorf("tokenreview: %w: connection refused", ErrAuthenticatorUnavailable), codes.Unavailable},
		{fmt.Errorf("tokenreview: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{fmt.Errorf("%w: audience mismatch", ErrInvalidToken), codes.Unauthenticated},
		{fmt.Errorf("anything else"), codes.Unauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			auth := authFunc(func(context.Context, string, []byte) error { return tt.err })
			client := serve(t, NewServer(ca, auth, time.Hour))
			_, csr, _ := certs.NewCSR(webID)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			_, err := client.Certify(ctx, &meshv1.CertifyRequest{Identity: webID, Token: []byte("t"), CertificateSigningRequest: csr})
			st := status.Convert(err)
			if st.Code() != tt.code || !strings.Contains(st.Message(), tt.err.Error()) {
				t.Errorf("got %v %q, want %v with the authenticator's reason", st.Code(), st.Message(), tt.code)
			}
		})
	}
}

// TestCertifyDuringRotation issues certificates while the issuer is being
// replaced: every leaf must verify against the anchors with the chain it came
// with, whichever issuer signed it.
func TestCertifyDuringRotation(t *testing.T) {
	clk := newClock(time.Now())
	ca, _ := newTestCA(t, clk)
	var tokens StaticTokens
	tok, _ := tokens.Issue(webID)
	client := serve(t, NewServer(ca, &tokens, time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				key, csr, err := certs.NewCSR(webID)
				if err != nil {
					errs <- err
					return
				}
				resp, err := client.Certify(ctx, &meshv1.CertifyRequest{Identity: webID, Token: tok, CertificateSigningRequest: csr})
				if err != nil {
					errs <- err
					return
				}
				if _, err := certs.Certificate(key, resp, ca.TrustAnchors(), webID); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for range 5 {
		if err := ca.generateIssuer("cluster.local"); err != nil {
			t.Fatal(err)
		}
		if err := ca.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
