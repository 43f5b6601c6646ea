package controlplane

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/mesh/api/meshv1"
	"github.com/sluicehq/sluice/mesh/api/routetable"
)

// fakeDestination is a scripted Destination server: the test sets routes and
// endpoints per service key, and every open stream of that service gets the
// change. Like the real server, a new stream first gets the full current
// state. Aliases map addresses and authorities to keys.
type fakeDestination struct {
	meshv1.UnimplementedDestinationServer

	mu       sync.Mutex
	aliases  map[string]string
	routes   map[string]*meshv1.ServiceRoutes
	eps      map[string]map[string]*meshv1.Endpoint
	silent   map[string]bool // targets whose streams never send
	subs     map[*subscriber]bool
	opened   map[string]int // "routes target" / "endpoints target" → streams opened
	active   map[string]int // the same, streams open now
	requests []*meshv1.GetDestination
}

type subscriber struct {
	kind, key string
	ch        chan proto.Message
}

func newFakeDestination() *fakeDestination {
	return &fakeDestination{
		aliases: map[string]string{},
		routes:  map[string]*meshv1.ServiceRoutes{},
		eps:     map[string]map[string]*meshv1.Endpoint{},
		silent:  map[string]bool{},
		subs:    map[*subscriber]bool{},
		opened:  map[string]int{},
		active:  map[string]int{},
	}
}

func (f *fakeDestination) start(t *testing.T, addr string) (string, func()) {
	t.Helper()
	srv := grpc.NewServer()
	meshv1.RegisterDestinationServer(srv, f)
	return serve(t, srv, addr)
}

func (f *fakeDestination) resolve(target string) string {
	if k, ok := f.aliases[target]; ok {
		return k
	}
	return target
}

// stream registers a stream, sends first, then relays changes until the
// client goes away.
func (f *fakeDestination) stream(ctx context.Context, kind string, req *meshv1.GetDestination, first func(key string) proto.Message, send func(proto.Message) error) error {
	f.mu.Lock()
	name := kind + " " + req.GetService()
	f.opened[name]++
	f.active[name]++
	f.requests = append(f.requests, req)
	key := f.resolve(req.GetService())
	sub := &subscriber{kind: kind, key: key, ch: make(chan proto.Message, 1024)}
	f.subs[sub] = true
	silent := f.silent[req.GetService()]
	var msg proto.Message
	if !silent {
		msg = first(key)
	}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.subs, sub)
		f.active[name]--
		f.mu.Unlock()
	}()
	if silent {
		<-ctx.Done()
		return ctx.Err()
	}
	if err := send(msg); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m := <-sub.ch:
			if err := send(m); err != nil {
				return err
			}
		}
	}
}

func (f *fakeDestination) GetRoutes(req *meshv1.GetDestination, s grpc.ServerStreamingServer[meshv1.ServiceRoutes]) error {
	return f.stream(s.Context(), "routes", req, func(key string) proto.Message {
		if r := f.routes[key]; r != nil {
			return proto.Clone(r)
		}
		return &meshv1.ServiceRoutes{Exists: proto.Bool(false)}
	}, func(m proto.Message) error { return s.Send(m.(*meshv1.ServiceRoutes)) })
}

func (f *fakeDestination) GetEndpoints(req *meshv1.GetDestination, s grpc.ServerStreamingServer[meshv1.EndpointUpdate]) error {
	return f.stream(s.Context(), "endpoints", req, func(key string) proto.Message {
		set, ok := f.eps[key]
		if len(set) == 0 {
			return &meshv1.EndpointUpdate{Update: &meshv1.EndpointUpdate_NoEndpoints{NoEndpoints: &meshv1.NoEndpoints{Exists: ok}}}
		}
		add := &meshv1.AddEndpoints{}
		for _, e := range set {
			add.Endpoints = append(add.Endpoints, proto.Clone(e).(*meshv1.Endpoint))
		}
		return &meshv1.EndpointUpdate{Update: &meshv1.EndpointUpdate_Add{Add: add}}
	}, func(m proto.Message) error { return s.Send(m.(*meshv1.EndpointUpdate)) })
}

// broadcastLocked sends m to every stream of kind for key.
func (f *fakeDestination) broadcastLocked(kind, key string, m proto.Message) {
	for s := range f.subs {
		if s.kind == kind && s.key == key {
			s.ch <- proto.Clone(m)
		}
	}
}

func (f *fakeDestination) setRoutes(key string, r *meshv1.ServiceRoutes) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes[key] = r
	f.broadcastLocked("routes", key, r)
}

// sendRoutes sends a snapshot to open streams without keeping it (for
// messages a new stream must not replay, such as invalid ones).
func (f *fakeDestination) sendRoutes(key string, r *meshv1.ServiceRoutes) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.broadcastLocked("routes", key, r)
}

