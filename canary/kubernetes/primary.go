package kubernetes

import (
	"fmt"
	"maps"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// selectorLabels are the pod labels Sluice selects a target's pods by, in
// order of preference (Flagger's -selector-labels default).
var selectorLabels = []string{"app", "name", "app.kubernetes.io/name"}

// podLabel is the label that tells a target's pods from its primary's: the
// target's pods have key=value, the primary's key=value-primary.
type podLabel struct{ key, value string }

// primaryValue is the label's value on the primary's pods.
func (l podLabel) primaryValue() string { return l.value + "-primary" }

// selectorLabelOf returns the label d selects its pods by, among
// selectorLabels.
func selectorLabelOf(d *appsv1.Deployment) (podLabel, error) {
	var match map[string]string
	if d.Spec.Selector != nil {
		match = d.Spec.Selector.MatchLabels
	}
	for _, k := range selectorLabels {
		if v, ok := match[k]; ok && v != "" && d.Spec.Template.Labels[k] == v {
			return podLabel{k, v}, nil
		}
	}
	return podLabel{}, fmt.Errorf("deployment %s/%s: spec.selector.matchLabels has none of the labels %s that Sluice tells the primary's pods from the canary's by",
		d.Namespace, d.Name, strings.Join(selectorLabels, ", "))
}

// primaryTemplate returns the pod template the primary runs for target at
// revision: the target's, with the selector label's value "-primary", its
// tracked configs replaced by their "-primary" copies, affinity and
// topology-spread selectors of the target's pods pointed at the primary's,
// and the revision in RevisionAnnotation.
func primaryTemplate(target *appsv1.Deployment, l podLabel, configs trackedConfigs, revision string) corev1.PodTemplateSpec {
	tpl := *target.Spec.Template.DeepCopy()
	if tpl.Labels == nil {
		tpl.Labels = map[string]string{}
	}
	tpl.Labels[l.key] = l.primaryValue()
	if tpl.Annotations == nil {
		tpl.Annotations = map[string]string{}
	}
	stripOwnAnnotations(tpl.Annotations)
	tpl.Annotations[RevisionAnnotation] = revision
	rewriteConfigRefs(&tpl.Spec, configs)
	rewriteAffinity(&tpl.Spec, l)
	return tpl
}

// rewriteConfigRefs points spec's references to tracked configs at their
// primary copies.
func rewriteConfigRefs(spec *corev1.PodSpec, configs trackedConfigs) {
	cm := func(name *string) {
		if configs.has(kindConfigMap, *name) {
			*name = primaryConfigName(*name)
		}
	}
	sec := func(name *string) {
		if configs.has(kindSecret, *name) {
			*name = primaryConfigName(*name)
		}
	}
	for i := range spec.Volumes {
		v := &spec.Volumes[i]
		switch {
		case v.ConfigMap != nil:
			cm(&v.ConfigMap.Name)
		case v.Secret != nil:
			sec(&v.Secret.SecretName)
		case v.Projected != nil:
			for j := range v.Projected.Sources {
				s := &v.Projected.Sources[j]
				if s.ConfigMap != nil {
					cm(&s.ConfigMap.Name)
				}
				if s.Secret != nil {
					sec(&s.Secret.Name)
				}
			}
		}
	}
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range cs {
			c := &cs[i]
			for j := range c.EnvFrom {
				if r := c.EnvFrom[j].ConfigMapRef; r != nil {
					cm(&r.Name)
				}
				if r := c.EnvFrom[j].SecretRef; r != nil {
					sec(&r.Name)
				}
			}
			for j := range c.Env {
				vf := c.Env[j].ValueFrom
				if vf == nil {
					continue
				}
				if r := vf.ConfigMapKeyRef; r != nil {
					cm(&r.Name)
				}
				if r := vf.SecretKeyRef; r != nil {
					sec(&r.Name)
				}
			}
		}
	}
}

