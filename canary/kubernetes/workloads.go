package kubernetes

import (
	"context"
	"fmt"
	"maps"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/sluicehq/sluice/canary"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// Workloads is the canary.Workloads of Deployment targets on Kubernetes.
type Workloads struct {
	// Client reads and writes Deployments, Services, autoscalers and the
	// primary's copies of ConfigMaps and Secrets; a manager's client reads
	// from its cache. Its scheme must know Canaries (owner references).
	Client client.Client
	// Configs reads the ConfigMaps and Secrets a target refers to; Client
	// when nil. A manager's API reader avoids caching every Secret of the
	// cluster.
	Configs client.Reader
}

var _ canary.Workloads = (*Workloads)(nil)

// errUnsupportedKind is the error of a target that is not a Deployment.
func errUnsupportedKind(c *v1beta1.Canary) error {
	return fmt.Errorf("canary %s/%s: targetRef kind %s (%s) is not supported on Kubernetes: only apps/v1 Deployments are",
		c.Namespace, c.Name, c.Spec.TargetRef.Kind, c.Spec.TargetRef.APIVersion)
}

func (w *Workloads) configs() client.Reader {
	if w.Configs != nil {
		return w.Configs
	}
	return w.Client
}

// getDeployment reads Deployment ns/name; nil, nil when it does not exist.
func (w *Workloads) getDeployment(ctx context.Context, ns, name string) (*appsv1.Deployment, error) {
	d := &appsv1.Deployment{}
	err := w.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, d)
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("reading Deployment %s/%s: %w", ns, name, err)
	}
	return d, nil
}

// target reads c's target; an error when it is missing.
func (w *Workloads) target(ctx context.Context, c *v1beta1.Canary) (*appsv1.Deployment, error) {
	if c.Spec.TargetRef.Kind != "Deployment" {
		return nil, errUnsupportedKind(c)
	}
	d, err := w.getDeployment(ctx, c.Namespace, c.Spec.TargetRef.Name)
	if err != nil {
		return nil, err
	}
	if d == nil {
		return nil, fmt.Errorf("target Deployment %s/%s not found", c.Namespace, c.Spec.TargetRef.Name)
	}
	return d, nil
}

// targetRevision reads the configs d uses and returns its revision.
func (w *Workloads) targetRevision(ctx context.Context, d *appsv1.Deployment) (string, trackedConfigs, error) {
	configs, err := readConfigs(ctx, w.configs(), d.Namespace, &d.Spec.Template.Spec)
	if err != nil {
		return "", nil, fmt.Errorf("configs of Deployment %s/%s: %w", d.Namespace, d.Name, err)
	}
	return revisionOf(&d.Spec.Template, configs.checksums()), configs, nil
}

// Observe returns the state of the target and its primary, and whether the
// three Services are as the spec asks. The target's revision is computed
// from its pod template and configs; the primary's is the one Sluice wrote
// into its pod template.
func (w *Workloads) Observe(ctx context.Context, c *v1beta1.Canary) (target, primary canary.Workload, servicesReady bool, err error) {
	if c.Spec.TargetRef.Kind != "Deployment" {
		return target, primary, false, errUnsupportedKind(c)
	}
	t, err := w.getDeployment(ctx, c.Namespace, c.Spec.TargetRef.Name)
	if err != nil || t == nil {
		return target, primary, false, err
	}
	rev, _, err := w.targetRevision(ctx, t)
	if err != nil {
		return target, primary, false, err
	}
	target = workloadOf(t, rev, c.GetCanaryReadyThreshold())
	p, err := w.getDeployment(ctx, c.Namespace, c.GetPrimaryName())
	if err != nil {
		return target, primary, false, err
	}
	if p != nil {
		primary = workloadOf(p, p.Spec.Template.Annotations[RevisionAnnotation], c.GetPrimaryReadyThreshold())
	}
	servicesReady, err = w.servicesReady(ctx, c, t)
	if err != nil {
		return target, primary, false, err
	}
	return target, primary, servicesReady, nil
}

// TrackedConfigs returns the checksums of the ConfigMaps and Secrets c's
// target uses, by "configmap/<name>" and "secret/<name>", for
// status.trackedConfigs; nil when the target does not exist.
func (w *Workloads) TrackedConfigs(ctx context.Context, c *v1beta1.Canary) (map[string]string, error) {
	if c.Spec.TargetRef.Kind != "Deployment" {
		return nil, errUnsupportedKind(c)
	}
	t, err := w.getDeployment(ctx, c.Namespace, c.Spec.TargetRef.Name)
	if err != nil || t == nil {
		return nil, err
	}
	_, configs, err := w.targetRevision(ctx, t)
	if err != nil {
		return nil, err
	}
	return configs.checksums(), nil
}

