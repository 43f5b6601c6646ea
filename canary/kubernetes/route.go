package kubernetes

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/sluicehq/sluice/canary"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
	"github.com/sluicehq/sluice/routing"
)

// routeSpecAnnotation on a generated HTTPRoute is a hash of the spec Sluice
// last wrote, so that a change of the Canary's service or analysis is told
// from the API server's defaulting of what was written.
const routeSpecAnnotation = "sluice.dev/route-spec"

// baseRoute returns the spec of the HTTPRoute Sluice generates for c, all
// traffic on the primary:
//
//   - parentRefs: service.gatewayRefs, or the apex Service's port (GAMMA);
//   - hostnames: service.hosts;
//   - one traffic-split rule with service.match (every request when empty),
//     the service's filters (headers, rewrite, static mirrors, CORS) and
//     timeouts, and the backends "<service>-primary" (100) and
//     "<service>-canary" (0).
//
// The canary's part (weights, the A/B rule, mirroring, session affinity) is
// routing.CanaryRoute's, applied on top (desiredRoute).
func baseRoute(c *v1beta1.Canary) (gatewayv1.HTTPRouteSpec, error) {
	s := &c.Spec.Service
	apex, primary, canarySvc := c.GetServiceNames()
	var spec gatewayv1.HTTPRouteSpec

	if len(s.GatewayRefs) == 0 {
		spec.ParentRefs = []gatewayv1.ParentReference{{
			Group: new(gatewayv1.Group("")),
			Kind:  new(gatewayv1.Kind("Service")),
			Name:  gatewayv1.ObjectName(apex),
			Port:  new(s.Port),
		}}
	}
	for _, g := range s.GatewayRefs {
		ref := gatewayv1.ParentReference{
			Group: new(gatewayv1.Group(v1beta1.DefaultGatewayGroup)),
			Kind:  new(gatewayv1.Kind(v1beta1.DefaultGatewayKind)),
			Name:  gatewayv1.ObjectName(g.Name),
			Port:  g.Port,
		}
		if g.Group != nil {
			ref.Group = new(gatewayv1.Group(*g.Group))
		}
		if g.Kind != nil {
			ref.Kind = new(gatewayv1.Kind(*g.Kind))
		}
		if g.Namespace != nil {
			ref.Namespace = new(gatewayv1.Namespace(*g.Namespace))
		}
		if g.SectionName != nil {
			ref.SectionName = new(gatewayv1.SectionName(*g.SectionName))
		}
		spec.ParentRefs = append(spec.ParentRefs, ref)
	}
	for _, h := range s.Hosts {
		spec.Hostnames = append(spec.Hostnames, gatewayv1.Hostname(h))
	}

	matches, err := routeMatches(s.Match)
	if err != nil {
		return spec, fmt.Errorf("service.match: %w", err)
	}
	filters, err := routeFilters(s)
	if err != nil {
		return spec, err
	}
	backend := func(name string, weight int) gatewayv1.HTTPBackendRef {
		return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{
			BackendObjectReference: serviceBackend(name, s.Port),
			Weight:                 new(int32(weight)),
		}}
	}
	spec.Rules = []gatewayv1.HTTPRouteRule{{
		Matches:     matches,
		Filters:     filters,
		Timeouts:    routeTimeouts(s),
		BackendRefs: []gatewayv1.HTTPBackendRef{backend(primary, 100), backend(canarySvc, 0)},
	}}
	return spec, nil
}

// canaryRoute is c's part of its route. The session affinity cookie's value
// is the revision under analysis: the same for a run, another for the next.
func canaryRoute(c *v1beta1.Canary) (routing.CanaryRoute, error) {
	cr, err := routing.CanaryRouteFor(c, c.Status.ObservedRevision)
	if err != nil {
		return routing.CanaryRoute{}, err
	}
	return cr, nil
}

// desiredRoute is the spec of Sluice's own route for c with weights w: the
// base route with the canary's part applied.
func desiredRoute(c *v1beta1.Canary, w canary.SetWeights) (gatewayv1.HTTPRouteSpec, error) {
	spec, err := baseRoute(c)
	if err != nil {
		return spec, err
	}
	cr, err := canaryRoute(c)
	if err != nil {
		return spec, err
	}
	route := &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: c.Namespace}, Spec: spec}
	cr.Apply(route, w.Primary, w.Canary, w.Match, w.Mirror)
	return route.Spec, nil
}

