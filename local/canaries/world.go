package canaries

import (
	"context"
	"fmt"
	"maps"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/sluicehq/sluice/canary"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
	"github.com/sluicehq/sluice/local/supervisor"
	"github.com/sluicehq/sluice/mesh/localstore"
	"github.com/sluicehq/sluice/routing"
)

// Supervisor is what the canary controller needs of the local supervisor.
// *supervisor.Supervisor implements it.
type Supervisor interface {
	// Apply sets what a workload runs.
	Apply(w supervisor.Workload)
	// Delete stops every replica of a workload.
	Delete(namespace, name string)
	// Workloads returns the state of every applied workload.
	Workloads() []supervisor.WorkloadStatus
}

var _ Supervisor = (*supervisor.Supervisor)(nil)

// Store is what the canary controller needs of the local store.
// *localstore.Store implements it.
type Store interface {
	ApplyService(svc *corev1.Service)
	ServiceObject(namespace, name string) (*corev1.Service, bool)
	ApplyHTTPRoute(r *gatewayv1.HTTPRoute)
	HTTPRoute(namespace, name string) (*gatewayv1.HTTPRoute, bool)
	UpdateHTTPRoute(namespace, name string, mutate func(*gatewayv1.HTTPRoute) error) error
	DeleteHTTPRoute(namespace, name string)
	DeleteService(namespace, name string)
}

var _ Store = (*localstore.Store)(nil)

// targetState is what the controller keeps about one canary's workloads:
// the user's Deployment (the target, serving as the canary), whether it is
// scaled to zero, and the primary's spec.
type targetState struct {
	// User is the target as the user's manifest defines it; nil while the
	// manifest defines none.
	User *supervisor.Workload
	// Down is true when the target is scaled to zero.
	Down bool
	// Primary is "<target>-primary" as it runs; nil before it is created.
	Primary *supervisor.Workload
}

// world implements canary.Workloads and canary.Router for one canary over
// the supervisor and the local store. The controller holds its lock while a
// tick runs.
type world struct {
	sup   Supervisor
	store Store
	st    *targetState
	// save is called after the target state changed, to persist it.
	save func()
}

// router is the canary.Router of a world.
type router struct{ *world }

var (
	_ canary.Workloads = (*world)(nil)
	_ canary.Router    = router{}
)

// Observe implements canary.Router.
func (r router) Observe(ctx context.Context, c *v1beta1.Canary) (canary.Route, error) {
	return r.routeObserve(ctx, c)
}

// applyTarget gives the target to the supervisor with the replicas its
// state asks for.
func (w *world) applyTarget() {
	if w.st.User == nil {
		return
	}
	t := cloneWorkload(*w.st.User)
	if w.st.Down {
		t.Replicas = 0
	}
	w.sup.Apply(t)
}

// Observe implements canary.Workloads.
func (w *world) Observe(ctx context.Context, c *v1beta1.Canary) (target, primary canary.Workload, servicesReady bool, err error) {
	status := map[string]supervisor.WorkloadStatus{}
	for _, s := range w.sup.Workloads() {
		status[s.Namespace+"/"+s.Name] = s
	}
	if u := w.st.User; u != nil {
		target = canary.Workload{Exists: true, Revision: u.Revision, Replicas: int32(u.Replicas)}
		if w.st.Down {
			target.Message = "scaled to zero"
		} else {
			target.Ready, target.Message = readiness(status[u.Key()], u.Revision)
		}
	}
	if p := w.st.Primary; p != nil {
		primary = canary.Workload{Exists: true, Revision: p.Revision, Replicas: int32(p.Replicas)}
		primary.Ready, primary.Message = readiness(status[p.Key()], p.Revision)
	}
	apex, ps, cs := c.GetServiceNames()
	servicesReady = true
	for _, name := range []string{apex, ps, cs} {
		if _, ok := w.store.ServiceObject(c.Namespace, name); !ok {
			servicesReady = false
		}
	}
	return target, primary, servicesReady, nil
}