// rewriteAffinity points the pod (anti-)affinity and topology-spread label
// selectors that select the target's pods by l at the primary's pods.
func rewriteAffinity(spec *corev1.PodSpec, l podLabel) {
	sel := func(s *metav1.LabelSelector) {
		if s == nil {
			return
		}
		if s.MatchLabels[l.key] == l.value {
			s.MatchLabels[l.key] = l.primaryValue()
		}
		for i := range s.MatchExpressions {
			e := &s.MatchExpressions[i]
			if e.Key != l.key {
				continue
			}
			for j := range e.Values {
				if e.Values[j] == l.value {
					e.Values[j] = l.primaryValue()
				}
			}
		}
	}
	terms := func(req []corev1.PodAffinityTerm, pref []corev1.WeightedPodAffinityTerm) {
		for i := range req {
			sel(req[i].LabelSelector)
		}
		for i := range pref {
			sel(pref[i].PodAffinityTerm.LabelSelector)
		}
	}
	if a := spec.Affinity; a != nil {
		if a.PodAffinity != nil {
			terms(a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution, a.PodAffinity.PreferredDuringSchedulingIgnoredDuringExecution)
		}
		if a.PodAntiAffinity != nil {
			terms(a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution, a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution)
		}
	}
	for i := range spec.TopologySpreadConstraints {
		sel(spec.TopologySpreadConstraints[i].LabelSelector)
	}
}

// newPrimary returns the primary Deployment of c cloned from target.
func newPrimary(c *v1beta1.Canary, target *appsv1.Deployment, l podLabel, tpl corev1.PodTemplateSpec) *appsv1.Deployment {
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: c.Namespace,
			Name:      c.GetPrimaryName(),
			// The target's own labels are not copied: tools that track
			// objects by label (Argo CD's app.kubernetes.io/instance) would
			// take the primary for theirs, and prune it.
			Labels: map[string]string{l.key: l.primaryValue()},
		},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(replicasBeforeZero(target)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{l.key: l.primaryValue()}},
			Template: tpl,
		},
	}
	copyRolloutSpec(&d.Spec, &target.Spec)
	return d
}

// copyRolloutSpec copies how the target rolls out to the primary.
func copyRolloutSpec(dst, src *appsv1.DeploymentSpec) {
	dst.ProgressDeadlineSeconds = src.ProgressDeadlineSeconds
	dst.MinReadySeconds = src.MinReadySeconds
	dst.RevisionHistoryLimit = src.RevisionHistoryLimit
	dst.Strategy = *src.Strategy.DeepCopy()
}

// replicasBeforeZero is the target's replica count, or, when Sluice scaled
// it to zero, the count it had before; at least 1.
func replicasBeforeZero(d *appsv1.Deployment) int32 {
	if d.Spec.Replicas == nil {
		return 1
	}
	if n := *d.Spec.Replicas; n > 0 {
		return n
	}
	if n, ok := recordedReplicas(d); ok {
		return n
	}
	return 1
}

// recordedReplicas returns the replicas recorded in ReplicasAnnotation.
func recordedReplicas(d *appsv1.Deployment) (int32, bool) {
	var n int32
	if _, err := fmt.Sscanf(d.Annotations[ReplicasAnnotation], "%d", &n); err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}

// primaryConfigCopy returns the primary's copy of a tracked config, owned
// by c; nil for a config that is neither a ConfigMap nor a Secret.
func primaryConfigCopy(c *v1beta1.Canary, tc *trackedConfig) client.Object {
	meta := func(src metav1.ObjectMeta) metav1.ObjectMeta {
		return metav1.ObjectMeta{
			Namespace:   c.Namespace,
			Name:        primaryConfigName(src.Name),
			Labels:      maps.Clone(src.Labels),
			Annotations: filterAnnotations(src.Annotations),
		}
	}
	switch {
	case tc.configMap != nil:
		return &corev1.ConfigMap{
			ObjectMeta: meta(tc.configMap.ObjectMeta),
			Data:       maps.Clone(tc.configMap.Data),
			BinaryData: maps.Clone(tc.configMap.BinaryData),
		}
	case tc.secret != nil:
		return &corev1.Secret{
			ObjectMeta: meta(tc.secret.ObjectMeta),
			Type:       tc.secret.Type,
			Data:       maps.Clone(tc.secret.Data),
		}
	}
	return nil
}

// filterAnnotations drops annotations that belong to the source object
// only: kubectl's last-applied configuration and GitOps tools' markers.
func filterAnnotations(a map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		if k == corev1.LastAppliedConfigAnnotation || strings.Contains(k, "toolkit.fluxcd.io") ||
			strings.HasPrefix(k, "argocd.argoproj.io/") || strings.HasPrefix(k, "meta.helm.sh/") {
			continue
		}
		out[k] = v
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
