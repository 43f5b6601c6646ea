// Package cluster runs a real single-node Kubernetes cluster on this
// machine for end-to-end tests: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, containerd with runc, the
// kubelet, kube-proxy (iptables mode) and CoreDNS (a Deployment behind
// Service kube-system/kube-dns), all v1.37.2 built from the Go module proxy
// by hack/envtest.sh and hack/kube-node.sh, with images built by
// hack/images/oci and imported without a registry.
//
// Up brings the cluster up (a no-op when it already runs) and returns the
// admin kubeconfig and the node IP; Down stops it and gives the host back.
// Both need root. Everything the cluster writes lives in Config.WorkDir
// (default ~/.cache/sluice/cluster/run): PKI generated in Go, kubeconfigs,
// configs, etcd data, containerd and kubelet state, logs, and the PIDs of
// the processes (started detached, so the cluster outlives the command
// that started it).
//
// What the cluster changes on the host, and how Down undoes it:
//
//   - processes: stopped by their recorded PID (checked against the start
//     time, so a reused PID is never signalled) with their descendants;
//     the containers by their kubepods cgroups; containerd's shims by their
//     command line naming the work directory;
//   - mounts under the work directory: unmounted, deepest first;
//   - interfaces: the node bridge carrying NodeIP, the CNI bridge and its
//     veths are deleted;
//   - iptables: the guard rules Up inserts (pod traffic is never forwarded
//     to or from the uplink, and nothing for a pod or a ClusterIP leaves
//     through it) and every KUBE-* and CNI-* chain that was not there
//     before are deleted, in the nf_tables and legacy front ends, IPv4 and
//     IPv6; nf_tables tables that appeared and are empty are deleted;
//   - sysctls the kubelet, the CNI bridge and kube-proxy set: written back;
//   - fixed paths the components create wherever they are told
//     (/run/containerd, /var/lib/cni, /var/lib/kubelet, /var/log/pods, ...):
//     removed if Up recorded that it created them;
//   - the kubelet's kubepods cgroups: removed.
//
// Up saves a snapshot of that host state before it changes anything; Down
// compares it with the state after teardown and returns an error listing
// every difference. Down also cleans up after a run that was killed.
//
// The command ./cmd/e2e-cluster (make e2e-up, make e2e-down) drives it by
// hand. TestCluster runs it for real when SLUICE_E2E_CLUSTER=1 or
// SLUICE_REQUIRE_CLUSTER=1 (the latter fails instead of skipping when not
// root).
package cluster
