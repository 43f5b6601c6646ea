// Package routetable holds the compiled form of the mesh's routing state: the
// services a proxy knows, their endpoints and the ordered HTTP rules compiled from
// Gateway API HTTPRoutes. It is the shape both the proxy's configuration file and
// the control plane's destination stream deliver, so the proxy runs the very same
// types whichever way they arrive. It has no dependencies beyond the standard
// library: the proxy imports it, and routing/ compiles into it.
package routetable

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Protocol is how traffic to a service or port is handled.
type Protocol string

const (
	// ProtocolDetect sniffs each connection: HTTP/2 preface, HTTP/1 request line, or opaque.
	ProtocolDetect Protocol = ""
	// ProtocolHTTP1 treats connections as HTTP/1.x without detection.
	ProtocolHTTP1 Protocol = "http1"
	// ProtocolHTTP2 treats connections as HTTP/2 (prior knowledge) without detection.
	ProtocolHTTP2 Protocol = "http2"
	// ProtocolGRPC is HTTP/2 carrying gRPC: retries use gRPC status codes.
	ProtocolGRPC Protocol = "grpc"
	// ProtocolOpaque forwards bytes without looking at them.
	ProtocolOpaque Protocol = "opaque"
)

// Table is everything a proxy needs to route outbound traffic.
type Table struct {
	// Services are the logical destinations, keyed by Service.Key().
	Services []Service `json:"services,omitempty"`
}

// Service is one port of one logical service (a Kubernetes Service port). It is
// both a routing parent (its Rules decide where a request goes) and a backend
// (its Endpoints are where a request can land).
type Service struct {
	// Name and Namespace identify the service; Port is the service port.
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
	Port      int    `json:"port"`
	// Addresses are the virtual addresses (cluster IP:port) that identify this
	// service when a connection arrives through SO_ORIGINAL_DST.
	Addresses []string `json:"addresses,omitempty"`
	// Hostnames are extra authorities (Host header values) that name this service,
	// besides the Kubernetes forms derived from Name, Namespace and Port.
	Hostnames []string `json:"hostnames,omitempty"`
	// Protocol overrides detection for this service.
	Protocol Protocol `json:"protocol,omitempty"`
	// Exists is false when the control plane knows no such service; requests get 503.
	// It is a pointer so that a hand-written file may omit it (meaning true).
	Exists *bool `json:"exists,omitempty"`
	// Endpoints are the current ready and unready endpoints of the service.
	Endpoints []Endpoint `json:"endpoints,omitempty"`
	// Rules are the compiled HTTP rules, in precedence order: the first rule whose
	// Match matches a request wins. With no rules, a request goes to the service's
	// own endpoints. With rules and no match, the answer is 404.
	Rules []Rule `json:"rules,omitempty"`
	// Breaker configures failure accrual for this service's endpoints (nil: defaults).
	Breaker *Breaker `json:"breaker,omitempty"`
}

// Key is the canonical identity of a service port: "name.namespace:port".
func (s *Service) Key() string { return ServiceKey(s.Name, s.Namespace, s.Port) }

// ServiceKey formats the canonical identity of a service port.
func ServiceKey(name, namespace string, port int) string {
	if namespace == "" {
		namespace = "default"
	}
	return fmt.Sprintf("%s.%s:%d", name, namespace, port)
}

// Authorities lists the Host header values that name this service: the explicit
// Hostnames and the Kubernetes DNS forms, with and without the port.
func (s *Service) Authorities() []string {
	ns := s.Namespace
	if ns == "" {
		ns = "default"
	}
	var out []string
	for _, base := range []string{
		s.Name + "." + ns + ".svc.cluster.local",
		s.Name + "." + ns + ".svc",
		s.Name + "." + ns,
	} {
		out = append(out, fmt.Sprintf("%s:%d", base, s.Port))
		if s.Port == 80 {
			out = append(out, base)
		}
	}
	for _, h := range s.Hostnames {
		out = append(out, strings.ToLower(h))
	}
	return out
}

// Known reports whether the service exists.
func (s *Service) Known() bool { return s.Exists == nil || *s.Exists }

