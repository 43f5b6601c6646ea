package policy

import (
	"fmt"
	"net/netip"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	protobuf "google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/crds/policy/v1beta1"
	"github.com/sluicehq/sluice/mesh/api/meshv1"
	"github.com/sluicehq/sluice/mesh/api/routetable"
	proxypolicy "github.com/sluicehq/sluice/proxy/policy"
)

func unauthenticated() *meshv1.Authorization_Unauthenticated {
	return &meshv1.Authorization_Unauthenticated{Unauthenticated: &meshv1.Unauthenticated{}}
}

func meshTLSAuthn(ids, suffixes []string) *meshv1.Authorization_MeshTls {
	return &meshv1.Authorization_MeshTls{MeshTls: &meshv1.MeshTLS{Identities: ids, Suffixes: suffixes}}
}

var (
	everyNetwork = []*meshv1.Network{{Cidr: "0.0.0.0/0"}, {Cidr: "::/0"}}
	auditAuthz   = &meshv1.Authorization{
		Authentication: unauthenticated(),
		Labels:         map[string]string{"authz_name": "audit", "authz_kind": "default"},
		Audit:          true,
	}
)

func TestServerToProto(t *testing.T) {
	tests := []struct {
		name string
		in   proxypolicy.Server
		want *meshv1.InboundServer
	}{
		{
			name: "default all-unauthenticated",
			in:   defaultServer(t, proxypolicy.AllUnauthenticated),
			want: &meshv1.InboundServer{
				Labels:        map[string]string{"srv_name": "all-unauthenticated", "srv_kind": "default"},
				DefaultPolicy: "all-unauthenticated",
				Authorizations: []*meshv1.Authorization{{
					Networks:       everyNetwork,
					Authentication: unauthenticated(),
					Labels:         map[string]string{"authz_name": "all-unauthenticated", "authz_kind": "default"},
				}},
			},
		},
		{
			name: "default all-authenticated",
			in:   defaultServer(t, proxypolicy.AllAuthenticated),
			want: &meshv1.InboundServer{
				Labels:        map[string]string{"srv_name": "all-authenticated", "srv_kind": "default"},
				DefaultPolicy: "all-authenticated",
				Authorizations: []*meshv1.Authorization{{
					Networks:       everyNetwork,
					Authentication: meshTLSAuthn([]string{"*"}, nil),
					Labels:         map[string]string{"authz_name": "all-authenticated", "authz_kind": "default"},
				}},
			},
		},
		{
			name: "default cluster-unauthenticated with configured networks",
			in: func() proxypolicy.Server {
				s, err := proxypolicy.Default(proxypolicy.ClusterUnauthenticated, []netip.Prefix{pfx("10.42.7.0/16")})
				if err != nil {
					t.Fatal(err)
				}
				return s
			}(),
			want: &meshv1.InboundServer{
				Labels:        map[string]string{"srv_name": "cluster-unauthenticated", "srv_kind": "default"},
				DefaultPolicy: "cluster-unauthenticated",
				Authorizations: []*meshv1.Authorization{{
					Networks:       []*meshv1.Network{{Cidr: "10.42.0.0/16"}, {Cidr: "127.0.0.0/8"}, {Cidr: "::1/128"}},
					Authentication: unauthenticated(),
					Labels:         map[string]string{"authz_name": "cluster-unauthenticated", "authz_kind": "default"},
				}},
			},
		},
		{
			name: "default deny",
			in:   defaultServer(t, proxypolicy.Deny),
			want: &meshv1.InboundServer{
				Labels:        map[string]string{"srv_name": "deny", "srv_kind": "default"},
				DefaultPolicy: "deny",
			},
		},
		{
			name: "default audit",
			in:   defaultServer(t, proxypolicy.Audit),
			want: &meshv1.InboundServer{
				Labels:         map[string]string{"srv_name": "audit", "srv_kind": "default"},
				DefaultPolicy:  "audit",
				Authorizations: []*meshv1.Authorization{auditAuthz},
			},
		},
		{
			name: "server with policies and audit access",
			in: proxypolicy.Server{
				Name: "web", Kind: proxypolicy.KindServer, Protocol: routetable.ProtocolGRPC, Audit: true,
				Authorizations: []proxypolicy.Authorization{
					{
						Name: "frontend", Kind: proxypolicy.KindAuthorizationPolicy,
						Networks: []proxypolicy.Network{{CIDR: pfx("10.0.0.0/8"), Except: []netip.Prefix{pfx("10.66.0.0/16"), pfx("10.1.2.3/32")}}},
						Auth:     proxypolicy.Authentication{Identities: []string{webSA, "*.ops.example"}, Suffixes: []string{".shop.example", "*"}},
					},
					{Name: "nobody", Kind: proxypolicy.KindAuthorizationPolicy},
				},
			},
			want: &meshv1.InboundServer{
				Protocol: meshv1.Protocol_PROTOCOL_GRPC,
				Labels:   map[string]string{"srv_name": "web", "srv_kind": "server", "srv_group": "policy.sluice.dev"},
				Authorizations: []*meshv1.Authorization{
					{
						Networks:       []*meshv1.Network{{Cidr: "10.0.0.0/8", Except: []string{"10.66.0.0/16", "10.1.2.3/32"}}},
						Authentication: meshTLSAuthn([]string{webSA, "*.ops.example"}, []string{".shop.example", "*"}),
						Labels:         map[string]string{"authz_name": "frontend", "authz_kind": "authorizationpolicy", "authz_group": "policy.sluice.dev"},
					},
					{
						Authentication: meshTLSAuthn(nil, nil),
						Labels:         map[string]string{"authz_name": "nobody", "authz_kind": "authorizationpolicy", "authz_group": "policy.sluice.dev"},
					},
					auditAuthz,
				},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ServerToProto(&tc.in)
			if !protobuf.Equal(got, tc.want) {
				t.Errorf("ServerToProto:\ngot  %s\nwant %s", prototext.Format(got), prototext.Format(tc.want))
			}
		})
	}
	if ServerToProto(nil) != nil {
		t.Error("ServerToProto(nil) is not nil")
	}
}

