package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/sluicehq/sluice/mesh/api/certs"
	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/proxy/config"
	"github.com/sluicehq/sluice/proxy/controlplane"
	"github.com/sluicehq/sluice/proxy/metrics"
	"github.com/sluicehq/sluice/proxy/policy"
	"github.com/sluicehq/sluice/proxy/tcp"
)

// ALPN protocol names of mesh TLS between proxies. The client proxy names
// what the stream carries, so that the server proxy need not detect it.
const (
	// ALPNHTTP2 carries HTTP/2: the mesh's multiplexed connection.
	ALPNHTTP2 = "h2"
	// ALPNHTTP1 carries HTTP/1, for requests that upgrade the connection.
	ALPNHTTP1 = "http/1.1"
	// ALPNOpaque carries opaque TCP for the application: no detection.
	ALPNOpaque = "sluice.opaque"
)

// tlsHandshakeTimeout bounds an inbound TLS handshake.
const tlsHandshakeTimeout = 10 * time.Second

// meshClient is the proxy's membership of the mesh: its connection to the
// control plane, its certificate (Identity), the services it discovers
// (Discovery) and its inbound policy (PolicyWatch). It exists only when the
// configuration has a controlPlane section.
type meshClient struct {
	p         *Proxy
	cfg       config.ControlPlane
	log       *slog.Logger
	conn      *grpc.ClientConn
	idConn    *grpc.ClientConn // the identity API's, when not at conn's address
	identity  *controlplane.Identity
	discovery *controlplane.Discovery
	policy    *controlplane.PolicyWatch // nil without an inbound listener

	// watchMu guards the policy watches of further ports (watchPolicy):
	// those asked for before run are started by run, none after it ends.
	watchMu      sync.Mutex
	watchCtx     context.Context
	watchPending []*controlplane.PolicyWatch
	watchClosed  bool
	watches      sync.WaitGroup
	serverTLS    *tls.Config
	synced       atomic.Bool // discovery delivered every first message once

	certRefreshes *metrics.Counter
	certExpiry    *metrics.Gauge

	// mu serialises table updates: the static table of the configuration
	// and the discovered one are merged into the outbound dispatcher.
	mu         sync.Mutex
	static     routetable.Table
	discovered *routetable.Table
	watched    map[string]bool

	// addrMu guards the addresses discovered on demand (discoverAddr), by
	// target "ip:port", with when each was last asked for.
	addrMu      sync.Mutex
	addrWatched map[string]time.Time
}

// On-demand discovery of the addresses outbound connections are sent to.
const (
	// maxAddrWatches bounds the addresses watched on demand: each is two
	// streams to the destination service. The least recently used goes.
	maxAddrWatches = 512
	// addrDiscoveryTimeout bounds how long a connection to a new address
	// waits for the destination service's answer before it is forwarded
	// as it is (Linkerd waits in the same way).
	addrDiscoveryTimeout = 3 * time.Second
)

// discoverAddr makes sure the destination service was asked about an
// address that outbound connections go to and no known service claims: the
// first connection to it waits (at most addrDiscoveryTimeout) for the
// answer, which is then in the outbound table; later ones do not wait. The
// answer for a Service's virtual address is that Service; for a pod's
// address it is a service of that pod alone, whose endpoint carries the
// pod's identity when it is meshed (so the connection goes out over mutual
// TLS); for any other address it is that no service has it.
func (m *meshClient) discoverAddr(ctx context.Context, addr netip.AddrPort) {
	target := addr.String()
	now := time.Now()
	m.addrMu.Lock()
	if _, ok := m.addrWatched[target]; ok {
		m.addrWatched[target] = now
		m.addrMu.Unlock()
		return
	}
	if m.addrWatched == nil {
		m.addrWatched = map[string]time.Time{}
	}
	if len(m.addrWatched) >= maxAddrWatches {
		oldest, at := "", now
		for t, used := range m.addrWatched {
			if used.Before(at) || oldest == "" {
				oldest, at = t, used
			}
		}
		delete(m.addrWatched, oldest)
		m.discovery.Unwatch(oldest)
	}
	m.addrWatched[target] = now
	m.discovery.Watch(target)
	m.addrMu.Unlock()

	wctx, cancel := context.WithTimeout(ctx, addrDiscoveryTimeout)
	defer cancel()
	if err := m.discovery.WaitTarget(wctx, target); err != nil {
		m.log.Debug("no answer from the destination service in time; forwarding as addressed", "target", target, "err", err)
		return
	}
	// The publisher installs tables a moment later: install this one now,
	// so that this connection is routed by it.
	m.onDiscovery(nil)
}