// serviceBackend refers to Service name on port.
func serviceBackend(name string, port int32) gatewayv1.BackendObjectReference {
	return gatewayv1.BackendObjectReference{
		Group: new(gatewayv1.Group("")),
		Kind:  new(gatewayv1.Kind("Service")),
		Name:  gatewayv1.ObjectName(name),
		Port:  new(port),
	}
}

// specHash is the hash of a route spec, for routeSpecAnnotation.
func specHash(spec *gatewayv1.HTTPRouteSpec) string {
	data, err := json.Marshal(spec)
	if err != nil {
		data = fmt.Appendf(nil, "%#v", spec)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}

// routeMatches maps service.match onto HTTPRoute matches as
// routing.MatchesFrom does analysis.match, with a path prefix "/" where a
// match has no uri, and every request matched when ms is empty.
func routeMatches(ms []v1beta1.HTTPMatchRequest) ([]gatewayv1.HTTPRouteMatch, error) {
	if len(ms) == 0 {
		return []gatewayv1.HTTPRouteMatch{{Path: pathMatch(gatewayv1.PathMatchPathPrefix, "/")}}, nil
	}
	out := make([]gatewayv1.HTTPRouteMatch, 0, len(ms))
	for i := range ms {
		m, err := routing.MatchesFrom(ms[i : i+1])
		if err != nil {
			// MatchesFrom names analysis.match[0]; this is service.match[i].
			return nil, fmt.Errorf("[%d].%s", i, strings.TrimPrefix(err.Error(), "analysis.match[0]."))
		}
		if m[0].Path == nil {
			m[0].Path = pathMatch(gatewayv1.PathMatchPathPrefix, "/")
		}
		out = append(out, m[0])
	}
	return out, nil
}

func pathMatch(t gatewayv1.PathMatchType, v string) *gatewayv1.HTTPPathMatch {
	return &gatewayv1.HTTPPathMatch{Type: new(t), Value: new(v)}
}

// routeFilters are the filters of the service's rules: header modifiers,
// URL rewrite, static mirrors and CORS.
func routeFilters(s *v1beta1.CanaryService) ([]gatewayv1.HTTPRouteFilter, error) {
	var out []gatewayv1.HTTPRouteFilter
	if h := s.Headers; h != nil {
		if f := headerFilter(h.Request); f != nil {
			out = append(out, gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: f})
		}
		if f := headerFilter(h.Response); f != nil {
			out = append(out, gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterResponseHeaderModifier, ResponseHeaderModifier: f})
		}
	}
	if r := s.Rewrite; r != nil && (r.URI != "" || r.Authority != "") {
		f := &gatewayv1.HTTPURLRewriteFilter{}
		if r.Authority != "" {
			f.Hostname = new(gatewayv1.PreciseHostname(r.Authority))
		}
		if r.URI != "" {
			if r.GetType() == v1beta1.RewritePrefixMatch {
				f.Path = &gatewayv1.HTTPPathModifier{Type: gatewayv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: new(r.URI)}
			} else {
				f.Path = &gatewayv1.HTTPPathModifier{Type: gatewayv1.FullPathHTTPPathModifier, ReplaceFullPath: new(r.URI)}
			}
		}
		out = append(out, gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterURLRewrite, URLRewrite: f})
	}
	for _, m := range s.Mirror {
		ref := gatewayv1.BackendObjectReference{
			Group: new(gatewayv1.Group("")),
			Kind:  new(gatewayv1.Kind("Service")),
			Name:  gatewayv1.ObjectName(m.BackendRef.Name),
			Port:  m.BackendRef.Port,
		}
		if m.BackendRef.Group != nil {
			ref.Group = new(gatewayv1.Group(*m.BackendRef.Group))
		}
		if m.BackendRef.Kind != nil {
			ref.Kind = new(gatewayv1.Kind(*m.BackendRef.Kind))
		}
		if m.BackendRef.Namespace != nil {
			ref.Namespace = new(gatewayv1.Namespace(*m.BackendRef.Namespace))
		}
		out = append(out, gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterRequestMirror, RequestMirror: &gatewayv1.HTTPRequestMirrorFilter{BackendRef: ref}})
	}
	if p := s.CorsPolicy; p != nil {
		f, err := corsFilter(p)
		if err != nil {
			return nil, fmt.Errorf("service.corsPolicy: %w", err)
		}
		out = append(out, gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterCORS, CORS: f})
	}
	return out, nil
}