// workloadOf is the observed state of d at revision rev, ready when
// thresholdPct percent of its updated replicas are available.
func workloadOf(d *appsv1.Deployment, rev string, thresholdPct int) canary.Workload {
	ready, msg := deploymentReady(d, thresholdPct)
	return canary.Workload{
		Exists:   true,
		Revision: rev,
		Ready:    ready,
		Replicas: desiredReplicas(d),
		Message:  msg,
	}
}

func desiredReplicas(d *appsv1.Deployment) int32 {
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}

// deploymentReady reports whether d's current revision is rolled out, and
// if not, why: it has replicas, the controller has observed its generation,
// every desired replica is updated, no old replica is left, and
// thresholdPct percent of the updated replicas (rounded up) are available.
// A Deployment scaled to zero is not ready: it serves nothing (and read
// from a cache that lags a scale-up, it must not pass for a canary ready to
// take traffic).
func deploymentReady(d *appsv1.Deployment, thresholdPct int) (bool, string) {
	st := &d.Status
	desired := desiredReplicas(d)
	if desired == 0 {
		return false, fmt.Sprintf("deployment %s is scaled to zero", d.Name)
	}
	if d.Generation > st.ObservedGeneration {
		return false, fmt.Sprintf("deployment %s: waiting for generation %d to be observed", d.Name, d.Generation)
	}
	for _, cond := range st.Conditions {
		if cond.Type == appsv1.DeploymentProgressing && cond.Reason == "ProgressDeadlineExceeded" {
			return false, fmt.Sprintf("deployment %s exceeded its progress deadline: %s", d.Name, cond.Message)
		}
	}
	if st.UpdatedReplicas < desired {
		return false, fmt.Sprintf("%d of %d replicas updated%s", st.UpdatedReplicas, desired, failureOf(d))
	}
	if st.Replicas > st.UpdatedReplicas {
		return false, fmt.Sprintf("%d old replicas pending termination", st.Replicas-st.UpdatedReplicas)
	}
	thresholdPct = min(max(thresholdPct, 0), 100)
	need := (int64(st.UpdatedReplicas)*int64(thresholdPct) + 99) / 100
	if int64(st.AvailableReplicas) < need {
		return false, fmt.Sprintf("%d/%d replicas available%s", st.AvailableReplicas, st.UpdatedReplicas, failureOf(d))
	}
	return true, ""
}

// failureOf is ": <message>" of d's ReplicaFailure condition, if any.
func failureOf(d *appsv1.Deployment) string {
	for _, cond := range d.Status.Conditions {
		if cond.Type == appsv1.DeploymentReplicaFailure && cond.Status == corev1.ConditionTrue && cond.Message != "" {
			return ": " + cond.Message
		}
	}
	return ""
}

// EnsurePrimary creates "<target>-primary" as a clone of the target when it
// is missing, after copying the target's configs, and the primary's
// autoscaler when autoscalerRef is set. An existing primary is left as it
// is.
func (w *Workloads) EnsurePrimary(ctx context.Context, c *v1beta1.Canary) error {
	target, err := w.target(ctx, c)
	if err != nil {
		return err
	}
	l, err := selectorLabelOf(target)
	if err != nil {
		return err
	}
	p, err := w.getDeployment(ctx, c.Namespace, c.GetPrimaryName())
	if err != nil {
		return err
	}
	if p == nil {
		rev, configs, err := w.targetRevision(ctx, target)
		if err != nil {
			return err
		}
		if err := w.syncConfigs(ctx, c, configs); err != nil {
			return err
		}
		p = newPrimary(c, target, l, primaryTemplate(target, l, configs, rev))
		if err := controllerutil.SetControllerReference(c, p, w.Client.Scheme()); err != nil {
			return fmt.Errorf("owning Deployment %s by canary %s: %w", p.Name, c.Name, err)
		}
		if err := w.Client.Create(ctx, p); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating Deployment %s/%s: %w", p.Namespace, p.Name, err)
		}
	}
	return w.ensurePrimaryScaler(ctx, c, true)
}

