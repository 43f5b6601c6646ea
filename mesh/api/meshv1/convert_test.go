package meshv1

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

func ptr[T any](v T) *T { return &v }

// fullService sets every field of routetable.Service but Endpoints (which the
// routes stream does not carry) to a value that differs from its zero value.
func fullService() routetable.Service {
	return routetable.Service{
		Name:      "web",
		Namespace: "shop",
		Port:      8080,
		Addresses: []string{"10.96.0.10:8080", "[fd00::10]:8080"},
		Hostnames: []string{"web.example.com"},
		Protocol:  routetable.ProtocolHTTP2,
		Exists:    ptr(false),
		Rules: []routetable.Rule{
			{
				Route:     "shop/web",
				RuleIndex: 3,
				Match: routetable.Match{
					PathType:    routetable.PathRegex,
					Path:        "/api/v[0-9]+/.*",
					Headers:     []routetable.ValueMatch{{Type: routetable.ValueExact, Name: "x-canary", Value: "1"}, {Type: routetable.ValueRegex, Name: "user-agent", Value: ".*bot.*"}},
					QueryParams: []routetable.ValueMatch{{Type: routetable.ValueRegex, Name: "v", Value: "[0-9]+"}},
					Method:      "POST",
				},
				Filters: routetable.Filters{
					RequestHeaders:  &routetable.HeaderModifier{Set: []routetable.Header{{Name: "a", Value: "1"}}, Add: []routetable.Header{{Name: "b", Value: "2"}}, Remove: []string{"c"}},
					ResponseHeaders: &routetable.HeaderModifier{Set: []routetable.Header{{Name: "d", Value: "4"}}, Add: []routetable.Header{{Name: "e", Value: "5"}}, Remove: []string{"f", "g"}},
					URLRewrite:      &routetable.URLRewrite{Hostname: "internal.web", PathType: "ReplacePrefixMatch", Path: "/v2"},
					Redirect:        &routetable.Redirect{Scheme: "https", Hostname: "secure.web", PathType: "ReplaceFullPath", Path: "/login", Port: 8443, StatusCode: 301},
					Mirrors:         []routetable.Mirror{{Backend: "shadow.shop:8080", Numerator: 1, Denominator: 10}},
				},
				Backends: []routetable.Backend{
					{
						Service:         "web-primary.shop:8080",
						Weight:          ptr(uint32(90)),
						RequestHeaders:  &routetable.HeaderModifier{Set: []routetable.Header{{Name: "x-version", Value: "primary"}}, Add: []routetable.Header{{Name: "h", Value: "8"}}, Remove: []string{"i"}},
						ResponseHeaders: &routetable.HeaderModifier{Set: []routetable.Header{{Name: "set-cookie", Value: "canary=0"}}, Add: []routetable.Header{{Name: "j", Value: "9"}}, Remove: []string{"k"}},
					},
					{
						Service:         "web-canary.shop:8080",
						Weight:          ptr(uint32(0)),
						RequestHeaders:  &routetable.HeaderModifier{Set: []routetable.Header{{Name: "x-version", Value: "canary"}}, Add: []routetable.Header{{Name: "l", Value: "10"}}, Remove: []string{"m"}},
						ResponseHeaders: &routetable.HeaderModifier{Set: []routetable.Header{{Name: "set-cookie", Value: "canary=1"}}, Add: []routetable.Header{{Name: "n", Value: "11"}}, Remove: []string{"o"}},
					},
				},
				Timeouts: routetable.Timeouts{Request: routetable.Duration(10 * time.Second), BackendRequest: routetable.Duration(2500 * time.Millisecond)},
				Retry: &routetable.Retry{
					Codes:      []int{502, 503},
					CodeRanges: [][2]int{{500, 599}, {429, 429}},
					GRPCCodes:  []string{"unavailable", "14"},
					Attempts:   3,
					Backoff:    routetable.Duration(50 * time.Millisecond),
				},
			},
			{
				Route:     "shop/web",
				RuleIndex: 4,
				Match:     routetable.Match{PathType: routetable.PathPrefix, Path: "/"},
				Backends:  []routetable.Backend{{Service: "web-primary.shop:8080"}},
			},
			{
				Route:     "shop/other",
				RuleIndex: 5,
				Match:     routetable.Match{PathType: routetable.PathExact, Path: "/exact"},
				Filters:   routetable.Filters{URLRewrite: &routetable.URLRewrite{Hostname: "h"}},
			},
		},
		Breaker: &routetable.Breaker{
			MaxFailures: 5,
			MinPenalty:  routetable.Duration(time.Second),
			MaxPenalty:  routetable.Duration(time.Minute),
			JitterRatio: 0.25,
		},
	}
}