func (f *fakeDestination) addEndpoints(key string, eps ...*meshv1.Endpoint) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.eps[key] == nil {
		f.eps[key] = map[string]*meshv1.Endpoint{}
	}
	for _, e := range eps {
		f.eps[key][e.GetAddress()] = e
	}
	f.broadcastLocked("endpoints", key, &meshv1.EndpointUpdate{Update: &meshv1.EndpointUpdate_Add{Add: &meshv1.AddEndpoints{Endpoints: eps}}})
}

func (f *fakeDestination) removeEndpoints(key string, addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range addrs {
		delete(f.eps[key], a)
	}
	f.broadcastLocked("endpoints", key, &meshv1.EndpointUpdate{Update: &meshv1.EndpointUpdate_Remove{Remove: &meshv1.RemoveEndpoints{Addresses: addrs}}})
}

func (f *fakeDestination) noEndpoints(key string, exists bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if exists {
		f.eps[key] = map[string]*meshv1.Endpoint{}
	} else {
		delete(f.eps, key)
	}
	f.broadcastLocked("endpoints", key, &meshv1.EndpointUpdate{Update: &meshv1.EndpointUpdate_NoEndpoints{NoEndpoints: &meshv1.NoEndpoints{Exists: exists}}})
}

// service sets routes without rules and the given endpoints for key.
func (f *fakeDestination) service(key string, addrs ...string) {
	name, ns, port, ok := parseKey(key)
	if !ok {
		panic("bad key " + key)
	}
	f.setRoutes(key, &meshv1.ServiceRoutes{Name: name, Namespace: ns, Port: uint32(port)})
	f.mu.Lock()
	delete(f.eps, key)
	f.mu.Unlock()
	var eps []*meshv1.Endpoint
	for _, a := range addrs {
		eps = append(eps, &meshv1.Endpoint{Address: a})
	}
	if len(eps) > 0 {
		f.addEndpoints(key, eps...)
	} else {
		f.noEndpoints(key, true)
	}
}

func (f *fakeDestination) streams(counts map[string]int, kind, target string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return counts[kind+" "+target]
}

// activeTargets lists the targets with an open stream, sorted.
func (f *fakeDestination) activeTargets() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for name, n := range f.active {
		if n > 0 {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// updates records every table OnUpdate got.
type updates struct {
	mu     sync.Mutex
	tables []*routetable.Table
}

func (u *updates) record(t *routetable.Table) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.tables = append(u.tables, t)
}

func (u *updates) all() []*routetable.Table {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.tables)
}

func (u *updates) last() *routetable.Table {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.tables) == 0 {
		return nil
	}
	return u.tables[len(u.tables)-1]
}

// harness is a Discovery connected to a fake destination server.
type harness struct {
	fake    *fakeDestination
	addr    string
	stop    func()
	d       *Discovery
	updates *updates
	logs    *logRecorder
}

func newHarness(t *testing.T, static routetable.Table, tune func(*DiscoveryOptions)) *harness {
	t.Helper()
	h := &harness{fake: newFakeDestination(), updates: &updates{}, logs: &logRecorder{}}
	h.addr, h.stop = h.fake.start(t, "127.0.0.1:0")
	opts := DiscoveryOptions{
		Conn:            dial(t, h.addr),
		ClientNamespace: "shop",
		ClientIdentity:  "web.shop.serviceaccount.identity.sluice.cluster.local",
		Static:          static,
		OnUpdate:        h.updates.record,
		Logger:          h.logs.logger(),
		MinBackoff:      10 * time.Millisecond,
		MaxBackoff:      100 * time.Millisecond,
	}
	if tune != nil {
		tune(&opts)
	}
	h.d = NewDiscovery(opts)
	t.Cleanup(func() {
		// OnUpdate is only called on a change.
		all := h.updates.all()
		for i := 1; i < len(all); i++ {
			if reflect.DeepEqual(all[i], all[i-1]) {
				t.Errorf("OnUpdate %d got the same table as the one before it", i)
			}
		}
	})
	return h
}

func (h *harness) run(t *testing.T) { runInBackground(t, h.d.Run) }

func (h *harness) waitSynced(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if err := h.d.WaitSynced(ctx); err != nil {
		t.Fatalf("WaitSynced: %v\nlogs:\n%s", err, h.logs)
	}
}

