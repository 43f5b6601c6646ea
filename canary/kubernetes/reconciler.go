package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/sluicehq/sluice/canary"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// Options configure a Reconciler.
type Options struct {
	// Client reads and writes every object (a manager's client reads from
	// its cache). Its scheme must know the built-in kinds, Sluice's and the
	// Gateway API's v1 kinds. Required.
	Client client.Client
	// APIReader reads Canaries, so that a tick starts from the status last
	// written rather than a cache that may lag it, and ConfigMaps and
	// Secrets, so that not every Secret of the cluster is cached; Client
	// when nil. A manager's GetAPIReader.
	APIReader client.Reader
	// Analyzer runs the canaries' metric checks.
	Analyzer canary.Analyzer
	// Hooks calls the canaries' webhooks.
	Hooks canary.Hooks
	// Notifier sends the canaries' alerts; none when nil.
	Notifier canary.Notifier
	// Recorder records Kubernetes Events about the Canaries; none when nil.
	Recorder events.EventRecorder
	// Clock is the time of a tick; time.Now when nil. Tests drive it.
	Clock func() time.Time
	// Metrics, when set, are updated after every tick.
	Metrics *canary.Metrics
	// Logger receives what the reconciler does; slog.Default() when nil.
	Logger *slog.Logger
	// ControllerName is the GAMMA controller whose parent status accepts
	// routes; DefaultControllerName when empty.
	ControllerName string
	// RetryAfter is the requeue after a failed tick; canary.DefaultRetryAfter
	// when 0.
	RetryAfter time.Duration
	// MaxConcurrentReconciles is how many Canaries are reconciled at once
	// (never one Canary twice at once); 1 when 0.
	MaxConcurrentReconciles int
	// SkipNameValidation lets SetupWithManager register the controller in
	// a process that already registered one (tests that start several
	// managers); its metrics are then shared.
	SkipNameValidation bool
}

// Reconciler reconciles Canaries: it ticks the canary driver with the
// Kubernetes Workloads and Router, applies the manual actions the CLI asks
// for in annotations, refuses a second Canary of one target, writes the
// status, and reverts what Sluice changed when a Canary with
// revertOnDeletion is deleted. Create it with NewReconciler.
type Reconciler struct {
	client     client.Client
	reader     client.Reader
	workloads  *Workloads
	router     *Router
	driver     *canary.Driver
	events     Events
	clock      func() time.Time
	log        *slog.Logger
	retryAfter time.Duration
	workers    int
	skipName   bool
}

var _ reconcile.Reconciler = (*Reconciler)(nil)

// NewReconciler returns the Reconciler o describes.
func NewReconciler(o Options) *Reconciler {
	reader := o.APIReader
	if reader == nil {
		reader = o.Client
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	clock := o.Clock
	if clock == nil {
		clock = time.Now
	}
	retryAfter := o.RetryAfter
	if retryAfter <= 0 {
		retryAfter = canary.DefaultRetryAfter
	}
	r := &Reconciler{
		client:     o.Client,
		reader:     reader,
		workloads:  &Workloads{Client: o.Client, Configs: reader},
		router:     &Router{Client: o.Client, ControllerName: o.ControllerName},
		events:     Events{Recorder: o.Recorder},
		clock:      clock,
		log:        log,
		retryAfter: retryAfter,
		workers:    max(o.MaxConcurrentReconciles, 1),
		skipName:   o.SkipNameValidation,
	}
	r.driver = &canary.Driver{
		Workloads:  r.workloads,
		Router:     r.router,
		Analyzer:   o.Analyzer,
		Hooks:      o.Hooks,
		Notifier:   o.Notifier,
		Events:     r.events,
		Clock:      clock,
		Metrics:    o.Metrics,
		Logger:     log,
		RetryAfter: retryAfter,
	}
	return r
}

// Reconcile runs one tick of the Canary req names and returns when to tick
// again.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	c := &v1beta1.Canary{}
	if err := r.reader.Get(ctx, req.NamespacedName, c); err != nil {
		if apierrors.IsNotFound(err) {
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("reading canary %s: %w", req.NamespacedName, err)
	}
	if !c.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, c)
	}
	if err := r.syncFinalizer(ctx, c); err != nil {
		return reconcile.Result{}, err
	}
	if errs := c.Validate(); len(errs) > 0 {
		// Step reports an invalid spec in the status and asks for
		// nothing; a corrected spec is a new event.
		st, _ := canary.Step(c, canary.Observation{Now: r.clock()})
		return r.persist(ctx, c, st, 0)
	}
	if k := c.Spec.TargetRef.Kind; k != "Deployment" {
		st := *c.Status.DeepCopy()
		st.ObservedGeneration = c.Generation
		st.Message = errUnsupportedKind(c).Error()
		apimeta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: v1beta1.ConditionReady, Status: metav1.ConditionFalse, Reason: "UnsupportedTarget",
			Message: st.Message, ObservedGeneration: c.Generation,
		})
		return r.persist(ctx, c, st, 0)
	}

	dc := c.DeepCopy()
	v1beta1.SetDefaults(dc)
	manual, err := manualAction(c)
	if err != nil {
		r.events.Event(c, canary.EventTypeWarning, "InvalidManualAction", err.Error())
	}
	conflict, err := r.conflict(ctx, c)
	if err != nil {
		return reconcile.Result{}, err
	}
	st, after, err := r.driver.Tick(ctx, dc, manual, conflict)
	if err != nil {
		// The driver logged the failure and recorded an event; the tick
		// is retried as it asks, without the controller's backoff. The
		// status keeps what the last good tick wrote, but for Ready,
		// which says why nothing moves.
		st := *c.Status.DeepCopy()
		apimeta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: v1beta1.ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonTickFailed,
			Message: clipNote(err.Error()), ObservedGeneration: c.Generation,
		})
		res, werr := r.persist(ctx, c, st, after)
		if werr != nil {
			r.log.Warn("canary Ready condition not written", "canary", req.NamespacedName, "error", werr)
		}
		return reconcile.Result{RequeueAfter: max(after, res.RequeueAfter)}, nil
	}
	if conflict == "" {
		if tracked, err := r.workloads.TrackedConfigs(ctx, dc); err != nil {
			r.log.Warn("canary configs not tracked", "canary", req.NamespacedName, "error", err)
		} else {
			st.TrackedConfigs = tracked
		}
		switch st.Phase {
		case "", v1beta1.PhaseInitializing, v1beta1.PhaseTerminating, v1beta1.PhaseTerminated:
		default:
			// With the tick's status: the session affinity cookie is the
			// revision of the run the tick may have started.
			ticked := dc.DeepCopy()
			ticked.Status = st
			if err := r.router.Sync(ctx, ticked); err != nil {
				r.events.Event(c, canary.EventTypeWarning, "FailedSyncRoute", err.Error())
				after = r.retryAfter
			}
		}
	}
	return r.persist(ctx, c, st, after)
}

