package kubernetes_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/sluicehq/sluice/canary"
	ck "github.com/sluicehq/sluice/canary/kubernetes"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
	"github.com/sluicehq/sluice/routing"
	"github.com/sluicehq/sluice/test/envtest"
)

// TestController runs the reconciler against a real API server (envtest):
// one server for every case, one namespace per case.
func TestController(t *testing.T) {
	_, c := envtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // a failure guard
	defer cancel()

	for _, tc := range []struct {
		name, ns string
		run      func(t *testing.T, w *world)
	}{
		{"initializes, steps its weights and promotes", "promote", testPromote},
		{"rolls back when the checks fail", "rollback", testRollback},
		{"applies a manual action once", "manual", testManualOnce},
		{"refuses a second canary of one target", "conflict", testConflict},
		{"reverts on deletion", "revert", testRevertOnDeletion},
		{"changes only the weights of the user's route", "user-route", testUserRoute},
		{"copies the autoscaler for the primary", "autoscaler", testAutoscaler},
		{"router waits for acceptance", "router", testRouterWaits},
		{"mirrors traffic for blue/green", "blue-green", testBlueGreen},
		{"routes matching requests for A/B testing", "ab-testing", testABTesting},
		{"rewrites its route when the spec changes", "route-sync", testRouteSync},
		{"says why it cannot clone a target", "no-selector-label", testNoSelectorLabel},
		{"sticks clients to the canary with a cookie", "affinity", testSessionAffinity},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, newWorld(t, ctx, c, tc.ns))
		})
	}
}

// initialize creates the target podinfo and canary name for it, and ticks
// until the canary is initialized.
func initialize(t *testing.T, w *world, cn *v1beta1.Canary) *v1beta1.Canary {
	t.Helper()
	w.create(cn)
	return w.until(cn.Name, "Initialized", phaseIs(v1beta1.PhaseInitialized))
}

