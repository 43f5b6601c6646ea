package route

import (
	"net/http"
	"reflect"
	"testing"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

func TestApplyHeaders(t *testing.T) {
	h := http.Header{}
	h.Set("Keep", "1")
	h.Set("X-Replace", "old")
	h.Add("X-Append", "a")
	h.Set("X-Drop", "gone")
	ApplyHeaders(&routetable.HeaderModifier{
		Set:    []routetable.Header{{Name: "x-replace", Value: "new"}, {Name: "X-New", Value: "n"}},
		Add:    []routetable.Header{{Name: "x-append", Value: "b"}},
		Remove: []string{"x-drop"},
	}, h)
	want := http.Header{
		"Keep":      {"1"},
		"X-Replace": {"new"},
		"X-New":     {"n"},
		"X-Append":  {"a", "b"},
	}
	if !reflect.DeepEqual(h, want) {
		t.Fatalf("headers = %v, want %v", h, want)
	}
	ApplyHeaders(nil, h) // nil-safe
	if !reflect.DeepEqual(h, want) {
		t.Fatalf("nil modifier changed headers: %v", h)
	}
}

func prefixRule(t *testing.T, prefix string, f routetable.Filters) *Rule {
	t.Helper()
	tb := mustTable(t, svcWith(routetable.Rule{
		Match:    routetable.Match{PathType: routetable.PathPrefix, Path: prefix},
		Filters:  f,
		Backends: []routetable.Backend{backend("a")},
	}))
	return &tb.Rules()[0]
}

func TestRewritePathReplacePrefixMatch(t *testing.T) {
	// The table from the Gateway API HTTPPathModifier.ReplacePrefixMatch doc.
	tests := []struct{ path, prefix, repl, want string }{
		{"/foo/bar", "/foo", "/xyz", "/xyz/bar"},
		{"/foo/bar", "/foo", "/xyz/", "/xyz/bar"},
		{"/foo/bar", "/foo/", "/xyz", "/xyz/bar"},
		{"/foo/bar", "/foo/", "/xyz/", "/xyz/bar"},
		{"/foo", "/foo", "/xyz", "/xyz"},
		{"/foo/", "/foo", "/xyz", "/xyz/"},
		{"/foo/bar", "/foo", "", "/bar"},
		{"/foo/", "/foo", "", "/"},
		{"/foo", "/foo", "", "/"},
		{"/foo/", "/foo", "/", "/"},
		{"/foo", "/foo", "/", "/"},
		// More: prefix "/", deeper paths, a non-matching path is left alone.
		{"/a/b", "/", "/xyz", "/xyz/a/b"},
		{"/", "/", "/xyz", "/xyz/"},
		{"/a/b", "/", "/", "/a/b"},
		{"/foo/bar/baz", "/foo/bar", "/one/two", "/one/two/baz"},
		{"/foobar", "/foo", "/xyz", "/foobar"},
		{"/original-prefix/lemon", "/original-prefix", "/replacement-prefix", "/replacement-prefix/lemon"},
	}
	for _, tt := range tests {
		r := prefixRule(t, tt.prefix, routetable.Filters{URLRewrite: &routetable.URLRewrite{PathType: ReplacePrefixMatch, Path: tt.repl}})
		if got := r.RewritePath(tt.path); got != tt.want {
			t.Errorf("path %q prefix %q replace %q: got %q, want %q", tt.path, tt.prefix, tt.repl, got, tt.want)
		}
	}
}

func TestRewritePathOther(t *testing.T) {
	full := &routetable.URLRewrite{PathType: ReplaceFullPath, Path: "/one"}
	tests := []struct {
		name  string
		match routetable.Match
		rw    *routetable.URLRewrite
		path  string
		want  string
	}{
		{"no rewrite", routetable.Match{Path: "/a"}, nil, "/a/b", "/a/b"},
		{"host only", routetable.Match{Path: "/a"}, &routetable.URLRewrite{Hostname: "x"}, "/a/b", "/a/b"},
		{"full path", routetable.Match{Path: "/a"}, full, "/a/b/c", "/one"},
		{"full path empty", routetable.Match{Path: "/a"}, &routetable.URLRewrite{PathType: ReplaceFullPath}, "/a/b", "/"},
		{"prefix on exact", routetable.Match{PathType: routetable.PathExact, Path: "/a/b"},
			&routetable.URLRewrite{PathType: ReplacePrefixMatch, Path: "/z/"}, "/a/b", "/z"},
		{"prefix on regex is unchanged", routetable.Match{PathType: routetable.PathRegex, Path: "/a.*"},
			&routetable.URLRewrite{PathType: ReplacePrefixMatch, Path: "/z"}, "/a/b", "/a/b"},
		{"relative replacement gets a slash", routetable.Match{Path: "/a"},
			&routetable.URLRewrite{PathType: ReplacePrefixMatch, Path: "z"}, "/a/b", "/z/b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := mustTable(t, svcWith(routetable.Rule{Match: tt.match, Filters: routetable.Filters{URLRewrite: tt.rw}}))
			if got := tb.Rules()[0].RewritePath(tt.path); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRedirectLocation(t *testing.T) {
	type in struct {
		scheme, host string
		port         int
		path, query  string
	}
	mesh := in{"http", "echo", 80, "/port", ""}
	tests := []struct {
		name       string
		prefix     string
		rd         *routetable.Redirect
		in         in
		wantLoc    string
		wantStatus int
	}{
		// MeshHTTPRouteRedirectPort.
		{"port", "/port", &routetable.Redirect{Port: 8083}, mesh, "http://echo:8083/port", 302},
		{"port and host", "/", &routetable.Redirect{Port: 8083, Hostname: "example.org"}, mesh, "http://example.org:8083/port", 302},
		{"port and status", "/", &routetable.Redirect{Port: 8083, StatusCode: 301}, mesh, "http://echo:8083/port", 301},
		// MeshHTTPRouteSchemeRedirect.
		{"scheme", "/", &routetable.Redirect{Scheme: "https"}, in{"http", "echo", 80, "/scheme", ""}, "https://echo/scheme", 302},
		{"scheme and host", "/", &routetable.Redirect{Scheme: "https", Hostname: "example.org"}, mesh, "https://example.org/port", 302},
		{"scheme from a non-default service port", "/", &routetable.Redirect{Scheme: "https"}, in{"http", "echo:8080", 8080, "/x", ""}, "https://echo/x", 302},
		// HTTPRouteRedirectPortAndScheme (listener on 80, 8080, 443).
		{"80: nil/nil", "/", &routetable.Redirect{Hostname: "example.org"}, in{"http", "gw", 80, "/p", ""}, "http://example.org/p", 302},
		{"80: nil/80", "/", &routetable.Redirect{Hostname: "example.org", Port: 80}, in{"http", "gw", 80, "/p", ""}, "http://example.org/p", 302},
		{"80: nil/8080", "/", &routetable.Redirect{Hostname: "example.org", Port: 8080}, in{"http", "gw", 80, "/p", ""}, "http://example.org:8080/p", 302},
		{"80: https/nil", "/", &routetable.Redirect{Hostname: "example.org", Scheme: "https"}, in{"http", "gw", 80, "/p", ""}, "https://example.org/p", 302},
		{"80: https/443", "/", &routetable.Redirect{Hostname: "example.org", Scheme: "https", Port: 443}, in{"http", "gw", 80, "/p", ""}, "https://example.org/p", 302},
		{"80: https/8443", "/", &routetable.Redirect{Hostname: "example.org", Scheme: "https", Port: 8443}, in{"http", "gw", 80, "/p", ""}, "https://example.org:8443/p", 302},
		{"8080: nil/nil", "/", &routetable.Redirect{Hostname: "example.org"}, in{"http", "gw:8080", 8080, "/p", ""}, "http://example.org:8080/p", 302},
		{"8080: nil/80", "/", &routetable.Redirect{Hostname: "example.org", Port: 80}, in{"http", "gw:8080", 8080, "/p", ""}, "http://example.org/p", 302},
		{"8080: https/nil", "/", &routetable.Redirect{Hostname: "example.org", Scheme: "https"}, in{"http", "gw:8080", 8080, "/p", ""}, "https://example.org/p", 302},
		{"443: nil/nil", "/", &routetable.Redirect{}, in{"https", "example.org", 443, "/p", ""}, "https://example.org/p", 302},
		{"443: nil/8443", "/", &routetable.Redirect{Port: 8443}, in{"https", "example.org", 443, "/p", ""}, "https://example.org:8443/p", 302},
		{"443: http/nil", "/", &routetable.Redirect{Scheme: "http"}, in{"https", "example.org", 443, "/p", ""}, "http://example.org/p", 302},
		{"443: http/8080", "/", &routetable.Redirect{Scheme: "http", Port: 8080}, in{"https", "example.org", 443, "/p", ""}, "http://example.org:8080/p", 302},
		// MeshHTTPRouteRedirectPath.
		{"prefix path", "/original-prefix", &routetable.Redirect{PathType: ReplacePrefixMatch, Path: "/replacement-prefix"},
			in{"http", "echo", 80, "/original-prefix/lemon", ""}, "http://echo/replacement-prefix/lemon", 302},
		{"full path", "/full", &routetable.Redirect{PathType: ReplaceFullPath, Path: "/full-path-replacement"},
			in{"http", "echo", 80, "/full/path/original", ""}, "http://echo/full-path-replacement", 302},
		{"path and host", "/path-and-host", &routetable.Redirect{PathType: ReplacePrefixMatch, Path: "/replacement-prefix", Hostname: "example.org"},
			in{"http", "echo", 80, "/path-and-host", ""}, "http://example.org/replacement-prefix", 302},
		// Status codes, query, host forms.
		{"303", "/", &routetable.Redirect{StatusCode: 303}, mesh, "http://echo/port", 303},
		{"307", "/", &routetable.Redirect{StatusCode: 307}, mesh, "http://echo/port", 307},
		{"308", "/", &routetable.Redirect{StatusCode: 308}, mesh, "http://echo/port", 308},
		{"query kept", "/", &routetable.Redirect{Hostname: "h"}, in{"http", "echo", 80, "/a", "x=1&y=2"}, "http://h/a?x=1&y=2", 302},
		{"host port dropped", "/", &routetable.Redirect{}, in{"http", "echo.ns.svc:9000", 9000, "/a", ""}, "http://echo.ns.svc:9000/a", 302},
		{"ipv6 host", "/", &routetable.Redirect{Port: 81}, in{"http", "[::1]:80", 80, "/a", ""}, "http://[::1]:81/a", 302},
		{"empty scheme is http", "/", &routetable.Redirect{}, in{"", "echo", 80, "/a", ""}, "http://echo/a", 302},
		{"scheme uppercase normalised", "/", &routetable.Redirect{Scheme: "HTTPS"}, mesh, "https://echo/port", 302},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := prefixRule(t, tt.prefix, routetable.Filters{Redirect: tt.rd})
			loc, status, ok := r.RedirectLocation(tt.in.scheme, tt.in.host, tt.in.port, tt.in.path, tt.in.query)
			if !ok || loc != tt.wantLoc || status != tt.wantStatus {
				t.Fatalf("got %q %d %v, want %q %d", loc, status, ok, tt.wantLoc, tt.wantStatus)
			}
		})
	}
	r := prefixRule(t, "/", routetable.Filters{})
	if _, _, ok := r.RedirectLocation("http", "h", 80, "/", ""); ok {
		t.Error("rule without redirect reported one")
	}
}

func TestStripPort(t *testing.T) {
	for in, want := range map[string]string{
		"echo": "echo", "echo:80": "echo", "[::1]:80": "::1", "[::1]": "::1", "::1": "::1", "": "",
	} {
		if got := stripPort(in); got != want {
			t.Errorf("stripPort(%q) = %q, want %q", in, got, want)
		}
	}
}
