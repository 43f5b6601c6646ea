// Package podaddress names the answers of the destination service for pod
// addresses.
//
// A proxy that intercepts a connection to an address no Service claims asks
// the destination service about "ip:port". When the IP is a pod's (a
// headless Service's endpoint, a StatefulSet pod's DNS name, any pod
// address), the discovery sources answer with a service of its own for that
// address: its only virtual address and its only endpoint are the address
// asked about, and the endpoint carries the pod's identity when the pod is
// meshed, so that the proxy connects over mutual TLS with that identity as
// the server name. The service is named after the address as Kubernetes'
// pod DNS names write it: "10-1-0-5" in the pseudo-namespace
// "<namespace>.pod", with the key "10-1-0-5.shop.pod:8080". A Service key
// never has a dot in its namespace, so the two cannot collide.
package podaddress

import (
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

// podNamespaceSuffix ends the pseudo-namespace of pod addresses.
const podNamespaceSuffix = ".pod"

// Key returns the service key of the pod address addr of a pod in
// namespace: "10-1-0-5.shop.pod:8080" for 10.1.0.5:8080 in shop.
func Key(addr netip.AddrPort, namespace string) string {
	return routetable.ServiceKey(podAddressName(addr.Addr()), namespace+podNamespaceSuffix, int(addr.Port()))
}

// ParseKey returns the address and the pod namespace a key made
// by Key names; ok is false for anything else (a Service key, a
// malformed or non-canonical key).
func ParseKey(key string) (addr netip.AddrPort, namespace string, ok bool) {
	host, portStr, err := net.SplitHostPort(key)
	if err != nil {
		return netip.AddrPort{}, "", false
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return netip.AddrPort{}, "", false
	}
	name, pseudoNS, found := strings.Cut(host, ".")
	namespace, isPod := strings.CutSuffix(pseudoNS, podNamespaceSuffix)
	if !found || !isPod || namespace == "" || strings.Contains(namespace, ".") {
		return netip.AddrPort{}, "", false
	}
	ip, err := netip.ParseAddr(strings.ReplaceAll(name, "-", "."))
	if err != nil || !ip.Is4() {
		if ip, err = netip.ParseAddr(strings.ReplaceAll(name, "-", ":")); err != nil || !ip.Is6() {
			return netip.AddrPort{}, "", false
		}
	}
	addr = netip.AddrPortFrom(ip, uint16(port))
	if Key(addr, namespace) != key {
		return netip.AddrPort{}, "", false
	}
	return addr, namespace, true
}

// podAddressName is an IP as Kubernetes' pod DNS names write it: dots (and
// an IPv6 address's colons) become dashes.
func podAddressName(ip netip.Addr) string {
	s := ip.Unmap().WithZone("").String()
	if ip.Unmap().Is4() {
		return strings.ReplaceAll(s, ".", "-")
	}
	return strings.ReplaceAll(s, ":", "-")
}

// Service returns what a source answers for the pod address addr
// of a pod in namespace: a service keyed by Key, handled as
// protocol says (opaque for a port the pod's opaque-ports annotation lists,
// else detected), whose only virtual address is addr and whose only endpoint
// is ep at addr (ep carries the pod's identity, labels, readiness and
// protocol hint). A connection to addr then goes to the pod itself, over
// mutual TLS when ep has an identity.
func Service(addr netip.AddrPort, namespace string, protocol routetable.Protocol, ep routetable.Endpoint) routetable.Service {
	addr = netip.AddrPortFrom(addr.Addr().Unmap().WithZone(""), addr.Port())
	ep.Address = addr.String()
	return routetable.Service{
		Name:      podAddressName(addr.Addr()),
		Namespace: namespace + podNamespaceSuffix,
		Port:      int(addr.Port()),
		Addresses: []string{addr.String()},
		Protocol:  protocol,
		Exists:    new(true),
		Endpoints: []routetable.Endpoint{ep},
	}
}
