// Package proxy assembles the sidecar: it binds the inbound, outbound, explicit
// and admin listeners, detects each connection's protocol, hands HTTP/1 and
// HTTP/2 connections to their servers and opaque ones to the TCP forwarder, keeps
// the routing state current as configuration changes, and shuts down gracefully.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/proxy/admin"
	"github.com/sluicehq/sluice/proxy/config"
	"github.com/sluicehq/sluice/proxy/detect"
	"github.com/sluicehq/sluice/proxy/dispatch"
	"github.com/sluicehq/sluice/proxy/http1"
	"github.com/sluicehq/sluice/proxy/http2"
	"github.com/sluicehq/sluice/proxy/metrics"
	"github.com/sluicehq/sluice/proxy/origdst"
	"github.com/sluicehq/sluice/proxy/policy"
	"github.com/sluicehq/sluice/proxy/tcp"
)

// InboundServiceKey is the key of the service that stands for the local
// application on the inbound side.
const InboundServiceKey = "inbound.local:0"

// side is one direction's pipeline: a dispatcher and the protocol servers using it.
type side struct {
	d  *dispatch.Dispatcher
	h1 *http1.Server
	h2 *http2.Server
}

// Proxy is a running sidecar.
//
// With a controlPlane section in its configuration it is a mesh member: it
// obtains its certificate from the identity service, discovers the services
// its listeners (and controlPlane.watch) name, and takes its inbound policy
// from the control plane. It then speaks mutual TLS to every endpoint that
// has an identity (HTTP as HTTP/2, opaque TCP announced by ALPN), terminates
// the mesh TLS of its clients on the inbound side, and reports ready only
// once certified and synced. When the control plane goes away it keeps
// serving with what it last received.
type Proxy struct {
	log      *slog.Logger
	registry *metrics.Registry
	mesh     *meshClient // nil without a control plane

	mu       sync.Mutex
	cfg      *config.Config
	detectTO time.Duration
	opaque   detect.PortSet

	inbound, outbound side
	h1pool            *http1.Pool
	h2pool            *http2.Pool

	// listeners by address, so reloads add and remove explicit listeners.
	listeners map[string]*boundListener
	conns     sync.WaitGroup
	ctx       context.Context
	ready     chan struct{}

	tcpInbound  *metrics.TCPStats
	tcpOutbound *metrics.TCPStats
	tcpTLS      sync.Map // direction + "\x00" + identity -> *metrics.TCPStats

	// downgrade carries HTTP/1 requests that arrived over the mesh's HTTP/2
	// connection to the application as HTTP/1.
	downgrade *http.Transport

	policy atomic.Pointer[enforcedPolicy] // inbound policy of the app port (inbound.app's)
	// defaultPolicy is the configured default inbound policy.
	defaultPolicy atomic.Pointer[enforcedPolicy]
	// appPort is inbound.app's port: p.policy governs it (and port 0).
	appPort atomic.Int32
	// portPolicies holds the policies of the other ports that inbound
	// connections reach with inbound.originalDst: port -> *portPolicy.
	portPolicies    sync.Map
	portPolicyCount atomic.Int32
	inboundOrigDst  atomic.Bool
	peers           sync.Map // client identity -> *dispatch.Peer

	// probes are inbound.probes: requests the inbound policy lets through.
	probes atomic.Pointer[probeSet]

	detected sync.Map // detectKey -> *metrics.Counter
}

// boundListener is one accepting socket and how its connections are routed.
type boundListener struct {
	kind    string          // "inbound", "outbound", "service"
	connCtx context.Context // connections outlive their listener's removal
	service string          // for kind "service"
	ln      net.Listener
	cancel  context.CancelFunc
	done    chan struct{}
}

