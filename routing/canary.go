package routing

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// Names of the rules CanaryRoute generates. Apply recognizes its own rules by
// these names (a rule name, or the name followed by "-<n>" when the route has
// several traffic-split rules) and rebuilds them on every call; rules with
// other names belong to the user.
const (
	// ABRuleName is the rule that sends the requests matching analysis.match
	// to the canary during an A/B test.
	ABRuleName = "sluice-canary-ab"
	// StickyRuleName is the rule that keeps clients holding the session
	// affinity cookie on the canary.
	StickyRuleName = "sluice-canary-sticky"
)

// DefaultCookieMaxAge is the Max-Age, in seconds, of the session affinity
// cookie when sessionAffinity.maxAge is 0 (a day, the CRD's default).
const DefaultCookieMaxAge = 86400

// CanaryRoute describes the canary's part of an HTTPRoute: which backendRefs
// carry the traffic split and what A/B testing, mirroring and session affinity
// add to the route. Build it with CanaryRouteFor or by hand.
type CanaryRoute struct {
	// Apex, Primary and Canary are the names of the apex, primary and canary
	// Services, in the route's namespace.
	Apex, Primary, Canary string
	// Port is the service port backendRefs and the mirror use when the route
	// does not say.
	Port int32
	// Owned is true when Sluice owns the route: its only user rule is the
	// traffic split, and Apply rewrites a route that lost it to one.
	Owned bool
	// Match are the A/B test's matches (analysis.match, converted with
	// MatchesFrom); requests matching any of them go to the canary.
	Match []gatewayv1.HTTPRouteMatch
	// MirrorPercent is the percentage of requests mirrored (1-99); 0 or 100
	// mirror every request.
	MirrorPercent int32
	// Affinity, when set, keeps clients that reached the canary on it by
	// cookie for the rest of the run.
	Affinity *v1beta1.SessionAffinity
	// AffinityValue is the cookie's value; it must stay the same for a run and
	// change between runs (the canary's revision does).
	AffinityValue string
}

// CanaryRouteFor returns the CanaryRoute of a Canary: its Services, port,
// analysis.match, mirrorWeight and sessionAffinity. owned says whether Sluice
// owns the route (spec.service.httpRouteRef is unset). affinityValue is the
// session affinity cookie's value for this run.
func CanaryRouteFor(c *v1beta1.Canary, affinityValue string) (CanaryRoute, error) {
	apex, ps, cs := c.GetServiceNames()
	cr := CanaryRoute{
		Apex: apex, Primary: ps, Canary: cs,
		Port:          c.Spec.Service.Port,
		Owned:         c.Spec.Service.HTTPRouteRef == nil || c.Spec.Service.HTTPRouteRef.Name == "",
		AffinityValue: affinityValue,
	}
	if a := c.Spec.Analysis; a != nil {
		m, err := MatchesFrom(a.Match)
		if err != nil {
			return CanaryRoute{}, fmt.Errorf("canary %s/%s: %w", c.Namespace, c.Name, err)
		}
		cr.Match = m
		if a.MirrorWeight > 0 && a.MirrorWeight < 100 {
			cr.MirrorPercent = int32(a.MirrorWeight)
		}
		cr.Affinity = a.SessionAffinity
	}
	return cr, nil
}

// MatchesFrom converts analysis.match to Gateway API matches: uri exact,
// prefix (PathPrefix) and regex, suffix as a regex, ignoreUriCase as a
// case-insensitive regex; method exact; headers and queryParams exact and
// regex, prefix and suffix as regexes. Header and query names are sorted, so
// the result is the same for the same input. Any other condition (scheme,
// authority, port, sourceLabels, gateways, withoutHeaders, sourceNamespace)
// is an error naming the field.
func MatchesFrom(in []v1beta1.HTTPMatchRequest) ([]gatewayv1.HTTPRouteMatch, error) {
	var out []gatewayv1.HTTPRouteMatch
	for i := range in {
		m, err := matchFrom(&in[i])
		if err != nil {
			return nil, fmt.Errorf("analysis.match[%d].%w", i, err)
		}
		out = append(out, m)
	}
	return out, nil
}

