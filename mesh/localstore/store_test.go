package localstore

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/mesh/destination"
)

// The store is the local-mode discovery source.
var _ destination.Source = (*Store)(nil)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// service parses a Service from YAML.
func service(t testing.TB, doc string) *corev1.Service {
	t.Helper()
	var svc corev1.Service
	if err := yaml.UnmarshalStrict([]byte(doc), &svc); err != nil {
		t.Fatalf("parse service: %v\n%s", err, doc)
	}
	return &svc
}

// httpRoute parses an HTTPRoute from YAML.
func httpRoute(t testing.TB, doc string) *gatewayv1.HTTPRoute {
	t.Helper()
	var r gatewayv1.HTTPRoute
	if err := yaml.UnmarshalStrict([]byte(doc), &r); err != nil {
		t.Fatalf("parse route: %v\n%s", err, doc)
	}
	return &r
}

const webService = `
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  clusterIP: 10.96.0.10
  ports:
  - {name: http, port: 80, appProtocol: http}
  - {name: grpc, port: 9090, appProtocol: grpc}
  - {name: dns, port: 53, protocol: UDP}
`

// splitRoute is a producer route for web.shop:80 splitting between
// web-primary and web-canary.
func splitRoute(t testing.TB, primary, canary int) *gatewayv1.HTTPRoute {
	return httpRoute(t, fmt.Sprintf(`
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{group: core, kind: Service, name: web, port: 80}]
  rules:
  - backendRefs:
    - {name: web-primary, port: 80, weight: %d}
    - {name: web-canary, port: 80, weight: %d}
`, primary, canary))
}

func replica(pod, app, addr string, ready bool) Replica {
	return Replica{
		Namespace: "shop", Workload: app, Pod: pod, Revision: "r1",
		Labels:   map[string]string{"app": app},
		Address:  addr,
		Identity: app + ".shop.serviceaccount.identity.sluice.cluster.local",
		Ready:    ready,
		Protocol: routetable.ProtocolHTTP2,
	}
}

func addresses(eps []routetable.Endpoint) []string {
	var out []string
	for _, e := range eps {
		out = append(out, e.Address)
	}
	return out
}

func TestResolve(t *testing.T) {
	s := New()
	s.ApplyService(service(t, webService))
	s.ApplyService(service(t, `
metadata: {name: api}
spec:
  clusterIPs: ["fd00::20", "10.96.0.20"]
  ports: [{port: 8080}]
`))
	s.ApplyService(service(t, `
metadata: {name: headless, namespace: shop}
spec:
  clusterIP: None
  ports: [{port: 7000}]
`))
	tests := []struct {
		target string
		want   string // "" means not found
	}{
		{"web.shop:80", "web.shop:80"},
		{"web.shop:9090", "web.shop:9090"},
		{"web.shop.svc.cluster.local:80", "web.shop:80"},
		{"web.shop.svc.cluster.local.:80", "web.shop:80"},
		{"WEB.Shop.svc:80", "web.shop:80"},
		{"web.shop.svc.cluster.local", "web.shop:80"},
		{"web.shop", "web.shop:80"},
		{"web.shop.svc:9090", "web.shop:9090"},
		{"10.96.0.10:80", "web.shop:80"},
		{"10.96.0.10:9090", "web.shop:9090"},
		{"api.default:8080", "api.default:8080"},
		{"api.default.svc.cluster.local:8080", "api.default:8080"},
		{"10.96.0.20:8080", "api.default:8080"},
		{"[fd00::20]:8080", "api.default:8080"},
		{"[FD00:0::20]:8080", "api.default:8080"},
		{"headless.shop:7000", "headless.shop:7000"},
		{"web.shop.svc:9090 ", "web.shop:9090"},
		// Not found.
		{"web.shop:53", ""},    // UDP port: not meshed
		{"web.shop:81", ""},    // no such port
		{"web.other:80", ""},   // other namespace
		{"10.96.0.10:81", ""},  // no such port on the VIP
		{"api.default:80", ""}, // port 80 only is implied
		{"api.default", ""},    // no port and not 80
		{"None:7000", ""},      // headless has no VIP
		{"web:80", ""},         // needs a namespace
		{"", ""},
	}
	for _, tt := range tests {
		got, ok := s.Resolve(tt.target)
		if ok != (tt.want != "") || got != tt.want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", tt.target, got, ok, tt.want)
		}
	}
	s.DeleteService("shop", "web")
	if got, ok := s.Resolve("web.shop:80"); ok {
		t.Errorf("after delete, Resolve = %q, true; want not found", got)
	}
}