func testPromote(t *testing.T, w *world) {
	w.createTarget("podinfo", nil)
	cn := initialize(t, w, newCanary("podinfo", "podinfo"))

	// The primary: a clone with its own label, selector and config copy.
	p := w.deployment("podinfo-primary")
	if got := p.Spec.Selector.MatchLabels; !maps.Equal(got, map[string]string{"app": "podinfo-primary"}) {
		t.Errorf("primary selector = %v, want app=podinfo-primary", got)
	}
	if got := p.Spec.Template.Labels["app"]; got != "podinfo-primary" {
		t.Errorf("primary pod label app = %q, want podinfo-primary", got)
	}
	if _, ok := p.Labels["app.kubernetes.io/instance"]; ok {
		t.Errorf("primary copied the target's tracking label: %v", p.Labels)
	}
	if got := *p.Spec.Replicas; got != 2 {
		t.Errorf("primary replicas = %d, want the target's 2", got)
	}
	if got := p.Spec.Template.Spec.Containers[0].EnvFrom[0].ConfigMapRef.Name; got != "podinfo-config-primary" {
		t.Errorf("primary envFrom ConfigMap = %q, want podinfo-config-primary", got)
	}
	if !metav1.IsControlledBy(p, cn) {
		t.Errorf("primary is not controlled by the canary: %v", p.OwnerReferences)
	}
	rev0 := cn.Status.LastPromotedRevision
	if rev0 == "" || p.Spec.Template.Annotations[ck.RevisionAnnotation] != rev0 {
		t.Errorf("primary revision annotation = %q, status lastPromotedRevision = %q; want them equal and set",
			p.Spec.Template.Annotations[ck.RevisionAnnotation], rev0)
	}
	cm := &corev1.ConfigMap{}
	w.get("podinfo-config-primary", cm)
	if cm.Data["GREETING"] != "hello" {
		t.Errorf("ConfigMap copy data = %v", cm.Data)
	}
	sec := &corev1.Secret{}
	w.get("podinfo-token-primary", sec)
	if string(sec.Data["token"]) != "s3cret" || !metav1.IsControlledBy(sec, cn) {
		t.Errorf("Secret copy: data %v, owners %v", sec.Data, sec.OwnerReferences)
	}
	if got := p.Spec.Template.Spec.Volumes[0].Secret.SecretName; got != "podinfo-token-primary" {
		t.Errorf("primary secret volume = %q, want podinfo-token-primary", got)
	}
	if got := slices.Sorted(maps.Keys(cn.Status.TrackedConfigs)); !slices.Equal(got, []string{"configmap/podinfo-config", "secret/podinfo-token"}) {
		t.Errorf("status.trackedConfigs = %v, want configmap/podinfo-config and secret/podinfo-token", cn.Status.TrackedConfigs)
	}

	// The three Services.
	for name, sel := range map[string]string{"podinfo": "podinfo-primary", "podinfo-primary": "podinfo-primary", "podinfo-canary": "podinfo"} {
		s := w.service(name)
		if got := s.Spec.Selector; !maps.Equal(got, map[string]string{"app": sel}) {
			t.Errorf("Service %s selector = %v, want app=%s", name, got, sel)
		}
		if len(s.Spec.Ports) != 1 || s.Spec.Ports[0].Port != 9898 || s.Spec.Ports[0].Name != "http" {
			t.Errorf("Service %s ports = %+v, want http 9898", name, s.Spec.Ports)
		}
	}

	// The route: parented on the apex Service, all traffic on the primary.
	r := w.route("podinfo")
	if len(r.Spec.ParentRefs) != 1 || *r.Spec.ParentRefs[0].Kind != "Service" || *r.Spec.ParentRefs[0].Group != "" ||
		r.Spec.ParentRefs[0].Name != "podinfo" || *r.Spec.ParentRefs[0].Port != 9898 {
		t.Errorf("route parentRefs = %+v, want the Service podinfo port 9898", r.Spec.ParentRefs)
	}
	if got := w.weights("podinfo", 0); !maps.Equal(got, map[string]int32{"podinfo-primary": 100, "podinfo-canary": 0}) {
		t.Errorf("route weights = %v, want 100/0", got)
	}

	// The target is scaled to zero, its replicas recorded.
	tgt := w.deployment("podinfo")
	if *tgt.Spec.Replicas != 0 || tgt.Annotations[ck.ReplicasAnnotation] != "2" {
		t.Errorf("target replicas = %d, annotation %q; want 0 and 2", *tgt.Spec.Replicas, tgt.Annotations[ck.ReplicasAnnotation])
	}
	if !condition(cn, v1beta1.ConditionReady, metav1.ConditionTrue) {
		t.Errorf("Ready condition = %+v, want True", cn.Status.Conditions)
	}
	if !w.events.has("Normal Initialized") {
		t.Errorf("no Initialized event in %v", w.events.events)
	}

	// A new revision: the target scales up and the weights step.
	w.setImage("podinfo", "ghcr.io/example/podinfo:2.0.0")
	cn = w.until("podinfo", "Progressing", phaseIs(v1beta1.PhaseProgressing))
	rev1 := cn.Status.ObservedRevision
	if rev1 == rev0 || rev1 == "" {
		t.Fatalf("observed revision %q after the image change, was %q", rev1, rev0)
	}
	tgt = w.deployment("podinfo")
	if *tgt.Spec.Replicas != 2 || tgt.Spec.Template.Annotations[ck.RevisionAnnotation] != rev1 {
		t.Errorf("canary replicas = %d, revision annotation %q; want 2 and %s", *tgt.Spec.Replicas, tgt.Spec.Template.Annotations[ck.RevisionAnnotation], rev1)
	}

	var seen []int32
	record := func() {
		wt := w.weights("podinfo", 0)["podinfo-canary"]
		if len(seen) == 0 || seen[len(seen)-1] != wt {
			seen = append(seen, wt)
		}
	}
	record()
	heldOnce := false
	for i := 0; ; i++ {
		if i == 20 {
			t.Fatalf("not promoted after %d ticks: phase %s, message %q, weights %v", i, cn.Status.Phase, cn.Status.Message, seen)
		}
		w.tick("podinfo")
		record()
		if cn = w.canary("podinfo"); cn.Status.Phase == v1beta1.PhaseSucceeded {
			break
		}
		if seen[len(seen)-1] == 25 && !heldOnce {
			// The destination has not accepted the 25% step yet: the next
			// step waits for it, however long.
			heldOnce = true
			w.rollOut()
			w.advance(2 * interval)
			w.tick("podinfo")
			record()
			cn = w.canary("podinfo")
			if got := w.weights("podinfo", 0)["podinfo-canary"]; got != 25 || cn.Status.CanaryWeight != 25 {
				t.Fatalf("route not accepted, yet canary weight %d (status %d), want 25", got, cn.Status.CanaryWeight)
			}
			if !strings.Contains(cn.Status.Message, "accepted") {
				t.Errorf("message while the route is not accepted = %q, want it to say so", cn.Status.Message)
			}
		}
		w.simulate()
		w.advance(interval)
	}
	if want := []int32{0, 25, 50, 0}; !slices.Equal(seen, want) {
		t.Errorf("canary weights over the run = %v, want %v", seen, want)
	}

	// Promoted: the primary runs the target's template, the target is
	// scaled to zero, the route is back at 100/0.
	if cn.Status.LastPromotedRevision != rev1 || cn.Status.ObservedRevision != rev1 {
		t.Errorf("status revisions: promoted %q, observed %q; want %s", cn.Status.LastPromotedRevision, cn.Status.ObservedRevision, rev1)
	}
	p = w.deployment("podinfo-primary")
	if got := p.Spec.Template.Spec.Containers[0].Image; got != "ghcr.io/example/podinfo:2.0.0" {
		t.Errorf("primary image = %q, want the promoted 2.0.0", got)
	}
	if p.Spec.Template.Labels["app"] != "podinfo-primary" || p.Spec.Template.Annotations[ck.RevisionAnnotation] != rev1 {
		t.Errorf("primary template labels %v, annotations %v", p.Spec.Template.Labels, p.Spec.Template.Annotations)
	}
	if got := *w.deployment("podinfo").Spec.Replicas; got != 0 {
		t.Errorf("target replicas after promotion = %d, want 0", got)
	}
	if got := w.weights("podinfo", 0); !maps.Equal(got, map[string]int32{"podinfo-primary": 100, "podinfo-canary": 0}) {
		t.Errorf("route weights after promotion = %v, want 100/0", got)
	}
	// The checks read the canary's metrics at the revision under analysis.
	sels := w.source.selectors()
	if len(sels) == 0 {
		t.Fatal("the analysis never read the telemetry")
	}
	for _, s := range sels {
		if s.Namespace != w.ns || s.Workload != "podinfo" || s.Revision != rev1 {
			t.Errorf("telemetry asked for %+v, want workload podinfo at revision %s in %s", s, rev1, w.ns)
		}
	}
	for _, e := range []string{"Normal Advanced", "Normal Promoting", "Normal Succeeded"} {
		if !w.events.has(e) {
			t.Errorf("no %q event in %v", e, w.events.events)
		}
	}
}

