package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/sluicehq/sluice/proxy/config"
)

// TestInboundProbes: under all-authenticated a plain-text request is denied,
// except a GET or HEAD for a probe path on that probe's port, over HTTP/1
// and HTTP/2; such requests are counted as allowed by the "probe"
// authorization, and the probes follow a reload.
func TestInboundProbes(t *testing.T) {
	// The app speaks HTTP/1 and h2c and says what it served.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "%s %s", r.Method, r.URL.Path) })
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	app := ln.Addr().String()
	appPort := ln.Addr().(*net.TCPAddr).Port
	otherPort := appPort%65535 + 1 // any port but the app's

	cfg := &config.Config{
		Admin: "127.0.0.1:0",
		Inbound: config.Inbound{
			Listen: "127.0.0.1:0", App: app, DefaultPolicy: "all-authenticated",
			// A connection made to the inbound listener itself is governed
			// as one to the app's port.
			Probes: []config.Probe{{Port: appPort, Path: "/healthz"}, {Port: otherPort, Path: "/ready"}},
		},
		Outbound: config.Outbound{Listen: config.Off},
	}
	p := startProxy(t, reparse(t, cfg))
	in := p.Addr("inbound")
	h1 := &http.Client{Timeout: 10 * time.Second}
	h2 := &http.Client{Transport: h2cTransport(in), Timeout: 10 * time.Second}
	t.Cleanup(h1.CloseIdleConnections)
	t.Cleanup(h2.CloseIdleConnections)
	clients := []struct {
		name   string
		client *http.Client
	}{{"HTTP/1", h1}, {"HTTP/2", h2}}
	do := func(c *http.Client, method, path string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+in+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	probeAllow := map[string]string{"srv_name": "all-authenticated", "authz_kind": "probe", "authz_name": "probe"}
	deny := map[string]string{"srv_name": "all-authenticated"}
	cases := []struct {
		method, path string
		want         int
	}{
		{"GET", "/other", 403},
		{"GET", "/healthz", 200},
		{"GET", "/healthz?verbose=1", 200}, // the query is not part of the path
		{"HEAD", "/healthz", 200},
		{"POST", "/healthz", 403},
		{"GET", "/healthz/", 403},
		{"GET", "/ready", 403}, // a probe of another port
	}
	var allowed, denied float64
	for _, c := range clients {
		for _, tc := range cases {
			status, body := do(c.client, tc.method, tc.path)
			if status != tc.want {
				t.Errorf("%s %s %s: status %d (%q), want %d", c.name, tc.method, tc.path, status, body, tc.want)
			}
			if tc.want == 200 {
				allowed++
				if wantBody := tc.method + " /healthz"; tc.method != "HEAD" && body != wantBody {
					t.Errorf("%s %s %s: app said %q, want %q", c.name, tc.method, tc.path, body, wantBody)
				}
			} else {
				denied++
			}
		}
	}
	if got := counterValue(p, "inbound_http_authz_allow_total", probeAllow); got != allowed {
		t.Errorf("inbound_http_authz_allow_total%v = %v, want %v", probeAllow, got, allowed)
	}
	if got := counterValue(p, "inbound_http_authz_deny_total", deny); got != denied {
		t.Errorf("inbound_http_authz_deny_total%v = %v, want %v", deny, got, denied)
	}

	// Moved to another port by a reload, /healthz is denied on the app's.
	cfg.Inbound.Probes = []config.Probe{{Port: otherPort, Path: "/healthz"}}
	if err := p.Reload(reparse(t, cfg)); err != nil {
		t.Fatal(err)
	}
	if status, body := do(h1, "GET", "/healthz"); status != 403 {
		t.Errorf("GET /healthz after the probe moved to port %d: %d %q, want 403", otherPort, status, body)
	}
	// A policy that allows the client counts its own authorization, not probe.
	cfg.Inbound.DefaultPolicy = ""
	cfg.Inbound.Probes = []config.Probe{{Port: appPort, Path: "/healthz"}}
	if err := p.Reload(reparse(t, cfg)); err != nil {
		t.Fatal(err)
	}
	if status, _ := do(h1, "GET", "/healthz"); status != 200 {
		t.Errorf("GET /healthz under all-unauthenticated: %d, want 200", status)
	}
	if got := counterValue(p, "inbound_http_authz_allow_total", map[string]string{"authz_kind": "probe"}); got != allowed {
		t.Errorf("probe-allowed requests = %v after a request the policy allows, want still %v", got, allowed)
	}
}
