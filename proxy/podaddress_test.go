package proxy

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/sluicehq/sluice/mesh/api/meshv1"
	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/mesh/cptls"
	"github.com/sluicehq/sluice/mesh/destination"
	meshidentity "github.com/sluicehq/sluice/mesh/identity"
	"github.com/sluicehq/sluice/mesh/localstore"
	"github.com/sluicehq/sluice/proxy/config"
	"github.com/sluicehq/sluice/proxy/policy"
)

// testControlPlaneName is the mesh identity the test control plane's
// certificate names.
const testControlPlaneName = "sluice-up.sluice.serviceaccount.identity.sluice.cluster.local"

// testControlPlane is the identity and destination APIs over a local store,
// on a loopback port over TLS (mutual for discovery, as `sluice up` serves
// them), until the test ends.
type testControlPlane struct {
	addr    string
	store   *localstore.Store
	tokens  *meshidentity.StaticTokens
	anchors string // the trust anchors' file
}

func startTestControlPlane(t *testing.T) *testControlPlane {
	t.Helper()
	dir := t.TempDir()
	ca, err := meshidentity.LoadOrCreate(filepath.Join(dir, "ca"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cp := &testControlPlane{
		addr:    ln.Addr().String(),
		store:   localstore.New(),
		tokens:  &meshidentity.StaticTokens{},
		anchors: filepath.Join(dir, "anchors.pem"),
	}
	if err := os.WriteFile(cp.anchors, ca.TrustAnchorPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	self, err := meshidentity.NewSelfCertificate(ca, testControlPlaneName, 0)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(cptls.ServerOptions(ca.TrustAnchors(), self.GetCertificate, cptls.MeshOnlyServices...)...)
	dest := destination.NewServer(cp.store, slog.New(slog.DiscardHandler))
	meshv1.RegisterDestinationServer(srv, dest)
	meshv1.RegisterIdentityServer(srv, meshidentity.NewServer(ca, cp.tokens, 0))
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { dest.Close(); srv.Stop(); <-done })
	return cp
}

// meshMember is the control-plane section of a proxy with identity id.
func (cp *testControlPlane) meshMember(t *testing.T, id string) *config.ControlPlane {
	t.Helper()
	token, err := cp.tokens.Issue(id)
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, token, 0o600); err != nil {
		t.Fatal(err)
	}
	return &config.ControlPlane{Address: cp.addr, DestinationName: testControlPlaneName, Identity: id, TokenFile: tokenFile, TrustAnchors: cp.anchors, Namespace: "shop"}
}

// meshPair starts two ready proxies of the mesh: a server with identity
// serverID whose inbound side (all-authenticated) fronts an echo app, and a
// client with identity clientID with no listeners.
func (cp *testControlPlane) meshPair(t *testing.T, serverID, clientID string) (server, client *Proxy) {
	t.Helper()
	server = startProxy(t, &config.Config{
		Admin:        "127.0.0.1:0",
		Inbound:      config.Inbound{Listen: "127.0.0.1:0", App: startEcho(t), DefaultPolicy: policy.AllAuthenticated},
		Outbound:     config.Outbound{Listen: config.Off},
		ControlPlane: cp.meshMember(t, serverID),
	})
	client = startProxy(t, &config.Config{
		Admin:        "127.0.0.1:0",
		Inbound:      config.Inbound{Listen: config.Off},
		Outbound:     config.Outbound{Listen: config.Off},
		ControlPlane: cp.meshMember(t, clientID),
	})
	for _, p := range []*Proxy{server, client} {
		waitFor(t, func() bool { ok, _ := p.Ready(); return ok })
	}
	return server, client
}

// TestPodAddressOverMutualTLS: an outbound connection to a pod's address,
// which no Service claims, is resolved on demand as the outbound listener
// does (discoverAddr, then the original destination's resolver) into the
// pod itself with its identity, and goes out over mutual TLS: the server's
// proxy, whose policy admits only authenticated clients, lets it in and
// tells the application who called. A pod without identity is reached in
// plain text, as is an address nobody has.
func TestPodAddressOverMutualTLS(t *testing.T) {
	const (
		clientID = "web.shop.serviceaccount.identity.sluice.cluster.local"
		serverID = "db.shop.serviceaccount.identity.sluice.cluster.local"
	)
	cp := startTestControlPlane(t)
	server, client := cp.meshPair(t, serverID, clientID)
	// The pod addresses: the server proxy's inbound listener (where
	// iptables would have sent the connection) as a meshed pod, and an
	// application reached directly as an unmeshed one.
	meshedAddr := netip.MustParseAddrPort(server.Addr("inbound"))
	plainAddr := netip.MustParseAddrPort(startEcho(t))
	cp.store.SetReplica(localstore.Replica{Namespace: "shop", Workload: "db", Pod: "db-0", Address: meshedAddr.String(), Identity: serverID, Ready: true})
	cp.store.SetReplica(localstore.Replica{Namespace: "shop", Workload: "legacy", Pod: "legacy-0", Address: plainAddr.String(), Ready: true})
	unknownAddr := netip.MustParseAddrPort(startEcho(t))

	tests := []struct {
		name   string
		addr   netip.AddrPort
		key    string // of the service the address resolves to; "" for none
		answer string // what the application says it was told of its client
		series map[string]string
	}{
		{
			name: "meshed pod", addr: meshedAddr, key: fmt.Sprintf("127-0-0-1.shop.pod:%d", meshedAddr.Port()),
			answer: fmt.Sprintf("ids=[%q]", clientID),
			series: map[string]string{"direction": "outbound", "tls": "true", "server_id": serverID},
		},
		{
			name: "unmeshed pod", addr: plainAddr, key: fmt.Sprintf("127-0-0-1.shop.pod:%d", plainAddr.Port()),
			answer: "ids=[]",
			series: map[string]string{"direction": "outbound", "tls": "no_identity", "no_tls_reason": "not_provided_by_service_discovery", "dst_pod": "legacy-0"},
		},
		{
			name: "address of nobody", addr: unknownAddr,
			answer: "ids=[]",
			series: map[string]string{"direction": "outbound", "tls": "no_identity", "authority": unknownAddr.String()},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a failure guard
			defer cancel()
			client.mesh.discoverAddr(ctx, tt.addr)
			svc := client.outbound.d.LookupAddr(tt.addr)
			switch {
			case tt.key == "" && svc != nil:
				t.Fatalf("%s resolved to %s, want no service", tt.addr, svc.Key())
			case tt.key != "" && (svc == nil || svc.Key() != tt.key):
				t.Fatalf("%s resolved to %v, want %s", tt.addr, svc, tt.key)
			}
			before := counterValue(client, "request_total", tt.series)
			status, body := requestThrough(t, ctx, client, tt.addr)
			if status != http.StatusOK || body != tt.answer {
				t.Errorf("GET through the client proxy to %s: %d %q, want 200 %q", tt.addr, status, body, tt.answer)
			}
			if got := counterValue(client, "request_total", tt.series) - before; got != 1 {
				t.Errorf("request_total%v grew by %v, want 1", tt.series, got)
			}
		})
	}
}