// PromotePrimary copies the target's pod template (with the primary's
// label and configs), its rollout settings and, without an autoscaler, its
// replicas to the primary, after copying the target's configs; the primary
// then rolls out revision. It refuses when the target is no longer at
// revision: the next tick sees the new revision.
func (w *Workloads) PromotePrimary(ctx context.Context, c *v1beta1.Canary, revision string) error {
	target, err := w.target(ctx, c)
	if err != nil {
		return err
	}
	l, err := selectorLabelOf(target)
	if err != nil {
		return err
	}
	rev, configs, err := w.targetRevision(ctx, target)
	if err != nil {
		return err
	}
	if rev != revision {
		return fmt.Errorf("target %s changed to revision %s while revision %s was being promoted", target.Name, rev, revision)
	}
	if err := w.syncConfigs(ctx, c, configs); err != nil {
		return err
	}
	tpl := primaryTemplate(target, l, configs, revision)
	key := types.NamespacedName{Namespace: c.Namespace, Name: c.GetPrimaryName()}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p := &appsv1.Deployment{}
		if err := w.Client.Get(ctx, key, p); err != nil {
			return fmt.Errorf("reading Deployment %s: %w", key, err)
		}
		before := p.DeepCopy()
		copyRolloutSpec(&p.Spec, &target.Spec)
		if c.Spec.AutoscalerRef == nil {
			p.Spec.Replicas = new(replicasBeforeZero(target))
		}
		// The selector is immutable; the template keeps the primary's
		// label, which it matches.
		p.Spec.Template = tpl
		if equality.Semantic.DeepEqual(before.Spec, p.Spec) {
			return nil
		}
		if err := w.Client.Update(ctx, p); err != nil {
			return fmt.Errorf("updating Deployment %s: %w", key, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return w.ensurePrimaryScaler(ctx, c, false)
}

// ScaleCanary scales the target, serving as the canary, up (writing its
// revision into its pod template) or to zero.
func (w *Workloads) ScaleCanary(ctx context.Context, c *v1beta1.Canary, up bool) error {
	return w.scaleTarget(ctx, c, up)
}

// ScaleTarget scales the target to zero once the primary serves its
// traffic, or gives it its replicas back.
func (w *Workloads) ScaleTarget(ctx context.Context, c *v1beta1.Canary, zero bool) error {
	return w.scaleTarget(ctx, c, !zero)
}

// scaleTarget scales the target up or to zero. To zero, it records the
// replicas it had in ReplicasAnnotation. Up, it gives it the replicas it
// has if not zero, otherwise (as Flagger does) the autoscaler's minimum
// with an autoscalerRef, the primary's replicas without, or the recorded
// ones.
func (w *Workloads) scaleTarget(ctx context.Context, c *v1beta1.Canary, up bool) error {
	target, err := w.target(ctx, c)
	if err != nil {
		return err
	}
	patch := client.MergeFrom(target.DeepCopy())
	if !up {
		n := desiredReplicas(target)
		if n == 0 {
			return nil
		}
		if target.Annotations == nil {
			target.Annotations = map[string]string{}
		}
		target.Annotations[ReplicasAnnotation] = strconv.Itoa(int(n))
		target.Spec.Replicas = new(int32(0))
	} else {
		rev, _, err := w.targetRevision(ctx, target)
		if err != nil {
			return err
		}
		n, err := w.scaleUpReplicas(ctx, c, target)
		if err != nil {
			return err
		}
		if desiredReplicas(target) == n && target.Spec.Template.Annotations[RevisionAnnotation] == rev {
			return nil
		}
		target.Spec.Replicas = new(n)
		if target.Spec.Template.Annotations == nil {
			target.Spec.Template.Annotations = map[string]string{}
		}
		target.Spec.Template.Annotations[RevisionAnnotation] = rev
	}
	if err := w.Client.Patch(ctx, target, patch); err != nil {
		return fmt.Errorf("scaling Deployment %s/%s: %w", target.Namespace, target.Name, err)
	}
	return nil
}

// scaleUpReplicas is how many replicas the target gets when scaled up.
func (w *Workloads) scaleUpReplicas(ctx context.Context, c *v1beta1.Canary, target *appsv1.Deployment) (int32, error) {
	if n := desiredReplicas(target); n > 0 {
		return n, nil
	}
	if ref := c.Spec.AutoscalerRef; ref != nil && ref.Kind == "HorizontalPodAutoscaler" {
		hpa := &autoscalingv2.HorizontalPodAutoscaler{}
		err := w.Client.Get(ctx, types.NamespacedName{Namespace: c.Namespace, Name: ref.Name}, hpa)
		switch {
		case err == nil:
			if hpa.Spec.MinReplicas != nil && *hpa.Spec.MinReplicas > 0 {
				return *hpa.Spec.MinReplicas, nil
			}
			return 1, nil
		case !apierrors.IsNotFound(err):
			return 0, fmt.Errorf("reading HorizontalPodAutoscaler %s/%s: %w", c.Namespace, ref.Name, err)
		}
	}
	p, err := w.getDeployment(ctx, c.Namespace, c.GetPrimaryName())
	if err != nil {
		return 0, err
	}
	if p != nil && desiredReplicas(p) > 0 {
		return desiredReplicas(p), nil
	}
	return replicasBeforeZero(target), nil
}

// syncConfigs creates or updates the primary's copies of the target's
// tracked configs.
func (w *Workloads) syncConfigs(ctx context.Context, c *v1beta1.Canary, configs trackedConfigs) error {
	for _, tc := range configs {
		want := primaryConfigCopy(c, tc)
		if want == nil {
			continue
		}
		if err := controllerutil.SetControllerReference(c, want, w.Client.Scheme()); err != nil {
			return fmt.Errorf("owning %s %s by canary %s: %w", tc.ref.kind, want.GetName(), c.Name, err)
		}
		if err := w.syncConfig(ctx, c, want); err != nil {
			return err
		}
	}
	return nil
}

func (w *Workloads) syncConfig(ctx context.Context, c *v1beta1.Canary, want client.Object) error {
	key := client.ObjectKeyFromObject(want)
	what := fmt.Sprintf("%T %s", want, key)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur := want.DeepCopyObject().(client.Object)
		err := w.configs().Get(ctx, key, cur)
		if apierrors.IsNotFound(err) {
			if err := w.Client.Create(ctx, want.DeepCopyObject().(client.Object)); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("creating %s: %w", what, err)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", what, err)
		}
		if !metav1.IsControlledBy(cur, c) {
			return fmt.Errorf("%s exists and is not the primary's copy made by canary %s: rename it or set %s: disabled on the original",
				what, c.Name, ConfigTrackingAnnotation)
		}
		changed := false
		switch cur := cur.(type) {
		case *corev1.ConfigMap:
			w := want.(*corev1.ConfigMap)
			if !maps.Equal(cur.Data, w.Data) || !equality.Semantic.DeepEqual(cur.BinaryData, w.BinaryData) {
				cur.Data, cur.BinaryData, changed = w.Data, w.BinaryData, true
			}
		case *corev1.Secret:
			w := want.(*corev1.Secret)
			if !equality.Semantic.DeepEqual(cur.Data, w.Data) {
				cur.Data, changed = w.Data, true
			}
		}
		if !changed {
			return nil
		}
		if err := w.Client.Update(ctx, cur); err != nil {
			return fmt.Errorf("updating %s: %w", what, err)
		}
		return nil
	})
}

