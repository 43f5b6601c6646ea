package kubernetes

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/sluicehq/sluice/canary"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// revertPoll is how often a revert waiting for the target looks again.
const revertPoll = 5 * time.Second

// finalize reverts what Sluice changed for a Canary being deleted that
// holds Finalizer (spec.revertOnDeletion), then lets it go. A Canary
// refused for a conflict changed nothing, and is let go at once.
func (r *Reconciler) finalize(ctx context.Context, c *v1beta1.Canary) (reconcile.Result, error) {
	if !controllerutil.ContainsFinalizer(c, Finalizer) {
		return reconcile.Result{}, nil
	}
	dc := c.DeepCopy()
	v1beta1.SetDefaults(dc)
	conflict, err := r.conflict(ctx, c)
	if err != nil {
		return reconcile.Result{}, err
	}
	if conflict == "" && dc.Spec.TargetRef.Kind == "Deployment" {
		done, msg, err := r.revert(ctx, dc)
		if err != nil {
			r.events.Event(c, canary.EventTypeWarning, "FailedRevert", err.Error())
			r.log.Error("canary revert failed; retrying", "canary", c.Namespace+"/"+c.Name, "error", err)
			return reconcile.Result{RequeueAfter: r.retryAfter}, nil
		}
		if !done {
			st := *c.Status.DeepCopy()
			if st.Phase != v1beta1.PhaseTerminating {
				st.Phase = v1beta1.PhaseTerminating
				st.LastTransitionTime = new(metav1.NewTime(r.clock().Truncate(time.Second)))
			}
			st.Message = msg
			return r.persist(ctx, c, st, revertPoll)
		}
		r.events.Event(c, canary.EventTypeNormal, "Reverted",
			fmt.Sprintf("%s %s has its replicas and the traffic of its Services back", dc.Spec.TargetRef.Kind, dc.Spec.TargetRef.Name))
	}
	patch := client.MergeFromWithOptions(c.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.RemoveFinalizer(c, Finalizer)
	if err := r.client.Patch(ctx, c, patch); err != nil && !apierrors.IsNotFound(err) {
		return reconcile.Result{}, fmt.Errorf("removing the finalizer of canary %s/%s: %w", c.Namespace, c.Name, err)
	}
	return reconcile.Result{}, nil
}

// revert undoes what Sluice changed, as Flagger's revertOnDeletion does, in
// an order that never leaves the apex Service without pods to serve it:
//
//  1. the target gets its replicas back, and is waited for (up to the
//     progress deadline after the deletion);
//  2. the apex Service selects the target's pods again (its original
//     selector if Sluice took it over) and is no longer owned by the
//     Canary, so that it outlives it;
//  3. the route hands the traffic to the apex Service's endpoints
//     (Router.Revert);
//  4. the primary, its autoscaler and config copies, and the "-primary"
//     and "-canary" Services are deleted (kept with a user's route, which
//     refers to them).
//
// It reports done=false, with what it waits for, while the target is not
// ready.
func (r *Reconciler) revert(ctx context.Context, c *v1beta1.Canary) (done bool, msg string, err error) {
	w := r.workloads
	target, err := w.getDeployment(ctx, c.Namespace, c.Spec.TargetRef.Name)
	if err != nil {
		return false, "", err
	}
	if target != nil {
		if target, err = w.restoreTarget(ctx, c, target); err != nil {
			return false, "", err
		}
		ready, why := deploymentReady(target, c.GetCanaryReadyThreshold())
		if !ready {
			waited := r.clock().Sub(c.DeletionTimestamp.Time)
			if waited < c.GetProgressDeadline() {
				return false, fmt.Sprintf("reverting: waiting for %s to be ready before its Services select it again: %s", target.Name, why), nil
			}
			r.events.Event(c, canary.EventTypeWarning, "RevertDeadlineExceeded",
				fmt.Sprintf("%s not ready after %s (%s): handing the traffic back anyway", target.Name, c.GetProgressDeadline(), why))
		}
		if err := w.restoreApex(ctx, c, target); err != nil {
			return false, "", err
		}
	}
	if err := r.router.Revert(ctx, c); err != nil {
		return false, "", err
	}
	if err := w.deleteGenerated(ctx, c); err != nil {
		return false, "", err
	}
	return true, "", nil
}

// restoreTarget gives a target Sluice scaled to zero its replicas back and
// drops ReplicasAnnotation; it returns the target as written.
func (w *Workloads) restoreTarget(ctx context.Context, c *v1beta1.Canary, target *appsv1.Deployment) (*appsv1.Deployment, error) {
	_, recorded := target.Annotations[ReplicasAnnotation]
	if desiredReplicas(target) > 0 && !recorded {
		return target, nil
	}
	patch := client.MergeFrom(target.DeepCopy())
	if desiredReplicas(target) == 0 {
		n, err := w.scaleUpReplicas(ctx, c, target)
		if err != nil {
			return nil, err
		}
		target.Spec.Replicas = new(n)
	}
	delete(target.Annotations, ReplicasAnnotation)
	if err := w.Client.Patch(ctx, target, patch); err != nil {
		return nil, fmt.Errorf("restoring the replicas of Deployment %s/%s: %w", target.Namespace, target.Name, err)
	}
	return target, nil
}

// restoreApex points the apex Service back at the target's pods: its
// original selector when Sluice took it over, the target's selector when
// Sluice created it. The Canary no longer owns it.
func (w *Workloads) restoreApex(ctx context.Context, c *v1beta1.Canary, target *appsv1.Deployment) error {
	apex, _, _ := c.GetServiceNames()
	key := types.NamespacedName{Namespace: c.Namespace, Name: apex}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		svc := &corev1.Service{}
		if err := w.Client.Get(ctx, key, svc); err != nil {
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("reading Service %s: %w", key, err)
		}
		before := svc.DeepCopy()
		if orig, ok := svc.Annotations[OriginalSelectorAnnotation]; ok {
			var sel map[string]string
			if err := json.Unmarshal([]byte(orig), &sel); err != nil {
				return fmt.Errorf("Service %s: annotation %s=%q is not a selector: %w", key, OriginalSelectorAnnotation, orig, err)
			}
			svc.Spec.Selector = sel
			delete(svc.Annotations, OriginalSelectorAnnotation)
		} else if metav1.IsControlledBy(svc, c) && target.Spec.Selector != nil {
			svc.Spec.Selector = maps.Clone(target.Spec.Selector.MatchLabels)
		}
		svc.OwnerReferences = slices.DeleteFunc(svc.OwnerReferences, func(o metav1.OwnerReference) bool { return o.UID == c.UID })
		if equalService(before, svc) && len(before.OwnerReferences) == len(svc.OwnerReferences) {
			return nil
		}
		if err := w.Client.Update(ctx, svc); err != nil {
			return fmt.Errorf("restoring Service %s: %w", key, err)
		}
		return nil
	})
}

