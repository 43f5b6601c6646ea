package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sluicehq/sluice/local/up"
	"github.com/sluicehq/sluice/mesh/cptls"
	"github.com/sluicehq/sluice/mesh/identity"
)

// TestCheckControlPlaneTLS: `sluice check` reaches the local control plane
// over TLS as a proxy does, and says so readably when its certificate is
// not signed by the trust anchors or names another identity.
func TestCheckControlPlaneTLS(t *testing.T) {
	ca, err := identity.LoadOrCreate(filepath.Join(t.TempDir(), "ca"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	self, err := identity.NewSelfCertificate(ca, up.ControlPlaneName, 0)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(cptls.ServerOptions(ca.TrustAnchors(), self.GetCertificate, cptls.MeshOnlyServices...)...)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Stop(); <-done })

	other, err := identity.LoadOrCreate(filepath.Join(t.TempDir(), "other"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	anchors := func(name string, pem []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good, wrong := anchors("good.crt", ca.TrustAnchorPEM()), anchors("wrong.crt", other.TrustAnchorPEM())
	addr := ln.Addr().String()
	tests := []struct {
		name, anchors, serverName string
		wantHint                  string // "" when the check passes
	}{
		{"trusted", good, up.ControlPlaneName, ""},
		{"other trust anchors", wrong, up.ControlPlaneName, "the control plane service's certificate at " + addr + " is not signed by the configured trust anchors (expected identity " + up.ControlPlaneName},
		{"other name", good, "sluice-impostor.sluice.serviceaccount.identity.sluice.cluster.local", "presented identity"},
		{"missing anchors", filepath.Join(dir, "none.crt"), up.ControlPlaneName, "reading the trust anchors"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := checkControlPlane(context.Background(), &up.Status{ControlPlane: addr, ControlPlaneName: tt.serverName, TrustAnchors: tt.anchors})
			hints := strings.Join(r.Hints, "\n")
			if tt.wantHint == "" {
				if !r.OK {
					t.Errorf("check failed: %s", hints)
				}
				return
			}
			if r.OK || !strings.Contains(hints, tt.wantHint) {
				t.Errorf("check OK=%v hints %q; want a failure saying %q", r.OK, hints, tt.wantHint)
			}
		})
	}
}