// waitTable waits until both Table and the last OnUpdate equal want, as
// summarised by summary.
func (h *harness) waitTable(t *testing.T, want map[string][]string) {
	t.Helper()
	end := time.Now().Add(deadline)
	for {
		got, last := summary(h.d.Table()), summary(h.updates.last())
		if reflect.DeepEqual(got, want) && reflect.DeepEqual(last, want) {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("table:\n got  %v\n last OnUpdate %v\n want %v\nlogs:\n%s", got, last, want, h.logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// summary maps each service key to its endpoint addresses, sorted; a
// not-ready endpoint is marked "!" and a weighted one "*weight".
func summary(t *routetable.Table) map[string][]string {
	out := map[string][]string{}
	if t == nil {
		return out
	}
	for _, s := range t.Services {
		eps := []string{}
		for _, e := range s.Endpoints {
			a := e.Address
			if !e.IsReady() {
				a += "!"
			}
			if e.Weight != 0 {
				a += fmt.Sprintf("*%d", e.Weight)
			}
			eps = append(eps, a)
		}
		out[s.Key()] = eps
	}
	return out
}

func service(t *routetable.Table, key string) *routetable.Service {
	if t == nil {
		return nil
	}
	for i := range t.Services {
		if t.Services[i].Key() == key {
			return &t.Services[i]
		}
	}
	return nil
}

// rule is a ServiceRoutes rule sending to weighted backends ("key=weight").
func rule(route string, backends ...string) *meshv1.Rule {
	r := &meshv1.Rule{Route: route, Match: &meshv1.Match{PathType: meshv1.PathMatchType_PATH_MATCH_TYPE_PREFIX, Path: "/"}}
	for _, b := range backends {
		key, w, _ := strings.Cut(b, "=")
		be := &meshv1.Backend{Service: key}
		if w != "" {
			var n uint32
			fmt.Sscan(w, &n)
			be.Weight = proto.Uint32(n)
		}
		r.Backends = append(r.Backends, be)
	}
	return r
}

func TestDiscoveryFirstSync(t *testing.T) {
	static := routetable.Table{Services: []routetable.Service{
		{Name: "legacy", Namespace: "shop", Port: 8080, Endpoints: []routetable.Endpoint{{Address: "10.0.9.9:8080"}}},
		{Name: "web", Namespace: "shop", Port: 80, Endpoints: []routetable.Endpoint{{Address: "192.0.2.1:80"}}},
	}}
	h := newHarness(t, static, nil)
	h.fake.setRoutes("web.shop:80", &meshv1.ServiceRoutes{
		Name: "web", Namespace: "shop", Port: 80,
		Addresses: []string{"10.96.0.10:80", "not-an-address"},
		Protocol:  meshv1.Protocol_PROTOCOL_HTTP1,
	})
	h.fake.addEndpoints("web.shop:80",
		&meshv1.Endpoint{Address: "10.0.0.1:8080", Identity: "web.shop.serviceaccount.identity.sluice.cluster.local", Labels: map[string]string{"pod": "web-1"}},
		&meshv1.Endpoint{Address: "10.0.0.2:8080"})

	h.d.Watch("web.shop:80")
	h.d.Watch("web.shop:80") // idempotent
	h.run(t)
	h.waitSynced(t)

	// WaitSynced guarantees the table is complete when it returns.
	want := map[string][]string{
		"legacy.shop:8080": {"10.0.9.9:8080"},
		"web.shop:80":      {"10.0.0.1:8080", "10.0.0.2:8080"},
	}
	if got := summary(h.d.Table()); !reflect.DeepEqual(got, want) {
		t.Fatalf("table after WaitSynced = %v, want %v", got, want)
	}
	web := service(h.d.Table(), "web.shop:80")
	if !reflect.DeepEqual(web.Addresses, []string{"10.96.0.10:80"}) || web.Protocol != routetable.ProtocolHTTP1 {
		t.Errorf("web.shop:80 addresses %q protocol %q, want the valid address only and http1", web.Addresses, web.Protocol)
	}
	if e := web.Endpoints[0]; e.Identity == "" || e.Labels["pod"] != "web-1" {
		t.Errorf("endpoint lost its identity or labels: %+v", e)
	}
	h.waitTable(t, want)
	if n := h.fake.streams(h.fake.opened, "routes", "web.shop:80") + h.fake.streams(h.fake.opened, "endpoints", "web.shop:80"); n != 2 {
		t.Errorf("streams opened for web.shop:80 = %d, want one of each", n)
	}
	h.fake.mu.Lock()
	for _, r := range h.fake.requests {
		if r.GetClientNamespace() != "shop" || !strings.HasPrefix(r.GetClientIdentity(), "web.shop.") {
			t.Errorf("request %v does not say who asks", r)
		}
	}
	h.fake.mu.Unlock()
}

func TestDiscoveryEndpointUpdates(t *testing.T) {
	h := newHarness(t, routetable.Table{}, nil)
	const key = "api.shop:8080"
	h.fake.service(key)
	h.d.Watch(key)
	h.run(t)
	h.waitSynced(t)
	h.waitTable(t, map[string][]string{key: {}})

	steps := []struct {
		name   string
		change func()
		want   []string
	}{
		{"add two", func() {
			h.fake.addEndpoints(key, &meshv1.Endpoint{Address: "10.0.0.1:80"}, &meshv1.Endpoint{Address: "10.0.0.2:80"})
		}, []string{"10.0.0.1:80", "10.0.0.2:80"}},
		{"remove one", func() { h.fake.removeEndpoints(key, "10.0.0.1:80") }, []string{"10.0.0.2:80"}},
		{"replace one, add an unready one", func() {
			h.fake.addEndpoints(key,
				&meshv1.Endpoint{Address: "10.0.0.2:80", Weight: 5},
				&meshv1.Endpoint{Address: "10.0.0.3:80", Ready: proto.Bool(false)})
		}, []string{"10.0.0.2:80*5", "10.0.0.3:80!"}},
		{"an invalid endpoint is skipped, the rest applied", func() {
			h.fake.addEndpoints(key, &meshv1.Endpoint{Address: ""}, &meshv1.Endpoint{Address: "10.0.0.4:80"})
		}, []string{"10.0.0.2:80*5", "10.0.0.3:80!", "10.0.0.4:80"}},
		{"no endpoints clears", func() { h.fake.noEndpoints(key, true) }, []string{}},
		{"add after clear", func() { h.fake.addEndpoints(key, &meshv1.Endpoint{Address: "10.0.0.5:80"}) }, []string{"10.0.0.5:80"}},
		{"removing the last", func() { h.fake.removeEndpoints(key, "10.0.0.5:80") }, []string{}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.change()
			h.waitTable(t, map[string][]string{key: s.want})
		})
	}
}

func TestDiscoveryRouteChange(t *testing.T) {
	h := newHarness(t, routetable.Table{}, nil)
	routes := func(primary, canary uint32) *meshv1.ServiceRoutes {
		return &meshv1.ServiceRoutes{Name: "web", Namespace: "shop", Port: 80, Rules: []*meshv1.Rule{
			rule("shop/web", fmt.Sprintf("web-primary.shop:80=%d", primary), fmt.Sprintf("web-canary.shop:80=%d", canary)),
		}}
	}
	h.fake.setRoutes("web.shop:80", routes(100, 0))
	h.fake.noEndpoints("web.shop:80", true)
	h.fake.service("web-primary.shop:80", "10.0.1.1:80")
	h.fake.service("web-canary.shop:80", "10.0.2.1:80")
	h.d.Watch("web.shop:80")
	h.run(t)
	h.waitSynced(t)

	weights := func(tbl *routetable.Table) []uint32 {
		s := service(tbl, "web.shop:80")
		if s == nil || len(s.Rules) != 1 {
			return nil
		}
		var out []uint32
		for _, b := range s.Rules[0].Backends {
			out = append(out, b.EffectiveWeight())
		}
		return out
	}
	waitWeights := func(want ...uint32) {
		t.Helper()
		eventually(t, fmt.Sprintf("weights %v", want), func() bool {
			return reflect.DeepEqual(weights(h.d.Table()), want) && reflect.DeepEqual(weights(h.updates.last()), want)
		})
	}
	waitWeights(100, 0)

	for _, w := range [][2]uint32{{90, 10}, {50, 50}, {0, 100}} {
		h.fake.setRoutes("web.shop:80", routes(w[0], w[1]))
		waitWeights(w[0], w[1])
	}

	// An invalid snapshot is ignored: the previous routes stay in force
	// until a valid one arrives.
	h.fake.sendRoutes("web.shop:80", &meshv1.ServiceRoutes{Name: "web", Namespace: "shop", Port: 80, Protocol: 99})
	eventually(t, "the invalid snapshot to be logged", func() bool { return h.logs.count("invalid routes", "web.shop:80") > 0 })
	if got := weights(h.d.Table()); !reflect.DeepEqual(got, []uint32{0, 100}) {
		t.Fatalf("after an invalid snapshot the weights are %v, want the previous 0/100", got)
	}
	h.fake.setRoutes("web.shop:80", routes(30, 70))
	waitWeights(30, 70)
	checkUpdates(t, h.updates.all(), false)
	for i, tbl := range h.updates.all() {
		if service(tbl, "web.shop:80") != nil && weights(tbl) == nil {
			t.Errorf("OnUpdate %d had web.shop:80 without its rule: %v", i, summary(tbl))
		}
	}
}

func TestDiscoveryTransitiveBackends(t *testing.T) {
	h := newHarness(t, routetable.Table{}, nil)
	web := &meshv1.ServiceRoutes{Name: "web", Namespace: "shop", Port: 80, Rules: []*meshv1.Rule{
		rule("shop/web", "web-primary.shop:80=90", "web-canary.shop:80=10"),
	}}
	web.Rules[0].Filters = &meshv1.Filters{Mirrors: []*meshv1.Mirror{{Backend: "shadow.shop:80"}}}
	h.fake.setRoutes("web.shop:80", web)
	h.fake.noEndpoints("web.shop:80", true)
	// web-primary routes further, to a pool: watched transitively.
	h.fake.setRoutes("web-primary.shop:80", &meshv1.ServiceRoutes{Name: "web-primary", Namespace: "shop", Port: 80, Rules: []*meshv1.Rule{
		rule("shop/primary", "pool.shop:80"),
	}})
	h.fake.addEndpoints("web-primary.shop:80", &meshv1.Endpoint{Address: "10.0.1.1:80"})
	h.fake.service("pool.shop:80", "10.0.3.1:80", "10.0.3.2:80")
	h.fake.service("web-canary.shop:80", "10.0.2.1:80")
	h.fake.service("shadow.shop:80", "10.0.4.1:80")

	h.d.Watch("web.shop:80")
	h.run(t)
	h.waitSynced(t)
	want := map[string][]string{
		"web.shop:80":         {},
		"web-primary.shop:80": {"10.0.1.1:80"},
		"pool.shop:80":        {"10.0.3.1:80", "10.0.3.2:80"},
		"web-canary.shop:80":  {"10.0.2.1:80"},
		"shadow.shop:80":      {"10.0.4.1:80"},
	}
	if got := summary(h.d.Table()); !reflect.DeepEqual(got, want) {
		t.Fatalf("table after WaitSynced = %v, want %v", got, want)
	}
	h.waitTable(t, want)

	// The canary leaves the route: its streams close and it leaves the table.
	h.fake.setRoutes("web.shop:80", &meshv1.ServiceRoutes{Name: "web", Namespace: "shop", Port: 80, Rules: []*meshv1.Rule{
		rule("shop/web", "web-primary.shop:80"),
	}})
	delete(want, "web-canary.shop:80")
	delete(want, "shadow.shop:80")
	h.waitTable(t, want)
	eventually(t, "the canary and shadow streams to close", func() bool {
		return reflect.DeepEqual(h.fake.activeTargets(), []string{
			"endpoints pool.shop:80", "endpoints web-primary.shop:80", "endpoints web.shop:80",
			"routes pool.shop:80", "routes web-primary.shop:80", "routes web.shop:80",
		})
	})

	// A new backend joins, and is watched.
	h.fake.service("web-canary.shop:80", "10.0.2.2:80")
	h.fake.setRoutes("web.shop:80", &meshv1.ServiceRoutes{Name: "web", Namespace: "shop", Port: 80, Rules: []*meshv1.Rule{
		rule("shop/web", "web-primary.shop:80=50", "web-canary.shop:80=50"),
	}})
	want["web-canary.shop:80"] = []string{"10.0.2.2:80"}
	h.waitTable(t, want)

	// Unwatching the root drops everything it reached.
	h.d.Unwatch("web.shop:80")
	h.waitTable(t, map[string][]string{})
	eventually(t, "every stream to close", func() bool { return len(h.fake.activeTargets()) == 0 })
}

func TestDiscoveryRouteChangeWaitsForNewBackends(t *testing.T) {
	h := newHarness(t, routetable.Table{}, func(o *DiscoveryOptions) { o.InitialTimeout = 100 * time.Millisecond })
	h.fake.setRoutes("web.shop:80", &meshv1.ServiceRoutes{Name: "web", Namespace: "shop", Port: 80, Rules: []*meshv1.Rule{
		rule("shop/web", "web-primary.shop:80"),
	}})
	h.fake.noEndpoints("web.shop:80", true)
	h.fake.service("web-primary.shop:80", "10.0.1.1:80")
	h.fake.service("web-canary.shop:80", "10.0.2.1:80")
	h.fake.silent["web-canary.shop:80"] = true // its streams say nothing for now
	h.d.Watch("web.shop:80")
	h.run(t)
	h.waitSynced(t)
	want := map[string][]string{"web.shop:80": {}, "web-primary.shop:80": {"10.0.1.1:80"}}
	h.waitTable(t, want)

	backends := func() []string {
		s := service(h.d.Table(), "web.shop:80")
		var out []string
		for _, b := range s.Rules[0].Backends {
			out = append(out, b.Service)
		}
		return out
	}
	// The route now splits to the canary, whose streams do not answer: the
	// table keeps the previous route rather than send to an unknown backend.
	h.fake.setRoutes("web.shop:80", &meshv1.ServiceRoutes{Name: "web", Namespace: "shop", Port: 80, Rules: []*meshv1.Rule{
		rule("shop/web", "web-primary.shop:80=50", "web-canary.shop:80=50"),
	}})
	eventually(t, "the canary streams to be tried twice", func() bool {
		return h.fake.streams(h.fake.opened, "endpoints", "web-canary.shop:80") >= 2
	})
	if got := backends(); !reflect.DeepEqual(got, []string{"web-primary.shop:80"}) {
		t.Fatalf("while the canary is unknown web routes to %v, want the previous route", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	err := h.d.WaitSynced(ctx)
	cancel()
	if err == nil {
		t.Error("WaitSynced returned nil while the canary has not synced")
	}

	// The canary answers: the new route applies, canary included.
	h.fake.mu.Lock()
	delete(h.fake.silent, "web-canary.shop:80")
	h.fake.mu.Unlock()
	want["web-canary.shop:80"] = []string{"10.0.2.1:80"}
	h.waitTable(t, want)
	eventually(t, "the new route", func() bool {
		return reflect.DeepEqual(backends(), []string{"web-primary.shop:80", "web-canary.shop:80"})
	})
	checkUpdates(t, h.updates.all(), false)
}

func TestDiscoveryBackendAlsoWatchedExplicitly(t *testing.T) {
	h := newHarness(t, routetable.Table{}, nil)
	h.fake.setRoutes("web.shop:80", &meshv1.ServiceRoutes{Name: "web", Namespace: "shop", Port: 80, Rules: []*meshv1.Rule{
		rule("shop/web", "api.shop:80"),
	}})
	h.fake.noEndpoints("web.shop:80", true)
	h.fake.service("api.shop:80", "10.0.5.1:80")
	h.d.Watch("web.shop:80")
	h.d.Watch("api.shop:80")
	h.run(t)
	h.waitSynced(t)
	want := map[string][]string{"web.shop:80": {}, "api.shop:80": {"10.0.5.1:80"}}
	h.waitTable(t, want)

	// Still a backend of web: stays.
	h.d.Unwatch("api.shop:80")
	h.d.Unwatch("api.shop:80")
	h.fake.addEndpoints("api.shop:80", &meshv1.Endpoint{Address: "10.0.5.2:80"})
	want["api.shop:80"] = []string{"10.0.5.1:80", "10.0.5.2:80"}
	h.waitTable(t, want)
	if n := h.fake.streams(h.fake.opened, "endpoints", "api.shop:80"); n != 1 {
		t.Errorf("api.shop:80 endpoint streams opened = %d, want 1 (kept across the unwatch)", n)
	}
}

func TestDiscoveryWatchByAddress(t *testing.T) {
	h := newHarness(t, routetable.Table{}, nil)
	h.fake.aliases["10.96.0.10:80"] = "web.shop:80"
	h.fake.aliases["web.shop.svc.cluster.local:80"] = "web.shop:80"
	// The route's parent is also one of its backends (a GAMMA route sending
	// most traffic to the service itself).
	h.fake.setRoutes("web.shop:80", &meshv1.ServiceRoutes{
		Name: "web", Namespace: "shop", Port: 80, Addresses: []string{"10.96.0.10:80"},
		Rules: []*meshv1.Rule{rule("shop/web", "web.shop:80=9", "web-v2.shop:80=1")},
	})
	h.fake.addEndpoints("web.shop:80", &meshv1.Endpoint{Address: "10.0.0.1:80"})
	h.fake.service("web-v2.shop:80", "10.0.0.2:80")

	h.d.Watch("10.96.0.10:80")
	h.d.Watch("web.shop.svc.cluster.local:80")
	h.d.Watch("10.96.0.99:80") // unknown to the control plane
	h.run(t)
	h.waitSynced(t)
	want := map[string][]string{"web.shop:80": {"10.0.0.1:80"}, "web-v2.shop:80": {"10.0.0.2:80"}}
	if got := summary(h.d.Table()); !reflect.DeepEqual(got, want) {
		t.Fatalf("table after WaitSynced = %v, want %v", got, want)
	}
	if s := service(h.d.Table(), "web.shop:80"); !reflect.DeepEqual(s.Addresses, []string{"10.96.0.10:80"}) {
		t.Errorf("web.shop:80 addresses = %q, want the cluster IP", s.Addresses)
	}
	h.waitTable(t, want)
	if n := h.fake.streams(h.fake.opened, "routes", "web.shop:80"); n != 0 {
		t.Errorf("web.shop:80 was also watched by key (%d streams); the address watch already serves it", n)
	}

	// A backend named by key that no synced watch serves is watched.
	h.d.Unwatch("10.96.0.10:80")
	h.d.Unwatch("web.shop.svc.cluster.local:80")
	h.d.Watch("front.shop:80")
	h.fake.setRoutes("front.shop:80", &meshv1.ServiceRoutes{Name: "front", Namespace: "shop", Port: 80, Rules: []*meshv1.Rule{rule("shop/front", "web.shop:80")}})
	want["front.shop:80"] = []string{}
	h.waitTable(t, want)
}

func TestDiscoveryUnknownKeyService(t *testing.T) {
	h := newHarness(t, routetable.Table{}, nil)
	h.d.Watch("ghost.shop:80")
	h.run(t)
	h.waitSynced(t)
	s := service(h.d.Table(), "ghost.shop:80")
	if s == nil || s.Known() || len(s.Endpoints) != 0 {
		t.Fatalf("ghost.shop:80 = %+v, want a service that does not exist (so requests get 503)", s)
	}
}

func TestDiscoveryControlPlaneDown(t *testing.T) {
	h := newHarness(t, routetable.Table{}, nil)
	h.fake.setRoutes("web.shop:80", &meshv1.ServiceRoutes{Name: "web", Namespace: "shop", Port: 80,
		Addresses: []string{"10.96.0.10:80"}, Rules: []*meshv1.Rule{rule("shop/web", "web-primary.shop:80")}})
	h.fake.addEndpoints("web.shop:80", &meshv1.Endpoint{Address: "10.0.0.1:80"}, &meshv1.Endpoint{Address: "10.0.0.2:80"})
	h.fake.service("web-primary.shop:80", "10.0.1.1:80")
	h.d.Watch("web.shop:80")
	h.run(t)
	h.waitSynced(t)
	before := map[string][]string{"web.shop:80": {"10.0.0.1:80", "10.0.0.2:80"}, "web-primary.shop:80": {"10.0.1.1:80"}}
	h.waitTable(t, before)
	beforeTable := h.d.Table()
	nUpdates := len(h.updates.all())

	h.stop()
	for _, target := range []string{"web.shop:80", "web-primary.shop:80"} {
		for _, kind := range []string{"routes", "endpoints"} {
			eventually(t, kind+" stream of "+target+" to fail", func() bool {
				return h.logs.count("stream failed", "target="+target, "stream="+kind) > 0
			})
		}
	}
	// Several reconnection attempts fail while it is down.
	eventually(t, "reconnection attempts", func() bool { return h.logs.count("stream failed", "target=web.shop:80", "stream=routes") >= 3 })
	if got := h.d.Table(); !reflect.DeepEqual(got, beforeTable) {
		t.Fatalf("while the control plane is down the table changed:\n got  %v\n want %v", summary(got), before)
	}
	if n := len(h.updates.all()); n != nUpdates {
		t.Fatalf("OnUpdate was called %d times while the control plane was down", n-nUpdates)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	if err := h.d.WaitSynced(ctx); err != nil {
		t.Errorf("WaitSynced while down = %v, want nil (the kept state is synced)", err)
	}
	cancel()

	// The control plane comes back on the same address with a different
	// state: the first messages of the new streams replace what was kept.
	fresh := newFakeDestination()
	fresh.setRoutes("web.shop:80", &meshv1.ServiceRoutes{Name: "web", Namespace: "shop", Port: 80,
		Addresses: []string{"10.96.0.11:80"}, Rules: []*meshv1.Rule{rule("shop/web", "web-primary.shop:80")}})
	fresh.addEndpoints("web.shop:80", &meshv1.Endpoint{Address: "10.0.0.3:80"})
	fresh.noEndpoints("web-primary.shop:80", false)
	fresh.setRoutes("web-primary.shop:80", &meshv1.ServiceRoutes{Name: "web-primary", Namespace: "shop", Port: 80})
	fresh.start(t, h.addr)
	h.waitTable(t, map[string][]string{"web.shop:80": {"10.0.0.3:80"}, "web-primary.shop:80": {}})
	// The routes stream resyncs on its own schedule.
	eventually(t, "the new addresses", func() bool {
		s := service(h.d.Table(), "web.shop:80")
		return reflect.DeepEqual(s.Addresses, []string{"10.96.0.11:80"})
	})
	checkUpdates(t, h.updates.all(), false)
	for i, tbl := range h.updates.all() {
		if s := service(tbl, "web.shop:80"); s != nil && len(s.Endpoints) == 0 {
			t.Errorf("OnUpdate %d lost web.shop:80's endpoints: %v", i, summary(tbl))
		}
	}
}

func TestDiscoveryInitialTimeout(t *testing.T) {
	h := newHarness(t, routetable.Table{}, func(o *DiscoveryOptions) { o.InitialTimeout = 100 * time.Millisecond })
	h.fake.silent["slow.shop:80"] = true
	h.d.Watch("slow.shop:80")
	h.run(t)
	eventually(t, "the silent stream to be reopened", func() bool {
		return h.fake.streams(h.fake.opened, "routes", "slow.shop:80") >= 3
	})
	if h.logs.count("no first message", "target=slow.shop:80") == 0 {
		t.Errorf("the timeout was not logged:\n%s", h.logs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := h.d.WaitSynced(ctx); err == nil || !strings.Contains(err.Error(), "slow.shop:80") {
		t.Errorf("WaitSynced = %v, want an error naming slow.shop:80", err)
	}
	// Once the server answers, the stream syncs.
	h.fake.mu.Lock()
	delete(h.fake.silent, "slow.shop:80")
	h.fake.mu.Unlock()
	h.waitSynced(t)
}

func TestDiscoveryCoalescesBursts(t *testing.T) {
	h := newHarness(t, routetable.Table{}, nil)
	const key = "api.shop:80"
	h.fake.service(key)
	h.d.Watch(key)
	h.run(t)
	h.waitSynced(t)
	h.waitTable(t, map[string][]string{key: {}})
	start := len(h.updates.all())
	const n = 200
	var want []string
	for i := range n {
		a := fmt.Sprintf("10.1.%d.%d:80", i/250, i%250)
		h.fake.addEndpoints(key, &meshv1.Endpoint{Address: a})
		want = append(want, a)
	}
	slices.Sort(want)
	h.waitTable(t, map[string][]string{key: want})
	// Every update carries a complete table; a burst produces fewer
	// updates than changes (each update covers all changes until then).
	got := h.updates.all()[start:]
	for i := 1; i < len(got); i++ {
		if len(service(got[i], key).Endpoints) <= len(service(got[i-1], key).Endpoints) {
			t.Errorf("update %d does not grow the endpoint set", i)
		}
	}
	t.Logf("%d changes arrived as %d updates", n, len(got))
}

func TestDiscoveryRunTwiceAndNoConn(t *testing.T) {
	h := newHarness(t, routetable.Table{}, nil)
	h.run(t)
	eventually(t, "Run to start", func() bool {
		h.d.mu.Lock()
		defer h.d.mu.Unlock()
		return h.d.runCtx != nil
	})
	if err := h.d.Run(context.Background()); err == nil {
		t.Error("a second Run succeeded")
	}
	if err := NewDiscovery(DiscoveryOptions{}).Run(context.Background()); err == nil || !strings.Contains(err.Error(), "Conn") {
		t.Errorf("Run without a connection = %v, want an error naming Conn", err)
	}
}

func TestParseKey(t *testing.T) {
	tests := []struct {
		in       string
		name, ns string
		port     int
		ok       bool
	}{
		{"web.shop:80", "web", "shop", 80, true},
		{"web.shop.svc.cluster.local:80", "", "", 0, false},
		{"10.96.0.10:80", "", "", 0, false},
		{"[fd00::1]:80", "", "", 0, false},
		{"web:80", "", "", 0, false},
		{"web.shop", "", "", 0, false},
		{"web.shop:0", "", "", 0, false},
		{"web.shop:70000", "", "", 0, false},
		{".shop:80", "", "", 0, false},
	}
	for _, tt := range tests {
		name, ns, port, ok := parseKey(tt.in)
		if name != tt.name || ns != tt.ns || port != tt.port || ok != tt.ok {
			t.Errorf("parseKey(%q) = %q, %q, %d, %v; want %q, %q, %d, %v", tt.in, name, ns, port, ok, tt.name, tt.ns, tt.port, tt.ok)
		}
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{min: 100 * time.Millisecond, max: 10 * time.Second}
	prevCap := time.Duration(0)
	for i := range 20 {
		capNow := min(100*time.Millisecond<<i, 10*time.Second)
		d := b.next()
		if d < capNow/2 || d > capNow {
			t.Fatalf("attempt %d waits %s, want within [%s, %s]", i, d, capNow/2, capNow)
		}
		prevCap = capNow
	}
	if prevCap != 10*time.Second {
		t.Fatalf("the cap never reached the maximum")
	}
	b.reset()
	if d := b.next(); d > 100*time.Millisecond {
		t.Fatalf("after reset the wait is %s, want at most the minimum", d)
	}
}

// checkUpdates checks that no update loses a service an earlier one had, and
// that every rule only sends to services in the table. With endpoints set, a
// service must not lose its last endpoint either.
func checkUpdates(t *testing.T, tables []*routetable.Table, endpoints bool) {
	t.Helper()
	seen := map[string]bool{}
	for i, tbl := range tables {
		for key := range seen {
			if s := service(tbl, key); s == nil || endpoints && len(s.Endpoints) == 0 {
				t.Errorf("OnUpdate %d lost %s: %v", i, key, summary(tbl))
			}
		}
		for _, s := range tbl.Services {
			seen[s.Key()] = true
			for _, b := range referenced(&s) {
				if service(tbl, b) == nil {
					t.Errorf("OnUpdate %d: %s routes to %s, which is not in the table", i, s.Key(), b)
				}
			}
		}
	}
}
