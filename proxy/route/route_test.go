package route

import (
	"net/textproto"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

// fakeRequest implements Request over a MIME header map, as the HTTP/1 server does.
type fakeRequest struct {
	method, path, query string
	header              textproto.MIMEHeader
}

func (r *fakeRequest) Method() string   { return r.method }
func (r *fakeRequest) Path() string     { return r.path }
func (r *fakeRequest) RawQuery() string { return r.query }
func (r *fakeRequest) Header(name string) (string, bool) {
	v := r.header[textproto.CanonicalMIMEHeaderKey(name)]
	if len(v) == 0 {
		return "", false
	}
	return v[0], true
}

// req builds a request from "METHOD /path?query" and "Name: value" header lines.
func req(line string, headers ...string) *fakeRequest {
	method, target, ok := strings.Cut(line, " ")
	if !ok {
		method, target = "GET", line
	}
	path, query, _ := strings.Cut(target, "?")
	r := &fakeRequest{method: method, path: path, query: query, header: textproto.MIMEHeader{}}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ":")
		r.header.Add(k, strings.TrimSpace(v))
	}
	return r
}

func svcWith(rules ...routetable.Rule) *routetable.Service {
	return &routetable.Service{Name: "web", Namespace: "shop", Port: 80, Rules: rules}
}

func mustTable(t testing.TB, svc *routetable.Service) *Table {
	t.Helper()
	tb, err := NewTable(svc)
	if err != nil {
		t.Fatalf("NewTable: %v", err)
	}
	return tb
}

func backend(key string, w ...uint32) routetable.Backend {
	b := routetable.Backend{Service: key}
	if len(w) > 0 {
		b.Weight = &w[0]
	}
	return b
}