func testRollback(t *testing.T, w *world) {
	w.createTarget("podinfo", nil)
	cn := initialize(t, w, newCanary("podinfo", "podinfo"))
	rev0 := cn.Status.LastPromotedRevision

	// A changed ConfigMap is a new revision; this one fails its checks.
	w.source.setHealthy(false)
	update(w, "podinfo-config", &corev1.ConfigMap{}, func(cm *corev1.ConfigMap) { cm.Data["GREETING"] = "bonjour" })
	cn = w.until("podinfo", "Progressing", phaseIs(v1beta1.PhaseProgressing))
	if cn.Status.ObservedRevision == rev0 {
		t.Fatalf("a changed ConfigMap did not change the revision (%s)", rev0)
	}
	for i := 0; cn.Status.Phase != v1beta1.PhaseFailed; i++ {
		if i == 20 {
			t.Fatalf("not rolled back after %d ticks: phase %s, message %q", i, cn.Status.Phase, cn.Status.Message)
		}
		w.tick("podinfo")
		w.simulate()
		w.advance(interval)
		cn = w.canary("podinfo")
	}
	if !strings.Contains(cn.Status.Message, "request-success-rate") || !strings.Contains(cn.Status.Message, "99") {
		t.Errorf("failed message = %q, want it to name the check and its threshold", cn.Status.Message)
	}
	if cn.Status.FailedChecks != 2 {
		t.Errorf("failedChecks = %d, want the threshold 2", cn.Status.FailedChecks)
	}
	if got := w.weights("podinfo", 0); !maps.Equal(got, map[string]int32{"podinfo-primary": 100, "podinfo-canary": 0}) {
		t.Errorf("route weights after the rollback = %v, want 100/0", got)
	}
	if got := *w.deployment("podinfo").Spec.Replicas; got != 0 {
		t.Errorf("target replicas after the rollback = %d, want 0", got)
	}
	// The primary still runs the old configuration.
	cm := &corev1.ConfigMap{}
	w.get("podinfo-config-primary", cm)
	if cm.Data["GREETING"] != "hello" {
		t.Errorf("the primary's ConfigMap copy changed to %v during a failed run", cm.Data)
	}
	if got := w.deployment("podinfo-primary").Spec.Template.Annotations[ck.RevisionAnnotation]; got != rev0 {
		t.Errorf("primary revision = %q, want still %s", got, rev0)
	}
	if !w.events.has("Warning RolledBack") {
		t.Errorf("no RolledBack warning in %v", w.events.events)
	}
}

