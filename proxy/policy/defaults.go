package policy

import (
	"fmt"
	"net/netip"
)

// DefaultClusterNetworks are the networks the cluster-* default policies
// allow when none are configured: the private IPv4 ranges, carrier-grade NAT
// and IPv6 unique local addresses (Linkerd's clusterNetworks default).
var DefaultClusterNetworks = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("fd00::/8"),
}

// LoopbackNetworks are always cluster networks: a client on loopback runs on
// the same host (in Kubernetes, in the same pod), so it is inside the cluster
// by construction. This is what makes cluster-* policies work in local mode,
// where every workload talks to every other over 127.0.0.1.
var LoopbackNetworks = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
}

// allNetworks are every IPv4 and every IPv6 address.
var allNetworks = []Network{
	{CIDR: netip.MustParsePrefix("0.0.0.0/0")},
	{CIDR: netip.MustParsePrefix("::/0")},
}

// DefaultPolicies lists the default policy names.
var DefaultPolicies = []string{AllUnauthenticated, AllAuthenticated, ClusterUnauthenticated, ClusterAuthenticated, Deny, Audit}

// Default returns the Server a default policy name means, named after the
// policy with kind KindDefault and protocol detection:
//
//   - all-unauthenticated: one authorization of every client from 0.0.0.0/0 and ::/0;
//   - all-authenticated: clients with any mesh TLS identity, from anywhere;
//   - cluster-unauthenticated: every client from the cluster networks;
//   - cluster-authenticated: clients with any identity from the cluster networks;
//   - deny: no authorizations;
//   - audit: no authorizations, Audit set (everybody allowed, flagged).
//
// The cluster networks are clusterNetworks, or DefaultClusterNetworks when it
// is empty, plus LoopbackNetworks in both cases. The authorization is named
// after the policy too, so a Server resource's accessPolicy can reuse it.
func Default(name string, clusterNetworks []netip.Prefix) (Server, error) {
	s := Server{Name: name, Kind: KindDefault}
	authz := Authorization{Name: name, Kind: KindDefault}
	switch name {
	case AllUnauthenticated:
		authz.Networks = cloneNetworks(allNetworks)
		authz.Auth.Unauthenticated = true
	case AllAuthenticated:
		authz.Networks = cloneNetworks(allNetworks)
		authz.Auth.Identities = []string{"*"}
	case ClusterUnauthenticated:
		authz.Networks = ClusterNetworks(clusterNetworks)
		authz.Auth.Unauthenticated = true
	case ClusterAuthenticated:
		authz.Networks = ClusterNetworks(clusterNetworks)
		authz.Auth.Identities = []string{"*"}
	case Deny:
		return s, nil
	case Audit:
		s.Audit = true
		return s, nil
	default:
		return Server{}, fmt.Errorf("default policy %q is not one of %v", name, DefaultPolicies)
	}
	s.Authorizations = []Authorization{authz}
	return s, nil
}

// ClusterNetworks returns the networks the cluster-* policies allow, given the
// configured cluster networks (DefaultClusterNetworks when empty): those,
// masked, plus LoopbackNetworks.
func ClusterNetworks(configured []netip.Prefix) []Network {
	if len(configured) == 0 {
		configured = DefaultClusterNetworks
	}
	nets := make([]Network, 0, len(configured)+len(LoopbackNetworks))
	for _, p := range configured {
		nets = append(nets, Network{CIDR: p.Masked()})
	}
	for _, p := range LoopbackNetworks {
		nets = append(nets, Network{CIDR: p})
	}
	return nets
}

func cloneNetworks(ns []Network) []Network { return append([]Network(nil), ns...) }