// newMeshClient prepares the control-plane clients; run starts them.
func newMeshClient(p *Proxy, cfg *config.Config) (*meshClient, error) {
	cp := *cfg.ControlPlane
	anchors, err := os.ReadFile(cp.TrustAnchors)
	if err != nil {
		return nil, fmt.Errorf("controlPlane.trustAnchors: %w", err)
	}
	roots, err := certs.ParseRoots(anchors)
	if err != nil {
		return nil, fmt.Errorf("controlPlane.trustAnchors %s: %w", cp.TrustAnchors, err)
	}
	// Identity answers clients without a certificate (how a proxy gets its
	// first one), over a connection of its own even at the same address:
	// the destination connection presents the proxy's certificate, which
	// the destination service requires.
	idCreds, err := controlplane.TransportCredentials(controlplane.TLSOptions{
		Service: "identity", Address: cp.IdentityAddr(), ServerName: cp.IdentityServerName(), Roots: roots,
	})
	if err != nil {
		return nil, fmt.Errorf("controlPlane: %w", err)
	}
	idConn, err := grpc.NewClient(cp.IdentityAddr(),
		grpc.WithTransportCredentials(idCreds),
		grpc.WithConnectParams(controlplane.ConnectParams()))
	if err != nil {
		return nil, fmt.Errorf("controlPlane.identityAddress %s: %w", cp.IdentityAddr(), err)
	}
	// The destination connection's credentials need the Identity for the
	// client certificate; the Identity is made below, before any dial.
	var ident atomic.Pointer[controlplane.Identity]
	dstCreds, err := controlplane.TransportCredentials(controlplane.TLSOptions{
		Service: "destination", Address: cp.Address, ServerName: cp.DestinationName, Roots: roots,
		GetClientCertificate: func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return ident.Load().GetClientCertificate(cri)
		},
	})
	if err != nil {
		idConn.Close()
		return nil, fmt.Errorf("controlPlane: %w", err)
	}
	conn, err := grpc.NewClient(cp.Address,
		grpc.WithTransportCredentials(dstCreds),
		grpc.WithConnectParams(controlplane.ConnectParams()))
	if err != nil {
		idConn.Close()
		return nil, fmt.Errorf("controlPlane.address %s: %w", cp.Address, err)
	}
	m := &meshClient{
		p:       p,
		cfg:     cp,
		log:     p.log.With("component", "mesh"),
		conn:    conn,
		watched: map[string]bool{},
		certRefreshes: p.registry.Counter("identity_cert_refreshes_total",
			"Certificates obtained from the identity service.", nil),
		certExpiry: p.registry.Gauge("identity_cert_expiration_timestamp_seconds",
			"When the proxy's current certificate expires, in seconds since the epoch.", nil),
	}
	m.idConn = idConn
	m.identity, err = controlplane.NewIdentity(controlplane.IdentityOptions{
		Conn: idConn,
		Name: cp.Identity,
		Token: func() ([]byte, error) {
			return os.ReadFile(cp.TokenFile)
		},
		TrustAnchorsPEM: anchors,
		Logger:          p.log,
		OnCertified: func(notAfter time.Time) {
			m.certRefreshes.Inc()
			m.certExpiry.Set(float64(notAfter.Unix()))
		},
	})
	if err != nil {
		m.closeConns()
		return nil, fmt.Errorf("controlPlane: %w", err)
	}
	ident.Store(m.identity)
	m.serverTLS = certs.ServerConfig(m.identity.Roots(), m.identity.GetCertificate)
	m.serverTLS.NextProtos = []string{ALPNHTTP2, ALPNHTTP1, ALPNOpaque}
	m.discovery = controlplane.NewDiscovery(controlplane.DiscoveryOptions{
		Conn:            conn,
		ClientNamespace: cp.Namespace,
		ClientIdentity:  cp.Identity,
		OnUpdate:        m.onDiscovery,
		Logger:          p.log,
	})
	if cfg.Inbound.Enabled() {
		if port := portOf(cfg.Inbound.App); port > 0 {
			m.policy, err = controlplane.NewPolicyWatch(controlplane.PolicyOptions{
				Conn:     conn,
				Workload: cp.Workload,
				Port:     port,
				OnUpdate: p.setPolicy,
				Logger:   p.log,
			})
			if err != nil {
				m.closeConns()
				return nil, fmt.Errorf("controlPlane: %w", err)
			}
		}
	}
	return m, nil
}

