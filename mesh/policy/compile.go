// Package policy is the control plane's half of inbound authorization: it
// compiles the policy objects that apply to one workload port (Server,
// AuthorizationPolicy, MeshTLSAuthentication, NetworkAuthentication from
// crds/policy/v1beta1) into the wire-neutral proxy policy the proxy enforces
// (proxy/policy.Server), with Linkerd's semantics:
//
//   - The Server that selects the port is one in the pod's namespace whose
//     podSelector matches the pod's labels and whose port is the port's number
//     or name. When several do, the oldest (creationTimestamp, then name) wins
//     and the others are reported as ignored: Linkerd's admission webhook
//     refuses overlapping Servers, and without one the first indexed wins.
//   - No Server: the port gets the default policy (the caller's, usually the
//     workload's config.sluice.dev/default-inbound-policy or the cluster's),
//     and no AuthorizationPolicy applies, not even a Namespace-targeted one.
//   - A Server gets one authorization per AuthorizationPolicy of its namespace
//     that targets it by name or targets the namespace, then the authorization
//     its accessPolicy names (none for deny; audit mode for audit). An
//     HTTPRoute-targeted policy authorizes that route only and is not part of
//     the port's policy (routes are not compiled here), so it is left out:
//     that fails closed.
//   - An AuthorizationPolicy requires ALL its authentications: the client's
//     identity must match its MeshTLSAuthentication (or be its ServiceAccount's
//     identity) AND its address must be in its NetworkAuthentication. Without an
//     identity requirement the client need not use TLS; without a network one
//     it may connect from anywhere. A policy that references an object that does
//     not exist, or is invalid, is left out (it authorizes nobody) and reported.
//
// Server serves the compiled policies to proxies over gRPC
// (meshv1.InboundPolicies): one stream per workload port, recompiled from a
// PolicySource whenever it changes, converted to the wire by ServerToProto.
package policy

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/sluicehq/sluice/crds/policy/v1beta1"
	"github.com/sluicehq/sluice/mesh/api/routetable"
	proxypolicy "github.com/sluicehq/sluice/proxy/policy"
)

// Input is everything Compile looks at for one workload port. The object
// lists may hold objects of every namespace; Compile picks what applies.
type Input struct {
	// PodLabels and PodNamespace describe the workload ("" means "default").
	PodLabels    map[string]string
	PodNamespace string
	// Port is the port number, PortName the name of the container port that
	// declares it ("" when unnamed).
	Port     int32
	PortName string

	Servers                []v1beta1.Server
	AuthorizationPolicies  []v1beta1.AuthorizationPolicy
	MeshTLSAuthentications []v1beta1.MeshTLSAuthentication
	NetworkAuthentications []v1beta1.NetworkAuthentication

	// DefaultPolicy is what a port no Server selects gets; "" means
	// all-unauthenticated, the cluster-wide default.
	DefaultPolicy string
}

// Compiler compiles policy objects with some cluster settings.
type Compiler struct {
	// IdentityOf returns the mesh TLS identity of a service account
	// ("<sa>.<ns>.serviceaccount.identity.<control-ns>.<trust-domain>"). It is
	// also how a Namespace identityRef becomes an identity suffix: the
	// identity of a service account with every name but the first label.
	IdentityOf func(sa, ns string) string
	// ClusterNetworks are what the cluster-* default policies allow; empty
	// means proxy/policy.DefaultClusterNetworks (loopback is always added).
	ClusterNetworks []netip.Prefix
	// Ignored, when set, is told about each object Compile leaves out because
	// it is invalid, refers to something missing, or conflicts with an older
	// Server. The same object is reported again by every Compile it affects.
	Ignored func(kind, namespace, name string, err error)
}

// Compile compiles the policy of one workload port with the default cluster
// networks; see the package documentation for the semantics. The error is
// about the arguments (an unknown default policy name, a nil identityOf),
// never about the objects: those are left out, failing closed.
func Compile(podLabels map[string]string, podNamespace string, port int32, portName string,
	servers []v1beta1.Server, authzs []v1beta1.AuthorizationPolicy,
	meshTLS []v1beta1.MeshTLSAuthentication, nets []v1beta1.NetworkAuthentication,
	defaultPolicy string, identityOf func(sa, ns string) string) (proxypolicy.Server, error) {
	c := Compiler{IdentityOf: identityOf}
	return c.Compile(Input{
		PodLabels: podLabels, PodNamespace: podNamespace, Port: port, PortName: portName,
		Servers: servers, AuthorizationPolicies: authzs,
		MeshTLSAuthentications: meshTLS, NetworkAuthentications: nets,
		DefaultPolicy: defaultPolicy,
	})
}

