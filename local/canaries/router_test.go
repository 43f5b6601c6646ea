package canaries

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/sluicehq/sluice/canary"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
	"github.com/sluicehq/sluice/local/supervisor"
	"github.com/sluicehq/sluice/mesh/localstore"
)

// routerCanary is a Canary on backend:80, with a user's route when routeRef is set.
func routerCanary(routeRef string, match bool) *v1beta1.Canary {
	c := &v1beta1.Canary{
		ObjectMeta: metav1.ObjectMeta{Name: "backend", Namespace: "shop"},
		Spec: v1beta1.CanarySpec{
			TargetRef: v1beta1.LocalObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "backend"},
			Service:   v1beta1.CanaryService{Port: 80},
			Analysis:  &v1beta1.CanaryAnalysis{},
		},
	}
	if routeRef != "" {
		c.Spec.Service.HTTPRouteRef = &v1beta1.LocalRouteReference{Name: routeRef}
	}
	if match {
		c.Spec.Analysis.Match = []v1beta1.HTTPMatchRequest{{Headers: map[string]v1beta1.StringMatch{"x-canary": {Exact: "yes"}}}}
	}
	return c
}

func routerWorld(store Store) router {
	return router{&world{store: store, st: &targetState{User: &supervisor.Workload{Name: "backend", Revision: "r1"}}, save: func() {}}}
}

// TestLocalRouterOwnsItsRoute creates the apex route at 100/0 and steps it.
func TestLocalRouterOwnsItsRoute(t *testing.T) {
	ctx := context.Background()
	store := localstore.New()
	r := routerWorld(store)
	c := routerCanary("", false)
	if err := r.EnsureRoute(ctx, c); err != nil {
		t.Fatal(err)
	}
	got, err := r.Observe(ctx, c)
	if err != nil || !got.Exists || got.PrimaryWeight != 100 || got.CanaryWeight != 0 {
		t.Fatalf("after EnsureRoute: %+v, %v; want 100/0", got, err)
	}
	if err := r.SetWeights(ctx, c, canary.SetWeights{Primary: 70, Canary: 30}); err != nil {
		t.Fatal(err)
	}
	got, _ = r.Observe(ctx, c)
	if got.PrimaryWeight != 70 || got.CanaryWeight != 30 {
		t.Fatalf("after SetWeights 70/30: %+v", got)
	}
}

// TestLocalRouterLeavesUserRulesAlone changes only the split rule of a route
// named by httpRouteRef, and says which route is missing when there is none.
func TestLocalRouterLeavesUserRulesAlone(t *testing.T) {
	ctx := context.Background()
	store := localstore.New()
	r := routerWorld(store)
	c := routerCanary("checkout", true)

	err := r.EnsureRoute(ctx, c)
	if err == nil || !strings.Contains(err.Error(), "shop/checkout") || !strings.Contains(err.Error(), "httpRouteRef") {
		t.Fatalf("missing user route: %v; want an error naming shop/checkout and httpRouteRef", err)
	}

	port := gatewayv1.PortNumber(80)
	ref := func(name string, w int32) gatewayv1.HTTPBackendRef {
		return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{
			BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name), Port: &port},
			Weight:                 &w,
		}}
	}
	prefix := gatewayv1.PathMatchPathPrefix
	admin := "/admin"
	other := gatewayv1.HTTPRouteRule{
		Matches:     []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: &prefix, Value: &admin}}},
		BackendRefs: []gatewayv1.HTTPBackendRef{ref("admin", 1)},
	}
	group, kind := gatewayv1.Group(""), gatewayv1.Kind("Service")
	store.ApplyHTTPRoute(&gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: "checkout", Namespace: "shop"},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Group: &group, Kind: &kind, Name: "backend", Port: &port}}},
			Rules:           []gatewayv1.HTTPRouteRule{other, {BackendRefs: []gatewayv1.HTTPBackendRef{ref("backend-primary", 100), ref("backend-canary", 0)}}},
		},
	})
	before, _ := json.Marshal(other)

	if err := r.EnsureRoute(ctx, c); err != nil {
		t.Fatal(err)
	}
	// An A/B step: requests with the header go to the canary.
	if err := r.SetWeights(ctx, c, canary.SetWeights{Primary: 0, Canary: 100, Match: true}); err != nil {
		t.Fatal(err)
	}
	got, _ := r.Observe(ctx, c)
	if !got.Matched {
		t.Fatalf("A/B step not observed as matched: %+v", got)
	}
	rt, _ := store.HTTPRoute("shop", "checkout")
	found := false
	for _, rule := range rt.Spec.Rules {
		if b, _ := json.Marshal(rule); string(b) == string(before) {
			found = true
		}
	}
	if !found {
		t.Fatalf("the user's /admin rule changed: %+v", rt.Spec.Rules)
	}
	// The run ends: the A/B rule goes, the split is back at 100/0.
	if err := r.SetWeights(ctx, c, canary.SetWeights{Primary: 100, Canary: 0}); err != nil {
		t.Fatal(err)
	}
	got, _ = r.Observe(ctx, c)
	if got.Matched || got.PrimaryWeight != 100 || got.CanaryWeight != 0 {
		t.Fatalf("after the run: %+v; want 100/0 without the A/B rule", got)
	}
	rt, _ = store.HTTPRoute("shop", "checkout")
	if len(rt.Spec.Rules) != 2 {
		t.Fatalf("after the run the route has %d rules, want the user's 2", len(rt.Spec.Rules))
	}
}
