package cptls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/mesh/api/certs"
	"github.com/sluicehq/sluice/mesh/api/meshv1"
	"github.com/sluicehq/sluice/mesh/identity"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recordingDestination answers Get with an empty update, recording the
// caller's identity, then ends the stream.
type recordingDestination struct {
	meshv1.UnimplementedDestinationServer
	caller chan string
}

func (d *recordingDestination) GetEndpoints(req *meshv1.GetDestination, s grpc.ServerStreamingServer[meshv1.EndpointUpdate]) error {
	d.caller <- ClientIdentity(s.Context())
	return nil
}

func newCA(t *testing.T) *identity.CA {
	t.Helper()
	ca, err := identity.LoadOrCreate(t.TempDir(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func selfCert(t *testing.T, ca *identity.CA, name string) *identity.SelfCertificate {
	t.Helper()
	s, err := identity.NewSelfCertificate(ca, name, 0)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRequireClientCertificate(t *testing.T) {
	ca := newCA(t)
	serverName := identity.ControlPlaneName(identity.DestinationServiceAccount, "", "")
	srvCert := selfCert(t, ca, serverName)
	gs := grpc.NewServer(ServerOptions(ca.TrustAnchors(), srvCert.GetCertificate, MeshOnlyServices...)...)
	dst := &recordingDestination{caller: make(chan string, 1)}
	meshv1.RegisterDestinationServer(gs, dst)
	healthpb.RegisterHealthServer(gs, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(ln) }()
	t.Cleanup(func() { gs.Stop(); <-done })

	proxyName := identity.Name("web", "shop", "", "")
	proxyCert := selfCert(t, ca, proxyName)
	strangerCert := selfCert(t, newCA(t), proxyName)
	clientCert := func(s *identity.SelfCertificate) func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if s == nil {
			return func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tls.Certificate{}, nil }
		}
		return func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return s.Current() }
	}

	tests := []struct {
		name       string
		cert       *identity.SelfCertificate
		wantHealth bool
		wantCode   codes.Code // of GetEndpoints
		wantMsg    string
	}{
		{name: "meshed proxy", cert: proxyCert, wantHealth: true, wantCode: codes.OK},
		{name: "no client certificate", cert: nil, wantHealth: true, wantCode: codes.Unauthenticated, wantMsg: "sluice.mesh.v1.Destination requires mutual TLS"},
		{name: "certificate of another mesh", cert: strangerCert, wantHealth: false, wantCode: codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := certs.ClientConfig(ca.TrustAnchors(), serverName, clientCert(tt.cert))
			conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			if got := err == nil; got != tt.wantHealth {
				t.Errorf("health check: err = %v, want success %v", err, tt.wantHealth)
			}
			stream, err := meshv1.NewDestinationClient(conn).GetEndpoints(ctx, &meshv1.GetDestination{})
			if err == nil {
				_, err = stream.Recv()
			}
			if errors.Is(err, io.EOF) {
				err = nil // io.EOF: the server ended the stream
			}
			if got := status.Code(err); got != tt.wantCode {
				t.Fatalf("GetEndpoints: %v, want code %s", err, tt.wantCode)
			}
			if tt.wantMsg != "" && !strings.Contains(status.Convert(err).Message(), tt.wantMsg) {
				t.Errorf("GetEndpoints error %q does not say %q", status.Convert(err).Message(), tt.wantMsg)
			}
			if tt.wantCode == codes.OK {
				if got := <-dst.caller; got != proxyName {
					t.Errorf("the server saw client identity %q, want %q", got, proxyName)
				}
			}
		})
	}
}

func TestClientIdentityWithoutTLS(t *testing.T) {
	if got := ClientIdentity(context.Background()); got != "" {
		t.Errorf("ClientIdentity without a peer = %q", got)
	}
	var _ *x509.CertPool
}
