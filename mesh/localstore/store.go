// Package localstore is the in-memory object store of local mode: the
// Services, HTTPRoutes and inbound policy objects (Server,
// AuthorizationPolicy, MeshTLSAuthentication, NetworkAuthentication) read from
// the user's YAML, and the replicas the local supervisor runs. It is the
// discovery source the destination service streams from in local mode (it
// implements destination.Source), the policy source the inbound policy
// service streams from (policy.PolicySource), and the place the canary engine
// writes HTTPRoute weights to.
//
// Objects follow Kubernetes semantics where it matters to routing: a Service
// selects the replicas of its namespace whose labels match its selector (a
// Service without a selector has no endpoints), each Service port is one
// routable service keyed "name.namespace:port" (routetable.ServiceKey), and
// HTTPRoutes attach to Service ports as GAMMA defines (see package routing).
// Namespaces default to "default", and the creationTimestamp of a route or a
// policy object is set on creation as the API server would, so that route
// precedence (and which of two overlapping Servers wins) follows the order
// objects were created.
//
// Every mutation that changes something bumps a generation and closes the
// channel returned by Changed, waking every watcher at once; a mutation that
// changes nothing (a supervisor reporting the same replica again) wakes
// nobody.
package localstore

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/sluicehq/sluice/crds/policy/v1beta1"
	"github.com/sluicehq/sluice/mesh/api/routetable"
)

// ErrNotFound is returned (wrapped) when an operation names an object the
// store does not hold.
var ErrNotFound = errors.New("not found")

// defaultNamespace is the namespace of objects that name none.
const defaultNamespace = "default"

// Replica is one running instance of a workload, as the local supervisor
// reports it. A replica is an endpoint of every Service of its namespace whose
// selector matches its labels, once it has an address.
type Replica struct {
	// Namespace of the replica ("" means "default").
	Namespace string
	// Workload is the name of the Deployment the replica belongs to.
	Workload string
	// Pod is the replica's name, unique within its namespace.
	Pod string
	// Revision is the workload revision the replica runs (metric label).
	Revision string
	// Labels are the pod labels, matched against Service selectors.
	Labels map[string]string
	// Address is where the replica accepts traffic for the service, host:port
	// (the proxy's inbound listener in mesh mode). Empty: not an endpoint yet.
	Address string
	// Identity is the mesh TLS identity the replica's proxy presents; empty
	// means the replica is reached in plain text.
	Identity string
	// Ready reports whether the replica may receive traffic.
	Ready bool
	// Protocol is a hint of what the replica's address speaks.
	Protocol routetable.Protocol
	// PortNames names the replica's container ports by number
	// (containers[].ports[].name), so that a Server selecting a port by name
	// selects it. Optional.
	PortNames map[int]string
	// DefaultInboundPolicy is the workload's default inbound policy (its
	// config.sluice.dev/default-inbound-policy annotation): what its ports
	// no Server selects get. Empty means the control plane's default.
	DefaultInboundPolicy string
}

// objKey names a namespaced object.
type objKey struct{ ns, name string }

// storedRoute is an HTTPRoute with the store generation it was written at,
// for optimistic updates.
type storedRoute struct {
	route *gatewayv1.HTTPRoute
	rv    uint64
}

// portRef locates one port of a stored Service.
type portRef struct {
	svc  objKey
	port int // index into Spec.Ports
}

// Store holds local mode's objects. It is safe for concurrent use. Objects
// handed to it and returned by it are copies: callers may keep and modify
// theirs.
type Store struct {
	now func() time.Time

	mu       sync.RWMutex
	gen      uint64
	changed  chan struct{}
	services map[objKey]*corev1.Service
	routes   map[objKey]storedRoute
	replicas map[string]map[string]Replica // namespace -> pod -> replica

	// Inbound policy objects by kind (see policy.go).
	servers       objectSet[v1beta1.Server, *v1beta1.Server]
	authzPolicies objectSet[v1beta1.AuthorizationPolicy, *v1beta1.AuthorizationPolicy]
	meshTLSAuthns objectSet[v1beta1.MeshTLSAuthentication, *v1beta1.MeshTLSAuthentication]
	networkAuthns objectSet[v1beta1.NetworkAuthentication, *v1beta1.NetworkAuthentication]

	// Derived from services, rebuilt when they change; never modified in
	// place, so readers may keep them after unlocking.
	byKey    map[string]portRef // service key -> port
	resolves map[string]string  // authority, key or virtual address -> service key
	// Derived from routes: every stored route, ordered by namespace/name.
	// Rebuilt on change, never modified in place.
	routeList []gatewayv1.HTTPRoute
}

