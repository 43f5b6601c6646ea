package kubernetes

import (
	"maps"
	"strings"

	"k8s.io/client-go/tools/cache"

	"github.com/sluicehq/sluice/crds/policy/v1beta1"
	"github.com/sluicehq/sluice/mesh/policy"
)

// PolicyInputs returns what policy.Compile needs for a port of a pod named
// "namespace/name": the pod's labels and namespace, the name of the
// container port with that number, its default inbound policy (its
// config.sluice.dev/default-inbound-policy annotation; empty: the server's),
// the Servers and AuthorizationPolicies of its namespace and the
// MeshTLSAuthentications and NetworkAuthentications of every namespace. ok
// is false when no such pod is known, the name is malformed or port is not
// 1-65535. The result is the caller's (deep copies). It implements
// policy.PolicySource.
func (s *Source) PolicyInputs(workload string, port int) (policy.Input, bool) {
	ns, name, ok := strings.Cut(workload, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") || port < 1 || port > 65535 {
		return policy.Input{}, false
	}
	pod := s.pod(ns, name)
	if pod == nil {
		return policy.Input{}, false
	}
	return policy.Input{
		PodLabels:              maps.Clone(pod.Labels),
		PodNamespace:           ns,
		Port:                   int32(port),
		PortName:               containerPortName(pod, int32(port)),
		Servers:                listPolicies[v1beta1.Server](s.servers, ns),
		AuthorizationPolicies:  listPolicies[v1beta1.AuthorizationPolicy](s.authzPolicies, ns),
		MeshTLSAuthentications: listPolicies[v1beta1.MeshTLSAuthentication](s.meshTLSAuthns, ""),
		NetworkAuthentications: listPolicies[v1beta1.NetworkAuthentication](s.networkAuthns, ""),
		DefaultPolicy:          pod.Annotations[defaultInboundPolicyAnnotation],
	}, true
}

// listPolicies returns deep copies of the cached objects of one policy kind,
// of namespace ns ("" for every namespace).
func listPolicies[T any, P interface {
	*T
	DeepCopy() *T
}](inf cache.SharedIndexInformer, ns string) []T {
	var objs []any
	if ns == "" {
		objs = inf.GetIndexer().List()
	} else {
		objs, _ = inf.GetIndexer().ByIndex(cache.NamespaceIndex, ns)
	}
	var out []T
	for _, o := range objs {
		if p, ok := o.(P); ok {
			out = append(out, *p.DeepCopy())
		}
	}
	return out
}