// New prepares a proxy from a validated configuration; Run starts it.
func New(cfg *config.Config, log *slog.Logger) (*Proxy, error) {
	if log == nil {
		log = slog.Default()
	}
	static := metrics.Labels{}
	for _, k := range slices.Sorted(maps.Keys(cfg.Labels)) {
		static = append(static, metrics.Label{Name: k, Value: cfg.Labels[k]})
	}
	reg := metrics.NewRegistry(static)
	p := &Proxy{
		log:       log,
		registry:  reg,
		listeners: map[string]*boundListener{},
		ready:     make(chan struct{}),
	}
	p.h1pool = &http1.Pool{ConnectTimeout: cfg.ConnectTimeout.D()}
	p.h2pool = &http2.Pool{ConnectTimeout: cfg.ConnectTimeout.D()}
	p.downgrade = &http.Transport{
		DialContext:         (&net.Dialer{Timeout: cfg.ConnectTimeout.D()}).DialContext,
		DisableCompression:  true, // a proxy passes encodings through untouched
		MaxIdleConnsPerHost: http1.DefaultMaxIdlePerHost,
		IdleConnTimeout:     config.DefaultHTTPIdleTimeout,
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{}, // HTTP/1 only
	}
	if cfg.ControlPlane != nil {
		m, err := newMeshClient(p, cfg)
		if err != nil {
			return nil, err
		}
		p.mesh = m
		p.h1pool.DialTLS = m.dialHTTP1
		p.h2pool.ClientTLS = func(identity string) *tls.Config { return m.clientTLS(identity, ALPNHTTP2) }
	}
	p.outbound = p.newSide("outbound", nil, p.outboundTLSLabels)
	p.inbound = p.newSide("inbound", metrics.Labels{{Name: "tls", Value: "no_identity"}, {Name: "no_tls_reason", Value: "no_tls_from_remote"}}, nil)
	p.inbound.h1.ClientID = connIdentity
	p.inbound.h2.ClientID = connIdentity
	p.inbound.h2.Downgrade = p.downgrade
	if p.mesh != nil {
		p.outbound.h1.Mesh = p.h2pool
	}
	p.tcpInbound = reg.TCP("inbound", nil)
	p.tcpOutbound = reg.TCP("outbound", nil)
	if err := p.apply(cfg); err != nil {
		if p.mesh != nil {
			p.mesh.conn.Close()
		}
		return nil, err
	}
	return p, nil
}

func (p *Proxy) newSide(direction string, static metrics.Labels, endpointLabels func(*routetable.Endpoint) metrics.Labels) side {
	opts := dispatch.Options{Direction: direction, Metrics: p.registry, Logger: p.log, StaticLabels: static, EndpointLabels: endpointLabels}
	// Inbound, the one endpoint is the application: its errors are its own
	// to answer, never a reason to stop sending it requests.
	opts.Balancer.NoBreaker = direction == "inbound"
	d := dispatch.New(opts)
	return side{
		d:  d,
		h1: &http1.Server{Dispatcher: d, Pool: p.h1pool, Logger: p.log},
		h2: &http2.Server{Dispatcher: d, Pool: p.h2pool, Logger: p.log},
	}
}

// Outbound TLS labels, as Linkerd's proxy writes them.
var (
	labelsNoIdentity = metrics.Labels{{Name: "tls", Value: "no_identity"}, {Name: "no_tls_reason", Value: "not_provided_by_service_discovery"}}
	labelsTLSOff     = metrics.Labels{{Name: "tls", Value: "disabled"}}
)

// outboundTLSLabels are the TLS labels of an outbound endpoint's series:
// tls="true" and server_id when the proxy speaks mutual TLS to it.
func (p *Proxy) outboundTLSLabels(ep *routetable.Endpoint) metrics.Labels {
	switch {
	case ep.Identity == "":
		return labelsNoIdentity
	case p.mesh == nil:
		return labelsTLSOff // an identity, but no certificate of our own
	}
	return metrics.Labels{{Name: "tls", Value: "true"}, {Name: "server_id", Value: ep.Identity}}
}

// Metrics is the proxy's metrics registry.
func (p *Proxy) Metrics() *metrics.Registry { return p.registry }

