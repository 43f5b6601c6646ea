package controlplane

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/sluicehq/sluice/mesh/api/meshv1"
	"github.com/sluicehq/sluice/mesh/api/routetable"
)

// Defaults of DiscoveryOptions.
const (
	// DefaultDebounce is how long changes are coalesced before a new table is
	// handed to OnUpdate, counted from the previous update.
	DefaultDebounce = 5 * time.Millisecond
	// DefaultInitialTimeout is how long a new stream may take to deliver its
	// first message before it is abandoned and opened again.
	DefaultInitialTimeout = 3 * time.Second
)

// errNoFirstMessage ends a stream whose first message is late.
var errNoFirstMessage = errors.New("no first message within the initial timeout")

// DiscoveryOptions configure a Discovery.
type DiscoveryOptions struct {
	// Conn reaches the destination service. Dial it with ConnectParams so
	// that the channel reconnects as promptly as the streams do.
	Conn grpc.ClientConnInterface
	// ClientNamespace and ClientIdentity tell the destination service who
	// asks (GetDestination.client_namespace and client_identity).
	ClientNamespace, ClientIdentity string
	// Static are services configured locally (the proxy's configuration
	// file). They are merged into every table; a discovered service with the
	// same key replaces the static one.
	Static routetable.Table
	// OnUpdate, if set, is called from Run with the complete new table after
	// each change. Changes arriving within Debounce of the previous update
	// are coalesced into one call; a change after a quiet period is passed on
	// at once. It is never called with a table equal to the previous one.
	// The table and everything it points to must not be modified.
	OnUpdate func(*routetable.Table)
	// Logger receives stream errors and protocol problems (nil: slog.Default).
	Logger *slog.Logger
	// MinBackoff and MaxBackoff bound the jittered exponential wait before a
	// lost stream is reopened (defaults DefaultMinBackoff, DefaultMaxBackoff).
	MinBackoff, MaxBackoff time.Duration
	// Debounce is the coalescing window of OnUpdate (default DefaultDebounce).
	Debounce time.Duration
	// InitialTimeout bounds the wait for a new stream's first message
	// (default DefaultInitialTimeout); a stream that misses it is reopened.
	InitialTimeout time.Duration
}

// Discovery keeps a routetable.Table current from the Destination API.
//
// Every watched service port has one GetRoutes and one GetEndpoints stream.
// Services named by the rules of a watched service (backends and mirror
// targets) are watched too, transitively, for as long as something watched
// explicitly references them. A stream that fails is reopened with backoff;
// until the new stream's first message arrives, the service keeps the routes
// and endpoints it had. A service enters the table once both of its streams
// have delivered their first message and so have those of every service its
// rules reference; a later route change waits the same way for the backends
// it adds, keeping the previous routes meanwhile, so that the proxy never
// routes to a backend it knows nothing about yet.
type Discovery struct {
	opts   DiscoveryOptions
	client meshv1.DestinationClient
	log    *slog.Logger
	static []routetable.Service

	mu      sync.Mutex
	watches map[string]*watch // by target, only reachable ones
	runCtx  context.Context   // set by Run
	stopped bool              // Run is returning: start no stream
	changed chan struct{}     // closed and replaced on every change
	dirty   chan struct{}     // tells Run's publisher to look again
	wg      sync.WaitGroup    // stream goroutines
}

// watch is the state of one watched target. All fields but target are
// guarded by Discovery.mu.
type watch struct {
	target   string
	explicit bool
	removed  bool
	cancel   context.CancelFunc // stops its streams; nil when not started

	routesSynced bool                // the routes stream delivered a message
	svc          *routetable.Service // last valid routes, no endpoints; nil if none or unkeyed
	// applied are the routes in the table: svc once every service it
	// references is synced, so that a route never sends to a backend the
	// proxy knows nothing about yet. Until then the previous routes stay.
	applied         *routetable.Service
	endpointsSynced bool // the endpoints stream delivered a message
	endpoints       map[string]routetable.Endpoint
}