// persist writes st as c's status and returns the result of a tick that
// asks to come back after after (never when 0).
func (r *Reconciler) persist(ctx context.Context, c *v1beta1.Canary, st v1beta1.CanaryStatus, after time.Duration) (reconcile.Result, error) {
	moved, err := r.writeStatus(ctx, c, st)
	switch {
	case err != nil:
		return reconcile.Result{}, err
	case moved:
		// Someone else wrote the status since this tick read it: tick
		// again from theirs.
		return reconcile.Result{RequeueAfter: time.Millisecond}, nil
	}
	return reconcile.Result{RequeueAfter: after}, nil
}

// errStatusMoved stops the retries of writeStatus.
var errStatusMoved = errors.New("canary status changed since it was read")

// writeStatus writes st through the status subresource of c, which was read
// with the status the tick started from. On a conflict it reads the Canary
// again and retries if its status is still the one the tick started from
// (the spec or metadata changed); if the status itself changed, it reports
// moved and writes nothing.
func (r *Reconciler) writeStatus(ctx context.Context, c *v1beta1.Canary, st v1beta1.CanaryStatus) (moved bool, err error) {
	if equality.Semantic.DeepEqual(c.Status, st) {
		return false, nil
	}
	base := c.Status
	cur := c.DeepCopy()
	first := true
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if !first {
			cur = &v1beta1.Canary{}
			if err := r.reader.Get(ctx, client.ObjectKeyFromObject(c), cur); err != nil {
				return err
			}
			if !equality.Semantic.DeepEqual(cur.Status, base) {
				return errStatusMoved
			}
		}
		first = false
		cur.Status = *st.DeepCopy()
		return r.client.Status().Update(ctx, cur)
	})
	switch {
	case errors.Is(err, errStatusMoved):
		return true, nil
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("writing the status of canary %s/%s: %w", c.Namespace, c.Name, err)
	}
	return false, nil
}

// syncFinalizer adds Finalizer to a Canary with revertOnDeletion, and
// removes it from one without.
func (r *Reconciler) syncFinalizer(ctx context.Context, c *v1beta1.Canary) error {
	has := controllerutil.ContainsFinalizer(c, Finalizer)
	if c.Spec.RevertOnDeletion == has {
		return nil
	}
	patch := client.MergeFromWithOptions(c.DeepCopy(), client.MergeFromWithOptimisticLock{})
	if c.Spec.RevertOnDeletion {
		controllerutil.AddFinalizer(c, Finalizer)
	} else {
		controllerutil.RemoveFinalizer(c, Finalizer)
	}
	if err := r.client.Patch(ctx, c, patch); err != nil {
		return fmt.Errorf("updating the finalizers of canary %s/%s: %w", c.Namespace, c.Name, err)
	}
	return nil
}

