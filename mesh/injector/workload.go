package injector

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// workload is what a pod belongs to, for labels and metrics.
type workload struct {
	kind string // lower case: "deployment", "job", ...; "pod" when it has no owner
	name string
}

func (w workload) String() string { return w.kind + "/" + w.name }

// metricLabel is the proxy metric label naming the workload, as Linkerd's
// scrape configuration names it (job becomes k8s_job); "" for a bare pod.
func (w workload) metricLabel() string {
	switch w.kind {
	case "pod":
		return ""
	case "job":
		return "k8s_job"
	default:
		return w.kind
	}
}

// workloadOf finds a pod's workload from its controlling owner: a
// ReplicaSet whose name ends in the pod's pod-template-hash belongs to a
// Deployment; any other owner is the workload itself. `sluice inject` gives
// pod templates their object as owner.
func workloadOf(pod *corev1.Pod) workload {
	owner := controllerOf(pod.OwnerReferences)
	if owner == nil {
		name := pod.Name
		if name == "" {
			name = strings.TrimSuffix(pod.GenerateName, "-")
		}
		return workload{kind: "pod", name: name}
	}
	if owner.Kind == "ReplicaSet" {
		if hash := pod.Labels["pod-template-hash"]; hash != "" {
			if deploy, ok := strings.CutSuffix(owner.Name, "-"+hash); ok && deploy != "" {
				return workload{kind: "deployment", name: deploy}
			}
		}
	}
	return workload{kind: strings.ToLower(owner.Kind), name: owner.Name}
}

// controllerOf returns the controlling owner reference, or the only one.
func controllerOf(refs []metav1.OwnerReference) *metav1.OwnerReference {
	for i := range refs {
		if refs[i].Controller != nil && *refs[i].Controller {
			return &refs[i]
		}
	}
	if len(refs) == 1 {
		return &refs[0]
	}
	return nil
}
