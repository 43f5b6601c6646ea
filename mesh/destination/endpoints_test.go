package destination

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/mesh/api/meshv1"
)

// ep is an endpoint with an address and a ready flag.
func ep(addr string, ready bool) *meshv1.Endpoint {
	return &meshv1.Endpoint{Address: addr, Ready: proto.Bool(ready), Labels: map[string]string{"pod": addr}}
}

// describe renders updates compactly: "add(a,b!)" (! = not ready),
// "remove(a)", "none(exists)" / "none(missing)".
func describe(us []*meshv1.EndpointUpdate) []string {
	var out []string
	for _, u := range us {
		switch x := u.GetUpdate().(type) {
		case *meshv1.EndpointUpdate_Add:
			var as []string
			for _, e := range x.Add.GetEndpoints() {
				a := e.GetAddress()
				if !e.GetReady() {
					a += "!"
				}
				as = append(as, a)
			}
			out = append(out, "add("+strings.Join(as, ",")+")")
		case *meshv1.EndpointUpdate_Remove:
			out = append(out, "remove("+strings.Join(x.Remove.GetAddresses(), ",")+")")
		case *meshv1.EndpointUpdate_NoEndpoints:
			if x.NoEndpoints.GetExists() {
				out = append(out, "none(exists)")
			} else {
				out = append(out, "none(missing)")
			}
		default:
			out = append(out, fmt.Sprintf("unknown %T", x))
		}
	}
	return out
}

func TestEndpointViewUpdate(t *testing.T) {
	type state struct {
		exists    bool
		endpoints []*meshv1.Endpoint
		want      []string
	}
	a, b, c := ep("a", true), ep("b", true), ep("c", true)
	tests := []struct {
		name  string
		steps []state
	}{
		{"first: endpoints", []state{
			{true, []*meshv1.Endpoint{a, b}, []string{"add(a,b)"}},
			{true, []*meshv1.Endpoint{a, b}, nil},
		}},
		{"first: exists and empty", []state{
			{true, nil, []string{"none(exists)"}},
			{true, nil, nil},
		}},
		{"first: missing", []state{
			{false, nil, []string{"none(missing)"}},
			{false, nil, nil},
		}},
		{"add, change, remove", []state{
			{true, []*meshv1.Endpoint{a}, []string{"add(a)"}},
			{true, []*meshv1.Endpoint{a, b}, []string{"add(b)"}},
			{true, []*meshv1.Endpoint{a, ep("b", false)}, []string{"add(b!)"}},
			{true, []*meshv1.Endpoint{a, ep("b", false)}, nil},
			{true, []*meshv1.Endpoint{ep("b", false)}, []string{"remove(a)"}},
		}},
		{"replace adds before removing", []state{
			{true, []*meshv1.Endpoint{a, b}, []string{"add(a,b)"}},
			{true, []*meshv1.Endpoint{c}, []string{"add(c)", "remove(a,b)"}},
		}},
		{"becomes empty, then refills", []state{
			{true, []*meshv1.Endpoint{a, b}, []string{"add(a,b)"}},
			{true, nil, []string{"none(exists)"}},
			{true, []*meshv1.Endpoint{b}, []string{"add(b)"}},
		}},
		{"disappears, then comes back", []state{
			{true, []*meshv1.Endpoint{a}, []string{"add(a)"}},
			{false, nil, []string{"none(missing)"}},
			{true, nil, []string{"none(exists)"}},
			{false, nil, []string{"none(missing)"}},
			{true, []*meshv1.Endpoint{a}, []string{"add(a)"}},
		}},
		{"missing ignores endpoints", []state{
			{false, []*meshv1.Endpoint{a}, []string{"none(missing)"}},
		}},
		{"duplicate address: last wins", []state{
			{true, []*meshv1.Endpoint{a, ep("a", false)}, []string{"add(a!)"}},
			{true, []*meshv1.Endpoint{ep("a", false)}, nil},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v endpointView
			for i, st := range tt.steps {
				got := describe(v.update(st.exists, st.endpoints))
				if !slices.Equal(got, st.want) {
					t.Errorf("step %d: got %q, want %q", i, got, st.want)
				}
			}
		})
	}
}

func TestUnknownRoutes(t *testing.T) {
	tests := []struct {
		target string
		want   *meshv1.ServiceRoutes
	}{
		{"web.shop:80", &meshv1.ServiceRoutes{Name: "web", Namespace: "shop", Port: 80}},
		{"web.shop.svc.cluster.local.:8080", &meshv1.ServiceRoutes{Name: "web", Namespace: "shop", Port: 8080}},
		{"web.shop.svc:80", &meshv1.ServiceRoutes{Name: "web", Namespace: "shop", Port: 80}},
		{"10.0.0.1:80", &meshv1.ServiceRoutes{Addresses: []string{"10.0.0.1:80"}}},
		{"[fd00::1]:80", &meshv1.ServiceRoutes{Addresses: []string{"[fd00::1]:80"}}},
		{"example.com:443", &meshv1.ServiceRoutes{Name: "example", Namespace: "com", Port: 443}},
		{"a.b.c:80", &meshv1.ServiceRoutes{}},
		{"web.shop", &meshv1.ServiceRoutes{}},
		{"web.shop:http", &meshv1.ServiceRoutes{}},
	}
	for _, tt := range tests {
		tt.want.Exists = proto.Bool(false)
		if got := unknownRoutes(tt.target); !proto.Equal(got, tt.want) {
			t.Errorf("unknownRoutes(%q) = %v, want %v", tt.target, got, tt.want)
		}
	}
}