// manualAction returns the manual action c's annotations ask for; nil when
// none.
func manualAction(c *v1beta1.Canary) (*canary.ManualAction, error) {
	kind := strings.ToLower(strings.TrimSpace(c.Annotations[ActionAnnotation]))
	if kind == "" {
		return nil, nil
	}
	raw := strings.TrimSpace(c.Annotations[ActionAtAnnotation])
	at, err := time.Parse(time.RFC3339Nano, raw)
	if err != nil {
		return nil, fmt.Errorf("manual action %q ignored: annotation %s=%q is not an RFC 3339 time such as 2006-01-02T15:04:05Z",
			kind, ActionAtAnnotation, raw)
	}
	return &canary.ManualAction{Kind: canary.ManualKind(kind), RequestedAt: at}, nil
}

// conflict returns the name of the Canary that owns c's target when it is
// not c: of the Canaries of one target, the oldest (by creation, then name)
// owns it.
func (r *Reconciler) conflict(ctx context.Context, c *v1beta1.Canary) (string, error) {
	var list v1beta1.CanaryList
	if err := r.client.List(ctx, &list, client.InNamespace(c.Namespace)); err != nil {
		return "", fmt.Errorf("listing the canaries of namespace %s: %w", c.Namespace, err)
	}
	var owner *v1beta1.Canary
	for i := range list.Items {
		o := &list.Items[i]
		if o.Name == c.Name || o.Spec.TargetRef.Kind != c.Spec.TargetRef.Kind || o.Spec.TargetRef.Name != c.Spec.TargetRef.Name {
			continue
		}
		if older(o, c) && (owner == nil || older(o, owner)) {
			owner = o
		}
	}
	if owner == nil {
		return "", nil
	}
	return owner.Name, nil
}

// older reports whether a was created before b (by name on a tie).
func older(a, b *v1beta1.Canary) bool {
	ta, tb := a.CreationTimestamp.Time, b.CreationTimestamp.Time
	if !ta.Equal(tb) {
		return ta.Before(tb)
	}
	return a.Name < b.Name
}

// ReasonTickFailed is the reason of the Ready condition of a Canary whose
// last tick failed (a workload or the route could not be read or written);
// its message is the error.
const ReasonTickFailed = "TickFailed"

// Field indexes of Canaries.
const (
	indexTarget = "spec.targetRef.name"
	indexRoute  = "spec.service.httpRouteRef.name"
)

// SetupWithManager registers the reconciler with mgr: it reconciles a
// Canary when it changes, when its target Deployment or its user's
// HTTPRoute changes, and when an object it generated changes.
func (r *Reconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &v1beta1.Canary{}, indexTarget, func(o client.Object) []string {
		return []string{o.(*v1beta1.Canary).Spec.TargetRef.Name}
	}); err != nil {
		return fmt.Errorf("indexing canaries by target: %w", err)
	}
	if err := idx.IndexField(ctx, &v1beta1.Canary{}, indexRoute, func(o client.Object) []string {
		if ref := o.(*v1beta1.Canary).Spec.Service.HTTPRouteRef; ref != nil {
			return []string{ref.Name}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("indexing canaries by HTTPRoute: %w", err)
	}
	// The Canary's own status writes do not trigger a reconcile: its
	// spec, annotations (manual actions) and deletion do.
	deletion := predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		return e.ObjectOld.GetDeletionTimestamp().IsZero() != e.ObjectNew.GetDeletionTimestamp().IsZero()
	}}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1beta1.Canary{}, builder.WithPredicates(predicate.Or[client.Object](
			predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}, deletion))).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Owns(&gatewayv1.HTTPRoute{}).
		Watches(&appsv1.Deployment{}, handler.EnqueueRequestsFromMapFunc(r.mapBy(mgr.GetClient(), indexTarget))).
		Watches(&gatewayv1.HTTPRoute{}, handler.EnqueueRequestsFromMapFunc(r.mapBy(mgr.GetClient(), indexRoute))).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.workers, SkipNameValidation: &r.skipName}).
		Named("canary").
		Complete(r)
}

// mapBy returns the map function that finds the Canaries whose field index
// holds an object's name.
func (r *Reconciler) mapBy(c client.Client, index string) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		var list v1beta1.CanaryList
		if err := c.List(ctx, &list, client.InNamespace(o.GetNamespace()), client.MatchingFields{index: o.GetName()}); err != nil {
			r.log.Error("listing the canaries of an object", "index", index, "object", o.GetNamespace()+"/"+o.GetName(), "error", err)
			return nil
		}
		reqs := make([]reconcile.Request, 0, len(list.Items))
		for i := range list.Items {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
		return reqs
	}
}
