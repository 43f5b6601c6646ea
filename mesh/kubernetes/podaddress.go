package kubernetes

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"

	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/mesh/podaddress"
)

// podByIP returns the cached pod (not to be modified) that holds ip, or nil.
// Pods on the host's network share the node's IP and are never returned,
// nor are pods that have finished. Of two pods with one IP (one is being
// deleted as the other starts), the one not being deleted wins, then the
// newer one.
func (s *Source) podByIP(ip netip.Addr) *corev1.Pod {
	objs, _ := s.pods.GetIndexer().ByIndex(indexPodIP, ip.Unmap().String())
	var best *corev1.Pod
	for _, o := range objs {
		pod, ok := o.(*corev1.Pod)
		if ok && (best == nil || preferredPod(pod, best)) {
			best = pod
		}
	}
	return best
}

// preferredPod reports whether a is to be preferred to b as the holder of an
// IP both list.
func preferredPod(a, b *corev1.Pod) bool {
	if (a.DeletionTimestamp == nil) != (b.DeletionTimestamp == nil) {
		return a.DeletionTimestamp == nil
	}
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return b.CreationTimestamp.Before(&a.CreationTimestamp)
	}
	return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
}

// resolvePodAddress returns the key of a pod address (see package
// podaddress), or ok false when no pod holds the address's IP.
func (s *Source) resolvePodAddress(addr netip.AddrPort) (key string, ok bool) {
	pod := s.podByIP(addr.Addr())
	if pod == nil {
		return "", false
	}
	return podaddress.Key(addr, pod.Namespace), true
}

// podAddressService returns the service of a pod address of a pod in
// namespace ns (see package podaddress): one endpoint, the address itself,
// labelled like the pod's Service endpoints and with the pod's identity
// when it is meshed and the port is not skipped inbound. The endpoint is
// ready as long as the pod holds the IP: a client that dials a pod directly
// chose it (StatefulSet peers do before they are ready), and Kubernetes
// does not gate such traffic on readiness either. ok is false when no pod
// of ns holds the IP any more.
func (s *Source) podAddressService(addr netip.AddrPort, ns string) (routetable.Service, bool) {
	pod := s.podByIP(addr.Addr())
	if pod == nil || pod.Namespace != ns {
		return routetable.Service{}, false
	}
	port := int32(addr.Port())
	ep := s.endpoint(addr.String(), port, true, pod.Namespace, pod.Name, pod)
	protocol := routetable.ProtocolDetect
	if portListed(pod.Annotations[opaquePortsAnnotation], port) {
		protocol = routetable.ProtocolOpaque
	}
	return podaddress.Service(addr, ns, protocol, ep), true
}