// Endpoint is one address that serves a service.
type Endpoint struct {
	// Address is host:port.
	Address string `json:"address"`
	// Ready is false for an endpoint that is known but must not be picked.
	// A pointer so that a hand-written file may omit it (meaning ready).
	Ready *bool `json:"ready,omitempty"`
	// Weight scales this endpoint's share (default 1); P2C ignores it, as Linkerd does.
	Weight uint32 `json:"weight,omitempty"`
	// Labels become dst_* metric labels (namespace, deployment, pod, revision, ...).
	Labels map[string]string `json:"labels,omitempty"`
	// Identity is the TLS identity the endpoint must present; empty means plain text.
	Identity string `json:"identity,omitempty"`
	// Protocol is a hint of what the endpoint speaks (for example http2 when meshed).
	Protocol Protocol `json:"protocol,omitempty"`
}

// IsReady reports whether the endpoint may be picked.
func (e *Endpoint) IsReady() bool { return e.Ready == nil || *e.Ready }

// Rule is one compiled HTTPRoute rule with exactly one match: a Gateway API rule
// with several matches compiles into several Rules sharing everything else, so
// that the proxy can order matches by precedence and take the first that fits.
type Rule struct {
	// Route names the HTTPRoute ("namespace/name") the rule came from, for metrics.
	Route string `json:"route,omitempty"`
	// RuleIndex is the rule's index within that HTTPRoute.
	RuleIndex int `json:"ruleIndex,omitempty"`
	// Match is what a request must satisfy.
	Match Match `json:"match"`
	// Filters run on requests and responses matched by this rule.
	Filters Filters `json:"filters,omitempty"`
	// Backends are the weighted destinations. Empty with no redirect means 500.
	Backends []Backend `json:"backends,omitempty"`
	// Timeouts bound the request and each attempt.
	Timeouts Timeouts `json:"timeouts,omitempty"`
	// Retry, when set, retries failed attempts.
	Retry *Retry `json:"retry,omitempty"`
}

// PathMatchType is how Match.Path is compared.
type PathMatchType string

const (
	// PathPrefix matches whole path segments: "/foo" matches "/foo" and "/foo/bar", not "/foobar".
	PathPrefix PathMatchType = "PathPrefix"
	// PathExact matches the path exactly.
	PathExact PathMatchType = "Exact"
	// PathRegex matches a RE2 regular expression against the whole path.
	PathRegex PathMatchType = "RegularExpression"
)

// ValueMatchType is how a header or query parameter value is compared.
type ValueMatchType string

const (
	// ValueExact compares the value exactly.
	ValueExact ValueMatchType = "Exact"
	// ValueRegex matches a RE2 regular expression against the whole value.
	ValueRegex ValueMatchType = "RegularExpression"
)

// Match is one Gateway API HTTPRouteMatch: every present field must hold.
type Match struct {
	// PathType and Path; an empty PathType means PathPrefix "/".
	PathType PathMatchType `json:"pathType,omitempty"`
	Path     string        `json:"path,omitempty"`
	// Headers must all match (names compared case-insensitively).
	Headers []ValueMatch `json:"headers,omitempty"`
	// QueryParams must all match (names compared exactly).
	QueryParams []ValueMatch `json:"queryParams,omitempty"`
	// Method, when set, must equal the request method.
	Method string `json:"method,omitempty"`
}

// ValueMatch compares one named header or query parameter.
type ValueMatch struct {
	Type  ValueMatchType `json:"type,omitempty"`
	Name  string         `json:"name"`
	Value string         `json:"value"`
}

// Filters are the Gateway API filters of a rule, in the order the proxy applies them.
type Filters struct {
	RequestHeaders  *HeaderModifier `json:"requestHeaders,omitempty"`
	ResponseHeaders *HeaderModifier `json:"responseHeaders,omitempty"`
	URLRewrite      *URLRewrite     `json:"urlRewrite,omitempty"`
	Redirect        *Redirect       `json:"redirect,omitempty"`
	Mirrors         []Mirror        `json:"mirrors,omitempty"`
}

// HeaderModifier sets, adds and removes headers.
type HeaderModifier struct {
	Set    []Header `json:"set,omitempty"`
	Add    []Header `json:"add,omitempty"`
	Remove []string `json:"remove,omitempty"`
}