func TestServiceSelectsReplicas(t *testing.T) {
	s := New()
	s.ApplyService(service(t, webService))
	s.ApplyService(service(t, `
metadata: {name: web-canary, namespace: shop}
spec:
  selector: {app: web, track: canary}
  ports: [{port: 80}]
`))
	s.ApplyService(service(t, `
metadata: {name: manual, namespace: shop}
spec:
  ports: [{port: 80}]
`))
	primary := replica("web-1", "web", "127.0.0.1:5001", true)
	canary := replica("web-canary-1", "web", "127.0.0.1:5002", false)
	canary.Labels["track"] = "canary"
	canary.Workload = "web-canary"
	other := replica("web-x", "web", "127.0.0.1:5003", true)
	other.Namespace = "other"
	noAddr := replica("web-2", "web", "", true)
	dupAddr := replica("web-3", "web", "127.0.0.1:5001", true) // same address as web-1, later pod name
	for _, r := range []Replica{primary, canary, other, noAddr, dupAddr} {
		s.SetReplica(r)
	}

	tests := []struct {
		key  string
		want []string
	}{
		{"web.shop:80", []string{"127.0.0.1:5001", "127.0.0.1:5002"}},
		{"web.shop:9090", []string{"127.0.0.1:5001", "127.0.0.1:5002"}},
		{"web-canary.shop:80", []string{"127.0.0.1:5002"}},
		{"manual.shop:80", nil}, // selectorless: no managed endpoints
	}
	for _, tt := range tests {
		svc, ok := s.Service(tt.key, "")
		if !ok {
			t.Fatalf("Service(%q) not found", tt.key)
		}
		if got := addresses(svc.Endpoints); !slices.Equal(got, tt.want) {
			t.Errorf("Service(%q) endpoints = %v, want %v", tt.key, got, tt.want)
		}
	}

	svc, _ := s.Service("web.shop:80", "")
	if svc.Name != "web" || svc.Namespace != "shop" || svc.Port != 80 {
		t.Errorf("service identity = %s/%s:%d", svc.Namespace, svc.Name, svc.Port)
	}
	if !slices.Equal(svc.Addresses, []string{"10.96.0.10:80"}) {
		t.Errorf("addresses = %v", svc.Addresses)
	}
	if svc.Protocol != routetable.ProtocolHTTP1 {
		t.Errorf("protocol = %q, want http1 (appProtocol http)", svc.Protocol)
	}
	ep := svc.Endpoints[0]
	if ep.Labels["pod"] != "web-1" {
		t.Fatalf("duplicate address: got pod %q, want the first pod by name, web-1", ep.Labels["pod"])
	}
	wantLabels := map[string]string{
		"namespace": "shop", "deployment": "web", "workload_kind": "deployment",
		"pod": "web-1", "revision": "r1", "serviceaccount": "web",
	}
	if fmt.Sprint(ep.Labels) != fmt.Sprint(wantLabels) {
		t.Errorf("labels = %v, want %v", ep.Labels, wantLabels)
	}
	if ep.Identity != primary.Identity || ep.Protocol != routetable.ProtocolHTTP2 || !ep.IsReady() {
		t.Errorf("endpoint = %+v", ep)
	}
	if svc.Endpoints[1].IsReady() {
		t.Errorf("unready canary endpoint reported ready")
	}

	// A label change moves the replica out of the canary service.
	canary.Labels = map[string]string{"app": "web"}
	s.SetReplica(canary)
	svc, _ = s.Service("web-canary.shop:80", "")
	if len(svc.Endpoints) != 0 {
		t.Errorf("after relabel, canary endpoints = %v, want none", addresses(svc.Endpoints))
	}
	s.RemoveReplica("shop", "web-1")
	s.RemoveReplica("shop", "web-3")
	svc, _ = s.Service("web.shop:80", "")
	if got := addresses(svc.Endpoints); !slices.Equal(got, []string{"127.0.0.1:5002"}) {
		t.Errorf("after removals, endpoints = %v", got)
	}
	if _, ok := s.Service("nope.shop:80", ""); ok {
		t.Errorf("unknown key found")
	}
}

func TestServiceAccountOf(t *testing.T) {
	tests := map[string]string{
		"web.shop.serviceaccount.identity.sluice.cluster.local": "web",
		"":                           "",
		"web.shop.svc.cluster.local": "",
		"web.shop.serviceaccount":    "",
		"web.shop.serviceaccount.other.sluice.local": "",
	}
	for in, want := range tests {
		if got := serviceAccountOf(in); got != want {
			t.Errorf("serviceAccountOf(%q) = %q, want %q", in, got, want)
		}
	}
}