// deleteGenerated deletes the objects Sluice generated for c and owns,
// but the apex Service and the route: the primary Deployment, its
// autoscaler and config copies, and (without a user's route) the
// "-primary" and "-canary" Services.
func (w *Workloads) deleteGenerated(ctx context.Context, c *v1beta1.Canary) error {
	var objs []client.Object
	p, err := w.getDeployment(ctx, c.Namespace, c.GetPrimaryName())
	if err != nil {
		return err
	}
	if p != nil {
		for _, ref := range podConfigRefs(&p.Spec.Template.Spec) {
			if !isPrimaryConfigName(ref.name) {
				continue
			}
			meta := metav1.ObjectMeta{Namespace: c.Namespace, Name: ref.name}
			if ref.kind == kindConfigMap {
				objs = append(objs, &corev1.ConfigMap{ObjectMeta: meta})
			} else {
				objs = append(objs, &corev1.Secret{ObjectMeta: meta})
			}
		}
		objs = append(objs, p)
	}
	if ref := c.Spec.AutoscalerRef; ref != nil && ref.Kind == "HorizontalPodAutoscaler" {
		objs = append(objs, &autoscalingv2.HorizontalPodAutoscaler{ObjectMeta: metav1.ObjectMeta{Namespace: c.Namespace, Name: ref.Name + "-primary"}})
	}
	if _, user := routeName(c); !user {
		_, primary, canarySvc := c.GetServiceNames()
		for _, name := range []string{primary, canarySvc} {
			objs = append(objs, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: c.Namespace, Name: name}})
		}
	}
	for _, o := range objs {
		if err := w.deleteOwned(ctx, c, o); err != nil {
			return err
		}
	}
	return nil
}

// deleteOwned deletes o if c controls it.
func (w *Workloads) deleteOwned(ctx context.Context, c *v1beta1.Canary, o client.Object) error {
	key := client.ObjectKeyFromObject(o)
	what := fmt.Sprintf("%T %s", o, key)
	var r client.Reader = w.Client
	switch o.(type) {
	case *corev1.ConfigMap, *corev1.Secret:
		r = w.configs()
	}
	if err := r.Get(ctx, key, o); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("reading %s: %w", what, err)
	}
	if !metav1.IsControlledBy(o, c) {
		return nil
	}
	err := w.Client.Delete(ctx, o, client.PropagationPolicy(metav1.DeletePropagationBackground),
		client.Preconditions{UID: new(o.GetUID())})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting %s: %w", what, err)
	}
	return nil
}
