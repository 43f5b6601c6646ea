package localstore

import (
	"maps"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluicehq/sluice/crds/policy/v1beta1"
	"github.com/sluicehq/sluice/mesh/policy"
)

// PolicyObjects are inbound policy objects of every namespace. Its fields
// are those of local/up.Policies, so one converts to the other.
type PolicyObjects struct {
	Servers                []v1beta1.Server
	AuthorizationPolicies  []v1beta1.AuthorizationPolicy
	MeshTLSAuthentications []v1beta1.MeshTLSAuthentication
	NetworkAuthentications []v1beta1.NetworkAuthentication
}

// ApplyServer creates or replaces a Server. An empty namespace means
// "default"; the creationTimestamp is set on creation and kept on
// replacement, unless the object sets one. Storing an identical object
// changes nothing.
func (s *Store) ApplyServer(srv *v1beta1.Server) { applyObject(s, &s.servers, srv) }

// DeleteServer removes a Server; removing one the store does not hold does
// nothing.
func (s *Store) DeleteServer(namespace, name string) { deleteObject(s, &s.servers, namespace, name) }

// ApplyAuthorizationPolicy creates or replaces an AuthorizationPolicy, as
// ApplyServer does a Server.
func (s *Store) ApplyAuthorizationPolicy(p *v1beta1.AuthorizationPolicy) {
	applyObject(s, &s.authzPolicies, p)
}

// DeleteAuthorizationPolicy removes an AuthorizationPolicy; removing one the
// store does not hold does nothing.
func (s *Store) DeleteAuthorizationPolicy(namespace, name string) {
	deleteObject(s, &s.authzPolicies, namespace, name)
}

// ApplyMeshTLSAuthentication creates or replaces a MeshTLSAuthentication, as
// ApplyServer does a Server.
func (s *Store) ApplyMeshTLSAuthentication(m *v1beta1.MeshTLSAuthentication) {
	applyObject(s, &s.meshTLSAuthns, m)
}

// DeleteMeshTLSAuthentication removes a MeshTLSAuthentication; removing one
// the store does not hold does nothing.
func (s *Store) DeleteMeshTLSAuthentication(namespace, name string) {
	deleteObject(s, &s.meshTLSAuthns, namespace, name)
}

// ApplyNetworkAuthentication creates or replaces a NetworkAuthentication, as
// ApplyServer does a Server.
func (s *Store) ApplyNetworkAuthentication(n *v1beta1.NetworkAuthentication) {
	applyObject(s, &s.networkAuthns, n)
}

// DeleteNetworkAuthentication removes a NetworkAuthentication; removing one
// the store does not hold does nothing.
func (s *Store) DeleteNetworkAuthentication(namespace, name string) {
	deleteObject(s, &s.networkAuthns, namespace, name)
}

// ReplacePolicies replaces every stored policy object with p's, as one
// change: watchers never see some of the new objects beside some of the old
// ones. Objects that stay keep their creationTimestamp (unless p's copy sets
// one), and if nothing differs nothing changes. Of two objects of one kind
// with the same namespace and name, the later wins.
func (s *Store) ReplacePolicies(p PolicyObjects) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	changed := s.servers.replace(p.Servers, now)
	changed = s.authzPolicies.replace(p.AuthorizationPolicies, now) || changed
	changed = s.meshTLSAuthns.replace(p.MeshTLSAuthentications, now) || changed
	changed = s.networkAuthns.replace(p.NetworkAuthentications, now) || changed
	if changed {
		s.bumpLocked()
	}
}

// Policies returns deep copies of every stored policy object, each kind
// ordered by namespace and name.
func (s *Store) Policies() PolicyObjects {
	s.mu.RLock()
	srvs, azs, mtls, nets := s.servers.list, s.authzPolicies.list, s.meshTLSAuthns.list, s.networkAuthns.list
	s.mu.RUnlock()
	return PolicyObjects{
		Servers:                copyObjects(srvs, nil),
		AuthorizationPolicies:  copyObjects(azs, nil),
		MeshTLSAuthentications: copyObjects(mtls, nil),
		NetworkAuthentications: copyObjects(nets, nil),
	}
}

// PolicyFor returns what policy.Compile needs to compile the policy of port
// of a replica: the replica's labels and namespace, the name of the port
// (from Replica.PortNames), the workload's default inbound policy (empty:
// the caller's), the Servers and AuthorizationPolicies of the replica's
// namespace and the MeshTLSAuthentications and NetworkAuthentications of
// every namespace (an authentication reference may cross namespaces). ok is
// false when the store holds no such replica or port is not 1-65535. The
// result is the caller's: deep copies, read in one consistent state.
func (s *Store) PolicyFor(namespace, pod string, port int) (in policy.Input, ok bool) {
	if port < 1 || port > 65535 {
		return policy.Input{}, false
	}
	ns := nsOr(namespace)
	s.mu.RLock()
	r, ok := s.replicas[ns][pod]
	// The lists are never modified in place: they can be read after unlocking.
	srvs, azs, mtls, nets := s.servers.list, s.authzPolicies.list, s.meshTLSAuthns.list, s.networkAuthns.list
	s.mu.RUnlock()
	if !ok {
		return policy.Input{}, false
	}
	inNS := func(o string) bool { return o == ns }
	return policy.Input{
		PodLabels:              maps.Clone(r.Labels),
		PodNamespace:           ns,
		Port:                   int32(port),
		PortName:               r.PortNames[port],
		Servers:                copyObjects(srvs, inNS),
		AuthorizationPolicies:  copyObjects(azs, inNS),
		MeshTLSAuthentications: copyObjects(mtls, nil),
		NetworkAuthentications: copyObjects(nets, nil),
		DefaultPolicy:          r.DefaultInboundPolicy,
	}, true
}

