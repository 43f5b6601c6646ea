package kubernetes

import (
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	sluicev1beta1 "github.com/sluicehq/sluice/crds/sluice/v1beta1"
	"github.com/sluicehq/sluice/mesh/api/routetable"
)

// ProxyContainerName is the name of the sidecar the injector adds (a native
// sidecar init container, or a container): a pod with it is meshed.
const ProxyContainerName = "sluice-proxy"

// Pod annotations the source reads (the injector's config.sluice.dev/*).
const (
	// skipInboundPortsAnnotation lists ports ("25,587,3300-3310") whose
	// inbound traffic bypasses the proxy: endpoints on them get no identity.
	skipInboundPortsAnnotation = "config.sluice.dev/skip-inbound-ports"
	// opaquePortsAnnotation lists ports whose traffic is forwarded opaquely:
	// endpoints on them get the protocol hint opaque.
	opaquePortsAnnotation = "config.sluice.dev/opaque-ports"
	// defaultInboundPolicyAnnotation is the pod's default inbound policy.
	defaultInboundPolicyAnnotation = "config.sluice.dev/default-inbound-policy"
)

// endpoint builds the endpoint at addr (port being its port) of a pod
// (possibly unknown: nil) named podName in namespace ns.
func (s *Source) endpoint(addr string, port int32, ready bool, ns, podName string, pod *corev1.Pod) routetable.Endpoint {
	e := routetable.Endpoint{
		Address: addr,
		Ready:   &ready,
		Labels:  map[string]string{"namespace": ns},
	}
	if podName != "" {
		e.Labels["pod"] = podName
	}
	if pod == nil {
		return e
	}
	if kind, name := workloadOf(pod); name != "" {
		e.Labels[kind] = name
		e.Labels["workload_kind"] = kind
	}
	// The revision is the canary controller's (as the telemetry labels
	// pods), else the Deployment's pod-template-hash.
	if rev := pod.Annotations[sluicev1beta1.RevisionAnnotation]; rev != "" {
		e.Labels["revision"] = rev
	} else if rev := pod.Labels[appsv1.DefaultDeploymentUniqueLabelKey]; rev != "" {
		e.Labels["revision"] = rev
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	e.Labels["serviceaccount"] = sa
	if !isMeshed(pod) || portListed(pod.Annotations[skipInboundPortsAnnotation], port) {
		return e
	}
	e.Identity = s.identityOf(sa, pod.Namespace)
	e.Protocol = routetable.ProtocolHTTP2
	if portListed(pod.Annotations[opaquePortsAnnotation], port) {
		e.Protocol = routetable.ProtocolOpaque
	}
	return e
}

// isMeshed reports whether the pod runs the proxy.
func isMeshed(pod *corev1.Pod) bool {
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range cs {
			if cs[i].Name == ProxyContainerName {
				return true
			}
		}
	}
	return false
}

// workloadOf returns the kind (lower case, a metric label name) and name of
// the workload a pod belongs to: the Deployment of a ReplicaSet owner whose
// name is the Deployment's plus the pod-template-hash, or the controlling
// owner itself. It returns "" when the pod has no controller.
func workloadOf(pod *corev1.Pod) (kind, name string) {
	for _, o := range pod.OwnerReferences {
		if o.Controller == nil || !*o.Controller {
			continue
		}
		hash := pod.Labels[appsv1.DefaultDeploymentUniqueLabelKey]
		if o.Kind == "ReplicaSet" && hash != "" && strings.HasSuffix(o.Name, "-"+hash) {
			return "deployment", strings.TrimSuffix(o.Name, "-"+hash)
		}
		return strings.ToLower(o.Kind), o.Name
	}
	return "", ""
}

// portListed reports whether a port list ("25,587,3300-3310") names port.
// Malformed entries are ignored.
func portListed(list string, port int32) bool {
	for f := range strings.SplitSeq(list, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(f, "-")
		a, err := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
		if err != nil {
			continue
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(strings.TrimSpace(hi), 10, 16); err != nil {
				continue
			}
		}
		if uint64(port) >= a && uint64(port) <= b {
			return true
		}
	}
	return false
}

// containerPortName returns the name of the container port (TCP) with the
// given number on one of the pod's app containers, or "".
func containerPortName(pod *corev1.Pod, port int32) string {
	for _, cs := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for i := range cs {
			if cs[i].Name == ProxyContainerName {
				continue
			}
			for _, p := range cs[i].Ports {
				if p.ContainerPort == port && (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) && p.Name != "" {
					return p.Name
				}
			}
		}
	}
	return ""
}
