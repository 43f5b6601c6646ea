package routing

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/mesh/api/routetable"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func TestCompileAttachment(t *testing.T) {
	tests := []struct {
		name      string
		parentRef string
		routeNS   string
		want      bool
	}{
		{"group core", `{group: core, kind: Service, name: web}`, "shop", true},
		{"group empty", `{group: "", kind: Service, name: web}`, "shop", true},
		{"group unset is the Gateway group", `{kind: Service, name: web}`, "shop", false},
		{"gateway group", `{group: gateway.networking.k8s.io, kind: Service, name: web}`, "shop", false},
		{"kind unset is Gateway", `{group: core, name: web}`, "shop", false},
		{"kind Gateway", `{group: core, kind: Gateway, name: web}`, "shop", false},
		{"other name", `{group: core, kind: Service, name: api}`, "shop", false},
		{"explicit same namespace", `{group: core, kind: Service, name: web, namespace: shop}`, "shop", true},
		{"explicit other namespace", `{group: core, kind: Service, name: web, namespace: other}`, "shop", false},
		{"namespace defaults to the route's", `{group: core, kind: Service, name: web}`, "other", false},
		{"port matches", `{group: core, kind: Service, name: web, port: 80}`, "shop", true},
		{"port differs", `{group: core, kind: Service, name: web, port: 8080}`, "shop", false},
		{"sectionName matches", `{group: core, kind: Service, name: web, sectionName: http}`, "shop", true},
		{"sectionName differs", `{group: core, kind: Service, name: web, sectionName: grpc}`, "shop", false},
		{"port and sectionName match", `{group: "", kind: Service, name: web, port: 80, sectionName: http}`, "shop", true},
		{"port matches, sectionName differs", `{group: "", kind: Service, name: web, port: 80, sectionName: admin}`, "shop", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			routes := parseRoutes(t, fmt.Sprintf(`
metadata: {name: r, namespace: %s}
spec:
  parentRefs:
  - {group: core, kind: Service, name: unrelated}
  - %s
  rules:
  - backendRefs: [{name: web-v2, port: 80}]
`, tt.routeNS, tt.parentRef))
			rules, errs := Compile(webSvc, routes, "")
			if len(errs) != 0 {
				t.Fatalf("errors: %v", errs)
			}
			if got := len(rules) > 0; got != tt.want {
				t.Fatalf("attached=%v, want %v", got, tt.want)
			}
		})
	}
}

func TestCompileNoRoutes(t *testing.T) {
	rules, errs := Compile(webSvc, nil, "shop")
	if rules != nil || errs != nil {
		t.Fatalf("got %v %v, want nothing", rules, errs)
	}
}

func TestCompileProducerAndConsumerRoutes(t *testing.T) {
	routes := parseRoutes(t, `
metadata: {name: producer, namespace: shop}
spec:
  parentRefs: [{group: core, kind: Service, name: web}]
  rules: [{backendRefs: [{name: web-producer, port: 80}]}]
---
metadata: {name: consumer, namespace: frontend}
spec:
  parentRefs: [{group: core, kind: Service, name: web, namespace: shop}]
  rules: [{backendRefs: [{name: web-consumer, namespace: shop, port: 80}]}]
---
metadata: {name: consumer2, namespace: frontend}
spec:
  parentRefs: [{group: core, kind: Service, name: web, namespace: shop}]
  rules: [{matches: [{path: {type: Exact, value: /x}}], backendRefs: [{name: web-consumer2, namespace: shop, port: 80}]}]
---
metadata: {name: other-consumer, namespace: batch}
spec:
  parentRefs: [{group: core, kind: Service, name: web, namespace: shop}]
  rules: [{backendRefs: [{name: web-batch, namespace: shop, port: 80}]}]
`)
	tests := []struct {
		client string
		want   []string // routes of the compiled rules, in order
	}{
		{"", []string{"shop/producer"}},
		{"shop", []string{"shop/producer"}},
		{"frontend", []string{"frontend/consumer2", "frontend/consumer"}},
		{"batch", []string{"batch/other-consumer"}},
		{"elsewhere", []string{"shop/producer"}},
	}
	for _, tt := range tests {
		t.Run("client="+tt.client, func(t *testing.T) {
			rules, errs := Compile(webSvc, routes, tt.client)
			if len(errs) != 0 {
				t.Fatalf("errors: %v", errs)
			}
			var got []string
			for _, r := range rules {
				got = append(got, r.Route)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("routes %v, want %v", got, tt.want)
			}
		})
	}
	// A consumer route's backend without a namespace is in the consumer's namespace.
	rules, _ := Compile(webSvc, routes, "batch")
	if got := rules[0].Backends[0].Service; got != "web-batch.shop:80" {
		t.Fatalf("backend %q", got)
	}
}

// describe summarises a compiled rule for precedence tests.
func describe(r routetable.Rule) string {
	s := fmt.Sprintf("%s#%d %s:%s", r.Route, r.RuleIndex, r.Match.PathType, r.Match.Path)
	if r.Match.Method != "" {
		s += " " + r.Match.Method
	}
	if n := len(r.Match.Headers); n > 0 {
		s += fmt.Sprintf(" h%d", n)
	}
	if n := len(r.Match.QueryParams); n > 0 {
		s += fmt.Sprintf(" q%d", n)
	}
	return s
}

