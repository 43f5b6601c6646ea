package localstore

import (
	"maps"
	"net/netip"
	"slices"

	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/mesh/podaddress"
)

// replicaAtLocked returns the replica whose address is addr exactly (of
// two, the first by namespace and pod name). A replica's address is the one
// port it serves, so no other port of its IP is its. s.mu must be held.
func (s *Store) replicaAtLocked(addr netip.AddrPort) (Replica, bool) {
	for _, ns := range slices.Sorted(maps.Keys(s.replicas)) {
		pods := s.replicas[ns]
		for _, name := range slices.Sorted(maps.Keys(pods)) {
			r := pods[name]
			if a, err := netip.ParseAddrPort(r.Address); err == nil && a.Addr().Unmap() == addr.Addr().Unmap() && a.Port() == addr.Port() {
				return r, true
			}
		}
	}
	return Replica{}, false
}

// resolveReplicaAddress returns the key of a replica's address (see package
// podaddress), or ok false when no replica has that address.
func (s *Store) resolveReplicaAddress(addr netip.AddrPort) (key string, ok bool) {
	s.mu.RLock()
	r, ok := s.replicaAtLocked(addr)
	s.mu.RUnlock()
	if !ok {
		return "", false
	}
	return podaddress.Key(addr, r.Namespace), true
}

// replicaAddressService returns the service of a replica's address (see
// package podaddress): its one endpoint is the replica, with its identity
// and readiness. ok is false when no replica of namespace ns has the address.
func (s *Store) replicaAddressService(addr netip.AddrPort, ns string) (routetable.Service, bool) {
	s.mu.RLock()
	r, ok := s.replicaAtLocked(addr)
	s.mu.RUnlock()
	if !ok || r.Namespace != ns {
		return routetable.Service{}, false
	}
	protocol := routetable.ProtocolDetect
	if r.Protocol == routetable.ProtocolOpaque {
		protocol = routetable.ProtocolOpaque
	}
	return podaddress.Service(addr, ns, protocol, endpointOf(r)), true
}