func fullEndpoint() routetable.Endpoint {
	return routetable.Endpoint{
		Address:  "10.1.2.3:8080",
		Ready:    ptr(false),
		Weight:   10000,
		Labels:   map[string]string{"namespace": "shop", "deployment": "web", "pod": "web-7d9f-abcde", "revision": "42"},
		Identity: "web.shop.serviceaccount.identity.sluice.cluster.local",
		Protocol: routetable.ProtocolHTTP2,
	}
}

// requireAllSet fails for every field reachable from v that holds its zero
// value, so that a field added to routetable and forgotten by the fixtures
// (and so, likely, by the converters) fails the round-trip tests.
func requireAllSet(t *testing.T, v reflect.Value, path string, skip map[string]bool) {
	t.Helper()
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			f := v.Type().Field(i)
			p := path + "." + f.Name
			if skip[p] {
				continue
			}
			requireAllSet(t, v.Field(i), p, skip)
		}
	case reflect.Pointer:
		if v.IsNil() {
			t.Errorf("fixture leaves %s nil", path)
			return
		}
		if v.Elem().Kind() == reflect.Struct {
			requireAllSet(t, v.Elem(), path, skip)
		}
	case reflect.Slice, reflect.Map:
		if v.Len() == 0 {
			t.Errorf("fixture leaves %s empty", path)
			return
		}
		if v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct {
			// Every element is checked so each nested field is set somewhere;
			// only the first must be complete.
			requireAllSet(t, v.Index(0), path+"[0]", skip)
		}
	default:
		if v.IsZero() {
			t.Errorf("fixture leaves %s zero", path)
		}
	}
}

// wire sends m through the protobuf encoding and back.
func wire[M proto.Message](t *testing.T, m M, into M) M {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatalf("marshal %T: %v", m, err)
	}
	if err := proto.Unmarshal(b, into); err != nil {
		t.Fatalf("unmarshal %T: %v", m, err)
	}
	return into
}

func TestFixturesSetEveryField(t *testing.T) {
	svc := fullService()
	requireAllSet(t, reflect.ValueOf(svc), "Service", map[string]bool{"Service.Endpoints": true})
	ep := fullEndpoint()
	requireAllSet(t, reflect.ValueOf(ep), "Endpoint", nil)
}

func TestServiceRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		svc  routetable.Service
	}{
		{"every field", fullService()},
		{"minimal", routetable.Service{Name: "db", Port: 5432}},
		{"exists true, empty rule", routetable.Service{Name: "a", Namespace: "b", Port: 80, Exists: ptr(true), Rules: []routetable.Rule{{}}}},
		{"empty breaker and header modifier", routetable.Service{Name: "a", Port: 1, Breaker: &routetable.Breaker{}, Rules: []routetable.Rule{{Filters: routetable.Filters{RequestHeaders: &routetable.HeaderModifier{}}, Retry: &routetable.Retry{}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := wire(t, ServiceToProto(&tt.svc), &ServiceRoutes{})
			got, err := ServiceFromProto(p)
			if err != nil {
				t.Fatalf("ServiceFromProto: %v", err)
			}
			if !reflect.DeepEqual(got, tt.svc) {
				t.Errorf("round trip changed the service:\n got %+v\nwant %+v", got, tt.svc)
			}
		})
	}
}

func TestServiceToProtoDoesNotAlias(t *testing.T) {
	svc := fullService()
	p := ServiceToProto(&svc)
	p.Addresses[0] = "changed"
	p.Rules[0].Retry.GrpcCodes[0] = "changed"
	if svc.Addresses[0] == "changed" || svc.Rules[0].Retry.GRPCCodes[0] == "changed" {
		t.Fatal("ServiceToProto shares slices with its input")
	}
}

func TestEndpointRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		ep   routetable.Endpoint
	}{
		{"every field", fullEndpoint()},
		{"minimal", routetable.Endpoint{Address: "127.0.0.1:1"}},
		{"ready true", routetable.Endpoint{Address: "127.0.0.1:1", Ready: ptr(true)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := wire(t, EndpointToProto(&tt.ep), &Endpoint{})
			got, err := EndpointFromProto(p)
			if err != nil {
				t.Fatalf("EndpointFromProto: %v", err)
			}
			if !reflect.DeepEqual(got, tt.ep) {
				t.Errorf("round trip changed the endpoint:\n got %+v\nwant %+v", got, tt.ep)
			}
			if got.Labels != nil {
				got.Labels["x"] = "y"
				if _, ok := tt.ep.Labels["x"]; ok {
					t.Error("the converters share the labels map")
				}
			}
		})
	}
}

func TestProtocolRoundTrip(t *testing.T) {
	for _, p := range []routetable.Protocol{routetable.ProtocolDetect, routetable.ProtocolHTTP1, routetable.ProtocolHTTP2, routetable.ProtocolGRPC, routetable.ProtocolOpaque} {
		got, err := ProtocolFromProto(ProtocolToProto(p))
		if err != nil || got != p {
			t.Errorf("protocol %q: got %q, %v", p, got, err)
		}
	}
	if len(Protocol_name) != 5 {
		t.Errorf("the proto enum has %d protocols; the converters know 5", len(Protocol_name))
	}
}

