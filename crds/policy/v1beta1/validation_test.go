package v1beta1

import (
	"net/netip"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestServerValidate(t *testing.T) {
	ok := Server{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
		Spec: ServerSpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Port:        intstr.FromInt32(8080),
		},
	}
	tests := []struct {
		name    string
		mutate  func(*Server)
		wantErr string
	}{
		{name: "valid", mutate: func(*Server) {}},
		{name: "named port", mutate: func(s *Server) { s.Spec.Port = intstr.FromString("http") }},
		{name: "every access policy", mutate: func(s *Server) {
			for _, p := range AccessPolicies {
				s.Spec.AccessPolicy = p
			}
		}},
		{name: "port 0", mutate: func(s *Server) { s.Spec.Port = intstr.FromInt32(0) }, wantErr: "port 0"},
		{name: "port too big", mutate: func(s *Server) { s.Spec.Port = intstr.FromInt32(65536) }, wantErr: "port 65536"},
		{name: "empty port name", mutate: func(s *Server) { s.Spec.Port = intstr.FromString("") }, wantErr: "port is empty"},
		{name: "bad selector", mutate: func(s *Server) {
			s.Spec.PodSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Near"}}
		}, wantErr: "podSelector"},
		{name: "bad access policy", mutate: func(s *Server) { s.Spec.AccessPolicy = "allow" }, wantErr: `accessPolicy "allow"`},
		{name: "bad protocol", mutate: func(s *Server) { s.Spec.ProxyProtocol = "http" }, wantErr: `proxyProtocol "http"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := *ok.DeepCopy()
			tc.mutate(&s)
			checkErr(t, s.Validate(), tc.wantErr)
		})
	}
}

func TestAuthorizationPolicyValidate(t *testing.T) {
	server := PolicyTargetRef{Group: GroupName, Kind: KindServer, Name: "web"}
	mesh := AuthenticationRef{Group: GroupName, Kind: KindMeshTLSAuthentication, Name: "m"}
	network := AuthenticationRef{Group: GroupName, Kind: KindNetworkAuthentication, Name: "n", Namespace: "sluice"}
	sa := AuthenticationRef{Kind: KindServiceAccount, Name: "web"}
	tests := []struct {
		name    string
		target  PolicyTargetRef
		refs    []AuthenticationRef
		wantErr string
	}{
		{name: "server, mesh and network", target: server, refs: []AuthenticationRef{mesh, network}},
		{name: "service account", target: server, refs: []AuthenticationRef{sa}},
		{name: "core service account", target: server, refs: []AuthenticationRef{{Group: "core", Kind: KindServiceAccount, Name: "web"}}},
		{name: "own namespace", target: PolicyTargetRef{Kind: KindNamespace, Name: "shop"}, refs: []AuthenticationRef{network}},
		{name: "gateway route", target: PolicyTargetRef{Group: GatewayGroupName, Kind: KindHTTPRoute, Name: "r"}, refs: []AuthenticationRef{sa}},
		{name: "other namespace", target: PolicyTargetRef{Kind: KindNamespace, Name: "other"}, refs: []AuthenticationRef{sa}, wantErr: "its own namespace"},
		{name: "server without group", target: PolicyTargetRef{Kind: KindServer, Name: "web"}, refs: []AuthenticationRef{sa}, wantErr: "targetRef Server is not"},
		{name: "deployment", target: PolicyTargetRef{Group: "apps", Kind: "Deployment", Name: "web"}, refs: []AuthenticationRef{sa}, wantErr: "Deployment.apps is not"},
		{name: "no refs", target: server, wantErr: "requiredAuthenticationRefs is empty"},
		{name: "two identities", target: server, refs: []AuthenticationRef{mesh, sa}, wantErr: "at most one MeshTLSAuthentication or ServiceAccount"},
		{name: "two networks", target: server, refs: []AuthenticationRef{network, network}, wantErr: "at most one NetworkAuthentication"},
		{name: "unknown kind", target: server, refs: []AuthenticationRef{{Kind: "Pod", Name: "x"}}, wantErr: "Pod is not"},
		{name: "mesh without group", target: server, refs: []AuthenticationRef{{Kind: KindMeshTLSAuthentication, Name: "m"}}, wantErr: "MeshTLSAuthentication is not"},
		{name: "no name", target: server, refs: []AuthenticationRef{{Kind: KindServiceAccount}}, wantErr: "without a name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := AuthorizationPolicy{
				ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "shop"},
				Spec:       AuthorizationPolicySpec{TargetRef: tc.target, RequiredAuthenticationRefs: tc.refs},
			}
			checkErr(t, p.Validate(), tc.wantErr)
		})
	}
}

func TestMeshTLSAuthenticationValidate(t *testing.T) {
	tests := []struct {
		name    string
		spec    MeshTLSAuthenticationSpec
		wantErr string
	}{
		{name: "identities", spec: MeshTLSAuthenticationSpec{Identities: []string{"*", "*.shop.serviceaccount.identity.sluice.cluster.local", "web.shop.serviceaccount.identity.sluice.cluster.local"}}},
		{name: "refs", spec: MeshTLSAuthenticationSpec{IdentityRefs: []IdentityRef{{Kind: KindServiceAccount, Name: "web", Namespace: "shop"}, {Kind: KindNamespace, Name: "ops"}}}},
		{name: "neither", spec: MeshTLSAuthenticationSpec{}, wantErr: "exactly one"},
		{name: "both", spec: MeshTLSAuthenticationSpec{Identities: []string{"*"}, IdentityRefs: []IdentityRef{{Kind: KindServiceAccount, Name: "web"}}}, wantErr: "exactly one"},
		{name: "uppercase", spec: MeshTLSAuthenticationSpec{Identities: []string{"Web.shop"}}, wantErr: `label "Web"`},
		{name: "inner star", spec: MeshTLSAuthenticationSpec{Identities: []string{"web.*.shop"}}, wantErr: `label "*"`},
		{name: "empty label", spec: MeshTLSAuthenticationSpec{Identities: []string{"web..shop"}}, wantErr: `label ""`},
		{name: "bare star dot", spec: MeshTLSAuthenticationSpec{Identities: []string{"*."}}, wantErr: "must be"},
		{name: "ref kind", spec: MeshTLSAuthenticationSpec{IdentityRefs: []IdentityRef{{Kind: "Pod", Name: "x"}}}, wantErr: "Pod is not"},
		{name: "ref group", spec: MeshTLSAuthenticationSpec{IdentityRefs: []IdentityRef{{Group: "apps", Kind: KindServiceAccount, Name: "x"}}}, wantErr: "ServiceAccount.apps is not"},
		{name: "namespace with namespace", spec: MeshTLSAuthenticationSpec{IdentityRefs: []IdentityRef{{Kind: KindNamespace, Name: "ops", Namespace: "shop"}}}, wantErr: "cluster-scoped"},
		{name: "ref without name", spec: MeshTLSAuthenticationSpec{IdentityRefs: []IdentityRef{{Kind: KindServiceAccount}}}, wantErr: "without a name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := MeshTLSAuthentication{ObjectMeta: metav1.ObjectMeta{Name: "m", Namespace: "shop"}, Spec: tc.spec}
			checkErr(t, m.Validate(), tc.wantErr)
		})
	}
}

func TestNetworkParse(t *testing.T) {
	tests := []struct {
		in         Network
		wantCIDR   string
		wantExcept []string
		wantErr    string
	}{
		{in: Network{CIDR: "10.0.0.0/8"}, wantCIDR: "10.0.0.0/8"},
		{in: Network{CIDR: "10.1.2.3/8"}, wantCIDR: "10.0.0.0/8"},
		{in: Network{CIDR: "10.1.2.3"}, wantCIDR: "10.1.2.3/32"},
		{in: Network{CIDR: "fd00::1"}, wantCIDR: "fd00::1/128"},
		{in: Network{CIDR: "fe80::1%eth0"}, wantCIDR: "fe80::1/128"},
		{in: Network{CIDR: "::ffff:10.0.0.0/104"}, wantCIDR: "10.0.0.0/8"},
		{in: Network{CIDR: "::ffff:10.1.2.3"}, wantCIDR: "10.1.2.3/32"},
		{in: Network{CIDR: "10.0.0.0/8", Except: []string{"10.1.0.0/16", "10.2.3.4"}}, wantCIDR: "10.0.0.0/8", wantExcept: []string{"10.1.0.0/16", "10.2.3.4/32"}},
		{in: Network{CIDR: "10.0.0.0/33"}, wantErr: "not a CIDR"},
		{in: Network{CIDR: "example.com"}, wantErr: "not a CIDR or an IP address"},
		{in: Network{CIDR: ""}, wantErr: "not a CIDR or an IP address"},
		{in: Network{CIDR: "10.0.0.0/8", Except: []string{"nope"}}, wantErr: "except"},
		{in: Network{CIDR: "10.0.0.0/8", Except: []string{"192.168.0.0/16"}}, wantErr: "does not lie inside"},
		{in: Network{CIDR: "10.0.0.0/8", Except: []string{"10.0.0.0/8"}}, wantErr: "negates all"},
		{in: Network{CIDR: "10.0.0.0/16", Except: []string{"10.0.0.0/8"}}, wantErr: "does not lie inside"},
		{in: Network{CIDR: "10.1.2.3", Except: []string{"10.1.2.3"}}, wantErr: "does not lie inside"},
	}
	for _, tc := range tests {
		p, except, err := tc.in.Parse()
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Parse(%+v) error %v, want one containing %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%+v): %v", tc.in, err)
			continue
		}
		if p != netip.MustParsePrefix(tc.wantCIDR) {
			t.Errorf("Parse(%+v) cidr %s, want %s", tc.in, p, tc.wantCIDR)
		}
		if len(except) != len(tc.wantExcept) {
			t.Errorf("Parse(%+v) except %v, want %v", tc.in, except, tc.wantExcept)
			continue
		}
		for i, x := range except {
			if x != netip.MustParsePrefix(tc.wantExcept[i]) {
				t.Errorf("Parse(%+v) except[%d] %s, want %s", tc.in, i, x, tc.wantExcept[i])
			}
		}
	}
}

func TestNetworkAuthenticationValidate(t *testing.T) {
	n := NetworkAuthentication{ObjectMeta: metav1.ObjectMeta{Name: "n", Namespace: "shop"}}
	checkErr(t, n.Validate(), "no networks")
	n.Spec.Networks = []Network{{CIDR: "10.0.0.0/8"}, {CIDR: "bad"}}
	checkErr(t, n.Validate(), `networkauthentication shop/n: network cidr: "bad"`)
	n.Spec.Networks = n.Spec.Networks[:1]
	checkErr(t, n.Validate(), "")
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want one containing %q", err, want)
	}
}
