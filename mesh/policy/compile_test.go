package policy

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/sluicehq/sluice/crds/policy/v1beta1"
	"github.com/sluicehq/sluice/mesh/api/routetable"
	proxypolicy "github.com/sluicehq/sluice/proxy/policy"
)

func identityOf(sa, ns string) string {
	return fmt.Sprintf("%s.%s.serviceaccount.identity.sluice.cluster.local", sa, ns)
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

type srvOpt func(*v1beta1.Server)

func server(name string, port intstr.IntOrString, opts ...srvOpt) v1beta1.Server {
	s := v1beta1.Server{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", CreationTimestamp: metav1.NewTime(t0)},
		Spec: v1beta1.ServerSpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Port:        port,
		},
	}
	for _, o := range opts {
		o(&s)
	}
	return s
}

func access(p v1beta1.AccessPolicy) srvOpt {
	return func(s *v1beta1.Server) { s.Spec.AccessPolicy = p }
}
func proto(p v1beta1.ProxyProtocol) srvOpt {
	return func(s *v1beta1.Server) { s.Spec.ProxyProtocol = p }
}
func inNS(ns string) srvOpt { return func(s *v1beta1.Server) { s.Namespace = ns } }
func created(d time.Duration) srvOpt {
	return func(s *v1beta1.Server) { s.CreationTimestamp = metav1.NewTime(t0.Add(d)) }
}
func selector(ls metav1.LabelSelector) srvOpt {
	return func(s *v1beta1.Server) { s.Spec.PodSelector = ls }
}

func policy(name string, target v1beta1.PolicyTargetRef, refs ...v1beta1.AuthenticationRef) v1beta1.AuthorizationPolicy {
	return v1beta1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"},
		Spec:       v1beta1.AuthorizationPolicySpec{TargetRef: target, RequiredAuthenticationRefs: refs},
	}
}

func policyIn(ns string, p v1beta1.AuthorizationPolicy) v1beta1.AuthorizationPolicy {
	p.Namespace = ns
	return p
}

func toServer(name string) v1beta1.PolicyTargetRef {
	return v1beta1.PolicyTargetRef{Group: v1beta1.GroupName, Kind: v1beta1.KindServer, Name: name}
}

func toNamespace(name string) v1beta1.PolicyTargetRef {
	return v1beta1.PolicyTargetRef{Kind: v1beta1.KindNamespace, Name: name}
}

func meshRef(name, ns string) v1beta1.AuthenticationRef {
	return v1beta1.AuthenticationRef{Group: v1beta1.GroupName, Kind: v1beta1.KindMeshTLSAuthentication, Name: name, Namespace: ns}
}

func netRef(name, ns string) v1beta1.AuthenticationRef {
	return v1beta1.AuthenticationRef{Group: v1beta1.GroupName, Kind: v1beta1.KindNetworkAuthentication, Name: name, Namespace: ns}
}

func saRef(name, ns string) v1beta1.AuthenticationRef {
	return v1beta1.AuthenticationRef{Kind: v1beta1.KindServiceAccount, Name: name, Namespace: ns}
}

func meshTLS(ns, name string, ids ...string) v1beta1.MeshTLSAuthentication {
	return v1beta1.MeshTLSAuthentication{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       v1beta1.MeshTLSAuthenticationSpec{Identities: ids},
	}
}

func meshTLSRefs(ns, name string, refs ...v1beta1.IdentityRef) v1beta1.MeshTLSAuthentication {
	return v1beta1.MeshTLSAuthentication{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       v1beta1.MeshTLSAuthenticationSpec{IdentityRefs: refs},
	}
}

