package controlplane

import (
	"reflect"
	"sync"
	"testing"

	"google.golang.org/grpc"

	"github.com/sluicehq/sluice/mesh/api/meshv1"
	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/mesh/destination"
)

// memSource is an in-memory destination.Source: compiled services by key,
// and aliases (cluster IPs, authorities) resolving to keys.
type memSource struct {
	mu       sync.Mutex
	services map[string]routetable.Service
	aliases  map[string]string
	changed  chan struct{}
}

func newMemSource() *memSource {
	return &memSource{services: map[string]routetable.Service{}, aliases: map[string]string{}, changed: make(chan struct{})}
}

func (m *memSource) Resolve(target string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if k, ok := m.aliases[target]; ok {
		return k, true
	}
	_, ok := m.services[target]
	return target, ok
}

func (m *memSource) Service(key, _ string) (routetable.Service, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.services[key]
	s.Endpoints = append([]routetable.Endpoint(nil), s.Endpoints...)
	s.Rules = append([]routetable.Rule(nil), s.Rules...)
	return s, ok
}

func (m *memSource) Changed() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changed
}

// set stores s (and its addresses as aliases) and broadcasts the change.
func (m *memSource) set(s routetable.Service) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.services[s.Key()] = s
	for _, a := range s.Addresses {
		m.aliases[a] = s.Key()
	}
	close(m.changed)
	m.changed = make(chan struct{})
}

func weighted(key string, w uint32) routetable.Backend {
	return routetable.Backend{Service: key, Weight: &w}
}

func eps(addrs ...string) []routetable.Endpoint {
	var out []routetable.Endpoint
	for _, a := range addrs {
		out = append(out, routetable.Endpoint{Address: a})
	}
	return out
}

// TestDiscoveryWithRealDestinationServer runs Discovery against the control
// plane's own destination server: a canary's weights shift and endpoints
// come and go, the server shuts down and comes back.
func TestDiscoveryWithRealDestinationServer(t *testing.T) {
	src := newMemSource()
	apex := func(primary, canary uint32) routetable.Service {
		return routetable.Service{
			Name: "web", Namespace: "shop", Port: 80, Addresses: []string{"10.96.0.10:80"},
			Endpoints: eps("10.0.0.1:8080"),
			Rules: []routetable.Rule{{
				Route:    "shop/web",
				Match:    routetable.Match{PathType: routetable.PathPrefix, Path: "/"},
				Backends: []routetable.Backend{weighted("web-primary.shop:80", primary), weighted("web-canary.shop:80", canary)},
			}},
		}
	}
	src.set(apex(100, 0))
	src.set(routetable.Service{Name: "web-primary", Namespace: "shop", Port: 80, Endpoints: eps("10.0.1.1:8080", "10.0.1.2:8080")})
	src.set(routetable.Service{Name: "web-canary", Namespace: "shop", Port: 80, Endpoints: eps("10.0.2.1:8080")})

	start := func(addr string) (string, *destination.Server, func()) {
		ds := destination.NewServer(src, (&logRecorder{}).logger())
		gs := grpc.NewServer()
		meshv1.RegisterDestinationServer(gs, ds)
		bound, stop := serve(t, gs, addr)
		return bound, ds, func() { ds.Close(); stop() }
	}
	addr, _, stop := start("127.0.0.1:0")
	h := &harness{updates: &updates{}, logs: &logRecorder{}}
	h.d = NewDiscovery(DiscoveryOptions{
		Conn:            dial(t, addr),
		ClientNamespace: "shop",
		OnUpdate:        h.updates.record,
		Logger:          h.logs.logger(),
	})
	h.d.Watch("10.96.0.10:80")
	h.run(t)
	h.waitSynced(t)
	want := map[string][]string{
		"web.shop:80":         {"10.0.0.1:8080"},
		"web-primary.shop:80": {"10.0.1.1:8080", "10.0.1.2:8080"},
		"web-canary.shop:80":  {"10.0.2.1:8080"},
	}
	if got := summary(h.d.Table()); !reflect.DeepEqual(got, want) {
		t.Fatalf("table after WaitSynced = %v, want %v", got, want)
	}
	h.waitTable(t, want)

	weights := func() []uint32 {
		s := service(h.updates.last(), "web.shop:80")
		if s == nil || len(s.Rules) != 1 {
			return nil
		}
		return []uint32{s.Rules[0].Backends[0].EffectiveWeight(), s.Rules[0].Backends[1].EffectiveWeight()}
	}
	for _, w := range [][2]uint32{{90, 10}, {50, 50}, {0, 100}} {
		src.set(apex(w[0], w[1]))
		eventually(t, "the new weights", func() bool { return reflect.DeepEqual(weights(), w[:]) })
	}

	// A canary replica is added, a primary one removed.
	src.set(routetable.Service{Name: "web-canary", Namespace: "shop", Port: 80, Endpoints: eps("10.0.2.1:8080", "10.0.2.2:8080")})
	src.set(routetable.Service{Name: "web-primary", Namespace: "shop", Port: 80, Endpoints: eps("10.0.1.2:8080")})
	want["web-canary.shop:80"] = []string{"10.0.2.1:8080", "10.0.2.2:8080"}
	want["web-primary.shop:80"] = []string{"10.0.1.2:8080"}
	h.waitTable(t, want)

	// The destination server shuts down: the proxy keeps everything.
	stop()
	eventually(t, "the streams to fail", func() bool { return h.logs.count("stream failed") >= 6 })
	h.waitTable(t, want)

	// It comes back after a change made while it was down.
	src.set(routetable.Service{Name: "web-canary", Namespace: "shop", Port: 80, Endpoints: eps("10.0.2.3:8080")})
	start(addr)
	want["web-canary.shop:80"] = []string{"10.0.2.3:8080"}
	h.waitTable(t, want)
	checkUpdates(t, h.updates.all(), true)
}
