package meshv1

import (
	"errors"
	"fmt"
	"maps"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

// invalidEnum is what a *ToProto converter writes for a routetable string it
// does not know (a typo, or a value newer than this contract). It is no value
// of any enum, so the receiving *FromProto converter rejects the message and
// names the problem instead of silently reading the field's default, which
// for a path match would mean "match everything".
const invalidEnum = -1

// maxPort is the largest TCP port.
const maxPort = 65535

// ServiceToProto converts a compiled service to its destination-stream form.
// Endpoints are left out: GetEndpoints carries them. Values the contract
// cannot represent (an unknown protocol or match type, a port out of range, a
// negative duration) are encoded so that ServiceFromProto rejects them.
func ServiceToProto(s *routetable.Service) *ServiceRoutes {
	if s == nil {
		return nil
	}
	p := &ServiceRoutes{
		Name:      s.Name,
		Namespace: s.Namespace,
		Port:      portToProto(s.Port),
		Addresses: cloneStrings(s.Addresses),
		Hostnames: cloneStrings(s.Hostnames),
		Protocol:  ProtocolToProto(s.Protocol),
		Exists:    cloneBool(s.Exists),
	}
	for i := range s.Rules {
		p.Rules = append(p.Rules, ruleToProto(&s.Rules[i]))
	}
	if b := s.Breaker; b != nil {
		p.Breaker = &Breaker{
			MaxFailures: int32(b.MaxFailures),
			MinPenalty:  durationToProto(b.MinPenalty),
			MaxPenalty:  durationToProto(b.MaxPenalty),
			JitterRatio: b.JitterRatio,
		}
	}
	return p
}

// ServiceFromProto converts a destination-stream service to its compiled
// form, with no endpoints. It fails, naming the field, on anything the proxy
// could not run: an unknown enum value, a port out of range, an invalid or
// negative duration.
func ServiceFromProto(p *ServiceRoutes) (routetable.Service, error) {
	if p == nil {
		return routetable.Service{}, errors.New("service routes are missing")
	}
	port, err := portFromProto(p.GetPort())
	if err != nil {
		return routetable.Service{}, fmt.Errorf("service %q: %w", p.GetName(), err)
	}
	proto, err := ProtocolFromProto(p.GetProtocol())
	if err != nil {
		return routetable.Service{}, fmt.Errorf("service %q: %w", p.GetName(), err)
	}
	s := routetable.Service{
		Name:      p.GetName(),
		Namespace: p.GetNamespace(),
		Port:      port,
		Addresses: cloneStrings(p.GetAddresses()),
		Hostnames: cloneStrings(p.GetHostnames()),
		Protocol:  proto,
		Exists:    cloneBool(p.Exists),
	}
	key := s.Key()
	for i, r := range p.GetRules() {
		rule, err := ruleFromProto(r)
		if err != nil {
			return routetable.Service{}, fmt.Errorf("service %s: rules[%d]: %w", key, i, err)
		}
		s.Rules = append(s.Rules, rule)
	}
	if b := p.GetBreaker(); b != nil {
		minPenalty, err := durationFromProto(b.GetMinPenalty())
		if err != nil {
			return routetable.Service{}, fmt.Errorf("service %s: breaker: min_penalty: %w", key, err)
		}
		maxPenalty, err := durationFromProto(b.GetMaxPenalty())
		if err != nil {
			return routetable.Service{}, fmt.Errorf("service %s: breaker: max_penalty: %w", key, err)
		}
		s.Breaker = &routetable.Breaker{
			MaxFailures: int(b.GetMaxFailures()),
			MinPenalty:  minPenalty,
			MaxPenalty:  maxPenalty,
			JitterRatio: b.GetJitterRatio(),
		}
	}
	return s, nil
}

// EndpointToProto converts an endpoint to its destination-stream form.
func EndpointToProto(e *routetable.Endpoint) *Endpoint {
	if e == nil {
		return nil
	}
	return &Endpoint{
		Address:      e.Address,
		Weight:       e.Weight,
		Labels:       cloneLabels(e.Labels),
		Identity:     e.Identity,
		ProtocolHint: ProtocolToProto(e.Protocol),
		Ready:        cloneBool(e.Ready),
	}
}

// EndpointFromProto converts a destination-stream endpoint to the form the
// proxy balances over. It fails on a missing address or an unknown protocol.
func EndpointFromProto(p *Endpoint) (routetable.Endpoint, error) {
	if p == nil {
		return routetable.Endpoint{}, errors.New("endpoint is missing")
	}
	if p.GetAddress() == "" {
		return routetable.Endpoint{}, errors.New("endpoint has no address")
	}
	proto, err := ProtocolFromProto(p.GetProtocolHint())
	if err != nil {
		return routetable.Endpoint{}, fmt.Errorf("endpoint %s: protocol_hint: %w", p.GetAddress(), err)
	}
	return routetable.Endpoint{
		Address:  p.GetAddress(),
		Ready:    cloneBool(p.Ready),
		Weight:   p.GetWeight(),
		Labels:   cloneLabels(p.GetLabels()),
		Identity: p.GetIdentity(),
		Protocol: proto,
	}, nil
}

// ProtocolToProto converts a routetable protocol; an unknown one becomes a
// value ProtocolFromProto rejects.
func ProtocolToProto(p routetable.Protocol) Protocol {
	switch p {
	case routetable.ProtocolDetect:
		return Protocol_PROTOCOL_DETECT
	case routetable.ProtocolHTTP1:
		return Protocol_PROTOCOL_HTTP1
	case routetable.ProtocolHTTP2:
		return Protocol_PROTOCOL_HTTP2
	case routetable.ProtocolGRPC:
		return Protocol_PROTOCOL_GRPC
	case routetable.ProtocolOpaque:
		return Protocol_PROTOCOL_OPAQUE
	}
	return invalidEnum
}

// ProtocolFromProto converts a protocol to its routetable form.
func ProtocolFromProto(p Protocol) (routetable.Protocol, error) {
	switch p {
	case Protocol_PROTOCOL_DETECT:
		return routetable.ProtocolDetect, nil
	case Protocol_PROTOCOL_HTTP1:
		return routetable.ProtocolHTTP1, nil
	case Protocol_PROTOCOL_HTTP2:
		return routetable.ProtocolHTTP2, nil
	case Protocol_PROTOCOL_GRPC:
		return routetable.ProtocolGRPC, nil
	case Protocol_PROTOCOL_OPAQUE:
		return routetable.ProtocolOpaque, nil
	}
	return "", fmt.Errorf("unknown protocol %d", int32(p))
}

func ruleToProto(r *routetable.Rule) *Rule {
	p := &Rule{
		Route:     r.Route,
		RuleIndex: int32(r.RuleIndex),
		Match:     matchToProto(&r.Match),
		Filters:   filtersToProto(&r.Filters),
	}
	for i := range r.Backends {
		b := &r.Backends[i]
		p.Backends = append(p.Backends, &Backend{
			Service:         b.Service,
			Weight:          cloneUint32(b.Weight),
			RequestHeaders:  headerModifierToProto(b.RequestHeaders),
			ResponseHeaders: headerModifierToProto(b.ResponseHeaders),
		})
	}
	if r.Timeouts != (routetable.Timeouts{}) {
		p.Timeouts = &Timeouts{
			Request:        durationToProto(r.Timeouts.Request),
			BackendRequest: durationToProto(r.Timeouts.BackendRequest),
		}
	}
	if rt := r.Retry; rt != nil {
		pr := &Retry{
			GrpcCodes: cloneStrings(rt.GRPCCodes),
			Attempts:  int32(rt.Attempts),
			Backoff:   durationToProto(rt.Backoff),
		}
		for _, c := range rt.Codes {
			pr.Codes = append(pr.Codes, int32(c))
		}
		for _, cr := range rt.CodeRanges {
			pr.CodeRanges = append(pr.CodeRanges, &StatusRange{From: int32(cr[0]), To: int32(cr[1])})
		}
		p.Retry = pr
	}
	return p
}

func ruleFromProto(p *Rule) (routetable.Rule, error) {
	if p == nil {
		return routetable.Rule{}, errors.New("rule is missing")
	}
	r := routetable.Rule{
		Route:     p.GetRoute(),
		RuleIndex: int(p.GetRuleIndex()),
	}
	var err error
	if r.Match, err = matchFromProto(p.GetMatch()); err != nil {
		return routetable.Rule{}, fmt.Errorf("match: %w", err)
	}
	if r.Filters, err = filtersFromProto(p.GetFilters()); err != nil {
		return routetable.Rule{}, fmt.Errorf("filters: %w", err)
	}
	for i, b := range p.GetBackends() {
		if b == nil {
			return routetable.Rule{}, fmt.Errorf("backends[%d] is missing", i)
		}
		r.Backends = append(r.Backends, routetable.Backend{
			Service:         b.GetService(),
			Weight:          cloneUint32(b.Weight),
			RequestHeaders:  headerModifierFromProto(b.GetRequestHeaders()),
			ResponseHeaders: headerModifierFromProto(b.GetResponseHeaders()),
		})
	}
	if t := p.GetTimeouts(); t != nil {
		if r.Timeouts.Request, err = durationFromProto(t.GetRequest()); err != nil {
			return routetable.Rule{}, fmt.Errorf("timeouts: request: %w", err)
		}
		if r.Timeouts.BackendRequest, err = durationFromProto(t.GetBackendRequest()); err != nil {
			return routetable.Rule{}, fmt.Errorf("timeouts: backend_request: %w", err)
		}
	}
	if pr := p.GetRetry(); pr != nil {
		rt := &routetable.Retry{
			GRPCCodes: cloneStrings(pr.GetGrpcCodes()),
			Attempts:  int(pr.GetAttempts()),
		}
		for _, c := range pr.GetCodes() {
			rt.Codes = append(rt.Codes, int(c))
		}
		for i, cr := range pr.GetCodeRanges() {
			if cr == nil {
				return routetable.Rule{}, fmt.Errorf("retry: code_ranges[%d] is missing", i)
			}
			rt.CodeRanges = append(rt.CodeRanges, [2]int{int(cr.GetFrom()), int(cr.GetTo())})
		}
		if rt.Backoff, err = durationFromProto(pr.GetBackoff()); err != nil {
			return routetable.Rule{}, fmt.Errorf("retry: backoff: %w", err)
		}
		r.Retry = rt
	}
	return r, nil
}

func matchToProto(m *routetable.Match) *Match {
	return &Match{
		PathType:    pathMatchTypeToProto(m.PathType),
		Path:        m.Path,
		Headers:     valueMatchesToProto(m.Headers),
		QueryParams: valueMatchesToProto(m.QueryParams),
		Method:      m.Method,
	}
}

func matchFromProto(p *Match) (routetable.Match, error) {
	if p == nil {
		return routetable.Match{}, nil
	}
	pathType, err := pathMatchTypeFromProto(p.GetPathType())
	if err != nil {
		return routetable.Match{}, fmt.Errorf("path_type: %w", err)
	}
	headers, err := valueMatchesFromProto(p.GetHeaders())
	if err != nil {
		return routetable.Match{}, fmt.Errorf("headers: %w", err)
	}
	query, err := valueMatchesFromProto(p.GetQueryParams())
	if err != nil {
		return routetable.Match{}, fmt.Errorf("query_params: %w", err)
	}
	return routetable.Match{
		PathType:    pathType,
		Path:        p.GetPath(),
		Headers:     headers,
		QueryParams: query,
		Method:      p.GetMethod(),
	}, nil
}

func pathMatchTypeToProto(t routetable.PathMatchType) PathMatchType {
	switch t {
	case "":
		return PathMatchType_PATH_MATCH_TYPE_UNSPECIFIED
	case routetable.PathPrefix:
		return PathMatchType_PATH_MATCH_TYPE_PREFIX
	case routetable.PathExact:
		return PathMatchType_PATH_MATCH_TYPE_EXACT
	case routetable.PathRegex:
		return PathMatchType_PATH_MATCH_TYPE_REGULAR_EXPRESSION
	}
	return invalidEnum
}

func pathMatchTypeFromProto(t PathMatchType) (routetable.PathMatchType, error) {
	switch t {
	case PathMatchType_PATH_MATCH_TYPE_UNSPECIFIED:
		return "", nil
	case PathMatchType_PATH_MATCH_TYPE_PREFIX:
		return routetable.PathPrefix, nil
	case PathMatchType_PATH_MATCH_TYPE_EXACT:
		return routetable.PathExact, nil
	case PathMatchType_PATH_MATCH_TYPE_REGULAR_EXPRESSION:
		return routetable.PathRegex, nil
	}
	return "", fmt.Errorf("unknown path match type %d", int32(t))
}

func valueMatchesToProto(ms []routetable.ValueMatch) []*ValueMatch {
	var out []*ValueMatch
	for _, m := range ms {
		t := ValueMatchType(invalidEnum)
		switch m.Type {
		case "":
			t = ValueMatchType_VALUE_MATCH_TYPE_UNSPECIFIED
		case routetable.ValueExact:
			t = ValueMatchType_VALUE_MATCH_TYPE_EXACT
		case routetable.ValueRegex:
			t = ValueMatchType_VALUE_MATCH_TYPE_REGULAR_EXPRESSION
		}
		out = append(out, &ValueMatch{Type: t, Name: m.Name, Value: m.Value})
	}
	return out
}

func valueMatchesFromProto(ps []*ValueMatch) ([]routetable.ValueMatch, error) {
	var out []routetable.ValueMatch
	for i, p := range ps {
		if p == nil {
			return nil, fmt.Errorf("[%d] is missing", i)
		}
		var t routetable.ValueMatchType
		switch p.GetType() {
		case ValueMatchType_VALUE_MATCH_TYPE_UNSPECIFIED:
		case ValueMatchType_VALUE_MATCH_TYPE_EXACT:
			t = routetable.ValueExact
		case ValueMatchType_VALUE_MATCH_TYPE_REGULAR_EXPRESSION:
			t = routetable.ValueRegex
		default:
			return nil, fmt.Errorf("[%d] %q: unknown value match type %d", i, p.GetName(), int32(p.GetType()))
		}
		out = append(out, routetable.ValueMatch{Type: t, Name: p.GetName(), Value: p.GetValue()})
	}
	return out, nil
}

func filtersToProto(f *routetable.Filters) *Filters {
	if f.RequestHeaders == nil && f.ResponseHeaders == nil && f.URLRewrite == nil &&
		f.Redirect == nil && len(f.Mirrors) == 0 {
		return nil
	}
	p := &Filters{
		RequestHeaders:  headerModifierToProto(f.RequestHeaders),
		ResponseHeaders: headerModifierToProto(f.ResponseHeaders),
	}
	if u := f.URLRewrite; u != nil {
		p.UrlRewrite = &URLRewrite{Hostname: u.Hostname, PathType: pathModifierToProto(u.PathType), Path: u.Path}
	}
	if r := f.Redirect; r != nil {
		p.Redirect = &Redirect{
			Scheme:     r.Scheme,
			Hostname:   r.Hostname,
			PathType:   pathModifierToProto(r.PathType),
			Path:       r.Path,
			Port:       portToProto(r.Port),
			StatusCode: uint32(r.StatusCode),
		}
	}
	for _, m := range f.Mirrors {
		p.Mirrors = append(p.Mirrors, &Mirror{Backend: m.Backend, Numerator: m.Numerator, Denominator: m.Denominator})
	}
	return p
}

func filtersFromProto(p *Filters) (routetable.Filters, error) {
	if p == nil {
		return routetable.Filters{}, nil
	}
	f := routetable.Filters{
		RequestHeaders:  headerModifierFromProto(p.GetRequestHeaders()),
		ResponseHeaders: headerModifierFromProto(p.GetResponseHeaders()),
	}
	if u := p.GetUrlRewrite(); u != nil {
		pathType, err := pathModifierFromProto(u.GetPathType())
		if err != nil {
			return routetable.Filters{}, fmt.Errorf("url_rewrite: path_type: %w", err)
		}
		f.URLRewrite = &routetable.URLRewrite{Hostname: u.GetHostname(), PathType: pathType, Path: u.GetPath()}
	}
	if r := p.GetRedirect(); r != nil {
		pathType, err := pathModifierFromProto(r.GetPathType())
		if err != nil {
			return routetable.Filters{}, fmt.Errorf("redirect: path_type: %w", err)
		}
		port, err := portFromProto(r.GetPort())
		if err != nil {
			return routetable.Filters{}, fmt.Errorf("redirect: %w", err)
		}
		if c := r.GetStatusCode(); c > 999 {
			return routetable.Filters{}, fmt.Errorf("redirect: status code %d is not an HTTP status", c)
		}
		f.Redirect = &routetable.Redirect{
			Scheme:     r.GetScheme(),
			Hostname:   r.GetHostname(),
			PathType:   pathType,
			Path:       r.GetPath(),
			Port:       port,
			StatusCode: int(r.GetStatusCode()),
		}
	}
	for i, m := range p.GetMirrors() {
		if m == nil {
			return routetable.Filters{}, fmt.Errorf("mirrors[%d] is missing", i)
		}
		f.Mirrors = append(f.Mirrors, routetable.Mirror{
			Backend:     m.GetBackend(),
			Numerator:   m.GetNumerator(),
			Denominator: m.GetDenominator(),
		})
	}
	return f, nil
}

// The routetable spells path modifiers as the Gateway API does.
const (
	replaceFullPath    = "ReplaceFullPath"
	replacePrefixMatch = "ReplacePrefixMatch"
)

func pathModifierToProto(t string) PathModifierType {
	switch t {
	case "":
		return PathModifierType_PATH_MODIFIER_TYPE_UNSPECIFIED
	case replaceFullPath:
		return PathModifierType_PATH_MODIFIER_TYPE_REPLACE_FULL_PATH
	case replacePrefixMatch:
		return PathModifierType_PATH_MODIFIER_TYPE_REPLACE_PREFIX_MATCH
	}
	return invalidEnum
}

func pathModifierFromProto(t PathModifierType) (string, error) {
	switch t {
	case PathModifierType_PATH_MODIFIER_TYPE_UNSPECIFIED:
		return "", nil
	case PathModifierType_PATH_MODIFIER_TYPE_REPLACE_FULL_PATH:
		return replaceFullPath, nil
	case PathModifierType_PATH_MODIFIER_TYPE_REPLACE_PREFIX_MATCH:
		return replacePrefixMatch, nil
	}
	return "", fmt.Errorf("unknown path modifier type %d", int32(t))
}

func headerModifierToProto(h *routetable.HeaderModifier) *HeaderModifier {
	if h == nil {
		return nil
	}
	return &HeaderModifier{Set: headersToProto(h.Set), Add: headersToProto(h.Add), Remove: cloneStrings(h.Remove)}
}

func headerModifierFromProto(p *HeaderModifier) *routetable.HeaderModifier {
	if p == nil {
		return nil
	}
	return &routetable.HeaderModifier{
		Set:    headersFromProto(p.GetSet()),
		Add:    headersFromProto(p.GetAdd()),
		Remove: cloneStrings(p.GetRemove()),
	}
}

func headersToProto(hs []routetable.Header) []*Header {
	var out []*Header
	for _, h := range hs {
		out = append(out, &Header{Name: h.Name, Value: h.Value})
	}
	return out
}

// headersFromProto skips missing entries: a nil header has no name to set.
func headersFromProto(ps []*Header) []routetable.Header {
	var out []routetable.Header
	for _, p := range ps {
		if p != nil {
			out = append(out, routetable.Header{Name: p.GetName(), Value: p.GetValue()})
		}
	}
	return out
}

// durationToProto writes zero as absent, which every duration field reads as
// "none" or "the default".
func durationToProto(d routetable.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(time.Duration(d))
}

func durationFromProto(p *durationpb.Duration) (routetable.Duration, error) {
	if p == nil {
		return 0, nil
	}
	if err := p.CheckValid(); err != nil {
		return 0, err
	}
	d := p.AsDuration()
	if d < 0 {
		return 0, fmt.Errorf("duration %s must not be negative", d)
	}
	return routetable.Duration(d), nil
}

// portToProto maps an out-of-range port to one portFromProto rejects.
func portToProto(port int) uint32 {
	if port < 0 || port > maxPort {
		return maxPort + 1
	}
	return uint32(port)
}

func portFromProto(port uint32) (int, error) {
	if port > maxPort {
		return 0, fmt.Errorf("port %d is out of range (0-%d)", port, maxPort)
	}
	return int(port), nil
}

// cloneStrings copies a slice, normalising empty to nil.
func cloneStrings(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return append([]string(nil), s...)
}

// cloneLabels copies a map, normalising empty to nil.
func cloneLabels(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return maps.Clone(m)
}

func cloneBool(b *bool) *bool {
	if b == nil {
		return nil
	}
	v := *b
	return &v
}

func cloneUint32(u *uint32) *uint32 {
	if u == nil {
		return nil
	}
	v := *u
	return &v
}
