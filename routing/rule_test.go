package routing

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/mesh/api/routetable"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// compileRules compiles one producer route for web.shop with the given rules YAML.
func compileRules(t *testing.T, rulesYAML string) ([]routetable.Rule, []string) {
	t.Helper()
	rules, errs := Compile(webSvc, parseRoutesOrOne(t, rulesYAML), "")
	return rules, errStrings(errs)
}

func parseRoutesOrOne(t *testing.T, rulesYAML string) []gatewayv1.HTTPRoute {
	t.Helper()
	return []gatewayv1.HTTPRoute{webRoute(t, "r", rulesYAML)}
}

func w(v uint32) *uint32 { return &v }

// checkErrors asserts that errs are exactly the wanted substrings, in order.
func checkErrors(t *testing.T, errs, want []string) {
	t.Helper()
	if len(errs) != len(want) {
		t.Fatalf("errors:\n  %s\nwant %d matching:\n  %s", strings.Join(errs, "\n  "), len(want), strings.Join(want, "\n  "))
	}
	for i := range want {
		if !strings.Contains(errs[i], want[i]) {
			t.Errorf("error %d = %q, want it to contain %q", i, errs[i], want[i])
		}
	}
}

func TestCompileMatches(t *testing.T) {
	tests := []struct {
		name    string
		rules   string
		want    []routetable.Match
		wantErr []string
	}{
		{
			name:  "no matches is prefix slash",
			rules: "  - backendRefs: [{name: v1, port: 80}]\n",
			want:  []routetable.Match{{PathType: routetable.PathPrefix, Path: "/"}},
		},
		{
			name:  "defaults: path type PathPrefix, value /, header and query Exact",
			rules: "  - matches: [{path: {value: /a}}, {path: {type: Exact}}, {headers: [{name: X-A, value: b}], queryParams: [{name: q, value: v}]}]\n",
			want: []routetable.Match{ // in precedence order
				{PathType: routetable.PathExact, Path: "/"},
				{PathType: routetable.PathPrefix, Path: "/a"},
				{PathType: routetable.PathPrefix, Path: "/",
					Headers:     []routetable.ValueMatch{{Type: routetable.ValueExact, Name: "X-A", Value: "b"}},
					QueryParams: []routetable.ValueMatch{{Type: routetable.ValueExact, Name: "q", Value: "v"}}},
			},
		},
		{
			name: "regular expressions and method",
			rules: `  - matches:
    - path: {type: RegularExpression, value: "/items/[0-9]+"}
      method: DELETE
      headers: [{type: RegularExpression, name: cookie, value: ".*canary=1.*"}]
      queryParams: [{type: RegularExpression, name: id, value: "[a-z]+"}]
`,
			want: []routetable.Match{{
				PathType: routetable.PathRegex, Path: "/items/[0-9]+", Method: "DELETE",
				Headers:     []routetable.ValueMatch{{Type: routetable.ValueRegex, Name: "cookie", Value: ".*canary=1.*"}},
				QueryParams: []routetable.ValueMatch{{Type: routetable.ValueRegex, Name: "id", Value: "[a-z]+"}},
			}},
		},
		{
			name: "matches that cannot be evaluated are dropped, the others kept",
			rules: `  - matches:
    - path: {type: RegularExpression, value: "/a("}
    - path: {type: PathPrefix, value: relative}
    - headers: [{type: RegularExpression, name: x, value: "[z"}]
    - queryParams: [{type: Prefix, name: x, value: "z"}]
    - path: {type: Glob, value: /x}
    - path: {value: /kept}
`,
			want: []routetable.Match{{PathType: routetable.PathPrefix, Path: "/kept"}},
			wantErr: []string{
				`spec.rules[0].matches[0].path.value: invalid RE2 regular expression "/a("`,
				`spec.rules[0].matches[1].path.value: PathPrefix path "relative" must start with '/'`,
				`spec.rules[0].matches[2].headers[0].value: invalid RE2`,
				`spec.rules[0].matches[3].queryParams[0].type: unsupported match type "Prefix"`,
				`spec.rules[0].matches[4].path.type: unsupported path match type "Glob"`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules, errs := compileRules(t, tt.rules)
			checkErrors(t, errs, tt.wantErr)
			var got []routetable.Match
			for _, r := range rules {
				got = append(got, r.Match)
				if len(r.Backends) == 0 {
					t.Errorf("rule %s has no backends", describe(r))
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("matches:\n%s\nwant:\n%s", toJSON(got), toJSON(tt.want))
			}
		})
	}
}

func TestCompileMatchesShareTheRule(t *testing.T) {
	rules, errs := compileRules(t, `  - matches: [{path: {value: /a}}, {path: {value: /b}}]
    backendRefs: [{name: v1, port: 80, weight: 3}]
    timeouts: {request: 5s}
`)
	checkErrors(t, errs, nil)
	if len(rules) != 2 {
		t.Fatalf("got %d rules, want 2", len(rules))
	}
	for _, r := range rules {
		if r.Route != "shop/r" || r.RuleIndex != 0 || r.Timeouts.Request.D() != 5*time.Second ||
			!reflect.DeepEqual(r.Backends, []routetable.Backend{{Service: "v1.shop:80", Weight: w(3)}}) {
			t.Errorf("rule %s", toJSON(r))
		}
	}
}

func TestCompileBackends(t *testing.T) {
	tests := []struct {
		name    string
		rules   string
		want    []routetable.Backend
		wantErr []string
	}{
		{
			name:  "weights: unset stays nil, zero and explicit are kept",
			rules: "  - backendRefs: [{name: a, port: 80}, {name: b, port: 8080, weight: 0}, {name: c, port: 80, weight: 1000000}]\n",
			want: []routetable.Backend{
				{Service: "a.shop:80"}, {Service: "b.shop:8080", Weight: w(0)}, {Service: "c.shop:80", Weight: w(1000000)},
			},
		},
		{
			name:  "group core or empty, kind Service or unset, other namespace",
			rules: "  - backendRefs: [{group: core, kind: Service, name: a, port: 80}, {group: \"\", name: b, namespace: other, port: 81}]\n",
			want:  []routetable.Backend{{Service: "a.shop:80"}, {Service: "b.other:81"}},
		},
		{
			name:  "no backendRefs sends to the parent service",
			rules: "  - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x, value: y}]}}]\n",
			want:  []routetable.Backend{{Service: "web.shop:80"}},
		},
		{
			name: "invalid backends keep their share as an empty service",
			rules: `  - backendRefs:
    - {name: good, port: 80, weight: 70}
    - {group: example.com, kind: Bucket, name: b, weight: 20}
    - {kind: ServiceImport, name: si, port: 80, weight: 5}
    - {name: noport, weight: 5}
`,
			want: []routetable.Backend{
				{Service: "good.shop:80", Weight: w(70)}, {Weight: w(20)}, {Weight: w(5)}, {Weight: w(5)},
			},
			wantErr: []string{
				"spec.rules[0].backendRefs[1]: Bucket.example.com is not supported",
				"spec.rules[0].backendRefs[2]: kind ServiceImport is not supported",
				"spec.rules[0].backendRefs[3]: port is required for Service noport",
			},
		},
		{
			name: "per-backend header filters",
			rules: `  - backendRefs:
    - name: canary
      port: 80
      filters:
      - type: ResponseHeaderModifier
        responseHeaderModifier: {add: [{name: Set-Cookie, value: "canary=1; Max-Age=60"}]}
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: x-variant, value: canary}], remove: [x-debug]}
`,
			want: []routetable.Backend{{
				Service:         "canary.shop:80",
				RequestHeaders:  &routetable.HeaderModifier{Set: []routetable.Header{{Name: "x-variant", Value: "canary"}}, Remove: []string{"x-debug"}},
				ResponseHeaders: &routetable.HeaderModifier{Add: []routetable.Header{{Name: "Set-Cookie", Value: "canary=1; Max-Age=60"}}},
			}},
		},
		{
			name: "unsupported per-backend filter invalidates that backend only",
			rules: `  - backendRefs:
    - {name: a, port: 80, filters: [{type: URLRewrite, urlRewrite: {hostname: x}}]}
    - {name: b, port: 80}
`,
			want:    []routetable.Backend{{}, {Service: "b.shop:80"}},
			wantErr: []string{"spec.rules[0].backendRefs[0].filters[0]: URLRewrite is not supported on a backendRef"},
		},
		{
			name:    "negative weight becomes 0",
			rules:   "  - backendRefs: [{name: a, port: 80, weight: -3}]\n",
			want:    []routetable.Backend{{Service: "a.shop:80", Weight: w(0)}},
			wantErr: []string{"spec.rules[0].backendRefs[0].weight: weight -3 is negative"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules, errs := compileRules(t, tt.rules)
			checkErrors(t, errs, tt.wantErr)
			if len(rules) != 1 {
				t.Fatalf("got %d rules", len(rules))
			}
			if !reflect.DeepEqual(rules[0].Backends, tt.want) {
				t.Fatalf("backends:\n%s\nwant:\n%s", toJSON(rules[0].Backends), toJSON(tt.want))
			}
		})
	}
}

func TestCompileFilters(t *testing.T) {
	tests := []struct {
		name    string
		rules   string
		want    routetable.Filters
		wantErr []string
		invalid bool
	}{
		{
			name: "header modifiers",
			rules: `  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Set, value: "1"}]
        add: [{name: X-Add, value: "2"}]
        remove: [X-Remove]
    - type: ResponseHeaderModifier
      responseHeaderModifier: {set: [{name: Cache-Control, value: no-store}]}
`,
			want: routetable.Filters{
				RequestHeaders: &routetable.HeaderModifier{
					Set: []routetable.Header{{Name: "X-Set", Value: "1"}}, Add: []routetable.Header{{Name: "X-Add", Value: "2"}}, Remove: []string{"X-Remove"},
				},
				ResponseHeaders: &routetable.HeaderModifier{Set: []routetable.Header{{Name: "Cache-Control", Value: "no-store"}}},
			},
		},
		{
			name: "URLRewrite prefix and hostname",
			rules: `  - matches: [{path: {value: /old}}]
    filters: [{type: URLRewrite, urlRewrite: {hostname: new.example, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}}]
`,
			want: routetable.Filters{URLRewrite: &routetable.URLRewrite{Hostname: "new.example", PathType: "ReplacePrefixMatch", Path: "/new"}},
		},
		{
			name:  "URLRewrite full path",
			rules: "  - filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /all}}}]\n",
			want:  routetable.Filters{URLRewrite: &routetable.URLRewrite{PathType: "ReplaceFullPath", Path: "/all"}},
		},
		{
			name: "RequestRedirect with everything",
			rules: `  - matches: [{path: {value: /old}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, hostname: example.org, port: 8443, statusCode: 301, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}}]
`,
			want: routetable.Filters{Redirect: &routetable.Redirect{Scheme: "https", Hostname: "example.org", Port: 8443, StatusCode: 301, PathType: "ReplacePrefixMatch", Path: "/new"}},
		},
		{
			name:  "RequestRedirect status defaults to 302",
			rules: "  - filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org}}]\n",
			want:  routetable.Filters{Redirect: &routetable.Redirect{Hostname: "example.org", StatusCode: 302}},
		},
		{
			name: "RequestMirror: all, percent, fraction, fraction default denominator",
			rules: `  - backendRefs: [{name: v1, port: 80}]
    filters:
    - {type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 80}}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: shadow2, namespace: test, port: 81}, percent: 25}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: shadow3, port: 80}, fraction: {numerator: 1, denominator: 3}}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: shadow4, port: 80}, fraction: {numerator: 5}}}
`,
			want: routetable.Filters{Mirrors: []routetable.Mirror{
				{Backend: "shadow.shop:80", Numerator: 100, Denominator: 100},
				{Backend: "shadow2.test:81", Numerator: 25, Denominator: 100},
				{Backend: "shadow3.shop:80", Numerator: 1, Denominator: 3},
				{Backend: "shadow4.shop:80", Numerator: 5, Denominator: 100},
			}},
		},
		{
			name: "unusable mirror is dropped, the rule stays valid",
			rules: `  - backendRefs: [{name: v1, port: 80}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow}}}]
`,
			wantErr: []string{"spec.rules[0].filters[0].requestMirror.backendRef: port is required for Service shadow; mirror ignored"},
		},
		{
			name:    "ExtensionRef is not supported",
			rules:   "  - filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Thing, name: t}}]\n",
			wantErr: []string{"httproute shop/r: spec.rules[0].filters[0]: ExtensionRef is not supported"},
			invalid: true,
		},
		{
			name:    "CORS is not supported",
			rules:   "  - filters: [{type: CORS, cors: {allowOrigins: [\"https://a.example\"]}}]\n",
			wantErr: []string{"spec.rules[0].filters[0]: CORS is not supported"},
			invalid: true,
		},
		{
			name:    "ExternalAuth is not supported",
			rules:   "  - filters: [{type: ExternalAuth, externalAuth: {protocol: HTTP, backendRef: {name: auth, port: 80}}}]\n",
			wantErr: []string{"spec.rules[0].filters[0]: ExternalAuth is not supported"},
			invalid: true,
		},
		{
			name:    "unknown filter type",
			rules:   "  - filters: [{type: Teleport}]\n",
			wantErr: []string{`spec.rules[0].filters[0].type: unknown filter type "Teleport"`},
			invalid: true,
		},
		{
			name:    "filter type without its settings",
			rules:   "  - filters: [{type: RequestHeaderModifier}]\n",
			wantErr: []string{"spec.rules[0].filters[0]: requestHeaderModifier must be set"},
			invalid: true,
		},
		{
			name:    "repeated header filter",
			rules:   "  - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {}}, {type: RequestHeaderModifier, requestHeaderModifier: {}}]\n",
			wantErr: []string{"spec.rules[0].filters[1]: RequestHeaderModifier filter is repeated"},
			invalid: true,
		},
		{
			name: "redirect with backendRefs",
			rules: `  - backendRefs: [{name: v1, port: 80}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: x.example}}]
`,
			wantErr: []string{"spec.rules[0]: RequestRedirect cannot be used together with backendRefs"},
			invalid: true,
		},
		{
			name:    "redirect with rewrite",
			rules:   "  - filters: [{type: RequestRedirect, requestRedirect: {hostname: x.example}}, {type: URLRewrite, urlRewrite: {hostname: y.example}}]\n",
			wantErr: []string{"spec.rules[0].filters: RequestRedirect and URLRewrite cannot be used together"},
			invalid: true,
		},
		{
			name: "ReplacePrefixMatch needs PathPrefix matches",
			rules: `  - matches: [{path: {value: /a}}, {path: {type: Exact, value: /b}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /c}}}]
`,
			wantErr: []string{"spec.rules[0].filters: URLRewrite with ReplacePrefixMatch needs PathPrefix matches, but matches[1] is Exact"},
			invalid: true,
		},
		{
			name:    "path modifier without its value",
			rules:   "  - filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath}}}]\n",
			wantErr: []string{"spec.rules[0].filters[0].urlRewrite.path.replaceFullPath: must be set for type ReplaceFullPath"},
			invalid: true,
		},
		{
			name:    "redirect bad scheme and status",
			rules:   "  - filters: [{type: RequestRedirect, requestRedirect: {scheme: ftp, statusCode: 300}}]\n",
			wantErr: []string{`requestRedirect.scheme: unsupported scheme "ftp"`, "requestRedirect.statusCode: unsupported status code 300"},
			invalid: true,
		},
		{
			name: "mirror with both percent and fraction",
			rules: `  - backendRefs: [{name: v1, port: 80}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: s, port: 80}, percent: 5, fraction: {numerator: 1}}}]
`,
			wantErr: []string{"spec.rules[0].filters[0].requestMirror: only one of percent and fraction may be set"},
			invalid: true,
		},
		{
			name: "mirror fraction above one",
			rules: `  - backendRefs: [{name: v1, port: 80}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: s, port: 80}, fraction: {numerator: 5, denominator: 4}}}]
`,
			wantErr: []string{"spec.rules[0].filters[0].requestMirror.fraction: fraction 5/4"},
			invalid: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules, errs := compileRules(t, tt.rules)
			checkErrors(t, errs, tt.wantErr)
			if len(rules) == 0 {
				t.Fatal("no rules")
			}
			for _, r := range rules {
				if tt.invalid {
					if len(r.Backends) != 0 || r.Filters.Redirect != nil || !reflect.DeepEqual(r.Filters, routetable.Filters{}) {
						t.Fatalf("invalid rule must compile to a 500 (no backends, no filters): %s", toJSON(r))
					}
					continue
				}
				if !reflect.DeepEqual(r.Filters, tt.want) {
					t.Fatalf("filters:\n%s\nwant:\n%s", toJSON(r.Filters), toJSON(tt.want))
				}
				if r.Filters.Redirect != nil && len(r.Backends) != 0 {
					t.Errorf("redirect rule has backends %v", r.Backends)
				}
				if r.Filters.Redirect == nil && len(r.Backends) == 0 {
					t.Errorf("valid rule has no backends")
				}
			}
		})
	}
}