// readiness reports whether every replica of a workload runs revision rev
// and is ready.
func readiness(s supervisor.WorkloadStatus, rev string) (bool, string) {
	switch {
	case s.Name == "":
		return false, "not running"
	case s.Revision != rev:
		return false, fmt.Sprintf("rolling to revision %s", rev)
	case s.Replicas == 0:
		return false, "scaled to zero"
	case s.Ready < s.Replicas || s.Current < s.Replicas:
		return false, fmt.Sprintf("%d/%d replicas ready", s.Ready, s.Replicas)
	case s.Old > 0:
		return false, fmt.Sprintf("%d replicas of older revisions still stopping", s.Old)
	}
	return true, ""
}

// EnsurePrimary implements canary.Workloads.
func (w *world) EnsurePrimary(ctx context.Context, c *v1beta1.Canary) error {
	if w.st.Primary != nil {
		return nil
	}
	if w.st.User == nil {
		return fmt.Errorf("target %s/%s is not defined", c.Namespace, c.Spec.TargetRef.Name)
	}
	p := primaryOf(*w.st.User, c.GetPrimaryName())
	w.st.Primary = &p
	w.sup.Apply(cloneWorkload(p))
	w.save()
	return nil
}

// PromotePrimary implements canary.Workloads.
func (w *world) PromotePrimary(ctx context.Context, c *v1beta1.Canary, revision string) error {
	if w.st.User == nil {
		return fmt.Errorf("target %s/%s is not defined", c.Namespace, c.Spec.TargetRef.Name)
	}
	if w.st.User.Revision != revision {
		return fmt.Errorf("target %s/%s runs revision %s, not %s", c.Namespace, c.Spec.TargetRef.Name, w.st.User.Revision, revision)
	}
	p := primaryOf(*w.st.User, c.GetPrimaryName())
	w.st.Primary = &p
	w.sup.Apply(cloneWorkload(p))
	w.save()
	return nil
}

// ScaleCanary implements canary.Workloads.
func (w *world) ScaleCanary(ctx context.Context, c *v1beta1.Canary, up bool) error {
	return w.scale(!up)
}

// ScaleTarget implements canary.Workloads.
func (w *world) ScaleTarget(ctx context.Context, c *v1beta1.Canary, zero bool) error {
	return w.scale(zero)
}

func (w *world) scale(down bool) error {
	if w.st.Down == down {
		w.applyTarget()
		return nil
	}
	w.st.Down = down
	w.applyTarget()
	w.save()
	return nil
}

// EnsureServices implements canary.Workloads: the apex and "-primary"
// Services select the primary's pods, "-canary" the target's.
func (w *world) EnsureServices(ctx context.Context, c *v1beta1.Canary) error {
	if w.st.User == nil {
		return fmt.Errorf("target %s/%s is not defined", c.Namespace, c.Spec.TargetRef.Name)
	}
	apex, ps, cs := c.GetServiceNames()
	primaryLabels := primaryLabelsOf(w.st.User.Labels, c.Spec.TargetRef.Name, c.GetPrimaryName())
	for _, s := range []struct {
		name     string
		selector map[string]string
	}{{apex, primaryLabels}, {ps, primaryLabels}, {cs, w.st.User.Labels}} {
		svc := w.serviceFor(c, s.name)
		svc.Spec.Selector = maps.Clone(s.selector)
		w.store.ApplyService(svc)
	}
	return nil
}