// run runs the identity, discovery and policy clients until ctx ends, then
// closes the connections to the control plane.
func (m *meshClient) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { _ = m.identity.Run(ctx) })
	// The destination service requires the proxy's certificate (mutual
	// TLS): discovery and policy start once there is one.
	certified := m.identity.WaitCertified(ctx, "discovery and inbound policy") == nil
	if certified {
		wg.Go(func() { _ = m.discovery.Run(ctx) })
	}
	wg.Go(func() {
		if !certified || m.discovery.WaitSynced(ctx) != nil {
			return
		}
		// The publisher hands tables over a moment later: install the synced
		// table now, so that a ready proxy routes to everything it watches.
		m.onDiscovery(nil)
		m.synced.Store(true)
		m.log.Info("discovery synced")
	})
	if m.policy != nil && certified {
		wg.Go(func() { _ = m.policy.Run(ctx) })
	}
	m.watchMu.Lock()
	m.watchCtx = ctx
	for _, w := range m.watchPending {
		m.watches.Go(func() { _ = w.Run(ctx) })
	}
	m.watchPending = nil
	m.watchMu.Unlock()
	wg.Wait()
	m.watchMu.Lock()
	m.watchClosed = true
	m.watchMu.Unlock()
	m.watches.Wait()
	m.closeConns()
}

// closeConns closes the connections to the control plane.
func (m *meshClient) closeConns() {
	m.conn.Close()
	if m.idConn != nil {
		m.idConn.Close()
	}
}

// watchPolicy keeps the inbound policy of another port of the workload
// current, calling onUpdate with each policy the control plane sends.
func (m *meshClient) watchPolicy(port int, onUpdate func(policy.Server)) {
	w, err := controlplane.NewPolicyWatch(controlplane.PolicyOptions{
		Conn: m.conn, Workload: m.cfg.Workload, Port: port, OnUpdate: onUpdate, Logger: m.log,
	})
	if err != nil {
		m.log.Warn("cannot watch the inbound policy of a port; its default policy stays in force", "port", port, "err", err)
		return
	}
	m.watchMu.Lock()
	defer m.watchMu.Unlock()
	switch {
	case m.watchClosed:
	case m.watchCtx == nil:
		m.watchPending = append(m.watchPending, w)
	default:
		ctx := m.watchCtx
		m.watches.Go(func() { _ = w.Run(ctx) })
	}
}

// ready reports whether the proxy is certified and has discovered what it
// watches.
func (m *meshClient) ready() (bool, string) {
	if ok, why := m.identity.Ready(); !ok {
		return false, "identity: " + why
	}
	if !m.synced.Load() {
		return false, "waiting for the first discovery of the watched services"
	}
	return true, ""
}

