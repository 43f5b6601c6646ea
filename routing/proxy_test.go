package routing_test

import (
	"net/textproto"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/proxy/route"
	"github.com/sluicehq/sluice/routing"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"
)

type request struct {
	method, path, query string
	header              textproto.MIMEHeader
}

func (r *request) Method() string   { return r.method }
func (r *request) Path() string     { return r.path }
func (r *request) RawQuery() string { return r.query }
func (r *request) Header(name string) (string, bool) {
	v := r.header[textproto.CanonicalMIMEHeaderKey(name)]
	if len(v) == 0 {
		return "", false
	}
	return v[0], true
}

// TestCompiledRulesRunInTheProxy compiles the realistic routes and runs requests
// through the proxy's route table: what the compiler emits must load and route as
// the Gateway API says.
func TestCompiledRulesRunInTheProxy(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("testdata", "realistic.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var routes []gatewayv1.HTTPRoute
	for _, doc := range strings.Split(string(src), "\n---\n") {
		var rt gatewayv1.HTTPRoute
		if err := yaml.UnmarshalStrict([]byte(doc), &rt); err != nil {
			t.Fatal(err)
		}
		routes = append(routes, rt)
	}
	svc := routing.ServicePort{Name: "podinfo", Namespace: "test", Port: 9898, PortName: "http"}
	rules, _ := routing.Compile(svc, routes, "")
	table, err := route.NewTable(&routetable.Service{Name: "podinfo", Namespace: "test", Port: 9898, Rules: rules})
	if err != nil {
		t.Fatalf("the proxy rejects the compiled rules: %v", err)
	}

	tests := []struct {
		name    string
		req     string
		headers []string
		want    []string // services that may be picked; "500" for an invalid rule, "redirect <location>"
	}{
		{"health goes to the service", "GET /healthz", nil, []string{"podinfo.test:9898"}},
		{"admin query", "GET /api/users?admin=true", nil, []string{"podinfo-admin.test:9898"}},
		{"api split", "GET /api/users", nil, []string{"podinfo-primary.test:9898", "podinfo-canary.test:9898"}},
		{"api split beats the header pin (longer prefix)", "GET /api/users", []string{"X-Canary: always"}, []string{"podinfo-primary.test:9898", "podinfo-canary.test:9898"}},
		{"header pin", "POST /orders", []string{"X-Canary: always"}, []string{"podinfo-canary.test:9898"}},
		{"cookie pin", "GET /", []string{"Cookie: a=1; canary=always"}, []string{"podinfo-canary.test:9898"}},
		{"redirect", "GET /old/page?x=1", nil, []string{"redirect http://podinfo.test:9898/new/page?x=1 301"}},
		{"unsupported filter", "GET /ext/thing", nil, []string{"500"}},
		{"catch-all split; the zero-weight invalid backend is never picked", "GET /items/1", nil, []string{"podinfo-primary.test:9898", "podinfo-canary.test:9898"}},
	}
	var seed uint64
	rnd := func() uint64 { seed = seed*6364136223846793005 + 1442695040888963407; return seed }
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method, target, _ := strings.Cut(tt.req, " ")
			path, query, _ := strings.Cut(target, "?")
			req := &request{method: method, path: path, query: query, header: textproto.MIMEHeader{}}
			for _, h := range tt.headers {
				k, v, _ := strings.Cut(h, ":")
				req.header.Add(k, strings.TrimSpace(v))
			}
			r := table.Match(req)
			if r == nil {
				t.Fatal("no rule matched")
			}
			seen := map[string]bool{}
			for range 200 {
				var got string
				switch {
				case r.Invalid():
					got = "500"
				case r.Spec.Filters.Redirect != nil:
					loc, status, _ := r.RedirectLocation("http", "podinfo.test:9898", 9898, req.path, req.query)
					got = "redirect " + loc + " " + strconv.Itoa(status)
				default:
					b, ok := r.PickBackend(func(string) bool { return true }, rnd)
					if !ok {
						t.Fatal("no backend")
					}
					got = b.Service
				}
				seen[got] = true
			}
			for _, w := range tt.want {
				if !seen[w] {
					t.Errorf("never got %q; got %v", w, seen)
				}
				delete(seen, w)
			}
			if len(seen) > 0 {
				t.Errorf("unexpected outcomes %v", seen)
			}
		})
	}
}