// Compile compiles the policy of one workload port; see the package
// documentation for the semantics and the function Compile for the error.
func (c *Compiler) Compile(in Input) (proxypolicy.Server, error) {
	if c.IdentityOf == nil {
		return proxypolicy.Server{}, errors.New("compile inbound policy: no IdentityOf function")
	}
	ns := namespaceOr(in.PodNamespace)
	def := in.DefaultPolicy
	if def == "" {
		def = proxypolicy.AllUnauthenticated
	}
	fallback, err := proxypolicy.Default(def, c.ClusterNetworks)
	if err != nil {
		return proxypolicy.Server{}, fmt.Errorf("compile inbound policy of %s port %d: %w", ns, in.Port, err)
	}

	srv := c.selectServer(in, ns)
	if srv == nil {
		return fallback, nil
	}

	access := string(srv.Spec.AccessPolicy)
	if access == "" {
		access = string(v1beta1.Deny)
	}
	base, err := proxypolicy.Default(access, c.ClusterNetworks)
	if err != nil { // Validate accepted it, so this cannot happen; fail closed anyway.
		c.ignore("Server", srv.Namespace, srv.Name, err)
		base = proxypolicy.Server{}
	}
	out := proxypolicy.Server{
		Name:     srv.Name,
		Kind:     proxypolicy.KindServer,
		Protocol: protocolOf(srv.Spec.ProxyProtocol),
		Audit:    base.Audit,
	}
	out.Authorizations = c.policyAuthorizations(in, ns, srv.Name)
	out.Authorizations = append(out.Authorizations, base.Authorizations...)
	return out, nil
}

// selectServer returns the Server that selects the port, or nil.
func (c *Compiler) selectServer(in Input, ns string) *v1beta1.Server {
	podLabels := labels.Set(in.PodLabels)
	var selected []*v1beta1.Server
	for i := range in.Servers {
		s := &in.Servers[i]
		if namespaceOr(s.Namespace) != ns {
			continue
		}
		if err := s.Validate(); err != nil {
			c.ignore("Server", s.Namespace, s.Name, err)
			continue
		}
		if !selectsPort(s.Spec.Port, in.Port, in.PortName) {
			continue
		}
		sel, _ := metav1.LabelSelectorAsSelector(&s.Spec.PodSelector) // Validate checked it
		if sel.Matches(podLabels) {
			selected = append(selected, s)
		}
	}
	if len(selected) == 0 {
		return nil
	}
	slices.SortFunc(selected, func(a, b *v1beta1.Server) int {
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			if a.CreationTimestamp.Before(&b.CreationTimestamp) {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.Name, b.Name)
	})
	for _, s := range selected[1:] {
		c.ignore("Server", s.Namespace, s.Name, fmt.Errorf("port %d of the pod is also selected by the older Server %s, which wins", in.Port, selected[0].Name))
	}
	return selected[0]
}

// selectsPort reports whether a Server's port is the pod's port. A numeric
// string is a number: a port name always has a letter.
func selectsPort(p intstr.IntOrString, port int32, portName string) bool {
	if p.Type == intstr.Int {
		return p.IntVal == port
	}
	if n, err := strconv.ParseInt(p.StrVal, 10, 32); err == nil {
		return int32(n) == port
	}
	return portName != "" && p.StrVal == portName
}

// policyAuthorizations compiles the AuthorizationPolicies of namespace ns that
// target the Server named server or the namespace, ordered by name.
func (c *Compiler) policyAuthorizations(in Input, ns, server string) []proxypolicy.Authorization {
	var applies []*v1beta1.AuthorizationPolicy
	for i := range in.AuthorizationPolicies {
		p := &in.AuthorizationPolicies[i]
		if namespaceOr(p.Namespace) != ns {
			continue
		}
		// By kind alone, so that a wrong group is reported by Validate rather
		// than silently not applying.
		t := p.Spec.TargetRef
		if !(t.Kind == v1beta1.KindServer && t.Name == server) && t.Kind != v1beta1.KindNamespace {
			continue // another Server's, an HTTPRoute's, or a kind nothing targets
		}
		applies = append(applies, p)
	}
	slices.SortFunc(applies, func(a, b *v1beta1.AuthorizationPolicy) int { return cmp.Compare(a.Name, b.Name) })

	var out []proxypolicy.Authorization
	for _, p := range applies {
		az, err := c.authorization(in, p)
		if err != nil {
			c.ignore("AuthorizationPolicy", p.Namespace, p.Name, err)
			continue
		}
		out = append(out, az)
	}
	return out
}