func TestCompilePrecedence(t *testing.T) {
	const head = `
spec:
  parentRefs: [{group: core, kind: Service, name: web}]
  rules:
`
	tests := []struct {
		name   string
		routes string
		want   []string
	}{
		{
			name: "exact beats a longer prefix",
			routes: `metadata: {name: r, namespace: shop}` + head + `
  - matches: [{path: {type: PathPrefix, value: /very/long/prefix}}]
  - matches: [{path: {type: Exact, value: /a}}]
`,
			want: []string{"shop/r#1 Exact:/a", "shop/r#0 PathPrefix:/very/long/prefix"},
		},
		{
			name: "longest prefix in characters first",
			routes: `metadata: {name: r, namespace: shop}` + head + `
  - matches: [{path: {value: /}}, {path: {value: /api}}]
  - matches: [{path: {value: /api/v2}}, {path: {value: /api/v2/}}]
`,
			want: []string{"shop/r#1 PathPrefix:/api/v2/", "shop/r#1 PathPrefix:/api/v2", "shop/r#0 PathPrefix:/api", "shop/r#0 PathPrefix:/"},
		},
		{
			name: "regex after every prefix, longer expression first",
			routes: `metadata: {name: r, namespace: shop}` + head + `
  - matches: [{path: {type: RegularExpression, value: "/a.*"}}]
  - matches: [{path: {type: RegularExpression, value: "/api/[0-9]+"}}]
  - {}
  - matches: [{path: {type: Exact, value: /x}}]
`,
			want: []string{"shop/r#3 Exact:/x", "shop/r#2 PathPrefix:/", "shop/r#1 RegularExpression:/api/[0-9]+", "shop/r#0 RegularExpression:/a.*"},
		},
		{
			name: "method, then header count, then query count",
			routes: `metadata: {name: r, namespace: shop}` + head + `
  - matches: [{path: {value: /p}, queryParams: [{name: a, value: "1"}, {name: b, value: "1"}]}]
  - matches: [{path: {value: /p}, headers: [{name: a, value: "1"}], queryParams: [{name: a, value: "1"}]}]
  - matches: [{path: {value: /p}, headers: [{name: a, value: "1"}, {name: b, value: "1"}]}]
  - matches: [{path: {value: /p}, method: GET}]
  - matches: [{path: {value: /p}}]
  - matches: [{path: {value: /p}, headers: [{name: a, value: "1"}]}]
`,
			want: []string{
				"shop/r#3 PathPrefix:/p GET",
				"shop/r#2 PathPrefix:/p h2",
				"shop/r#1 PathPrefix:/p h1 q1",
				"shop/r#5 PathPrefix:/p h1",
				"shop/r#0 PathPrefix:/p q2",
				"shop/r#4 PathPrefix:/p",
			},
		},
		{
			name: "path beats method beats headers",
			routes: `metadata: {name: r, namespace: shop}` + head + `
  - matches: [{path: {value: /a}, method: POST, headers: [{name: x, value: "1"}]}]
  - matches: [{path: {value: /ab}}]
  - matches: [{path: {value: /a}, headers: [{name: x, value: "1"}, {name: y, value: "1"}, {name: z, value: "1"}]}]
`,
			want: []string{"shop/r#1 PathPrefix:/ab", "shop/r#0 PathPrefix:/a POST h1", "shop/r#2 PathPrefix:/a h3"},
		},
		{
			name: "ties: older route, then namespace/name, then rule and match order",
			routes: `
metadata: {name: b-newer, namespace: shop, creationTimestamp: "2026-02-01T00:00:00Z"}` + head + `
  - matches: [{path: {value: /x}}]
---
metadata: {name: z-older, namespace: shop, creationTimestamp: "2026-01-01T00:00:00Z"}` + head + `
  - matches: [{path: {value: /x}}]
---
metadata: {name: a-newer, namespace: shop, creationTimestamp: "2026-02-01T00:00:00Z"}` + head + `
  - matches: [{path: {value: /x}}, {path: {value: /x}, method: GET}]
  - matches: [{path: {value: /x}}]
`,
			want: []string{
				"shop/a-newer#0 PathPrefix:/x GET",
				"shop/z-older#0 PathPrefix:/x",
				"shop/a-newer#0 PathPrefix:/x",
				"shop/a-newer#1 PathPrefix:/x",
				"shop/b-newer#0 PathPrefix:/x",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules, errs := Compile(webSvc, parseRoutes(t, tt.routes), "")
			if len(errs) != 0 {
				t.Fatalf("errors: %v", errs)
			}
			var got []string
			for _, r := range rules {
				got = append(got, describe(r))
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("order:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tt.want, "\n  "))
			}
		})
	}
}

func TestCompilePrecedenceIsIndependentOfInputOrder(t *testing.T) {
	routes := parseRoutes(t, `
metadata: {name: one, namespace: shop, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  parentRefs: [{group: core, kind: Service, name: web}]
  rules: [{matches: [{path: {value: /x}}]}, {matches: [{path: {type: Exact, value: /x}}]}]
---
metadata: {name: two, namespace: shop, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  parentRefs: [{group: core, kind: Service, name: web}]
  rules: [{matches: [{path: {value: /x}}]}]
`)
	a, _ := Compile(webSvc, routes, "")
	b, _ := Compile(webSvc, []gatewayv1.HTTPRoute{routes[1], routes[0]}, "")
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("order depends on input order:\n%s\n%s", toJSON(a), toJSON(b))
	}
}

func TestRouteErrorString(t *testing.T) {
	e := RouteError{Route: "shop/r", Field: "spec.rules[1].filters[0]", Message: "ExtensionRef is not supported"}
	if got, want := e.Error(), "httproute shop/r: spec.rules[1].filters[0]: ExtensionRef is not supported"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	e.Field = ""
	if got, want := e.Error(), "httproute shop/r: ExtensionRef is not supported"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
}
