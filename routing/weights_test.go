package routing

import (
	"reflect"
	"testing"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// canaryRoute is a Flagger-style route with user rules around the canary's.
const canaryRoute = `
metadata: {name: podinfo, namespace: test}
spec:
  parentRefs: [{group: core, kind: Service, name: podinfo, port: 9898}]
  rules:
  - matches: [{headers: [{name: x-canary, value: always}]}]
    backendRefs: [{name: podinfo-canary, port: 9898}]
  - matches: [{path: {value: /admin}}]
    backendRefs: [{name: admin, port: 80}]
  - backendRefs:
    - {name: podinfo-primary, port: 9898, weight: 100}
    - {name: podinfo-canary, port: 9898, weight: 0}
    - {name: podinfo-canary, namespace: elsewhere, port: 9898, weight: 7}
    - {group: example.com, kind: Bucket, name: podinfo-canary, weight: 9}
`

func TestBackendWeights(t *testing.T) {
	rt := parseRoutes(t, canaryRoute)[0]
	got := BackendWeights(&rt, "podinfo-primary", "podinfo-canary")
	want := []RuleWeights{
		{Rule: 0, Weights: map[string]int32{"podinfo-canary": 1}},
		{Rule: 2, Weights: map[string]int32{"podinfo-primary": 100, "podinfo-canary": 0}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("BackendWeights = %+v, want %+v", got, want)
	}
	if got := BackendWeights(&rt, "nothing"); got != nil {
		t.Fatalf("BackendWeights(nothing) = %+v", got)
	}
	if got := BackendWeights(nil, "x"); got != nil {
		t.Fatalf("BackendWeights(nil) = %+v", got)
	}
}

func TestSetBackendWeights(t *testing.T) {
	tests := []struct {
		name        string
		weights     map[string]int32
		wantChanged bool
		// want are the weights of every backendRef by rule, nil meaning unset.
		want [][]*int32
	}{
		{
			name:        "shift to 90/10, pins untouched",
			weights:     map[string]int32{"podinfo-primary": 90, "podinfo-canary": 10},
			wantChanged: true,
			want:        [][]*int32{{nil}, {nil}, {ptr[int32](90), ptr[int32](10), ptr[int32](7), ptr[int32](9)}},
		},
		{
			name:        "roll back to 100/0, the always-canary pin is not zeroed",
			weights:     map[string]int32{"podinfo-primary": 100, "podinfo-canary": 0},
			wantChanged: false,
			want:        [][]*int32{{nil}, {nil}, {ptr[int32](100), ptr[int32](0), ptr[int32](7), ptr[int32](9)}},
		},
		{
			name:        "unset weight equal to 1 stays unset",
			weights:     map[string]int32{"podinfo-primary": 100, "podinfo-canary": 1},
			wantChanged: true,
			want:        [][]*int32{{nil}, {nil}, {ptr[int32](100), ptr[int32](1), ptr[int32](7), ptr[int32](9)}},
		},
		{
			name:        "a single service changes every rule naming it",
			weights:     map[string]int32{"podinfo-canary": 5},
			wantChanged: true,
			want:        [][]*int32{{ptr[int32](5)}, {nil}, {ptr[int32](100), ptr[int32](5), ptr[int32](7), ptr[int32](9)}},
		},
		{
			name:    "a service the split rule lacks changes nothing",
			weights: map[string]int32{"podinfo-primary": 50, "podinfo-canary": 50, "podinfo-other": 3},
			want:    [][]*int32{{nil}, {nil}, {ptr[int32](100), ptr[int32](0), ptr[int32](7), ptr[int32](9)}},
		},
		{
			name:    "unknown service changes nothing",
			weights: map[string]int32{"other": 5},
			want:    [][]*int32{{nil}, {nil}, {ptr[int32](100), ptr[int32](0), ptr[int32](7), ptr[int32](9)}},
		},
		{
			name: "empty map changes nothing",
			want: [][]*int32{{nil}, {nil}, {ptr[int32](100), ptr[int32](0), ptr[int32](7), ptr[int32](9)}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := parseRoutes(t, canaryRoute)[0]
			before := rt.DeepCopy()
			changed := SetBackendWeights(&rt, tt.weights)
			if changed != tt.wantChanged {
				t.Errorf("changed=%v, want %v", changed, tt.wantChanged)
			}
			var got [][]*int32
			for _, r := range rt.Spec.Rules {
				var ws []*int32
				for _, b := range r.BackendRefs {
					ws = append(ws, b.Weight)
				}
				got = append(got, ws)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("weights %s, want %s", toJSON(got), toJSON(tt.want))
			}
			// Nothing but weights may change.
			after := rt.DeepCopy()
			for _, r := range []*gatewayv1.HTTPRoute{before, after} {
				for i := range r.Spec.Rules {
					for j := range r.Spec.Rules[i].BackendRefs {
						r.Spec.Rules[i].BackendRefs[j].Weight = nil
					}
				}
			}
			if !reflect.DeepEqual(before, after) {
				t.Fatalf("more than weights changed:\n%s\n%s", toJSON(before), toJSON(after))
			}
			// A second identical call is a no-op.
			if SetBackendWeights(&rt, tt.weights) {
				t.Error("second SetBackendWeights reported a change")
			}
		})
	}
	if SetBackendWeights(nil, map[string]int32{"a": 1}) {
		t.Error("SetBackendWeights(nil) reported a change")
	}
}

func TestSetBackendWeightsThenCompile(t *testing.T) {
	rt := parseRoutes(t, canaryRoute)[0]
	SetBackendWeights(&rt, map[string]int32{"podinfo-primary": 60, "podinfo-canary": 40})
	svc := ServicePort{Name: "podinfo", Namespace: "test", Port: 9898}
	rules, _ := Compile(svc, []gatewayv1.HTTPRoute{rt}, "")
	last := rules[len(rules)-1]
	if len(last.Backends) != 4 || *last.Backends[0].Weight != 60 || *last.Backends[1].Weight != 40 {
		t.Fatalf("compiled catch-all rule %s", toJSON(last))
	}
}