// authorization compiles one AuthorizationPolicy.
func (c *Compiler) authorization(in Input, p *v1beta1.AuthorizationPolicy) (proxypolicy.Authorization, error) {
	// Validate with the namespace defaulted, so a Namespace target names it.
	vp := *p
	vp.Namespace = namespaceOr(p.Namespace)
	if err := vp.Validate(); err != nil {
		return proxypolicy.Authorization{}, err
	}
	az := proxypolicy.Authorization{Name: p.Name, Kind: proxypolicy.KindAuthorizationPolicy}
	identity := false
	for _, r := range p.Spec.RequiredAuthenticationRefs {
		ns := namespaceOr(r.NamespaceOr(p.Namespace))
		switch {
		case r.IsServiceAccount():
			az.Auth.Identities = []string{c.IdentityOf(r.Name, ns)}
			identity = true
		case r.IsMeshTLS():
			m := findMeshTLS(in.MeshTLSAuthentications, ns, r.Name)
			if m == nil {
				return az, fmt.Errorf("MeshTLSAuthentication %s/%s does not exist", ns, r.Name)
			}
			auth, err := c.meshTLSAuthentication(m)
			if err != nil {
				return az, err
			}
			az.Auth = auth
			identity = true
		case r.IsNetwork():
			n := findNetwork(in.NetworkAuthentications, ns, r.Name)
			if n == nil {
				return az, fmt.Errorf("NetworkAuthentication %s/%s does not exist", ns, r.Name)
			}
			nets, err := networks(n)
			if err != nil {
				return az, err
			}
			az.Networks = nets
		}
	}
	az.Auth.Unauthenticated = !identity
	return az, nil
}

// meshTLSAuthentication compiles the identities of a MeshTLSAuthentication.
func (c *Compiler) meshTLSAuthentication(m *v1beta1.MeshTLSAuthentication) (proxypolicy.Authentication, error) {
	var a proxypolicy.Authentication
	if err := m.Validate(); err != nil {
		return a, err
	}
	for _, id := range m.Spec.Identities {
		switch {
		case id == "*":
			a.Identities = append(a.Identities, "*")
		case strings.HasPrefix(id, "*."):
			a.Suffixes = append(a.Suffixes, id[1:])
		default:
			a.Identities = append(a.Identities, id)
		}
	}
	for _, r := range m.Spec.IdentityRefs {
		switch r.Kind {
		case v1beta1.KindServiceAccount:
			a.Identities = append(a.Identities, c.IdentityOf(r.Name, namespaceOr(cmp.Or(r.Namespace, m.Namespace))))
		case v1beta1.KindNamespace:
			suffix, err := c.namespaceSuffix(r.Name)
			if err != nil {
				return a, fmt.Errorf("meshtlsauthentication %s/%s: %w", m.Namespace, m.Name, err)
			}
			a.Suffixes = append(a.Suffixes, suffix)
		}
	}
	return a, nil
}

// namespaceSuffix returns the suffix every service account identity of
// namespace ns ends in, with its leading dot.
func (c *Compiler) namespaceSuffix(ns string) (string, error) {
	const probe = "sa"
	id := c.IdentityOf(probe, ns)
	if !strings.HasPrefix(id, probe+".") || !strings.Contains(id, "."+ns+".") {
		return "", fmt.Errorf("identity %q of a service account of namespace %s does not have the form <sa>.<ns>.…", id, ns)
	}
	return id[len(probe):], nil
}

// networks compiles the networks of a NetworkAuthentication.
func networks(n *v1beta1.NetworkAuthentication) ([]proxypolicy.Network, error) {
	if err := n.Validate(); err != nil {
		return nil, err
	}
	out := make([]proxypolicy.Network, 0, len(n.Spec.Networks))
	for _, nw := range n.Spec.Networks {
		p, except, _ := nw.Parse() // Validate parsed them
		out = append(out, proxypolicy.Network{CIDR: p, Except: except})
	}
	return out, nil
}

func findMeshTLS(ms []v1beta1.MeshTLSAuthentication, ns, name string) *v1beta1.MeshTLSAuthentication {
	for i := range ms {
		if ms[i].Name == name && namespaceOr(ms[i].Namespace) == ns {
			return &ms[i]
		}
	}
	return nil
}

func findNetwork(ns []v1beta1.NetworkAuthentication, namespace, name string) *v1beta1.NetworkAuthentication {
	for i := range ns {
		if ns[i].Name == name && namespaceOr(ns[i].Namespace) == namespace {
			return &ns[i]
		}
	}
	return nil
}

// protocolOf maps a Server's proxyProtocol to the proxy's protocol. TLS is
// forwarded opaquely: the proxy does not terminate application TLS.
func protocolOf(p v1beta1.ProxyProtocol) routetable.Protocol {
	switch p {
	case v1beta1.ProxyProtocolHTTP1:
		return routetable.ProtocolHTTP1
	case v1beta1.ProxyProtocolHTTP2:
		return routetable.ProtocolHTTP2
	case v1beta1.ProxyProtocolGRPC:
		return routetable.ProtocolGRPC
	case v1beta1.ProxyProtocolOpaque, v1beta1.ProxyProtocolTLS:
		return routetable.ProtocolOpaque
	default:
		return routetable.ProtocolDetect
	}
}

func (c *Compiler) ignore(kind, namespace, name string, err error) {
	if c.Ignored != nil {
		c.Ignored(kind, namespace, name, err)
	}
}

// namespaceOr returns ns, or "default" when it is empty (objects of a local
// mode file may leave the namespace out).
func namespaceOr(ns string) string {
	if ns == "" {
		return "default"
	}
	return ns
}
