package mesh

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/sluicehq/sluice/crds/policy/v1beta1"
	"github.com/sluicehq/sluice/mesh/api/meshv1"
	"github.com/sluicehq/sluice/mesh/identity"
	"github.com/sluicehq/sluice/mesh/localstore"
	meshpolicy "github.com/sluicehq/sluice/mesh/policy"
)

// policyServer is a scripted inbound policy service: every stream gets the
// current policy, then each one set later.
type policyServer struct {
	meshv1.UnimplementedInboundPoliciesServer

	mu      sync.Mutex
	cur     *meshv1.InboundServer
	changed chan struct{}
	asked   []*meshv1.PortSpec
}

func newPolicyServer(initial *meshv1.InboundServer) *policyServer {
	return &policyServer{cur: initial, changed: make(chan struct{})}
}

// set replaces the policy every stream sends.
func (s *policyServer) set(p *meshv1.InboundServer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur = p
	close(s.changed)
	s.changed = make(chan struct{})
}

// requests returns the port specs streams were opened for.
func (s *policyServer) requests() []*meshv1.PortSpec {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*meshv1.PortSpec(nil), s.asked...)
}

func (s *policyServer) WatchPort(spec *meshv1.PortSpec, stream grpc.ServerStreamingServer[meshv1.InboundServer]) error {
	s.mu.Lock()
	s.asked = append(s.asked, spec)
	s.mu.Unlock()
	for {
		s.mu.Lock()
		cur, changed := s.cur, s.changed
		s.mu.Unlock()
		if err := stream.Send(cur); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		}
	}
}

// serverPolicy is a Server resource's policy with the given authorizations.
func serverPolicy(name string, authzs ...*meshv1.Authorization) *meshv1.InboundServer {
	return &meshv1.InboundServer{
		Labels:         map[string]string{"srv_name": name, "srv_kind": "server", "srv_group": "policy.sluice.dev"},
		Authorizations: authzs,
	}
}

// meshTLSAuthz allows the given identities from anywhere.
func meshTLSAuthz(name string, identities ...string) *meshv1.Authorization {
	return &meshv1.Authorization{
		Authentication: &meshv1.Authorization_MeshTls{MeshTls: &meshv1.MeshTLS{Identities: identities}},
		Labels:         map[string]string{"authz_name": name, "authz_kind": "authorizationpolicy"},
	}
}

// TestInboundPolicyFromTheControlPlane enforces what a scripted inbound
// policy service sends, as it changes: one client identity allowed, then
// nobody, then plain-text clients from loopback.
func TestInboundPolicyFromTheControlPlane(t *testing.T) {
	frontID := identity.Name("frontend", namespace, "", "")
	policies := newPolicyServer(serverPolicy("web-http", meshTLSAuthz("frontend-only", frontID)))
	cp := newControlPlane(t, 0, scripted(policies))
	cp.applyService("web", "web", map[int]string{80: ""})
	// Until the control plane's policy arrives, the configured default denies.
	web := cp.startWorkload(t, workloadOpts{name: "web", defaultPolicy: "deny"})
	eventually(t, "web's proxy to enforce the control plane's policy", func() bool {
		return web.proxy.InboundPolicy().Name == "web-http"
	})
	front := cp.startWorkload(t, workloadOpts{name: "frontend", listeners: []string{"web.shop:80"}, noReplica: true})
	intruder := cp.startWorkload(t, workloadOpts{name: "intruder", listeners: []string{"web.shop:80"}, noReplica: true})
	client := newClient(t)
	plain := "http://" + web.proxy.Addr("inbound") + "/"

	// Each proxy watches its own workload's application port.
	watched := map[string]int{}
	for _, r := range policies.requests() {
		watched[r.GetWorkload()] = int(r.GetPort())
	}
	for _, w := range []*workload{web, front, intruder} {
		if got, want := watched["shop/"+w.name+"-0"], portOf(t, w.app.addr); got != want {
			t.Errorf("policy streams %v: want shop/%s-0 on port %d", watched, w.name, want)
		}
	}

	expect := func(what, url string, want int) {
		t.Helper()
		r, err := get(client, url, nil)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if r.status != want {
			t.Errorf("%s: got %d (%s), want %d", what, r.status, r.header.Get("Sluice-Proxy-Error"), want)
		}
		if want == http.StatusForbidden && !strings.Contains(r.header.Get("Sluice-Proxy-Error"), "unauthorized") {
			t.Errorf("%s: sluice-proxy-error %q does not say why", what, r.header.Get("Sluice-Proxy-Error"))
		}
	}
	expect("frontend, allowed by identity", front.url(t, "web.shop:80", "/"), 200)
	expect("intruder, another identity", intruder.url(t, "web.shop:80", "/"), 403)
	expect("plain text", plain, 403)
	allow := map[string]string{"srv_name": "web-http", "srv_kind": "server", "authz_name": "frontend-only", "authz_kind": "authorizationpolicy"}
	if got := metric(web.proxy, "inbound_http_authz_allow_total", allow); got != 1 {
		t.Errorf("inbound_http_authz_allow_total%v = %v, want 1", allow, got)
	}
	if got := metric(web.proxy, "inbound_http_authz_deny_total", map[string]string{"srv_name": "web-http"}); got != 2 {
		t.Errorf("inbound_http_authz_deny_total{srv_name=web-http} = %v, want 2", got)
	}

	// The control plane now denies everything.
	policies.set(&meshv1.InboundServer{DefaultPolicy: "deny"})
	eventually(t, "the deny policy", func() bool { return web.proxy.InboundPolicy().Name == "deny" })
	expect("frontend under deny", front.url(t, "web.shop:80", "/"), 403)

	// Then allows plain text from loopback only.
	policies.set(serverPolicy("web-open", &meshv1.Authorization{
		Networks:       []*meshv1.Network{{Cidr: "127.0.0.0/8"}},
		Authentication: &meshv1.Authorization_Unauthenticated{Unauthenticated: &meshv1.Unauthenticated{}},
		Labels:         map[string]string{"authz_name": "loopback", "authz_kind": "networkauthentication"},
	}))
	eventually(t, "the loopback policy", func() bool { return web.proxy.InboundPolicy().Name == "web-open" })
	expect("plain text from loopback", plain, 200)
	expect("intruder from loopback", intruder.url(t, "web.shop:80", "/"), 200)
	if n := web.app.hits.Load(); n != 3 {
		t.Errorf("web's application got %d requests, want the 3 allowed ones", n)
	}
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	var n int
	for _, c := range addr[i+1:] {
		n = n*10 + int(c-'0')
	}
	return n
}

