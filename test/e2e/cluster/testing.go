package cluster

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Environment variables that decide whether tests on a real cluster run.
const (
	// EnableEnv set to 1 runs tests on a real cluster (as root; the first
	// run builds the binaries with hack/kube-node.sh, 5 to 45 minutes).
	// make e2e sets it and runs them after every other test, one package
	// at a time: a cluster owns the host's network while it is up, so it
	// must not run beside the netns tests or another cluster.
	EnableEnv = "SLUICE_E2E_CLUSTER"
	// RequireEnv set to 1 makes them fail instead of skip when they are
	// enabled but cannot run (not root). CI sets it.
	RequireEnv = "SLUICE_REQUIRE_CLUSTER"
)

// Require skips t unless SLUICE_E2E_CLUSTER=1 (make e2e) and this process
// is root; under SLUICE_REQUIRE_CLUSTER=1 it fails t instead of skipping
// when not root.
func Require(t testing.TB) {
	t.Helper()
	if os.Getenv(EnableEnv) != "1" {
		t.Skipf("a real single-node cluster runs under make e2e (%s=1, as root), after the other tests", EnableEnv)
	}
	if os.Geteuid() != 0 {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("%s=1 but not root: the cluster runs containerd and the kubelet and creates interfaces and iptables rules", RequireEnv)
		}
		t.Skip("not root: the cluster runs containerd and the kubelet and creates interfaces and iptables rules")
	}
}

// EnsureBinaries runs hack/kube-node.sh from the module the current
// directory is in: it builds what is missing (at once when everything is
// cached) and returns the bin directory.
func EnsureBinaries(ctx context.Context) (string, error) {
	root, err := ModuleRoot(ctx)
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "hack", "kube-node.sh"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/kube-node.sh: %w\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1], nil
}

// ForTest gives t a running cluster: the one cfg names if it is already up
// and healthy (make e2e-up), left running afterwards; otherwise one that
// ForTest brings up and tears down when t ends, failing t if Down finds
// the host changed. When t fails, the cluster's diagnostics are logged.
// It calls Require first.
func ForTest(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	if cl, err := Open(cfg); err == nil && cl.Healthy(ctx) == nil {
		t.Logf("using the running cluster in %s", cl.Config.WorkDir)
		t.Cleanup(func() { logDiagnosticsOnFailure(t, cl) })
		return cl
	}
	if _, err := EnsureBinaries(ctx); err != nil {
		t.Fatal(err)
	}
	cl, err := Up(ctx, cfg)
	if err != nil {
		t.Fatalf("bringing the cluster up: %v", err)
	}
	t.Cleanup(func() {
		logDiagnosticsOnFailure(t, cl)
		if err := Down(context.Background(), cfg); err != nil {
			t.Errorf("tearing the cluster down: %v", err)
		}
	})
	return cl
}

func logDiagnosticsOnFailure(t testing.TB, cl *Cluster) {
	if !t.Failed() {
		return
	}
	var b bytes.Buffer
	cl.Diagnostics(context.Background(), &b)
	t.Logf("cluster diagnostics:\n%s", b.String())
}