// fired reports whether ch is closed, without waiting.
func fired(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestChangedBroadcast(t *testing.T) {
	s := New()
	r := replica("web-1", "web", "127.0.0.1:5001", true)
	route := splitRoute(t, 100, 0)
	steps := []struct {
		name    string
		mutate  func()
		changes bool
	}{
		{"apply service", func() { s.ApplyService(service(t, webService)) }, true},
		{"apply same service", func() { s.ApplyService(service(t, webService)) }, false},
		{"set replica", func() { s.SetReplica(r) }, true},
		{"set same replica", func() { s.SetReplica(r) }, false},
		{"flip ready", func() { r.Ready = false; s.SetReplica(r) }, true},
		{"apply route", func() { s.ApplyHTTPRoute(route) }, true},
		{"apply same route", func() { s.ApplyHTTPRoute(route) }, false},
		{"update to same weights", func() {
			if err := s.UpdateHTTPRoute("shop", "web", func(*gatewayv1.HTTPRoute) error { return nil }); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"update weights", func() {
			if err := s.UpdateHTTPRoute("shop", "web", setWeights(90, 10)); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"delete missing route", func() { s.DeleteHTTPRoute("shop", "nope") }, false},
		{"delete route", func() { s.DeleteHTTPRoute("shop", "web") }, true},
		{"remove missing replica", func() { s.RemoveReplica("shop", "nope") }, false},
		{"remove replica", func() { s.RemoveReplica("shop", "web-1") }, true},
		{"delete missing service", func() { s.DeleteService("shop", "nope") }, false},
		{"delete service", func() { s.DeleteService("shop", "web") }, true},
	}
	for _, st := range steps {
		ch1, ch2 := s.Changed(), s.Changed()
		gen := s.Generation()
		st.mutate()
		if fired(ch1) != st.changes || fired(ch2) != st.changes {
			t.Errorf("%s: channels fired = %v/%v, want %v", st.name, fired(ch1), fired(ch2), st.changes)
		}
		if got := s.Generation(); (got != gen) != st.changes {
			t.Errorf("%s: generation %d -> %d, want changed = %v", st.name, gen, got, st.changes)
		}
		if fired(s.Changed()) {
			t.Errorf("%s: the new Changed channel is already closed", st.name)
		}
	}
}

// setWeights returns a mutation setting the two backendRef weights of the
// first rule of splitRoute.
func setWeights(primary, canary int32) func(*gatewayv1.HTTPRoute) error {
	return func(r *gatewayv1.HTTPRoute) error {
		refs := r.Spec.Rules[0].BackendRefs
		if len(refs) != 2 {
			return errors.New("want two backendRefs")
		}
		refs[0].Weight, refs[1].Weight = &primary, &canary
		return nil
	}
}

func weightsOf(t testing.TB, s *Store, key, clientNS string) []uint32 {
	t.Helper()
	svc, ok := s.Service(key, clientNS)
	if !ok {
		t.Fatalf("Service(%q) not found", key)
	}
	if len(svc.Rules) != 1 {
		t.Fatalf("Service(%q) has %d rules, want 1", key, len(svc.Rules))
	}
	var out []uint32
	for _, b := range svc.Rules[0].Backends {
		out = append(out, b.EffectiveWeight())
	}
	return out
}

func TestUpdateHTTPRoute(t *testing.T) {
	s := New()
	s.ApplyService(service(t, webService))
	s.ApplyHTTPRoute(splitRoute(t, 100, 0))
	r, ok := s.HTTPRoute("shop", "web")
	if !ok || r.Generation != 1 || r.CreationTimestamp.IsZero() {
		t.Fatalf("stored route: ok=%v generation=%d created=%v", ok, r.Generation, r.CreationTimestamp)
	}
	created := r.CreationTimestamp

	if err := s.UpdateHTTPRoute("shop", "web", setWeights(80, 20)); err != nil {
		t.Fatal(err)
	}
	if got := weightsOf(t, s, "web.shop:80", ""); !slices.Equal(got, []uint32{80, 20}) {
		t.Errorf("weights = %v, want [80 20]", got)
	}
	r, _ = s.HTTPRoute("shop", "web")
	if r.Generation != 2 || !r.CreationTimestamp.Equal(&created) {
		t.Errorf("after update: generation = %d (want 2), created %v (want %v)", r.Generation, r.CreationTimestamp, created)
	}

	// The copy handed out is the caller's.
	*r.Spec.Rules[0].BackendRefs[0].Weight = 1
	if got := weightsOf(t, s, "web.shop:80", ""); !slices.Equal(got, []uint32{80, 20}) {
		t.Errorf("modifying a returned copy changed the store: weights = %v", got)
	}

	boom := errors.New("boom")
	if err := s.UpdateHTTPRoute("shop", "web", func(*gatewayv1.HTTPRoute) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("mutate error: got %v, want it wrapped", err)
	}
	if err := s.UpdateHTTPRoute("shop", "nope", setWeights(1, 1)); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing route: got %v, want ErrNotFound", err)
	}
	err := s.UpdateHTTPRoute("shop", "web", func(r *gatewayv1.HTTPRoute) error { r.Name = "other"; return nil })
	if err == nil || !strings.Contains(err.Error(), "renames") {
		t.Errorf("rename: got %v, want an error", err)
	}
	if got := weightsOf(t, s, "web.shop:80", ""); !slices.Equal(got, []uint32{80, 20}) {
		t.Errorf("failed updates changed the weights to %v", got)
	}
}

// TestUpdateHTTPRouteConcurrent checks that concurrent read-modify-writes do
// not lose updates.
func TestUpdateHTTPRouteConcurrent(t *testing.T) {
	s := New()
	s.ApplyService(service(t, webService))
	s.ApplyHTTPRoute(splitRoute(t, 0, 0))
	const writers, each = 8, 25
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for range each {
				err := s.UpdateHTTPRoute("shop", "web", func(r *gatewayv1.HTTPRoute) error {
					*r.Spec.Rules[0].BackendRefs[1].Weight++
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got := weightsOf(t, s, "web.shop:80", ""); !slices.Equal(got, []uint32{0, writers * each}) {
		t.Errorf("weights = %v, want [0 %d]", got, writers*each)
	}
}

func TestConsumerRoutes(t *testing.T) {
	s := New()
	s.ApplyService(service(t, webService))
	s.ApplyHTTPRoute(splitRoute(t, 100, 0))
	s.ApplyHTTPRoute(httpRoute(t, `
metadata: {name: web-for-shell, namespace: shell}
spec:
  parentRefs: [{group: core, kind: Service, name: web, namespace: shop, port: 80}]
  rules:
  - backendRefs:
    - {name: web-primary, namespace: shop, port: 80, weight: 0}
    - {name: web-canary, namespace: shop, port: 80, weight: 1}
`))
	tests := []struct {
		clientNS string
		want     []uint32
	}{
		{"", []uint32{100, 0}},
		{"shop", []uint32{100, 0}},
		{"other", []uint32{100, 0}},
		{"shell", []uint32{0, 1}},
	}
	for _, tt := range tests {
		if got := weightsOf(t, s, "web.shop:80", tt.clientNS); !slices.Equal(got, tt.want) {
			t.Errorf("client %q: weights = %v, want %v", tt.clientNS, got, tt.want)
		}
	}
	// The route attaches to port 80 only.
	if svc, _ := s.Service("web.shop:9090", "shell"); len(svc.Rules) != 0 {
		t.Errorf("port 9090 has %d rules, want none", len(svc.Rules))
	}
}

func TestRouteErrors(t *testing.T) {
	s := New()
	s.ApplyService(service(t, webService))
	for _, name := range []string{"web-primary", "web-canary"} {
		svc := service(t, webService)
		svc.Name = name
		s.ApplyService(svc)
	}
	s.ApplyHTTPRoute(splitRoute(t, 100, 0))
	s.ApplyHTTPRoute(httpRoute(t, `
metadata: {name: bad, namespace: shop}
spec:
  parentRefs: [{group: core, kind: Service, name: web, port: 9090}]
  rules:
  - matches: [{path: {type: RegularExpression, value: "(("}}]
    backendRefs: [{name: web, port: 80}]
  - backendRefs: [{name: web, port: 80}, {name: missing, port: 80}]
`))
	s.ApplyHTTPRoute(httpRoute(t, `
metadata: {name: orphan, namespace: shop}
spec:
  parentRefs: [{group: core, kind: Service, name: nothing, port: 80}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
`))
	var got []string
	for _, e := range s.RouteErrors() {
		got = append(got, e.Route+" "+e.Field)
	}
	want := []string{
		"shop/bad spec.rules[0].matches[0].path.value",
		"shop/bad spec.rules[1].backendRefs",
		"shop/orphan spec.parentRefs",
	}
	if !slices.Equal(got, want) {
		t.Errorf("RouteErrors fields = %q\nwant %q\nerrors: %v", got, want, s.RouteErrors())
	}
}

func TestNamespaceDefaults(t *testing.T) {
	s := New()
	s.ApplyService(service(t, `
metadata: {name: api}
spec:
  selector: {app: api}
  ports: [{port: 8080}]
`))
	s.SetReplica(Replica{Pod: "api-1", Labels: map[string]string{"app": "api"}, Address: "127.0.0.1:6000", Ready: true})
	svc, ok := s.Service("api.default:8080", "")
	if !ok || len(svc.Endpoints) != 1 || svc.Endpoints[0].Labels["namespace"] != "default" {
		t.Fatalf("Service = %+v, %v", svc, ok)
	}
	if _, ok := s.ServiceObject("", "api"); !ok {
		t.Errorf("ServiceObject with empty namespace not found")
	}
	if got := s.Replicas(); len(got) != 1 || got[0].Namespace != "default" {
		t.Errorf("Replicas = %+v", got)
	}
}
