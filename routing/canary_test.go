package routing_test

import (
	"encoding/json"
	"net/textproto"
	"strings"
	"testing"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/proxy/route"
	"github.com/sluicehq/sluice/routing"
)

// podinfoCR is the CanaryRoute of podinfo in "test", port 9898.
func podinfoCR(owned bool) routing.CanaryRoute {
	return routing.CanaryRoute{Apex: "podinfo", Primary: "podinfo-primary", Canary: "podinfo-canary", Port: 9898, Owned: owned}
}

func parseRoute(t *testing.T, doc string) *gatewayv1.HTTPRoute {
	t.Helper()
	var rt gatewayv1.HTTPRoute
	if err := yaml.UnmarshalStrict([]byte(doc), &rt); err != nil {
		t.Fatalf("parse route: %v\n%s", err, doc)
	}
	return &rt
}

const routeHead = `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: podinfo, namespace: test}
spec:
  parentRefs: [{group: core, kind: Service, name: podinfo, port: 9898}]
  rules:
`

// ownedRoute is the route Sluice creates: one rule, primary 100, canary 0.
func ownedRoute(t *testing.T) *gatewayv1.HTTPRoute {
	return parseRoute(t, routeHead+`
  - backendRefs:
    - {group: "", kind: Service, name: podinfo-primary, port: 9898, weight: 100}
    - {group: "", kind: Service, name: podinfo-canary, port: 9898, weight: 0}
`)
}