func testManualOnce(t *testing.T, w *world) {
	w.createTarget("podinfo", nil)
	initialize(t, w, newCanary("podinfo", "podinfo"))

	// The checks fail, so only the user can promote this revision.
	w.source.setHealthy(false)
	w.setImage("podinfo", "ghcr.io/example/podinfo:2.0.0")
	w.until("podinfo", "Progressing", phaseIs(v1beta1.PhaseProgressing))
	w.until("podinfo", "the first step", func(c *v1beta1.Canary) bool { return c.Status.CanaryWeight == 25 })
	at := w.clock().Format(time.RFC3339)
	update(w, "podinfo", &v1beta1.Canary{}, func(c *v1beta1.Canary) {
		c.Annotations = map[string]string{ck.ActionAnnotation: "promote", ck.ActionAtAnnotation: at}
	})
	w.until("podinfo", "Promoting", phaseIs(v1beta1.PhasePromoting))
	cn := w.until("podinfo", "Succeeded", phaseIs(v1beta1.PhaseSucceeded))
	if cn.Status.LastManualAction != "promote" {
		t.Errorf("lastManualAction = %q, want promote", cn.Status.LastManualAction)
	}

	// The annotation stays; the next revision is not promoted by it.
	w.setImage("podinfo", "ghcr.io/example/podinfo:3.0.0")
	cn = w.until("podinfo", "Progressing", phaseIs(v1beta1.PhaseProgressing))
	for i := 0; cn.Status.Phase == v1beta1.PhaseProgressing; i++ {
		if i == 20 {
			t.Fatalf("still progressing after %d ticks", i)
		}
		w.tick("podinfo")
		w.simulate()
		w.advance(interval)
		cn = w.canary("podinfo")
	}
	if cn.Status.Phase != v1beta1.PhaseFailed {
		t.Errorf("the second revision ended %s (%q), want Failed: the old promote was applied again", cn.Status.Phase, cn.Status.Message)
	}
	if n := w.events.count("Normal Promoting"); n != 1 {
		t.Errorf("%d Promoting events, want 1: the user's promote of the first revision", n)
	}
}

func testConflict(t *testing.T, w *world) {
	w.createTarget("podinfo", nil)
	initialize(t, w, newCanary("podinfo", "podinfo"))

	second := newCanary("podinfo-too", "podinfo")
	second.Spec.Service.Name = "other"
	w.create(second)
	w.tick("podinfo-too")
	w.simulate()
	w.tick("podinfo-too")
	cn := w.canary("podinfo-too")
	ready := findCondition(cn, v1beta1.ConditionReady)
	if ready == nil || ready.Status != metav1.ConditionFalse || !strings.Contains(ready.Message, `canary podinfo`) {
		t.Errorf("second canary's Ready condition = %+v, want False naming canary podinfo", ready)
	}
	if !w.gone("other", &corev1.Service{}) || !w.gone("other", &gatewayv1.HTTPRoute{}) {
		t.Error("the refused canary created its Service or route")
	}
	first := w.until("podinfo", "still initialized", phaseIs(v1beta1.PhaseInitialized))
	if !condition(first, v1beta1.ConditionReady, metav1.ConditionTrue) {
		t.Errorf("the first canary's Ready condition = %+v, want True", first.Status.Conditions)
	}
}