func TestServerToProtoDoesNotAlias(t *testing.T) {
	in := proxypolicy.Server{Name: "web", Kind: proxypolicy.KindServer, Authorizations: []proxypolicy.Authorization{
		{Name: "a", Kind: proxypolicy.KindAuthorizationPolicy, Auth: proxypolicy.Authentication{Identities: []string{"x"}, Suffixes: []string{"y"}}},
	}}
	p := ServerToProto(&in)
	p.Authorizations[0].GetMeshTls().Identities[0] = "changed"
	p.Authorizations[0].GetMeshTls().Suffixes[0] = "changed"
	if in.Authorizations[0].Auth.Identities[0] != "x" || in.Authorizations[0].Auth.Suffixes[0] != "y" {
		t.Errorf("the proto shares its lists with the Server: %+v", in.Authorizations[0].Auth)
	}
}

// decodeInboundServer converts an InboundServer back the way policy.proto's
// comments say a proxy must: it is what the proxy side implements, written
// here from the contract alone.
func decodeInboundServer(p *meshv1.InboundServer) (proxypolicy.Server, error) {
	protocol, err := meshv1.ProtocolFromProto(p.GetProtocol())
	if err != nil {
		return proxypolicy.Server{}, err
	}
	s := proxypolicy.Server{Name: p.GetLabels()["srv_name"], Kind: p.GetLabels()["srv_kind"], Protocol: protocol}
	for i, a := range p.GetAuthorizations() {
		if a.GetAudit() {
			s.Audit = true
			continue
		}
		az := proxypolicy.Authorization{Name: a.GetLabels()["authz_name"], Kind: a.GetLabels()["authz_kind"]}
		for _, n := range a.GetNetworks() {
			cidr, err := parseCIDR(n.GetCidr())
			if err != nil {
				return s, fmt.Errorf("authorizations[%d]: %w", i, err)
			}
			nw := proxypolicy.Network{CIDR: cidr}
			for _, x := range n.GetExcept() {
				e, err := parseCIDR(x)
				if err != nil {
					return s, fmt.Errorf("authorizations[%d]: except: %w", i, err)
				}
				nw.Except = append(nw.Except, e)
			}
			az.Networks = append(az.Networks, nw)
		}
		switch a.GetAuthentication().(type) {
		case *meshv1.Authorization_Unauthenticated:
			az.Auth.Unauthenticated = true
		case *meshv1.Authorization_MeshTls:
			az.Auth.Identities = a.GetMeshTls().GetIdentities()
			az.Auth.Suffixes = a.GetMeshTls().GetSuffixes()
		}
		s.Authorizations = append(s.Authorizations, az)
	}
	return s, nil
}

