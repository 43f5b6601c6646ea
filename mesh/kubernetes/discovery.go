package kubernetes

import (
	"cmp"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/tools/cache"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/mesh/podaddress"
	"github.com/sluicehq/sluice/routing"
)

// Resolve maps what a proxy asked for to a service key: a key
// ("name.ns:port"), an authority ("name.ns.svc.<cluster-domain>:port",
// "name.ns.svc:port", "name.ns:port", or without the port for port 80; a
// trailing dot and letter case are ignored) or a virtual address
// ("clusterIP:port"), or a pod address ("podIP:port", the key of package
// podaddress; never for pods on the host's network). ok is false when no
// routed Service port and no pod matches.
func (s *Source) Resolve(target string) (key string, ok bool) {
	t := strings.ToLower(strings.TrimSpace(target))
	host, portStr, err := net.SplitHostPort(t)
	if err != nil {
		host, portStr = t, "80"
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return "", false
	}
	host = strings.TrimSuffix(host, ".")
	if ip, err := netip.ParseAddr(host); err == nil {
		objs, _ := s.services.GetIndexer().ByIndex(indexClusterIP, ip.Unmap().String())
		for _, o := range objs {
			if sp, ok := routedPort(o.(*corev1.Service), int32(port)); ok {
				return sp.Key(), true
			}
		}
		return s.resolvePodAddress(netip.AddrPortFrom(ip.Unmap(), uint16(port)))
	}
	host = strings.TrimSuffix(host, ".svc."+s.opts.ClusterDomain)
	host = strings.TrimSuffix(host, ".svc")
	name, ns, ok := strings.Cut(host, ".")
	if !ok || name == "" || ns == "" || strings.Contains(ns, ".") {
		return "", false
	}
	svc := s.service(ns, name)
	if svc == nil {
		return "", false
	}
	sp, ok := routedPort(svc, int32(port))
	if !ok {
		return "", false
	}
	return sp.Key(), true
}

// Service returns the compiled service port named by key, as a client in
// clientNamespace sees it: its virtual addresses and protocol, its endpoints
// (ordered by address) and the rules compiled from the HTTPRoutes attached to
// it (producer routes, or the consumer routes of clientNamespace; see
// routing.Compile), with backends a ReferenceGrant does not permit made
// invalid. For the key of a pod address it returns the pod's own service
// (see podAddressService). ok is false when no routed Service has that port
// (or no pod that address).
func (s *Source) Service(key, clientNamespace string) (routetable.Service, bool) {
	if addr, ns, ok := podaddress.ParseKey(key); ok {
		return s.podAddressService(addr, ns)
	}
	name, ns, port, ok := parseKey(key)
	if !ok {
		return routetable.Service{}, false
	}
	svc := s.service(ns, name)
	if svc == nil {
		return routetable.Service{}, false
	}
	sp, ok := routedPort(svc, port)
	if !ok {
		return routetable.Service{}, false
	}
	rules, _ := routing.Compile(sp, s.routesOf(ns, name), clientNamespace)
	s.enforceGrants(rules, ns, name)
	return routetable.Service{
		Name:      svc.Name,
		Namespace: svc.Namespace,
		Port:      int(sp.Port),
		Addresses: sp.VirtualAddresses(),
		Protocol:  routing.ProtocolOf(sp.AppProtocol),
		Endpoints: s.endpointsOf(svc, sp),
		Rules:     rules,
	}, true
}

// parseKey splits a service key "name.namespace:port".
func parseKey(key string) (name, ns string, port int32, ok bool) {
	host, portStr, err := net.SplitHostPort(key)
	if err != nil {
		return "", "", 0, false
	}
	p, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || p == 0 {
		return "", "", 0, false
	}
	name, ns, ok = strings.Cut(host, ".")
	if !ok || name == "" || ns == "" || strings.Contains(ns, ".") {
		return "", "", 0, false
	}
	return name, ns, int32(p), true
}

// service returns the cached Service (not to be modified), or nil.
func (s *Source) service(ns, name string) *corev1.Service {
	obj, ok, _ := s.services.GetIndexer().GetByKey(ns + "/" + name)
	if !ok {
		return nil
	}
	svc, _ := obj.(*corev1.Service)
	return svc
}

// pod returns the cached Pod (not to be modified), or nil.
func (s *Source) pod(ns, name string) *corev1.Pod {
	obj, ok, _ := s.pods.GetIndexer().GetByKey(ns + "/" + name)
	if !ok {
		return nil
	}
	pod, _ := obj.(*corev1.Pod)
	return pod
}

// routedPort returns the routed port of svc with the given number. The mesh
// routes the TCP ports of every Service but ExternalName ones.
func routedPort(svc *corev1.Service, port int32) (routing.ServicePort, bool) {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return routing.ServicePort{}, false
	}
	for _, sp := range routing.ServicePortsOf(svc) {
		if sp.Port == port {
			return sp, true
		}
	}
	return routing.ServicePort{}, false
}