func testRevertOnDeletion(t *testing.T, w *world) {
	w.createTarget("podinfo", map[string]string{"tier": "web"})
	// The user's Service, which Sluice takes over as the apex.
	orig := map[string]string{"app": "podinfo", "tier": "web"}
	w.create(&corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "podinfo"},
		Spec:       corev1.ServiceSpec{Selector: orig, Ports: []corev1.ServicePort{{Name: "http", Port: 9898}}},
	})
	cn := newCanary("podinfo", "podinfo")
	cn.Spec.RevertOnDeletion = true
	cn = initialize(t, w, cn)
	if !slices.Contains(cn.Finalizers, ck.Finalizer) {
		t.Fatalf("finalizers = %v, want %s", cn.Finalizers, ck.Finalizer)
	}
	if got := w.service("podinfo").Spec.Selector; !maps.Equal(got, map[string]string{"app": "podinfo-primary"}) {
		t.Fatalf("apex selector after initialization = %v", got)
	}

	if err := w.c.Delete(w.ctx, cn); err != nil {
		t.Fatalf("deleting the canary: %v", err)
	}
	w.tick("podinfo")
	tgt := w.deployment("podinfo")
	if *tgt.Spec.Replicas != 2 {
		t.Errorf("target replicas while reverting = %d, want its 2 back", *tgt.Spec.Replicas)
	}
	if _, ok := tgt.Annotations[ck.ReplicasAnnotation]; ok {
		t.Errorf("target still has %s", ck.ReplicasAnnotation)
	}
	cn = w.canary("podinfo") // still there: the target is not ready yet
	if cn.Status.Phase != v1beta1.PhaseTerminating {
		t.Errorf("phase while reverting = %s (%q), want Terminating", cn.Status.Phase, cn.Status.Message)
	}
	if got := w.service("podinfo").Spec.Selector; !maps.Equal(got, map[string]string{"app": "podinfo-primary"}) {
		t.Errorf("apex selector changed before the target was ready: %v", got)
	}

	w.simulate()
	w.tick("podinfo")
	if !w.gone("podinfo", &v1beta1.Canary{}) {
		t.Fatalf("the canary is still there: %+v", w.canary("podinfo").Status)
	}
	apex := w.service("podinfo")
	if !maps.Equal(apex.Spec.Selector, orig) {
		t.Errorf("apex selector = %v, want the original %v", apex.Spec.Selector, orig)
	}
	if _, ok := apex.Annotations[ck.OriginalSelectorAnnotation]; ok || len(apex.OwnerReferences) > 0 {
		t.Errorf("apex still marked by Sluice: annotations %v, owners %v", apex.Annotations, apex.OwnerReferences)
	}
	for name, obj := range map[string]client.Object{
		"podinfo-primary":        &appsv1.Deployment{},
		"podinfo-config-primary": &corev1.ConfigMap{},
		"podinfo-token-primary":  &corev1.Secret{},
		"podinfo-canary":         &corev1.Service{},
		"podinfo":                &gatewayv1.HTTPRoute{},
	} {
		if !w.gone(name, obj) {
			t.Errorf("%T %s is still there after the revert", obj, name)
		}
	}
	if !w.gone("podinfo-primary", &corev1.Service{}) {
		t.Error("Service podinfo-primary is still there after the revert")
	}
	if !w.events.has("Normal Reverted") {
		t.Errorf("no Reverted event in %v", w.events.events)
	}
}

func testUserRoute(t *testing.T, w *world) {
	w.createTarget("podinfo", nil)
	port := gatewayv1.PortNumber(9898)
	backend := func(name string, weight int32) gatewayv1.HTTPBackendRef {
		return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{
			BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name), Port: &port},
			Weight:                 &weight,
		}}
	}
	w.create(&gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: "podinfo-route"},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{
				Group: new(gatewayv1.Group("")), Kind: new(gatewayv1.Kind("Service")), Name: "podinfo", Port: &port,
			}}},
			Rules: []gatewayv1.HTTPRouteRule{
				{ // the user's pin: admin requests always to the primary
					Matches:     []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: new(gatewayv1.PathMatchPathPrefix), Value: new("/admin")}}},
					BackendRefs: []gatewayv1.HTTPBackendRef{backend("podinfo-primary", 1)},
				},
				{BackendRefs: []gatewayv1.HTTPBackendRef{backend("podinfo-primary", 100), backend("podinfo-canary", 0)}},
			},
		},
	})
	cn := newCanary("podinfo", "podinfo")
	cn.Spec.Service.HTTPRouteRef = &v1beta1.LocalRouteReference{Name: "podinfo-route"}
	initialize(t, w, cn)
	if !w.gone("podinfo", &gatewayv1.HTTPRoute{}) {
		t.Error("Sluice generated a route besides the user's")
	}
	w.setImage("podinfo", "ghcr.io/example/podinfo:2.0.0")
	w.until("podinfo", "Progressing", phaseIs(v1beta1.PhaseProgressing))
	w.until("podinfo", "the first step", func(c *v1beta1.Canary) bool { return c.Status.CanaryWeight == 25 })
	if got := w.weights("podinfo-route", 1); !maps.Equal(got, map[string]int32{"podinfo-primary": 75, "podinfo-canary": 25}) {
		t.Errorf("split rule weights = %v, want 75/25", got)
	}
	r := w.route("podinfo-route")
	if len(r.Spec.Rules) != 2 || *r.Spec.Rules[0].Matches[0].Path.Value != "/admin" {
		t.Fatalf("the user's rules changed: %+v", r.Spec.Rules)
	}
	if got := w.weights("podinfo-route", 0); !maps.Equal(got, map[string]int32{"podinfo-primary": 1}) {
		t.Errorf("the user's pinned rule = %v, want podinfo-primary only", got)
	}
}

