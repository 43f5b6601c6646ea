package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// KubeVersion is the Kubernetes version whose binaries hack/kube-node.sh and
// hack/envtest.sh build and the harness runs.
const KubeVersion = "v1.37.2"

// Config says where the cluster lives and how its network is laid out. The
// zero value is usable: Defaults fills every empty field.
type Config struct {
	// WorkDir holds everything the cluster writes: PKI, kubeconfigs,
	// component configs, etcd data, containerd and kubelet state, logs and
	// the PIDs of the processes. Default ~/.cache/sluice/cluster/run.
	WorkDir string
	// BinDir holds kubelet, kube-controller-manager, kube-scheduler,
	// kube-proxy and coredns (hack/kube-node.sh --print-dir).
	// Default ~/.cache/sluice/cluster/<KubeVersion>/bin.
	BinDir string
	// EnvtestBinDir holds kube-apiserver, etcd and kubectl
	// (hack/envtest.sh --print-dir). Default ~/.cache/sluice/envtest/<KubeVersion>/bin.
	EnvtestBinDir string

	// NodeName is the Node object's name. Default "sluice-e2e".
	NodeName string
	// NodeBridge is the bridge created to carry NodeIP (the API server,
	// kubelet and kube-proxy bind to it). Default "sluicee2e0".
	NodeBridge string
	// NodeIP is the node's address, /32 on NodeBridge. Default 10.245.0.1.
	NodeIP netip.Addr
	// CNIBridge is the bridge the CNI bridge plugin attaches pods to.
	// Default "sluicee2ecni0".
	CNIBridge string
	// PodCIDR is the node's pod range. Default 10.244.0.0/24.
	PodCIDR netip.Prefix
	// ClusterCIDR contains every pod range; traffic from or to it is never
	// forwarded to or from Uplink. Default 10.244.0.0/16.
	ClusterCIDR netip.Prefix
	// ServiceCIDR is the ClusterIP range. Default 10.96.0.0/16.
	ServiceCIDR netip.Prefix
	// DNSIP is the ClusterIP of Service kube-system/kube-dns. Default 10.96.0.10.
	DNSIP netip.Addr
	// Uplink is the host interface pod traffic must never leave through.
	// Default: the interface of the default route.
	Uplink string
	// APIServerPort is the API server's secure port on NodeIP. Default 6443.
	APIServerPort int
	// EtcdPort is etcd's client port on 127.0.0.1; the peer and metrics
	// ports are the next two. Default 23790.
	EtcdPort int

	// Images are OCI image archives imported into containerd at Up, besides
	// the pause and CoreDNS images the harness builds itself.
	Images []string
	// Logger receives progress; default slog.Default().
	Logger *slog.Logger
}

// Defaults returns c with every empty field set to its default. It fails
// when a default cannot be worked out (no home directory, no default route).
func (c Config) Defaults() (Config, error) {
	if c.WorkDir == "" || c.BinDir == "" || c.EnvtestBinDir == "" {
		cache := os.Getenv("SLUICE_CACHE")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return c, fmt.Errorf("no WorkDir/BinDir given and no home directory to default them to: %w", err)
			}
			cache = filepath.Join(home, ".cache", "sluice")
		}
		if c.WorkDir == "" {
			c.WorkDir = filepath.Join(cache, "cluster", "run")
		}
		if c.BinDir == "" {
			c.BinDir = filepath.Join(cache, "cluster", KubeVersion, "bin")
		}
		if c.EnvtestBinDir == "" {
			c.EnvtestBinDir = filepath.Join(cache, "envtest", KubeVersion, "bin")
		}
	}
	setDefault(&c.NodeName, "sluice-e2e")
	setDefault(&c.NodeBridge, "sluicee2e0")
	setDefault(&c.CNIBridge, "sluicee2ecni0")
	if !c.NodeIP.IsValid() {
		c.NodeIP = netip.MustParseAddr("10.245.0.1")
	}
	if !c.PodCIDR.IsValid() {
		c.PodCIDR = netip.MustParsePrefix("10.244.0.0/24")
	}
	if !c.ClusterCIDR.IsValid() {
		c.ClusterCIDR = netip.MustParsePrefix("10.244.0.0/16")
	}
	if !c.ServiceCIDR.IsValid() {
		c.ServiceCIDR = netip.MustParsePrefix("10.96.0.0/16")
	}
	if !c.DNSIP.IsValid() {
		c.DNSIP = nthAddr(c.ServiceCIDR, 10)
	}
	if c.APIServerPort == 0 {
		c.APIServerPort = 6443
	}
	if c.EtcdPort == 0 {
		c.EtcdPort = 23790
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Uplink == "" {
		dev, err := defaultRouteDevice()
		if err != nil {
			return c, err
		}
		c.Uplink = dev
	}
	return c, c.validate()
}