// TestOpaquePodAddressOverMutualTLS: a pod address whose port the pod
// forwards opaquely is an opaque service; a connection to it is tunnelled
// over mutual TLS with the pod's identity, as the outbound listener's
// opaque path does.
func TestOpaquePodAddressOverMutualTLS(t *testing.T) {
	const (
		clientID = "web.shop.serviceaccount.identity.sluice.cluster.local"
		serverID = "cache.shop.serviceaccount.identity.sluice.cluster.local"
	)
	cp := startTestControlPlane(t)
	server, client := cp.meshPair(t, serverID, clientID)
	addr := netip.MustParseAddrPort(server.Addr("inbound"))
	cp.store.SetReplica(localstore.Replica{
		Namespace: "shop", Workload: "cache", Pod: "cache-0", Address: addr.String(), Identity: serverID, Ready: true,
		Protocol: routetable.ProtocolOpaque,
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a failure guard
	defer cancel()
	client.mesh.discoverAddr(ctx, addr)
	svc := client.outbound.d.LookupAddr(addr)
	if svc == nil || svc.Spec.Protocol != routetable.ProtocolOpaque {
		t.Fatalf("%s resolved to %v, want the pod's opaque service", addr, svc)
	}
	tlsOpened := map[string]string{"direction": "outbound", "tls": "true", "server_id": serverID}
	before := counterValue(client, "tcp_open_total", tlsOpened)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan struct{})
	go func() {
		defer close(served)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		client.forwardOpaque(ctx, "outbound", c, svc, false, "")
	}()
	defer func() { <-served }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second)) // a failure guard
	if _, err := fmt.Fprintf(c, "GET /echo HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", addr); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("response through the opaque tunnel: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("through the opaque tunnel: %d %q, want 200 from the application", resp.StatusCode, resp.Header.Get("Sluice-Proxy-Error"))
	}
	if got := counterValue(client, "tcp_open_total", tlsOpened) - before; got != 1 {
		t.Errorf("tcp_open_total%v grew by %v, want 1", tlsOpened, got)
	}
}

// requestThrough sends one HTTP/1 request on a connection the client
// proxy's outbound side serves as one intercepted on its way to orig.
func requestThrough(t *testing.T, ctx context.Context, p *Proxy, orig netip.AddrPort) (int, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan struct{})
	go func() {
		defer close(served)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		p.outbound.h1.ServeConn(ctx, c, p.outbound.d.ForOriginalDst(orig))
	}()
	defer func() { <-served }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second)) // a failure guard
	if _, err := fmt.Fprintf(c, "GET /echo HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", orig); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("response from the client proxy: %v", err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	if _, err := bufio.NewReader(resp.Body).WriteTo(&b); err != nil {
		t.Fatalf("response body: %v", err)
	}
	if reason := resp.Header.Get("Sluice-Proxy-Error"); reason != "" {
		t.Logf("sluice-proxy-error: %s", reason)
	}
	return resp.StatusCode, b.String()
}