func TestCompileTimeoutsAndRetry(t *testing.T) {
	tests := []struct {
		name         string
		rules        string
		wantTimeouts routetable.Timeouts
		wantRetry    *routetable.Retry
		wantErr      []string
		invalid      bool
	}{
		{
			name:         "timeouts",
			rules:        "  - timeouts: {request: 10s, backendRequest: 1500ms}\n",
			wantTimeouts: routetable.Timeouts{Request: routetable.Duration(10 * time.Second), BackendRequest: routetable.Duration(1500 * time.Millisecond)},
		},
		{
			name:         "0s means none",
			rules:        "  - timeouts: {request: 0s, backendRequest: 1m}\n",
			wantTimeouts: routetable.Timeouts{BackendRequest: routetable.Duration(time.Minute)},
		},
		{
			name:    "bad duration",
			rules:   "  - timeouts: {request: soon}\n",
			wantErr: []string{`spec.rules[0].timeouts.request: invalid duration "soon"`},
			invalid: true,
		},
		{
			name:    "backendRequest above request",
			rules:   "  - timeouts: {request: 1s, backendRequest: 2s}\n",
			wantErr: []string{"spec.rules[0].timeouts.backendRequest: backendRequest 2s must not exceed request 1s"},
			invalid: true,
		},
		{
			name:      "retry",
			rules:     "  - retry: {codes: [500, 503, 429], attempts: 3, backoff: 100ms}\n",
			wantRetry: &routetable.Retry{Codes: []int{500, 503, 429}, Attempts: 3, Backoff: routetable.Duration(100 * time.Millisecond)},
		},
		{
			name:      "retry attempts default to 1",
			rules:     "  - retry: {codes: [502]}\n",
			wantRetry: &routetable.Retry{Codes: []int{502}, Attempts: 1},
		},
		{
			name:  "retry attempts 0 disables",
			rules: "  - retry: {codes: [502], attempts: 0}\n",
		},
		{
			name:    "retry bad code",
			rules:   "  - retry: {codes: [302]}\n",
			wantErr: []string{"spec.rules[0].retry.codes[0]: status 302 out of range 400-599"},
			invalid: true,
		},
		{
			name:    "retry bad backoff",
			rules:   "  - retry: {backoff: fast}\n",
			wantErr: []string{`spec.rules[0].retry.backoff: invalid duration "fast"`},
			invalid: true,
		},
		{
			name:    "sessionPersistence is reported and ignored",
			rules:   "  - sessionPersistence: {sessionName: s}\n",
			wantErr: []string{"spec.rules[0].sessionPersistence: sessionPersistence is not supported; ignored"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules, errs := compileRules(t, tt.rules)
			checkErrors(t, errs, tt.wantErr)
			if len(rules) != 1 {
				t.Fatalf("got %d rules", len(rules))
			}
			r := rules[0]
			if tt.invalid {
				if len(r.Backends) != 0 || r.Retry != nil || r.Timeouts != (routetable.Timeouts{}) {
					t.Fatalf("invalid rule must compile to a 500: %s", toJSON(r))
				}
				return
			}
			if r.Timeouts != tt.wantTimeouts {
				t.Errorf("timeouts %s, want %s", toJSON(r.Timeouts), toJSON(tt.wantTimeouts))
			}
			if !reflect.DeepEqual(r.Retry, tt.wantRetry) {
				t.Errorf("retry %s, want %s", toJSON(r.Retry), toJSON(tt.wantRetry))
			}
			if len(r.Backends) == 0 {
				t.Error("valid rule has no backends")
			}
		})
	}
}

func TestCompileInvalidRuleKeepsOtherRules(t *testing.T) {
	rules, errs := compileRules(t, `  - matches: [{path: {value: /ok-before}}]
    backendRefs: [{name: v1, port: 80}]
  - matches: [{path: {value: /bad}}]
    filters: [{type: ExtensionRef, extensionRef: {group: x, kind: y, name: z}}]
    backendRefs: [{name: v1, port: 80}]
  - matches: [{path: {value: /ok-after}}]
    backendRefs: [{name: v2, port: 80}]
`)
	checkErrors(t, errs, []string{"spec.rules[1].filters[0]: ExtensionRef is not supported"})
	got := map[string]int{}
	for _, r := range rules {
		got[r.Match.Path] = len(r.Backends)
	}
	want := map[string]int{"/ok-before": 1, "/bad": 0, "/ok-after": 1}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("backends per path %v, want %v", got, want)
	}
}
