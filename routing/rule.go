package routing

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/sluicehq/sluice/mesh/api/routetable"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// compiler compiles the rules of one route for one service port.
type compiler struct {
	route       *gatewayv1.HTTPRoute
	name        string // namespace/name
	ns          string
	svc         ServicePort
	annotations routeAnnotations
	errs        []RouteError
}

func (c *compiler) errorf(field, format string, args ...any) {
	c.errs = append(c.errs, RouteError{Route: c.name, Field: field, Message: fmt.Sprintf(format, args...)})
}

// ruleState collects one rule's compiled parts; invalid is set by any error that
// makes the rule answer 500.
type ruleState struct {
	c       *compiler
	invalid bool
}

func (s *ruleState) fail(field, format string, args ...any) {
	s.c.errorf(field, format, args...)
	s.invalid = true
}

// compileRule turns spec.rules[i] into one entry per valid match.
func (c *compiler) compileRule(i int, rule *gatewayv1.HTTPRouteRule) []entry {
	field := fmt.Sprintf("spec.rules[%d]", i)
	st := &ruleState{c: c}

	var matches []indexedMatch
	if len(rule.Matches) == 0 {
		matches = append(matches, indexedMatch{m: routetable.Match{PathType: routetable.PathPrefix, Path: "/"}})
	}
	for j := range rule.Matches {
		m, ok := c.compileMatch(fmt.Sprintf("%s.matches[%d]", field, j), &rule.Matches[j])
		if ok {
			matches = append(matches, indexedMatch{m: m, index: j})
		}
	}
	if len(matches) == 0 {
		return nil
	}

	filters := st.compileFilters(field, rule)
	if rw := filters.URLRewrite; rw != nil && rw.PathType == string(gatewayv1.PrefixMatchHTTPPathModifier) {
		st.checkPrefixMatches(field+".filters", "URLRewrite", matches)
	}
	if rd := filters.Redirect; rd != nil && rd.PathType == string(gatewayv1.PrefixMatchHTTPPathModifier) {
		st.checkPrefixMatches(field+".filters", "RequestRedirect", matches)
	}
	backends := c.compileBackends(field, rule.BackendRefs)
	if len(rule.BackendRefs) == 0 && filters.Redirect == nil {
		backends = []routetable.Backend{{Service: c.svc.Key()}}
	}
	timeouts := st.compileTimeouts(field+".timeouts", rule.Timeouts)
	retry := st.compileRetry(field+".retry", rule.Retry)
	if filters.Redirect != nil { // answered by the proxy itself: nothing to time out or retry
		timeouts, retry = routetable.Timeouts{}, nil
	}
	if rule.SessionPersistence != nil {
		c.errorf(field+".sessionPersistence", "sessionPersistence is not supported; ignored")
	}

	out := make([]entry, 0, len(matches))
	for _, m := range matches {
		r := routetable.Rule{Route: c.name, RuleIndex: i, Match: m.m}
		if !st.invalid {
			r.Filters = filters
			r.Backends = backends
			r.Timeouts = timeouts
			r.Retry = retry
		}
		out = append(out, entry{rule: r, matchIndex: m.index})
	}
	return out
}

// indexedMatch is a compiled match and its index in the rule's matches.
type indexedMatch struct {
	m     routetable.Match
	index int
}

func (st *ruleState) checkPrefixMatches(field, filter string, matches []indexedMatch) {
	for _, m := range matches {
		if m.m.PathType != routetable.PathPrefix {
			st.fail(field, "%s with ReplacePrefixMatch needs PathPrefix matches, but matches[%d] is %s", filter, m.index, m.m.PathType)
			return
		}
	}
}

