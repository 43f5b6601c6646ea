package v1beta1

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// isCoreGroup reports whether g names the core API group.
func isCoreGroup(g string) bool { return g == "" || g == "core" }

// TargetsServer reports whether r names a Server.
func (r PolicyTargetRef) TargetsServer() bool { return r.Kind == KindServer && r.Group == GroupName }

// TargetsNamespace reports whether r names a Namespace.
func (r PolicyTargetRef) TargetsNamespace() bool {
	return r.Kind == KindNamespace && isCoreGroup(r.Group)
}

// TargetsHTTPRoute reports whether r names an HTTPRoute (Gateway API's or this group's).
func (r PolicyTargetRef) TargetsHTTPRoute() bool {
	return r.Kind == KindHTTPRoute && (r.Group == GatewayGroupName || r.Group == GroupName)
}

// IsMeshTLS reports whether r names a MeshTLSAuthentication.
func (r AuthenticationRef) IsMeshTLS() bool {
	return r.Kind == KindMeshTLSAuthentication && r.Group == GroupName
}

// IsNetwork reports whether r names a NetworkAuthentication.
func (r AuthenticationRef) IsNetwork() bool {
	return r.Kind == KindNetworkAuthentication && r.Group == GroupName
}

// IsServiceAccount reports whether r names a ServiceAccount.
func (r AuthenticationRef) IsServiceAccount() bool {
	return r.Kind == KindServiceAccount && isCoreGroup(r.Group)
}

// NamespaceOr returns r's namespace, or def when r has none.
func (r AuthenticationRef) NamespaceOr(def string) string {
	if r.Namespace != "" {
		return r.Namespace
	}
	return def
}

// Validate checks what the schema cannot: a port that is a number or a name,
// the selector, and the access policy. It does not apply schema defaults: an
// empty accessPolicy is valid and means "deny".
func (s *Server) Validate() error {
	if err := validatePort(s.Spec.Port); err != nil {
		return fmt.Errorf("server %s/%s: %w", s.Namespace, s.Name, err)
	}
	if _, err := metav1.LabelSelectorAsSelector(&s.Spec.PodSelector); err != nil {
		return fmt.Errorf("server %s/%s: podSelector: %w", s.Namespace, s.Name, err)
	}
	if p := s.Spec.AccessPolicy; p != "" && !p.Valid() {
		return fmt.Errorf("server %s/%s: accessPolicy %q is not one of %v", s.Namespace, s.Name, p, AccessPolicies)
	}
	switch s.Spec.ProxyProtocol {
	case "", ProxyProtocolUnknown, ProxyProtocolHTTP1, ProxyProtocolHTTP2, ProxyProtocolGRPC, ProxyProtocolOpaque, ProxyProtocolTLS:
	default:
		return fmt.Errorf("server %s/%s: proxyProtocol %q is not one of unknown, HTTP/1, HTTP/2, gRPC, opaque, TLS", s.Namespace, s.Name, s.Spec.ProxyProtocol)
	}
	return nil
}

func validatePort(p intstr.IntOrString) error {
	if p.Type == intstr.Int {
		if p.IntVal < 1 || p.IntVal > 65535 {
			return fmt.Errorf("port %d is not in 1-65535", p.IntVal)
		}
		return nil
	}
	if p.StrVal == "" {
		return errors.New("port is empty")
	}
	return nil
}

// Validate checks the rules Linkerd's admission webhook enforces beyond the
// schema: a Namespace target must name the policy's own namespace, at most one
// identity authentication (MeshTLSAuthentication or ServiceAccount) and at
// most one NetworkAuthentication, and no other kinds.
func (p *AuthorizationPolicy) Validate() error {
	t := p.Spec.TargetRef
	switch {
	case t.TargetsServer(), t.TargetsHTTPRoute():
	case t.TargetsNamespace():
		if t.Name != p.Namespace {
			return fmt.Errorf("authorizationpolicy %s/%s: targetRef names namespace %q; a policy can only target its own namespace", p.Namespace, p.Name, t.Name)
		}
	default:
		return fmt.Errorf("authorizationpolicy %s/%s: targetRef %s is not a Server, Namespace or HTTPRoute", p.Namespace, p.Name, groupKind(t.Group, t.Kind))
	}
	if len(p.Spec.RequiredAuthenticationRefs) == 0 {
		return fmt.Errorf("authorizationpolicy %s/%s: requiredAuthenticationRefs is empty", p.Namespace, p.Name)
	}
	var ids, nets int
	for _, r := range p.Spec.RequiredAuthenticationRefs {
		switch {
		case r.IsMeshTLS(), r.IsServiceAccount():
			ids++
		case r.IsNetwork():
			nets++
		default:
			return fmt.Errorf("authorizationpolicy %s/%s: requiredAuthenticationRefs: %s is not a MeshTLSAuthentication, NetworkAuthentication or ServiceAccount", p.Namespace, p.Name, groupKind(r.Group, r.Kind))
		}
		if r.Name == "" {
			return fmt.Errorf("authorizationpolicy %s/%s: requiredAuthenticationRefs: %s without a name", p.Namespace, p.Name, r.Kind)
		}
	}
	if ids > 1 {
		return fmt.Errorf("authorizationpolicy %s/%s: at most one MeshTLSAuthentication or ServiceAccount may be required, found %d", p.Namespace, p.Name, ids)
	}
	if nets > 1 {
		return fmt.Errorf("authorizationpolicy %s/%s: at most one NetworkAuthentication may be required, found %d", p.Namespace, p.Name, nets)
	}
	return nil
}

