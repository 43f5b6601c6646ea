package routing

import (
	"slices"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// RuleWeights are the weights of the named services' backendRefs in one rule.
type RuleWeights struct {
	// Rule is the rule's index in spec.rules.
	Rule int
	// Weights maps a service name to its weight in the rule (a nil weight counts as 1;
	// a service referenced twice in one rule gets the sum).
	Weights map[string]int32
}

// BackendWeights returns the weights of every backendRef in the route that points
// to one of the named services (by name), per rule: one RuleWeights for each rule
// that references at least one of them, in rule order. A backendRef names a service
// when its group is ""/core, its kind Service (or unset) and its namespace the
// route's (or unset).
func BackendWeights(route *gatewayv1.HTTPRoute, services ...string) []RuleWeights {
	if route == nil {
		return nil
	}
	var out []RuleWeights
	for i := range route.Spec.Rules {
		var rw *RuleWeights
		for j := range route.Spec.Rules[i].BackendRefs {
			ref := &route.Spec.Rules[i].BackendRefs[j].BackendRef
			name, ok := localServiceName(route, ref)
			if !ok || !slices.Contains(services, name) {
				continue
			}
			if rw == nil {
				out = append(out, RuleWeights{Rule: i, Weights: map[string]int32{}})
				rw = &out[len(out)-1]
			}
			rw.Weights[name] += weightOf(ref)
		}
	}
	return out
}

// SetBackendWeights changes only the weights of backendRefs naming the given
// services (the map's keys, matched as BackendWeights does), in rules that reference
// the target (primary or canary), leaving every other rule/backend untouched;
// returns whether anything changed.
//
// A rule is changed only when it references every named service: that is the
// traffic-split rule. A rule naming only some of them is a pin written by the user
// (a header match that always goes to the canary, a path kept on the primary) and is
// left as it is, so that a canary weight of 0 cannot turn it into an all-zero rule
// (503). With a single service in the map every rule that names it is changed. A new
// weight equal to the current effective weight leaves the field as written (an unset
// weight stays unset when the new weight is 1).
func SetBackendWeights(route *gatewayv1.HTTPRoute, weights map[string]int32) bool {
	if route == nil || len(weights) == 0 {
		return false
	}
	changed := false
	for i := range route.Spec.Rules {
		refs := route.Spec.Rules[i].BackendRefs
		if !referencesAll(route, refs, weights) {
			continue
		}
		for j := range refs {
			ref := &refs[j].BackendRef
			name, ok := localServiceName(route, ref)
			if !ok {
				continue
			}
			w, ok := weights[name]
			if !ok || weightOf(ref) == w {
				continue
			}
			ref.Weight = &w
			changed = true
		}
	}
	return changed
}

// referencesAll reports whether refs name every service in weights.
func referencesAll(route *gatewayv1.HTTPRoute, refs []gatewayv1.HTTPBackendRef, weights map[string]int32) bool {
	seen := 0
	for name := range weights {
		for j := range refs {
			if n, ok := localServiceName(route, &refs[j].BackendRef); ok && n == name {
				seen++
				break
			}
		}
	}
	return seen == len(weights)
}

// localServiceName returns the name of the Service in the route's namespace that
// the backendRef points to; ok=false for other kinds and other namespaces.
func localServiceName(route *gatewayv1.HTTPRoute, ref *gatewayv1.BackendRef) (string, bool) {
	if ref.Group != nil && *ref.Group != "" && *ref.Group != "core" {
		return "", false
	}
	if ref.Kind != nil && *ref.Kind != "Service" {
		return "", false
	}
	if ref.Namespace != nil && *ref.Namespace != "" && nsOr(string(*ref.Namespace)) != nsOr(route.Namespace) {
		return "", false
	}
	return string(ref.Name), true
}

func weightOf(ref *gatewayv1.BackendRef) int32 {
	if ref.Weight == nil {
		return 1
	}
	return *ref.Weight
}
