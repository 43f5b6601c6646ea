package proxy

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/mesh/api/meshv1"
	"github.com/sluicehq/sluice/mesh/cptls"
	"github.com/sluicehq/sluice/mesh/identity"
	"github.com/sluicehq/sluice/proxy/config"
)

// recordingIdentity is an identity API that records who asked and refuses
// every request (the proxy retries).
type recordingIdentity struct {
	meshv1.UnimplementedIdentityServer
	asked chan string
}

func (r *recordingIdentity) Certify(_ context.Context, req *meshv1.CertifyRequest) (*meshv1.CertifyResponse, error) {
	select {
	case r.asked <- req.GetIdentity():
	default:
	}
	return nil, status.Error(codes.Unavailable, "test: not issuing")
}

// startIdentityAPI serves a recordingIdentity on a new loopback port, over
// TLS with a certificate for name from ca.
func startIdentityAPI(t *testing.T, ca *identity.CA, name string) (string, *recordingIdentity) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	self, err := identity.NewSelfCertificate(ca, name, 0)
	if err != nil {
		t.Fatal(err)
	}
	r := &recordingIdentity{asked: make(chan string, 1)}
	srv := grpc.NewServer(cptls.ServerOptions(ca.TrustAnchors(), self.GetCertificate)...)
	meshv1.RegisterIdentityServer(srv, r)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String(), r
}

// TestIdentityAddress: the proxy asks for its certificate at
// controlPlane.identityAddress when it is set, and at controlPlane.address
// when it is not, over TLS verified against the trust anchors and
// identityName (destinationName when identityName is empty).
func TestIdentityAddress(t *testing.T) {
	const id = "web.shop.serviceaccount.identity.sluice.cluster.local"
	dir := t.TempDir()
	ca, err := identity.LoadOrCreate(filepath.Join(dir, "ca"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	const dstName, idName = "cp.test", "identity.test"
	anchors := filepath.Join(dir, "anchors.pem")
	if err := os.WriteFile(anchors, ca.TrustAnchorPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("t"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		separate bool
	}{
		{"at address", false},
		{"at identityAddress", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mainAddr, atMain := startIdentityAPI(t, ca, dstName)
			cp := &config.ControlPlane{Address: mainAddr, Identity: id, TokenFile: token, TrustAnchors: anchors, DestinationName: dstName}
			want, other := atMain, (*recordingIdentity)(nil)
			if tt.separate {
				idAddr, atID := startIdentityAPI(t, ca, idName)
				cp.IdentityAddress, cp.IdentityName = idAddr, idName
				want, other = atID, atMain
			}
			startProxy(t, &config.Config{
				Admin:        "127.0.0.1:0",
				Inbound:      config.Inbound{Listen: config.Off},
				Outbound:     config.Outbound{Listen: config.Off},
				ControlPlane: cp,
			})
			select {
			case got := <-want.asked:
				if got != id {
					t.Errorf("the proxy asked for %q, want %q", got, id)
				}
			case <-time.After(30 * time.Second): // a failure guard
				t.Fatal("the proxy never asked the identity API for a certificate")
			}
			if other != nil {
				select {
				case got := <-other.asked:
					t.Errorf("the proxy asked controlPlane.address for a certificate (%q) although identityAddress is set", got)
				default:
				}
			}
		})
	}
}