// New returns an empty store.
func New() *Store {
	return &Store{
		now:      time.Now,
		changed:  make(chan struct{}),
		services: map[objKey]*corev1.Service{},
		routes:   map[objKey]storedRoute{},
		replicas: map[string]map[string]Replica{},
		byKey:    map[string]portRef{},
		resolves: map[string]string{},

		servers:       newObjectSet[v1beta1.Server](),
		authzPolicies: newObjectSet[v1beta1.AuthorizationPolicy](),
		meshTLSAuthns: newObjectSet[v1beta1.MeshTLSAuthentication](),
		networkAuthns: newObjectSet[v1beta1.NetworkAuthentication](),
	}
}

// Changed returns a channel that is closed at the next change to anything in
// the store. It is a broadcast: every caller holding the channel wakes. Call
// it again after it fires (and before reading the state, so that no change is
// missed).
func (s *Store) Changed() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.changed
}

// Generation is a counter bumped by every change to the store.
func (s *Store) Generation() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.gen
}

// bumpLocked records a change and wakes every watcher. s.mu must be held for
// writing.
func (s *Store) bumpLocked() {
	s.gen++
	close(s.changed)
	s.changed = make(chan struct{})
}

// ApplyService creates or replaces a Service. An empty namespace means
// "default".
func (s *Store) ApplyService(svc *corev1.Service) {
	if svc == nil {
		return
	}
	c := svc.DeepCopy()
	c.Namespace = nsOr(c.Namespace)
	k := objKey{c.Namespace, c.Name}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.services[k]
	if ok && c.CreationTimestamp.IsZero() {
		c.CreationTimestamp = old.CreationTimestamp
	}
	if ok && equality.Semantic.DeepEqual(old.Spec, c.Spec) && equality.Semantic.DeepEqual(old.ObjectMeta, c.ObjectMeta) {
		return
	}
	if !ok && c.CreationTimestamp.IsZero() {
		c.CreationTimestamp = metav1.NewTime(s.now())
	}
	s.services[k] = c
	s.reindexLocked()
	s.bumpLocked()
}

// DeleteService removes a Service; removing one the store does not hold does
// nothing.
func (s *Store) DeleteService(namespace, name string) {
	k := objKey{nsOr(namespace), name}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.services[k]; !ok {
		return
	}
	delete(s.services, k)
	s.reindexLocked()
	s.bumpLocked()
}

// ServiceObject returns a deep copy of a stored Service. (Service, the
// destination.Source method, returns the compiled form of a service port.)
func (s *Store) ServiceObject(namespace, name string) (*corev1.Service, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	svc, ok := s.services[objKey{nsOr(namespace), name}]
	if !ok {
		return nil, false
	}
	return svc.DeepCopy(), true
}

// ApplyHTTPRoute creates or replaces an HTTPRoute. An empty namespace means
// "default". As the API server does, the store sets creationTimestamp on
// creation (keeping the old one on replacement) and bumps
// metadata.generation when the spec changes.
func (s *Store) ApplyHTTPRoute(r *gatewayv1.HTTPRoute) {
	if r == nil {
		return
	}
	c := r.DeepCopy()
	c.Namespace = nsOr(c.Namespace)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.putRouteLocked(c)
}

// putRouteLocked stores c (owned by the store from now on) unless it equals
// the stored route. s.mu must be held for writing.
func (s *Store) putRouteLocked(c *gatewayv1.HTTPRoute) {
	k := objKey{c.Namespace, c.Name}
	old, ok := s.routes[k]
	if ok {
		if c.CreationTimestamp.IsZero() {
			c.CreationTimestamp = old.route.CreationTimestamp
		}
		specChanged := !equality.Semantic.DeepEqual(old.route.Spec, c.Spec)
		c.Generation = old.route.Generation
		if specChanged {
			c.Generation++
		}
		c.ResourceVersion = old.route.ResourceVersion
		if !specChanged && equality.Semantic.DeepEqual(old.route.ObjectMeta, c.ObjectMeta) &&
			equality.Semantic.DeepEqual(old.route.Status, c.Status) {
			return
		}
	} else {
		if c.CreationTimestamp.IsZero() {
			c.CreationTimestamp = metav1.NewTime(s.now())
		}
		c.Generation = 1
	}
	s.bumpLocked()
	c.ResourceVersion = strconv.FormatUint(s.gen, 10)
	s.routes[k] = storedRoute{route: c, rv: s.gen}
	s.rebuildRouteListLocked()
}

// DeleteHTTPRoute removes an HTTPRoute; removing one the store does not hold
// does nothing.
func (s *Store) DeleteHTTPRoute(namespace, name string) {
	k := objKey{nsOr(namespace), name}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.routes[k]; !ok {
		return
	}
	delete(s.routes, k)
	s.rebuildRouteListLocked()
	s.bumpLocked()
}

// HTTPRoute returns a deep copy of a stored HTTPRoute.
func (s *Store) HTTPRoute(namespace, name string) (*gatewayv1.HTTPRoute, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.routes[objKey{nsOr(namespace), name}]
	if !ok {
		return nil, false
	}
	return r.route.DeepCopy(), true
}