// NewDiscovery returns a Discovery; call Run to start its streams.
func NewDiscovery(opts DiscoveryOptions) *Discovery {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.MinBackoff)
	}
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	if opts.InitialTimeout <= 0 {
		opts.InitialTimeout = DefaultInitialTimeout
	}
	d := &Discovery{
		opts:    opts,
		log:     opts.Logger.With("component", "discovery"),
		static:  slices.Clone(opts.Static.Services),
		watches: map[string]*watch{},
		changed: make(chan struct{}),
		dirty:   make(chan struct{}, 1),
	}
	if opts.Conn != nil {
		d.client = meshv1.NewDestinationClient(opts.Conn)
	}
	return d
}

// Watch starts watching a service port. target is a service key
// ("name.namespace:port"), an authority ("name.namespace.svc.cluster.local:port")
// or a virtual address ("ip:port"); the table keys the service by the
// routetable.ServiceKey the destination service answers with, and keeps the
// virtual addresses it lists. Watching a target twice is the same as once.
func (d *Discovery) Watch(target string) {
	if target == "" {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	w := d.watches[target]
	if w == nil {
		w = &watch{target: target}
		d.watches[target] = w
		d.startLocked(w)
	}
	if w.explicit {
		return
	}
	w.explicit = true
	d.changedLocked()
}

// Unwatch stops watching a target that Watch started. It and the services
// only it referenced leave the table; a target still referenced by another
// watched service stays watched as a backend.
func (d *Discovery) Unwatch(target string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	w := d.watches[target]
	if w == nil || !w.explicit {
		return
	}
	w.explicit = false
	d.changedLocked()
}

// WaitSynced blocks until every watched service, backends included, has
// received its first routes and endpoints messages, or until ctx ends. The
// proxy reports ready only after it returns nil.
func (d *Discovery) WaitSynced(ctx context.Context) error {
	for {
		d.mu.Lock()
		var pending []string
		for t, w := range d.watches {
			if !w.routesSynced || !w.endpointsSynced {
				pending = append(pending, t)
			}
		}
		changed := d.changed
		d.mu.Unlock()
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			slices.Sort(pending)
			return fmt.Errorf("waiting for the first discovery of %s: %w", strings.Join(pending, ", "), ctx.Err())
		case <-changed:
		}
	}
}

// WaitTarget blocks until a watched target's answer is in the table: its
// service with the routes the destination service sent (and every backend
// they name), or the answer that no service has that name or address. It
// fails when target is not watched or ctx ends first.
func (d *Discovery) WaitTarget(ctx context.Context, target string) error {
	for {
		d.mu.Lock()
		w := d.watches[target]
		done := w != nil && w.synced() && w.applied == w.svc
		changed := d.changed
		d.mu.Unlock()
		switch {
		case w == nil:
			return fmt.Errorf("%s is not watched", target)
		case done:
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the discovery of %s: %w", target, ctx.Err())
		case <-changed:
		}
	}
}

// Table returns the current merged table: the static services, replaced or
// joined by the discovered ones (see Discovery for when a discovered service
// or route change enters it). The table must not be modified.
func (d *Discovery) Table() *routetable.Table {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.buildLocked()
}

// Run opens the streams of every watched service (and of those watched
// later) and keeps them open until ctx ends, then returns nil once they have
// all stopped. A lost stream is reopened with backoff; its service keeps its
// last state meanwhile. Run calls OnUpdate. It may be called only once.
func (d *Discovery) Run(ctx context.Context) error {
	d.mu.Lock()
	if d.runCtx != nil {
		d.mu.Unlock()
		return errors.New("discovery: Run called more than once")
	}
	if d.client == nil {
		d.mu.Unlock()
		return errors.New("discovery: no connection to the destination service (DiscoveryOptions.Conn)")
	}
	d.runCtx = ctx
	for _, w := range d.watches {
		d.startLocked(w)
	}
	last := d.buildLocked()
	d.mu.Unlock()

	d.publish(ctx, last)

	d.mu.Lock()
	d.stopped = true
	for _, w := range d.watches {
		if w.cancel != nil {
			w.cancel()
		}
	}
	d.mu.Unlock()
	d.wg.Wait()
	return nil
}

