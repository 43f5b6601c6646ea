package cluster

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

// testConfig is a complete configuration in a temporary work directory,
// needing neither root nor a default route.
func testConfig(t *testing.T) Config {
	t.Helper()
	c, err := Config{WorkDir: t.TempDir(), Uplink: "eth9"}.Defaults()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDefaults(t *testing.T) {
	c := testConfig(t)
	for name, got := range map[string]string{
		"NodeIP":      c.NodeIP.String(),
		"DNSIP":       c.DNSIP.String(),
		"serviceIP":   c.serviceIP().String(),
		"gatewayIP":   c.gatewayIP().String(),
		"PodCIDR":     c.PodCIDR.String(),
		"ServiceCIDR": c.ServiceCIDR.String(),
	} {
		want := map[string]string{
			"NodeIP": "10.245.0.1", "DNSIP": "10.96.0.10", "serviceIP": "10.96.0.1",
			"gatewayIP": "10.244.0.1", "PodCIDR": "10.244.0.0/24", "ServiceCIDR": "10.96.0.0/16",
		}[name]
		if got != want {
			t.Errorf("%s = %s, want %s", name, got, want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name   string
		cfg    Config
		substr string
	}{
		{"relative work dir", Config{WorkDir: "run"}, `WorkDir "run" must be an absolute path`},
		{"shallow work dir", Config{WorkDir: "/tmp"}, `WorkDir "/tmp" must be an absolute path at least two levels deep`},
		{"long bridge", Config{NodeBridge: "a-very-long-bridge"}, `NodeBridge "a-very-long-bridge" is longer than the 15 characters`},
		{"same bridges", Config{NodeBridge: "br0", CNIBridge: "br0"}, `NodeBridge and CNIBridge are both "br0"`},
		{"pod range outside cluster range", Config{PodCIDR: netip.MustParsePrefix("10.1.0.0/24")}, "PodCIDR 10.1.0.0/24 is not inside ClusterCIDR 10.244.0.0/16"},
		{"DNS outside services", Config{DNSIP: netip.MustParseAddr("10.97.0.10")}, "DNSIP 10.97.0.10 is not inside ServiceCIDR 10.96.0.0/16"},
		{"IPv6 node", Config{NodeIP: netip.MustParseAddr("fd00::1")}, "NodeIP fd00::1 is not an IPv4 address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			if cfg.WorkDir == "" {
				cfg.WorkDir = t.TempDir()
			}
			cfg.Uplink = "eth9"
			_, err := cfg.Defaults()
			if err == nil || !strings.Contains(err.Error(), tt.substr) {
				t.Fatalf("Defaults() error = %v, want one containing %q", err, tt.substr)
			}
		})
	}
}

func TestPKI(t *testing.T) {
	c := testConfig(t)
	if err := writePKI(c); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	ca := readCert(t, c.path("pki", "ca.crt"))
	pool.AddCert(ca)
	serving := readCert(t, c.path("pki", "apiserver.crt"))
	for _, name := range []string{"kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "10.245.0.1", "10.96.0.1"} {
		if _, err := serving.Verify(x509.VerifyOptions{Roots: pool, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("API server certificate for %s: %v", name, err)
		}
	}
	if _, err := serving.Verify(x509.VerifyOptions{Roots: pool, DNSName: "example.com"}); err == nil {
		t.Error("API server certificate verifies for example.com")
	}
	for _, id := range clientIdentities(c.NodeName) {
		cert := readCert(t, c.path("pki", id.file+".crt"))
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s client certificate: %v", id.file, err)
		}
		if cert.Subject.CommonName != id.cn || !slices.Equal(cert.Subject.Organization, id.orgs) {
			t.Errorf("%s certificate subject %v, want CN %s O %v", id.file, cert.Subject, id.cn, id.orgs)
		}
		kc, err := clientcmd.LoadFromFile(c.path("kubeconfig", id.file+".conf"))
		if err != nil {
			t.Fatal(err)
		}
		if got := kc.Clusters[kc.Contexts[kc.CurrentContext].Cluster].Server; got != "https://10.245.0.1:6443" {
			t.Errorf("%s kubeconfig server %s", id.file, got)
		}
	}
	if got := readCert(t, c.path("pki", "kubelet.crt")).Subject.CommonName; got != "system:node:sluice-e2e" {
		t.Errorf("kubelet certificate CN %s", got)
	}
	if _, err := os.Stat(c.path("pki", "sa.pub")); err != nil {
		t.Error(err)
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestWriteConfigs(t *testing.T) {
	c := testConfig(t)
	if err := writeConfigs(c); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		file string
		want []string
	}{
		{"containerd/config.toml", []string{"restrict_oom_score_adj = true", `sandbox_image = "registry.k8s.io/pause:3.10"`, c.WorkDir + "/containerd/run/containerd.sock", "SystemdCgroup = false"}},
		{"cni/conf/10-sluice-e2e.conflist", []string{`"bridge": "sluicee2ecni0"`, `"subnet": "10.244.0.0/24"`, `"gateway": "10.244.0.1"`, `"ipMasq": false`}},
		{"kubelet-config.yaml", []string{"failCgroupV1: false", "cgroupDriver: cgroupfs", "clusterDNS: [10.96.0.10]", "address: 10.245.0.1", "podLogsDir: " + c.WorkDir + "/logs/pods"}},
		{"kube-proxy.yaml", []string{"mode: iptables", "clusterCIDR: 10.244.0.0/16", "hostnameOverride: sluice-e2e"}},
	}
	for _, tt := range tests {
		b, err := os.ReadFile(c.path(tt.file))
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range tt.want {
			if !strings.Contains(string(b), w) {
				t.Errorf("%s lacks %q:\n%s", tt.file, w, b)
			}
		}
	}
}

func TestSplitRule(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{`KUBE-SERVICES -j KUBE-SVC-X`, []string{"KUBE-SERVICES", "-j", "KUBE-SVC-X"}, false},
		{`OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
			[]string{"OUTPUT", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"}, false},
		{`FORWARD -m comment --comment "a \"quoted\" word" -j DROP`,
			[]string{"FORWARD", "-m", "comment", "--comment", `a "quoted" word`, "-j", "DROP"}, false},
		{`FORWARD -m comment --comment "" -j DROP`, []string{"FORWARD", "-m", "comment", "--comment", "", "-j", "DROP"}, false},
		{`FORWARD --comment "open`, nil, true},
	}
	for _, tt := range tests {
		got, err := splitRule(tt.in)
		if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
			t.Errorf("splitRule(%q) = %q, %v; want %q (error %t)", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestGuardRulesKeepTrafficLocal(t *testing.T) {
	c := testConfig(t)
	rules := guardRules(c)
	joined := make([]string, len(rules))
	for i, r := range rules {
		joined[i] = strings.Join(r, " ")
	}
	want := []string{
		"filter FORWARD -s 10.244.0.0/16 -o eth9 -m comment --comment sluice-e2e: cluster traffic stays local -j DROP",
		"filter FORWARD -d 10.244.0.0/16 -i eth9 -m comment --comment sluice-e2e: cluster traffic stays local -j DROP",
		"mangle POSTROUTING -d 10.244.0.0/16 -o eth9 -m comment --comment sluice-e2e: cluster traffic stays local -j DROP",
		"mangle POSTROUTING -d 10.96.0.0/16 -o eth9 -m comment --comment sluice-e2e: cluster traffic stays local -j DROP",
	}
	if !slices.Equal(joined, want) {
		t.Errorf("guard rules:\n%s\nwant\n%s", strings.Join(joined, "\n"), strings.Join(want, "\n"))
	}
}

func TestHostStateDiff(t *testing.T) {
	before := hostState{
		Processes: []string{"containerd"},
		Links:     []string{"veth1"},
		Chains:    []string{"iptables filter FORWARD"},
		Sysctls:   map[string]string{"net.ipv4.ip_forward": "0", "kernel.panic": "1"},
		Paths:     []string{"/etc/cni"},
	}
	after := hostState{
		Processes: []string{"containerd", "kubelet"},
		Chains:    []string{"iptables filter FORWARD", "iptables nat KUBE-SERVICES"},
		Sysctls:   map[string]string{"net.ipv4.ip_forward": "1", "kernel.panic": "1"},
		Mounts:    []string{"/w/kubelet-root/pods/x"},
		Paths:     []string{"/etc/cni", "/var/lib/cni"},
	}
	want := []string{
		"process kubelet is left over",
		"link veth1 is gone",
		"iptables iptables nat KUBE-SERVICES is left over",
		"mount /w/kubelet-root/pods/x is left over",
		"path /var/lib/cni is left over",
		`sysctl net.ipv4.ip_forward is "1", was "0"`,
	}
	if got := before.diff(after); !slices.Equal(got, want) {
		t.Errorf("diff:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := before.diff(before); len(got) != 0 {
		t.Errorf("diff of a state with itself: %q", got)
	}
}

func TestUnescapeMount(t *testing.T) {
	if got := unescapeMount(`/a\040b\011c`); got != "/a b\tc" {
		t.Errorf("unescapeMount = %q", got)
	}
}

// TestProcessLifecycle starts a process the way Up starts components,
// and checks that stopProcess stops it and its child, and ignores a PID
// file whose process is gone.
func TestProcessLifecycle(t *testing.T) {
	c := testConfig(t)
	ctx := context.Background()
	// A shell that ignores SIGTERM with a child: SIGKILL after the grace
	// period, and the child goes too.
	if err := startProcess(c, "sh", "/bin/sh", "-c", "trap '' TERM; sleep 300 & wait"); err != nil {
		t.Fatal(err)
	}
	pid, startTime, ok := recordedProcess(c, "sh")
	if !ok || !running(pid, startTime) {
		t.Fatalf("recorded process %d (ok %t) is not running", pid, ok)
	}
	var kids []procRef
	if err := poll(ctx, 10*time.Second, "sleep child started", func(context.Context) error {
		kids = descendants(pid)
		if len(kids) == 0 {
			return os.ErrNotExist
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := stopProcess(ctx, c, "sh", 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if running(pid, startTime) {
		t.Errorf("process %d still runs", pid)
	}
	for _, k := range kids {
		if running(k.pid, k.startTime) {
			t.Errorf("child %d still runs", k.pid)
			killPID(k.pid)
		}
	}
	if _, err := os.Stat(c.pidFile("sh")); !os.IsNotExist(err) {
		t.Errorf("PID file left: %v", err)
	}

	// A recorded PID whose start time does not match is not ours.
	if err := os.WriteFile(c.pidFile("stale"), []byte("1 12345\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if processRunning(c, "stale") {
		t.Error("PID 1 with a wrong start time counts as our process")
	}
	if err := stopProcess(ctx, c, "stale", time.Second); err != nil {
		t.Fatal(err)
	}

	if _, err := os.Stat(filepath.Join(c.WorkDir, "logs", "sh.log")); err != nil {
		t.Errorf("no log file: %v", err)
	}
}

func TestStartProcessMissingBinary(t *testing.T) {
	c := testConfig(t)
	err := startProcess(c, "nothing", filepath.Join(c.WorkDir, "no-such-binary"))
	if err == nil || !strings.Contains(err.Error(), "starting nothing") {
		t.Fatalf("startProcess error = %v, want one naming the component", err)
	}
}

func TestCheckBinariesNamesWhatIsMissing(t *testing.T) {
	c := testConfig(t)
	c.BinDir = filepath.Join(c.WorkDir, "bin")
	err := c.checkBinaries()
	if err == nil {
		t.Fatal("checkBinaries found binaries in an empty directory")
	}
	for _, want := range []string{c.BinDir + "/kubelet is missing: build it with hack/kube-node.sh", c.BinDir + "/coredns is missing"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestUpDownNeedRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("running as root")
	}
	c := testConfig(t)
	if _, err := Up(context.Background(), c); err == nil || !strings.Contains(err.Error(), "needs root") {
		t.Errorf("Up as non-root: %v", err)
	}
	if err := Down(context.Background(), c); err == nil || !strings.Contains(err.Error(), "needs root") {
		t.Errorf("Down as non-root: %v", err)
	}
}

func TestNthAddr(t *testing.T) {
	if got := nthAddr(netip.MustParsePrefix("10.96.0.0/16"), 10); got != netip.MustParseAddr("10.96.0.10") {
		t.Errorf("nthAddr = %s", got)
	}
}

// TestDiagnosticsWithoutAPIServer prints what it can when the cluster
// never came up: the components' states and the ends of their logs.
func TestDiagnosticsWithoutAPIServer(t *testing.T) {
	c := testConfig(t)
	if err := os.MkdirAll(c.path("logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	for i := range 40 {
		fmt.Fprintf(&log, "kubelet line %d\n", i)
	}
	if err := os.WriteFile(c.path("logs", "kubelet.log"), []byte(log.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cl, err := Open(c)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	cl.Diagnostics(context.Background(), &b)
	out := b.String()
	for _, want := range []string{"kube-apiserver           not recorded", "kubelet line 39", "containerd.log\n  (open "} {
		if !strings.Contains(out, want) {
			t.Errorf("diagnostics lack %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "kubelet line 14\n") {
		t.Errorf("diagnostics print more than the last %d lines:\n%s", logTail, out)
	}
}