// Header is a name and a value.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// URLRewrite rewrites the host and path before forwarding.
type URLRewrite struct {
	Hostname string `json:"hostname,omitempty"`
	// PathType is "ReplaceFullPath" or "ReplacePrefixMatch"; empty leaves the path.
	PathType string `json:"pathType,omitempty"`
	// Path is the replacement full path or prefix.
	Path string `json:"path,omitempty"`
}

// Redirect answers with a redirect instead of forwarding.
type Redirect struct {
	Scheme   string `json:"scheme,omitempty"`
	Hostname string `json:"hostname,omitempty"`
	// PathType is "ReplaceFullPath" or "ReplacePrefixMatch"; empty keeps the path.
	PathType   string `json:"pathType,omitempty"`
	Path       string `json:"path,omitempty"`
	Port       int    `json:"port,omitempty"`
	StatusCode int    `json:"statusCode,omitempty"` // default 302
}

// Mirror sends a copy of a share of requests to another service; its answers are ignored.
type Mirror struct {
	// Backend is the Service.Key() of the mirror target.
	Backend string `json:"backend"`
	// Numerator/Denominator is the share mirrored (default 100/100: all).
	Numerator   int32 `json:"numerator,omitempty"`
	Denominator int32 `json:"denominator,omitempty"`
}

// Backend is one weighted backendRef: a service that receives a share of requests.
type Backend struct {
	// Service is the Service.Key() of the backend.
	Service string `json:"service"`
	// Weight is the relative share; nil means 1 and 0 means never.
	Weight *uint32 `json:"weight,omitempty"`
	// RequestHeaders and ResponseHeaders are per-backend filters (session-affinity cookies, ...).
	RequestHeaders  *HeaderModifier `json:"requestHeaders,omitempty"`
	ResponseHeaders *HeaderModifier `json:"responseHeaders,omitempty"`
}

// EffectiveWeight is the backend's weight with the Gateway API default of 1.
func (b *Backend) EffectiveWeight() uint32 {
	if b.Weight == nil {
		return 1
	}
	return *b.Weight
}

// Timeouts are Gateway API HTTPRouteTimeouts; zero means none.
type Timeouts struct {
	// Request bounds the whole exchange, retries included.
	Request Duration `json:"request,omitempty"`
	// BackendRequest bounds each attempt.
	BackendRequest Duration `json:"backendRequest,omitempty"`
}

// Retry is when and how often a failed attempt is tried again.
type Retry struct {
	// Codes are HTTP statuses worth retrying; empty with Attempts > 0 means none but
	// connection failures. Ranges are written as two codes in CodeRanges.
	Codes []int `json:"codes,omitempty"`
	// CodeRanges are inclusive [from, to] status ranges ("5xx" is [500, 599]).
	CodeRanges [][2]int `json:"codeRanges,omitempty"`
	// GRPCCodes are gRPC status names or numbers worth retrying ("unavailable", "14").
	GRPCCodes []string `json:"grpcCodes,omitempty"`
	// Attempts is the maximum number of retries after the first attempt.
	Attempts int `json:"attempts,omitempty"`
	// Backoff is the minimum wait between attempts (default 25 ms).
	Backoff Duration `json:"backoff,omitempty"`
}

// Breaker is consecutive-failure accrual: after MaxFailures in a row an endpoint is
// ejected for a backoff between MinPenalty and MaxPenalty, then probed with one request.
type Breaker struct {
	MaxFailures int      `json:"maxFailures,omitempty"` // default 7
	MinPenalty  Duration `json:"minPenalty,omitempty"`  // default 1s
	MaxPenalty  Duration `json:"maxPenalty,omitempty"`  // default 60s
	JitterRatio float64  `json:"jitterRatio,omitempty"` // default 0.5
}

// Duration is a time.Duration written as a Go duration string ("250ms", "1m30s").
type Duration time.Duration

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string ("1s") or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int64
		if err2 := json.Unmarshal(b, &n); err2 != nil {
			return fmt.Errorf("duration must be a string like \"250ms\": %s", b)
		}
		*d = Duration(n)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q: %w", s, err)
	}
	if v < 0 {
		return fmt.Errorf("invalid duration %q: must not be negative", s)
	}
	*d = Duration(v)
	return nil
}