// compileMatch converts one HTTPRouteMatch; ok=false drops the match (an error was recorded).
func (c *compiler) compileMatch(field string, hm *gatewayv1.HTTPRouteMatch) (routetable.Match, bool) {
	m := routetable.Match{PathType: routetable.PathPrefix, Path: "/"}
	if p := hm.Path; p != nil {
		if p.Type != nil {
			m.PathType = routetable.PathMatchType(*p.Type)
		}
		if p.Value != nil {
			m.Path = *p.Value
		}
		switch m.PathType {
		case routetable.PathPrefix, routetable.PathExact:
			if !strings.HasPrefix(m.Path, "/") {
				c.errorf(field+".path.value", "%s path %q must start with '/'; match ignored", m.PathType, m.Path)
				return m, false
			}
		case routetable.PathRegex:
			if err := checkRegex(m.Path); err != nil {
				c.errorf(field+".path.value", "%v; match ignored", err)
				return m, false
			}
		default:
			c.errorf(field+".path.type", "unsupported path match type %q; match ignored", m.PathType)
			return m, false
		}
	}
	for k, h := range hm.Headers {
		f := fmt.Sprintf("%s.headers[%d]", field, k)
		vm, ok := c.valueMatch(f, (*gatewayv1.HeaderMatchType)(h.Type), string(h.Name), h.Value)
		if !ok {
			return m, false
		}
		m.Headers = append(m.Headers, vm)
	}
	for k, q := range hm.QueryParams {
		f := fmt.Sprintf("%s.queryParams[%d]", field, k)
		vm, ok := c.valueMatch(f, (*gatewayv1.HeaderMatchType)(q.Type), string(q.Name), q.Value)
		if !ok {
			return m, false
		}
		m.QueryParams = append(m.QueryParams, vm)
	}
	if hm.Method != nil {
		m.Method = string(*hm.Method)
	}
	return m, true
}

func (c *compiler) valueMatch(field string, typ *gatewayv1.HeaderMatchType, name, value string) (routetable.ValueMatch, bool) {
	vm := routetable.ValueMatch{Type: routetable.ValueExact, Name: name, Value: value}
	if name == "" {
		c.errorf(field+".name", "empty name; match ignored")
		return vm, false
	}
	if typ != nil {
		vm.Type = routetable.ValueMatchType(*typ)
	}
	switch vm.Type {
	case routetable.ValueExact:
	case routetable.ValueRegex:
		if err := checkRegex(value); err != nil {
			c.errorf(field+".value", "%v; match ignored", err)
			return vm, false
		}
	default:
		c.errorf(field+".type", "unsupported match type %q; match ignored", vm.Type)
		return vm, false
	}
	return vm, true
}

func checkRegex(expr string) error {
	if _, err := regexp.Compile(expr); err != nil {
		return fmt.Errorf("invalid RE2 regular expression %q: %v", expr, err)
	}
	return nil
}

