package localstore

import (
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/sluicehq/sluice/crds/policy/v1beta1"
	"github.com/sluicehq/sluice/mesh/policy"
)

// The store is the local-mode inbound policy source.
var _ policy.PolicySource = (*Store)(nil)

// fakeClock is a settable clock for creationTimestamps.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

var policyT0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newStoreAt(t0 time.Time) (*Store, *fakeClock) {
	clk := &fakeClock{now: t0}
	s := New()
	s.now = clk.Now
	return s, clk
}

func policyServer(ns, name string, port int32, access v1beta1.AccessPolicy) *v1beta1.Server {
	return &v1beta1.Server{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1beta1.ServerSpec{
			PodSelector:  metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Port:         intstr.FromInt32(port),
			AccessPolicy: access,
		},
	}
}

func policyAuthz(ns, name, server, meshTLS string) *v1beta1.AuthorizationPolicy {
	return &v1beta1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1beta1.AuthorizationPolicySpec{
			TargetRef: v1beta1.PolicyTargetRef{Group: v1beta1.GroupName, Kind: v1beta1.KindServer, Name: server},
			RequiredAuthenticationRefs: []v1beta1.AuthenticationRef{
				{Group: v1beta1.GroupName, Kind: v1beta1.KindMeshTLSAuthentication, Name: meshTLS, Namespace: "ids"},
			},
		},
	}
}

func policyMeshTLS(ns, name string, ids ...string) *v1beta1.MeshTLSAuthentication {
	return &v1beta1.MeshTLSAuthentication{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       v1beta1.MeshTLSAuthenticationSpec{Identities: ids},
	}
}

func policyNetwork(ns, name, cidr string) *v1beta1.NetworkAuthentication {
	return &v1beta1.NetworkAuthentication{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       v1beta1.NetworkAuthenticationSpec{Networks: []v1beta1.Network{{CIDR: cidr}}},
	}
}

func TestPolicyObjectsChanged(t *testing.T) {
	s := New()
	srv := policyServer("shop", "web", 8080, v1beta1.Deny)
	az := policyAuthz("shop", "web-from-frontend", "web", "frontend")
	mt := policyMeshTLS("ids", "frontend", "frontend.shop.serviceaccount.identity.sluice.cluster.local")
	nw := policyNetwork("shop", "pods", "10.0.0.0/8")
	r := Replica{Namespace: "shop", Pod: "web-1", Labels: map[string]string{"app": "web"}}
	steps := []struct {
		name    string
		mutate  func()
		changes bool
	}{
		{"apply server", func() { s.ApplyServer(srv) }, true},
		{"apply same server", func() { s.ApplyServer(srv) }, false},
		{"apply nil server", func() { s.ApplyServer(nil) }, false},
		{"change server", func() { srv.Spec.AccessPolicy = v1beta1.AllAuthenticated; s.ApplyServer(srv) }, true},
		{"label server", func() { srv.Labels = map[string]string{"team": "a"}; s.ApplyServer(srv) }, true},
		{"apply authorization policy", func() { s.ApplyAuthorizationPolicy(az) }, true},
		{"apply same authorization policy", func() { s.ApplyAuthorizationPolicy(az) }, false},
		{"apply meshtls", func() { s.ApplyMeshTLSAuthentication(mt) }, true},
		{"apply same meshtls", func() { s.ApplyMeshTLSAuthentication(mt) }, false},
		{"change meshtls", func() { mt.Spec.Identities = []string{"*"}; s.ApplyMeshTLSAuthentication(mt) }, true},
		{"apply network", func() { s.ApplyNetworkAuthentication(nw) }, true},
		{"apply same network", func() { s.ApplyNetworkAuthentication(nw) }, false},
		{"set replica", func() { s.SetReplica(r) }, true},
		{"name a port", func() { r.PortNames = map[int]string{8080: "http"}; s.SetReplica(r) }, true},
		{"same port names", func() { r.PortNames = map[int]string{8080: "http"}; s.SetReplica(r) }, false},
		{"set default policy", func() { r.DefaultInboundPolicy = "deny"; s.SetReplica(r) }, true},
		{"delete missing server", func() { s.DeleteServer("shop", "nope") }, false},
		{"delete server", func() { s.DeleteServer("shop", "web") }, true},
		{"delete server again", func() { s.DeleteServer("shop", "web") }, false},
		{"delete missing authorization policy", func() { s.DeleteAuthorizationPolicy("other", "web-from-frontend") }, false},
		{"delete authorization policy", func() { s.DeleteAuthorizationPolicy("shop", "web-from-frontend") }, true},
		{"delete missing meshtls", func() { s.DeleteMeshTLSAuthentication("shop", "frontend") }, false},
		{"delete meshtls", func() { s.DeleteMeshTLSAuthentication("ids", "frontend") }, true},
		{"delete missing network", func() { s.DeleteNetworkAuthentication("shop", "nope") }, false},
		{"delete network", func() { s.DeleteNetworkAuthentication("shop", "pods") }, true},
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
	}
	if p := s.Policies(); len(p.Servers)+len(p.AuthorizationPolicies)+len(p.MeshTLSAuthentications)+len(p.NetworkAuthentications) != 0 {
		t.Errorf("after deleting everything the store holds %+v", p)
	}
}