// Outbound is the outbound dispatcher (for tests and the control-plane client).
func (p *Proxy) Outbound() *dispatch.Dispatcher { return p.outbound.d }

// inboundTable is the one-service table that sends inbound traffic to the app.
func inboundTable(cfg *config.Config) *routetable.Table {
	if cfg.Inbound.App == "" {
		return &routetable.Table{}
	}
	return &routetable.Table{Services: []routetable.Service{{
		Name: "inbound", Namespace: "local", Port: 0,
		Protocol:  cfg.Inbound.Protocol,
		Endpoints: []routetable.Endpoint{{Address: cfg.Inbound.App}},
	}}}
}

// apply installs a configuration's routing state; on error nothing changes.
func (p *Proxy) apply(cfg *config.Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	def, err := policyFor(cfg)
	if err != nil {
		return fmt.Errorf("inbound.defaultPolicy: %w", err)
	}
	if p.mesh != nil {
		if err := p.mesh.setStatic(cfg); err != nil {
			return fmt.Errorf("outbound: %w", err)
		}
	} else if err := p.outbound.d.Update(&cfg.Table); err != nil {
		return fmt.Errorf("outbound: %w", err)
	}
	if err := p.inbound.d.Update(inboundTable(cfg)); err != nil {
		return fmt.Errorf("inbound: %w", err)
	}
	if len(cfg.Inbound.Probes) > 0 {
		ps := probeSet(slices.Clone(cfg.Inbound.Probes))
		p.probes.Store(&ps)
	} else {
		p.probes.Store(nil)
	}
	p.setDefaultPolicy(p.newEnforcedPolicy(def, false))
	p.appPort.Store(int32(portOf(cfg.Inbound.App)))
	p.inboundOrigDst.Store(cfg.Inbound.OriginalDst)
	ports := cfg.OpaquePorts
	set := detect.NewPortSet(ports...)
	p.mu.Lock()
	p.cfg = cfg
	p.detectTO = cfg.DetectTimeout.D()
	p.opaque = set
	p.mu.Unlock()
	return nil
}

// Reload applies a new configuration without dropping requests: routing state is
// swapped atomically and explicit listeners are added or removed to match.
// Changing the admin, inbound or outbound addresses needs a restart.
func (p *Proxy) Reload(cfg *config.Config) error {
	if err := p.apply(cfg); err != nil {
		return err
	}
	if p.mesh != nil && (cfg.ControlPlane == nil || !sameControlPlane(*cfg.ControlPlane, p.mesh.cfg)) {
		p.log.Warn("controlPlane changed in the configuration: the change needs a restart; keeping the current one")
	}
	p.mu.Lock()
	ctx := p.ctx
	p.mu.Unlock()
	if ctx == nil {
		return nil
	}
	return p.reconcileListeners(ctx, cfg)
}

// sameControlPlane reports whether two controlPlane sections are equal.
func sameControlPlane(a, b config.ControlPlane) bool {
	return a.Address == b.Address && a.Identity == b.Identity && a.TokenFile == b.TokenFile &&
		a.TrustAnchors == b.TrustAnchors && a.Namespace == b.Namespace && a.Workload == b.Workload &&
		slices.Equal(a.Watch, b.Watch)
}

// Ready reports whether the proxy serves traffic: its listeners are bound
// and, in the mesh, it is certified and has discovered the services it
// watches. It answers the admin server's /ready.
func (p *Proxy) Ready() (bool, string) {
	select {
	case <-p.ready:
	default:
		return false, "listeners not bound yet"
	}
	if p.mesh != nil {
		return p.mesh.ready()
	}
	return true, ""
}

// Bound returns a channel closed once every listener is bound.
func (p *Proxy) Bound() <-chan struct{} { return p.ready }

// ListenerAddr returns the bound address of the explicit listener for the
// service with key service, or "" if there is none.
func (p *Proxy) ListenerAddr(service string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.listeners {
		if l.kind == "service" && l.service == service {
			return l.ln.Addr().String()
		}
	}
	return ""
}