// userRoute has three rules; only the middle one is the traffic split.
func userRoute(t *testing.T) *gatewayv1.HTTPRoute {
	return parseRoute(t, routeHead+`
  - matches: [{path: {type: Exact, value: /healthz}}]
    backendRefs: [{name: podinfo, port: 9898}]
  - matches: [{path: {type: PathPrefix, value: /api}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-via, value: split}]}
    backendRefs:
    - {name: podinfo-primary, port: 9898, weight: 100}
    - {name: podinfo-canary, port: 9898, weight: 0}
  - matches: [{headers: [{name: x-admin, value: "1"}]}]
    backendRefs: [{name: podinfo-admin, port: 9898}]
`)
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func ruleNamed(rt *gatewayv1.HTTPRoute, name string) *gatewayv1.HTTPRouteRule {
	for i := range rt.Spec.Rules {
		if r := &rt.Spec.Rules[i]; r.Name != nil && string(*r.Name) == name {
			return r
		}
	}
	return nil
}

func TestCanaryRouteOwnedWeights(t *testing.T) {
	cr := podinfoCR(true)
	rt := ownedRoute(t)
	initial := jsonOf(t, rt.Spec)
	for _, tt := range []struct {
		primary, canary int
		changed         bool
	}{{100, 0, false}, {90, 10, true}, {50, 50, true}, {0, 100, true}, {100, 0, true}} {
		if got := cr.Apply(rt, tt.primary, tt.canary, false, false); got != tt.changed {
			t.Errorf("Apply(%d, %d) changed = %v, want %v", tt.primary, tt.canary, got, tt.changed)
		}
		if cr.Apply(rt, tt.primary, tt.canary, false, false) {
			t.Errorf("Apply(%d, %d) twice changed the route", tt.primary, tt.canary)
		}
		p, c, mirrored, matched, ok := cr.Observe(rt)
		if !ok || p != tt.primary || c != tt.canary || mirrored || matched {
			t.Errorf("Observe after Apply(%d, %d) = %d, %d, mirrored %v, matched %v, ok %v", tt.primary, tt.canary, p, c, mirrored, matched, ok)
		}
		if len(rt.Spec.Rules) != 1 {
			t.Errorf("Apply(%d, %d): %d rules, want 1", tt.primary, tt.canary, len(rt.Spec.Rules))
		}
	}
	if got := jsonOf(t, rt.Spec); got != initial {
		t.Errorf("back at 100/0 the route is\n%s\nwant\n%s", got, initial)
	}
}

func TestCanaryRouteOwnedWithoutSplitIsRewritten(t *testing.T) {
	cr := podinfoCR(true)
	rt := parseRoute(t, routeHead+`
  - backendRefs: [{name: elsewhere, port: 9898}]
`)
	if !cr.Apply(rt, 90, 10, false, false) {
		t.Fatal("Apply did not change an owned route without a split rule")
	}
	if p, c, _, _, ok := cr.Observe(rt); !ok || p != 90 || c != 10 {
		t.Errorf("Observe = %d, %d, ok %v; want 90, 10", p, c, ok)
	}
	if len(rt.Spec.Rules) != 1 {
		t.Errorf("%d rules, want 1:\n%s", len(rt.Spec.Rules), jsonOf(t, rt.Spec.Rules))
	}
}

// states are the states a run goes through; every Apply must leave the user's
// other rules byte-identical.
var states = []struct {
	name            string
	primary, canary int
	match, mirror   bool
}{
	{"initial", 100, 0, false, false},
	{"mirror", 100, 0, false, true},
	{"step", 90, 10, false, false},
	{"step with mirror", 70, 30, false, true},
	{"a/b", 0, 100, true, false},
	{"a/b with mirror", 0, 100, true, true},
	{"all on canary", 0, 100, false, false},
	{"promoted", 100, 0, false, false},
}

func TestCanaryRouteUserRulesUntouched(t *testing.T) {
	cr := podinfoCR(false)
	cr.Match = []gatewayv1.HTTPRouteMatch{{Headers: []gatewayv1.HTTPHeaderMatch{{Name: "x-canary", Value: "insider"}}}}
	cr.MirrorPercent = 25
	cr.Affinity = &v1beta1.SessionAffinity{CookieName: "canary-session", MaxAge: 60}
	cr.AffinityValue = "rev1"
	rt := userRoute(t)
	initial := jsonOf(t, rt.Spec)
	health, admin := jsonOf(t, rt.Spec.Rules[0]), jsonOf(t, rt.Spec.Rules[2])
	for _, st := range states {
		t.Run(st.name, func(t *testing.T) {
			cr.Apply(rt, st.primary, st.canary, st.match, st.mirror)
			n := len(rt.Spec.Rules)
			if got := jsonOf(t, rt.Spec.Rules[0]); got != health {
				t.Errorf("first user rule changed:\n%s\nwant\n%s", got, health)
			}
			if got := jsonOf(t, rt.Spec.Rules[n-1]); got != admin {
				t.Errorf("last user rule changed:\n%s\nwant\n%s", got, admin)
			}
			if cr.Apply(rt, st.primary, st.canary, st.match, st.mirror) {
				t.Error("applying the same state twice changed the route")
			}
			p, c, mirrored, matched, ok := cr.Observe(rt)
			if !ok || p != st.primary || c != st.canary || mirrored != st.mirror || matched != st.match {
				t.Errorf("Observe = %d, %d, mirrored %v, matched %v, ok %v", p, c, mirrored, matched, ok)
			}
		})
	}
	if got := jsonOf(t, rt.Spec); got != initial {
		t.Errorf("after the run the route is\n%s\nwant\n%s", got, initial)
	}
}

func TestCanaryRouteABRule(t *testing.T) {
	cr := podinfoCR(false)
	cr.Match = []gatewayv1.HTTPRouteMatch{{Headers: []gatewayv1.HTTPHeaderMatch{{Name: "x-canary", Value: "insider"}}}}
	rt := userRoute(t)
	initial := jsonOf(t, rt.Spec)
	if !cr.Apply(rt, 0, 100, true, false) {
		t.Fatal("A/B Apply changed nothing")
	}
	if len(rt.Spec.Rules) != 4 {
		t.Fatalf("%d rules, want 4", len(rt.Spec.Rules))
	}
	ab := &rt.Spec.Rules[1]
	if ab.Name == nil || string(*ab.Name) != routing.ABRuleName {
		t.Fatalf("rule 1 is %s, want the A/B rule before the split", jsonOf(t, ab))
	}
	// The A/B rule has the split rule's path and filter and the test's header.
	want := `[{"path":{"type":"PathPrefix","value":"/api"},"headers":[{"name":"x-canary","value":"insider"}]}]`
	if got := jsonOf(t, ab.Matches); got != want {
		t.Errorf("A/B matches = %s, want %s", got, want)
	}
	if len(ab.Filters) != 1 || ab.Filters[0].Type != gatewayv1.HTTPRouteFilterRequestHeaderModifier {
		t.Errorf("A/B filters = %s, want the split rule's header modifier", jsonOf(t, ab.Filters))
	}
	if got := jsonOf(t, rt.Spec.Rules[2].BackendRefs); !strings.Contains(got, `"name":"podinfo-primary","port":9898,"weight":100`) ||
		!strings.Contains(got, `"name":"podinfo-canary","port":9898,"weight":0`) {
		t.Errorf("during A/B the split rule must send everything to the primary: %s", got)
	}
	if cr.Apply(rt, 100, 0, false, false) != true || jsonOf(t, rt.Spec) != initial {
		t.Errorf("at the end of the run the A/B rule must go:\n%s", jsonOf(t, rt.Spec))
	}
}

func TestCanaryRouteMirror(t *testing.T) {
	for _, tt := range []struct {
		percent int32
		want    string
	}{
		{0, `{"type":"RequestMirror","requestMirror":{"backendRef":{"group":"","kind":"Service","name":"podinfo-canary","port":9898}}}`},
		{40, `{"type":"RequestMirror","requestMirror":{"backendRef":{"group":"","kind":"Service","name":"podinfo-canary","port":9898},"percent":40}}`},
	} {
		cr := podinfoCR(true)
		cr.MirrorPercent = tt.percent
		rt := ownedRoute(t)
		if !cr.Apply(rt, 100, 0, false, true) {
			t.Fatal("mirror Apply changed nothing")
		}
		if got := jsonOf(t, rt.Spec.Rules[0].Filters); got != "["+tt.want+"]" {
			t.Errorf("filters = %s, want [%s]", got, tt.want)
		}
		// Changing the percent updates the filter in place.
		cr.MirrorPercent = 10
		if !cr.Apply(rt, 100, 0, false, true) || len(rt.Spec.Rules[0].Filters) != 1 || *rt.Spec.Rules[0].Filters[0].RequestMirror.Percent != 10 {
			t.Errorf("new percent: %s", jsonOf(t, rt.Spec.Rules[0].Filters))
		}
		if !cr.Apply(rt, 90, 10, false, false) || rt.Spec.Rules[0].Filters != nil {
			t.Errorf("mirror off left filters %s", jsonOf(t, rt.Spec.Rules[0].Filters))
		}
	}
}

func TestCanaryRouteSessionAffinity(t *testing.T) {
	cr := podinfoCR(true)
	cr.Affinity = &v1beta1.SessionAffinity{CookieName: "canary-session", MaxAge: 60, Path: "/", HTTPOnly: true}
	cr.AffinityValue = "rev1"
	rt := ownedRoute(t)
	// The canary backend already adds a header of the user's: the cookie joins it.
	rt.Spec.Rules[0].BackendRefs[1].Filters = []gatewayv1.HTTPRouteFilter{{
		Type:                   gatewayv1.HTTPRouteFilterResponseHeaderModifier,
		ResponseHeaderModifier: &gatewayv1.HTTPHeaderFilter{Add: []gatewayv1.HTTPHeader{{Name: "x-served-by", Value: "canary"}}},
	}}
	initial := jsonOf(t, rt.Spec)
	if !cr.Apply(rt, 90, 10, false, false) {
		t.Fatal("Apply changed nothing")
	}
	if cr.Apply(rt, 90, 10, false, false) {
		t.Error("applying the same state twice changed the route")
	}
	if len(rt.Spec.Rules) != 2 {
		t.Fatalf("%d rules, want the sticky rule and the split", len(rt.Spec.Rules))
	}
	sticky := ruleNamed(rt, routing.StickyRuleName)
	if sticky != &rt.Spec.Rules[0] {
		t.Fatalf("rule 0 is not the sticky rule: %s", jsonOf(t, rt.Spec.Rules))
	}
	wantMatch := `[{"headers":[{"type":"RegularExpression","name":"Cookie","value":".*canary-session=rev1.*"}]}]`
	if got := jsonOf(t, sticky.Matches); got != wantMatch {
		t.Errorf("sticky matches = %s, want %s", got, wantMatch)
	}
	wantCanary := `{"filters":[{"type":"ResponseHeaderModifier","responseHeaderModifier":{"add":[{"name":"x-served-by","value":"canary"},{"name":"Set-Cookie","value":"canary-session=rev1; Max-Age=60; Path=/; HttpOnly"}]}}]`
	if got := jsonOf(t, rt.Spec.Rules[1].BackendRefs[1]); !strings.Contains(got, wantCanary[1:len(wantCanary)-1]) {
		t.Errorf("canary backendRef = %s, want the Set-Cookie added", got)
	}
	if got := jsonOf(t, sticky.BackendRefs); strings.Contains(got, "Set-Cookie") || !strings.Contains(got, `"name":"podinfo-canary","port":9898,"weight":100`) {
		t.Errorf("sticky backendRefs = %s, want the canary at 100 without the cookie", got)
	}
	if p, c, _, _, ok := cr.Observe(rt); !ok || p != 90 || c != 10 {
		t.Errorf("Observe = %d, %d, %v; the sticky rule must not count", p, c, ok)
	}
	if !cr.Apply(rt, 100, 0, false, false) || jsonOf(t, rt.Spec) != initial {
		t.Errorf("at the end of the run the cookie must go:\n%s\nwant\n%s", jsonOf(t, rt.Spec), initial)
	}
}

func TestCanaryRouteAdoptsApexRule(t *testing.T) {
	cr := podinfoCR(false)
	rt := parseRoute(t, routeHead+`
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: podinfo, port: 9898}]
  - backendRefs: [{name: podinfo-canary, port: 9898}]
    matches: [{headers: [{name: x-pin, value: "1"}]}]
`)
	pin := jsonOf(t, rt.Spec.Rules[1])
	if _, _, _, _, ok := cr.Observe(rt); ok {
		t.Fatal("Observe found a split in a route that has none")
	}
	if !cr.Apply(rt, 80, 20, false, false) {
		t.Fatal("Apply changed nothing")
	}
	if p, c, _, _, ok := cr.Observe(rt); !ok || p != 80 || c != 20 {
		t.Errorf("Observe = %d, %d, %v; want 80, 20", p, c, ok)
	}
	if got := jsonOf(t, rt.Spec.Rules[1]); got != pin {
		t.Errorf("the canary pin changed: %s", got)
	}
	// A user route with nothing to adopt is left alone.
	other := parseRoute(t, routeHead+`
  - backendRefs: [{name: elsewhere, port: 9898}]
`)
	if cr.Apply(other, 90, 10, false, false) {
		t.Error("Apply changed a user route that does not point at the canary")
	}
}

func TestMatchesFrom(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr string
	}{
		{"headers", `[{headers: {x-b: {regex: "a.*"}, x-a: {exact: "1"}, x-c: {prefix: "v1."}, x-d: {suffix: "-beta"}}}]`,
			`[{"headers":[{"type":"Exact","name":"x-a","value":"1"},{"type":"RegularExpression","name":"x-b","value":"a.*"},{"type":"RegularExpression","name":"x-c","value":"v1\\..*"},{"type":"RegularExpression","name":"x-d","value":".*-beta"}]}]`, ""},
		{"uri and method", `[{uri: {prefix: /api}, method: {exact: post}}, {uri: {exact: /x}}, {uri: {regex: "/v[0-9]+"}}]`,
			`[{"path":{"type":"PathPrefix","value":"/api"},"method":"POST"},{"path":{"type":"Exact","value":"/x"}},{"path":{"type":"RegularExpression","value":"/v[0-9]+"}}]`, ""},
		{"ignore case", `[{uri: {exact: /A.b}, ignoreUriCase: true}]`, `[{"path":{"type":"RegularExpression","value":"(?i)/A\\.b"}}]`, ""},
		{"query", `[{queryParams: {beta: {exact: "on"}}}]`, `[{"queryParams":[{"type":"Exact","name":"beta","value":"on"}]}]`, ""},
		{"cookie", `[{headers: {cookie: {regex: "^(.*?;)?(canary=always)(;.*)?$"}}}]`,
			`[{"headers":[{"type":"RegularExpression","name":"cookie","value":"^(.*?;)?(canary=always)(;.*)?$"}]}]`, ""},
		{"bad regex", `[{headers: {x: {regex: "("}}}]`, "", "analysis.match[0].headers[x]: invalid RE2"},
		{"method regex", `[{}, {method: {regex: "GET|POST"}}]`, "", "analysis.match[1].method: only exact"},
		{"withoutHeaders", `[{withoutHeaders: {x: {exact: "1"}}}]`, "", "analysis.match[0].withoutHeaders is not supported"},
		{"authority", `[{authority: {exact: a}}]`, "", "analysis.match[0].authority is not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var in []v1beta1.HTTPMatchRequest
			if err := yaml.UnmarshalStrict([]byte(tt.in), &in); err != nil {
				t.Fatal(err)
			}
			got, err := routing.MatchesFrom(in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s := jsonOf(t, got); s != tt.want {
				t.Errorf("got  %s\nwant %s", s, tt.want)
			}
		})
	}
}

