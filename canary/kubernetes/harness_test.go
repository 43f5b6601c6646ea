package kubernetes_test

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/sluicehq/sluice/analysis"
	"github.com/sluicehq/sluice/canary"
	ck "github.com/sluicehq/sluice/canary/kubernetes"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
	"github.com/sluicehq/sluice/mesh/telemetry"
)

// interval is the analysis interval of the test canaries.
const interval = time.Minute

// world is one test's namespace on the shared API server, a reconciler
// with a fake clock and metric source, and the stand-ins for what the test
// cluster lacks: the kubelet (Deployment status) and the destination
// service (HTTPRoute parent status).
type world struct {
	t      *testing.T
	ctx    context.Context
	c      client.Client
	ns     string
	r      *ck.Reconciler
	source *fakeSource
	events *recorder

	mu  sync.Mutex
	now time.Time
}

func newWorld(t *testing.T, ctx context.Context, c client.Client, ns string) *world {
	t.Helper()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatalf("creating namespace %s: %v", ns, err)
	}
	w := &world{
		t: t, ctx: ctx, c: c, ns: ns,
		source: &fakeSource{healthy: true},
		events: &recorder{},
		now:    time.Now().UTC().Truncate(time.Second),
	}
	w.r = ck.NewReconciler(ck.Options{
		Client:   c,
		Analyzer: canary.AnalyzerFromProvider(analysis.NewBuiltin(w.source)),
		Recorder: w.events,
		Clock:    w.clock,
	})
	return w
}

func (w *world) clock() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.now
}

func (w *world) advance(d time.Duration) {
	w.mu.Lock()
	w.now = w.now.Add(d)
	w.mu.Unlock()
}

func (w *world) key(name string) types.NamespacedName {
	return types.NamespacedName{Namespace: w.ns, Name: name}
}

// tick reconciles canary name once.
func (w *world) tick(name string) reconcile.Result {
	w.t.Helper()
	res, err := w.r.Reconcile(w.ctx, reconcile.Request{NamespacedName: w.key(name)})
	if err != nil {
		w.t.Fatalf("reconciling canary %s: %v", name, err)
	}
	return res
}

// simulate does what the kubelet and the destination service would: every
// Deployment of the namespace rolls out its current generation, and every
// HTTPRoute is accepted for its current generation by Sluice's GAMMA
// controller.
func (w *world) simulate() {
	w.t.Helper()
	w.rollOut()
	w.acceptRoutes()
}

func (w *world) rollOut() {
	w.t.Helper()
	var list appsv1.DeploymentList
	if err := w.c.List(w.ctx, &list, client.InNamespace(w.ns)); err != nil {
		w.t.Fatalf("listing deployments: %v", err)
	}
	for i := range list.Items {
		w.markReady(&list.Items[i])
	}
}

func (w *world) markReady(d *appsv1.Deployment) {
	w.t.Helper()
	n := int32(1)
	if d.Spec.Replicas != nil {
		n = *d.Spec.Replicas
	}
	st := appsv1.DeploymentStatus{
		ObservedGeneration: d.Generation,
		Replicas:           n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n,
	}
	if equality.Semantic.DeepEqual(d.Status, st) {
		return
	}
	d.Status = st
	if err := w.c.Status().Update(w.ctx, d); err != nil {
		w.t.Fatalf("writing the status of deployment %s: %v", d.Name, err)
	}
}

func (w *world) acceptRoutes() {
	w.t.Helper()
	var list gatewayv1.HTTPRouteList
	if err := w.c.List(w.ctx, &list, client.InNamespace(w.ns)); err != nil {
		w.t.Fatalf("listing routes: %v", err)
	}
	for i := range list.Items {
		w.acceptRoute(&list.Items[i])
	}
}