func headerFilter(ops *v1beta1.HeaderOperations) *gatewayv1.HTTPHeaderFilter {
	if ops == nil || len(ops.Set) == 0 && len(ops.Add) == 0 && len(ops.Remove) == 0 {
		return nil
	}
	f := &gatewayv1.HTTPHeaderFilter{Remove: slices.Clone(ops.Remove)}
	for _, k := range slices.Sorted(maps.Keys(ops.Set)) {
		f.Set = append(f.Set, gatewayv1.HTTPHeader{Name: gatewayv1.HTTPHeaderName(k), Value: ops.Set[k]})
	}
	for _, k := range slices.Sorted(maps.Keys(ops.Add)) {
		f.Add = append(f.Add, gatewayv1.HTTPHeader{Name: gatewayv1.HTTPHeaderName(k), Value: ops.Add[k]})
	}
	return f
}

func corsFilter(p *v1beta1.CorsPolicy) (*gatewayv1.HTTPCORSFilter, error) {
	f := &gatewayv1.HTTPCORSFilter{}
	for _, o := range p.AllowOrigin {
		f.AllowOrigins = append(f.AllowOrigins, gatewayv1.CORSOrigin(o))
	}
	for _, o := range p.AllowOrigins {
		switch {
		case o.Exact != "":
			f.AllowOrigins = append(f.AllowOrigins, gatewayv1.CORSOrigin(o.Exact))
		case o.Prefix != "" || o.Suffix != "" || o.Regex != "":
			return nil, errors.New("allowOrigins takes exact origins only on a Gateway API route; use allowOrigin with wildcards")
		}
	}
	for _, m := range p.AllowMethods {
		f.AllowMethods = append(f.AllowMethods, gatewayv1.HTTPMethodWithWildcard(m))
	}
	for _, h := range p.AllowHeaders {
		f.AllowHeaders = append(f.AllowHeaders, gatewayv1.HTTPHeaderName(h))
	}
	for _, h := range p.ExposeHeaders {
		f.ExposeHeaders = append(f.ExposeHeaders, gatewayv1.HTTPHeaderName(h))
	}
	if p.MaxAge != "" {
		d, err := time.ParseDuration(p.MaxAge)
		if err != nil {
			return nil, fmt.Errorf("maxAge %q is not a duration: %w", p.MaxAge, err)
		}
		f.MaxAge = int32(d / time.Second)
	}
	if p.AllowCredentials {
		f.AllowCredentials = new(true)
	}
	return f, nil
}

func routeTimeouts(s *v1beta1.CanaryService) *gatewayv1.HTTPRouteTimeouts {
	if s.Timeout == "" && s.BackendTimeout == "" {
		return nil
	}
	t := &gatewayv1.HTTPRouteTimeouts{}
	if s.Timeout != "" {
		t.Request = new(gatewayv1.Duration(s.Timeout))
	}
	if s.BackendTimeout != "" {
		t.BackendRequest = new(gatewayv1.Duration(s.BackendTimeout))
	}
	return t
}

// retryAnnotations are the route annotations (package routing's) of the
// service's retry policy: attempts, per-try timeout, and the HTTP
// conditions of retryOn that Sluice's proxies know (5xx, gateway-error,
// status codes and ranges; gateway-error when none is given).
func retryAnnotations(s *v1beta1.CanaryService) map[string]string {
	r := s.Retries
	if r == nil || r.Attempts <= 0 {
		return nil
	}
	out := map[string]string{routing.AnnotationRetryLimit: strconv.Itoa(r.Attempts)}
	if r.PerTryTimeout != "" {
		out[routing.AnnotationRetryTimeout] = r.PerTryTimeout
	}
	var conds []string
	for c := range strings.SplitSeq(r.RetryOn, ",") {
		c = strings.TrimSpace(c)
		if c == "5xx" || c == "gateway-error" || retryCodePattern.MatchString(c) {
			conds = append(conds, c)
		}
	}
	if len(conds) == 0 {
		conds = []string{"gateway-error"}
	}
	out[routing.AnnotationRetryHTTP] = strings.Join(conds, ",")
	return out
}

// retryCodePattern matches a status code or a range of them.
var retryCodePattern = regexp.MustCompile(`^[1-5][0-9][0-9](-[1-5][0-9][0-9])?$`)
