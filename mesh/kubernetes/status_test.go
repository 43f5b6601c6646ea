package kubernetes

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// fakeView is a clusterView from maps.
type fakeView struct {
	services map[string]*corev1.Service // "ns/name"
	grants   map[string]bool            // "fromNS>toNS/name"
}

func (v fakeView) service(ns, name string) *corev1.Service { return v.services[ns+"/"+name] }
func (v fakeView) permitted(fromNS, toNS, name string) bool {
	return v.grants[fromNS+">"+toNS+"/"+name]
}

// svcWithPorts is a Service with named TCP ports ("http:80").
func svcWithPorts(ns, name string, ports ...string) *corev1.Service {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	for _, p := range ports {
		pn, num, _ := strings.Cut(p, ":")
		var n int32
		fmt.Sscan(num, &n)
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: pn, Port: n})
	}
	return svc
}

// condition summarizes a condition as "Status/Reason".
func condition(conds []metav1.Condition, typ string) string {
	c := meta.FindStatusCondition(conds, typ)
	if c == nil {
		return "missing"
	}
	return string(c.Status) + "/" + c.Reason
}

func TestParentStatuses(t *testing.T) {
	view := fakeView{
		services: map[string]*corev1.Service{
			"shop/web":         svcWithPorts("shop", "web", "http:80", "grpc:9090"),
			"shop/web-primary": svcWithPorts("shop", "web-primary", "http:80"),
			"shop/web-canary":  svcWithPorts("shop", "web-canary", "http:80"),
			"other/api":        svcWithPorts("other", "api", "http:80"),
			"other/granted":    svcWithPorts("other", "granted", "http:80"),
			"shop/ext":         {ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "ext"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, Ports: []corev1.ServicePort{{Port: 80}}}},
		},
		grants: map[string]bool{"shop>other/granted": true},
	}
	type parent struct {
		accepted, resolved string
		msg                []string // substrings of the Accepted or ResolvedRefs messages
	}
	tests := []struct {
		name  string
		route string
		want  []parent
	}{
		{
			name: "accepted and resolved",
			route: `
metadata: {name: r, namespace: shop, generation: 3}
spec:
  parentRefs:
  - {group: "", kind: Service, name: web, port: 80}
  rules:
  - backendRefs:
    - {name: web-primary, port: 80, weight: 90}
    - {name: web-canary, port: 80, weight: 10}
`,
			want: []parent{{"True/Accepted", "True/ResolvedRefs", []string{"attached to Service shop/web"}}},
		},
		{
			name: "missing parents and a Gateway parent skipped",
			route: `
metadata: {name: r, namespace: shop}
spec:
  parentRefs:
  - {name: some-gateway}
  - {group: core, kind: Service, name: nope}
  - {group: "", kind: Service, name: web, port: 8080}
  - {group: "", kind: Service, name: web, sectionName: admin}
  - {group: "", kind: Service, name: ext}
  - {group: "", kind: Service, name: web, sectionName: grpc}
  rules:
  - backendRefs: [{name: web, port: 80}]
`,
			want: []parent{
				{"False/NoMatchingParent", "True/ResolvedRefs", []string{"Service shop/nope does not exist"}},
				{"False/NoMatchingParent", "True/ResolvedRefs", []string{"has no port 8080"}},
				{"False/NoMatchingParent", "True/ResolvedRefs", []string{`has no port named "admin"`}},
				{"False/NoMatchingParent", "True/ResolvedRefs", []string{"ExternalName"}},
				{"True/Accepted", "True/ResolvedRefs", nil},
			},
		},
		{
			name: "backend not found",
			route: `
metadata: {name: r, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
  - backendRefs:
    - {name: web-primary, port: 80}
    - {name: web-gone, port: 80}
    - {name: web-canary, port: 8080}
`,
			want: []parent{{"True/Accepted", "False/BackendNotFound", []string{
				"spec.rules[0].backendRefs[1]: Service shop/web-gone not found",
				"spec.rules[0].backendRefs[2]: Service shop/web-canary has no TCP port 8080",
			}}},
		},
		{
			name: "invalid kind first",
			route: `
metadata: {name: r, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
  - backendRefs:
    - {group: example.com, kind: Bucket, name: b}
    - {name: web-gone, port: 80}
`,
			want: []parent{{"True/Accepted", "False/InvalidKind", []string{"Bucket.example.com is not supported", "web-gone not found"}}},
		},
		{
			name: "cross namespace",
			route: `
metadata: {name: r, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
  - backendRefs:
    - {name: granted, namespace: other, port: 80}
    - {name: api, namespace: other, port: 80}
`,
			want: []parent{{"True/Accepted", "False/RefNotPermitted", []string{"Service other/api is in another namespace and no ReferenceGrant"}}},
		},
		{
			name: "consumer route to its parent, and a mirror not permitted",
			route: `
metadata: {name: r, namespace: other}
spec:
  parentRefs: [{group: "", kind: Service, name: web, namespace: shop, port: 80}]
  rules:
  - filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: web-canary, namespace: shop, port: 80}}
    backendRefs:
    - {name: web, namespace: shop, port: 80}
`,
			want: []parent{{"True/Accepted", "False/RefNotPermitted", []string{"spec.rules[0].filters[0].requestMirror.backendRef: Service shop/web-canary"}}},
		},
		{
			name: "compile problems in the Accepted message",
			route: `
metadata: {name: r, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - matches: [{path: {type: RegularExpression, value: "(["}}]
    backendRefs: [{name: web, port: 80}]
`,
			want: []parent{{"True/Accepted", "True/ResolvedRefs", []string{"with problems: spec.rules[0].matches[0]"}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := decode[gatewayv1.HTTPRoute](t, tt.route)
			got := parentStatuses(view, rt)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d parent statuses, want %d: %s", len(got), len(tt.want), dump(got))
			}
			for i, w := range tt.want {
				g := got[i]
				if g.ControllerName != ControllerName {
					t.Errorf("parent %d: controllerName %q", i, g.ControllerName)
				}
				if a := condition(g.Conditions, "Accepted"); a != w.accepted {
					t.Errorf("parent %d (%s): Accepted = %s, want %s: %s", i, g.ParentRef.Name, a, w.accepted, dump(g.Conditions))
				}
				if r := condition(g.Conditions, "ResolvedRefs"); r != w.resolved {
					t.Errorf("parent %d (%s): ResolvedRefs = %s, want %s: %s", i, g.ParentRef.Name, r, w.resolved, dump(g.Conditions))
				}
				all := ""
				for _, c := range g.Conditions {
					all += c.Message + "\n"
					if c.ObservedGeneration != rt.Generation {
						t.Errorf("parent %d: %s observedGeneration %d, want %d", i, c.Type, c.ObservedGeneration, rt.Generation)
					}
				}
				for _, m := range w.msg {
					if !strings.Contains(all, m) {
						t.Errorf("parent %d: messages do not say %q:\n%s", i, m, all)
					}
				}
			}
		})
	}
}