func network(ns, name string, nets ...v1beta1.Network) v1beta1.NetworkAuthentication {
	return v1beta1.NetworkAuthentication{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       v1beta1.NetworkAuthenticationSpec{Networks: nets},
	}
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

var (
	port8080 = intstr.FromInt32(8080)
	portHTTP = intstr.FromString("http")
	webSA    = identityOf("web", "shop")
	allNets  = []proxypolicy.Network{{CIDR: pfx("0.0.0.0/0")}, {CIDR: pfx("::/0")}}
)

func defaultServer(t *testing.T, name string) proxypolicy.Server {
	t.Helper()
	s, err := proxypolicy.Default(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func defaultAuthz(t *testing.T, name string) []proxypolicy.Authorization {
	return defaultServer(t, name).Authorizations
}

type ignoredObj struct{ kind, ns, name, msg string }

func TestCompile(t *testing.T) {
	pods := map[string]string{"app": "web", "version": "v2"}
	tests := []struct {
		name          string
		in            Input
		want          func(t *testing.T) proxypolicy.Server
		ignored       []ignoredObj // kind, namespace, name and a substring of the reason
		clusterNets   []netip.Prefix
		wantErrSubstr string
	}{
		{
			name: "no server: all-unauthenticated when no default is given",
			in:   Input{},
			want: func(t *testing.T) proxypolicy.Server { return defaultServer(t, "all-unauthenticated") },
		},
		{
			name: "no server: the default policy",
			in:   Input{DefaultPolicy: "cluster-authenticated"},
			want: func(t *testing.T) proxypolicy.Server { return defaultServer(t, "cluster-authenticated") },
		},
		{
			name: "no server: namespace policies do not apply to default ports",
			in: Input{DefaultPolicy: "deny",
				AuthorizationPolicies: []v1beta1.AuthorizationPolicy{policy("ns-wide", toNamespace("shop"), saRef("web", ""))}},
			want: func(t *testing.T) proxypolicy.Server { return defaultServer(t, "deny") },
		},
		{
			name:          "unknown default policy",
			in:            Input{DefaultPolicy: "allow-all"},
			wantErrSubstr: `default policy "allow-all"`,
		},
		{
			name: "server by number, no accessPolicy: deny",
			in:   Input{Servers: []v1beta1.Server{server("web", port8080)}},
			want: func(t *testing.T) proxypolicy.Server {
				return proxypolicy.Server{Name: "web", Kind: "server"}
			},
		},
		{
			name: "server by name, with accessPolicy and protocol",
			in: Input{Servers: []v1beta1.Server{server("web-http", portHTTP,
				access(v1beta1.AllAuthenticated), proto(v1beta1.ProxyProtocolHTTP2))}},
			want: func(t *testing.T) proxypolicy.Server {
				return proxypolicy.Server{Name: "web-http", Kind: "server", Protocol: routetable.ProtocolHTTP2,
					Authorizations: defaultAuthz(t, "all-authenticated")}
			},
		},
		{
			name: "server by numeric string port",
			in:   Input{Servers: []v1beta1.Server{server("web", intstr.FromString("8080"), access(v1beta1.AllUnauthenticated))}},
			want: func(t *testing.T) proxypolicy.Server {
				return proxypolicy.Server{Name: "web", Kind: "server", Authorizations: defaultAuthz(t, "all-unauthenticated")}
			},
		},
		{
			name: "server accessPolicy audit",
			in:   Input{Servers: []v1beta1.Server{server("web", port8080, access(v1beta1.Audit))}},
			want: func(t *testing.T) proxypolicy.Server {
				return proxypolicy.Server{Name: "web", Kind: "server", Audit: true}
			},
		},
		{
			name: "server of another port, name, namespace or pod: the default",
			in: Input{DefaultPolicy: "deny", Servers: []v1beta1.Server{
				server("other-port", intstr.FromInt32(9090), access(v1beta1.AllUnauthenticated)),
				server("other-name", intstr.FromString("grpc"), access(v1beta1.AllUnauthenticated)),
				server("other-ns", port8080, inNS("other"), access(v1beta1.AllUnauthenticated)),
				server("other-pod", port8080, access(v1beta1.AllUnauthenticated),
					selector(metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}})),
				server("expr-mismatch", port8080, access(v1beta1.AllUnauthenticated),
					selector(metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
						{Key: "version", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"v2"}}}})),
			}},
			want: func(t *testing.T) proxypolicy.Server { return defaultServer(t, "deny") },
		},
		{
			name: "empty selector selects every pod; expressions",
			in: Input{Servers: []v1beta1.Server{
				server("all-pods", port8080, selector(metav1.LabelSelector{}), created(time.Hour)),
				server("v2", port8080, created(2*time.Hour), selector(metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "version", Operator: metav1.LabelSelectorOpIn, Values: []string{"v2"}}}})),
			}},
			want: func(t *testing.T) proxypolicy.Server {
				return proxypolicy.Server{Name: "all-pods", Kind: "server"}
			},
			ignored: []ignoredObj{{"Server", "shop", "v2", "older Server all-pods"}},
		},
		{
			name: "conflict: the oldest server wins",
			in: Input{Servers: []v1beta1.Server{
				server("newer", port8080, created(time.Minute), access(v1beta1.AllUnauthenticated)),
				server("older", portHTTP, access(v1beta1.ClusterUnauthenticated)),
			}},
			want: func(t *testing.T) proxypolicy.Server {
				return proxypolicy.Server{Name: "older", Kind: "server", Authorizations: defaultAuthz(t, "cluster-unauthenticated")}
			},
			ignored: []ignoredObj{{"Server", "shop", "newer", "older Server older"}},
		},
		{
			name: "conflict: same age, first name wins",
			in: Input{Servers: []v1beta1.Server{
				server("web-b", port8080),
				server("web-a", portHTTP),
			}},
			want: func(t *testing.T) proxypolicy.Server {
				return proxypolicy.Server{Name: "web-a", Kind: "server"}
			},
			ignored: []ignoredObj{{"Server", "shop", "web-b", "older Server web-a"}},
		},
		{
			name: "invalid server is reported and skipped",
			in: Input{DefaultPolicy: "deny", Servers: []v1beta1.Server{
				server("bad-selector", port8080, selector(metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "app", Operator: "Near"}}})),
				server("bad-access", port8080, access("allow")),
			}},
			want: func(t *testing.T) proxypolicy.Server { return defaultServer(t, "deny") },
			ignored: []ignoredObj{
				{"Server", "shop", "bad-selector", "podSelector"},
				{"Server", "shop", "bad-access", `accessPolicy "allow"`},
			},
		},
		{
			name: "policies: identities, service account, networks, both; sorted by name, default last",
			in: Input{
				Servers: []v1beta1.Server{server("web", port8080, access(v1beta1.ClusterAuthenticated))},
				AuthorizationPolicies: []v1beta1.AuthorizationPolicy{
					policy("d-both", toServer("web"), meshRef("frontends", ""), netRef("pods", "sluice")),
					policy("a-mesh", toServer("web"), meshRef("frontends", "")),
					policy("c-net", toServer("web"), netRef("pods", "sluice")),
					policy("b-sa", toServer("web"), saRef("web", "")),
					policy("e-sa-other-ns", toServer("web"), saRef("web", "other")),
					policy("other-server", toServer("db"), saRef("web", "")),
				},
				MeshTLSAuthentications: []v1beta1.MeshTLSAuthentication{
					meshTLS("shop", "frontends", "frontend.shop.serviceaccount.identity.sluice.cluster.local", "*.ops.serviceaccount.identity.sluice.cluster.local", "*"),
				},
				NetworkAuthentications: []v1beta1.NetworkAuthentication{
					network("sluice", "pods", v1beta1.Network{CIDR: "10.0.0.0/8", Except: []string{"10.9.0.0/16", "10.1.2.3"}}, v1beta1.Network{CIDR: "fd00::1"}),
				},
			},
			want: func(t *testing.T) proxypolicy.Server {
				frontends := proxypolicy.Authentication{
					Identities: []string{"frontend.shop.serviceaccount.identity.sluice.cluster.local", "*"},
					Suffixes:   []string{".ops.serviceaccount.identity.sluice.cluster.local"},
				}
				pods := []proxypolicy.Network{
					{CIDR: pfx("10.0.0.0/8"), Except: []netip.Prefix{pfx("10.9.0.0/16"), pfx("10.1.2.3/32")}},
					{CIDR: pfx("fd00::1/128")},
				}
				return proxypolicy.Server{Name: "web", Kind: "server", Authorizations: append([]proxypolicy.Authorization{
					{Name: "a-mesh", Kind: "authorizationpolicy", Auth: frontends},
					{Name: "b-sa", Kind: "authorizationpolicy", Auth: proxypolicy.Authentication{Identities: []string{webSA}}},
					{Name: "c-net", Kind: "authorizationpolicy", Networks: pods, Auth: proxypolicy.Authentication{Unauthenticated: true}},
					{Name: "d-both", Kind: "authorizationpolicy", Networks: pods, Auth: frontends},
					{Name: "e-sa-other-ns", Kind: "authorizationpolicy", Auth: proxypolicy.Authentication{Identities: []string{identityOf("web", "other")}}},
				}, defaultAuthz(t, "cluster-authenticated")...)}
			},
		},
		{
			name: "identityRefs: service accounts and namespaces",
			in: Input{
				Servers: []v1beta1.Server{server("web", port8080)},
				AuthorizationPolicies: []v1beta1.AuthorizationPolicy{
					policy("refs", toServer("web"), meshRef("refs", "ids")),
				},
				MeshTLSAuthentications: []v1beta1.MeshTLSAuthentication{
					meshTLSRefs("ids", "refs",
						v1beta1.IdentityRef{Kind: v1beta1.KindServiceAccount, Name: "local"},
						v1beta1.IdentityRef{Kind: v1beta1.KindServiceAccount, Name: "remote", Namespace: "shop"},
						v1beta1.IdentityRef{Kind: v1beta1.KindNamespace, Name: "ops"}),
				},
			},
			want: func(t *testing.T) proxypolicy.Server {
				return proxypolicy.Server{Name: "web", Kind: "server", Authorizations: []proxypolicy.Authorization{{
					Name: "refs", Kind: "authorizationpolicy",
					Auth: proxypolicy.Authentication{
						Identities: []string{identityOf("local", "ids"), identityOf("remote", "shop")},
						Suffixes:   []string{".ops.serviceaccount.identity.sluice.cluster.local"},
					},
				}}}
			},
		},
		{
			name: "namespace-targeted policies apply to every server of the namespace",
			in: Input{
				Servers: []v1beta1.Server{server("web", port8080)},
				AuthorizationPolicies: []v1beta1.AuthorizationPolicy{
					policy("ns-wide", toNamespace("shop"), saRef("web", "")),
					policy("other-ns", toNamespace("other"), saRef("web", "")),
					policyIn("other", policy("in-other-ns", toNamespace("other"), saRef("web", ""))),
					policyIn("other", policy("server-in-other-ns", toServer("web"), saRef("web", ""))),
					policy("route", v1beta1.PolicyTargetRef{Group: v1beta1.GatewayGroupName, Kind: v1beta1.KindHTTPRoute, Name: "web"}, saRef("web", "")),
				},
			},
			want: func(t *testing.T) proxypolicy.Server {
				return proxypolicy.Server{Name: "web", Kind: "server", Authorizations: []proxypolicy.Authorization{
					{Name: "ns-wide", Kind: "authorizationpolicy", Auth: proxypolicy.Authentication{Identities: []string{webSA}}},
				}}
			},
			ignored: []ignoredObj{{"AuthorizationPolicy", "shop", "other-ns", "its own namespace"}},
		},
		{
			name: "policies that cannot be honoured authorize nobody",
			in: Input{
				Servers: []v1beta1.Server{server("web", port8080)},
				AuthorizationPolicies: []v1beta1.AuthorizationPolicy{
					policy("missing-mesh", toServer("web"), meshRef("nope", "")),
					policy("missing-net", toServer("web"), saRef("web", ""), netRef("nope", "")),
					policy("mesh-in-wrong-ns", toServer("web"), meshRef("frontends", "other")),
					policy("two-ids", toServer("web"), meshRef("frontends", ""), saRef("web", "")),
					policy("two-nets", toServer("web"), netRef("pods", ""), netRef("pods", "")),
					policy("no-refs", toServer("web")),
					policy("bad-mesh", toServer("web"), meshRef("both", "")),
					policy("bad-net", toServer("web"), netRef("bad", "")),
					policy("bad-group", v1beta1.PolicyTargetRef{Kind: v1beta1.KindServer, Name: "web"}, saRef("web", "")),
					policy("ok", toServer("web"), netRef("pods", "")),
				},
				MeshTLSAuthentications: []v1beta1.MeshTLSAuthentication{
					meshTLS("shop", "frontends", "*"),
					func() v1beta1.MeshTLSAuthentication {
						m := meshTLS("shop", "both", "*")
						m.Spec.IdentityRefs = []v1beta1.IdentityRef{{Kind: v1beta1.KindServiceAccount, Name: "x"}}
						return m
					}(),
				},
				NetworkAuthentications: []v1beta1.NetworkAuthentication{
					network("shop", "pods", v1beta1.Network{CIDR: "10.0.0.0/8"}),
					network("shop", "bad", v1beta1.Network{CIDR: "10.0.0.0/8", Except: []string{"192.168.0.0/16"}}),
				},
			},
			want: func(t *testing.T) proxypolicy.Server {
				return proxypolicy.Server{Name: "web", Kind: "server", Authorizations: []proxypolicy.Authorization{
					{Name: "ok", Kind: "authorizationpolicy", Networks: []proxypolicy.Network{{CIDR: pfx("10.0.0.0/8")}},
						Auth: proxypolicy.Authentication{Unauthenticated: true}},
				}}
			},
			ignored: []ignoredObj{
				{"AuthorizationPolicy", "shop", "bad-group", "not a Server, Namespace or HTTPRoute"},
				{"AuthorizationPolicy", "shop", "bad-mesh", "exactly one of identities and identityRefs"},
				{"AuthorizationPolicy", "shop", "bad-net", "does not lie inside"},
				{"AuthorizationPolicy", "shop", "mesh-in-wrong-ns", "MeshTLSAuthentication other/frontends does not exist"},
				{"AuthorizationPolicy", "shop", "missing-mesh", "MeshTLSAuthentication shop/nope does not exist"},
				{"AuthorizationPolicy", "shop", "missing-net", "NetworkAuthentication shop/nope does not exist"},
				{"AuthorizationPolicy", "shop", "no-refs", "requiredAuthenticationRefs is empty"},
				{"AuthorizationPolicy", "shop", "two-ids", "at most one MeshTLSAuthentication or ServiceAccount"},
				{"AuthorizationPolicy", "shop", "two-nets", "at most one NetworkAuthentication"},
			},
		},
		{
			name: "objects without a namespace are in default",
			in: Input{
				PodNamespace: "",
				Servers:      []v1beta1.Server{server("web", port8080, inNS(""))},
				AuthorizationPolicies: []v1beta1.AuthorizationPolicy{
					policyIn("", policy("ns-wide", toNamespace("default"), meshRef("m", ""))),
				},
				MeshTLSAuthentications: []v1beta1.MeshTLSAuthentication{meshTLS("", "m", "*")},
			},
			want: func(t *testing.T) proxypolicy.Server {
				return proxypolicy.Server{Name: "web", Kind: "server", Authorizations: []proxypolicy.Authorization{
					{Name: "ns-wide", Kind: "authorizationpolicy", Auth: proxypolicy.Authentication{Identities: []string{"*"}}},
				}}
			},
		},
		{
			name:        "custom cluster networks",
			clusterNets: []netip.Prefix{pfx("198.51.100.0/24")},
			in:          Input{Servers: []v1beta1.Server{server("web", port8080, access(v1beta1.ClusterUnauthenticated))}},
			want: func(t *testing.T) proxypolicy.Server {
				return proxypolicy.Server{Name: "web", Kind: "server", Authorizations: []proxypolicy.Authorization{{
					Name: "cluster-unauthenticated", Kind: "default",
					Networks: []proxypolicy.Network{{CIDR: pfx("198.51.100.0/24")}, {CIDR: pfx("127.0.0.0/8")}, {CIDR: pfx("::1/128")}},
					Auth:     proxypolicy.Authentication{Unauthenticated: true},
				}}}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			if in.PodLabels == nil {
				in.PodLabels = pods
			}
			if in.PodNamespace == "" && !strings.Contains(tc.name, "without a namespace") {
				in.PodNamespace = "shop"
			}
			if in.Port == 0 {
				in.Port, in.PortName = 8080, "http"
			}
			var ignored []ignoredObj
			c := Compiler{IdentityOf: identityOf, ClusterNetworks: tc.clusterNets,
				Ignored: func(kind, ns, name string, err error) {
					ignored = append(ignored, ignoredObj{kind, ns, name, err.Error()})
				}}
			got, err := c.Compile(in)
			if tc.wantErrSubstr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrSubstr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErrSubstr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := tc.want(t); !reflect.DeepEqual(got, want) {
				t.Errorf("compiled\n%+v\nwant\n%+v", got, want)
			}
			if len(ignored) != len(tc.ignored) {
				t.Fatalf("ignored %d objects, want %d: %+v", len(ignored), len(tc.ignored), ignored)
			}
			for i, w := range tc.ignored {
				g := ignored[i]
				if g.kind != w.kind || g.ns != w.ns || g.name != w.name || !strings.Contains(g.msg, w.msg) {
					t.Errorf("ignored[%d] = %+v, want %s %s/%s with %q", i, g, w.kind, w.ns, w.name, w.msg)
				}
			}
		})
	}
}

