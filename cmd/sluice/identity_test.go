package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/mesh/api/meshv1"
	"github.com/sluicehq/sluice/mesh/identity"
)

// TestPendingIdentity: the identity role is ready once its CA is loaded,
// and as long as the issuer is valid; until the CA is loaded Certify
// answers Unavailable with the reason, and there is no TLS certificate to
// serve. Once loaded, it serves one for its own identity.
func TestPendingIdentity(t *testing.T) {
	longAgo := func() time.Time { return time.Now().Add(-2 * identity.IssuerLifetime) }
	tests := []struct {
		name      string
		issuedAt  func() time.Time // nil: no CA loaded
		wantReady string           // "" for ready
	}{
		{"no CA", nil, "identity CA: configmaps \"x\" not found"},
		{"a valid issuer", time.Now, ""},
		{"an expired issuer", longAgo, "is valid from"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &pendingIdentity{name: identity.ControlPlaneName(identity.IdentityServiceAccount, "", "")}
			p.setNotReady(errors.New(`configmaps "x" not found`))
			if tt.issuedAt != nil {
				ca, err := identity.LoadOrCreate(t.TempDir(), "", tt.issuedAt)
				if err != nil {
					t.Fatal(err)
				}
				if err := p.set(ca, identity.NewServer(ca, &identity.StaticTokens{}, 0)); err != nil {
					t.Fatal(err)
				}
			}
			err := p.ready()
			switch {
			case tt.wantReady == "" && err != nil:
				t.Errorf("ready() = %v, want ready", err)
			case tt.wantReady != "" && (err == nil || !strings.Contains(err.Error(), tt.wantReady)):
				t.Errorf("ready() = %v, want an error saying %q", err, tt.wantReady)
			}
			cert, certErr := p.getCertificate(nil)
			switch {
			case tt.wantReady == "" && (certErr != nil || cert.Leaf.DNSNames[0] != p.name):
				t.Errorf("getCertificate() = %v, %v; want a certificate for %s", cert, certErr, p.name)
			case tt.issuedAt == nil && (certErr == nil || !strings.Contains(certErr.Error(), "not found")):
				t.Errorf("getCertificate() without a CA: %v; want an error with the reason", certErr)
			}
			if tt.issuedAt == nil {
				_, err := p.Certify(context.Background(), &meshv1.CertifyRequest{Identity: "a.b.serviceaccount.identity.sluice.cluster.local"})
				if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "not found") {
					t.Errorf("Certify without a CA: %v; want Unavailable with the reason", err)
				}
			}
		})
	}
}

// TestPendingIdentityUnusable: a loaded CA whose trust anchors are broken
// makes the role not ready and Certify Unavailable, both saying why, until
// they are fixed.
func TestPendingIdentityUnusable(t *testing.T) {
	ca, err := identity.LoadOrCreate(t.TempDir(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &pendingIdentity{name: identity.ControlPlaneName(identity.IdentityServiceAccount, "sluice", "cluster.local")}
	if err := p.set(ca, identity.NewServer(ca, &identity.StaticTokens{}, 0)); err != nil {
		t.Fatal(err)
	}
	const why = "trust anchors ConfigMap sluice/sluice-identity-trust-roots has no ca.crt"
	if changed := p.setUnusable(errors.New(why)); !changed {
		t.Error("setUnusable(error) on a usable CA reported no change")
	}
	if err := p.ready(); err == nil || !strings.Contains(err.Error(), why) {
		t.Errorf("ready() = %v, want an error saying %q", err, why)
	}
	_, err = p.Certify(context.Background(), &meshv1.CertifyRequest{Identity: "a.b.serviceaccount.identity.sluice.cluster.local"})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), why) {
		t.Errorf("Certify with broken anchors: %v; want Unavailable saying %q", err, why)
	}
	if changed := p.setUnusable(errors.New(why)); changed {
		t.Error("setUnusable of the same state reported a change")
	}
	if changed := p.setUnusable(nil); !changed {
		t.Error("setUnusable(nil) on an unusable CA reported no change")
	}
	if err := p.ready(); err != nil {
		t.Errorf("ready() after the fix = %v, want ready", err)
	}
}
