package controlplane

import (
	"context"
	"crypto/tls"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/sluicehq/sluice/mesh/api/certs"
	"github.com/sluicehq/sluice/mesh/api/meshv1"
	"github.com/sluicehq/sluice/mesh/identity"
)

var identityServerName = identity.ControlPlaneName(identity.IdentityServiceAccount, "", "")

// tlsIdentityEnv is a real CA and identity server serving TLS with a
// certificate it issues itself, as the identity role does.
type tlsIdentityEnv struct {
	ca     *identity.CA
	tokens *identity.StaticTokens
	addr   string
}

func newTLSIdentityEnv(t *testing.T) *tlsIdentityEnv {
	t.Helper()
	ca, err := identity.LoadOrCreate(t.TempDir(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	self, err := identity.NewSelfCertificate(ca, identityServerName, 0)
	if err != nil {
		t.Fatal(err)
	}
	env := &tlsIdentityEnv{ca: ca, tokens: &identity.StaticTokens{}}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(certs.ServerConfig(ca.TrustAnchors(), self.GetCertificate))))
	meshv1.RegisterIdentityServer(gs, identity.NewServer(ca, env.tokens, 0))
	env.addr, _ = serve(t, gs, "127.0.0.1:0")
	return env
}

// dialTLS connects to a control-plane service over TLS.
func dialTLS(t *testing.T, o TLSOptions) *grpc.ClientConn {
	t.Helper()
	creds, err := TransportCredentials(o)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(o.Address, grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, MaxDelay: 200 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func TestIdentityOverTLS(t *testing.T) {
	env := newTLSIdentityEnv(t)
	other, err := identity.LoadOrCreate(t.TempDir(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		anchorsPEM []byte
		serverName string
		want       []string // in the reason not to be ready; nil: certified
	}{
		{name: "good", anchorsPEM: env.ca.TrustAnchorPEM(), serverName: identityServerName},
		{
			name: "wrong trust anchor", anchorsPEM: other.TrustAnchorPEM(), serverName: identityServerName,
			want: []string{"the identity service's certificate at " + env.addr + " is not signed by the configured trust anchors", "expected identity " + identityServerName},
		},
		{
			name: "wrong name", anchorsPEM: env.ca.TrustAnchorPEM(), serverName: "sluice-impostor.sluice.serviceaccount.identity.sluice.cluster.local",
			want: []string{"the identity service at " + env.addr + " presented identity", identityServerName, "expected sluice-impostor"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			roots, err := certs.ParseRoots(tt.anchorsPEM)
			if err != nil {
				t.Fatal(err)
			}
			conn := dialTLS(t, TLSOptions{Service: "identity", Address: env.addr, ServerName: tt.serverName, Roots: roots})
			name := identity.Name("web", "shop", "", "")
			tok, err := env.tokens.Issue(name)
			if err != nil {
				t.Fatal(err)
			}
			logs := &logRecorder{}
			id, err := NewIdentity(IdentityOptions{
				Conn: conn, Name: name, TrustAnchorsPEM: tt.anchorsPEM, Logger: logs.logger(),
				Token: func() ([]byte, error) { return tok, nil },
			})
			if err != nil {
				t.Fatal(err)
			}
			runInBackground(t, id.Run)
			if tt.want == nil {
				eventually(t, "certified over TLS", func() bool { ok, _ := id.Ready(); return ok })
				return
			}
			eventually(t, "the failure to be reported", func() bool {
				_, why := id.Ready()
				return strings.Contains(why, tt.want[0])
			})
			_, why := id.Ready()
			for _, w := range tt.want {
				if !strings.Contains(why, w) {
					t.Errorf("reason %q does not contain %q", why, w)
				}
			}
			if logs.count("certification failed", tt.want[0]) == 0 {
				t.Errorf("no log line says %q:\n%s", tt.want[0], logs)
			}
		})
	}
}

// TestClientCertificateAfterCertified checks that a connection made with
// the Identity's client certificate presents it (the destination service
// requires one), and that WaitCertified waits for it and says so.
func TestClientCertificateAfterCertified(t *testing.T) {
	env := newTLSIdentityEnv(t)
	roots := env.ca.TrustAnchors()

	// A server requiring a client certificate, recording who called.
	dstName := identity.ControlPlaneName(identity.DestinationServiceAccount, "", "")
	dstSelf, err := identity.NewSelfCertificate(env.ca, dstName, 0)
	if err != nil {
		t.Fatal(err)
	}
	cfg := certs.ServerConfig(roots, dstSelf.GetCertificate)
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	var caller atomic.Value
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)), grpc.UnaryInterceptor(
		func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if p, ok := peer.FromContext(ctx); ok {
				if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
					caller.Store(certs.PeerIdentity(ti.State))
				}
			}
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	dstAddr, _ := serve(t, gs, "127.0.0.1:0")

	name := identity.Name("web", "shop", "", "")
	var tok atomic.Pointer[[]byte]
	logs := &logRecorder{}
	id, err := NewIdentity(IdentityOptions{
		Conn: dialTLS(t, TLSOptions{Service: "identity", Address: env.addr, ServerName: identityServerName, Roots: roots}),
		Name: name, TrustAnchorsPEM: env.ca.TrustAnchorPEM(), Logger: logs.logger(),
		Token: func() ([]byte, error) {
			if p := tok.Load(); p != nil {
				return *p, nil
			}
			return []byte("not yet"), nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	waited := make(chan error, 1)
	go func() { waited <- id.WaitCertified(ctx, "discovery") }()
	eventually(t, "the waiting log line", func() bool { return logs.count("waiting for the first certificate before starting discovery") > 0 })
	runInBackground(t, id.Run)
	good, err := env.tokens.Issue(name)
	if err != nil {
		t.Fatal(err)
	}
	tok.Store(&good)
	if err := <-waited; err != nil {
		t.Fatalf("WaitCertified: %v", err)
	}

	conn := dialTLS(t, TLSOptions{Service: "destination", Address: dstAddr, ServerName: dstName, Roots: roots, GetClientCertificate: id.GetClientCertificate})
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health check over mutual TLS: %v", err)
	}
	if got := caller.Load(); got != name {
		t.Errorf("the server saw client identity %v, want %s", got, name)
	}

	// A canceled wait returns the context's error.
	other, err := NewIdentity(IdentityOptions{Conn: conn, Name: name, TrustAnchorsPEM: env.ca.TrustAnchorPEM(), Token: func() ([]byte, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	if err := other.WaitCertified(cctx, "discovery"); err == nil {
		t.Error("WaitCertified with a canceled context returned nil")
	}
}

func TestClientTLSConfigRejects(t *testing.T) {
	if _, err := ClientTLSConfig(TLSOptions{Service: "destination", Address: "x:1", Roots: nil, ServerName: "a.b"}); err == nil || !strings.Contains(err.Error(), "trust anchors") {
		t.Errorf("no roots: %v", err)
	}
	env := newTLSIdentityEnv(t)
	if _, err := ClientTLSConfig(TLSOptions{Service: "destination", Address: "x:1", Roots: env.ca.TrustAnchors()}); err == nil || !strings.Contains(err.Error(), "destination service at x:1") {
		t.Errorf("no server name: %v", err)
	}
}