// onDiscovery installs the discovered table, merged with the static one. It
// installs Discovery's current table rather than the one it is handed, which
// may be older than one installed since (see run), so that the last call
// always leaves the latest state in place.
func (m *meshClient) onDiscovery(*routetable.Table) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.discovery.Table()
	m.discovered = t
	if err := m.p.outbound.d.Update(merge(&m.static, t)); err != nil {
		m.log.Error("discovered routes rejected, keeping the previous ones", "err", err)
	}
}

// setStatic installs a configuration's table, merged with the discovered
// one, and watches the services its listeners name. Nothing changes on error.
func (m *meshClient) setStatic(cfg *config.Config) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.p.outbound.d.Update(merge(&cfg.Table, m.discovered)); err != nil {
		return err
	}
	m.static = cfg.Table
	want := map[string]bool{}
	for _, l := range cfg.Listeners {
		want[l.Service] = true
	}
	for _, s := range m.cfg.Watch {
		want[s] = true
	}
	for s := range want {
		if !m.watched[s] {
			m.discovery.Watch(s)
		}
	}
	m.addrMu.Lock()
	for s := range m.watched {
		if _, onDemand := m.addrWatched[s]; !want[s] && !onDemand {
			m.discovery.Unwatch(s)
		}
	}
	m.addrMu.Unlock()
	m.watched = want
	return nil
}

// merge returns the static services joined by the discovered ones; a
// discovered service replaces a static one with the same key.
func merge(static, discovered *routetable.Table) *routetable.Table {
	if discovered == nil || len(discovered.Services) == 0 {
		return static
	}
	out := &routetable.Table{Services: slices.Clone(discovered.Services)}
	seen := make(map[string]bool, len(discovered.Services))
	for i := range discovered.Services {
		seen[discovered.Services[i].Key()] = true
	}
	for _, s := range static.Services {
		if !seen[s.Key()] {
			out.Services = append(out.Services, s)
		}
	}
	return out
}

// clientTLS is the TLS configuration for a connection to a peer that must
// present identity, offering the ALPN protocol proto.
func (m *meshClient) clientTLS(identity, proto string) *tls.Config {
	cfg := certs.ClientConfig(m.identity.Roots(), identity, m.identity.GetClientCertificate)
	if proto != "" {
		cfg.NextProtos = []string{proto}
	}
	return cfg
}

// handshake completes a mutual TLS handshake on c with a peer that must
// present identity, offering the ALPN protocol proto, within ctx. On failure c
// is closed and the error names the expected and presented identities when
// the peer is the wrong one.
func (m *meshClient) handshake(ctx context.Context, c net.Conn, identity, proto string) (net.Conn, error) {
	tc := tls.Client(c, m.clientTLS(identity, proto))
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return tc, nil
}

// dialHTTP1 is the HTTP/1 pool's DialTLS: TCP, then mutual TLS for HTTP/1.
func (m *meshClient) dialHTTP1(ctx context.Context, addr, identity string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return m.handshake(ctx, c, identity, ALPNHTTP1)
}

// dialOpaque connects to a meshed endpoint for an opaque TCP stream: TCP
// within timeout, then mutual TLS announcing ALPNOpaque.
func (m *meshClient) dialOpaque(ctx context.Context, addr, identity string, timeout time.Duration) (net.Conn, error) {
	c, err := tcp.Dial(ctx, addr, timeout)
	if err != nil {
		return nil, err
	}
	hctx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		hctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	tc, err := m.handshake(hctx, c, identity, ALPNOpaque)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	return tc, nil
}

// policyFor returns the default policy a configuration names.
func policyFor(cfg *config.Config) (policy.Server, error) {
	return policy.Default(cfg.Inbound.Policy(), nil)
}