// acceptRoute writes the parent status Sluice's destination service writes
// for a route it accepted.
func (w *world) acceptRoute(route *gatewayv1.HTTPRoute) {
	w.t.Helper()
	var parents []gatewayv1.RouteParentStatus
	for _, ref := range route.Spec.ParentRefs {
		parents = append(parents, gatewayv1.RouteParentStatus{
			ParentRef:      ref,
			ControllerName: ck.DefaultControllerName,
			Conditions: []metav1.Condition{{
				Type: string(gatewayv1.RouteConditionAccepted), Status: metav1.ConditionTrue,
				Reason: string(gatewayv1.RouteReasonAccepted), Message: "accepted by the test",
				ObservedGeneration: route.Generation, LastTransitionTime: metav1.NewTime(w.clock()),
			}},
		})
	}
	if len(route.Status.Parents) > 0 && len(route.Status.Parents[0].Conditions) > 0 &&
		route.Status.Parents[0].Conditions[0].ObservedGeneration == route.Generation {
		return
	}
	route.Status.Parents = parents
	if err := w.c.Status().Update(w.ctx, route); err != nil {
		w.t.Fatalf("writing the status of route %s: %v", route.Name, err)
	}
}

// until ticks canary name, simulating the cluster after each tick, until
// cond holds; the clock does not move.
func (w *world) until(name, what string, cond func(*v1beta1.Canary) bool) *v1beta1.Canary {
	w.t.Helper()
	for range 12 {
		w.tick(name)
		w.simulate()
		if c := w.canary(name); cond(c) {
			return c
		}
	}
	c := w.canary(name)
	w.t.Fatalf("canary %s never reached %s: phase %s, message %q", name, what, c.Status.Phase, c.Status.Message)
	return nil
}

func phaseIs(p v1beta1.CanaryPhase) func(*v1beta1.Canary) bool {
	return func(c *v1beta1.Canary) bool { return c.Status.Phase == p }
}

func (w *world) get(name string, obj client.Object) {
	w.t.Helper()
	if err := w.c.Get(w.ctx, w.key(name), obj); err != nil {
		w.t.Fatalf("reading %T %s: %v", obj, name, err)
	}
}

// gone reports whether the object name of obj's kind does not exist.
func (w *world) gone(name string, obj client.Object) bool {
	w.t.Helper()
	err := w.c.Get(w.ctx, w.key(name), obj)
	if err != nil && !apierrors.IsNotFound(err) {
		w.t.Fatalf("reading %T %s: %v", obj, name, err)
	}
	return apierrors.IsNotFound(err)
}

func (w *world) canary(name string) *v1beta1.Canary {
	w.t.Helper()
	c := &v1beta1.Canary{}
	w.get(name, c)
	return c
}

func (w *world) deployment(name string) *appsv1.Deployment {
	w.t.Helper()
	d := &appsv1.Deployment{}
	w.get(name, d)
	return d
}

func (w *world) service(name string) *corev1.Service {
	w.t.Helper()
	s := &corev1.Service{}
	w.get(name, s)
	return s
}

func (w *world) route(name string) *gatewayv1.HTTPRoute {
	w.t.Helper()
	r := &gatewayv1.HTTPRoute{}
	w.get(name, r)
	return r
}

// weights returns the weights of the backends of rule i of route name.
func (w *world) weights(name string, rule int) map[string]int32 {
	w.t.Helper()
	r := w.route(name)
	if rule >= len(r.Spec.Rules) {
		w.t.Fatalf("route %s has %d rules, no rule %d", name, len(r.Spec.Rules), rule)
	}
	out := map[string]int32{}
	for _, b := range r.Spec.Rules[rule].BackendRefs {
		wt := int32(1)
		if b.Weight != nil {
			wt = *b.Weight
		}
		out[string(b.Name)] = wt
	}
	return out
}

// update changes obj (read fresh) with f and writes it.
func update[T client.Object](w *world, name string, obj T, f func(T)) {
	w.t.Helper()
	w.get(name, obj)
	f(obj)
	if err := w.c.Update(w.ctx, obj); err != nil {
		w.t.Fatalf("updating %T %s: %v", obj, name, err)
	}
}

