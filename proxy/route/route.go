// Package route runs a service's compiled HTTP rules (routetable.Rule) on requests:
// it finds the rule a request matches, picks a weighted backend, chooses mirrors and
// applies the Gateway API filters (header edits, path rewrites, redirects).
//
// It is on the proxy's hot path: Match and PickBackend do not allocate, a Table is
// immutable once built and safe for concurrent use, and regular expressions are
// compiled once by NewTable. It depends only on mesh/api/routetable and the
// standard library.
//
// Semantics worth knowing:
//
//   - Rules are tried in slice order; the compiler (package routing) has already put
//     them in Gateway API precedence order. A service with no rules gets one default
//     rule that sends everything to the service itself.
//   - PathPrefix matches whole path segments and ignores a trailing slash in the
//     prefix ("/foo" and "/foo/" both match "/foo", "/foo/" and "/foo/bar", never
//     "/foobar"); RegularExpression matches (path, header and query values) are RE2
//     and must match the whole value.
//   - A Backend whose Service is "" is an invalid backendRef: it keeps its share of
//     the weight, is never skipped as unready, and the caller answers 500 when it is
//     picked (Gateway API: an invalid backend's share of traffic gets 500).
//   - A rule with no backends and no redirect is invalid (Rule.Invalid): answer 500.
//   - PickBackend reporting ok=false means every weight is 0 or nothing is ready:
//     answer 503.
package route