func setDefault(s *string, v string) {
	if *s == "" {
		*s = v
	}
}

// validate reports the first field that cannot work.
func (c Config) validate() error {
	var errs []error
	wd := filepath.Clean(c.WorkDir)
	if !filepath.IsAbs(wd) || strings.Count(wd, string(filepath.Separator)) < 2 {
		errs = append(errs, fmt.Errorf("WorkDir %q must be an absolute path at least two levels deep (it is deleted and recreated)", c.WorkDir))
	}
	for name, v := range map[string]string{"NodeBridge": c.NodeBridge, "CNIBridge": c.CNIBridge} {
		if len(v) > 15 {
			errs = append(errs, fmt.Errorf("%s %q is longer than the 15 characters a Linux interface name may have", name, v))
		}
	}
	if !c.NodeIP.Is4() {
		errs = append(errs, fmt.Errorf("NodeIP %s is not an IPv4 address", c.NodeIP))
	}
	if !c.ClusterCIDR.Contains(c.PodCIDR.Addr()) {
		errs = append(errs, fmt.Errorf("PodCIDR %s is not inside ClusterCIDR %s", c.PodCIDR, c.ClusterCIDR))
	}
	if !c.ServiceCIDR.Contains(c.DNSIP) {
		errs = append(errs, fmt.Errorf("DNSIP %s is not inside ServiceCIDR %s", c.DNSIP, c.ServiceCIDR))
	}
	if c.NodeBridge == c.CNIBridge {
		errs = append(errs, fmt.Errorf("NodeBridge and CNIBridge are both %q: the CNI bridge plugin refuses a bridge that carries another address", c.NodeBridge))
	}
	return errors.Join(errs...)
}

// defaultRouteDevice returns the interface of the IPv4 default route.
func defaultRouteDevice() (string, error) {
	out, err := exec.Command("ip", "-4", "route", "show", "default").Output()
	if err != nil {
		return "", fmt.Errorf("finding the uplink (ip route show default): %w; set Config.Uplink", err)
	}
	f := strings.Fields(string(out))
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "dev" {
			return f[i+1], nil
		}
	}
	return "", errors.New("no IPv4 default route to find the uplink from; set Config.Uplink")
}

// serviceIP returns the first address of the service range: the ClusterIP
// of Service default/kubernetes.
func (c Config) serviceIP() netip.Addr { return nthAddr(c.ServiceCIDR, 1) }

// gatewayIP returns the pod range's first address, the CNI bridge's.
func (c Config) gatewayIP() netip.Addr { return nthAddr(c.PodCIDR, 1) }

// nthAddr returns the n-th address of p (the network address is the 0th).
func nthAddr(p netip.Prefix, n int) netip.Addr {
	a := p.Masked().Addr()
	for range n {
		a = a.Next()
	}
	return a
}

// path returns a path inside the work directory.
func (c Config) path(elem ...string) string {
	return filepath.Join(append([]string{c.WorkDir}, elem...)...)
}

// kubeconfig is the admin kubeconfig's path.
func (c Config) kubeconfig() string { return c.path("kubeconfig", "admin.conf") }