func groupKind(group, kind string) string {
	if isCoreGroup(group) {
		return kind
	}
	return kind + "." + group
}

// Validate checks that exactly one of identities and identityRefs is set, the
// identities' form, and the references' kinds.
func (m *MeshTLSAuthentication) Validate() error {
	if (len(m.Spec.Identities) > 0) == (len(m.Spec.IdentityRefs) > 0) {
		return fmt.Errorf("meshtlsauthentication %s/%s: exactly one of identities and identityRefs must be set", m.Namespace, m.Name)
	}
	for _, id := range m.Spec.Identities {
		if err := ValidateIdentity(id); err != nil {
			return fmt.Errorf("meshtlsauthentication %s/%s: %w", m.Namespace, m.Name, err)
		}
	}
	for _, r := range m.Spec.IdentityRefs {
		if !isCoreGroup(r.Group) || (r.Kind != KindServiceAccount && r.Kind != KindNamespace) {
			return fmt.Errorf("meshtlsauthentication %s/%s: identityRefs: %s is not a ServiceAccount or Namespace", m.Namespace, m.Name, groupKind(r.Group, r.Kind))
		}
		if r.Name == "" {
			return fmt.Errorf("meshtlsauthentication %s/%s: identityRefs: %s without a name", m.Namespace, m.Name, r.Kind)
		}
		if r.Kind == KindNamespace && r.Namespace != "" {
			return fmt.Errorf("meshtlsauthentication %s/%s: identityRefs: Namespace %q is cluster-scoped and cannot have a namespace", m.Namespace, m.Name, r.Name)
		}
	}
	return nil
}

// ValidateIdentity checks one identities entry: "*", "*." and a DNS suffix,
// or a DNS name.
func ValidateIdentity(id string) error {
	if id == "*" {
		return nil
	}
	name := strings.TrimPrefix(id, "*.")
	if len(name) == 0 || len(name) > 253 {
		return fmt.Errorf("identity %q: must be \"*\", a DNS name, or \"*.\" and a DNS suffix", id)
	}
	for label := range strings.SplitSeq(name, ".") {
		if !isDNSLabel(label) {
			return fmt.Errorf("identity %q: label %q is not a lowercase DNS label", id, label)
		}
	}
	return nil
}

func isDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}

// Validate checks that there is a network and that each parses.
func (n *NetworkAuthentication) Validate() error {
	if len(n.Spec.Networks) == 0 {
		return fmt.Errorf("networkauthentication %s/%s: no networks", n.Namespace, n.Name)
	}
	for _, nw := range n.Spec.Networks {
		if _, _, err := nw.Parse(); err != nil {
			return fmt.Errorf("networkauthentication %s/%s: %w", n.Namespace, n.Name, err)
		}
	}
	return nil
}

// Parse returns the network's range and its exceptions. A bare IP address is
// a single-address prefix; host bits are cleared ("10.1.2.3/8" is 10.0.0.0/8).
// Every exception must lie inside the range and be smaller than it.
func (n Network) Parse() (netip.Prefix, []netip.Prefix, error) {
	p, err := ParsePrefix(n.CIDR)
	if err != nil {
		return netip.Prefix{}, nil, fmt.Errorf("network cidr: %w", err)
	}
	var except []netip.Prefix
	for _, e := range n.Except {
		x, err := ParsePrefix(e)
		if err != nil {
			return netip.Prefix{}, nil, fmt.Errorf("network %s except: %w", n.CIDR, err)
		}
		if x.Bits() <= p.Bits() || !p.Contains(x.Addr()) {
			return netip.Prefix{}, nil, fmt.Errorf("network %s: except %s does not lie inside it (or negates all of it)", n.CIDR, e)
		}
		except = append(except, x)
	}
	return p, except, nil
}

// ParsePrefix parses a CIDR or a bare IP address (a single-address prefix),
// clearing host bits and any IPv6 zone, and unmapping IPv4-mapped IPv6.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR: %w", s, err)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR or an IP address: %w", s, err)
	}
	a = a.WithZone("").Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}