func TestCompileProtocols(t *testing.T) {
	tests := map[v1beta1.ProxyProtocol]routetable.Protocol{
		"":                           routetable.ProtocolDetect,
		v1beta1.ProxyProtocolUnknown: routetable.ProtocolDetect,
		v1beta1.ProxyProtocolHTTP1:   routetable.ProtocolHTTP1,
		v1beta1.ProxyProtocolHTTP2:   routetable.ProtocolHTTP2,
		v1beta1.ProxyProtocolGRPC:    routetable.ProtocolGRPC,
		v1beta1.ProxyProtocolOpaque:  routetable.ProtocolOpaque,
		v1beta1.ProxyProtocolTLS:     routetable.ProtocolOpaque,
	}
	for p, want := range tests {
		got, err := Compile(map[string]string{"app": "web"}, "shop", 8080, "",
			[]v1beta1.Server{server("web", port8080, proto(p))}, nil, nil, nil, "deny", identityOf)
		if err != nil {
			t.Fatal(err)
		}
		if got.Protocol != want {
			t.Errorf("proxyProtocol %q compiled to %q, want %q", p, got.Protocol, want)
		}
	}
}

func TestCompileNeedsIdentityOf(t *testing.T) {
	if _, err := Compile(nil, "shop", 80, "", nil, nil, nil, nil, "", nil); err == nil {
		t.Fatal("Compile without identityOf succeeded")
	}
}

