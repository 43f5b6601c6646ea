package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// TestRoleFlags: a role given bad flags stops before doing anything, with
// a message naming the flag and what is wrong with it.
func TestRoleFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"destination: address without a port", []string{"destination", "--addr", "8086"}, `--addr "8086": want host:port`},
		{"destination: admin address without a port", []string{"destination", "--admin-addr", "localhost"}, `--admin-addr "localhost": want host:port`},
		{"destination: unknown default policy", []string{"destination", "--default-inbound-policy", "allow-all"}, "--default-inbound-policy"},
		{"destination: bad trust domain", []string{"destination", "--trust-domain", "Cluster_Local"}, `--trust-domain "Cluster_Local" is not a DNS name`},
		{"destination: bad cluster domain", []string{"destination", "--cluster-domain", "-x"}, `--cluster-domain "-x" is not a DNS name`},
		{"destination: bad log level", []string{"destination", "--log-level", "loud"}, `--log-level "loud": want debug, info, warn or error`},
		{"destination: arguments", []string{"destination", "extra"}, `unknown command "extra"`},
		{"destination: identity address without a port", []string{"destination", "--identity-addr", "sluice-identity"}, `--identity-addr "sluice-identity": want host:port`},
		{"destination: empty token file", []string{"destination", "--identity-token-file", ""}, "--identity-token-file must not be empty"},
		{"identity: bad controller namespace", []string{"identity", "--controller-namespace", "Sluice"}, `--controller-namespace "Sluice" is not a DNS label`},
		{"identity: bad issuer Secret name", []string{"identity", "--issuer-secret", "no/slash"}, `--issuer-secret "no/slash" is not a DNS name`},
		{"identity: empty audience", []string{"identity", "--token-audience", ""}, "--token-audience must not be empty"},
		{"identity: two problems at once", []string{"identity", "--addr", "x", "--trust-domain", "A_B"}, `--addr "x": want host:port`},
		{"telemetry: zero interval", []string{"telemetry", "--scrape-interval", "0s"}, "--scrape-interval 0s: want a positive duration"},
		{"telemetry: interval without a unit", []string{"telemetry", "--scrape-interval", "10"}, `invalid argument "10" for "--scrape-interval"`},
		{"telemetry: retention below the interval", []string{"telemetry", "--retention", "1s"}, "--retention 1s is shorter than --scrape-interval 10s"},
		{"telemetry: bad metrics port", []string{"telemetry", "--proxy-metrics-port", "0"}, "--proxy-metrics-port 0 is not a port number"},
		{"telemetry: bad namespace", []string{"telemetry", "--namespace", "a.b"}, `--namespace "a.b" is not a DNS label`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(tt.args, &stdout, &stderr); code == 0 {
				t.Fatalf("sluice %s succeeded", strings.Join(tt.args, " "))
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("sluice %s printed\n%s\nwant it to say %q", strings.Join(tt.args, " "), stderr.String(), tt.want)
			}
		})
	}
}

// TestRoleRESTConfig: a kubeconfig that cannot be read is named in the error.
func TestRoleRESTConfig(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	_, err := roleRESTConfig(missing, "")
	if err == nil || !strings.Contains(err.Error(), "--kubeconfig \""+missing+"\"") {
		t.Errorf("roleRESTConfig(%s): %v; want an error naming the file", missing, err)
	}
}