func matchFrom(in *v1beta1.HTTPMatchRequest) (gatewayv1.HTTPRouteMatch, error) {
	var m gatewayv1.HTTPRouteMatch
	switch {
	case in.Scheme != nil:
		return m, fmt.Errorf("scheme is not supported by Gateway API routes")
	case in.Authority != nil:
		return m, fmt.Errorf("authority is not supported by Gateway API routes")
	case in.Port != 0:
		return m, fmt.Errorf("port is not supported by Gateway API routes")
	case len(in.SourceLabels) > 0:
		return m, fmt.Errorf("sourceLabels is not supported by Gateway API routes")
	case len(in.Gateways) > 0:
		return m, fmt.Errorf("gateways is not supported by Gateway API routes")
	case len(in.WithoutHeaders) > 0:
		return m, fmt.Errorf("withoutHeaders is not supported by Gateway API routes")
	case in.SourceNamespace != "":
		return m, fmt.Errorf("sourceNamespace is not supported by Gateway API routes")
	}
	if u := in.URI; u != nil {
		pm, err := pathMatchFrom(u, in.IgnoreURICase)
		if err != nil {
			return m, err
		}
		m.Path = pm
	}
	if me := in.Method; me != nil {
		if me.Exact == "" || me.Prefix != "" || me.Suffix != "" || me.Regex != "" {
			return m, fmt.Errorf("method: only exact is supported")
		}
		method := gatewayv1.HTTPMethod(strings.ToUpper(me.Exact))
		m.Method = &method
	}
	for _, name := range sortedKeys(in.Headers) {
		typ, value, err := valueMatchFrom(in.Headers[name])
		if err != nil {
			return m, fmt.Errorf("headers[%s]: %w", name, err)
		}
		m.Headers = append(m.Headers, gatewayv1.HTTPHeaderMatch{Type: &typ, Name: gatewayv1.HTTPHeaderName(name), Value: value})
	}
	for _, name := range sortedKeys(in.QueryParams) {
		typ, value, err := valueMatchFrom(in.QueryParams[name])
		if err != nil {
			return m, fmt.Errorf("queryParams[%s]: %w", name, err)
		}
		qt := gatewayv1.QueryParamMatchType(typ)
		m.QueryParams = append(m.QueryParams, gatewayv1.HTTPQueryParamMatch{Type: &qt, Name: gatewayv1.HTTPHeaderName(name), Value: value})
	}
	return m, nil
}

func pathMatchFrom(u *v1beta1.StringMatch, ignoreCase bool) (*gatewayv1.HTTPPathMatch, error) {
	typ, value := gatewayv1.PathMatchPathPrefix, ""
	switch {
	case u.Exact != "":
		typ, value = gatewayv1.PathMatchExact, u.Exact
		if ignoreCase {
			typ, value = gatewayv1.PathMatchRegularExpression, "(?i)"+regexp.QuoteMeta(u.Exact)
		}
	case u.Prefix != "":
		typ, value = gatewayv1.PathMatchPathPrefix, u.Prefix
		if ignoreCase {
			typ, value = gatewayv1.PathMatchRegularExpression, "(?i)"+regexp.QuoteMeta(u.Prefix)+".*"
		}
	case u.Suffix != "":
		typ, value = gatewayv1.PathMatchRegularExpression, ".*"+regexp.QuoteMeta(u.Suffix)
		if ignoreCase {
			value = "(?i)" + value
		}
	case u.Regex != "":
		typ, value = gatewayv1.PathMatchRegularExpression, u.Regex
		if ignoreCase {
			value = "(?i)" + value
		}
	default:
		return nil, fmt.Errorf("uri: one of exact, prefix, suffix or regex is required")
	}
	if typ == gatewayv1.PathMatchRegularExpression {
		if _, err := regexp.Compile(value); err != nil {
			return nil, fmt.Errorf("uri: invalid RE2 regular expression %q: %v", value, err)
		}
	}
	return &gatewayv1.HTTPPathMatch{Type: &typ, Value: &value}, nil
}

