package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/sluicehq/sluice/mesh/api/certs"
	"github.com/sluicehq/sluice/proxy/config"
	"github.com/sluicehq/sluice/proxy/detect"
	"github.com/sluicehq/sluice/proxy/dispatch"
	"github.com/sluicehq/sluice/proxy/metrics"
	"github.com/sluicehq/sluice/proxy/origdst"
	"github.com/sluicehq/sluice/proxy/policy"
)

// Inbound authorization counters, as Linkerd's proxy names them.
const (
	metricHTTPAuthzAllow = "inbound_http_authz_allow_total"
	metricHTTPAuthzDeny  = "inbound_http_authz_deny_total"
	metricTCPAuthzAllow  = "inbound_tcp_authz_allow_total"
	metricTCPAuthzDeny   = "inbound_tcp_authz_deny_total"
)

// enforcedPolicy is the inbound policy in force, with its decision counters
// looked up without locks or allocation.
type enforcedPolicy struct {
	srv policy.Server
	// fromControlPlane says the control plane sent it: a configuration reload
	// does not replace it with the configured default.
	fromControlPlane bool
	http, tcp        authzCounters
}

// authzCounters count one protocol's decisions under one policy.
type authzCounters struct {
	allow map[string]*metrics.Counter // by authorization name ("audit" too)
	deny  *metrics.Counter
	// probe counts the probe requests the policy would deny (HTTP only; nil
	// when no probes were configured as the policy was enforced).
	probe *metrics.Counter
}

// newEnforcedPolicy prepares srv for enforcement, creating its counters.
func (p *Proxy) newEnforcedPolicy(srv policy.Server, fromControlPlane bool) *enforcedPolicy {
	ep := &enforcedPolicy{srv: srv, fromControlPlane: fromControlPlane}
	ep.http = p.authzCounters(&srv, metricHTTPAuthzAllow, metricHTTPAuthzDeny, "HTTP requests")
	ep.tcp = p.authzCounters(&srv, metricTCPAuthzAllow, metricTCPAuthzDeny, "TCP connections")
	if ps := p.probes.Load(); ps != nil && len(*ps) > 0 {
		ep.http.probe = p.registry.Counter(metricHTTPAuthzAllow, "Inbound HTTP requests allowed by the inbound policy.", probeLabels(&srv))
	}
	return ep
}

func (p *Proxy) authzCounters(srv *policy.Server, allowName, denyName, what string) authzCounters {
	srvLabels := metrics.Labels{{Name: "srv_kind", Value: srv.Kind}, {Name: "srv_name", Value: srv.Name}}
	c := authzCounters{
		allow: map[string]*metrics.Counter{},
		deny:  p.registry.Counter(denyName, "Inbound "+what+" denied by the inbound policy.", srvLabels),
	}
	add := func(name, kind string) {
		if _, ok := c.allow[name]; ok {
			return
		}
		l := append(append(metrics.Labels{}, srvLabels...),
			metrics.Label{Name: "authz_kind", Value: kind}, metrics.Label{Name: "authz_name", Value: name})
		c.allow[name] = p.registry.Counter(allowName, "Inbound "+what+" allowed by the inbound policy.", l)
	}
	for _, az := range srv.Authorizations {
		add(az.Name, az.Kind)
	}
	if srv.Audit {
		add(policy.Audit, policy.KindDefault)
	}
	return c
}

// maxPortPolicies bounds the ports whose policy is watched besides the app
// port's: each is a stream to the control plane, and the ports a pod is
// reached on are few. Further ports get the default policy.
const maxPortPolicies = 64

// portPolicy is the policy in force on one port other than the app port.
type portPolicy struct {
	cur atomic.Pointer[enforcedPolicy]
}

// setPolicy enforces a policy the control plane sent for the app port.
func (p *Proxy) setPolicy(srv policy.Server) {
	p.policy.Store(p.newEnforcedPolicy(srv, true))
	p.log.Info("inbound policy updated", "server", srv.Name, "kind", srv.Kind, "authorizations", len(srv.Authorizations), "audit", srv.Audit)
}

// setDefaultPolicy installs the configured default policy on every port
// whose policy the control plane has not sent (yet).
func (p *Proxy) setDefaultPolicy(def *enforcedPolicy) {
	p.defaultPolicy.Store(def)
	replace := func(ptr *atomic.Pointer[enforcedPolicy]) {
		if cur := ptr.Load(); cur == nil || !cur.fromControlPlane {
			// The control plane's policy, once received, outranks the default.
			ptr.CompareAndSwap(cur, def)
		}
	}
	replace(&p.policy)
	p.portPolicies.Range(func(_, v any) bool {
		replace(&v.(*portPolicy).cur)
		return true
	})
}