func TestMergeParentStatuses(t *testing.T) {
	t0 := metav1.NewTime(time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC))
	t1 := metav1.NewTime(t0.Add(time.Hour))
	ref := func(name string) gatewayv1.ParentReference {
		return gatewayv1.ParentReference{Group: ptr(gatewayv1.Group("")), Kind: ptr(gatewayv1.Kind("Service")), Name: gatewayv1.ObjectName(name)}
	}
	cond := func(typ string, st metav1.ConditionStatus, reason string, at metav1.Time) metav1.Condition {
		return metav1.Condition{Type: typ, Status: st, Reason: reason, Message: reason, ObservedGeneration: 1, LastTransitionTime: at}
	}
	other := gatewayv1.RouteParentStatus{ParentRef: ref("web"), ControllerName: "example.com/other",
		Conditions: []metav1.Condition{cond("Accepted", metav1.ConditionTrue, "Accepted", t0)}}
	old := []gatewayv1.RouteParentStatus{
		other,
		{ParentRef: ref("web"), ControllerName: ControllerName, Conditions: []metav1.Condition{
			cond("Accepted", metav1.ConditionTrue, "Accepted", t0),
			cond("ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs", t0),
			cond("Stale", metav1.ConditionTrue, "Stale", t0),
		}},
		{ParentRef: ref("gone"), ControllerName: ControllerName, Conditions: []metav1.Condition{cond("Accepted", metav1.ConditionTrue, "Accepted", t0)}},
	}
	ours := []gatewayv1.RouteParentStatus{{ParentRef: ref("web"), ControllerName: ControllerName, Conditions: []metav1.Condition{
		cond("Accepted", metav1.ConditionTrue, "Accepted", metav1.Time{}),
		cond("ResolvedRefs", metav1.ConditionFalse, "BackendNotFound", metav1.Time{}),
	}}}

	got := mergeParentStatuses(old, ours, t1)
	if len(got) != 2 || got[0].ControllerName != "example.com/other" || got[1].ControllerName != ControllerName || got[1].ParentRef.Name != "web" {
		t.Fatalf("merged = %s; want the other controller's entry, then ours for web only", dump(got))
	}
	conds := got[1].Conditions
	if len(conds) != 2 {
		t.Fatalf("conditions = %s; want Accepted and ResolvedRefs only", dump(conds))
	}
	if c := meta.FindStatusCondition(conds, "Accepted"); !c.LastTransitionTime.Equal(&t0) {
		t.Errorf("unchanged Accepted moved its lastTransitionTime to %s", c.LastTransitionTime)
	}
	if c := meta.FindStatusCondition(conds, "ResolvedRefs"); !c.LastTransitionTime.Equal(&t1) || c.Reason != "BackendNotFound" {
		t.Errorf("changed ResolvedRefs = %s; want BackendNotFound at %s", dump(c), t1)
	}
	// Merging again changes nothing.
	if again := mergeParentStatuses(got, ours, metav1.NewTime(t1.Add(time.Hour))); dump(again) != dump(got) {
		t.Errorf("merging the same status again changed it:\n%s\n%s", dump(again), dump(got))
	}
	// Nothing of ours and nothing before: an empty list, never null.
	if got := mergeParentStatuses(nil, nil, t1); got == nil || len(got) != 0 {
		t.Errorf("empty merge = %#v", got)
	}
}

