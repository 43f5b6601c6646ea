package routing

import (
	"net"
	"net/netip"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

// ServicePortOf describes port i of a Kubernetes Service (its Spec.Ports
// index) for the route compiler: name, namespace, number, port name,
// appProtocol and the Service's valid cluster IPs.
func ServicePortOf(svc *corev1.Service, i int) ServicePort {
	p := svc.Spec.Ports[i]
	sp := ServicePort{
		Name:       svc.Name,
		Namespace:  svc.Namespace,
		Port:       p.Port,
		PortName:   p.Name,
		ClusterIPs: ClusterIPsOf(svc),
	}
	if p.AppProtocol != nil {
		sp.AppProtocol = *p.AppProtocol
	}
	return sp
}

// ServicePortsOf describes every port of a Service the mesh routes, in
// Spec.Ports order: TCP ports (protocol unset or TCP; the mesh carries TCP
// only), the first of two ports with one number winning.
func ServicePortsOf(svc *corev1.Service) []ServicePort {
	var out []ServicePort
	seen := map[int32]bool{}
	for i, p := range svc.Spec.Ports {
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			continue
		}
		if seen[p.Port] {
			continue
		}
		seen[p.Port] = true
		out = append(out, ServicePortOf(svc, i))
	}
	return out
}

// ClusterIPsOf returns a Service's valid virtual IPs (spec.clusterIPs, or
// spec.clusterIP when that is empty), IPv4-mapped addresses unmapped; "None"
// (a headless Service) and empty values are skipped.
func ClusterIPsOf(svc *corev1.Service) []string {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	var out []string
	for _, s := range ips {
		if ip, err := netip.ParseAddr(s); err == nil {
			out = append(out, ip.Unmap().String())
		}
	}
	return out
}

// VirtualAddresses returns "clusterIP:port" for every cluster IP of the
// port: the addresses a connection redirected to the proxy has as its
// original destination (SO_ORIGINAL_DST) when it was meant for this port.
func (s ServicePort) VirtualAddresses() []string {
	var out []string
	for _, ip := range s.ClusterIPs {
		out = append(out, net.JoinHostPort(ip, strconv.Itoa(int(s.Port))))
	}
	return out
}

// ProtocolOf maps a Service port's appProtocol to how the mesh handles it,
// as Linkerd does: unset means detect, "http" HTTP/1, "kubernetes.io/h2c"
// HTTP/2, and anything unknown opaque. Sluice also knows "grpc". Case is
// ignored.
func ProtocolOf(appProtocol string) routetable.Protocol {
	switch strings.ToLower(appProtocol) {
	case "":
		return routetable.ProtocolDetect
	case "http":
		return routetable.ProtocolHTTP1
	case "kubernetes.io/h2c":
		return routetable.ProtocolHTTP2
	case "grpc":
		return routetable.ProtocolGRPC
	default:
		return routetable.ProtocolOpaque
	}
}