func TestMatch(t *testing.T) {
	type probe struct {
		req  *fakeRequest
		want bool
	}
	tests := []struct {
		name   string
		match  routetable.Match
		probes []probe
	}{
		{
			name:  "exact path",
			match: routetable.Match{PathType: routetable.PathExact, Path: "/abc"},
			probes: []probe{
				{req("/abc"), true},
				{req("/abc/"), false},
				{req("/Abc"), false},
				{req("/abcd"), false},
				{req("/abc?x=1"), true},
			},
		},
		{
			name:  "prefix is segment-aware",
			match: routetable.Match{PathType: routetable.PathPrefix, Path: "/foo"},
			probes: []probe{
				{req("/foo"), true},
				{req("/foo/"), true},
				{req("/foo/bar"), true},
				{req("/foobar"), false},
				{req("/fo"), false},
				{req("/"), false},
				{req("/Foo"), false},
			},
		},
		{
			name:  "prefix trailing slash is ignored",
			match: routetable.Match{PathType: routetable.PathPrefix, Path: "/foo/"},
			probes: []probe{
				{req("/foo"), true},
				{req("/foo/"), true},
				{req("/foo/bar"), true},
				{req("/foobar"), false},
			},
		},
		{
			name:   "prefix slash matches everything",
			match:  routetable.Match{PathType: routetable.PathPrefix, Path: "/"},
			probes: []probe{{req("/"), true}, {req("/a/b"), true}, {req(""), true}},
		},
		{
			name:   "empty match is prefix slash",
			match:  routetable.Match{},
			probes: []probe{{req("/"), true}, {req("/anything"), true}},
		},
		{
			name:   "empty type with a path is a prefix",
			match:  routetable.Match{Path: "/v2"},
			probes: []probe{{req("/v2/x"), true}, {req("/v22"), false}},
		},
		{
			name:  "regex path is a full match",
			match: routetable.Match{PathType: routetable.PathRegex, Path: `/items/[0-9]+`},
			probes: []probe{
				{req("/items/42"), true},
				{req("/items/42/x"), false},
				{req("/x/items/42"), false},
				{req("/items/"), false},
			},
		},
		{
			name:  "regex alternation stays anchored",
			match: routetable.Match{PathType: routetable.PathRegex, Path: `/a|/b`},
			probes: []probe{
				{req("/a"), true},
				{req("/b"), true},
				{req("/ab"), false},
				{req("/bx"), false},
			},
		},
		{
			name: "header exact, name case-insensitive, value exact",
			match: routetable.Match{Headers: []routetable.ValueMatch{
				{Type: routetable.ValueExact, Name: "x-Version", Value: "v2"},
			}},
			probes: []probe{
				{req("/", "X-Version: v2"), true},
				{req("/", "x-version: v2"), true},
				{req("/", "X-Version: V2"), false},
				{req("/", "X-Version: v2x"), false},
				{req("/"), false},
			},
		},
		{
			name: "header default type is exact, first value counts",
			match: routetable.Match{Headers: []routetable.ValueMatch{
				{Name: "env", Value: "canary"},
			}},
			probes: []probe{
				{req("/", "Env: canary", "Env: prod"), true},
				{req("/", "Env: prod", "Env: canary"), false},
			},
		},
		{
			name: "header regex is a full match",
			match: routetable.Match{Headers: []routetable.ValueMatch{
				{Type: routetable.ValueRegex, Name: "cookie", Value: `.*canary=always.*`},
			}},
			probes: []probe{
				{req("/", "Cookie: a=b; canary=always; c=d"), true},
				{req("/", "Cookie: canary=never"), false},
			},
		},
		{
			name: "all headers must match",
			match: routetable.Match{Headers: []routetable.ValueMatch{
				{Name: "a", Value: "1"}, {Name: "b", Value: "2"},
			}},
			probes: []probe{
				{req("/", "A: 1", "B: 2"), true},
				{req("/", "A: 1"), false},
				{req("/", "A: 1", "B: 3"), false},
			},
		},
		{
			name: "query exact, first value, names exact",
			match: routetable.Match{QueryParams: []routetable.ValueMatch{
				{Type: routetable.ValueExact, Name: "animal", Value: "whale"},
			}},
			probes: []probe{
				{req("/?animal=whale"), true},
				{req("/?x=1&animal=whale&y=2"), true},
				{req("/?animal=whale&animal=dolphin"), true},
				{req("/?animal=dolphin&animal=whale"), false},
				{req("/?Animal=whale"), false},
				{req("/?animal=whales"), false},
				{req("/?animal"), false},
				{req("/"), false},
			},
		},
		{
			name: "query values and names are decoded",
			match: routetable.Match{QueryParams: []routetable.ValueMatch{
				{Name: "full name", Value: "a b/c"},
			}},
			probes: []probe{
				{req("/?full+name=a+b%2Fc"), true},
				{req("/?full%20name=a%20b/c"), true},
				{req("/?full+name=a+b"), false},
			},
		},
		{
			name: "query regex",
			match: routetable.Match{QueryParams: []routetable.ValueMatch{
				{Type: routetable.ValueRegex, Name: "id", Value: `[0-9]{3}`},
			}},
			probes: []probe{
				{req("/?id=123"), true},
				{req("/?id=1234"), false},
				{req("/?id="), false},
			},
		},
		{
			name:  "method",
			match: routetable.Match{Method: "POST"},
			probes: []probe{
				{req("POST /x"), true},
				{req("GET /x"), false},
				{req("post /x"), false},
			},
		},
		{
			name: "everything together",
			match: routetable.Match{
				PathType:    routetable.PathPrefix,
				Path:        "/api",
				Method:      "GET",
				Headers:     []routetable.ValueMatch{{Name: "x-canary", Value: "1"}},
				QueryParams: []routetable.ValueMatch{{Name: "debug", Value: "on"}},
			},
			probes: []probe{
				{req("GET /api/v1?debug=on", "X-Canary: 1"), true},
				{req("PUT /api/v1?debug=on", "X-Canary: 1"), false},
				{req("GET /apiv1?debug=on", "X-Canary: 1"), false},
				{req("GET /api/v1?debug=off", "X-Canary: 1"), false},
				{req("GET /api/v1?debug=on"), false},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := mustTable(t, svcWith(routetable.Rule{Match: tt.match, Backends: []routetable.Backend{backend("a.shop:80")}}))
			for _, p := range tt.probes {
				got := tb.Match(p.req) != nil
				if got != p.want {
					t.Errorf("%s %s?%s %v: matched=%v, want %v", p.req.method, p.req.path, p.req.query, p.req.header, got, p.want)
				}
			}
		})
	}
}