// compileFilters converts a rule's filters; unsupported or conflicting ones invalidate the rule.
func (st *ruleState) compileFilters(ruleField string, rule *gatewayv1.HTTPRouteRule) routetable.Filters {
	var out routetable.Filters
	seen := map[gatewayv1.HTTPRouteFilterType]bool{}
	for k := range rule.Filters {
		f := &rule.Filters[k]
		field := fmt.Sprintf("%s.filters[%d]", ruleField, k)
		if f.Type != gatewayv1.HTTPRouteFilterRequestMirror && f.Type != gatewayv1.HTTPRouteFilterExtensionRef {
			if seen[f.Type] {
				st.fail(field, "%s filter is repeated", f.Type)
				continue
			}
			seen[f.Type] = true
		}
		switch f.Type {
		case gatewayv1.HTTPRouteFilterRequestHeaderModifier:
			if f.RequestHeaderModifier == nil {
				st.fail(field, "requestHeaderModifier must be set for type RequestHeaderModifier")
				continue
			}
			out.RequestHeaders = st.headerModifier(field+".requestHeaderModifier", f.RequestHeaderModifier)
		case gatewayv1.HTTPRouteFilterResponseHeaderModifier:
			if f.ResponseHeaderModifier == nil {
				st.fail(field, "responseHeaderModifier must be set for type ResponseHeaderModifier")
				continue
			}
			out.ResponseHeaders = st.headerModifier(field+".responseHeaderModifier", f.ResponseHeaderModifier)
		case gatewayv1.HTTPRouteFilterURLRewrite:
			if f.URLRewrite == nil {
				st.fail(field, "urlRewrite must be set for type URLRewrite")
				continue
			}
			rw := &routetable.URLRewrite{}
			if f.URLRewrite.Hostname != nil {
				rw.Hostname = string(*f.URLRewrite.Hostname)
			}
			if f.URLRewrite.Path != nil {
				rw.PathType, rw.Path = st.pathModifier(field+".urlRewrite.path", f.URLRewrite.Path)
			}
			out.URLRewrite = rw
		case gatewayv1.HTTPRouteFilterRequestRedirect:
			if f.RequestRedirect == nil {
				st.fail(field, "requestRedirect must be set for type RequestRedirect")
				continue
			}
			out.Redirect = st.redirect(field+".requestRedirect", f.RequestRedirect)
		case gatewayv1.HTTPRouteFilterRequestMirror:
			if f.RequestMirror == nil {
				st.fail(field, "requestMirror must be set for type RequestMirror")
				continue
			}
			if m, ok := st.mirror(field+".requestMirror", f.RequestMirror); ok {
				out.Mirrors = append(out.Mirrors, m)
			}
		case gatewayv1.HTTPRouteFilterCORS, gatewayv1.HTTPRouteFilterExternalAuth, gatewayv1.HTTPRouteFilterExtensionRef:
			st.fail(field, "%s is not supported", f.Type)
		default:
			st.fail(field+".type", "unknown filter type %q", f.Type)
		}
	}
	if out.Redirect != nil && out.URLRewrite != nil {
		st.fail(ruleField+".filters", "RequestRedirect and URLRewrite cannot be used together")
	}
	if out.Redirect != nil && len(rule.BackendRefs) > 0 {
		st.fail(ruleField, "RequestRedirect cannot be used together with backendRefs")
	}
	return out
}

func (st *ruleState) headerModifier(field string, f *gatewayv1.HTTPHeaderFilter) *routetable.HeaderModifier {
	m := &routetable.HeaderModifier{}
	for k, h := range f.Set {
		if h.Name == "" {
			st.fail(fmt.Sprintf("%s.set[%d].name", field, k), "empty header name")
			continue
		}
		m.Set = append(m.Set, routetable.Header{Name: string(h.Name), Value: h.Value})
	}
	for k, h := range f.Add {
		if h.Name == "" {
			st.fail(fmt.Sprintf("%s.add[%d].name", field, k), "empty header name")
			continue
		}
		m.Add = append(m.Add, routetable.Header{Name: string(h.Name), Value: h.Value})
	}
	for k, name := range f.Remove {
		if name == "" {
			st.fail(fmt.Sprintf("%s.remove[%d]", field, k), "empty header name")
			continue
		}
		m.Remove = append(m.Remove, name)
	}
	return m
}

func (st *ruleState) pathModifier(field string, pm *gatewayv1.HTTPPathModifier) (typ, path string) {
	switch pm.Type {
	case gatewayv1.FullPathHTTPPathModifier:
		if pm.ReplaceFullPath == nil {
			st.fail(field+".replaceFullPath", "must be set for type ReplaceFullPath")
			return "", ""
		}
		return string(pm.Type), *pm.ReplaceFullPath
	case gatewayv1.PrefixMatchHTTPPathModifier:
		if pm.ReplacePrefixMatch == nil {
			st.fail(field+".replacePrefixMatch", "must be set for type ReplacePrefixMatch")
			return "", ""
		}
		return string(pm.Type), *pm.ReplacePrefixMatch
	default:
		st.fail(field+".type", "unsupported path modifier type %q", pm.Type)
		return "", ""
	}
}