// valueMatchFrom converts a header or query StringMatch; the Gateway API's
// regular expressions match the whole value.
func valueMatchFrom(s v1beta1.StringMatch) (gatewayv1.HeaderMatchType, string, error) {
	var typ gatewayv1.HeaderMatchType
	var value string
	switch {
	case s.Exact != "":
		return gatewayv1.HeaderMatchExact, s.Exact, nil
	case s.Prefix != "":
		typ, value = gatewayv1.HeaderMatchRegularExpression, regexp.QuoteMeta(s.Prefix)+".*"
	case s.Suffix != "":
		typ, value = gatewayv1.HeaderMatchRegularExpression, ".*"+regexp.QuoteMeta(s.Suffix)
	case s.Regex != "":
		typ, value = gatewayv1.HeaderMatchRegularExpression, s.Regex
	default:
		return "", "", fmt.Errorf("one of exact, prefix, suffix or regex is required")
	}
	if _, err := regexp.Compile(value); err != nil {
		return "", "", fmt.Errorf("invalid RE2 regular expression %q: %v", value, err)
	}
	return typ, value, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Apply rewrites route in place for the weights (primary, canary) and returns
// whether anything changed; applying the same state twice changes nothing.
//
//   - The traffic-split rules are the user rules whose backendRefs name both
//     the primary and the canary Service (SetBackendWeights' rule: a rule
//     naming only one of them is a pin and is left alone). When there is none,
//     a rule whose only backendRef is the apex or primary Service is adopted:
//     its backendRef becomes the primary and canary pair. An owned route
//     without a traffic-split rule gets a single one.
//   - Without match, the split rules get the weights. With match (A/B), the
//     split rules send everything to the primary and a rule named ABRuleName is
//     put before each of them, with the split rule's matches combined with
//     cr.Match (cr.Match wins for the path, the method and same-named headers
//     and query parameters), its filters and timeouts, and the weights.
//   - With mirror, each split rule gets a RequestMirror filter to the canary
//     Service with MirrorPercent; without, that filter is removed.
//   - With Affinity, and a canary weight above 0 outside an A/B test, the
//     canary backendRef of each split rule adds "Set-Cookie:
//     <cookieName>=<value>; Max-Age=<maxAge>..." to its responses, and a rule
//     named StickyRuleName before it sends requests whose Cookie header
//     matches ".*<cookieName>=<value>.*" to the canary. Both go when the
//     canary weight is 0.
//
// Every other rule is left as it was, byte for byte.
func (cr CanaryRoute) Apply(route *gatewayv1.HTTPRoute, primary, canary int, match, mirror bool) (changed bool) {
	if route == nil {
		return false
	}
	next := route.DeepCopy()
	var user []gatewayv1.HTTPRouteRule
	for _, r := range next.Spec.Rules {
		if !isGenerated(r) {
			user = append(user, r)
		}
	}
	split := cr.splitRules(next, user)
	if len(split) == 0 {
		split = cr.adopt(next, user)
	}
	if len(split) == 0 && cr.Owned {
		user = []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{
			cr.backendRef(cr.Primary, cr.Port, 100), cr.backendRef(cr.Canary, cr.Port, 0),
		}}}
		split = []int{0}
	}
	pw, cw := int32(primary), int32(canary)
	if match {
		pw, cw = pw+cw, 0
	}
	sticky := cr.Affinity != nil && cw > 0
	var rules []gatewayv1.HTTPRouteRule
	n := 0
	for i := range user {
		if !slices.Contains(split, i) {
			rules = append(rules, user[i])
			continue
		}
		r := &user[i]
		cr.setWeights(next, r, pw, cw)
		cr.setMirror(next, r, mirror)
		cr.setCookie(next, r, sticky)
		if match && len(cr.Match) > 0 {
			rules = append(rules, cr.abRule(next, r, n, int32(primary), int32(canary)))
		}
		if sticky {
			rules = append(rules, cr.stickyRule(next, r, n))
		}
		rules = append(rules, *r)
		n++
	}
	next.Spec.Rules = rules
	if equality.Semantic.DeepEqual(route.Spec, next.Spec) {
		return false
	}
	route.Spec = next.Spec
	return true
}