// PolicyInputs is PolicyFor for a workload named "namespace/pod", as the
// inbound policy API names it; it implements policy.PolicySource. ok is false
// for a malformed name too.
func (s *Store) PolicyInputs(workload string, port int) (policy.Input, bool) {
	ns, pod, ok := strings.Cut(workload, "/")
	if !ok || pod == "" || strings.Contains(pod, "/") {
		return policy.Input{}, false
	}
	return s.PolicyFor(ns, pod, port)
}

// policyObject is a pointer to a policy kind.
type policyObject[T any] interface {
	*T
	metav1.Object
	DeepCopy() *T
}

// objectSet holds the objects of one kind, keyed by namespace and name.
// Stored objects are never modified in place and list is rebuilt (never
// modified) on every change, so readers may keep either after unlocking.
type objectSet[T any, P policyObject[T]] struct {
	objs map[objKey]P
	list []T // every object, ordered by namespace and name
}

func newObjectSet[T any, P policyObject[T]]() objectSet[T, P] {
	return objectSet[T, P]{objs: map[objKey]P{}}
}

// applyObject stores a copy of obj in set, waking watchers if that changed
// anything.
func applyObject[T any, P policyObject[T]](s *Store, set *objectSet[T, P], obj P) {
	if obj == nil {
		return
	}
	c := P(obj.DeepCopy())
	c.SetNamespace(nsOr(c.GetNamespace()))
	s.mu.Lock()
	defer s.mu.Unlock()
	if set.put(c, s.now()) {
		s.bumpLocked()
	}
}

// deleteObject removes an object from set, waking watchers if it was there.
func deleteObject[T any, P policyObject[T]](s *Store, set *objectSet[T, P], namespace, name string) {
	k := objKey{nsOr(namespace), name}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := set.objs[k]; !ok {
		return
	}
	delete(set.objs, k)
	set.rebuild()
	s.bumpLocked()
}

// put stores c (owned by the set from now on, its namespace defaulted)
// unless an equal object is stored, and reports whether it did.
func (o *objectSet[T, P]) put(c P, now time.Time) bool {
	k := objKey{c.GetNamespace(), c.GetName()}
	old, ok := o.objs[k]
	if !settle(old, ok, c, now) {
		return false
	}
	o.objs[k] = c
	o.rebuild()
	return true
}

// replace replaces every object with copies of objs, and reports whether
// anything changed. Objects equal to the stored ones are kept as they are.
func (o *objectSet[T, P]) replace(objs []T, now time.Time) bool {
	next := make(map[objKey]P, len(objs))
	changed := false
	for i := range objs {
		c := P(P(&objs[i]).DeepCopy())
		c.SetNamespace(nsOr(c.GetNamespace()))
		k := objKey{c.GetNamespace(), c.GetName()}
		old, ok := o.objs[k]
		if settle(old, ok, c, now) {
			changed = true
		} else {
			c = old
		}
		next[k] = c
	}
	// Every key of next was stored; with as many keys, none was removed.
	if !changed && len(next) == len(o.objs) {
		return false
	}
	o.objs = next
	o.rebuild()
	return true
}

// settle prepares c to replace old (present when ok): it keeps old's
// creationTimestamp, or sets now on a new object, unless c sets one. It
// reports whether c differs from old.
func settle[T any, P policyObject[T]](old P, ok bool, c P, now time.Time) bool {
	if ts := c.GetCreationTimestamp(); ts.IsZero() {
		if ok {
			c.SetCreationTimestamp(old.GetCreationTimestamp())
		} else {
			c.SetCreationTimestamp(metav1.NewTime(now))
		}
	}
	return !ok || !equality.Semantic.DeepEqual(old, c)
}

// rebuild rebuilds list from objs.
func (o *objectSet[T, P]) rebuild() {
	keys := slices.SortedFunc(maps.Keys(o.objs), compareObjKeys)
	list := make([]T, 0, len(keys))
	for _, k := range keys {
		list = append(list, *o.objs[k])
	}
	o.list = list
}

// copyObjects returns deep copies of the objects of list whose namespace keep
// accepts (all of them when keep is nil).
func copyObjects[T any, P policyObject[T]](list []T, keep func(namespace string) bool) []T {
	var out []T
	for i := range list {
		p := P(&list[i])
		if keep != nil && !keep(p.GetNamespace()) {
			continue
		}
		out = append(out, *p.DeepCopy())
	}
	return out
}