// publish hands new tables to OnUpdate until ctx ends: at once after a quiet
// period, otherwise when the debounce window since the last update closes.
func (d *Discovery) publish(ctx context.Context, last *routetable.Table) {
	var lastAt time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.dirty:
		}
		if !lastAt.IsZero() {
			if wait := time.Until(lastAt.Add(d.opts.Debounce)); wait > 0 && !sleep(ctx, wait) {
				return
			}
		}
		// Changes signalled until now are in the table built next.
		select {
		case <-d.dirty:
		default:
		}
		t := d.Table()
		if reflect.DeepEqual(t, last) {
			continue
		}
		last, lastAt = t, time.Now()
		if d.opts.OnUpdate != nil {
			d.opts.OnUpdate(t)
		}
	}
}

// changedLocked follows a change of state: it applies the routes whose
// backends are now known, adjusts the watched set, and wakes WaitSynced and
// the publisher.
func (d *Discovery) changedLocked() {
	d.promoteLocked()
	d.reconcileLocked()
	d.notifyLocked()
}

// promoteLocked applies each watch's latest routes once every service they
// reference is synced (or configured statically). Availability depends only
// on streams having delivered, so reference cycles cannot hold routes back.
func (d *Discovery) promoteLocked() {
	synced := make(map[string]bool, len(d.static)+2*len(d.watches))
	for _, s := range d.static {
		synced[s.Key()] = true
	}
	for t, w := range d.watches {
		if w.synced() {
			synced[t] = true
			if w.svc != nil {
				synced[w.svc.Key()] = true
			}
		}
	}
	for _, w := range d.watches {
		if w.applied == w.svc {
			continue
		}
		ready := true
		for _, b := range referenced(w.svc) {
			if !synced[b] {
				ready = false
				break
			}
		}
		if ready {
			w.applied = w.svc
		}
	}
}

// notifyLocked wakes WaitSynced and the publisher.
func (d *Discovery) notifyLocked() {
	close(d.changed)
	d.changed = make(chan struct{})
	select {
	case d.dirty <- struct{}{}:
	default:
	}
}

// reconcileLocked makes the watched set what the explicit targets reach:
// it starts watches for newly referenced backends and stops those nothing
// references any more.
func (d *Discovery) reconcileLocked() {
	reached := map[string]bool{}
	// covered are the keys some reached, synced watch already serves, so that
	// a backend named by key is not watched twice when it was asked for by
	// address or authority.
	covered := map[string]bool{}
	var queue []*watch
	for t, w := range d.watches {
		if w.explicit {
			reached[t] = true
			queue = append(queue, w)
			if w.synced() && w.svc != nil {
				covered[w.svc.Key()] = true
			}
		}
	}
	for len(queue) > 0 {
		w := queue[0]
		queue = queue[1:]
		if w.svc == nil && w.applied == nil {
			continue
		}
		// The backends of the routes in force and of those waiting to be.
		var self string
		if w.svc != nil {
			self = w.svc.Key()
		}
		for _, b := range append(referenced(w.applied), referenced(w.svc)...) {
			if b == self || reached[b] || covered[b] {
				continue
			}
			reached[b] = true
			bw := d.watches[b]
			if bw == nil {
				bw = &watch{target: b}
				d.watches[b] = bw
				d.startLocked(bw)
			}
			if bw.synced() && bw.svc != nil {
				covered[bw.svc.Key()] = true
			}
			queue = append(queue, bw)
		}
	}
	for t, w := range d.watches {
		if reached[t] {
			continue
		}
		w.removed = true
		if w.cancel != nil {
			w.cancel()
		}
		delete(d.watches, t)
	}
}

// synced reports whether both streams have delivered a first message.
func (w *watch) synced() bool { return w.routesSynced && w.endpointsSynced }

// referenced lists the services a service's rules send to or mirror to.
func referenced(s *routetable.Service) []string {
	if s == nil {
		return nil
	}
	var out []string
	for i := range s.Rules {
		r := &s.Rules[i]
		for _, b := range r.Backends {
			if b.Service != "" {
				out = append(out, b.Service)
			}
		}
		for _, m := range r.Filters.Mirrors {
			if m.Backend != "" {
				out = append(out, m.Backend)
			}
		}
	}
	return out
}

