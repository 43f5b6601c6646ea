package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"maps"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/sluicehq/sluice/canary"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
	"github.com/sluicehq/sluice/routing"
)

// Router is the canary.Router of Gateway API v1 HTTPRoutes: the route
// Sluice generates, named after the apex Service, or the user's route that
// service.httpRouteRef names, of which only the rules that point at the
// primary and canary Services change (routing.CanaryRoute).
type Router struct {
	// Client reads and writes HTTPRoutes; its scheme must know the Gateway
	// API v1 kinds and Canaries.
	Client client.Client
	// ControllerName is the GAMMA controller whose parent status accepts
	// routes parented on Services; DefaultControllerName when empty.
	// Routes parented on Gateways are accepted by any controller.
	ControllerName string
}

var _ canary.Router = (*Router)(nil)

// ErrNotAccepted is wrapped by SetWeights' error when the weights would send
// more traffic to the canary but the route's current generation is not
// accepted yet.
var ErrNotAccepted = errors.New("HTTPRoute not accepted for its current generation")

func (r *Router) controllerName() gatewayv1.GatewayController {
	if r.ControllerName != "" {
		return gatewayv1.GatewayController(r.ControllerName)
	}
	return DefaultControllerName
}

// routeName is the name of c's HTTPRoute, and whether it is the user's.
func routeName(c *v1beta1.Canary) (name string, user bool) {
	if ref := c.Spec.Service.HTTPRouteRef; ref != nil && ref.Name != "" {
		return ref.Name, true
	}
	apex, _, _ := c.GetServiceNames()
	return apex, false
}

// get reads c's route; nil, nil when it does not exist.
func (r *Router) get(ctx context.Context, c *v1beta1.Canary) (*gatewayv1.HTTPRoute, error) {
	name, _ := routeName(c)
	route := &gatewayv1.HTTPRoute{}
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: c.Namespace, Name: name}, route)
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("reading HTTPRoute %s/%s: %w", c.Namespace, name, err)
	}
	return route, nil
}

// Observe returns whether c's route exists and is accepted, and its
// weights as routing.CanaryRoute reads them: those of the A/B rule when
// there is one (matched), else of the first rule that refers to both the
// primary and the canary Services.
func (r *Router) Observe(ctx context.Context, c *v1beta1.Canary) (canary.Route, error) {
	route, err := r.get(ctx, c)
	if err != nil || route == nil {
		return canary.Route{}, err
	}
	return r.observe(c, route)
}

func (r *Router) observe(c *v1beta1.Canary, route *gatewayv1.HTTPRoute) (canary.Route, error) {
	cr, err := canaryRoute(c)
	if err != nil {
		return canary.Route{}, fmt.Errorf("canary %s/%s: %w", c.Namespace, c.Name, err)
	}
	out := canary.Route{Exists: true, Accepted: r.accepted(route)}
	out.PrimaryWeight, out.CanaryWeight, out.Mirrored, out.Matched, _ = cr.Observe(route)
	return out, nil
}