func TestMatchFollowsSliceOrder(t *testing.T) {
	// The compiler orders by precedence; the table must honour the order it is given.
	rules := []routetable.Rule{
		{Route: "shop/r", RuleIndex: 0, Match: routetable.Match{PathType: routetable.PathExact, Path: "/login"}},
		{Route: "shop/r", RuleIndex: 1, Match: routetable.Match{PathType: routetable.PathPrefix, Path: "/api/v2"}},
		{Route: "shop/r", RuleIndex: 2, Match: routetable.Match{PathType: routetable.PathPrefix, Path: "/api", Method: "POST"}},
		{Route: "shop/r", RuleIndex: 3, Match: routetable.Match{PathType: routetable.PathPrefix, Path: "/api",
			Headers: []routetable.ValueMatch{{Name: "a", Value: "1"}, {Name: "b", Value: "1"}}}},
		{Route: "shop/r", RuleIndex: 4, Match: routetable.Match{PathType: routetable.PathPrefix, Path: "/api",
			Headers: []routetable.ValueMatch{{Name: "a", Value: "1"}}}},
		{Route: "shop/r", RuleIndex: 5, Match: routetable.Match{PathType: routetable.PathPrefix, Path: "/api"}},
		{Route: "shop/r", RuleIndex: 6, Match: routetable.Match{PathType: routetable.PathPrefix, Path: "/"}},
		{Route: "shop/r", RuleIndex: 7, Match: routetable.Match{PathType: routetable.PathRegex, Path: "/never.*"}},
	}
	for i := range rules {
		rules[i].Backends = []routetable.Backend{backend("a.shop:80")}
	}
	tb := mustTable(t, svcWith(rules...))
	tests := []struct {
		req  *fakeRequest
		want int
	}{
		{req("GET /login"), 0},
		{req("POST /api/v2/x"), 1},
		{req("POST /api/v1"), 2},
		{req("GET /api/v1", "A: 1", "B: 1"), 3},
		{req("GET /api/v1", "A: 1"), 4},
		{req("GET /api"), 5},
		{req("GET /login/x"), 6},
		{req("GET /never/reached"), 6},
	}
	for _, tt := range tests {
		r := tb.Match(tt.req)
		if r == nil || r.Spec.RuleIndex != tt.want {
			got := -1
			if r != nil {
				got = r.Spec.RuleIndex
			}
			t.Errorf("%s %s %v: rule %d, want %d", tt.req.method, tt.req.path, tt.req.header, got, tt.want)
		}
	}
}

func TestMatchNoRulesDefaultsToService(t *testing.T) {
	svc := &routetable.Service{Name: "web", Namespace: "shop", Port: 8080}
	tb := mustTable(t, svc)
	r := tb.Match(req("DELETE /any/thing?x=y"))
	if r == nil {
		t.Fatal("no rule for a service without rules")
	}
	b, ok := r.PickBackend(nil, fixedRand(0))
	if !ok || b.Service != "web.shop:8080" {
		t.Fatalf("default rule picked %v, %v; want web.shop:8080", b, ok)
	}
	if r.Invalid() {
		t.Error("default rule reported invalid")
	}
}

