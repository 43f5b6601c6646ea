package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/proxy/config"
	"github.com/sluicehq/sluice/proxy/metrics"
)

// startEcho runs an HTTP/1 app answering with the sluice-client-id values it got.
func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "ids=%q", r.Header.Values("Sluice-Client-Id"))
	})}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String()
}

func counterValue(p *Proxy, name string, match map[string]string) float64 {
	var sum float64
	for _, f := range p.Metrics().Gather() {
		for _, s := range f.Samples {
			if s.Name != name || !labelsMatch(s.Labels, match) {
				continue
			}
			sum += s.Value
		}
	}
	return sum
}

func labelsMatch(ls metrics.Labels, match map[string]string) bool {
	for k, v := range match {
		if got, ok := ls.Get(k); !ok || got != v {
			return false
		}
	}
	return true
}

// TestInboundDefaultPolicy: without a control plane the configured default
// policy is enforced on every request and connection, counted, and replaced
// by a reload; a forged sluice-client-id never reaches the application.
func TestInboundDefaultPolicy(t *testing.T) {
	app := startEcho(t)
	cfg := &config.Config{
		Admin:    "127.0.0.1:0",
		Inbound:  config.Inbound{Listen: "127.0.0.1:0", App: app, DefaultPolicy: "all-authenticated"},
		Outbound: config.Outbound{Listen: config.Off},
	}
	p := startProxy(t, reparse(t, cfg))
	in := "http://" + p.Addr("inbound") + "/"
	do := func() (int, string, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", in, nil)
		req.Header.Set("Sluice-Client-Id", "forged.identity")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), resp.Header.Get("Sluice-Proxy-Error")
	}
	status, _, reason := do()
	if status != 403 || !strings.Contains(reason, "all-authenticated") {
		t.Errorf("plain-text request under all-authenticated: %d %q, want 403 naming the policy", status, reason)
	}
	// Opaque bytes are refused by closing the connection.
	c, err := net.Dial("tcp", p.Addr("inbound"))
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "\x00binary\r\n")
	if got, _ := io.ReadAll(c); len(got) != 0 {
		t.Errorf("a denied opaque connection read %q", got)
	}
	c.Close()
	deny := map[string]string{"srv_name": "all-authenticated", "srv_kind": "default"}
	if got := counterValue(p, "inbound_http_authz_deny_total", deny); got != 1 {
		t.Errorf("inbound_http_authz_deny_total = %v, want 1", got)
	}
	if got := counterValue(p, "inbound_tcp_authz_deny_total", deny); got != 1 {
		t.Errorf("inbound_tcp_authz_deny_total = %v, want 1", got)
	}

	cfg.Inbound.DefaultPolicy = ""
	if err := p.Reload(reparse(t, cfg)); err != nil {
		t.Fatal(err)
	}
	status, body, _ := do()
	if status != 200 || body != `ids=[]` {
		t.Errorf("after the reload: %d %s, want 200 and no sluice-client-id", status, body)
	}
	allow := map[string]string{"srv_name": "all-unauthenticated", "authz_name": "all-unauthenticated", "authz_kind": "default"}
	if got := counterValue(p, "inbound_http_authz_allow_total", allow); got != 1 {
		t.Errorf("inbound_http_authz_allow_total%v = %v, want 1", allow, got)
	}
	if got := counterValue(p, "request_total", map[string]string{"direction": "inbound", "tls": "no_identity", "no_tls_reason": "no_tls_from_remote"}); got != 1 {
		t.Errorf("plain-text inbound requests labelled no_identity: %v, want 1", got)
	}

	cfg.Inbound.DefaultPolicy = "nobody"
	if err := p.Reload(cfg); err == nil || !strings.Contains(err.Error(), "inbound.defaultPolicy") {
		t.Errorf("reload with an unknown default policy: %v", err)
	}
}

// TestTwoListenersOnPortZero: explicit listeners on port 0 for different
// services are distinct listeners, each found by its service.
func TestTwoListenersOnPortZero(t *testing.T) {
	a := startBackend(t, "a")
	b := startBackend(t, "b")
	cfg := &config.Config{
		Admin:    "127.0.0.1:0",
		Inbound:  config.Inbound{Listen: config.Off},
		Outbound: config.Outbound{Listen: config.Off},
		Listeners: []config.Listener{
			{Listen: "127.0.0.1:0", Service: "a.default:80"},
			{Listen: "127.0.0.1:0", Service: "b.default:80"},
		},
		Table: routetable.Table{Services: []routetable.Service{
			{Name: "a", Port: 80, Endpoints: []routetable.Endpoint{{Address: a.addr}}},
			{Name: "b", Port: 80, Endpoints: []routetable.Endpoint{{Address: b.addr}}},
		}},
	}
	p := startProxy(t, reparse(t, cfg))
	for _, name := range []string{"a", "b"} {
		addr := p.ListenerAddr(name + ".default:80")
		if addr == "" {
			t.Fatalf("no listener for %s", name)
		}
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != name {
			t.Errorf("listener for %s answered %q", name, body)
		}
	}
	// A reload keeps both (same configuration) without rebinding.
	before := p.ListenerAddr("a.default:80")
	if err := p.Reload(reparse(t, cfg)); err != nil {
		t.Fatal(err)
	}
	if got := p.ListenerAddr("a.default:80"); got != before {
		t.Errorf("reload rebound the listener: %s, then %s", before, got)
	}
}

// TestMeshModeNotReadyUntilCertified: with a control plane that cannot be
// reached, the proxy serves its listeners but is not ready, and says why.
func TestMeshModeNotReadyUntilCertified(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	unreachable := ln.Addr().String()
	ln.Close()
	cfg := &config.Config{
		Admin:    "127.0.0.1:0",
		Inbound:  config.Inbound{Listen: config.Off},
		Outbound: config.Outbound{Listen: config.Off},
		ControlPlane: &config.ControlPlane{
			Address:         unreachable,
			DestinationName: "sluice-destination.sluice.serviceaccount.identity.sluice.cluster.local",
			Identity:        "web.shop.serviceaccount.identity.sluice.cluster.local",
			TokenFile:       filepath.Join(dir, "token"),
			TrustAnchors:    filepath.Join(dir, "anchors.pem"),
		},
	}
	cfg.ApplyDefaults()
	if _, err := New(cfg, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "controlPlane.trustAnchors") {
		t.Fatalf("New without a trust anchors file: %v", err)
	}
	if err := os.WriteFile(cfg.ControlPlane.TrustAnchors, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "trust anchors") {
		t.Fatalf("New with invalid trust anchors: %v", err)
	}
	if err := os.WriteFile(cfg.ControlPlane.TrustAnchors, testAnchorPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, cfg)
	ready, why := p.Ready()
	if ready || !strings.Contains(why, "not certified yet") {
		t.Errorf("Ready() = %v, %q; want not ready, not certified yet", ready, why)
	}
	resp, err := http.Get("http://" + p.Addr("admin") + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Errorf("/ready answered %d, want 503", resp.StatusCode)
	}
}

// testAnchorPEM is a throwaway self-signed CA certificate: a trust anchor
// that parses.
func testAnchorPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "root.test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