func TestStatusWriter(t *testing.T) {
	route := decode[gatewayv1.HTTPRoute](t, `
metadata: {name: web-split, namespace: shop, generation: 2}
spec:
  parentRefs:
  - {group: "", kind: Service, name: web, port: 80}
  - {group: "", kind: Service, name: missing}
  rules:
  - backendRefs: [{name: web, port: 80}]
status:
  parents:
  - parentRef: {name: gw}
    controllerName: example.com/gateway
    conditions: [{type: Accepted, status: "True", reason: Accepted, message: ok, lastTransitionTime: "2030-01-01T00:00:00Z"}]
`)
	fc := startFake(t, decode[corev1.Service](t, webService), route)
	w := NewStatusWriter(fc.src, fc.gw, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	status := func() []gatewayv1.RouteParentStatus {
		rt, err := fc.gw.GatewayV1().HTTPRoutes("shop").Get(ctx, "web-split", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return rt.Status.Parents
	}
	summary := func(ps []gatewayv1.RouteParentStatus) string {
		var out []string
		for _, p := range ps {
			out = append(out, fmt.Sprintf("%s %s %s %s", p.ControllerName, p.ParentRef.Name,
				condition(p.Conditions, "Accepted"), condition(p.Conditions, "ResolvedRefs")))
		}
		return strings.Join(out, "; ")
	}
	want := "example.com/gateway gw True/Accepted missing; " +
		"sluice.dev/gateway-controller web True/Accepted True/ResolvedRefs; " +
		"sluice.dev/gateway-controller missing False/NoMatchingParent True/ResolvedRefs"
	poll(t, "the route's status", func() (bool, string) {
		got := summary(status())
		return got == want, got
	})

	// Nothing changed: nothing is written.
	updates := func() int {
		n := 0
		for _, a := range fc.gw.Actions() {
			if a.GetVerb() == "update" && a.GetSubresource() == "status" {
				n++
			}
		}
		return n
	}
	// Let the informer see the written status first, then sync by hand.
	poll(t, "the informer to see the status", func() (bool, string) {
		obj, _, _ := fc.src.routes.GetIndexer().GetByKey("shop/web-split")
		got := summary(obj.(*gatewayv1.HTTPRoute).Status.Parents)
		return got == want, got
	})
	before := updates()
	if failed := w.SyncAll(ctx); failed != 0 {
		t.Fatalf("SyncAll: %d failed", failed)
	}
	if n := updates(); n != before {
		t.Errorf("SyncAll of an up-to-date route wrote its status %d times", n-before)
	}

	// The missing Service appears: its parent is accepted.
	if _, err := fc.kube.CoreV1().Services("shop").Create(ctx, svcWithPorts("shop", "missing", "http:80"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want = strings.Replace(want, "missing False/NoMatchingParent", "missing True/Accepted", 1)
	poll(t, "the new parent to be accepted", func() (bool, string) {
		got := summary(status())
		return got == want, got
	})
}