func TestPolicyObjectsCreationTimestamp(t *testing.T) {
	s, clk := newStoreAt(policyT0)
	s.ApplyServer(policyServer("", "web", 8080, v1beta1.Deny)) // namespace defaulted
	clk.Advance(time.Minute)
	s.ApplyServer(policyServer("default", "web", 8080, v1beta1.AllAuthenticated)) // replaced: keeps its time
	s.ApplyServer(policyServer("default", "admin", 9090, v1beta1.Deny))           // created now
	set := policyServer("default", "set", 9091, v1beta1.Deny)
	set.CreationTimestamp = metav1.NewTime(policyT0.Add(-time.Hour))
	s.ApplyServer(set) // keeps the one it sets

	got := map[string]time.Time{}
	for _, srv := range s.Policies().Servers {
		if srv.Namespace != "default" {
			t.Errorf("server %s has namespace %q, want default", srv.Name, srv.Namespace)
		}
		got[srv.Name] = srv.CreationTimestamp.Time
	}
	want := map[string]time.Time{"web": policyT0, "admin": policyT0.Add(time.Minute), "set": policyT0.Add(-time.Hour)}
	for name, ts := range want {
		if !got[name].Equal(ts) {
			t.Errorf("server %s created %v, want %v", name, got[name], ts)
		}
	}
	if srvs := s.Policies().Servers; srvs[2].Name != "web" || srvs[2].Spec.AccessPolicy != v1beta1.AllAuthenticated {
		t.Errorf("replaced server not stored: %+v", srvs[2])
	}
}