func testAutoscaler(t *testing.T, w *world) {
	w.createTarget("podinfo", nil)
	w.create(&autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "podinfo"},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "podinfo"},
			MinReplicas:    new(int32(2)),
			MaxReplicas:    4,
		},
	})
	cn := newCanary("podinfo", "podinfo")
	cn.Spec.AutoscalerRef = &v1beta1.AutoscalerReference{
		APIVersion: "autoscaling/v2", Kind: "HorizontalPodAutoscaler", Name: "podinfo",
		PrimaryScalerReplicas: &v1beta1.ScalerReplicas{MinReplicas: new(int32(3))},
	}
	initialize(t, w, cn)
	hpa := &autoscalingv2.HorizontalPodAutoscaler{}
	w.get("podinfo-primary", hpa)
	if hpa.Spec.ScaleTargetRef.Name != "podinfo-primary" || *hpa.Spec.MinReplicas != 3 || hpa.Spec.MaxReplicas != 4 {
		t.Errorf("primary autoscaler = %+v, want podinfo-primary, 3 to 4 replicas", hpa.Spec)
	}
	// A run scales the canary to the autoscaler's minimum.
	w.setImage("podinfo", "ghcr.io/example/podinfo:2.0.0")
	w.until("podinfo", "Progressing", phaseIs(v1beta1.PhaseProgressing))
	if got := *w.deployment("podinfo").Spec.Replicas; got != 2 {
		t.Errorf("canary replicas = %d, want the autoscaler's minimum 2", got)
	}
}

func findCondition(c *v1beta1.Canary, typ string) *metav1.Condition {
	for i := range c.Status.Conditions {
		if c.Status.Conditions[i].Type == typ {
			return &c.Status.Conditions[i]
		}
	}
	return nil
}

func condition(c *v1beta1.Canary, typ string, status metav1.ConditionStatus) bool {
	cond := findCondition(c, typ)
	return cond != nil && cond.Status == status
}

// testRouterWaits checks the Router alone: a weight that exposes the
// canary more waits for the route's acceptance, one that sends traffic
// back to the primary does not.
func testRouterWaits(t *testing.T, w *world) {
	ctx, c := w.ctx, w.c
	cn := newCanary("podinfo", "podinfo")
	w.create(cn)
	cn = w.canary("podinfo")
	v1beta1.SetDefaults(cn)
	r := &ck.Router{Client: c}

	if err := r.EnsureRoute(ctx, cn); err != nil {
		t.Fatalf("EnsureRoute: %v", err)
	}
	obs, err := r.Observe(ctx, cn)
	if err != nil || !obs.Exists || obs.Accepted || obs.PrimaryWeight != 100 || obs.CanaryWeight != 0 {
		t.Fatalf("new route observed as %+v, %v; want existing, not accepted, 100/0", obs, err)
	}
	err = r.SetWeights(ctx, cn, canary.SetWeights{Primary: 80, Canary: 20})
	if !errors.Is(err, ck.ErrNotAccepted) {
		t.Fatalf("SetWeights 80/20 on a route not accepted: %v, want ErrNotAccepted", err)
	}
	if got := w.weights("podinfo", 0)["podinfo-canary"]; got != 0 {
		t.Fatalf("canary weight %d written before acceptance", got)
	}

	w.acceptRoutes()
	if obs, _ = r.Observe(ctx, cn); !obs.Accepted {
		t.Fatalf("accepted route observed as %+v", obs)
	}
	if err := r.SetWeights(ctx, cn, canary.SetWeights{Primary: 80, Canary: 20}); err != nil {
		t.Fatalf("SetWeights 80/20 on an accepted route: %v", err)
	}
	// The new generation is not accepted: more exposure waits, less does not.
	if obs, _ = r.Observe(ctx, cn); obs.Accepted || obs.CanaryWeight != 20 {
		t.Fatalf("route after 80/20 observed as %+v, want 20%% and not accepted", obs)
	}
	if err := r.SetWeights(ctx, cn, canary.SetWeights{Primary: 60, Canary: 40}); !errors.Is(err, ck.ErrNotAccepted) {
		t.Errorf("SetWeights 60/40 on generation not accepted: %v, want ErrNotAccepted", err)
	}
	if err := r.SetWeights(ctx, cn, canary.SetWeights{Primary: 100}); err != nil {
		t.Errorf("SetWeights 100/0 (a rollback) on a route not accepted: %v, want it written", err)
	}
	if got := w.weights("podinfo", 0)["podinfo-canary"]; got != 0 {
		t.Errorf("canary weight after the rollback = %d, want 0", got)
	}

	// Accepted by another controller, or for an older generation, is not
	// accepted.
	route := w.route("podinfo")
	route.Status.Parents[0].ControllerName = "example.com/other"
	route.Status.Parents[0].Conditions[0].ObservedGeneration = route.Generation
	if err := c.Status().Update(ctx, route); err != nil {
		t.Fatal(err)
	}
	if obs, _ = r.Observe(ctx, cn); obs.Accepted {
		t.Errorf("route accepted by another controller observed as accepted")
	}
}