// startLocked opens a watch's two streams if Run is running.
func (d *Discovery) startLocked(w *watch) {
	if d.runCtx == nil || d.stopped || w.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(d.runCtx)
	w.cancel = cancel
	d.wg.Add(2)
	go d.stream(ctx, w, "routes", d.recvRoutes)
	go d.stream(ctx, w, "endpoints", d.recvEndpoints)
}

// buildLocked assembles the merged table.
func (d *Discovery) buildLocked() *routetable.Table {
	byKey := make(map[string]routetable.Service, len(d.static)+len(d.watches))
	for _, s := range d.static {
		byKey[s.Key()] = s
	}
	chosen := map[string]*watch{}
	for _, w := range d.watches {
		if w.applied == nil || !w.endpointsSynced {
			continue
		}
		k := w.applied.Key()
		// Two watches may name the same service (by address and by key):
		// prefer the explicit one, then the smaller target, for stability.
		if c := chosen[k]; c != nil && (c.explicit && !w.explicit || c.explicit == w.explicit && c.target < w.target) {
			continue
		}
		chosen[k] = w
	}
	for k, w := range chosen {
		s := *w.applied
		s.Endpoints = nil
		for _, e := range w.endpoints {
			s.Endpoints = append(s.Endpoints, e)
		}
		slices.SortFunc(s.Endpoints, func(a, b routetable.Endpoint) int { return cmp.Compare(a.Address, b.Address) })
		byKey[k] = s
	}
	t := &routetable.Table{}
	for _, s := range byKey {
		t.Services = append(t.Services, s)
	}
	slices.SortFunc(t.Services, func(a, b routetable.Service) int { return cmp.Compare(a.Key(), b.Key()) })
	return t
}

// stream keeps one stream of a watch open until ctx ends, reopening it with
// backoff. recv runs one stream to its end; it calls first when the first
// message has arrived.
func (d *Discovery) stream(ctx context.Context, w *watch, kind string, recv func(ctx context.Context, w *watch, first func()) error) {
	defer d.wg.Done()
	log := d.log.With("target", w.target, "stream", kind)
	bo := backoff{min: d.opts.MinBackoff, max: d.opts.MaxBackoff}
	for {
		sctx, cancel := context.WithCancelCause(ctx)
		var got atomic.Bool
		timer := time.AfterFunc(d.opts.InitialTimeout, func() {
			if !got.Load() {
				cancel(errNoFirstMessage)
			}
		})
		err := recv(sctx, w, func() {
			if got.CompareAndSwap(false, true) {
				timer.Stop()
			}
		})
		timer.Stop()
		if c := context.Cause(sctx); errors.Is(c, errNoFirstMessage) {
			err = fmt.Errorf("%w (%s)", errNoFirstMessage, d.opts.InitialTimeout)
		}
		cancel(nil)
		if ctx.Err() != nil {
			return
		}
		if got.Load() {
			bo.reset()
		}
		wait := bo.next()
		if errors.Is(err, io.EOF) {
			log.Info("destination stream closed by the server; reopening", "retry_in", wait)
		} else {
			log.Warn("destination stream failed; keeping the last state and reopening", "error", err, "retry_in", wait)
		}
		if !sleep(ctx, wait) {
			return
		}
	}
}

// request is what a watch asks the destination service.
func (d *Discovery) request(w *watch) *meshv1.GetDestination {
	return &meshv1.GetDestination{
		Service:         w.target,
		ClientNamespace: d.opts.ClientNamespace,
		ClientIdentity:  d.opts.ClientIdentity,
	}
}

// recvRoutes runs one GetRoutes stream, applying every snapshot.
func (d *Discovery) recvRoutes(ctx context.Context, w *watch, first func()) error {
	s, err := d.client.GetRoutes(ctx, d.request(w))
	if err != nil {
		return fmt.Errorf("open routes stream: %w", err)
	}
	for {
		msg, err := s.Recv()
		if err != nil {
			return err
		}
		first()
		d.applyRoutes(w, msg)
	}
}