func TestPolicyFor(t *testing.T) {
	s, _ := newStoreAt(policyT0)
	s.SetReplica(Replica{
		Namespace: "shop", Workload: "web", Pod: "web-1",
		Labels:               map[string]string{"app": "web", "version": "v2"},
		PortNames:            map[int]string{8080: "http", 9090: "admin"},
		DefaultInboundPolicy: "cluster-authenticated",
	})
	s.SetReplica(Replica{Pod: "solo", Labels: map[string]string{"app": "solo"}}) // namespace default
	s.ApplyServer(policyServer("shop", "web", 8080, v1beta1.Deny))
	s.ApplyServer(policyServer("shop", "admin", 9090, v1beta1.Deny))
	s.ApplyServer(policyServer("elsewhere", "web", 8080, v1beta1.AllUnauthenticated))
	s.ApplyAuthorizationPolicy(policyAuthz("shop", "web-from-frontend", "web", "frontend"))
	s.ApplyAuthorizationPolicy(policyAuthz("elsewhere", "web-from-frontend", "web", "frontend"))
	s.ApplyMeshTLSAuthentication(policyMeshTLS("ids", "frontend", "frontend.shop.serviceaccount.identity.sluice.cluster.local"))
	s.ApplyNetworkAuthentication(policyNetwork("other", "pods", "10.0.0.0/8"))

	names := func(in policy.Input) (srvs, azs, mts, nets []string) {
		for _, o := range in.Servers {
			srvs = append(srvs, o.Namespace+"/"+o.Name)
		}
		for _, o := range in.AuthorizationPolicies {
			azs = append(azs, o.Namespace+"/"+o.Name)
		}
		for _, o := range in.MeshTLSAuthentications {
			mts = append(mts, o.Namespace+"/"+o.Name)
		}
		for _, o := range in.NetworkAuthentications {
			nets = append(nets, o.Namespace+"/"+o.Name)
		}
		return
	}

	tests := []struct {
		name                     string
		ns, pod                  string
		port                     int
		ok                       bool
		portName                 string
		srvs, azs, mts, nets     []string
		wantDefault, wantLabelsV string
	}{
		{
			name: "named port", ns: "shop", pod: "web-1", port: 8080, ok: true, portName: "http",
			srvs: []string{"shop/admin", "shop/web"}, azs: []string{"shop/web-from-frontend"},
			mts: []string{"ids/frontend"}, nets: []string{"other/pods"},
			wantDefault: "cluster-authenticated", wantLabelsV: "v2",
		},
		{
			name: "unnamed port", ns: "shop", pod: "web-1", port: 7000, ok: true,
			srvs: []string{"shop/admin", "shop/web"}, azs: []string{"shop/web-from-frontend"},
			mts: []string{"ids/frontend"}, nets: []string{"other/pods"},
			wantDefault: "cluster-authenticated", wantLabelsV: "v2",
		},
		{
			name: "default namespace", ns: "", pod: "solo", port: 80, ok: true,
			mts: []string{"ids/frontend"}, nets: []string{"other/pods"},
		},
		{name: "unknown pod", ns: "shop", pod: "web-2", port: 8080},
		{name: "pod of another namespace", ns: "elsewhere", pod: "web-1", port: 8080},
		{name: "port 0", ns: "shop", pod: "web-1", port: 0},
		{name: "port too large", ns: "shop", pod: "web-1", port: 65536},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in, ok := s.PolicyFor(tc.ns, tc.pod, tc.port)
			if ok != tc.ok {
				t.Fatalf("PolicyFor(%q, %q, %d) ok = %v, want %v", tc.ns, tc.pod, tc.port, ok, tc.ok)
			}
			if !ok {
				return
			}
			wantNS := nsOr(tc.ns)
			if in.PodNamespace != wantNS || in.Port != int32(tc.port) || in.PortName != tc.portName ||
				in.DefaultPolicy != tc.wantDefault || in.PodLabels["version"] != tc.wantLabelsV {
				t.Errorf("PolicyFor = namespace %q port %d name %q default %q labels %v", in.PodNamespace, in.Port, in.PortName, in.DefaultPolicy, in.PodLabels)
			}
			srvs, azs, mts, nets := names(in)
			for _, c := range []struct {
				what      string
				got, want []string
			}{{"servers", srvs, tc.srvs}, {"authorization policies", azs, tc.azs}, {"meshtls", mts, tc.mts}, {"networks", nets, tc.nets}} {
				if !slices.Equal(c.got, c.want) {
					t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
				}
			}
		})
	}

	// What PolicyFor returns compiles to what the objects mean.
	in, _ := s.PolicyFor("shop", "web-1", 8080)
	compiled, err := (&policy.Compiler{IdentityOf: func(sa, ns string) string {
		return sa + "." + ns + ".serviceaccount.identity.sluice.cluster.local"
	}}).Compile(in)
	if err != nil {
		t.Fatal(err)
	}
	if compiled.Name != "web" || len(compiled.Authorizations) != 1 ||
		!slices.Equal(compiled.Authorizations[0].Auth.Identities, []string{"frontend.shop.serviceaccount.identity.sluice.cluster.local"}) {
		t.Errorf("compiled %+v, want Server web with the frontend identity", compiled)
	}
}

func TestPolicyForReturnsCopies(t *testing.T) {
	s := New()
	s.SetReplica(Replica{Namespace: "shop", Pod: "web-1", Labels: map[string]string{"app": "web"}})
	s.ApplyServer(policyServer("shop", "web", 8080, v1beta1.Deny))
	s.ApplyMeshTLSAuthentication(policyMeshTLS("shop", "frontend", "a"))
	before, _ := s.PolicyFor("shop", "web-1", 8080)

	in, _ := s.PolicyFor("shop", "web-1", 8080)
	in.PodLabels["app"] = "changed"
	in.Servers[0].Spec.PodSelector.MatchLabels["app"] = "changed"
	in.MeshTLSAuthentications[0].Spec.Identities[0] = "changed"
	pol := s.Policies()
	pol.Servers[0].Spec.AccessPolicy = v1beta1.Audit

	after, _ := s.PolicyFor("shop", "web-1", 8080)
	if !reflect.DeepEqual(before, after) {
		t.Errorf("changing what the store returned changed the store:\nbefore %+v\nafter  %+v", before, after)
	}

	// And what it was given.
	srv := policyServer("shop", "web", 8080, v1beta1.Deny)
	s.ApplyServer(srv)
	srv.Spec.AccessPolicy = v1beta1.Audit
	if got := s.Policies().Servers[0].Spec.AccessPolicy; got != v1beta1.Deny {
		t.Errorf("changing an applied object changed the store: accessPolicy %q", got)
	}
}