// accepted reports whether every parent of route accepted its current
// generation: for a Service parent, in the status written by the GAMMA
// controller; for other parents, by any controller.
func (r *Router) accepted(route *gatewayv1.HTTPRoute) bool {
	if len(route.Spec.ParentRefs) == 0 {
		return false
	}
	for _, ref := range route.Spec.ParentRefs {
		service := isServiceParent(ref)
		ok := false
		for _, ps := range route.Status.Parents {
			if !sameParent(ref, ps.ParentRef, route.Namespace) || service && ps.ControllerName != r.controllerName() {
				continue
			}
			for _, cond := range ps.Conditions {
				if cond.Type == string(gatewayv1.RouteConditionAccepted) && cond.Status == metav1.ConditionTrue &&
					cond.ObservedGeneration == route.Generation {
					ok = true
				}
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func isServiceParent(ref gatewayv1.ParentReference) bool {
	return ref.Kind != nil && *ref.Kind == "Service" && (ref.Group == nil || *ref.Group == "" || *ref.Group == "core")
}

// sameParent reports whether two parent references of a route in namespace
// ns name the same parent, defaults applied.
func sameParent(a, b gatewayv1.ParentReference, ns string) bool {
	group := func(g *gatewayv1.Group) string {
		if g == nil {
			return gatewayv1.GroupName
		}
		if *g == "core" {
			return ""
		}
		return string(*g)
	}
	kind := func(k *gatewayv1.Kind) string {
		if k == nil {
			return "Gateway"
		}
		return string(*k)
	}
	namespace := func(n *gatewayv1.Namespace) string {
		if n == nil || *n == "" {
			return ns
		}
		return string(*n)
	}
	return group(a.Group) == group(b.Group) && kind(a.Kind) == kind(b.Kind) && namespace(a.Namespace) == namespace(b.Namespace) &&
		a.Name == b.Name && ptrEqual(a.SectionName, b.SectionName) && ptrEqual(a.Port, b.Port)
}

// EnsureRoute creates Sluice's route for c, all traffic on the primary,
// when it is missing. A user's route (service.httpRouteRef) is never
// created: its absence is an error.
func (r *Router) EnsureRoute(ctx context.Context, c *v1beta1.Canary) error {
	name, user := routeName(c)
	route, err := r.get(ctx, c)
	if err != nil {
		return err
	}
	if route != nil {
		return nil
	}
	if user {
		return fmt.Errorf("HTTPRoute %s/%s (service.httpRouteRef) not found: create it with rules whose backendRefs are the Services %s",
			c.Namespace, name, servicePair(c))
	}
	route = &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: c.Namespace, Name: name}}
	if err := r.apply(c, route, canary.SetWeights{Primary: 100}); err != nil {
		return err
	}
	if err := controllerutil.SetControllerReference(c, route, r.Client.Scheme()); err != nil {
		return fmt.Errorf("owning HTTPRoute %s/%s by canary %s: %w", c.Namespace, name, c.Name, err)
	}
	if err := r.Client.Create(ctx, route); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating HTTPRoute %s/%s: %w", c.Namespace, name, err)
	}
	return nil
}

// servicePair names the primary and canary Services, for messages.
func servicePair(c *v1beta1.Canary) string {
	_, p, cs := c.GetServiceNames()
	return p + " and " + cs
}

// apply writes Sluice's route spec for c with weights w into route, with
// the apex metadata, the retry annotations and the spec's hash.
func (r *Router) apply(c *v1beta1.Canary, route *gatewayv1.HTTPRoute, w canary.SetWeights) error {
	spec, err := desiredRoute(c, w)
	if err != nil {
		return fmt.Errorf("canary %s/%s: %w", c.Namespace, c.Name, err)
	}
	route.Spec = spec
	if route.Annotations == nil {
		route.Annotations = map[string]string{}
	}
	for _, k := range []string{routing.AnnotationRetryHTTP, routing.AnnotationRetryLimit, routing.AnnotationRetryTimeout} {
		delete(route.Annotations, k)
	}
	maps.Copy(route.Annotations, retryAnnotations(&c.Spec.Service))
	if m := c.Spec.Service.Apex; m != nil {
		maps.Copy(route.Annotations, m.Annotations)
		if len(m.Labels) > 0 && route.Labels == nil {
			route.Labels = map[string]string{}
		}
		maps.Copy(route.Labels, m.Labels)
	}
	route.Annotations[routeSpecAnnotation] = specHash(&spec)
	return nil
}

// exposes reports whether going from route state cur to weights w sends
// more traffic to the canary: a higher weight, mirroring or A/B matching
// that was not there.
func exposes(cur canary.Route, w canary.SetWeights) bool {
	return w.Canary > cur.CanaryWeight || w.Mirror && !cur.Mirrored || w.Match && !cur.Matched
}

// SetWeights sets the weights, the A/B rule and the mirror of c's route.
// Sluice's own route is rewritten from the spec with them; in a user's
// route only the rules that point at the primary and canary Services change
// (routing.CanaryRoute.Apply), every other rule staying as it is. Weights
// that send more traffic to the canary are written only once the route's
// current generation is accepted (ErrNotAccepted).
func (r *Router) SetWeights(ctx context.Context, c *v1beta1.Canary, w canary.SetWeights) error {
	name, user := routeName(c)
	cr, err := canaryRoute(c)
	if err != nil {
		return fmt.Errorf("canary %s/%s: %w", c.Namespace, c.Name, err)
	}
	if w.Match && len(cr.Match) == 0 {
		return fmt.Errorf("canary %s/%s: A/B testing needs analysis.match", c.Namespace, c.Name)
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		route, err := r.get(ctx, c)
		if err != nil {
			return err
		}
		if route == nil {
			return fmt.Errorf("HTTPRoute %s/%s not found", c.Namespace, name)
		}
		cur, err := r.observe(c, route)
		if err != nil {
			return err
		}
		if exposes(cur, w) && !cur.Accepted {
			return fmt.Errorf("HTTPRoute %s/%s generation %d: %w; weights %d/%d not written yet",
				c.Namespace, name, route.Generation, ErrNotAccepted, w.Primary, w.Canary)
		}
		if user {
			changed := cr.Apply(route, w.Primary, w.Canary, w.Match, w.Mirror)
			if _, _, _, _, ok := cr.Observe(route); !ok {
				_, ps, cs := c.GetServiceNames()
				return fmt.Errorf("HTTPRoute %s/%s has no rule whose backendRefs are both %s and %s, or only %s or %s",
					c.Namespace, name, ps, cs, cr.Apex, ps)
			}
			if !changed {
				return nil
			}
		} else {
			if err := r.own(c, route); err != nil {
				return err
			}
			if err := r.apply(c, route, w); err != nil {
				return err
			}
		}
		if err := r.Client.Update(ctx, route); err != nil {
			return fmt.Errorf("updating HTTPRoute %s/%s: %w", c.Namespace, name, err)
		}
		return nil
	})
}

