package routing

import (
	"encoding/json"
	"strings"
	"testing"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"
)

// webSvc is the service most tests attach to: web.shop, port 80 named "http".
var webSvc = ServicePort{Name: "web", Namespace: "shop", Port: 80, PortName: "http", ClusterIPs: []string{"10.0.0.10"}}

// parseRoutes reads HTTPRoutes from YAML documents separated by "---".
func parseRoutes(t testing.TB, docs string) []gatewayv1.HTTPRoute {
	t.Helper()
	var out []gatewayv1.HTTPRoute
	for _, doc := range strings.Split(docs, "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var rt gatewayv1.HTTPRoute
		if err := yaml.UnmarshalStrict([]byte(doc), &rt); err != nil {
			t.Fatalf("parse route: %v\n%s", err, doc)
		}
		out = append(out, rt)
	}
	return out
}

// webRoute wraps rules YAML (indented as under "rules:") into a producer route for web.shop.
func webRoute(t testing.TB, name, rulesYAML string) gatewayv1.HTTPRoute {
	t.Helper()
	return parseRoutes(t, `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: `+name+`, namespace: shop}
spec:
  parentRefs: [{group: core, kind: Service, name: web, port: 80}]
  rules:
`+rulesYAML)[0]
}

func toJSON(v any) string {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err.Error()
	}
	return string(b)
}

func ptr[T any](v T) *T { return &v }

func errStrings(errs []RouteError) []string {
	var out []string
	for _, e := range errs {
		out = append(out, e.Error())
	}
	return out
}