// serviceFor returns the Service name should be: the existing one, or one
// with the canary's service port.
func (w *world) serviceFor(c *v1beta1.Canary, name string) *corev1.Service {
	if svc, ok := w.store.ServiceObject(c.Namespace, name); ok {
		if len(svc.Spec.Ports) > 0 {
			return svc
		}
	}
	portName := c.Spec.Service.PortName
	if portName == "" {
		portName = "http"
	}
	target := intstr.FromInt32(c.Spec.Service.Port)
	if c.Spec.Service.TargetPort != nil {
		target = *c.Spec.Service.TargetPort
	}
	var appProto *string
	if p := c.Spec.Service.AppProtocol; p != "" {
		appProto = &p
	}
	return &corev1.Service{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: c.Namespace,
			Labels: map[string]string{ManagedByLabel: ManagedBy},
		},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{
			Name: portName, Port: c.Spec.Service.Port, TargetPort: target,
			Protocol: corev1.ProtocolTCP, AppProtocol: appProto,
		}}},
	}
}

// ManagedByLabel and ManagedBy mark the objects the canary controller
// creates.
const (
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedBy      = "sluice"
)

// routeName is the canary's HTTPRoute: the user's route named by
// spec.service.httpRouteRef, else the one Sluice owns, named after the apex
// Service.
func routeName(c *v1beta1.Canary) string {
	if ref := c.Spec.Service.HTTPRouteRef; ref != nil && ref.Name != "" {
		return ref.Name
	}
	apex, _, _ := c.GetServiceNames()
	return apex
}

// userRoute reports whether the canary's route is the user's
// (spec.service.httpRouteRef).
func userRoute(c *v1beta1.Canary) bool {
	return c.Spec.Service.HTTPRouteRef != nil && c.Spec.Service.HTTPRouteRef.Name != ""
}

// errRouteNotFound is the error for a missing httpRouteRef route.
func errRouteNotFound(c *v1beta1.Canary) error {
	return fmt.Errorf("HTTPRoute %s/%s named by spec.service.httpRouteRef not found", c.Namespace, routeName(c))
}

// canaryRoute is the canary's part of its route. The session affinity
// cookie's value is the target's revision: the same for a run, another for
// the next one.
func (w *world) canaryRoute(c *v1beta1.Canary) (routing.CanaryRoute, error) {
	value := ""
	if w.st.User != nil {
		value = w.st.User.Revision
	}
	cr, err := routing.CanaryRouteFor(c, value)
	if err != nil {
		return routing.CanaryRoute{}, fmt.Errorf("routing canary %s/%s: %w", c.Namespace, c.Name, err)
	}
	return cr, nil
}

// routeObserve returns the state of the canary's route. A route without a
// traffic-split rule is reported as not accepted, so that SetWeights
// rewrites it.
func (w *world) routeObserve(ctx context.Context, c *v1beta1.Canary) (canary.Route, error) {
	rt, ok := w.store.HTTPRoute(c.Namespace, routeName(c))
	if !ok {
		return canary.Route{}, nil
	}
	cr, err := w.canaryRoute(c)
	if err != nil {
		return canary.Route{}, err
	}
	r := canary.Route{Exists: true}
	r.PrimaryWeight, r.CanaryWeight, r.Mirrored, r.Matched, r.Accepted = cr.Observe(rt)
	return r, nil
}

// EnsureRoute implements canary.Router: it creates the route Sluice owns at
// 100/0; a user's route (httpRouteRef) must exist.
func (w *world) EnsureRoute(ctx context.Context, c *v1beta1.Canary) error {
	if _, ok := w.store.HTTPRoute(c.Namespace, routeName(c)); ok {
		return nil
	}
	if userRoute(c) {
		return errRouteNotFound(c)
	}
	w.store.ApplyHTTPRoute(w.routeWith(c, 100, 0))
	return nil
}