func (st *ruleState) redirect(field string, f *gatewayv1.HTTPRequestRedirectFilter) *routetable.Redirect {
	rd := &routetable.Redirect{}
	if f.Scheme != nil {
		switch s := strings.ToLower(*f.Scheme); s {
		case "http", "https":
			rd.Scheme = s
		default:
			st.fail(field+".scheme", "unsupported scheme %q (want http or https)", *f.Scheme)
		}
	}
	if f.Hostname != nil {
		rd.Hostname = string(*f.Hostname)
	}
	if f.Path != nil {
		rd.PathType, rd.Path = st.pathModifier(field+".path", f.Path)
	}
	if f.Port != nil {
		if *f.Port < 1 || *f.Port > 65535 {
			st.fail(field+".port", "port %d out of range 1-65535", *f.Port)
		} else {
			rd.Port = int(*f.Port)
		}
	}
	rd.StatusCode = 302
	if f.StatusCode != nil {
		switch *f.StatusCode {
		case 301, 302, 303, 307, 308:
			rd.StatusCode = *f.StatusCode
		default:
			st.fail(field+".statusCode", "unsupported status code %d (want 301, 302, 303, 307 or 308)", *f.StatusCode)
		}
	}
	return rd
}

// mirror converts a RequestMirror filter. An unusable backendRef drops the mirror
// (reported) without invalidating the rule; a malformed share invalidates it.
func (st *ruleState) mirror(field string, f *gatewayv1.HTTPRequestMirrorFilter) (routetable.Mirror, bool) {
	key, err := st.c.serviceRef(f.BackendRef)
	if err != nil {
		st.c.errorf(field+".backendRef", "%v; mirror ignored", err)
		return routetable.Mirror{}, false
	}
	m := routetable.Mirror{Backend: key, Numerator: 100, Denominator: 100}
	switch {
	case f.Percent != nil && f.Fraction != nil:
		st.fail(field, "only one of percent and fraction may be set")
		return m, false
	case f.Percent != nil:
		if p := *f.Percent; p < 0 || p > 100 {
			st.fail(field+".percent", "percent %d out of range 0-100", p)
			return m, false
		}
		m.Numerator = *f.Percent
	case f.Fraction != nil:
		m.Numerator = f.Fraction.Numerator
		if f.Fraction.Denominator != nil {
			m.Denominator = *f.Fraction.Denominator
		}
		if m.Denominator < 1 || m.Numerator < 0 || m.Numerator > m.Denominator {
			st.fail(field+".fraction", "fraction %d/%d must have 0 <= numerator <= denominator and denominator >= 1", m.Numerator, m.Denominator)
			return m, false
		}
	}
	return m, true
}

// serviceRef resolves a backend reference to a Service key.
func (c *compiler) serviceRef(ref gatewayv1.BackendObjectReference) (string, error) {
	if ref.Group != nil && *ref.Group != "" && *ref.Group != "core" {
		kind := "Service"
		if ref.Kind != nil {
			kind = string(*ref.Kind)
		}
		return "", fmt.Errorf("%s.%s is not supported (only Services)", kind, *ref.Group)
	}
	if ref.Kind != nil && *ref.Kind != "Service" {
		return "", fmt.Errorf("kind %s is not supported (only Service)", *ref.Kind)
	}
	if ref.Name == "" {
		return "", fmt.Errorf("name is empty")
	}
	if ref.Port == nil {
		return "", fmt.Errorf("port is required for Service %s", ref.Name)
	}
	ns := c.ns
	if ref.Namespace != nil && *ref.Namespace != "" {
		ns = string(*ref.Namespace)
	}
	return routetable.ServiceKey(string(ref.Name), ns, int(*ref.Port)), nil
}