// Observe reads the canary's state from the route: the weights of the A/B
// rule when there is one (matched), else of the first traffic-split rule;
// mirrored when a split rule mirrors to the canary. ok is false when the route
// has neither.
func (cr CanaryRoute) Observe(route *gatewayv1.HTTPRoute) (primary, canary int, mirrored, matched, ok bool) {
	if route == nil {
		return 0, 0, false, false, false
	}
	var user []gatewayv1.HTTPRouteRule
	for _, r := range route.Spec.Rules {
		if isGenerated(r) {
			if hasName(r, ABRuleName) && !matched {
				p, c := cr.ruleWeights(route, &r)
				primary, canary, matched, ok = int(p), int(c), true, true
			}
			continue
		}
		user = append(user, r)
	}
	for _, i := range cr.splitRules(route, user) {
		if !matched && !ok {
			p, c := cr.ruleWeights(route, &user[i])
			primary, canary, ok = int(p), int(c), true
		}
		if cr.mirrorIndex(route, &user[i]) >= 0 {
			mirrored = true
		}
	}
	return primary, canary, mirrored, matched, ok
}

// isGenerated reports whether a rule is one Apply wrote.
func isGenerated(r gatewayv1.HTTPRouteRule) bool {
	return hasName(r, ABRuleName) || hasName(r, StickyRuleName)
}

// hasName reports whether the rule is named base or base-<n>.
func hasName(r gatewayv1.HTTPRouteRule, base string) bool {
	if r.Name == nil {
		return false
	}
	name := string(*r.Name)
	if name == base {
		return true
	}
	rest, ok := strings.CutPrefix(name, base+"-")
	if !ok {
		return false
	}
	_, err := strconv.Atoi(rest)
	return err == nil
}

func generatedName(base string, n int) *gatewayv1.SectionName {
	name := gatewayv1.SectionName(base)
	if n > 0 {
		name = gatewayv1.SectionName(fmt.Sprintf("%s-%d", base, n))
	}
	return &name
}

// splitRules returns the indexes of the rules naming both the primary and the
// canary Service.
func (cr CanaryRoute) splitRules(route *gatewayv1.HTTPRoute, rules []gatewayv1.HTTPRouteRule) []int {
	var out []int
	for i := range rules {
		var p, c bool
		for j := range rules[i].BackendRefs {
			name, ok := localServiceName(route, &rules[i].BackendRefs[j].BackendRef)
			p = p || (ok && name == cr.Primary)
			c = c || (ok && name == cr.Canary)
		}
		if p && c {
			out = append(out, i)
		}
	}
	return out
}

// adopt turns the rules whose only backendRef is the apex or the primary
// Service into split rules and returns their indexes.
func (cr CanaryRoute) adopt(route *gatewayv1.HTTPRoute, rules []gatewayv1.HTTPRouteRule) []int {
	var out []int
	for i := range rules {
		if len(rules[i].BackendRefs) != 1 {
			continue
		}
		ref := rules[i].BackendRefs[0]
		name, ok := localServiceName(route, &ref.BackendRef)
		if !ok || (name != cr.Apex && name != cr.Primary) {
			continue
		}
		port := cr.Port
		if ref.Port != nil {
			port = int32(*ref.Port)
		}
		p := ref.DeepCopy()
		p.Name = gatewayv1.ObjectName(cr.Primary)
		w := int32(100)
		p.Weight = &w
		rules[i].BackendRefs = []gatewayv1.HTTPBackendRef{*p, cr.backendRef(cr.Canary, port, 0)}
		out = append(out, i)
	}
	return out
}

func (cr CanaryRoute) backendRef(name string, port, weight int32) gatewayv1.HTTPBackendRef {
	pn := gatewayv1.PortNumber(port)
	group := gatewayv1.Group("")
	kind := gatewayv1.Kind("Service")
	return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{
		BackendObjectReference: gatewayv1.BackendObjectReference{Group: &group, Kind: &kind, Name: gatewayv1.ObjectName(name), Port: &pn},
		Weight:                 &weight,
	}}
}