// routeWith is the HTTPRoute Sluice owns, with the given weights.
func (w *world) routeWith(c *v1beta1.Canary, primary, canaryWeight int32) *gatewayv1.HTTPRoute {
	apex, ps, cs := c.GetServiceNames()
	group := gatewayv1.Group("")
	kind := gatewayv1.Kind("Service")
	port := gatewayv1.PortNumber(c.Spec.Service.Port)
	ref := func(name string, weight int32) gatewayv1.HTTPBackendRef {
		return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{
			BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name), Port: &port},
			Weight:                 &weight,
		}}
	}
	return &gatewayv1.HTTPRoute{
		TypeMeta: metav1.TypeMeta{APIVersion: gatewayv1.GroupVersion.String(), Kind: "HTTPRoute"},
		ObjectMeta: metav1.ObjectMeta{
			Name: apex, Namespace: c.Namespace,
			Labels: map[string]string{ManagedByLabel: ManagedBy},
		},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{
				Group: &group, Kind: &kind, Name: gatewayv1.ObjectName(apex), Port: &port,
			}}},
			Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{ref(ps, primary), ref(cs, canaryWeight)}}},
		},
	}
}

// SetWeights implements canary.Router: routing.CanaryRoute.Apply writes the
// weights, the A/B rule, the mirror and the session affinity cookie into the
// route; in a user's route only the rules pointing at the primary and canary
// Services change.
func (w *world) SetWeights(ctx context.Context, c *v1beta1.Canary, sw canary.SetWeights) error {
	name := routeName(c)
	cr, err := w.canaryRoute(c)
	if err != nil {
		return err
	}
	if sw.Match && len(cr.Match) == 0 {
		return fmt.Errorf("canary %s/%s: A/B testing needs spec.analysis.match", c.Namespace, c.Name)
	}
	rt, ok := w.store.HTTPRoute(c.Namespace, name)
	if !ok {
		if userRoute(c) {
			return errRouteNotFound(c)
		}
		rt = w.routeWith(c, 100, 0)
		cr.Apply(rt, sw.Primary, sw.Canary, sw.Match, sw.Mirror)
		w.store.ApplyHTTPRoute(rt)
		return nil
	}
	apply := func(rt *gatewayv1.HTTPRoute) (bool, error) {
		changed := cr.Apply(rt, sw.Primary, sw.Canary, sw.Match, sw.Mirror)
		if _, _, _, _, ok := cr.Observe(rt); !ok {
			_, ps, cs := c.GetServiceNames()
			return false, fmt.Errorf("no rule has backendRefs to both %s and %s, or a single one to %s or %s", ps, cs, cr.Apex, ps)
		}
		return changed, nil
	}
	changed, err := apply(rt.DeepCopy())
	if err == nil && !changed {
		return nil
	}
	if err == nil {
		err = w.store.UpdateHTTPRoute(c.Namespace, name, func(rt *gatewayv1.HTTPRoute) error {
			_, err := apply(rt)
			return err
		})
	}
	if err != nil {
		return fmt.Errorf("setting the weights of HTTPRoute %s/%s: %w", c.Namespace, name, err)
	}
	return nil
}

// primaryOf is the primary clone of a target workload: its spec, named
// primary, with labels rewritten so that its pods are told apart.
func primaryOf(target supervisor.Workload, primary string) supervisor.Workload {
	p := cloneWorkload(target)
	p.Name = primary
	p.Labels = primaryLabelsOf(target.Labels, target.Name, primary)
	return p
}

// primaryLabelsOf rewrites the labels whose value is the target's name to
// the primary's name ("app: backend" → "app: backend-primary"); with none,
// it adds "app: <primary>".
func primaryLabelsOf(labels map[string]string, target, primary string) map[string]string {
	out := make(map[string]string, len(labels)+1)
	rewritten := false
	for k, v := range labels {
		if v == target {
			v = primary
			rewritten = true
		}
		out[k] = v
	}
	if !rewritten {
		out["app"] = primary
	}
	return out
}

func cloneWorkload(w supervisor.Workload) supervisor.Workload {
	w.Labels = maps.Clone(w.Labels)
	w.Command = append([]string(nil), w.Command...)
	w.Args = append([]string(nil), w.Args...)
	w.Env = append([]supervisor.EnvVar(nil), w.Env...)
	return w
}

// isManaged reports whether a Service or route was created by the
// controller.
func isManaged(labels map[string]string) bool {
	return strings.EqualFold(labels[ManagedByLabel], ManagedBy)
}