// release rolls out image on target podinfo with healthy checks until the
// canary succeeds, calling each after every tick with the route Sluice
// generated.
func release(t *testing.T, w *world, image string, each func(*v1beta1.Canary, *gatewayv1.HTTPRoute)) {
	t.Helper()
	w.setImage("podinfo", image)
	w.until("podinfo", "Progressing", phaseIs(v1beta1.PhaseProgressing))
	for i := 0; ; i++ {
		w.tick("podinfo")
		cn := w.canary("podinfo")
		each(cn, w.route("podinfo"))
		if cn.Status.Phase == v1beta1.PhaseSucceeded {
			return
		}
		if i == 20 {
			t.Fatalf("not promoted after %d ticks: phase %s, message %q", i, cn.Status.Phase, cn.Status.Message)
		}
		w.simulate()
		w.advance(interval)
	}
}

func testBlueGreen(t *testing.T, w *world) {
	w.createTarget("podinfo", nil)
	cn := newCanary("podinfo", "podinfo")
	a := cn.Spec.Analysis
	a.StepWeight, a.MaxWeight, a.Iterations, a.Mirror, a.MirrorWeight = 0, 0, 2, true, 50
	initialize(t, w, cn)
	mirrored, switched := false, false
	release(t, w, "ghcr.io/example/podinfo:2.0.0", func(cn *v1beta1.Canary, r *gatewayv1.HTTPRoute) {
		wt := w.weights("podinfo", 0)
		var mirror *gatewayv1.HTTPRequestMirrorFilter
		for _, f := range r.Spec.Rules[0].Filters {
			if f.Type == gatewayv1.HTTPRouteFilterRequestMirror {
				mirror = f.RequestMirror
			}
		}
		switch {
		case mirror != nil:
			mirrored = true
			if mirror.BackendRef.Name != "podinfo-canary" || mirror.Percent == nil || *mirror.Percent != 50 || wt["podinfo-canary"] != 0 {
				t.Errorf("mirroring route: mirror %+v, weights %v; want 50%% to podinfo-canary and no weight", mirror, wt)
			}
		case wt["podinfo-canary"] == 100:
			switched = true
		}
	})
	if !mirrored || !switched {
		t.Errorf("blue/green run: mirrored %v, switched to the canary %v; want both", mirrored, switched)
	}
	r := w.route("podinfo")
	if len(r.Spec.Rules) != 1 || len(r.Spec.Rules[0].Filters) != 0 {
		t.Errorf("route after promotion = %+v, want one rule without the mirror", r.Spec.Rules)
	}
}

func testABTesting(t *testing.T, w *world) {
	w.createTarget("podinfo", nil)
	cn := newCanary("podinfo", "podinfo")
	a := cn.Spec.Analysis
	a.StepWeight, a.MaxWeight, a.Iterations = 0, 0, 2
	a.Match = []v1beta1.HTTPMatchRequest{{Headers: map[string]v1beta1.StringMatch{"x-canary": {Exact: "insider"}}}}
	initialize(t, w, cn)
	matched := false
	release(t, w, "ghcr.io/example/podinfo:2.0.0", func(cn *v1beta1.Canary, r *gatewayv1.HTTPRoute) {
		if len(r.Spec.Rules) != 2 {
			return
		}
		matched = true
		h := r.Spec.Rules[0].Matches[0].Headers
		if len(h) != 1 || h[0].Name != "x-canary" || h[0].Value != "insider" {
			t.Errorf("A/B rule matches %+v, want the header x-canary: insider", r.Spec.Rules[0].Matches)
		}
		if got := w.weights("podinfo", 0); !maps.Equal(got, map[string]int32{"podinfo-primary": 0, "podinfo-canary": 100}) {
			t.Errorf("A/B rule weights = %v, want all on the canary", got)
		}
		if got := w.weights("podinfo", 1); !maps.Equal(got, map[string]int32{"podinfo-primary": 100, "podinfo-canary": 0}) {
			t.Errorf("the rule for the other requests = %v, want all on the primary", got)
		}
	})
	if !matched {
		t.Error("the A/B run never routed the matching requests to the canary")
	}
	if r := w.route("podinfo"); len(r.Spec.Rules) != 1 {
		t.Errorf("route after promotion has %d rules, want 1", len(r.Spec.Rules))
	}
}

