// Package proxy assembles the sidecar: it binds the inbound, outbound, explicit
// and admin listeners, detects each connection's protocol, hands HTTP/1 and
// HTTP/2 connections to their servers and opaque ones to the TCP forwarder, keeps
// the routing state current as configuration changes, and shuts down gracefully.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
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
type Proxy struct {
	log      *slog.Logger
	registry *metrics.Registry

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
	for _, k := range sortedKeys(cfg.Labels) {
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
	tlsLabels := metrics.Labels{{Name: "tls", Value: "no_identity"}, {Name: "no_tls_reason", Value: "not_provided_by_service_discovery"}}
	p.outbound = p.newSide("outbound", tlsLabels)
	p.inbound = p.newSide("inbound", metrics.Labels{{Name: "tls", Value: "no_identity"}, {Name: "no_tls_reason", Value: "no_tls_from_remote"}})
	p.tcpInbound = reg.TCP("inbound", nil)
	p.tcpOutbound = reg.TCP("outbound", nil)
	if err := p.apply(cfg); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Proxy) newSide(direction string, labels metrics.Labels) side {
	d := dispatch.New(dispatch.Options{Direction: direction, Metrics: p.registry, Logger: p.log, StaticLabels: labels})
	return side{
		d:  d,
		h1: &http1.Server{Dispatcher: d, Pool: p.h1pool, Logger: p.log},
		h2: &http2.Server{Dispatcher: d, Pool: p.h2pool, Logger: p.log},
	}
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
	if err := p.outbound.d.Update(&cfg.Table); err != nil {
		return fmt.Errorf("outbound: %w", err)
	}
	if err := p.inbound.d.Update(inboundTable(cfg)); err != nil {
		return fmt.Errorf("inbound: %w", err)
	}
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
	p.mu.Lock()
	ctx := p.ctx
	p.mu.Unlock()
	if ctx == nil {
		return nil
	}
	return p.reconcileListeners(ctx, cfg)
}

// Ready reports whether the proxy serves traffic.
func (p *Proxy) Ready() (bool, string) {
	select {
	case <-p.ready:
		return true, ""
	default:
		return false, "listeners not bound yet"
	}
}

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

// reconcileListeners makes the explicit listeners match the configuration.
func (p *Proxy) reconcileListeners(ctx context.Context, cfg *config.Config) error {
	want := map[string]string{}
	for _, l := range cfg.Listeners {
		want[l.Listen] = l.Service
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
	for addr, svc := range want {
		p.mu.Lock()
		_, exists := p.listeners[addr]
		p.mu.Unlock()
		if exists {
			continue
		}
		if err := p.listen(ctx, addr, "service", svc, addr); err != nil {
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
			if svc == nil {
				svc = s.d.Passthrough(orig.String())
			}
			port = int(orig.Port())
		}
	}

	proto := detect.Opaque
	var conn net.Conn = c
	hint := routetable.ProtocolDetect
	if svc != nil {
		hint = svc.Spec.Protocol
	}
	switch {
	case hint == routetable.ProtocolOpaque || (port != 0 && opaque.Has(port)):
		proto = detect.Opaque
	case hint == routetable.ProtocolHTTP1:
		proto = detect.HTTP1
	case hint == routetable.ProtocolHTTP2 || hint == routetable.ProtocolGRPC:
		proto = detect.HTTP2
	default:
		got, dc, err := detect.Detect(c, detectTO)
		if err != nil {
			_ = c.Close()
			return
		}
		proto, conn = got, dc
	}

	switch proto {
	case detect.HTTP1:
		s.h1.ServeConn(ctx, conn, resolver)
	case detect.HTTP2:
		s.h2.ServeConn(ctx, conn, resolver)
	default:
		p.forwardOpaque(ctx, l.kind, conn, svc)
	}
}

// forwardOpaque balances an opaque connection onto an endpoint of svc.
func (p *Proxy) forwardOpaque(ctx context.Context, kind string, c net.Conn, svc *dispatch.Service) {
	defer c.Close()
	if svc == nil {
		p.log.Warn("opaque connection with no known destination closed", "listener", kind, "remote", c.RemoteAddr().String())
		return
	}
	stats := p.tcpOutbound
	if kind == "inbound" {
		stats = p.tcpInbound
	}
	p.mu.Lock()
	connectTO, idle := p.cfg.ConnectTimeout.D(), p.cfg.IdleTimeout.D()
	p.mu.Unlock()
	var upstream net.Conn
	var lastErr error
	for try := 0; try < 2; try++ { // a refused connect is retried on another endpoint
		ep, err := svc.Balancer().Pick()
		if err != nil {
			p.log.Warn("opaque connection refused: no endpoint", "service", svc.Key(), "err", err)
			return
		}
		att := ep.Start()
		upstream, lastErr = tcp.Dial(ctx, ep.Addr(), connectTO)
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

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}
