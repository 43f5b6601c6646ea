package destination

import (
	"slices"
	"testing"

	"github.com/sluicehq/sluice/mesh/api/meshv1"
	"github.com/sluicehq/sluice/mesh/localstore"
)

// TestPodAddress: a proxy asking about a pod's address hears of that pod
// alone, with its identity, and follows it: nothing once it goes, the next
// pod's identity once another gets the address.
func TestPodAddress(t *testing.T) {
	h := start(t)
	h.store.ApplyService(webService(map[string]string{"app": "web"}, "10.96.0.10"))
	h.store.SetReplica(replica("web-1", "10.1.0.1:8080", true))
	h.store.SetReplica(replica("web-2", "10.1.0.2:8080", true))
	const target = "10.1.0.1:8080"
	ctx := guarded(t)
	eps := h.endpoints(t, ctx, target, "client")
	routes := h.routes(t, ctx, target, "client")

	// endpoint receives one update that must add exactly one endpoint at
	// the target, and returns it.
	endpoint := func() *meshv1.Endpoint {
		t.Helper()
		u := recv(t, eps)
		if d := describe([]*meshv1.EndpointUpdate{u}); !slices.Equal(d, []string{"add(" + target + ")"}) {
			t.Fatalf("endpoints of %s: %q, want add(%s)", target, d, target)
		}
		return u.GetAdd().GetEndpoints()[0]
	}
	// podRoutes receives one routes message that must be the pod address's
	// service in namespace ns.
	podRoutes := func(ns string) {
		t.Helper()
		sr := recv(t, routes)
		if !sr.GetExists() || sr.GetName() != "10-1-0-1" || sr.GetNamespace() != ns+".pod" || sr.GetPort() != 8080 ||
			!slices.Equal(sr.GetAddresses(), []string{target}) || len(sr.GetRules()) != 0 {
			t.Fatalf("routes of %s = %v, want the pod address's own service in %s.pod", target, sr, ns)
		}
	}

	e := endpoint()
	if e.GetIdentity() != "web.shop.serviceaccount.identity.sluice.cluster.local" || e.GetLabels()["pod"] != "web-1" {
		t.Errorf("endpoint of %s = %v, want pod web-1 with its identity", target, e)
	}
	podRoutes("shop")

	// The pod goes: the address is nobody's.
	h.store.RemoveReplica("shop", "web-1")
	expect(t, eps, "none(missing)")
	if sr := recv(t, routes); sr.Exists == nil || sr.GetExists() || !slices.Equal(sr.GetAddresses(), []string{target}) {
		t.Errorf("routes of a gone pod's address = %v, want exists = false", sr)
	}

	// Another pod gets the address.
	const cacheID = "cache.data.serviceaccount.identity.sluice.cluster.local"
	h.store.SetReplica(localstore.Replica{Namespace: "data", Workload: "cache", Pod: "cache-1", Address: target, Identity: cacheID, Ready: true})
	if e := endpoint(); e.GetIdentity() != cacheID || e.GetLabels()["pod"] != "cache-1" {
		t.Errorf("endpoint of %s = %v, want pod cache-1 with its identity", target, e)
	}
	podRoutes("data")
}