func TestMatchNoneIsNil(t *testing.T) {
	tb := mustTable(t, svcWith(routetable.Rule{
		Match:    routetable.Match{PathType: routetable.PathExact, Path: "/only"},
		Backends: []routetable.Backend{backend("a.shop:80")},
	}))
	if r := tb.Match(req("/other")); r != nil {
		t.Fatalf("matched %+v, want nil (404)", r.Spec)
	}
}

func TestInvalidRule(t *testing.T) {
	tb := mustTable(t, svcWith(
		routetable.Rule{Match: routetable.Match{Path: "/bad"}},
		routetable.Rule{Match: routetable.Match{Path: "/redirect"}, Filters: routetable.Filters{Redirect: &routetable.Redirect{Hostname: "x"}}},
	))
	if r := tb.Match(req("/bad")); r == nil || !r.Invalid() {
		t.Error("rule without backends and redirect not reported invalid")
	}
	if r := tb.Match(req("/redirect")); r == nil || r.Invalid() {
		t.Error("redirect rule reported invalid")
	}
}

func TestNewTableErrors(t *testing.T) {
	ok := routetable.Rule{Backends: []routetable.Backend{backend("a.shop:80")}}
	tests := []struct {
		name string
		bad  routetable.Rule
		want []string
	}{
		{"bad path regex", routetable.Rule{Match: routetable.Match{PathType: routetable.PathRegex, Path: "/a("}},
			[]string{"rule 1", "match.path", "/a("}},
		{"regex escaping anchors", routetable.Rule{Match: routetable.Match{PathType: routetable.PathRegex, Path: "a)|(b"}},
			[]string{"rule 1", "match.path"}},
		{"bad header regex", routetable.Rule{Route: "shop/r", RuleIndex: 3, Match: routetable.Match{Headers: []routetable.ValueMatch{{Name: "a", Value: "1"}, {Type: routetable.ValueRegex, Name: "x", Value: "[z"}}}},
			[]string{"rule 1", "route shop/r rule 3", "match.headers[1].value"}},
		{"bad query regex", routetable.Rule{Match: routetable.Match{QueryParams: []routetable.ValueMatch{{Type: routetable.ValueRegex, Name: "x", Value: "*"}}}},
			[]string{"rule 1", "match.queryParams[0].value"}},
		{"unknown path type", routetable.Rule{Match: routetable.Match{PathType: "Glob", Path: "/a"}},
			[]string{"rule 1", "match.pathType", "Glob"}},
		{"unknown value type", routetable.Rule{Match: routetable.Match{Headers: []routetable.ValueMatch{{Type: "Prefix", Name: "x"}}}},
			[]string{"match.headers[0].type", "Prefix"}},
		{"empty header name", routetable.Rule{Match: routetable.Match{Headers: []routetable.ValueMatch{{Value: "x"}}}},
			[]string{"match.headers[0].name"}},
		{"relative exact path", routetable.Rule{Match: routetable.Match{PathType: routetable.PathExact, Path: "a"}},
			[]string{"match.path", "must start with '/'"}},
		{"relative prefix", routetable.Rule{Match: routetable.Match{PathType: routetable.PathPrefix, Path: "a"}},
			[]string{"match.path"}},
		{"mirror without backend", routetable.Rule{Filters: routetable.Filters{Mirrors: []routetable.Mirror{{}}}},
			[]string{"filters.mirrors[0].backend"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewTable(svcWith(ok, tt.bad))
			if err == nil {
				t.Fatal("NewTable succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	if _, err := NewTable(nil); err == nil {
		t.Error("NewTable(nil) succeeded")
	}
}

func TestTableRules(t *testing.T) {
	tb := mustTable(t, svcWith(routetable.Rule{RuleIndex: 7}))
	if rs := tb.Rules(); len(rs) != 1 || rs[0].Spec.RuleIndex != 7 {
		t.Fatalf("Rules() = %+v", rs)
	}
}