func testRouteSync(t *testing.T, w *world) {
	w.createTarget("podinfo", nil)
	initialize(t, w, newCanary("podinfo", "podinfo"))
	update(w, "podinfo", &v1beta1.Canary{}, func(c *v1beta1.Canary) {
		c.Spec.Service.Timeout = "5s"
		c.Spec.Service.Headers = &v1beta1.Headers{Request: &v1beta1.HeaderOperations{Set: map[string]string{"x-via": "sluice"}}}
	})
	w.tick("podinfo")
	r := w.route("podinfo")
	rule := r.Spec.Rules[0]
	if rule.Timeouts == nil || rule.Timeouts.Request == nil || *rule.Timeouts.Request != "5s" ||
		len(rule.Filters) != 1 || rule.Filters[0].RequestHeaderModifier == nil {
		t.Errorf("route rule after the spec change = %+v, want the 5s timeout and the header filter", rule)
	}
	if got := w.weights("podinfo", 0); !maps.Equal(got, map[string]int32{"podinfo-primary": 100, "podinfo-canary": 0}) {
		t.Errorf("weights after the spec change = %v, want still 100/0", got)
	}
	// Nothing changed since: the route is not written again.
	gen := r.Generation
	w.simulate()
	w.tick("podinfo")
	if got := w.route("podinfo").Generation; got != gen {
		t.Errorf("route rewritten without a change: generation %d, was %d", got, gen)
	}
}

func testNoSelectorLabel(t *testing.T, w *world) {
	labels := map[string]string{"tier": "web"}
	w.create(&appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "podinfo"},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "podinfo:1"}}},
			},
		},
	})
	w.create(newCanary("podinfo", "podinfo"))
	res := w.tick("podinfo")
	if res.RequeueAfter <= 0 {
		t.Errorf("a failed tick is not retried: %+v", res)
	}
	cn := w.canary("podinfo")
	ready := findCondition(cn, v1beta1.ConditionReady)
	if ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != ck.ReasonTickFailed ||
		!strings.Contains(ready.Message, "app, name, app.kubernetes.io/name") {
		t.Errorf("Ready condition = %+v, want False naming the selector labels", ready)
	}
	if !w.events.has("Warning Failed") {
		t.Errorf("no warning event in %v", w.events.events)
	}
	if !w.gone("podinfo-primary", &appsv1.Deployment{}) {
		t.Error("a primary was created for a target Sluice cannot tell from it")
	}
}

func testSessionAffinity(t *testing.T, w *world) {
	w.createTarget("podinfo", nil)
	cn := newCanary("podinfo", "podinfo")
	cn.Spec.Analysis.SessionAffinity = &v1beta1.SessionAffinity{CookieName: "canary-session", MaxAge: 600}
	initialize(t, w, cn)
	w.setImage("podinfo", "ghcr.io/example/podinfo:2.0.0")
	w.until("podinfo", "Progressing", phaseIs(v1beta1.PhaseProgressing))
	cn = w.until("podinfo", "the first step", func(c *v1beta1.Canary) bool { return c.Status.CanaryWeight == 25 })
	r := w.route("podinfo")
	if len(r.Spec.Rules) != 2 || r.Spec.Rules[0].Name == nil || *r.Spec.Rules[0].Name != routing.StickyRuleName {
		t.Fatalf("route rules at 25%% = %+v, want the sticky rule first", r.Spec.Rules)
	}
	cookie := "canary-session=" + cn.Status.ObservedRevision
	if h := r.Spec.Rules[0].Matches[0].Headers; len(h) != 1 || h[0].Name != "Cookie" || !strings.Contains(h[0].Value, cookie) {
		t.Errorf("sticky rule matches %+v, want the cookie %s", r.Spec.Rules[0].Matches, cookie)
	}
	var setCookie string
	for _, b := range r.Spec.Rules[1].BackendRefs {
		for _, f := range b.Filters {
			if f.ResponseHeaderModifier != nil && len(f.ResponseHeaderModifier.Add) > 0 {
				setCookie = f.ResponseHeaderModifier.Add[0].Value
			}
		}
	}
	if !strings.HasPrefix(setCookie, cookie+"; Max-Age=600") {
		t.Errorf("the canary backend sets the cookie %q, want %s; Max-Age=600", setCookie, cookie)
	}
	// Ticks that change nothing leave the route alone.
	gen := r.Generation
	w.tick("podinfo")
	w.tick("podinfo")
	if got := w.route("podinfo").Generation; got != gen {
		t.Errorf("route rewritten by ticks that changed nothing: generation %d, was %d", got, gen)
	}
	for i := 0; cn.Status.Phase != v1beta1.PhaseSucceeded; i++ {
		if i == 20 {
			t.Fatalf("not promoted after %d ticks: %s %q", i, cn.Status.Phase, cn.Status.Message)
		}
		w.simulate()
		w.advance(interval)
		w.tick("podinfo")
		cn = w.canary("podinfo")
	}
	if r := w.route("podinfo"); len(r.Spec.Rules) != 1 {
		t.Errorf("route after promotion = %+v, want the split rule alone", r.Spec.Rules)
	}
}