// TestInboundPolicyFromThePolicyServer runs the control plane's own inbound
// policy server over the local store: a Server resource for web's port with
// an AuthorizationPolicy that requires frontend's identity.
func TestInboundPolicyFromThePolicyServer(t *testing.T) {
	idOf := func(sa, ns string) string { return identity.Name(sa, ns, "", "") }
	cp := newControlPlane(t, 0, func(s *localstore.Store) meshv1.InboundPoliciesServer {
		return meshpolicy.NewServer(s, "", nil, idOf, logger(t))
	})
	cp.applyService("web", "web", map[int]string{80: ""})
	web := cp.startWorkload(t, workloadOpts{name: "web"})
	cp.store.ApplyMeshTLSAuthentication(&v1beta1.MeshTLSAuthentication{
		ObjectMeta: metav1.ObjectMeta{Name: "frontend", Namespace: namespace},
		Spec:       v1beta1.MeshTLSAuthenticationSpec{Identities: []string{idOf("frontend", namespace)}},
	})
	cp.store.ApplyAuthorizationPolicy(&v1beta1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "frontend-only", Namespace: namespace},
		Spec: v1beta1.AuthorizationPolicySpec{
			TargetRef:                  v1beta1.PolicyTargetRef{Group: v1beta1.GroupName, Kind: v1beta1.KindServer, Name: "web-http"},
			RequiredAuthenticationRefs: []v1beta1.AuthenticationRef{{Group: v1beta1.GroupName, Kind: v1beta1.KindMeshTLSAuthentication, Name: "frontend"}},
		},
	})
	cp.store.ApplyServer(&v1beta1.Server{
		ObjectMeta: metav1.ObjectMeta{Name: "web-http", Namespace: namespace},
		Spec: v1beta1.ServerSpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Port:        intstr.FromInt32(int32(portOf(t, web.app.addr))),
		},
	})
	eventually(t, "web's proxy to enforce the Server's policy", func() bool {
		return web.proxy.InboundPolicy().Name == "web-http"
	})
	front := cp.startWorkload(t, workloadOpts{name: "frontend", listeners: []string{"web.shop:80"}, noReplica: true})
	intruder := cp.startWorkload(t, workloadOpts{name: "intruder", listeners: []string{"web.shop:80"}, noReplica: true})
	client := newClient(t)
	for _, tc := range []struct {
		who, url string
		want     int
	}{
		{"frontend", front.url(t, "web.shop:80", "/"), 200},
		{"intruder", intruder.url(t, "web.shop:80", "/"), 403},
		{"plain text", "http://" + web.proxy.Addr("inbound") + "/", 403},
	} {
		r, err := get(client, tc.url, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.who, err)
		}
		if r.status != tc.want {
			t.Errorf("%s: got %d (%s), want %d", tc.who, r.status, r.header.Get("Sluice-Proxy-Error"), tc.want)
		}
	}
	allow := map[string]string{"srv_name": "web-http", "srv_kind": "server", "authz_name": "frontend-only", "authz_kind": "authorizationpolicy"}
	if got := metric(web.proxy, "inbound_http_authz_allow_total", allow); got != 1 {
		t.Errorf("inbound_http_authz_allow_total%v = %v, want 1", allow, got)
	}
	if got := metric(web.proxy, "inbound_http_authz_deny_total", map[string]string{"srv_name": "web-http"}); got != 2 {
		t.Errorf("inbound_http_authz_deny_total{srv_name=web-http} = %v, want 2", got)
	}
}
