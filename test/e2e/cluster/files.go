package cluster

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"text/template"
)

// pauseImage is the sandbox image containerd runs for every pod; the
// harness builds it and imports it at Up.
const pauseImage = "registry.k8s.io/pause:3.10"

// containerdConfig is containerd's configuration: every directory inside
// the work directory, and restrict_oom_score_adj because the machine's
// bounding set lacks CAP_SYS_RESOURCE (runc cannot set the sandbox's
// oom_score_adj of -998 without it).
var containerdConfig = template.Must(template.New("containerd").Parse(`version = 2
root = "{{.W}}/containerd/root"
state = "{{.W}}/containerd/state"
[grpc]
  address = "{{.W}}/containerd/run/containerd.sock"
[ttrpc]
  address = "{{.W}}/containerd/run/containerd.sock.ttrpc"
[debug]
  address = "{{.W}}/containerd/run/debug.sock"
  level = "info"
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{{.Pause}}"
    netns_mounts_under_state_dir = true
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          BinaryName = "{{.Runc}}"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{{.CNIBin}}"
      conf_dir = "{{.W}}/cni/conf"
  [plugins."io.containerd.internal.v1.opt"]
    path = "{{.W}}/containerd/opt"
`))

// cniConfig attaches pods to CNIBridge, a bridge of its own: the plugin
// refuses a bridge that carries another address (the node IP's). No
// masquerading: pod traffic is not meant to leave the machine.
var cniConfig = template.Must(template.New("cni").Parse(`{
  "cniVersion": "0.4.0",
  "name": "sluice-e2e-pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "{{.C.CNIBridge}}",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "{{.C.PodCIDR}}", "gateway": "{{.Gateway}}"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "{{.W}}/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
`))

// kubeletConfig runs the kubelet on cgroup v1 with the cgroupfs driver,
// without touching iptables, swap or kernel defaults, and with pod logs
// inside the work directory.
var kubeletConfig = template.Must(template.New("kubelet").Parse(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {{.C.NodeIP}}
healthzBindAddress: 127.0.0.1
healthzPort: 10248
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: {{.W}}/pki/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
containerRuntimeEndpoint: unix://{{.W}}/containerd/run/containerd.sock
imageServiceEndpoint: unix://{{.W}}/containerd/run/containerd.sock
clusterDNS: [{{.C.DNSIP}}]
clusterDomain: cluster.local
resolvConf: {{.W}}/resolv.conf
staticPodPath: {{.W}}/static-pods
podCIDR: {{.C.PodCIDR}}
maxPods: 60
protectKernelDefaults: false
makeIPTablesUtilChains: false
enforceNodeAllocatable: []
cgroupsPerQOS: true
localStorageCapacityIsolation: false
evictionHard: {}
imageGCHighThresholdPercent: 100
serializeImagePulls: false
podLogsDir: {{.W}}/logs/pods
`))

// kubeProxyConfig runs kube-proxy in iptables mode, serving NodePorts on
// the node IP only.
var kubeProxyConfig = template.Must(template.New("kube-proxy").Parse(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: {{.W}}/kubeconfig/proxy.conf}
mode: iptables
clusterCIDR: {{.C.ClusterCIDR}}
hostnameOverride: {{.C.NodeName}}
bindAddress: {{.C.NodeIP}}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false}
nodePortAddresses: ["{{.C.NodeIP}}/32"]
`))

// cniBinDir is where Debian's containernetworking-plugins installs.
const cniBinDir = "/usr/lib/cni"

// writeConfigs renders the component configurations into the work
// directory.
func writeConfigs(c Config) error {
	data := struct {
		C       Config
		W       string
		Pause   string
		Runc    string
		CNIBin  string
		Gateway string
	}{c, c.WorkDir, pauseImage, "/usr/sbin/runc", cniBinDir, c.gatewayIP().String()}
	files := []struct {
		path string
		tmpl *template.Template
	}{
		{c.path("containerd", "config.toml"), containerdConfig},
		{c.path("cni", "conf", "10-sluice-e2e.conflist"), cniConfig},
		{c.path("kubelet-config.yaml"), kubeletConfig},
		{c.path("kube-proxy.yaml"), kubeProxyConfig},
	}
	for _, f := range files {
		var b bytes.Buffer
		if err := f.tmpl.Execute(&b, data); err != nil {
			return fmt.Errorf("rendering %s: %w", f.path, err)
		}
		if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(f.path, b.Bytes(), 0o644); err != nil {
			return err
		}
	}
	for _, d := range []string{"static-pods", "containerd/run", "cni/ipam", "logs/pods"} {
		if err := os.MkdirAll(c.path(d), 0o755); err != nil {
			return err
		}
	}
	// Pods get a resolv.conf with no upstream: CoreDNS has no forward
	// plugin and nothing in a pod may resolve names outside the cluster.
	return os.WriteFile(c.path("resolv.conf"), []byte("nameserver 127.0.0.1\n"), 0o644)
}
