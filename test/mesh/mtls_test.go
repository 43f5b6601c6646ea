package mesh

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestMutualTLSBetweenWorkloads runs frontend → its proxy → mTLS → web's
// proxy → web, with web's inbound policy all-authenticated.
func TestMutualTLSBetweenWorkloads(t *testing.T) {
	cp := newControlPlane(t, 0, nil)
	cp.applyService("web", "web", map[int]string{80: "", 81: "tcp"})
	web := cp.startWorkload(t, workloadOpts{name: "web", defaultPolicy: "all-authenticated"})
	front := cp.startWorkload(t, workloadOpts{name: "frontend", listeners: []string{"web.shop:80", "web.shop:81"}, noReplica: true})
	client := newClient(t)
	url := front.url(t, "web.shop:80", "/hello")

	// HTTP/1 requests from the application, some with a forged identity,
	// sent four at a time.
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			hdr := map[string]string{}
			if i%2 == 0 {
				hdr["Sluice-Client-Id"] = "admin.kube-system.serviceaccount.identity.sluice.cluster.local"
			}
			r, err := get(client, url, hdr)
			if err = expectBody(r, err, "web"); err != nil {
				errs <- err
			}
		})
		if i%4 == 3 {
			wg.Wait()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// The application got every request as HTTP/1.1, each with the caller's
	// verified identity and nothing else in sluice-client-id, and without the
	// proxies' protocol marker.
	protos, ids, orig := web.app.seen()
	if protos["HTTP/1.1"] != n || len(protos) != 1 {
		t.Errorf("web saw protocols %v, want HTTP/1.1 × %d", protos, n)
	}
	if ids[front.identity] != n || len(ids) != 1 {
		t.Errorf("web saw sluice-client-id values %v, want %q × %d", ids, front.identity, n)
	}
	if orig != 0 {
		t.Errorf("%d requests reached web with sluice-orig-proto", orig)
	}

	// The hop between the proxies was one multiplexed HTTP/2 connection
	// over TLS.
	if got := metric(web.proxy, "protocol_detect_total", map[string]string{"direction": "inbound", "protocol": "http2", "tls": "true"}); got != 1 {
		t.Errorf("web's inbound served %v TLS HTTP/2 connections, want 1", got)
	}
	if got := metric(web.proxy, "protocol_detect_total", map[string]string{"direction": "inbound", "protocol": "http1"}); got != 0 {
		t.Errorf("web's inbound served %v HTTP/1 connections, want 0", got)
	}

	// Both sides label the traffic as mutual TLS with the peer's identity.
	out := map[string]string{"direction": "outbound", "tls": "true", "server_id": web.identity, "dst_deployment": "web"}
	if got := metric(front.proxy, "request_total", out); got != n {
		t.Errorf("frontend request_total%v = %v, want %d", out, got, n)
	}
	in := map[string]string{"direction": "inbound", "tls": "true", "client_id": front.identity}
	if got := metric(web.proxy, "request_total", in); got != n {
		t.Errorf("web request_total%v = %v, want %d", in, got, n)
	}
	if got := metric(web.proxy, "response_total", map[string]string{"direction": "inbound", "tls": "true", "client_id": front.identity, "status_code": "200", "classification": "success"}); got != n {
		t.Errorf("web inbound successful responses = %v, want %d", got, n)
	}
	allow := map[string]string{"srv_name": "all-authenticated", "authz_name": "all-authenticated"}
	if got := metric(web.proxy, "inbound_http_authz_allow_total", allow); got != n {
		t.Errorf("inbound_http_authz_allow_total%v = %v, want %d", allow, got, n)
	}

	// A plain-text client straight to web's inbound listener is refused,
	// over HTTP/1 with 403 and over gRPC with PERMISSION_DENIED.
	before := web.app.hits.Load()
	r, err := get(client, "http://"+web.proxy.Addr("inbound")+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.status != http.StatusForbidden || !strings.Contains(r.header.Get("Sluice-Proxy-Error"), "unauthorized") {
		t.Errorf("plain-text request: %d %q, want 403 with the reason in sluice-proxy-error", r.status, r.header.Get("Sluice-Proxy-Error"))
	}
	h2c := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	defer h2c.CloseIdleConnections()
	req, _ := http.NewRequest("POST", "http://"+web.proxy.Addr("inbound")+"/shop.Web/Get", strings.NewReader("\x00\x00\x00\x00\x00"))
	req.Header.Set("Content-Type", "application/grpc")
	resp, err := h2c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Grpc-Status"); resp.StatusCode != 200 || got != "7" {
		t.Errorf("plain-text gRPC call: HTTP %d grpc-status %q, want 200 and 7 (PERMISSION_DENIED)", resp.StatusCode, got)
	}
	if web.app.hits.Load() != before {
		t.Errorf("a refused request reached the application")
	}
	deny := map[string]string{"srv_name": "all-authenticated", "srv_kind": "default"}
	if got := metric(web.proxy, "inbound_http_authz_deny_total", deny); got != 2 {
		t.Errorf("inbound_http_authz_deny_total%v = %v, want 2", deny, got)
	}

	// Opaque TCP to a meshed endpoint is TLS too, and authorized as the
	// caller's identity.
	for range 3 {
		body, err := opaqueGet(front.proxy.ListenerAddr("web.shop:81"))
		if err != nil || body != "web" {
			t.Fatalf("opaque request: %q, %v", body, err)
		}
	}
	if got := metric(web.proxy, "protocol_detect_total", map[string]string{"direction": "inbound", "protocol": "opaque", "tls": "true"}); got != 3 {
		t.Errorf("web's inbound served %v TLS opaque connections, want 3", got)
	}
	tcpAllow := map[string]string{"srv_name": "all-authenticated", "authz_name": "all-authenticated"}
	if got := metric(web.proxy, "inbound_tcp_authz_allow_total", tcpAllow); got != 3 {
		t.Errorf("inbound_tcp_authz_allow_total = %v, want 3", got)
	}
	if got := metric(front.proxy, "tcp_open_total", map[string]string{"direction": "outbound", "tls": "true", "server_id": web.identity}); got != 3 {
		t.Errorf("frontend tcp_open_total with tls=true server_id=web = %v, want 3", got)
	}
	if got := metric(web.proxy, "tcp_open_total", map[string]string{"direction": "inbound", "tls": "true", "client_id": front.identity}); got != 3 {
		t.Errorf("web tcp_open_total with tls=true client_id=frontend = %v, want 3", got)
	}
	// A plain-text opaque connection is closed unanswered.
	c, err := net.Dial("tcp", web.proxy.Addr("inbound"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(deadline))
	if _, err := io.WriteString(c, "\x01not http at all\r\n"); err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(c); len(got) > 0 || err != nil {
		t.Errorf("plain-text opaque connection to web read %q, %v; want it closed unanswered", got, err)
	}
	if got := metric(web.proxy, "inbound_tcp_authz_deny_total", deny); got != 1 {
		t.Errorf("inbound_tcp_authz_deny_total = %v, want 1", got)
	}
}

// TestIdentityMismatchFailsTheRequest: discovery says web must present an
// identity its proxy does not have; the connection fails and the caller is
// told which identity was expected and which was presented.
func TestIdentityMismatchFailsTheRequest(t *testing.T) {
	cp := newControlPlane(t, 0, nil)
	cp.applyService("web", "web", map[int]string{80: ""})
	impostor := "billing.shop.serviceaccount.identity.sluice.cluster.local"
	web := cp.startWorkload(t, workloadOpts{name: "web", advertised: impostor})
	front := cp.startWorkload(t, workloadOpts{name: "frontend", listeners: []string{"web.shop:80"}, noReplica: true})
	eventually(t, "frontend to discover web's endpoint", func() bool {
		s := front.proxy.Outbound().Service("web.shop:80")
		return s != nil && len(s.Spec.Endpoints) == 1
	})
	r, err := get(newClient(t), front.url(t, "web.shop:80", "/"), nil)
	if err != nil {
		t.Fatal(err)
	}
	reason := r.header.Get("Sluice-Proxy-Error")
	if r.status != http.StatusBadGateway || !strings.Contains(reason, `expected "`+impostor+`"`) || !strings.Contains(reason, web.identity) {
		t.Errorf("got %d %q, want 502 naming the expected %s and the presented %s", r.status, reason, impostor, web.identity)
	}
	if web.app.hits.Load() != 0 {
		t.Errorf("the request reached the application")
	}
}