func TestCompileBadIdentityFormat(t *testing.T) {
	var ignored []string
	c := Compiler{
		IdentityOf: func(sa, ns string) string { return "spiffe://cluster.local/ns/" + ns + "/sa/" + sa },
		Ignored:    func(kind, ns, name string, err error) { ignored = append(ignored, name+": "+err.Error()) },
	}
	got, err := c.Compile(Input{
		PodLabels: map[string]string{"app": "web"}, PodNamespace: "shop", Port: 8080,
		Servers:                []v1beta1.Server{server("web", port8080)},
		AuthorizationPolicies:  []v1beta1.AuthorizationPolicy{policy("ns-ref", toServer("web"), meshRef("m", ""))},
		MeshTLSAuthentications: []v1beta1.MeshTLSAuthentication{meshTLSRefs("shop", "m", v1beta1.IdentityRef{Kind: v1beta1.KindNamespace, Name: "ops"})},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Authorizations) != 0 || len(ignored) != 1 || !strings.Contains(ignored[0], "does not have the form") {
		t.Fatalf("authorizations %+v, ignored %q", got.Authorizations, ignored)
	}
}

// TestCompiledSemantics checks the compiled policy end to end: what a client
// must satisfy for each kind of policy, as the proxy evaluates it.
func TestCompiledSemantics(t *testing.T) {
	in := Input{
		PodLabels: map[string]string{"app": "web"}, PodNamespace: "shop", Port: 8080, PortName: "http",
		Servers: []v1beta1.Server{server("web", portHTTP)},
		AuthorizationPolicies: []v1beta1.AuthorizationPolicy{
			policy("frontend-from-pods", toServer("web"), saRef("frontend", ""), netRef("pods", "")),
			policy("ops-anywhere", toServer("web"), meshRef("ops", "")),
			policy("monitoring-plain", toServer("web"), netRef("monitoring", "")),
		},
		MeshTLSAuthentications: []v1beta1.MeshTLSAuthentication{meshTLS("shop", "ops", "*.ops.serviceaccount.identity.sluice.cluster.local")},
		NetworkAuthentications: []v1beta1.NetworkAuthentication{
			network("shop", "pods", v1beta1.Network{CIDR: "10.0.0.0/8", Except: []string{"10.66.0.0/16"}}),
			network("shop", "monitoring", v1beta1.Network{CIDR: "192.168.7.0/24"}),
		},
	}
	srv, err := (&Compiler{IdentityOf: identityOf}).Compile(in)
	if err != nil {
		t.Fatal(err)
	}
	frontend := identityOf("frontend", "shop")
	tests := []struct {
		addr, id string
		authz    string // "" = denied
	}{
		{"10.1.2.3", frontend, "frontend-from-pods"},
		{"10.66.0.1", frontend, ""}, // excepted network
		{"203.0.113.1", frontend, ""},
		{"10.1.2.3", identityOf("web", "shop"), ""},
		{"10.1.2.3", "", ""},
		{"203.0.113.1", identityOf("prometheus", "ops"), "ops-anywhere"},
		{"203.0.113.1", identityOf("prometheus", "devops"), ""},
		{"192.168.7.9", "", "monitoring-plain"},
		{"192.168.7.9", frontend, "monitoring-plain"},
		{"192.168.8.9", "", ""},
	}
	for _, tc := range tests {
		d := srv.Authorize(netip.MustParseAddr(tc.addr), tc.id)
		if d.Allowed != (tc.authz != "") || d.Authorization != tc.authz {
			t.Errorf("client %s identity %q: allowed %v by %q, want %q (%s)", tc.addr, tc.id, d.Allowed, d.Authorization, tc.authz, d.Reason)
		}
	}
}