// setWeights gives the primary and canary backendRefs of a rule the weights
// (a service named twice gets the weight on its first ref, 0 on the others).
func (cr CanaryRoute) setWeights(route *gatewayv1.HTTPRoute, r *gatewayv1.HTTPRouteRule, primary, canary int32) {
	seen := map[string]bool{}
	for j := range r.BackendRefs {
		ref := &r.BackendRefs[j].BackendRef
		name, ok := localServiceName(route, ref)
		if !ok || (name != cr.Primary && name != cr.Canary) {
			continue
		}
		w := primary
		if name == cr.Canary {
			w = canary
		}
		if seen[name] {
			w = 0
		}
		seen[name] = true
		if weightOf(ref) != w {
			ref.Weight = &w
		}
	}
}

// ruleWeights sums the primary and canary weights of a rule.
func (cr CanaryRoute) ruleWeights(route *gatewayv1.HTTPRoute, r *gatewayv1.HTTPRouteRule) (primary, canary int32) {
	for j := range r.BackendRefs {
		ref := &r.BackendRefs[j].BackendRef
		switch name, ok := localServiceName(route, ref); {
		case ok && name == cr.Primary:
			primary += weightOf(ref)
		case ok && name == cr.Canary:
			canary += weightOf(ref)
		}
	}
	return primary, canary
}

// canaryPort is the port of the rule's canary backendRef, or cr.Port.
func (cr CanaryRoute) canaryPort(route *gatewayv1.HTTPRoute, r *gatewayv1.HTTPRouteRule) int32 {
	for j := range r.BackendRefs {
		ref := &r.BackendRefs[j].BackendRef
		if name, ok := localServiceName(route, ref); ok && name == cr.Canary && ref.Port != nil {
			return int32(*ref.Port)
		}
	}
	return cr.Port
}

// mirrorIndex is the index of the rule's RequestMirror filter to the canary
// Service, or -1.
func (cr CanaryRoute) mirrorIndex(route *gatewayv1.HTTPRoute, r *gatewayv1.HTTPRouteRule) int {
	for k, f := range r.Filters {
		if f.Type != gatewayv1.HTTPRouteFilterRequestMirror || f.RequestMirror == nil {
			continue
		}
		ref := gatewayv1.BackendRef{BackendObjectReference: f.RequestMirror.BackendRef}
		if name, ok := localServiceName(route, &ref); ok && name == cr.Canary {
			return k
		}
	}
	return -1
}

func (cr CanaryRoute) setMirror(route *gatewayv1.HTTPRoute, r *gatewayv1.HTTPRouteRule, on bool) {
	k := cr.mirrorIndex(route, r)
	if !on {
		if k >= 0 {
			r.Filters = slices.Delete(r.Filters, k, k+1)
			if len(r.Filters) == 0 {
				r.Filters = nil
			}
		}
		return
	}
	var percent *int32
	if p := cr.MirrorPercent; p > 0 && p < 100 {
		percent = &p
	}
	if k >= 0 {
		m := r.Filters[k].RequestMirror
		if m.Fraction == nil && equalInt32(m.Percent, percent) {
			return
		}
		m.Percent, m.Fraction = percent, nil
		return
	}
	port := gatewayv1.PortNumber(cr.canaryPort(route, r))
	group := gatewayv1.Group("")
	kind := gatewayv1.Kind("Service")
	r.Filters = append(r.Filters, gatewayv1.HTTPRouteFilter{
		Type: gatewayv1.HTTPRouteFilterRequestMirror,
		RequestMirror: &gatewayv1.HTTPRequestMirrorFilter{
			BackendRef: gatewayv1.BackendObjectReference{Group: &group, Kind: &kind, Name: gatewayv1.ObjectName(cr.Canary), Port: &port},
			Percent:    percent,
		},
	})
}

func equalInt32(a, b *int32) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

// cookieName is the affinity cookie's name, "" without affinity.
func (cr CanaryRoute) cookieName() string {
	if cr.Affinity == nil {
		return ""
	}
	return cr.Affinity.CookieName
}