// own makes c the controller of its generated route, refusing a route
// another object controls.
func (r *Router) own(c *v1beta1.Canary, route *gatewayv1.HTTPRoute) error {
	if metav1.IsControlledBy(route, c) {
		return nil
	}
	if owner := metav1.GetControllerOf(route); owner != nil {
		return fmt.Errorf("HTTPRoute %s/%s is controlled by %s %s, not by canary %s: set service.httpRouteRef to use it, or remove it",
			route.Namespace, route.Name, owner.Kind, owner.Name, c.Name)
	}
	if err := controllerutil.SetControllerReference(c, route, r.Client.Scheme()); err != nil {
		return fmt.Errorf("owning HTTPRoute %s/%s by canary %s: %w", route.Namespace, route.Name, c.Name, err)
	}
	return nil
}

// Sync rewrites Sluice's own route when the Canary's service or analysis
// changed since it was written (timeouts, matches, filters, parents),
// keeping its weights. A user's route is left alone.
func (r *Router) Sync(ctx context.Context, c *v1beta1.Canary) error {
	if _, user := routeName(c); user {
		return nil
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		route, err := r.get(ctx, c)
		if err != nil || route == nil {
			return err
		}
		cur, err := r.observe(c, route)
		if err != nil {
			return err
		}
		w := canary.SetWeights{Primary: cur.PrimaryWeight, Canary: cur.CanaryWeight, Mirror: cur.Mirrored, Match: cur.Matched}
		want, err := desiredRoute(c, w)
		if err != nil {
			return fmt.Errorf("canary %s/%s: %w", c.Namespace, c.Name, err)
		}
		if route.Annotations[routeSpecAnnotation] == specHash(&want) {
			return nil
		}
		if err := r.own(c, route); err != nil {
			return err
		}
		if err := r.apply(c, route, w); err != nil {
			return err
		}
		if err := r.Client.Update(ctx, route); err != nil {
			return fmt.Errorf("updating HTTPRoute %s/%s: %w", route.Namespace, route.Name, err)
		}
		return nil
	})
}

// Revert hands the traffic back to the target when c is deleted with
// revertOnDeletion: Sluice's route is deleted (the apex Service then
// serves its own endpoints), and a user's route sends everything to the
// canary Service, which selects the target's pods.
func (r *Router) Revert(ctx context.Context, c *v1beta1.Canary) error {
	name, user := routeName(c)
	route, err := r.get(ctx, c)
	if err != nil || route == nil {
		return err
	}
	if !user {
		if !metav1.IsControlledBy(route, c) {
			return nil
		}
		if err := r.Client.Delete(ctx, route); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting HTTPRoute %s/%s: %w", c.Namespace, name, err)
		}
		return nil
	}
	cr, err := canaryRoute(c)
	if err != nil {
		return fmt.Errorf("canary %s/%s: %w", c.Namespace, c.Name, err)
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		route, err := r.get(ctx, c)
		if err != nil || route == nil {
			return err
		}
		if !cr.Apply(route, 0, 100, false, false) {
			return nil
		}
		if err := r.Client.Update(ctx, route); err != nil {
			return fmt.Errorf("updating HTTPRoute %s/%s: %w", c.Namespace, name, err)
		}
		return nil
	})
}