import (
	"fmt"
	"net/textproto"
	"regexp"
	"strings"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

// Request is what matching reads; both the HTTP/1 and HTTP/2 servers implement it cheaply.
type Request interface {
	// Method is the request method ("GET").
	Method() string
	// Path is the request path without the query.
	Path() string
	// RawQuery is the query without the leading '?'.
	RawQuery() string
	// Header looks a header up case-insensitively and returns its first value.
	Header(name string) (string, bool)
}

// Table is a service's compiled rules, ready to match requests. It is immutable
// and safe for concurrent use. It keeps pointers into the routetable.Service it was
// built from, which must not be modified afterwards.
type Table struct {
	rules []Rule
}

// Rule is one compiled rule: the routetable.Rule it came from plus what matching,
// picking and filtering need precomputed.
type Rule struct {
	// Spec is the rule as compiled by the control plane. Read-only.
	Spec *routetable.Rule

	pathType routetable.PathMatchType
	// path is the Exact path, or the PathPrefix without its trailing slash ("" for "/").
	path    string
	pathRe  *regexp.Regexp
	method  string
	headers []valueMatcher
	query   []valueMatcher

	// cum are the cumulative effective weights of Spec.Backends; total is the last.
	cum   []uint64
	total uint64

	mirrors      []mirror
	mirrorKeys   []string // the backends of all mirrors that can fire, in order
	mirrorAlways bool     // every mirror in mirrors fires on every request
}

type valueMatcher struct {
	name  string
	value string
	re    *regexp.Regexp // nil for Exact
}

func (m *valueMatcher) matches(v string) bool {
	if m.re != nil {
		return m.re.MatchString(v)
	}
	return v == m.value
}

// mirror is a mirror that can fire: num/den of requests, or every one when always.
type mirror struct {
	backend  string
	num, den uint64
	always   bool
}

// NewTable compiles a service's rules. Errors name the rule index and field (bad
// regex, unknown match type, ...).
func NewTable(svc *routetable.Service) (*Table, error) {
	if svc == nil {
		return nil, fmt.Errorf("route table: nil service")
	}
	if len(svc.Rules) == 0 {
		spec := &routetable.Rule{
			Match:    routetable.Match{PathType: routetable.PathPrefix, Path: "/"},
			Backends: []routetable.Backend{{Service: svc.Key()}},
		}
		r, err := compileRule(spec)
		if err != nil { // cannot happen: the default rule is valid
			return nil, fmt.Errorf("route table for %s: default rule: %w", svc.Key(), err)
		}
		return &Table{rules: []Rule{r}}, nil
	}
	t := &Table{rules: make([]Rule, len(svc.Rules))}
	for i := range svc.Rules {
		r, err := compileRule(&svc.Rules[i])
		if err != nil {
			where := fmt.Sprintf("rule %d", i)
			if spec := &svc.Rules[i]; spec.Route != "" {
				where += fmt.Sprintf(" (route %s rule %d)", spec.Route, spec.RuleIndex)
			}
			return nil, fmt.Errorf("route table for %s: %s: %w", svc.Key(), where, err)
		}
		t.rules[i] = r
	}
	return t, nil
}

// Rules returns the compiled rules in precedence order (the default rule when the
// service has none). The slice must not be modified.
func (t *Table) Rules() []Rule { return t.rules }

// Match returns the first rule (precedence order is the slice order) whose match
// holds. If the service has no rules it returns a default rule that sends everything
// to the service itself (Backends = [{Service: svc.Key()}]). nil when rules exist and
// none matches (caller answers 404).
func (t *Table) Match(r Request) *Rule {
	for i := range t.rules {
		if t.rules[i].matches(r) {
			return &t.rules[i]
		}
	}
	return nil
}

// Invalid reports whether the rule can only answer 500: it has no backends and no
// redirect (an invalid Gateway API rule).
func (r *Rule) Invalid() bool {
	return len(r.Spec.Backends) == 0 && r.Spec.Filters.Redirect == nil
}

func (r *Rule) matches(req Request) bool {
	if r.method != "" && req.Method() != r.method {
		return false
	}
	switch r.pathType {
	case routetable.PathExact:
		if req.Path() != r.path {
			return false
		}
	case routetable.PathRegex:
		if !r.pathRe.MatchString(req.Path()) {
			return false
		}
	default:
		if !prefixMatches(req.Path(), r.path) {
			return false
		}
	}
	for i := range r.headers {
		h := &r.headers[i]
		v, ok := req.Header(h.name)
		if !ok || !h.matches(v) {
			return false
		}
	}
	if len(r.query) > 0 {
		q := req.RawQuery()
		for i := range r.query {
			m := &r.query[i]
			v, ok := queryValue(q, m.name)
			if !ok || !m.matches(v) {
				return false
			}
		}
	}
	return true
}

// prefixMatches reports whether path starts with the whole segments of prefix,
// given without its trailing slash ("" matches everything).
func prefixMatches(path, prefix string) bool {
	if prefix == "" {
		return true
	}
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || path[len(prefix)] == '/'
}

// queryValue returns the first value of the query parameter name in rawQuery,
// decoded. It allocates only when the parameter is percent- or plus-encoded.
func queryValue(rawQuery, name string) (string, bool) {
	for rawQuery != "" {
		var pair string
		pair, rawQuery, _ = strings.Cut(rawQuery, "&")
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		if !queryKeyEquals(k, name) {
			continue
		}
		if strings.IndexByte(v, '%') < 0 && strings.IndexByte(v, '+') < 0 {
			return v, true
		}
		dv, err := unescapeQuery(v)
		if err != nil {
			return v, true // match the raw text of a malformed escape
		}
		return dv, true
	}
	return "", false
}

// queryKeyEquals compares a raw (possibly encoded) query key with a decoded name.
func queryKeyEquals(raw, name string) bool {
	if strings.IndexByte(raw, '%') < 0 && strings.IndexByte(raw, '+') < 0 {
		return raw == name
	}
	k, err := unescapeQuery(raw)
	return err == nil && k == name
}

// unescapeQuery decodes %XX escapes and '+' as in application/x-www-form-urlencoded.
func unescapeQuery(s string) (string, error) {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '+':
			b.WriteByte(' ')
		case '%':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return "", fmt.Errorf("invalid escape %q", s[i:min(i+3, len(s))])
			}
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

func compileRule(spec *routetable.Rule) (Rule, error) {
	r := Rule{Spec: spec, method: spec.Match.Method}
	m := &spec.Match
	switch m.PathType {
	case "", routetable.PathPrefix:
		p := m.Path
		if p == "" {
			p = "/"
		}
		if p[0] != '/' {
			return Rule{}, fmt.Errorf("match.path: PathPrefix %q must start with '/'", m.Path)
		}
		r.pathType = routetable.PathPrefix
		r.path = strings.TrimRight(p, "/")
	case routetable.PathExact:
		if !strings.HasPrefix(m.Path, "/") {
			return Rule{}, fmt.Errorf("match.path: Exact path %q must start with '/'", m.Path)
		}
		r.pathType = routetable.PathExact
		r.path = m.Path
	case routetable.PathRegex:
		re, err := compileFull(m.Path)
		if err != nil {
			return Rule{}, fmt.Errorf("match.path: %w", err)
		}
		r.pathType = routetable.PathRegex
		r.pathRe = re
	default:
		return Rule{}, fmt.Errorf("match.pathType: unknown type %q", m.PathType)
	}
	var err error
	if r.headers, err = compileValueMatches("match.headers", m.Headers, true); err != nil {
		return Rule{}, err
	}
	if r.query, err = compileValueMatches("match.queryParams", m.QueryParams, false); err != nil {
		return Rule{}, err
	}

	if n := len(spec.Backends); n > 0 {
		r.cum = make([]uint64, n)
		for i := range spec.Backends {
			r.total += uint64(spec.Backends[i].EffectiveWeight())
			r.cum[i] = r.total
		}
	}

	r.mirrorAlways = true
	for i, mi := range spec.Filters.Mirrors {
		if mi.Backend == "" {
			return Rule{}, fmt.Errorf("filters.mirrors[%d].backend: empty", i)
		}
		if mi.Numerator < 0 || mi.Denominator < 0 {
			return Rule{}, fmt.Errorf("filters.mirrors[%d]: negative fraction %d/%d", i, mi.Numerator, mi.Denominator)
		}
		mm := mirror{backend: mi.Backend, num: uint64(mi.Numerator), den: uint64(mi.Denominator)}
		switch {
		case mm.num == 0 && mm.den == 0:
			mm.always = true
		case mm.num == 0:
			continue // never fires
		case mm.den == 0:
			mm.den = 100
		}
		if mm.num >= mm.den {
			mm.always = true
		}
		if !mm.always {
			r.mirrorAlways = false
		}
		r.mirrors = append(r.mirrors, mm)
		r.mirrorKeys = append(r.mirrorKeys, mm.backend)
	}
	return r, nil
}

func compileValueMatches(field string, vms []routetable.ValueMatch, header bool) ([]valueMatcher, error) {
	if len(vms) == 0 {
		return nil, nil
	}
	out := make([]valueMatcher, len(vms))
	for i, vm := range vms {
		if vm.Name == "" {
			return nil, fmt.Errorf("%s[%d].name: empty", field, i)
		}
		name := vm.Name
		if header {
			name = textproto.CanonicalMIMEHeaderKey(name)
		}
		out[i] = valueMatcher{name: name, value: vm.Value}
		switch vm.Type {
		case "", routetable.ValueExact:
		case routetable.ValueRegex:
			re, err := compileFull(vm.Value)
			if err != nil {
				return nil, fmt.Errorf("%s[%d].value: %w", field, i, err)
			}
			out[i].re = re
		default:
			return nil, fmt.Errorf("%s[%d].type: unknown type %q", field, i, vm.Type)
		}
	}
	return out, nil
}

// compileFull compiles a RE2 expression anchored to match the whole input.
func compileFull(expr string) (*regexp.Regexp, error) {
	// Compile alone first so that an expression like "a)|(b" cannot escape the anchors.
	if _, err := regexp.Compile(expr); err != nil {
		return nil, fmt.Errorf("invalid regular expression %q: %w", expr, err)
	}
	re, err := regexp.Compile(`^(?:` + expr + `)$`)
	if err != nil {
		return nil, fmt.Errorf("invalid regular expression %q: %w", expr, err)
	}
	return re, nil
}
