// Package policy is the proxy's inbound authorization: the compiled policy of
// one workload port (a Server and its Authorizations), the default policies,
// and the check run for each connection or request.
//
// The types are wire-neutral: the control plane compiles Server,
// AuthorizationPolicy, MeshTLSAuthentication and NetworkAuthentication objects
// (mesh/policy) into a Server, the destination stream carries it, and the
// proxy evaluates it with an Evaluator. The package imports only the standard
// library and the shared route-table types.
//
// Semantics follow Linkerd's: a client is allowed when any Authorization
// allows it; an Authorization allows a client whose address is in one of its
// Networks (and in none of that network's exceptions) and whose
// authentication satisfies Auth. A Server with no Authorizations denies
// everything, unless it is in audit mode. A denied HTTP request gets 403 (a
// gRPC call PERMISSION_DENIED) and a denied TCP connection is closed; that is
// the caller's job, as is counting decisions in metrics (see Decision).
package policy

import (
	"net/netip"
	"strings"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

// Kinds of Server and Authorization, used as the srv_kind and authz_kind
// metric labels.
const (
	// KindServer is a Server compiled from a Server resource.
	KindServer = "server"
	// KindDefault is a default policy (a port no Server selects, or the
	// authorization a Server's accessPolicy adds).
	KindDefault = "default"
	// KindAuthorizationPolicy is an Authorization compiled from an AuthorizationPolicy.
	KindAuthorizationPolicy = "authorizationpolicy"
	// Group is the API group of the Server and AuthorizationPolicy kinds, the
	// srv_group and authz_group label of those kinds (empty for KindDefault).
	Group = "policy.sluice.dev"
)

// Names of the default policies.
const (
	// AllUnauthenticated allows every client from every network, with or without TLS.
	AllUnauthenticated = "all-unauthenticated"
	// AllAuthenticated allows clients with any mesh TLS identity from every network.
	AllAuthenticated = "all-authenticated"
	// ClusterUnauthenticated allows every client from the cluster networks.
	ClusterUnauthenticated = "cluster-unauthenticated"
	// ClusterAuthenticated allows clients with any mesh TLS identity from the cluster networks.
	ClusterAuthenticated = "cluster-authenticated"
	// Deny allows nobody.
	Deny = "deny"
	// Audit allows everybody, flagging each decision no authorization made as audit.
	Audit = "audit"
)

// Network is a range of client addresses minus some sub-ranges.
type Network struct {
	// CIDR is the range.
	CIDR netip.Prefix
	// Except are sub-ranges of CIDR that are not part of the network.
	Except []netip.Prefix
}

// Contains reports whether a is in the network. a must be unmapped and
// zoneless (Authorize normalizes it).
func (n *Network) Contains(a netip.Addr) bool {
	if !n.CIDR.Contains(a) {
		return false
	}
	for _, x := range n.Except {
		if x.Contains(a) {
			return false
		}
	}
	return true
}

// Authentication is how a client must prove who it is.
type Authentication struct {
	// Unauthenticated allows any client, with or without a TLS identity; the
	// lists below are then ignored.
	Unauthenticated bool
	// Identities are mesh TLS identities allowed exactly
	// ("web.shop.serviceaccount.identity.sluice.cluster.local"); "*" allows any
	// client with an identity, and "*." plus a suffix is the same as that
	// suffix (with its leading dot) in Suffixes.
	Identities []string
	// Suffixes allow every identity ending in one at a label boundary:
	// ".shop.serviceaccount.identity.sluice.cluster.local" (or the same without
	// the leading dot) allows every service account of namespace shop. An
	// empty suffix or "*" allows any client with an identity.
	Suffixes []string
}

// Matches reports whether a client with the given verified mesh TLS identity
// ("" for none: plain text, or TLS without a client certificate) satisfies a.
func (a *Authentication) Matches(identity string) bool {
	if a.Unauthenticated {
		return true
	}
	if identity == "" {
		return false
	}
	for _, id := range a.Identities {
		switch {
		case id == identity, id == "*":
			return true
		case strings.HasPrefix(id, "*.") && suffixMatches(identity, id[1:]):
			return true
		}
	}
	for _, s := range a.Suffixes {
		if suffixMatches(identity, s) {
			return true
		}
	}
	return false
}

// suffixMatches reports whether identity ends in suffix at a label boundary.
func suffixMatches(identity, suffix string) bool {
	if suffix == "" || suffix == "*" || suffix == "." {
		return true
	}
	if suffix[0] == '.' {
		return strings.HasSuffix(identity, suffix)
	}
	if identity == suffix {
		return true
	}
	n := len(identity) - len(suffix)
	return n > 0 && identity[n-1] == '.' && identity[n:] == suffix
}

// Authorization allows clients from some networks that authenticate in some way.
type Authorization struct {
	// Name and Kind identify where the authorization came from, for the
	// authz_name and authz_kind metric labels: an AuthorizationPolicy's name and
	// KindAuthorizationPolicy, or a default policy's name and KindDefault.
	Name, Kind string
	// Networks are where clients may connect from; empty means anywhere.
	Networks []Network
	// Auth is how they must authenticate.
	Auth Authentication
}

// Allows reports whether the authorization allows a client at address client
// (unmapped, zoneless) with the given identity ("" for none).
func (az *Authorization) Allows(client netip.Addr, identity string) bool {
	if len(az.Networks) > 0 {
		in := false
		for i := range az.Networks {
			if az.Networks[i].Contains(client) {
				in = true
				break
			}
		}
		if !in {
			return false
		}
	}
	return az.Auth.Matches(identity)
}

// Server is the compiled inbound policy of one workload port.
type Server struct {
	// Name and Kind identify where the policy came from, for the srv_name and
	// srv_kind metric labels: a Server resource's name and KindServer, or a
	// default policy's name and KindDefault (a port no Server selects).
	Name, Kind string
	// Protocol is how connections to the port are handled ("" detects). A
	// Server resource's "TLS" (application TLS the proxy does not terminate)
	// compiles to routetable.ProtocolOpaque, which forwards it untouched.
	Protocol routetable.Protocol
	// Authorizations allow clients; a client any of them allows is allowed.
	Authorizations []Authorization
	// Audit allows clients no Authorization allows, flagging the decision as
	// audit (authorization "audit", kind default). On the wire it is an
	// authorization of every client with audit set.
	Audit bool
}

// Decision is the outcome of one authorization check.
type Decision struct {
	// Allowed says whether the connection or request may proceed.
	Allowed bool
	// Audit is set when the client was allowed only because the Server is in
	// audit mode: no authorization allowed it. Callers log these.
	Audit bool
	// Authorization and AuthorizationKind name the authorization that allowed
	// the client ("audit" and KindDefault for an audit decision; empty when
	// denied): the authz_name and authz_kind labels.
	Authorization, AuthorizationKind string
	// Server and ServerKind name the Server checked: the srv_name and srv_kind labels.
	Server, ServerKind string
	// Reason explains a denial (or an audit decision) for logs and the
	// sluice-proxy-error response header; empty when an authorization allowed
	// the client.
	Reason string
}

// Authorize checks a client: its address and its verified mesh TLS identity
// ("" when it has none). IPv4-mapped IPv6 addresses are checked as IPv4. It
// allocates only to build the Reason of a denial or an audit decision.
func (s *Server) Authorize(client netip.Addr, identity string) Decision {
	client = client.WithZone("").Unmap()
	for i := range s.Authorizations {
		az := &s.Authorizations[i]
		if az.Allows(client, identity) {
			return Decision{
				Allowed:           true,
				Authorization:     az.Name,
				AuthorizationKind: az.Kind,
				Server:            s.Name,
				ServerKind:        s.Kind,
			}
		}
	}
	d := Decision{Server: s.Name, ServerKind: s.Kind, Reason: s.denyReason(client, identity)}
	if s.Audit {
		d.Allowed, d.Audit = true, true
		d.Authorization, d.AuthorizationKind = Audit, KindDefault
		d.Reason = "audit: " + d.Reason
	}
	return d
}

func (s *Server) denyReason(client netip.Addr, identity string) string {
	who := "no identity"
	if identity != "" {
		who = "identity " + identity
	}
	kind := s.Kind
	if kind == "" {
		kind = KindServer
	}
	return "unauthorized: " + kind + "/" + s.Name + " allows no client at " + client.String() + " with " + who
}
