package localstore

import (
	"cmp"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/mesh/podaddress"
	"github.com/sluicehq/sluice/routing"
)

// Resolve maps what a proxy asked for to a service key: a key
// ("name.ns:port"), an authority ("name.ns.svc.cluster.local:port",
// "name.ns.svc:port", "name.ns:port", or without the port for port 80; a
// trailing dot and letter case are ignored) or a virtual address
// ("clusterIP:port"), or a replica's address ("ip:port", exactly as the
// replica has it; the key of package podaddress). ok is false when no
// service port and no replica matches.
func (s *Store) Resolve(target string) (key string, ok bool) {
	s.mu.RLock()
	idx := s.resolves
	s.mu.RUnlock()
	t := strings.ToLower(strings.TrimSpace(target))
	if key, ok := idx[t]; ok {
		return key, true
	}
	host, port, err := net.SplitHostPort(t)
	if err != nil {
		key, ok := idx[strings.TrimSuffix(t, ".")]
		return key, ok
	}
	host = strings.TrimSuffix(host, ".")
	ip, err := netip.ParseAddr(host)
	if err == nil {
		host = ip.Unmap().String()
	}
	if key, ok = idx[net.JoinHostPort(host, port)]; ok || ip == (netip.Addr{}) {
		return key, ok
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return "", false
	}
	return s.resolveReplicaAddress(netip.AddrPortFrom(ip.Unmap(), uint16(p)))
}

// Service returns the compiled service port named by key, as a client in
// clientNamespace sees it: its virtual addresses and protocol, its endpoints
// (the replicas its Service selects, ready or not, ordered by address) and
// the rules compiled from the HTTPRoutes attached to it (producer routes, or
// the consumer routes of clientNamespace; see routing.Compile). ok is false
// when no Service has that port. For the key of a replica's address it
// returns the replica's own service (see package podaddress).
func (s *Store) Service(key, clientNamespace string) (routetable.Service, bool) {
	if addr, ns, ok := podaddress.ParseKey(key); ok {
		return s.replicaAddressService(addr, ns)
	}
	s.mu.RLock()
	ref, ok := s.byKey[key]
	if !ok {
		s.mu.RUnlock()
		return routetable.Service{}, false
	}
	// Stored objects and routeList are never modified in place: they can be
	// read after unlocking.
	svc := s.services[ref.svc]
	routes := s.routeList
	endpoints := s.endpointsLocked(svc)
	s.mu.RUnlock()

	sp := routing.ServicePortOf(svc, ref.port)
	rules, _ := routing.Compile(sp, routes, clientNamespace)
	out := routetable.Service{
		Name:      svc.Name,
		Namespace: svc.Namespace,
		Port:      int(sp.Port),
		Addresses: sp.VirtualAddresses(),
		Protocol:  routing.ProtocolOf(sp.AppProtocol),
		Endpoints: endpoints,
		Rules:     rules,
	}
	return out, true
}

// RouteErrors lists the problems found in the stored HTTPRoutes, ordered by
// route: what routing.Compile reports for every Service port a route attaches
// to, a route that attaches to no known Service port, and a backendRef naming
// a Service port the store does not hold.
func (s *Store) RouteErrors() []routing.RouteError {
	s.mu.RLock()
	routes := s.routeList
	byKey := s.byKey
	services := s.services
	ports := make([]routing.ServicePort, 0, len(byKey))
	for _, ref := range byKey {
		ports = append(ports, routing.ServicePortOf(services[ref.svc], ref.port))
	}
	s.mu.RUnlock()
	slices.SortFunc(ports, func(a, b routing.ServicePort) int { return strings.Compare(a.Key(), b.Key()) })

	var out []routing.RouteError
	seen := map[string]bool{}
	add := func(e routing.RouteError) {
		if k := e.Error(); !seen[k] {
			seen[k] = true
			out = append(out, e)
		}
	}
	for i := range routes {
		rt := routes[i : i+1]
		name := rt[0].Namespace + "/" + rt[0].Name
		attached := false
		for _, sp := range ports {
			// Compiling as a client of the route's own namespace selects the
			// route whether it is a producer or a consumer route.
			rules, errs := routing.Compile(sp, rt, rt[0].Namespace)
			if len(rules) == 0 && len(errs) == 0 {
				continue
			}
			attached = true
			for _, e := range errs {
				add(e)
			}
			for _, r := range rules {
				for _, b := range r.Backends {
					if _, ok := byKey[b.Service]; b.Service != "" && !ok {
						add(routing.RouteError{
							Route:   name,
							Field:   fmt.Sprintf("spec.rules[%d].backendRefs", r.RuleIndex),
							Message: fmt.Sprintf("backend Service port %s not found", b.Service),
						})
					}
				}
			}
		}
		if !attached {
			add(routing.RouteError{Route: name, Field: "spec.parentRefs", Message: "attaches to no known Service port"})
		}
	}
	slices.SortStableFunc(out, func(a, b routing.RouteError) int { return strings.Compare(a.Route, b.Route) })
	return out
}