func TestPolicyInputs(t *testing.T) {
	s := New()
	s.SetReplica(Replica{Namespace: "shop", Pod: "web-1"})
	s.SetReplica(Replica{Pod: "solo"})
	tests := []struct {
		workload string
		ok       bool
		ns       string
	}{
		{"shop/web-1", true, "shop"},
		{"/solo", true, "default"},
		{"default/solo", true, "default"},
		{"web-1", false, ""},
		{"shop/", false, ""},
		{"shop/web-1/x", false, ""},
		{"shop/web-2", false, ""},
	}
	for _, tc := range tests {
		in, ok := s.PolicyInputs(tc.workload, 8080)
		if ok != tc.ok || in.PodNamespace != tc.ns {
			t.Errorf("PolicyInputs(%q) = namespace %q, %v; want %q, %v", tc.workload, in.PodNamespace, ok, tc.ns, tc.ok)
		}
	}
}

func TestReplacePolicies(t *testing.T) {
	s, clk := newStoreAt(policyT0)
	objs := PolicyObjects{
		Servers:                []v1beta1.Server{*policyServer("shop", "web", 8080, v1beta1.Deny), *policyServer("", "admin", 9090, v1beta1.Deny)},
		AuthorizationPolicies:  []v1beta1.AuthorizationPolicy{*policyAuthz("shop", "web-from-frontend", "web", "frontend")},
		MeshTLSAuthentications: []v1beta1.MeshTLSAuthentication{*policyMeshTLS("ids", "frontend", "a")},
		NetworkAuthentications: []v1beta1.NetworkAuthentication{*policyNetwork("shop", "pods", "10.0.0.0/8")},
	}
	replace := func(p PolicyObjects) (bumps uint64) {
		gen := s.Generation()
		ch := s.Changed()
		s.ReplacePolicies(p)
		if got := s.Generation() - gen; (got != 0) != fired(ch) {
			t.Errorf("generation moved by %d but Changed fired = %v", got, fired(ch))
		}
		return s.Generation() - gen
	}

	if n := replace(objs); n != 1 {
		t.Errorf("replacing with new objects bumped the generation %d times, want once", n)
	}
	got := s.Policies()
	if len(got.Servers) != 2 || got.Servers[0].Namespace != "default" || len(got.AuthorizationPolicies) != 1 ||
		len(got.MeshTLSAuthentications) != 1 || len(got.NetworkAuthentications) != 1 {
		t.Fatalf("Policies after replace = %+v", got)
	}
	clk.Advance(time.Hour)
	if n := replace(objs); n != 0 {
		t.Errorf("replacing with the same objects bumped the generation %d times", n)
	}

	// Drop one object, change another: one change; the kept ones keep their
	// creationTimestamp.
	next := objs
	next.Servers = []v1beta1.Server{*policyServer("shop", "web", 8080, v1beta1.AllAuthenticated)}
	next.NetworkAuthentications = nil
	if n := replace(next); n != 1 {
		t.Errorf("replacing with changed objects bumped the generation %d times, want once", n)
	}
	got = s.Policies()
	if len(got.Servers) != 1 || got.Servers[0].Spec.AccessPolicy != v1beta1.AllAuthenticated ||
		!got.Servers[0].CreationTimestamp.Time.Equal(policyT0) || len(got.NetworkAuthentications) != 0 {
		t.Errorf("Policies after second replace = %+v", got)
	}
	// Removing only: a change too.
	next.AuthorizationPolicies = nil
	if n := replace(next); n != 1 {
		t.Errorf("removing an object bumped the generation %d times, want once", n)
	}
	if n := replace(PolicyObjects{}); n != 1 || len(s.Policies().Servers) != 0 {
		t.Errorf("emptying bumped %d times, left %+v", n, s.Policies())
	}
	if n := replace(PolicyObjects{}); n != 0 {
		t.Errorf("emptying an empty store bumped the generation %d times", n)
	}
}

// TestPolicyForConcurrent reads while others write, for the race detector.
func TestPolicyForConcurrent(t *testing.T) {
	s := New()
	s.SetReplica(Replica{Namespace: "shop", Pod: "web-1", Labels: map[string]string{"app": "web"}})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 200 {
				if w%2 == 0 {
					s.ApplyServer(policyServer("shop", "web", int32(8000+i%3), v1beta1.Deny))
					s.ReplacePolicies(PolicyObjects{MeshTLSAuthentications: []v1beta1.MeshTLSAuthentication{*policyMeshTLS("shop", "m", "a")}})
				} else if in, ok := s.PolicyFor("shop", "web-1", 8080); !ok || in.PodNamespace != "shop" {
					t.Errorf("PolicyFor = %+v, %v", in, ok)
					return
				}
			}
		})
	}
	wg.Wait()
}