// compileBackends converts backendRefs; an unusable one becomes an invalid Backend
// (Service "") that keeps its weight.
func (c *compiler) compileBackends(ruleField string, refs []gatewayv1.HTTPBackendRef) []routetable.Backend {
	if len(refs) == 0 {
		return nil
	}
	out := make([]routetable.Backend, 0, len(refs))
	for j := range refs {
		ref := &refs[j]
		field := fmt.Sprintf("%s.backendRefs[%d]", ruleField, j)
		var b routetable.Backend
		if ref.Weight != nil {
			w := *ref.Weight
			switch {
			case w < 0:
				c.errorf(field+".weight", "weight %d is negative; using 0", w)
				w = 0
			case w > 1_000_000:
				c.errorf(field+".weight", "weight %d exceeds 1000000; using 1000000", w)
				w = 1_000_000
			}
			u := uint32(w)
			b.Weight = &u
		}
		key, err := c.serviceRef(ref.BackendObjectReference)
		if err != nil {
			c.errorf(field, "%v; its share of requests gets 500", err)
			out = append(out, b)
			continue
		}
		valid := true
		for k := range ref.Filters {
			f := &ref.Filters[k]
			ff := fmt.Sprintf("%s.filters[%d]", field, k)
			switch {
			case f.Type == gatewayv1.HTTPRouteFilterRequestHeaderModifier && f.RequestHeaderModifier != nil && b.RequestHeaders == nil:
				st := &ruleState{c: c}
				b.RequestHeaders = st.headerModifier(ff+".requestHeaderModifier", f.RequestHeaderModifier)
				valid = valid && !st.invalid
			case f.Type == gatewayv1.HTTPRouteFilterResponseHeaderModifier && f.ResponseHeaderModifier != nil && b.ResponseHeaders == nil:
				st := &ruleState{c: c}
				b.ResponseHeaders = st.headerModifier(ff+".responseHeaderModifier", f.ResponseHeaderModifier)
				valid = valid && !st.invalid
			case f.Type == gatewayv1.HTTPRouteFilterRequestHeaderModifier || f.Type == gatewayv1.HTTPRouteFilterResponseHeaderModifier:
				c.errorf(ff, "%s filter is missing its settings or repeated; its share of requests gets 500", f.Type)
				valid = false
			default:
				c.errorf(ff, "%s is not supported on a backendRef; its share of requests gets 500", f.Type)
				valid = false
			}
		}
		if !valid {
			out = append(out, routetable.Backend{Weight: b.Weight})
			continue
		}
		b.Service = key
		out = append(out, b)
	}
	return out
}

func (st *ruleState) compileTimeouts(field string, t *gatewayv1.HTTPRouteTimeouts) routetable.Timeouts {
	var out routetable.Timeouts
	var haveRequest, haveBackend bool
	if t != nil {
		if t.Request != nil {
			d, err := parseDuration(string(*t.Request))
			if err != nil {
				st.fail(field+".request", "%v", err)
			}
			out.Request, haveRequest = routetable.Duration(d), true
		}
		if t.BackendRequest != nil {
			d, err := parseDuration(string(*t.BackendRequest))
			if err != nil {
				st.fail(field+".backendRequest", "%v", err)
			}
			out.BackendRequest, haveBackend = routetable.Duration(d), true
		}
		if haveRequest && haveBackend && out.Request != 0 && out.BackendRequest > out.Request {
			st.fail(field+".backendRequest", "backendRequest %s must not exceed request %s", out.BackendRequest.D(), out.Request.D())
		}
	}
	a := &st.c.annotations
	if !haveRequest && a.hasRequest {
		out.Request = routetable.Duration(a.request)
	}
	if !haveBackend && a.hasPerTry {
		out.BackendRequest = routetable.Duration(a.perTry)
	}
	return out
}

func (st *ruleState) compileRetry(field string, r *gatewayv1.HTTPRouteRetry) *routetable.Retry {
	if r == nil {
		return st.c.annotations.retryCopy()
	}
	out := &routetable.Retry{Attempts: 1}
	for k, code := range r.Codes {
		if code < 400 || code > 599 {
			st.fail(fmt.Sprintf("%s.codes[%d]", field, k), "status %d out of range 400-599", code)
			continue
		}
		out.Codes = append(out.Codes, int(code))
	}
	if r.Attempts != nil {
		if *r.Attempts < 0 {
			st.fail(field+".attempts", "attempts %d is negative", *r.Attempts)
		} else {
			out.Attempts = *r.Attempts
		}
	}
	if r.Backoff != nil {
		d, err := parseDuration(string(*r.Backoff))
		if err != nil {
			st.fail(field+".backoff", "%v", err)
		}
		out.Backoff = routetable.Duration(d)
	}
	if out.Attempts == 0 {
		return nil
	}
	return out
}

// parseDuration parses a Gateway API duration ("1h30m", "250ms", "0s").
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: %v", s, err)
	}
	if d < 0 {
		return 0, fmt.Errorf("invalid duration %q: negative", s)
	}
	return d, nil
}