// reindexLocked rebuilds byKey and resolves from the stored Services. s.mu
// must be held for writing.
func (s *Store) reindexLocked() {
	byKey := map[string]portRef{}
	resolves := map[string]string{}
	for _, k := range slices.SortedFunc(maps.Keys(s.services), compareObjKeys) {
		svc := s.services[k]
		for i, p := range svc.Spec.Ports {
			if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
				continue // the mesh carries TCP only
			}
			key := routetable.ServiceKey(svc.Name, svc.Namespace, int(p.Port))
			if _, dup := byKey[key]; dup {
				continue
			}
			byKey[key] = portRef{svc: k, port: i}
			rs := routetable.Service{Name: svc.Name, Namespace: svc.Namespace, Port: int(p.Port)}
			names := append(rs.Authorities(), routing.ServicePortOf(svc, i).VirtualAddresses()...)
			for _, n := range names {
				n = strings.ToLower(n)
				if _, taken := resolves[n]; !taken {
					resolves[n] = key
				}
			}
		}
	}
	s.byKey = byKey
	s.resolves = resolves
}

// endpointsLocked returns the endpoints of the replicas svc selects, ordered
// by address; of two replicas with one address, the first pod by name wins.
// s.mu must be held.
func (s *Store) endpointsLocked(svc *corev1.Service) []routetable.Endpoint {
	sel := svc.Spec.Selector
	if len(sel) == 0 {
		return nil // selectorless: nobody manages its endpoints
	}
	pods := s.replicas[svc.Namespace]
	var out []routetable.Endpoint
	seen := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(pods)) {
		r := pods[name]
		if r.Address == "" || seen[r.Address] || !selects(sel, r.Labels) {
			continue
		}
		seen[r.Address] = true
		out = append(out, endpointOf(r))
	}
	slices.SortFunc(out, func(a, b routetable.Endpoint) int { return cmp.Compare(a.Address, b.Address) })
	return out
}

// selects reports whether every selector label is set to its value.
func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// endpointOf converts a replica to an endpoint with its metric labels.
func endpointOf(r Replica) routetable.Endpoint {
	labels := map[string]string{"namespace": r.Namespace, "pod": r.Pod}
	if r.Workload != "" {
		labels["deployment"] = r.Workload
		labels["workload_kind"] = "deployment"
	}
	if r.Revision != "" {
		labels["revision"] = r.Revision
	}
	if sa := serviceAccountOf(r.Identity); sa != "" {
		labels["serviceaccount"] = sa
	}
	ready := r.Ready
	return routetable.Endpoint{
		Address:  r.Address,
		Ready:    &ready,
		Labels:   labels,
		Identity: r.Identity,
		Protocol: r.Protocol,
	}
}

// serviceAccountOf extracts the service account from a mesh identity
// ("sa.ns.serviceaccount.identity.…"), or returns "".
func serviceAccountOf(identity string) string {
	parts := strings.SplitN(identity, ".", 4)
	if len(parts) < 4 || parts[2] != "serviceaccount" || !strings.HasPrefix(parts[3], "identity.") {
		return ""
	}
	return parts[0]
}