// Inbound is the inbound dispatcher (for tests).
func (p *Proxy) Inbound() *dispatch.Dispatcher { return p.inbound.d }

// InboundPolicy returns the inbound policy in force.
func (p *Proxy) InboundPolicy() policy.Server { return p.policy.Load().srv }

// Addr returns the bound address of a listener by its configured address
// ("admin", "inbound" and "outbound" name those), or "" if none.
func (p *Proxy) Addr(name string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.listeners[name]; l != nil {
		return l.ln.Addr().String()
	}
	for _, l := range p.listeners {
		if l.kind == name {
			return l.ln.Addr().String()
		}
	}
	return ""
}

// Run binds every listener, serves until ctx is cancelled, then shuts down
// gracefully within the configured grace period.
func (p *Proxy) Run(ctx context.Context) error {
	p.mu.Lock()
	cfg := p.cfg
	p.mu.Unlock()

	serveCtx, stopServing := context.WithCancel(context.Background())
	defer stopServing()
	p.mu.Lock()
	p.ctx = serveCtx
	p.mu.Unlock()

	if p.mesh != nil {
		// The control-plane clients outlive the listeners: requests still
		// draining keep using the certificate and routes.
		meshCtx, stopMesh := context.WithCancel(context.Background())
		meshDone := make(chan struct{})
		go func() {
			defer close(meshDone)
			p.mesh.run(meshCtx)
		}()
		defer func() {
			stopMesh()
			<-meshDone
		}()
	}

	adminLn, err := net.Listen("tcp", cfg.Admin)
	if err != nil {
		return fmt.Errorf("admin listener %s: %w", cfg.Admin, err)
	}
	adminSrv := &admin.Server{Metrics: p.registry, Readiness: p, Logger: p.log}
	adminCtx, stopAdmin := context.WithCancel(context.Background())
	adminDone := make(chan error, 1)
	go func() { adminDone <- adminSrv.Serve(adminCtx, adminLn) }()
	p.mu.Lock()
	p.listeners["admin"] = &boundListener{kind: "admin", ln: adminLn}
	p.mu.Unlock()

	if err := p.bindFixed(serveCtx, cfg); err != nil {
		stopAdmin()
		<-adminDone
		p.closeAll()
		return err
	}
	if err := p.reconcileListeners(serveCtx, cfg); err != nil {
		stopAdmin()
		<-adminDone
		p.closeAll()
		return err
	}
	close(p.ready)
	p.log.Info("proxy ready", "admin", adminLn.Addr().String(), "inbound", p.Addr("inbound"), "outbound", p.Addr("outbound"))

	<-ctx.Done()
	p.log.Info("shutting down", "grace", cfg.ShutdownGrace.D())
	grace := cfg.ShutdownGrace.D()
	if grace <= 0 {
		grace = 30 * time.Second
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	p.stopAccepting()
	var wg sync.WaitGroup
	for _, s := range []side{p.inbound, p.outbound} {
		wg.Add(2)
		go func() { defer wg.Done(); _ = s.h1.Shutdown(shutCtx) }()
		go func() { defer wg.Done(); _ = s.h2.Shutdown(shutCtx) }()
	}
	wg.Wait()
	// Opaque connections get the rest of the grace period, then are closed.
	connsDone := make(chan struct{})
	go func() { p.conns.Wait(); close(connsDone) }()
	select {
	case <-connsDone:
	case <-shutCtx.Done():
		stopServing()
		<-connsDone
	}
	stopServing()
	p.h1pool.Close()
	p.h2pool.Close()
	p.downgrade.CloseIdleConnections()
	stopAdmin()
	<-adminDone
	return nil
}

// bindFixed binds the inbound and outbound listeners.
func (p *Proxy) bindFixed(ctx context.Context, cfg *config.Config) error {
	if cfg.Inbound.Listen != "" && cfg.Inbound.Listen != config.Off {
		if err := p.listen(ctx, "inbound", "inbound", "", cfg.Inbound.Listen); err != nil {
			return err
		}
	}
	if cfg.Outbound.Listen != "" && cfg.Outbound.Listen != config.Off {
		if err := p.listen(ctx, "outbound", "outbound", "", cfg.Outbound.Listen); err != nil {
			return err
		}
	}
	return nil
}

// listenerName is the key of an explicit listener in Proxy.listeners: its
// address, or for a listener on port 0 (of which there may be several) its
// address and service.
func listenerName(l config.Listener) string {
	if _, port, err := net.SplitHostPort(l.Listen); err == nil && port == "0" {
		return l.Listen + "|" + l.Service
	}
	return l.Listen
}

// reconcileListeners makes the explicit listeners match the configuration.
func (p *Proxy) reconcileListeners(ctx context.Context, cfg *config.Config) error {
	want := map[string]string{}
	addrOf := map[string]string{}
	for _, l := range cfg.Listeners {
		want[listenerName(l)] = l.Service
		addrOf[listenerName(l)] = l.Listen
	}
	p.mu.Lock()
	var stale []*boundListener
	for addr, l := range p.listeners {
		if l.kind != "service" {
			continue
		}
		// A listener configured on port 0 is also known by its bound address.
		bound := l.ln.Addr().String()
		svc, ok := want[addr]
		if !ok {
			svc, ok = want[bound]
			if ok && svc == l.service {
				delete(want, bound)
				want[addr] = svc
			}
		}
		if !ok || svc != l.service {
			stale = append(stale, l)
			delete(p.listeners, addr)
		}
	}
	p.mu.Unlock()
	for _, l := range stale {
		l.cancel()
		_ = l.ln.Close()
		<-l.done
	}
	var errs []error
	for name, svc := range want {
		p.mu.Lock()
		_, exists := p.listeners[name]
		p.mu.Unlock()
		if exists {
			continue
		}
		addr := addrOf[name]
		if addr == "" {
			addr = name // renamed to its bound address above
		}
		if err := p.listen(ctx, name, "service", svc, addr); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// listen binds addr and starts accepting.
func (p *Proxy) listen(ctx context.Context, name, kind, service, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s listener %s: %w", kind, addr, err)
	}
	lctx, cancel := context.WithCancel(ctx)
	bl := &boundListener{kind: kind, service: service, ln: ln, cancel: cancel, done: make(chan struct{}), connCtx: ctx}
	p.mu.Lock()
	p.listeners[name] = bl
	p.mu.Unlock()
	go p.accept(lctx, bl)
	return nil
}

// stopAccepting closes every listener but admin.
func (p *Proxy) stopAccepting() {
	p.mu.Lock()
	var ls []*boundListener
	for name, l := range p.listeners {
		if l.kind == "admin" {
			continue
		}
		ls = append(ls, l)
		delete(p.listeners, name)
	}
	p.mu.Unlock()
	for _, l := range ls {
		_ = l.ln.Close()
		<-l.done
	}
}

func (p *Proxy) closeAll() {
	p.stopAccepting()
	p.mu.Lock()
	defer p.mu.Unlock()
	for name, l := range p.listeners {
		_ = l.ln.Close()
		delete(p.listeners, name)
	}
}

// accept serves one listener's connections.
func (p *Proxy) accept(ctx context.Context, l *boundListener) {
	defer close(l.done)
	backoff := 5 * time.Millisecond
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return
			}
			// Out of file descriptors and the like: back off, keep serving.
			p.log.Warn("accept failed", "listener", l.ln.Addr().String(), "err", err)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(backoff*2, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		p.conns.Add(1)
		go func() {
			defer p.conns.Done()
			p.serveConn(l.connCtx, l, c)
		}()
	}
}

// serveConn detects the protocol of a connection and serves it.
func (p *Proxy) serveConn(ctx context.Context, l *boundListener, c net.Conn) {
	p.mu.Lock()
	detectTO, opaque := p.detectTO, p.opaque
	p.mu.Unlock()

	s := p.outbound
	if l.kind == "inbound" {
		s = p.inbound
	}
	var resolver dispatch.Resolver
	var svc *dispatch.Service // the service an opaque connection goes to
	var port int
	switch l.kind {
	case "service":
		resolver = s.d.Fixed(l.service)
		svc = s.d.Service(l.service)
		if svc != nil {
			port = svc.Spec.Port
		}
	case "inbound":
		resolver = s.d.Fixed(InboundServiceKey)
		svc = s.d.Service(InboundServiceKey)
		if svc != nil && len(svc.Spec.Endpoints) > 0 {
			port = portOf(svc.Spec.Endpoints[0].Address)
		}
		if orig, ok := p.inboundOriginalDst(c); ok {
			svc = s.d.Passthrough(orig.String())
			resolver = dispatch.ResolverFunc(func(string) (*dispatch.Service, *dispatch.Error) { return svc, nil })
			port = int(orig.Port())
		}
	case "outbound":
		tc, ok := c.(*net.TCPConn)
		var orig netip.AddrPort
		var err error
		if ok {
			orig, err = origdst.Lookup(tc)
		} else {
			err = errors.New("not a TCP connection")
		}
		if err != nil {
			// Not intercepted: HTTP can still be routed by authority.
			p.log.Debug("no original destination", "err", err)
			resolver = s.d.ByAuthority()
		} else {
			resolver = s.d.ForOriginalDst(orig)
			svc = s.d.LookupAddr(orig)
			if svc == nil && p.mesh != nil {
				// An address no known service claims: ask the control
				// plane, which knows every Service's virtual address.
				p.mesh.discoverAddr(ctx, orig)
				svc = s.d.LookupAddr(orig)
			}
			if svc == nil {
				svc = s.d.Passthrough(orig.String())
			}
			port = int(orig.Port())
		}
	}

	hint := routetable.ProtocolDetect
	if svc != nil {
		hint = svc.Spec.Protocol
	}
	var conn net.Conn = c
	proto, decided := detect.Opaque, false
	// Inbound, the client and its identity decide what it may do.
	var client netip.Addr
	var identity string
	isTLS := false
	if l.kind == "inbound" {
		client = remoteIP(c)
		if pol := p.policyFor(port); pol.srv.Protocol != routetable.ProtocolDetect {
			hint = pol.srv.Protocol
		}
		if p.mesh != nil {
			// A meshed client speaks TLS whatever the port's protocol: look
			// before deciding anything else.
			got, dc, err := detect.Detect(c, detectTO)
			if err != nil {
				_ = c.Close()
				return
			}
			conn, proto = dc, got
			decided = hint == routetable.ProtocolDetect && !(port != 0 && opaque.Has(port))
			if isTLSClientHello(dc.Peeked()) {
				tc, id, alpn, err := p.terminateTLS(ctx, dc)
				if err != nil {
					p.log.Debug("inbound TLS handshake failed", "remote", c.RemoteAddr().String(), "err", err)
					_ = c.Close()
					return
				}
				conn, identity, isTLS = tc, id, true
				switch alpn {
				case ALPNHTTP2:
					proto, decided = detect.HTTP2, true
				case ALPNHTTP1:
					proto, decided = detect.HTTP1, true
				case ALPNOpaque:
					proto, decided = detect.Opaque, true
				default:
					decided = false // TLS without ALPN: detect what it carries
				}
			}
		}
	}

	if !decided {
		switch {
		case hint == routetable.ProtocolOpaque || (port != 0 && opaque.Has(port)):
			proto = detect.Opaque
		case hint == routetable.ProtocolHTTP1:
			proto = detect.HTTP1
		case hint == routetable.ProtocolHTTP2 || hint == routetable.ProtocolGRPC:
			proto = detect.HTTP2
		default:
			got, dc, err := detect.Detect(conn, detectTO)
			if err != nil {
				_ = conn.Close()
				return
			}
			proto, conn = got, dc
		}
	}
	p.countDetected(l.kind, proto, isTLS)

	if l.kind == "inbound" {
		if peer := p.inboundPeer(isTLS, identity); peer != nil {
			ctx = dispatch.WithPeer(ctx, peer)
		}
		if proto != detect.Opaque {
			resolver = p.authorizingResolver(resolver, port, client, identity)
		} else if ok, reason := p.authorize(port, true, client, identity); !ok {
			p.log.Debug("inbound connection denied", "remote", c.RemoteAddr().String(), "reason", reason)
			_ = conn.Close()
			return
		}
	}

	switch proto {
	case detect.HTTP1:
		s.h1.ServeConn(ctx, conn, resolver)
	case detect.HTTP2:
		s.h2.ServeConn(ctx, conn, resolver)
	default:
		p.forwardOpaque(ctx, l.kind, conn, svc, isTLS, identity)
	}
}

// detectKey names a protocol_detect_total series.
type detectKey struct {
	kind  string
	proto detect.Protocol
	tls   bool
}

// countDetected counts a connection by listener kind, protocol and TLS.
func (p *Proxy) countDetected(kind string, proto detect.Protocol, isTLS bool) {
	k := detectKey{kind, proto, isTLS}
	if v, ok := p.detected.Load(k); ok {
		v.(*metrics.Counter).Inc()
		return
	}
	direction := "outbound"
	if kind == "inbound" {
		direction = "inbound"
	}
	tlsValue := "false"
	if isTLS {
		tlsValue = "true"
	}
	c := p.registry.Counter("protocol_detect_total", "Connections by the protocol they were served as.", metrics.Labels{
		{Name: "direction", Value: direction},
		{Name: "protocol", Value: proto.String()},
		{Name: "tls", Value: tlsValue},
	})
	v, _ := p.detected.LoadOrStore(k, c)
	v.(*metrics.Counter).Inc()
}

// forwardOpaque balances an opaque connection onto an endpoint of svc. An
// outbound connection to an endpoint with a mesh identity is wrapped in mutual
// TLS announcing ALPNOpaque. isTLS and identity describe an inbound client.
func (p *Proxy) forwardOpaque(ctx context.Context, kind string, c net.Conn, svc *dispatch.Service, isTLS bool, identity string) {
	defer c.Close()
	if svc == nil {
		p.log.Warn("opaque connection with no known destination closed", "listener", kind, "remote", c.RemoteAddr().String())
		return
	}
	p.mu.Lock()
	connectTO, idle := p.cfg.ConnectTimeout.D(), p.cfg.IdleTimeout.D()
	p.mu.Unlock()
	var upstream net.Conn
	var lastErr error
	var serverID string
	for try := 0; try < 2; try++ { // a refused connect is retried on another endpoint
		ep, err := svc.Balancer().Pick()
		if err != nil {
			p.log.Warn("opaque connection refused: no endpoint", "service", svc.Key(), "err", err)
			return
		}
		att := ep.Start()
		serverID = ""
		if kind != "inbound" && p.mesh != nil {
			serverID = ep.Spec().Identity
		}
		if serverID != "" {
			upstream, lastErr = p.mesh.dialOpaque(ctx, ep.Addr(), serverID, connectTO)
		} else {
			upstream, lastErr = tcp.Dial(ctx, ep.Addr(), connectTO)
		}
		if lastErr == nil {
			att.FirstByte()
			defer att.Done(false)
			break
		}
		att.Done(true)
	}
	if upstream == nil {
		p.log.Warn("opaque connection failed", "service", svc.Key(), "err", lastErr)
		return
	}
	var stats *metrics.TCPStats
	if kind == "inbound" {
		stats = p.tcpStatsFor("inbound", isTLS, identity)
	} else {
		stats = p.tcpStatsFor("outbound", serverID != "", serverID)
	}
	stats.Open()
	defer stats.Close()
	if err := tcp.Proxy(ctx, c, upstream, idle, stats); err != nil && ctx.Err() == nil {
		p.log.Debug("opaque connection ended", "service", svc.Key(), "err", err)
	}
}

func portOf(addr string) int {
	_, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(ps)
	return n
}
