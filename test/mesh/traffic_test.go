package mesh

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/sluicehq/sluice/proxy"
)

// TestCertificateRotationUnderLoad gives leaves a 6 s lifetime: every proxy
// renews its certificate every ~4 s while HTTP requests (over the mesh's
// long-lived HTTP/2 connection) and opaque TCP connections (a new TLS
// handshake each, which fails if either side holds an expired certificate)
// keep flowing. No request may fail.
//
// The lifetime is what a renewal may take: it starts after 70% of it. With
// 3 s, a renewal that took over 0.9 s on a loaded machine (race detector,
// other tests) let a handshake see an expired certificate; 6 s leaves 1.8 s.
func TestCertificateRotationUnderLoad(t *testing.T) {
	cp := newControlPlane(t, 6*time.Second, nil)
	cp.applyService("web", "web", map[int]string{80: "", 81: "tcp"})
	web := cp.startWorkload(t, workloadOpts{name: "web", defaultPolicy: "all-authenticated"})
	front := cp.startWorkload(t, workloadOpts{name: "frontend", listeners: []string{"web.shop:80", "web.shop:81"}, noReplica: true})
	client := newClient(t)
	url := front.url(t, "web.shop:80", "/")
	tcpAddr := front.proxy.ListenerAddr("web.shop:81")

	httpLoad := startLoad(4, 500_000, func() error {
		r, err := get(client, url, nil)
		return expectBody(r, err, "web")
	})
	tcpLoad := startLoad(2, 50_000, func() error {
		body, err := opaqueGet(tcpAddr)
		if err == nil && body != "web" {
			err = fmt.Errorf("opaque request answered %q", body)
		}
		return err
	})
	refreshes := func(p *proxy.Proxy) float64 { return metric(p, "identity_cert_refreshes_total", nil) }
	start := min(refreshes(web.proxy), refreshes(front.proxy))
	eventually(t, "two certificate renewals on both proxies", func() bool {
		return min(refreshes(web.proxy), refreshes(front.proxy)) >= start+2 || httpLoad.failed.Load()+tcpLoad.failed.Load() > 10
	})
	// Traffic after the last renewal, too.
	httpLoad.waitOK(t, "HTTP requests after the renewals", 50)
	tcpLoad.waitOK(t, "opaque connections after the renewals", 10)
	httpLoad.finish()
	tcpLoad.finish()
	httpLoad.check(t, "HTTP over mTLS")
	tcpLoad.check(t, "opaque TCP over mTLS")
	t.Logf("%d HTTP requests and %d opaque connections across %v renewals", httpLoad.ok.Load(), tcpLoad.ok.Load(), min(refreshes(web.proxy), refreshes(front.proxy))-start)
	if got := metric(web.proxy, "request_total", map[string]string{"direction": "inbound", "tls": "true", "client_id": front.identity}); got < float64(httpLoad.ok.Load()) {
		t.Errorf("web counted %v inbound mTLS requests, want at least %d", got, httpLoad.ok.Load())
	}
}

// splitSetup runs web (the apex service, split by an HTTPRoute between
// web-v1 and web-v2, each one workload) and frontend calling web, with the
// route at v1/v2 weights.
func splitSetup(t *testing.T, cp *controlPlane, v1, v2 int) (front *workload) {
	t.Helper()
	cp.applyService("web", "web", map[int]string{80: ""})
	cp.applyService("web-v1", "web-v1", map[int]string{80: ""})
	cp.applyService("web-v2", "web-v2", map[int]string{80: ""})
	cp.applySplit(t, v1, v2)
	cp.startWorkload(t, workloadOpts{name: "web-v1"})
	cp.startWorkload(t, workloadOpts{name: "web-v2"})
	front = cp.startWorkload(t, workloadOpts{name: "frontend", listeners: []string{"web.shop:80"}, noReplica: true})
	eventually(t, "frontend to know both backends' endpoints", func() bool {
		d := front.proxy.Outbound()
		for _, k := range []string{"web-v1.shop:80", "web-v2.shop:80"} {
			if s := d.Service(k); s == nil || len(s.Spec.Endpoints) != 1 {
				return false
			}
		}
		return slices.Equal(weights(front), []uint32{uint32(v1), uint32(v2)})
	})
	return front
}

// weights are the backend weights of web's route in the frontend proxy's
// dispatcher.
func weights(w *workload) []uint32 {
	s := w.proxy.Outbound().Service("web.shop:80")
	if s == nil || len(s.Spec.Rules) != 1 {
		return nil
	}
	var out []uint32
	for _, b := range s.Spec.Rules[0].Backends {
		out = append(out, b.EffectiveWeight())
	}
	return out
}

// sendAll sends n requests and fails the test unless every one was answered
// by want.
func sendAll(t *testing.T, front *workload, n int, want string) {
	t.Helper()
	client := newClient(t)
	url := front.url(t, "web.shop:80", "/")
	got := map[string]int{}
	for range n {
		got[mustGet(t, client, url, nil).body]++
	}
	if got[want] != n {
		t.Errorf("%d requests were answered by %v, want all by %s", n, got, want)
	}
}

// TestWeightChangeMovesTheSplit shifts the route from 100/0 to 0/100 in the
// store: once the frontend proxy's dispatcher has the new weights, every
// request lands on the new backend.
func TestWeightChangeMovesTheSplit(t *testing.T) {
	cp := newControlPlane(t, 0, nil)
	front := splitSetup(t, cp, 100, 0)
	sendAll(t, front, 50, "web-v1")

	cp.setSplit(t, 0, 100)
	eventually(t, "the frontend proxy to apply 0/100", func() bool { return slices.Equal(weights(front), []uint32{0, 100}) })
	sendAll(t, front, 100, "web-v2")

	cp.setSplit(t, 100, 0)
	eventually(t, "the frontend proxy to apply 100/0", func() bool { return slices.Equal(weights(front), []uint32{100, 0}) })
	sendAll(t, front, 100, "web-v1")
}

// TestControlPlaneOutage kills the control plane mid-traffic: the proxies
// keep serving with what they have, without a failed request. Restarted on
// the same port, it is found again: a later weight change applies.
func TestControlPlaneOutage(t *testing.T) {
	cp := newControlPlane(t, 0, nil)
	front := splitSetup(t, cp, 100, 0)
	client := newClient(t)
	url := front.url(t, "web.shop:80", "/")
	l := startLoad(4, 500_000, func() error {
		r, err := get(client, url, nil)
		return expectBody(r, err, "web-v1")
	})
	l.waitOK(t, "traffic before the outage", 100)

	cp.kill()
	l.waitOK(t, "traffic while the control plane is down", 500)
	if ok, why := front.proxy.Ready(); !ok {
		t.Errorf("frontend not ready while the control plane is down: %s", why)
	}

	cp.start()
	l.waitOK(t, "traffic after the control plane restarted", 100)
	l.finish()
	l.check(t, "requests across the outage")

	cp.setSplit(t, 0, 100)
	eventually(t, "the frontend proxy to resync and apply 0/100", func() bool { return slices.Equal(weights(front), []uint32{0, 100}) })
	sendAll(t, front, 50, "web-v2")
}
