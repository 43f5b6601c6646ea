package podaddress

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

func TestKeyRoundTrip(t *testing.T) {
	tests := []struct {
		addr, ns, key string
	}{
		{"10.1.0.5:8080", "shop", "10-1-0-5.shop.pod:8080"},
		{"[fd00::5]:80", "shop", "fd00--5.shop.pod:80"},
		{"[::ffff:10.1.0.5]:80", "a", "10-1-0-5.a.pod:80"}, // IPv4-mapped: the IPv4 address
		{"[2001:db8:1:2:3:4:5:6]:443", "x-y", "2001-db8-1-2-3-4-5-6.x-y.pod:443"},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			addr := netip.MustParseAddrPort(tt.addr)
			if got := Key(addr, tt.ns); got != tt.key {
				t.Fatalf("Key(%s, %s) = %q, want %q", tt.addr, tt.ns, got, tt.key)
			}
			gotAddr, gotNS, ok := ParseKey(tt.key)
			wantAddr := netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
			if !ok || gotAddr != wantAddr || gotNS != tt.ns {
				t.Errorf("ParseKey(%q) = %s, %q, %v; want %s, %q, true", tt.key, gotAddr, gotNS, ok, wantAddr, tt.ns)
			}
		})
	}
}

func TestParseKeyRejects(t *testing.T) {
	for _, key := range []string{
		"web.shop:80",           // a Service key
		"10-1-0-5.shop:80",      // no .pod
		"10-1-0-5.pod:80",       // no namespace
		"10-1-0-5.a.b.pod:80",   // a namespace with a dot
		"10-1-0-5.shop.pod",     // no port
		"10-1-0-5.shop.pod:0",   // port 0
		"10-1-0-5.shop.pod:x",   // not a port
		"10-1-0-5.shop.pod:1e6", // not a port
		"web-0.shop.pod:80",     // not an address
		"10-1-0-05.shop.pod:80", // not canonical
		"FD00--5.shop.pod:80",   // not canonical
		"fd00-0-0-0-0-0-0-5.shop.pod:80",
		"10.1.0.5:80",
		"",
	} {
		if addr, ns, ok := ParseKey(key); ok {
			t.Errorf("ParseKey(%q) = %s, %q, true; want not a pod address key", key, addr, ns)
		}
	}
}

func TestService(t *testing.T) {
	ready := false
	ep := routetable.Endpoint{
		Address:  "ignored:1",
		Ready:    &ready,
		Labels:   map[string]string{"namespace": "shop", "pod": "web-0"},
		Identity: "web.shop.serviceaccount.identity.sluice.cluster.local",
		Protocol: routetable.ProtocolOpaque,
	}
	got := Service(netip.MustParseAddrPort("[::ffff:10.1.0.5]:9090"), "shop", routetable.ProtocolOpaque, ep)
	wantEP := ep
	wantEP.Address = "10.1.0.5:9090"
	want := routetable.Service{
		Name:      "10-1-0-5",
		Namespace: "shop.pod",
		Port:      9090,
		Addresses: []string{"10.1.0.5:9090"},
		Protocol:  routetable.ProtocolOpaque,
		Exists:    new(true),
		Endpoints: []routetable.Endpoint{wantEP},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Service = %+v\nwant %+v", got, want)
	}
	if k := got.Key(); k != Key(netip.MustParseAddrPort("10.1.0.5:9090"), "shop") {
		t.Errorf("the service's key %q is not Key of its address", k)
	}
}