// recvEndpoints runs one GetEndpoints stream. Its first message replaces the
// endpoints kept from an earlier stream; later ones are applied as diffs.
func (d *Discovery) recvEndpoints(ctx context.Context, w *watch, first func()) error {
	s, err := d.client.GetEndpoints(ctx, d.request(w))
	if err != nil {
		return fmt.Errorf("open endpoints stream: %w", err)
	}
	for isFirst := true; ; isFirst = false {
		msg, err := s.Recv()
		if err != nil {
			return err
		}
		first()
		d.applyEndpoints(w, msg, isFirst)
	}
}

// applyRoutes replaces a watch's routes with a snapshot. An invalid snapshot
// is logged and ignored: the previous routes stay.
func (d *Discovery) applyRoutes(w *watch, msg *meshv1.ServiceRoutes) {
	svc, err := meshv1.ServiceFromProto(msg)
	d.mu.Lock()
	defer d.mu.Unlock()
	if w.removed {
		return
	}
	w.routesSynced = true
	defer d.changedLocked()
	if err != nil {
		d.log.Error("invalid routes from the destination service; keeping the previous ones", "target", w.target, "error", err)
		return
	}
	if svc.Name == "" {
		// Nothing to key it by: the destination service knows no such
		// service by this address or authority. A key-form target still
		// names it, so that requests to it get a definite answer.
		name, ns, port, ok := parseKey(w.target)
		if !ok {
			w.svc = nil
			return
		}
		svc.Name, svc.Namespace, svc.Port = name, ns, port
	}
	svc.Addresses = d.validAddresses(w.target, svc.Addresses)
	w.svc = &svc
}

// validAddresses drops virtual addresses that are not ip:port: one bad
// address must not make the proxy reject the whole table.
func (d *Discovery) validAddresses(target string, addrs []string) []string {
	out := addrs[:0:0]
	for _, a := range addrs {
		if _, err := netip.ParseAddrPort(a); err != nil {
			d.log.Warn("ignoring a service address that is not ip:port", "target", target, "address", a)
			continue
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// applyEndpoints applies one endpoint update; the first of a stream is a
// complete statement that replaces what was kept.
func (d *Discovery) applyEndpoints(w *watch, msg *meshv1.EndpointUpdate, isFirst bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if w.removed {
		return
	}
	if isFirst || w.endpoints == nil {
		w.endpoints = map[string]routetable.Endpoint{}
	}
	switch u := msg.GetUpdate().(type) {
	case *meshv1.EndpointUpdate_Add:
		for i, p := range u.Add.GetEndpoints() {
			e, err := meshv1.EndpointFromProto(p)
			if err != nil {
				d.log.Error("ignoring an invalid endpoint from the destination service", "target", w.target, "index", i, "error", err)
				continue
			}
			w.endpoints[e.Address] = e
		}
	case *meshv1.EndpointUpdate_Remove:
		for _, a := range u.Remove.GetAddresses() {
			delete(w.endpoints, a)
		}
	case *meshv1.EndpointUpdate_NoEndpoints:
		clear(w.endpoints)
	default:
		d.log.Error("ignoring an endpoint update with no add, remove or no_endpoints", "target", w.target)
	}
	w.endpointsSynced = true
	d.changedLocked()
}

// parseKey splits a service key "name.namespace:port". Anything else, such
// as an IP address or a longer authority, is not a key.
func parseKey(target string) (name, namespace string, port int, ok bool) {
	host, p, err := net.SplitHostPort(target)
	if err != nil {
		return "", "", 0, false
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return "", "", 0, false
	}
	name, namespace, found := strings.Cut(host, ".")
	if !found || name == "" || namespace == "" || strings.Contains(namespace, ".") {
		return "", "", 0, false
	}
	n, err := strconv.Atoi(p)
	if err != nil || n <= 0 || n > 65535 {
		return "", "", 0, false
	}
	return name, namespace, n, true
}