// routesOf returns the HTTPRoutes with a parentRef naming the Service
// ns/name (shallow copies of cached objects: not to be modified).
func (s *Source) routesOf(ns, name string) []gatewayv1.HTTPRoute {
	objs, _ := s.routes.GetIndexer().ByIndex(indexParent, ns+"/"+name)
	out := make([]gatewayv1.HTTPRoute, 0, len(objs))
	for _, o := range objs {
		out = append(out, *o.(*gatewayv1.HTTPRoute))
	}
	return out
}

// enforceGrants makes invalid every backend (and drops every mirror) of the
// rules that names a Service in another namespace than its route's, unless
// it is the parent Service parentNS/parentName itself or a ReferenceGrant
// permits it.
func (s *Source) enforceGrants(rules []routetable.Rule, parentNS, parentName string) {
	allowed := func(routeNS, key string) bool {
		if key == "" {
			return true
		}
		name, ns, _, ok := parseKey(key)
		return ok && (ns == routeNS || (ns == parentNS && name == parentName) || s.permitted(routeNS, ns, name))
	}
	for i := range rules {
		r := &rules[i]
		routeNS, _, _ := strings.Cut(r.Route, "/")
		for j := range r.Backends {
			if b := &r.Backends[j]; !allowed(routeNS, b.Service) {
				*b = routetable.Backend{Weight: b.Weight}
			}
		}
		if len(r.Filters.Mirrors) > 0 {
			r.Filters.Mirrors = slices.DeleteFunc(slices.Clone(r.Filters.Mirrors), func(m routetable.Mirror) bool {
				return !allowed(routeNS, m.Backend)
			})
			if len(r.Filters.Mirrors) == 0 {
				r.Filters.Mirrors = nil
			}
		}
	}
}

// permitted reports whether a ReferenceGrant in toNS lets HTTPRoutes of
// fromNS refer to the Service toNS/name.
func (s *Source) permitted(fromNS, toNS, name string) bool {
	objs, _ := s.grants.GetIndexer().ByIndex(cache.NamespaceIndex, toNS)
	for _, o := range objs {
		g := o.(*gatewayv1.ReferenceGrant)
		if grants(g, fromNS, name) {
			return true
		}
	}
	return false
}

// grants reports whether g lets HTTPRoutes of fromNS refer to the Service
// name of g's namespace.
func grants(g *gatewayv1.ReferenceGrant, fromNS, name string) bool {
	from := false
	for _, f := range g.Spec.From {
		if f.Group == gatewayv1.GroupName && f.Kind == "HTTPRoute" && string(f.Namespace) == fromNS {
			from = true
			break
		}
	}
	if !from {
		return false
	}
	for _, t := range g.Spec.To {
		if isCoreGroup(string(t.Group)) && t.Kind == "Service" && (t.Name == nil || *t.Name == "" || string(*t.Name) == name) {
			return true
		}
	}
	return false
}

// endpointsOf returns the endpoints of a Service port from its
// EndpointSlices, ordered by address. An address listed twice (as slices
// change hands) is kept once, ready if either says so.
func (s *Source) endpointsOf(svc *corev1.Service, sp routing.ServicePort) []routetable.Endpoint {
	objs, _ := s.endpointSlices.GetIndexer().ByIndex(indexService, svc.Namespace+"/"+svc.Name)
	byAddr := map[string]routetable.Endpoint{}
	for _, o := range objs {
		es := o.(*discoveryv1.EndpointSlice)
		if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		port, ok := slicePort(es, sp.PortName)
		if !ok {
			continue
		}
		for i := range es.Endpoints {
			ep := &es.Endpoints[i]
			ready := ep.Conditions.Ready == nil || *ep.Conditions.Ready
			var pod *corev1.Pod
			podName := ""
			if ref := ep.TargetRef; ref != nil && ref.Kind == "Pod" && (ref.APIVersion == "" || ref.APIVersion == "v1") {
				podName = ref.Name
				ns := ref.Namespace
				if ns == "" {
					ns = es.Namespace
				}
				pod = s.pod(ns, ref.Name)
			}
			for _, a := range ep.Addresses {
				ip, err := netip.ParseAddr(a)
				if err != nil {
					continue
				}
				addr := net.JoinHostPort(ip.Unmap().String(), strconv.Itoa(int(port)))
				if old, dup := byAddr[addr]; dup && old.IsReady() {
					continue
				}
				byAddr[addr] = s.endpoint(addr, port, ready, es.Namespace, podName, pod)
			}
		}
	}
	if len(byAddr) == 0 {
		return nil
	}
	out := make([]routetable.Endpoint, 0, len(byAddr))
	for _, e := range byAddr {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b routetable.Endpoint) int { return cmp.Compare(a.Address, b.Address) })
	return out
}

// slicePort returns the number of the slice's TCP port named like the
// Service port.
func slicePort(es *discoveryv1.EndpointSlice, name string) (int32, bool) {
	for _, p := range es.Ports {
		pn := ""
		if p.Name != nil {
			pn = *p.Name
		}
		if pn != name || p.Port == nil || *p.Port < 1 || *p.Port > 65535 {
			continue
		}
		if p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP {
			continue
		}
		return *p.Port, true
	}
	return 0, false
}