// TestServiceFromProtoRejects checks that values the proxy could not run are
// refused with an error naming the field, whether they came from a typo in a
// routetable.Service or straight from the wire.
func TestServiceFromProtoRejects(t *testing.T) {
	tests := []struct {
		name    string
		svc     func(*routetable.Service)
		msg     func(*ServiceRoutes)
		wantErr string
		// local skips the wire: the encoding turns a nil list entry into an
		// empty message, but a message built in memory may hold one.
		local bool
	}{
		{name: "unknown protocol", svc: func(s *routetable.Service) { s.Protocol = "http3" }, wantErr: "unknown protocol -1"},
		{name: "port out of range", svc: func(s *routetable.Service) { s.Port = 70000 }, wantErr: "port 65536 is out of range"},
		{name: "negative port", svc: func(s *routetable.Service) { s.Port = -1 }, wantErr: "port 65536 is out of range"},
		{name: "unknown path match", svc: func(s *routetable.Service) { s.Rules[0].Match.PathType = "Glob" }, wantErr: "rules[0]: match: path_type: unknown path match type -1"},
		{name: "unknown header match", svc: func(s *routetable.Service) { s.Rules[0].Match.Headers[1].Type = "Prefix" }, wantErr: `rules[0]: match: headers: [1] "user-agent": unknown value match type -1`},
		{name: "unknown query match", svc: func(s *routetable.Service) { s.Rules[0].Match.QueryParams[0].Type = "Prefix" }, wantErr: `query_params: [0] "v": unknown value match type`},
		{name: "unknown rewrite", svc: func(s *routetable.Service) { s.Rules[0].Filters.URLRewrite.PathType = "ReplaceAll" }, wantErr: "rules[0]: filters: url_rewrite: path_type: unknown path modifier type -1"},
		{name: "unknown redirect path", svc: func(s *routetable.Service) { s.Rules[0].Filters.Redirect.PathType = "x" }, wantErr: "filters: redirect: path_type: unknown path modifier type"},
		{name: "redirect port", svc: func(s *routetable.Service) { s.Rules[0].Filters.Redirect.Port = 65536 }, wantErr: "filters: redirect: port 65536 is out of range"},
		{name: "redirect status", msg: func(m *ServiceRoutes) { m.Rules[0].Filters.Redirect.StatusCode = 3010 }, wantErr: "redirect: status code 3010 is not an HTTP status"},
		{name: "negative timeout", svc: func(s *routetable.Service) { s.Rules[0].Timeouts.Request = routetable.Duration(-time.Second) }, wantErr: "rules[0]: timeouts: request: duration -1s must not be negative"},
		{name: "negative backend timeout", svc: func(s *routetable.Service) { s.Rules[0].Timeouts.BackendRequest = -1 }, wantErr: "timeouts: backend_request: duration -1ns must not be negative"},
		{name: "negative backoff", svc: func(s *routetable.Service) { s.Rules[0].Retry.Backoff = -1 }, wantErr: "rules[0]: retry: backoff:"},
		{name: "negative penalty", svc: func(s *routetable.Service) { s.Breaker.MinPenalty = -1 }, wantErr: "breaker: min_penalty:"},
		{name: "invalid max penalty", msg: func(m *ServiceRoutes) { m.Breaker.MaxPenalty = &durationpb.Duration{Seconds: 1, Nanos: -5} }, wantErr: "breaker: max_penalty:"},
		{name: "nil rule", msg: func(m *ServiceRoutes) { m.Rules[1] = nil }, wantErr: "rules[1]: rule is missing", local: true},
		{name: "nil backend", msg: func(m *ServiceRoutes) { m.Rules[0].Backends[1] = nil }, wantErr: "rules[0]: backends[1] is missing", local: true},
		{name: "nil mirror", msg: func(m *ServiceRoutes) { m.Rules[0].Filters.Mirrors[0] = nil }, wantErr: "mirrors[0] is missing", local: true},
		{name: "nil code range", msg: func(m *ServiceRoutes) { m.Rules[0].Retry.CodeRanges[0] = nil }, wantErr: "retry: code_ranges[0] is missing", local: true},
		{name: "enum from a newer control plane", msg: func(m *ServiceRoutes) { m.Rules[2].Match.PathType = 7 }, wantErr: "rules[2]: match: path_type: unknown path match type 7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := fullService()
			if tt.svc != nil {
				tt.svc(&svc)
			}
			p := ServiceToProto(&svc)
			if tt.msg != nil {
				tt.msg(p)
			}
			if !tt.local {
				p = wire(t, p, &ServiceRoutes{})
			}
			_, err := ServiceFromProto(p)
			if err == nil {
				t.Fatalf("ServiceFromProto accepted it; want an error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "service ") {
				t.Errorf("error %q does not name the service", err)
			}
		})
	}
	if _, err := ServiceFromProto(nil); err == nil {
		t.Error("ServiceFromProto(nil) succeeded")
	}
}

func TestEndpointFromProtoRejects(t *testing.T) {
	tests := []struct {
		name    string
		ep      *Endpoint
		wantErr string
	}{
		{"nil", nil, "endpoint is missing"},
		{"no address", &Endpoint{Weight: 1}, "endpoint has no address"},
		{"unknown hint", &Endpoint{Address: "10.0.0.1:80", ProtocolHint: 9}, "endpoint 10.0.0.1:80: protocol_hint: unknown protocol 9"},
		{"unknown routetable protocol", EndpointToProto(&routetable.Endpoint{Address: "10.0.0.1:80", Protocol: "spdy"}), "unknown protocol -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := EndpointFromProto(tt.ep)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestNilToProto(t *testing.T) {
	if ServiceToProto(nil) != nil || EndpointToProto(nil) != nil {
		t.Error("nil input must give a nil message")
	}
}