// cookieValue is the value the affinity cookie is set to.
func (cr CanaryRoute) cookieValue() string {
	if cr.AffinityValue != "" {
		return cr.AffinityValue
	}
	return cr.Canary
}

// setCookieHeader is the Set-Cookie value of the affinity cookie.
func (cr CanaryRoute) setCookieHeader() string {
	a := cr.Affinity
	maxAge := a.MaxAge
	if maxAge <= 0 {
		maxAge = DefaultCookieMaxAge
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s=%s; Max-Age=%d", a.CookieName, cr.cookieValue(), maxAge)
	if a.Path != "" {
		fmt.Fprintf(&b, "; Path=%s", a.Path)
	}
	if a.Domain != "" {
		fmt.Fprintf(&b, "; Domain=%s", a.Domain)
	}
	if a.SameSite != "" {
		fmt.Fprintf(&b, "; SameSite=%s", a.SameSite)
	}
	if a.HTTPOnly {
		b.WriteString("; HttpOnly")
	}
	if a.Secure || a.SameSite == "None" {
		b.WriteString("; Secure")
	}
	if a.Partitioned {
		b.WriteString("; Partitioned")
	}
	return b.String()
}

// isAffinityCookie reports whether a response header is the Set-Cookie Apply
// writes for the cookie name.
func isAffinityCookie(h gatewayv1.HTTPHeader, cookie string) bool {
	return cookie != "" && strings.EqualFold(string(h.Name), "Set-Cookie") && strings.HasPrefix(h.Value, cookie+"=")
}

// setCookie adds (on) or removes the affinity Set-Cookie on the canary
// backendRefs of a rule. The header goes into the backendRef's
// ResponseHeaderModifier (a backendRef takes only one), as an "add" so that
// the canary's own cookies are kept.
func (cr CanaryRoute) setCookie(route *gatewayv1.HTTPRoute, r *gatewayv1.HTTPRouteRule, on bool) {
	cookie := cr.cookieName()
	for j := range r.BackendRefs {
		b := &r.BackendRefs[j]
		if name, ok := localServiceName(route, &b.BackendRef); !ok || name != cr.Canary {
			continue
		}
		stripCookie(b, cookie)
		if !on {
			continue
		}
		h := gatewayv1.HTTPHeader{Name: "Set-Cookie", Value: cr.setCookieHeader()}
		for k := range b.Filters {
			if f := &b.Filters[k]; f.Type == gatewayv1.HTTPRouteFilterResponseHeaderModifier && f.ResponseHeaderModifier != nil {
				f.ResponseHeaderModifier.Add = append(f.ResponseHeaderModifier.Add, h)
				h.Name = ""
				break
			}
		}
		if h.Name != "" {
			b.Filters = append(b.Filters, gatewayv1.HTTPRouteFilter{
				Type:                   gatewayv1.HTTPRouteFilterResponseHeaderModifier,
				ResponseHeaderModifier: &gatewayv1.HTTPHeaderFilter{Add: []gatewayv1.HTTPHeader{h}},
			})
		}
	}
}

// stripCookie removes the affinity Set-Cookie from a backendRef, and the
// ResponseHeaderModifier it leaves empty.
func stripCookie(b *gatewayv1.HTTPBackendRef, cookie string) {
	if cookie == "" {
		return
	}
	for k := 0; k < len(b.Filters); k++ {
		f := &b.Filters[k]
		if f.Type != gatewayv1.HTTPRouteFilterResponseHeaderModifier || f.ResponseHeaderModifier == nil {
			continue
		}
		m := f.ResponseHeaderModifier
		before := len(m.Add)
		m.Add = slices.DeleteFunc(m.Add, func(h gatewayv1.HTTPHeader) bool { return isAffinityCookie(h, cookie) })
		if len(m.Add) == before {
			continue
		}
		if len(m.Add) == 0 {
			m.Add = nil
			if len(m.Set) == 0 && len(m.Remove) == 0 {
				b.Filters = slices.Delete(b.Filters, k, k+1)
				k--
			}
		}
	}
	if len(b.Filters) == 0 {
		b.Filters = nil
	}
}

// derived is a copy of a split rule for a generated rule: its filters without
// the canary mirror, its timeouts and retry, and only its primary and canary
// backendRefs (without the affinity cookie) with the given weights.
func (cr CanaryRoute) derived(route *gatewayv1.HTTPRoute, r *gatewayv1.HTTPRouteRule, name *gatewayv1.SectionName, primary, canary int32) gatewayv1.HTTPRouteRule {
	c := r.DeepCopy()
	out := gatewayv1.HTTPRouteRule{Name: name, Filters: c.Filters, Timeouts: c.Timeouts, Retry: c.Retry}
	if k := cr.mirrorIndex(route, &out); k >= 0 {
		out.Filters = slices.Delete(out.Filters, k, k+1)
	}
	if len(out.Filters) == 0 {
		out.Filters = nil
	}
	for _, b := range c.BackendRefs {
		name, ok := localServiceName(route, &b.BackendRef)
		if !ok || (name != cr.Primary && name != cr.Canary) {
			continue
		}
		stripCookie(&b, cr.cookieName())
		out.BackendRefs = append(out.BackendRefs, b)
	}
	cr.setWeights(route, &out, primary, canary)
	return out
}

// abRule is the A/B rule put before the n-th split rule r.
func (cr CanaryRoute) abRule(route *gatewayv1.HTTPRoute, r *gatewayv1.HTTPRouteRule, n int, primary, canary int32) gatewayv1.HTTPRouteRule {
	out := cr.derived(route, r, generatedName(ABRuleName, n), primary, canary)
	out.Matches = mergeMatches(r.Matches, cr.Match)
	return out
}

// stickyRule is the session affinity rule put before the n-th split rule r.
func (cr CanaryRoute) stickyRule(route *gatewayv1.HTTPRoute, r *gatewayv1.HTTPRouteRule, n int) gatewayv1.HTTPRouteRule {
	out := cr.derived(route, r, generatedName(StickyRuleName, n), 0, 100)
	typ := gatewayv1.HeaderMatchRegularExpression
	cookie := gatewayv1.HTTPRouteMatch{Headers: []gatewayv1.HTTPHeaderMatch{{
		Type: &typ, Name: "Cookie",
		Value: ".*" + regexp.QuoteMeta(cr.cookieName()+"="+cr.cookieValue()) + ".*",
	}}}
	out.Matches = mergeMatches(r.Matches, []gatewayv1.HTTPRouteMatch{cookie})
	return out
}

// mergeMatches is the cross product of a rule's matches and extra matches:
// each pair ANDs both, extra's path, method, headers and query parameters
// winning over the rule's of the same name. A rule without matches matches
// everything, so the result is then extra itself.
func mergeMatches(rule, extra []gatewayv1.HTTPRouteMatch) []gatewayv1.HTTPRouteMatch {
	if len(rule) == 0 {
		out := make([]gatewayv1.HTTPRouteMatch, len(extra))
		for i := range extra {
			extra[i].DeepCopyInto(&out[i])
		}
		return out
	}
	var out []gatewayv1.HTTPRouteMatch
	for i := range rule {
		for j := range extra {
			m := *rule[i].DeepCopy()
			e := extra[j].DeepCopy()
			if e.Path != nil {
				m.Path = e.Path
			}
			if e.Method != nil {
				m.Method = e.Method
			}
			for _, h := range e.Headers {
				m.Headers = slices.DeleteFunc(m.Headers, func(x gatewayv1.HTTPHeaderMatch) bool { return strings.EqualFold(string(x.Name), string(h.Name)) })
				m.Headers = append(m.Headers, h)
			}
			for _, q := range e.QueryParams {
				m.QueryParams = slices.DeleteFunc(m.QueryParams, func(x gatewayv1.HTTPQueryParamMatch) bool { return x.Name == q.Name })
				m.QueryParams = append(m.QueryParams, q)
			}
			out = append(out, m)
		}
	}
	return out
}