// TestCanaryRouteRunsInTheProxy compiles what Apply wrote and routes requests
// through the proxy's table.
func TestCanaryRouteRunsInTheProxy(t *testing.T) {
	matches, err := routing.MatchesFrom([]v1beta1.HTTPMatchRequest{{Headers: map[string]v1beta1.StringMatch{"x-canary": {Exact: "insider"}}}})
	if err != nil {
		t.Fatal(err)
	}
	const (
		primary = "podinfo-primary.test:9898"
		canary  = "podinfo-canary.test:9898"
	)
	tests := []struct {
		name            string
		primary, canary int
		match, mirror   bool
		affinity        bool
		header          string // "Name: value"
		want            []string
		wantMirror      bool
	}{
		{"a/b: the header goes to the canary", 0, 100, true, false, false, "x-canary: insider", []string{canary}, false},
		{"a/b: without the header to the primary", 0, 100, true, false, false, "", []string{primary}, false},
		{"a/b: another value to the primary", 0, 100, true, false, false, "x-canary: outsider", []string{primary}, false},
		{"split: the header does not matter", 50, 50, false, false, false, "x-canary: insider", []string{primary, canary}, false},
		{"split: both", 50, 50, false, false, false, "", []string{primary, canary}, false},
		{"mirror", 100, 0, false, true, false, "", []string{primary}, true},
		{"affinity: the cookie sticks to the canary", 90, 10, false, false, true, "Cookie: a=1; canary-session=rev1; b=2", []string{canary}, false},
		{"affinity: another run's cookie does not", 90, 10, false, false, true, "Cookie: canary-session=rev0", []string{primary, canary}, false},
		{"affinity: run over, no stickiness", 100, 0, false, false, true, "Cookie: canary-session=rev1", []string{primary}, false},
	}
	var seed uint64
	rnd := func() uint64 { seed = seed*6364136223846793005 + 1442695040888963407; return seed }
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cr := podinfoCR(true)
			cr.Match = matches
			if tt.affinity {
				cr.Affinity = &v1beta1.SessionAffinity{CookieName: "canary-session"}
				cr.AffinityValue = "rev1"
			}
			rt := ownedRoute(t)
			cr.Apply(rt, tt.primary, tt.canary, tt.match, tt.mirror)
			svc := routing.ServicePort{Name: "podinfo", Namespace: "test", Port: 9898, PortName: "http"}
			rules, errs := routing.Compile(svc, []gatewayv1.HTTPRoute{*rt}, "")
			if len(errs) > 0 {
				t.Fatalf("compile errors: %v", errs)
			}
			table, err := route.NewTable(&routetable.Service{Name: "podinfo", Namespace: "test", Port: 9898, Rules: rules})
			if err != nil {
				t.Fatalf("the proxy rejects the compiled rules: %v", err)
			}
			req := &request{method: "GET", path: "/", header: textproto.MIMEHeader{}}
			if k, v, ok := strings.Cut(tt.header, ":"); ok {
				req.header.Add(k, strings.TrimSpace(v))
			}
			r := table.Match(req)
			if r == nil {
				t.Fatal("no rule matched")
			}
			seen := map[string]bool{}
			for range 200 {
				b, ok := r.PickBackend(func(string) bool { return true }, rnd)
				if !ok {
					t.Fatal("no backend")
				}
				seen[b.Service] = true
			}
			for _, w := range tt.want {
				if !seen[w] {
					t.Errorf("never went to %s; went to %v", w, seen)
				}
				delete(seen, w)
			}
			if len(seen) > 0 {
				t.Errorf("unexpected backends %v", seen)
			}
			mirrors := r.Spec.Filters.Mirrors
			if gotMirror := len(mirrors) == 1 && mirrors[0].Backend == canary; gotMirror != tt.wantMirror {
				t.Errorf("mirrors = %+v, want mirror to the canary %v", mirrors, tt.wantMirror)
			}
		})
	}
}
