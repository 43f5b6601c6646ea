package route

import (
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

// Path modifier types of URLRewrite and Redirect (Gateway API HTTPPathModifierType).
const (
	ReplaceFullPath    = "ReplaceFullPath"
	ReplacePrefixMatch = "ReplacePrefixMatch"
)

// HeaderEditor is what filter application needs from a header set.
type HeaderEditor interface {
	Set(name, value string)
	Add(name, value string)
	Del(name string)
}

// ApplyHeaders applies a header modifier to h: Set first, then Add, then Remove.
// A nil modifier does nothing.
func ApplyHeaders(m *routetable.HeaderModifier, h HeaderEditor) {
	if m == nil {
		return
	}
	for _, s := range m.Set {
		h.Set(s.Name, s.Value)
	}
	for _, a := range m.Add {
		h.Add(a.Name, a.Value)
	}
	for _, name := range m.Remove {
		h.Del(name)
	}
}

// RewritePath returns the path after a URLRewrite for this rule's match. With
// ReplacePrefixMatch the matched prefix is replaced honouring segment boundaries
// and slashes as the Gateway API specifies (prefix "/foo", replacement "/xyz":
// "/foo/bar" → "/xyz/bar", "/foo" → "/xyz", "/foo/" → "/xyz/"; replacement "" or
// "/": "/foo/bar" → "/bar", "/foo" → "/"). An Exact match counts as a prefix equal
// to the whole path; a RegularExpression match leaves the path unchanged.
// ReplaceFullPath replaces it all ("" becomes "/"). The path is returned unchanged
// when the rule has no path rewrite.
func (r *Rule) RewritePath(path string) string {
	rw := r.Spec.Filters.URLRewrite
	if rw == nil {
		return path
	}
	return r.modifyPath(rw.PathType, rw.Path, path)
}

func (r *Rule) modifyPath(typ, repl, path string) string {
	switch typ {
	case ReplaceFullPath:
		if repl == "" {
			return "/"
		}
		return repl
	case ReplacePrefixMatch:
		switch r.pathType {
		case routetable.PathPrefix:
			if !prefixMatches(path, r.path) {
				return path // not matched by this rule: leave it alone
			}
			return replacePrefix(path[len(r.path):], repl)
		case routetable.PathExact:
			return replacePrefix("", repl)
		}
	}
	return path
}

// replacePrefix joins the replacement (its trailing slash ignored) with the rest of
// the path after the matched prefix ("" or starting with '/').
func replacePrefix(rest, repl string) string {
	out := strings.TrimRight(repl, "/") + rest
	switch {
	case out == "":
		return "/"
	case out[0] != '/':
		return "/" + out
	}
	return out
}

// RedirectLocation computes the Location and status for a RequestRedirect filter
// given the request's scheme ("" means http), host (the Host header; a port in it
// is dropped), port (the port the request came in on: the service port), path and
// query; ok=false when the rule has no redirect.
//
// As the Gateway API specifies: the redirect's scheme and hostname replace the
// request's when set; the port is the redirect's port, else the well-known port of
// the redirect's scheme when one is set (http 80, https 443), else the request's
// port; the port is left out of Location for http on 80 and https on 443. The
// status defaults to 302 and the query is kept.
func (r *Rule) RedirectLocation(scheme, host string, port int, path, rawQuery string) (location string, status int, ok bool) {
	rd := r.Spec.Filters.Redirect
	if rd == nil {
		return "", 0, false
	}
	if scheme == "" {
		scheme = "http"
	}
	if rd.Scheme != "" {
		scheme = strings.ToLower(rd.Scheme)
		switch scheme {
		case "http":
			port = 80
		case "https":
			port = 443
		}
	}
	if rd.Port > 0 {
		port = rd.Port
	}
	if rd.Hostname != "" {
		host = rd.Hostname
	} else {
		host = stripPort(host)
	}
	path = r.modifyPath(rd.PathType, rd.Path, path)
	if path == "" {
		path = "/"
	}

	var b strings.Builder
	b.Grow(len(scheme) + 3 + len(host) + 8 + len(path) + 1 + len(rawQuery))
	b.WriteString(scheme)
	b.WriteString("://")
	if strings.IndexByte(host, ':') >= 0 { // IPv6 literal
		b.WriteByte('[')
		b.WriteString(host)
		b.WriteByte(']')
	} else {
		b.WriteString(host)
	}
	if port > 0 && !(scheme == "http" && port == 80) && !(scheme == "https" && port == 443) {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(port))
	}
	b.WriteString(path)
	if rawQuery != "" {
		b.WriteByte('?')
		b.WriteString(rawQuery)
	}
	status = rd.StatusCode
	if status == 0 {
		status = 302
	}
	return b.String(), status, true
}

// stripPort removes a ":port" from a Host header value and the brackets of an IPv6
// literal ("[::1]:80" → "::1", "echo:80" → "echo", "echo" → "echo").
func stripPort(host string) string {
	if strings.HasPrefix(host, "[") {
		if end := strings.IndexByte(host, ']'); end > 0 {
			return host[1:end]
		}
		return host
	}
	if i := strings.IndexByte(host, ':'); i >= 0 && strings.LastIndexByte(host, ':') == i {
		return host[:i]
	}
	return host
}