// ensurePrimaryScaler creates the primary's copy of the target's
// HorizontalPodAutoscaler, or, unless init, updates it to the target's.
func (w *Workloads) ensurePrimaryScaler(ctx context.Context, c *v1beta1.Canary, init bool) error {
	ref := c.Spec.AutoscalerRef
	if ref == nil {
		return nil
	}
	if ref.Kind != "HorizontalPodAutoscaler" {
		return fmt.Errorf("autoscalerRef kind %s is not supported on Kubernetes: only autoscaling/v2 HorizontalPodAutoscalers are", ref.Kind)
	}
	src := &autoscalingv2.HorizontalPodAutoscaler{}
	if err := w.Client.Get(ctx, types.NamespacedName{Namespace: c.Namespace, Name: ref.Name}, src); err != nil {
		return fmt.Errorf("reading HorizontalPodAutoscaler %s/%s (autoscalerRef): %w", c.Namespace, ref.Name, err)
	}
	spec := *src.Spec.DeepCopy()
	spec.ScaleTargetRef = autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: c.GetPrimaryName()}
	if r := ref.PrimaryScalerReplicas; r != nil {
		if r.MinReplicas != nil {
			spec.MinReplicas = new(*r.MinReplicas)
		}
		if r.MaxReplicas != nil {
			spec.MaxReplicas = *r.MaxReplicas
		}
	}
	key := types.NamespacedName{Namespace: c.Namespace, Name: ref.Name + "-primary"}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur := &autoscalingv2.HorizontalPodAutoscaler{}
		err := w.Client.Get(ctx, key, cur)
		if apierrors.IsNotFound(err) {
			hpa := &autoscalingv2.HorizontalPodAutoscaler{
				ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Labels: maps.Clone(src.Labels)},
				Spec:       spec,
			}
			if err := controllerutil.SetControllerReference(c, hpa, w.Client.Scheme()); err != nil {
				return fmt.Errorf("owning HorizontalPodAutoscaler %s by canary %s: %w", key, c.Name, err)
			}
			if err := w.Client.Create(ctx, hpa); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("creating HorizontalPodAutoscaler %s: %w", key, err)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading HorizontalPodAutoscaler %s: %w", key, err)
		}
		if init || equality.Semantic.DeepEqual(cur.Spec, spec) {
			return nil
		}
		cur.Spec = spec
		if err := w.Client.Update(ctx, cur); err != nil {
			return fmt.Errorf("updating HorizontalPodAutoscaler %s: %w", key, err)
		}
		return nil
	})
}