func parseCIDR(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.ParsePrefix(s)
}

// TestServerToProtoSemantics checks that a proxy reading the wire form as
// policy.proto describes decides exactly what the compiled Server decides,
// for every default policy and for compiled Servers, audit mode included.
func TestServerToProtoSemantics(t *testing.T) {
	servers := map[string]proxypolicy.Server{}
	for _, name := range proxypolicy.DefaultPolicies {
		servers["default "+name] = defaultServer(t, name)
	}
	in := Input{
		PodLabels: map[string]string{"app": "web"}, PodNamespace: "shop", Port: 8080, PortName: "http",
		AuthorizationPolicies: []v1beta1.AuthorizationPolicy{
			policy("frontend-from-pods", toServer("web"), saRef("frontend", ""), netRef("pods", "")),
			policy("ops-anywhere", toServer("web"), meshRef("ops", "")),
			policy("monitoring-plain", toServer("web"), netRef("monitoring", "")),
		},
		MeshTLSAuthentications: []v1beta1.MeshTLSAuthentication{meshTLS("shop", "ops", "*.ops.serviceaccount.identity.sluice.cluster.local")},
		NetworkAuthentications: []v1beta1.NetworkAuthentication{
			network("shop", "pods", v1beta1.Network{CIDR: "10.0.0.0/8", Except: []string{"10.66.0.0/16", "10.1.1.1"}}),
			network("shop", "monitoring", v1beta1.Network{CIDR: "192.168.7.0/24"}),
		},
	}
	for _, ap := range v1beta1.AccessPolicies {
		in.Servers = []v1beta1.Server{server("web", portHTTP, access(ap), proto(v1beta1.ProxyProtocolHTTP2))}
		srv, err := (&Compiler{IdentityOf: identityOf}).Compile(in)
		if err != nil {
			t.Fatal(err)
		}
		servers["server with accessPolicy "+string(ap)] = srv
	}

	addrs := []string{"10.1.2.3", "10.66.0.1", "10.1.1.1", "192.168.7.9", "192.168.8.9", "127.0.0.1", "203.0.113.1", "::1", "fd00::5", "2001:db8::1", "::ffff:10.1.2.3"}
	ids := []string{"", identityOf("frontend", "shop"), identityOf("web", "shop"), identityOf("prometheus", "ops"), identityOf("prometheus", "devops")}
	for name, srv := range servers {
		t.Run(name, func(t *testing.T) {
			wire := ServerToProto(&srv)
			// Through the wire for real, so nothing rides on shared memory.
			b, err := protobuf.Marshal(wire)
			if err != nil {
				t.Fatal(err)
			}
			var back meshv1.InboundServer
			if err := protobuf.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			got, err := decodeInboundServer(&back)
			if err != nil {
				t.Fatalf("decode %v: %v", &back, err)
			}
			if got.Protocol != srv.Protocol || got.Audit != srv.Audit || len(got.Authorizations) != len(srv.Authorizations) {
				t.Errorf("decoded protocol %q audit %v with %d authorizations, want %q %v %d",
					got.Protocol, got.Audit, len(got.Authorizations), srv.Protocol, srv.Audit, len(srv.Authorizations))
			}
			for _, a := range addrs {
				for _, id := range ids {
					want := srv.Authorize(netip.MustParseAddr(a), id)
					have := got.Authorize(netip.MustParseAddr(a), id)
					if have != want {
						t.Errorf("client %s identity %q: decoded policy decides %+v, compiled %+v", a, id, have, want)
					}
				}
			}
		})
	}
}