// policyFor returns the inbound policy of a port of the workload: the app
// port's (also for port 0, unknown), or the port's own, whose watch starts
// with the first connection to it.
func (p *Proxy) policyFor(port int) *enforcedPolicy {
	if port == 0 || port == int(p.appPort.Load()) {
		return p.policy.Load()
	}
	if v, ok := p.portPolicies.Load(port); ok {
		return v.(*portPolicy).cur.Load()
	}
	def := p.defaultPolicy.Load()
	if p.portPolicyCount.Load() >= maxPortPolicies {
		return def
	}
	pp := &portPolicy{}
	pp.cur.Store(def)
	if v, loaded := p.portPolicies.LoadOrStore(port, pp); loaded {
		return v.(*portPolicy).cur.Load()
	}
	p.portPolicyCount.Add(1)
	if p.mesh != nil {
		p.mesh.watchPolicy(port, func(srv policy.Server) {
			pp.cur.Store(p.newEnforcedPolicy(srv, true))
			p.log.Info("inbound policy updated", "port", port, "server", srv.Name, "kind", srv.Kind, "authorizations", len(srv.Authorizations), "audit", srv.Audit)
		})
	}
	return def
}

// inboundOriginalDst returns where a redirected inbound connection goes,
// when inbound.originalDst is on: the port it was sent to, on loopback (as
// Linkerd does: the application listens there too, and the iptables rules
// send the proxy's own connections to its pod's address to the inbound
// side, so forwarding to that address would loop). It returns false for a
// connection made to the inbound listener itself.
func (p *Proxy) inboundOriginalDst(c net.Conn) (netip.AddrPort, bool) {
	if !p.inboundOrigDst.Load() {
		return netip.AddrPort{}, false
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, false
	}
	orig, err := origdst.Lookup(tc)
	if err != nil {
		if !errors.Is(err, origdst.ErrNotRedirected) {
			p.log.Debug("no original destination for an inbound connection", "remote", c.RemoteAddr().String(), "err", err)
		}
		return netip.AddrPort{}, false
	}
	lo := netip.IPv6Loopback()
	if orig.Addr().Unmap().Is4() {
		lo = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	return netip.AddrPortFrom(lo, orig.Port()), true
}

// authorize checks a client of a port against its inbound policy and counts
// the decision; it returns the decision's reason when denied. HTTP requests
// go through authorizeRequest instead, which knows the application's probes.
func (p *Proxy) authorize(port int, tcpConn bool, client netip.Addr, identity string) (allowed bool, reason string) {
	ep := p.policyFor(port)
	c := &ep.http
	if tcpConn {
		c = &ep.tcp
	}
	d := ep.srv.Authorize(client, identity)
	if !d.Allowed {
		c.deny.Inc()
		return false, d.Reason
	}
	c.countAllowed(p, d)
	return true, ""
}

// countAllowed counts a decision that allowed a client.
func (c *authzCounters) countAllowed(p *Proxy, d policy.Decision) {
	if n := c.allow[d.Authorization]; n != nil {
		n.Inc()
	}
	if d.Audit {
		p.log.Debug("inbound policy audit: allowed a client the policy would deny", "reason", d.Reason)
	}
}

// countProbe counts a probe request allowed although the policy denies it.
// The counter exists when the policy was enforced with probes configured;
// probes configured later create it on first use.
func (c *authzCounters) countProbe(p *Proxy, srv *policy.Server) {
	if c.probe != nil {
		c.probe.Inc()
		return
	}
	p.registry.Counter(metricHTTPAuthzAllow, "Inbound HTTP requests allowed by the inbound policy.", probeLabels(srv)).Inc()
}

// probeLabels labels the allow counter of probe requests under srv.
func probeLabels(srv *policy.Server) metrics.Labels {
	return metrics.Labels{
		{Name: "srv_kind", Value: srv.Kind}, {Name: "srv_name", Value: srv.Name},
		{Name: "authz_kind", Value: authzKindProbe}, {Name: "authz_name", Value: authzNameProbe},
	}
}

// authorizingResolver checks every request of an inbound connection against
// the inbound policy before resolving it: a denied request gets 403 (gRPC
// PERMISSION_DENIED) naming why. It is a dispatch.RequestResolver, so the
// HTTP servers hand it the method and path that probe requests are known by.
type authorizingResolver struct {
	p        *Proxy
	next     dispatch.Resolver
	port     int
	client   netip.Addr
	identity string
}

// authorizingResolver wraps next with the inbound policy of a port for one
// client.
func (p *Proxy) authorizingResolver(next dispatch.Resolver, port int, client netip.Addr, identity string) dispatch.Resolver {
	return &authorizingResolver{p: p, next: next, port: port, client: client, identity: identity}
}

// Resolve authorizes a request known only by its authority: no probe.
func (r *authorizingResolver) Resolve(authority string) (*dispatch.Service, *dispatch.Error) {
	return r.ResolveRequest("", "", authority)
}

// ResolveRequest authorizes a request, letting the application's probes
// through, then resolves it with the wrapped resolver.
func (r *authorizingResolver) ResolveRequest(method, path, authority string) (*dispatch.Service, *dispatch.Error) {
	if ok, reason := r.p.authorizeRequest(r.port, method, path, r.client, r.identity); !ok {
		return nil, &dispatch.Error{Status: 403, GRPC: dispatch.GRPCPermissionDenied, Reason: reason}
	}
	return dispatch.ResolveRequest(r.next, method, path, authority)
}

// authorizeRequest checks an HTTP request against its port's inbound policy
// and counts the decision. A request the policy denies is still allowed
// when it is one of the application's probes (inbound.probes): the kubelet
// sends them in plain text, without a mesh identity.
func (p *Proxy) authorizeRequest(port int, method, path string, client netip.Addr, identity string) (allowed bool, reason string) {
	ep := p.policyFor(port)
	d := ep.srv.Authorize(client, identity)
	if d.Allowed {
		ep.http.countAllowed(p, d)
		return true, ""
	}
	if ps := p.probes.Load(); ps != nil && ps.matches(port, method, path) {
		ep.http.countProbe(p, &ep.srv)
		return true, ""
	}
	ep.http.deny.Inc()
	return false, d.Reason
}

// authzKindProbe and authzNameProbe label the requests allowed because they
// are the application's probes, as Linkerd names its default probe
// authorization.
const (
	authzKindProbe = "probe"
	authzNameProbe = "probe"
)

// probeSet is the application's HTTP probe endpoints, from inbound.probes.
type probeSet []config.Probe

// matches reports whether a request is a probe: GET or HEAD for a probe's
// path (without the query) on that probe's port.
func (ps probeSet) matches(port int, method, path string) bool {
	if method != "GET" && method != "HEAD" {
		return false
	}
	for _, pr := range ps {
		if pr.Port == port && pr.Path == path {
			return true
		}
	}
	return false
}

// inboundPeer returns the metrics Peer of an inbound connection: nil for
// plain text (the dispatcher's static labels say so), tls="true" with the
// client_id of an authenticated client, or tls="true" alone.
func (p *Proxy) inboundPeer(isTLS bool, identity string) *dispatch.Peer {
	if !isTLS {
		return nil
	}
	if v, ok := p.peers.Load(identity); ok {
		return v.(*dispatch.Peer)
	}
	labels := metrics.Labels{{Name: "tls", Value: "true"}}
	if identity != "" {
		labels = append(labels, metrics.Label{Name: "client_id", Value: identity})
	}
	v, _ := p.peers.LoadOrStore(identity, dispatch.NewPeer(labels))
	return v.(*dispatch.Peer)
}

// tcpStatsFor returns the tcp_* handle for a direction and TLS peer: inbound
// keyed by client identity, outbound by server identity; "" without TLS.
func (p *Proxy) tcpStatsFor(direction string, isTLS bool, identity string) *metrics.TCPStats {
	if !isTLS {
		if direction == "inbound" {
			return p.tcpInbound
		}
		return p.tcpOutbound
	}
	key := direction + "\x00" + identity
	if v, ok := p.tcpTLS.Load(key); ok {
		return v.(*metrics.TCPStats)
	}
	labels := metrics.Labels{{Name: "tls", Value: "true"}}
	if identity != "" {
		name := "client_id"
		if direction == "outbound" {
			name = "server_id"
		}
		labels = append(labels, metrics.Label{Name: name, Value: identity})
	}
	v, _ := p.tcpTLS.LoadOrStore(key, p.registry.TCP(direction, labels))
	return v.(*metrics.TCPStats)
}

// connIdentity is the verified mesh identity of the client of an inbound
// connection: the peer certificate's of the TLS connection under c, if any.
// It is the protocol servers' ClientID hook.
func connIdentity(c net.Conn) string {
	for {
		switch x := c.(type) {
		case *tls.Conn:
			return certs.PeerIdentity(x.ConnectionState())
		case *detect.Conn:
			c = x.Raw()
		default:
			return ""
		}
	}
}

// isTLSClientHello reports whether a connection's first bytes are a TLS
// handshake record (a ClientHello): content type 22, version 3.x.
func isTLSClientHello(b []byte) bool {
	return len(b) >= 2 && b[0] == 0x16 && b[1] == 0x03
}

// terminateTLS completes the server side of a mesh TLS handshake on c. It
// returns the decrypted connection, the client's verified identity ("" when it
// presented no certificate) and the ALPN protocol agreed.
func (p *Proxy) terminateTLS(ctx context.Context, c net.Conn) (*tls.Conn, string, string, error) {
	tc := tls.Server(c, p.mesh.serverTLS)
	hctx, cancel := context.WithTimeout(ctx, tlsHandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return nil, "", "", err
	}
	cs := tc.ConnectionState()
	return tc, certs.PeerIdentity(cs), cs.NegotiatedProtocol, nil
}

// remoteIP is the client address of c, unmapped; the zero Addr if unknown.
func remoteIP(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}