func (w *world) create(obj client.Object) {
	w.t.Helper()
	obj.SetNamespace(w.ns)
	if err := w.c.Create(w.ctx, obj); err != nil {
		w.t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

// createTarget creates the Deployment name (app=name, 2 replicas) whose
// container takes its environment from the ConfigMap name-config and
// mounts the Secret name-token, which it creates too.
func (w *world) createTarget(name string, extraLabels map[string]string) {
	w.t.Helper()
	w.create(&corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-config"},
		Data:       map[string]string{"GREETING": "hello"},
	})
	w.create(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-token"},
		Data:       map[string][]byte{"token": []byte("s3cret")},
	})
	labels := map[string]string{"app": name}
	for k, v := range extraLabels {
		labels[k] = v
	}
	w.create(&appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name, "app.kubernetes.io/instance": "demo"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(int32(2)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name:         "app",
					Image:        "ghcr.io/example/podinfo:1.0.0",
					Ports:        []corev1.ContainerPort{{Name: "http", ContainerPort: 9898}},
					EnvFrom:      []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: name + "-config"}}}},
					VolumeMounts: []corev1.VolumeMount{{Name: "token", MountPath: "/var/run/token"}},
				}},
					Volumes: []corev1.Volume{{Name: "token", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: name + "-token"}}}},
				},
			},
		},
	})
}

// setImage changes the target's image: a new revision.
func (w *world) setImage(name, image string) {
	w.t.Helper()
	update(w, name, &appsv1.Deployment{}, func(d *appsv1.Deployment) {
		d.Spec.Template.Spec.Containers[0].Image = image
	})
}

// newCanary is a canary release of target in 25% steps up to 50%, judged
// by the success rate, rolled back after two failed checks.
func newCanary(name, target string) *v1beta1.Canary {
	return &v1beta1.Canary{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1beta1.CanarySpec{
			TargetRef: v1beta1.LocalObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: target},
			Service:   v1beta1.CanaryService{Port: 9898},
			Analysis: &v1beta1.CanaryAnalysis{
				Interval:   interval.String(),
				Threshold:  2,
				StepWeight: 25,
				MaxWeight:  50,
				Metrics: []v1beta1.CanaryMetric{{
					Name:           analysis.RequestSuccessRate,
					Interval:       "1m",
					ThresholdRange: &v1beta1.CanaryThresholdRange{Min: v1beta1.NewNumber(99)},
				}},
			},
		},
	}
}

// fakeSource is the mesh telemetry: every workload answers 1000 requests,
// all successful when healthy, 80% otherwise. It records the selectors.
type fakeSource struct {
	mu      sync.Mutex
	healthy bool
	asked   []telemetry.Selector
}

func (s *fakeSource) setHealthy(h bool) {
	s.mu.Lock()
	s.healthy = h
	s.mu.Unlock()
}

func (s *fakeSource) selectors() []telemetry.Selector {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.asked)
}

func (s *fakeSource) Window(_ context.Context, sel telemetry.Selector, d time.Duration) (telemetry.Window, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked = append(s.asked, sel)
	ok := 1000.0
	if !s.healthy {
		ok = 800
	}
	return telemetry.Window{
		Requests: 1000, Successes: ok, Failures: 1000 - ok, Duration: d, Pods: 2,
		Buckets: []telemetry.Bucket{{LE: 10, Count: 900}, {LE: 100, Count: 1000}, {LE: math.Inf(1), Count: 1000}},
	}, nil
}

// recorder collects the Events recorded.
type recorder struct {
	mu     sync.Mutex
	events []string // "Type Reason: note"
}

func (r *recorder) Eventf(_ runtime.Object, _ runtime.Object, eventtype, reason, action, note string, args ...interface{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, fmt.Sprintf("%s %s: %s", eventtype, reason, fmt.Sprintf(note, args...)))
}

// has reports whether an event whose text contains s was recorded.
func (r *recorder) has(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if strings.Contains(e, s) {
			return true
		}
	}
	return false
}

func (r *recorder) count(s string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if strings.Contains(e, s) {
			n++
		}
	}
	return n
}
