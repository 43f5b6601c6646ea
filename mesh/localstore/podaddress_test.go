package localstore

import (
	"reflect"
	"testing"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

func TestReplicaAddresses(t *testing.T) {
	s := New()
	s.ApplyService(service(t, webService))
	const webID = "web.shop.serviceaccount.identity.sluice.cluster.local"
	s.SetReplica(Replica{
		Namespace: "shop", Workload: "web", Pod: "web-a", Revision: "1",
		Labels: map[string]string{"app": "web"}, Address: "10.1.0.1:8080", Identity: webID, Ready: true,
		Protocol: routetable.ProtocolHTTP2,
	})
	s.SetReplica(Replica{
		Namespace: "shop", Workload: "db", Pod: "db-a", Address: "10.1.0.2:5432", Ready: false,
		Protocol: routetable.ProtocolOpaque,
	})
	s.SetReplica(Replica{Namespace: "shop", Workload: "legacy", Pod: "legacy-a", Address: "10.1.0.3:8080", Ready: true})

	yes, no := new(true), new(false)
	tests := []struct {
		target, key string
		want        *routetable.Service // nil: no match
	}{
		{
			target: "10.1.0.1:8080", key: "10-1-0-1.shop.pod:8080",
			want: &routetable.Service{
				Name: "10-1-0-1", Namespace: "shop.pod", Port: 8080, Addresses: []string{"10.1.0.1:8080"}, Exists: yes,
				Endpoints: []routetable.Endpoint{{
					Address: "10.1.0.1:8080", Ready: yes, Identity: webID, Protocol: routetable.ProtocolHTTP2,
					Labels: map[string]string{
						"namespace": "shop", "pod": "web-a", "deployment": "web", "workload_kind": "deployment",
						"revision": "1", "serviceaccount": "web",
					},
				}},
			},
		},
		{
			target: "[::ffff:10.1.0.2]:5432", key: "10-1-0-2.shop.pod:5432",
			want: &routetable.Service{
				Name: "10-1-0-2", Namespace: "shop.pod", Port: 5432, Addresses: []string{"10.1.0.2:5432"}, Exists: yes,
				Protocol: routetable.ProtocolOpaque,
				Endpoints: []routetable.Endpoint{{
					Address: "10.1.0.2:5432", Ready: no, Protocol: routetable.ProtocolOpaque,
					Labels: map[string]string{"namespace": "shop", "pod": "db-a", "deployment": "db", "workload_kind": "deployment"},
				}},
			},
		},
		{
			// No identity: the client stays in plain text.
			target: "10.1.0.3:8080", key: "10-1-0-3.shop.pod:8080",
			want: &routetable.Service{
				Name: "10-1-0-3", Namespace: "shop.pod", Port: 8080, Addresses: []string{"10.1.0.3:8080"}, Exists: yes,
				Endpoints: []routetable.Endpoint{{
					Address: "10.1.0.3:8080", Ready: yes,
					Labels: map[string]string{"namespace": "shop", "pod": "legacy-a", "deployment": "legacy", "workload_kind": "deployment"},
				}},
			},
		},
		{target: "10.1.0.1:9090"}, // a port the replica does not serve
		{target: "10.1.0.9:8080"}, // nobody's
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			key, ok := s.Resolve(tt.target)
			if tt.want == nil {
				if ok {
					t.Fatalf("Resolve(%q) = %q, want no match", tt.target, key)
				}
				return
			}
			if !ok || key != tt.key {
				t.Fatalf("Resolve(%q) = %q, %v; want %q", tt.target, key, ok, tt.key)
			}
			got, ok := s.Service(key, "")
			if !ok || !reflect.DeepEqual(got, *tt.want) {
				t.Errorf("Service(%s) = %+v, %v\nwant %+v", key, got, ok, *tt.want)
			}
		})
	}
	if key, ok := s.Resolve("10.96.0.10:80"); !ok || key != "web.shop:80" {
		t.Errorf("Resolve(cluster IP) = %q, %v; want the Service web.shop:80", key, ok)
	}
	if svc, ok := s.Service("10-1-0-1.other.pod:8080", ""); ok {
		t.Errorf("Service of a replica address in the wrong namespace = %+v, want not found", svc)
	}

	// The replica goes, then another takes its address.
	s.RemoveReplica("shop", "web-a")
	if key, ok := s.Resolve("10.1.0.1:8080"); ok {
		t.Errorf("Resolve of a removed replica's address = %q, want no match", key)
	}
	if svc, ok := s.Service("10-1-0-1.shop.pod:8080", ""); ok {
		t.Errorf("Service of a removed replica's address = %+v, want not found", svc)
	}
	s.SetReplica(Replica{Namespace: "data", Workload: "cache", Pod: "cache-a", Address: "10.1.0.1:8080", Identity: "cache.data.serviceaccount.identity.sluice.cluster.local", Ready: true})
	key, ok := s.Resolve("10.1.0.1:8080")
	svc, _ := s.Service(key, "")
	if !ok || key != "10-1-0-1.data.pod:8080" || len(svc.Endpoints) != 1 || svc.Endpoints[0].Identity != "cache.data.serviceaccount.identity.sluice.cluster.local" {
		t.Errorf("the address of the new replica resolves to %q (%v) = %+v, want the cache replica's identity", key, ok, svc)
	}
}
