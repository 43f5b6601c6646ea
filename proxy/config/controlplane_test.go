package config

import (
	"strings"
	"testing"
)

// TestControlPlaneIdentityAddress: the identity API is at identityAddress
// when it is set, at address otherwise, and a bad identityAddress is
// refused with the field's name.
func TestControlPlaneIdentityAddress(t *testing.T) {
	const base = "controlPlane: {address: %s, identity: web.default.serviceaccount.identity.sluice.cluster.local, tokenFile: /t, trustAnchors: /a, destinationName: dst.example%s}"
	tests := []struct {
		name, address, extra string
		want, wantErr        string
	}{
		{"defaults to address", "'cp:8086'", "", "cp:8086", ""},
		{"its own", "'sluice-destination.sluice.svc.cluster.local:8086'", ", identityAddress: 'sluice-identity.sluice.svc.cluster.local:8080'",
			"sluice-identity.sluice.svc.cluster.local:8080", ""},
		{"no port", "'cp:8086'", ", identityAddress: sluice-identity", "",
			`controlPlane.identityAddress: "sluice-identity" is not a host:port address`},
		{"no host", "'cp:8086'", ", identityAddress: ':8080'", "", `controlPlane.identityAddress: ":8080" has no host`},
		{"bad port", "'cp:8086'", ", identityAddress: 'id:0'", "", `controlPlane.identityAddress: "id:0": port "0" is not a number within 1-65535`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := strings.Replace(strings.Replace(base, "%s", tt.address, 1), "%s", tt.extra, 1)
			c, err := Parse([]byte(in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := c.ControlPlane.IdentityAddr(); got != tt.want {
				t.Errorf("IdentityAddr() = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestControlPlaneServerNames: destinationName is required; the identity
// service's expected name defaults to it.
func TestControlPlaneServerNames(t *testing.T) {
	const base = "controlPlane: {address: 'cp:8086', identity: web.default.serviceaccount.identity.sluice.cluster.local, tokenFile: /t, trustAnchors: /a%s}"
	tests := []struct {
		name, extra, want, wantErr string
	}{
		{"missing", "", "", "controlPlane.destinationName: required when controlPlane is set (the mesh identity the control plane's certificate must name"},
		{"identity defaults to destination", ", destinationName: cp.example", "cp.example", ""},
		{"both", ", destinationName: dst.example, identityName: id.example", "id.example", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(strings.Replace(base, "%s", tt.extra, 1)))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := c.ControlPlane.IdentityServerName(); got != tt.want {
				t.Errorf("IdentityServerName() = %q, want %q", got, tt.want)
			}
		})
	}
}