// HTTPRoutes returns deep copies of every stored HTTPRoute, ordered by
// namespace and name.
func (s *Store) HTTPRoutes() []gatewayv1.HTTPRoute {
	s.mu.RLock()
	list := s.routeList
	s.mu.RUnlock()
	out := make([]gatewayv1.HTTPRoute, len(list))
	for i := range list {
		list[i].DeepCopyInto(&out[i])
	}
	return out
}

// UpdateHTTPRoute atomically reads, modifies and writes an HTTPRoute: mutate
// gets a deep copy of the stored route and changes it in place; if another
// writer changed the route meanwhile, mutate is called again on the newer
// version. mutate runs without the store locked and may be called more than
// once. An error from mutate aborts the update and is returned wrapped; a
// missing route is an error wrapping ErrNotFound. The name and namespace
// cannot be changed.
func (s *Store) UpdateHTTPRoute(namespace, name string, mutate func(*gatewayv1.HTTPRoute) error) error {
	k := objKey{nsOr(namespace), name}
	for {
		s.mu.RLock()
		cur, ok := s.routes[k]
		s.mu.RUnlock()
		if !ok {
			return fmt.Errorf("update httproute %s/%s: %w", k.ns, k.name, ErrNotFound)
		}
		c := cur.route.DeepCopy()
		if err := mutate(c); err != nil {
			return fmt.Errorf("update httproute %s/%s: %w", k.ns, k.name, err)
		}
		if nsOr(c.Namespace) != k.ns || c.Name != k.name {
			return fmt.Errorf("update httproute %s/%s: the update renames it to %s/%s", k.ns, k.name, nsOr(c.Namespace), c.Name)
		}
		c.Namespace = k.ns
		s.mu.Lock()
		now, ok := s.routes[k]
		if ok && now.rv == cur.rv {
			s.putRouteLocked(c)
			s.mu.Unlock()
			return nil
		}
		s.mu.Unlock()
		// Changed or deleted meanwhile: start again from the newer state.
	}
}

// rebuildRouteListLocked rebuilds routeList. s.mu must be held for writing.
func (s *Store) rebuildRouteListLocked() {
	keys := slices.SortedFunc(maps.Keys(s.routes), compareObjKeys)
	list := make([]gatewayv1.HTTPRoute, 0, len(keys))
	for _, k := range keys {
		list = append(list, *s.routes[k].route)
	}
	s.routeList = list
}

// SetReplica records a replica, replacing the one with the same namespace
// and pod. An identical report changes nothing.
func (s *Store) SetReplica(r Replica) {
	r.Namespace = nsOr(r.Namespace)
	r.Labels = maps.Clone(r.Labels)
	r.PortNames = maps.Clone(r.PortNames)
	s.mu.Lock()
	defer s.mu.Unlock()
	pods := s.replicas[r.Namespace]
	if old, ok := pods[r.Pod]; ok && sameReplica(old, r) {
		return
	}
	if pods == nil {
		pods = map[string]Replica{}
		s.replicas[r.Namespace] = pods
	}
	pods[r.Pod] = r
	s.bumpLocked()
}

// RemoveReplica forgets a replica; removing one the store does not hold does
// nothing.
func (s *Store) RemoveReplica(namespace, pod string) {
	ns := nsOr(namespace)
	s.mu.Lock()
	defer s.mu.Unlock()
	pods := s.replicas[ns]
	if _, ok := pods[pod]; !ok {
		return
	}
	delete(pods, pod)
	if len(pods) == 0 {
		delete(s.replicas, ns)
	}
	s.bumpLocked()
}

// Replicas returns every recorded replica, ordered by namespace and pod.
func (s *Store) Replicas() []Replica {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []Replica
	for _, ns := range slices.Sorted(maps.Keys(s.replicas)) {
		pods := s.replicas[ns]
		for _, pod := range slices.Sorted(maps.Keys(pods)) {
			r := pods[pod]
			r.Labels = maps.Clone(r.Labels)
			r.PortNames = maps.Clone(r.PortNames)
			out = append(out, r)
		}
	}
	return out
}

func sameReplica(a, b Replica) bool {
	return a.Namespace == b.Namespace && a.Workload == b.Workload && a.Pod == b.Pod &&
		a.Revision == b.Revision && a.Address == b.Address && a.Identity == b.Identity &&
		a.Ready == b.Ready && a.Protocol == b.Protocol && maps.Equal(a.Labels, b.Labels) &&
		maps.Equal(a.PortNames, b.PortNames) && a.DefaultInboundPolicy == b.DefaultInboundPolicy
}

func nsOr(ns string) string {
	if ns == "" {
		return defaultNamespace
	}
	return ns
}

func compareObjKeys(a, b objKey) int {
	if c := strings.Compare(a.ns, b.ns); c != 0 {
		return c
	}
	return strings.Compare(a.name, b.name)
}
