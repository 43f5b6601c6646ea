package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// savedSysctls are the kernel parameters the cluster changes: the kubelet
// sets the vm/kernel ones every time it starts, the CNI bridge plugin
// enables forwarding, kube-proxy sets the conntrack timeouts. Up saves them
// and Down writes them back.
var savedSysctls = []string{
	"vm.overcommit_memory",
	"vm.panic_on_oom",
	"kernel.panic",
	"kernel.panic_on_oops",
	"kernel.keys.root_maxkeys",
	"kernel.keys.root_maxbytes",
	"net.ipv4.ip_forward",
	"net.ipv4.conf.all.route_localnet",
	"net.bridge.bridge-nf-call-iptables",
	"net.bridge.bridge-nf-call-ip6tables",
	"net.netfilter.nf_conntrack_max",
	"net.netfilter.nf_conntrack_tcp_timeout_established",
	"net.netfilter.nf_conntrack_tcp_timeout_close_wait",
}

// fixedPaths are paths outside the work directory that containerd, the
// kubelet and the CNI plugins create whatever they are told. Up records
// those that did not exist, and Down removes exactly those.
var fixedPaths = []string{
	"/run/containerd",
	"/var/lib/cni",
	"/var/lib/kubelet",
	"/var/log/pods",
	"/var/log/containers",
	"/run/netns",
	"/etc/cni",
	"/opt/cni",
	"/var/lib/containerd",
	"/etc/kubernetes",
	"/var/run/kubernetes",
}

// nodeProcessNames are the command names (as /proc/PID/comm shows them,
// cut to 15 characters) of the node's processes that nothing else on a
// build machine runs. etcd, kube-apiserver, containerd, its shims, runc and
// pause are left out: other tests run their own (envtest, image tests), so
// they are watched only when their command line names the work directory.
var nodeProcessNames = []string{
	"kubelet", "kube-proxy", "kube-controller", "kube-scheduler", "coredns",
}

// hostState is what the cluster may change on the host and must give
// back: Down compares the state after teardown with the one before Up.
type hostState struct {
	Processes []string          `json:"processes"`
	Links     []string          `json:"links"`
	Chains    []string          `json:"chains"`
	NFTables  []string          `json:"nftables"`
	Sysctls   map[string]string `json:"sysctls"`
	Mounts    []string          `json:"mounts"`
	Cgroups   []string          `json:"cgroups"`
	Paths     []string          `json:"paths"`
}

// snapshotHost records the host state relevant to the cluster c.
func snapshotHost(ctx context.Context, c Config) (hostState, error) {
	var s hostState
	var err error
	s.Processes = clusterProcesses(c)
	if s.Links, err = clusterLinks(ctx, c); err != nil {
		return s, err
	}
	if s.Chains, err = iptablesChains(ctx, c); err != nil {
		return s, err
	}
	s.NFTables = nftTables(ctx)
	s.Sysctls = readSysctls()
	s.Mounts = clusterMounts(c)
	s.Cgroups = kubepodsCgroups()
	for _, p := range fixedPaths {
		if _, err := os.Lstat(p); err == nil {
			s.Paths = append(s.Paths, p)
		}
	}
	return s, nil
}

// diff lists, one line each, what differs between before and after.
func (before hostState) diff(after hostState) []string {
	var out []string
	list := func(what string, a, b []string) {
		for _, x := range b {
			if !slices.Contains(a, x) {
				out = append(out, fmt.Sprintf("%s %s is left over", what, x))
			}
		}
		for _, x := range a {
			if !slices.Contains(b, x) {
				out = append(out, fmt.Sprintf("%s %s is gone", what, x))
			}
		}
	}
	list("process", before.Processes, after.Processes)
	list("link", before.Links, after.Links)
	list("iptables", before.Chains, after.Chains)
	list("nftables table", before.NFTables, after.NFTables)
	list("mount", before.Mounts, after.Mounts)
	list("cgroup", before.Cgroups, after.Cgroups)
	list("path", before.Paths, after.Paths)
	for _, k := range sortedKeys(before.Sysctls) {
		if before.Sysctls[k] != after.Sysctls[k] {
			out = append(out, fmt.Sprintf("sysctl %s is %q, was %q", k, after.Sysctls[k], before.Sysctls[k]))
		}
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// clusterProcesses lists the node processes by name, and any process whose
// command line names the work directory, as "NAME" (duplicates kept).
func clusterProcesses(c Config) []string {
	var out []string
	mine := map[int]bool{}
	for _, p := range processesReferencing(c.WorkDir) {
		mine[p.pid] = true
	}
	for pid, st := range allProcesses() {
		if st.state == 'Z' || st.state == 'X' {
			reap(pid)
			continue
		}
		name := processName(pid)
		if mine[pid] || slices.Contains(nodeProcessNames, name) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// clusterLinks lists the root namespace's links that the cluster could
// have created: its bridges, veths (the CNI bridge plugin's host ends) and
// links named kube-* or cni*.
func clusterLinks(ctx context.Context, c Config) ([]string, error) {
	out, err := exec.CommandContext(ctx, "ip", "-o", "link", "show").Output()
	if err != nil {
		return nil, fmt.Errorf("listing links (ip -o link show): %w", err)
	}
	var links []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if name == c.NodeBridge || name == c.CNIBridge || strings.HasPrefix(name, "veth") ||
			strings.HasPrefix(name, "kube-") || strings.HasPrefix(name, "cni") {
			links = append(links, name)
		}
	}
	sort.Strings(links)
	return links, nil
}

// iptablesTools are the iptables front ends whose rules the cluster may
// change: the nf_tables ones kube-proxy and the CNI plugins use, and the
// legacy ones the kubelet probes.
var iptablesTools = []string{"iptables", "ip6tables", "iptables-legacy", "ip6tables-legacy"}

// iptablesChains lists every chain of every table as "TOOL TABLE CHAIN",
// and every rule that names a KUBE- or CNI- chain, the cluster CIDR or one
// of the cluster's bridges as "TOOL TABLE RULE".
func iptablesChains(ctx context.Context, c Config) ([]string, error) {
	var out []string
	markers := []string{"KUBE-", "CNI-", "sluice-e2e", c.ClusterCIDR.String(), c.ServiceCIDR.String(), c.NodeBridge, c.CNIBridge}
	for _, tool := range iptablesTools {
		if _, err := exec.LookPath(tool + "-save"); err != nil {
			continue
		}
		b, err := exec.CommandContext(ctx, tool+"-save").Output()
		if err != nil {
			return nil, fmt.Errorf("%s-save: %w", tool, err)
		}
		table := ""
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "*"):
				table = line[1:]
			case strings.HasPrefix(line, ":"):
				out = append(out, fmt.Sprintf("%s %s %s", tool, table, strings.Fields(line[1:])[0]))
			case strings.HasPrefix(line, "-A "):
				if slices.ContainsFunc(markers, func(m string) bool { return strings.Contains(line, m) }) {
					out = append(out, fmt.Sprintf("%s %s %s", tool, table, line))
				}
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// nftTables lists the nf_tables tables as "FAMILY NAME" (none when nft is
// not installed).
func nftTables(ctx context.Context) []string {
	b, err := exec.CommandContext(ctx, "nft", "list", "tables").Output()
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "table" {
			out = append(out, f[1]+" "+f[2])
		}
	}
	sort.Strings(out)
	return out
}

// nftTableEmpty reports whether the table holds no rule.
func nftTableEmpty(ctx context.Context, familyName string) bool {
	f := strings.Fields(familyName)
	b, err := exec.CommandContext(ctx, "nft", "-j", "list", "table", f[0], f[1]).Output()
	if err != nil {
		return false
	}
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if json.Unmarshal(b, &doc) != nil {
		return false
	}
	for _, o := range doc.Nftables {
		if _, ok := o["rule"]; ok {
			return false
		}
		if _, ok := o["set"]; ok {
			return false
		}
		if _, ok := o["map"]; ok {
			return false
		}
	}
	return true
}

func sysctlPath(name string) string {
	return filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/"))
}

// readSysctls reads the saved sysctls that exist on this kernel.
func readSysctls() map[string]string {
	m := map[string]string{}
	for _, k := range savedSysctls {
		if b, err := os.ReadFile(sysctlPath(k)); err == nil {
			m[k] = strings.TrimSpace(string(b))
		}
	}
	return m
}

// writeSysctls writes m back.
func writeSysctls(m map[string]string) error {
	var errs []error
	for _, k := range sortedKeys(m) {
		cur, err := os.ReadFile(sysctlPath(k))
		if err == nil && strings.TrimSpace(string(cur)) == m[k] {
			continue
		}
		if err := os.WriteFile(sysctlPath(k), []byte(m[k]+"\n"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restoring sysctl %s=%s: %w", k, m[k], err))
		}
	}
	return errors.Join(errs...)
}

// mountPoints lists the mount points of this mount namespace.
func mountPoints() []string {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 {
			// Spaces and other characters are octal-escaped.
			out = append(out, unescapeMount(f[1]))
		}
	}
	return out
}

var octal = regexp.MustCompile(`\\[0-7]{3}`)

func unescapeMount(s string) string {
	return octal.ReplaceAllStringFunc(s, func(e string) string {
		var v byte
		for _, d := range e[1:] {
			v = v*8 + byte(d-'0')
		}
		return string(v)
	})
}

// under reports whether path is dir or inside it.
func under(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// clusterMounts lists the mount points the cluster may create: under the
// work directory, the kubelet's and containerd's fixed directories, and
// CNI network namespaces.
func clusterMounts(c Config) []string {
	var out []string
	for _, m := range mountPoints() {
		if under(m, c.WorkDir) || under(m, "/var/lib/kubelet") || under(m, "/run/containerd") ||
			under(m, "/var/lib/containerd") || strings.HasPrefix(m, "/run/netns/cni-") {
			out = append(out, m)
		}
	}
	sort.Strings(out)
	return out
}

// unmountUnder unmounts everything mounted under dir, deepest first,
// lazily when a plain unmount fails.
func unmountUnder(dir string) error {
	var ms []string
	for _, m := range mountPoints() {
		if under(m, dir) {
			ms = append(ms, m)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(ms)))
	var errs []error
	for _, m := range ms {
		if err := unmount(m); err != nil {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", m, err))
		}
	}
	return errors.Join(errs...)
}

// kubepodsCgroups lists the kubelet's top-level cgroups (kubepods) in
// every hierarchy.
func kubepodsCgroups() []string {
	var out []string
	for _, pattern := range []string{"/sys/fs/cgroup/kubepods*", "/sys/fs/cgroup/*/kubepods*"} {
		ms, _ := filepath.Glob(pattern)
		out = append(out, ms...)
	}
	sort.Strings(out)
	return out
}

// killCgroupProcesses kills with SIGKILL every process in the kubepods
// cgroups (the containers, when containerd is gone).
func killCgroupProcesses() {
	for _, root := range kubepodsCgroups() {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			for _, f := range strings.Fields(string(b)) {
				var pid int
				if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 {
					killPID(pid)
				}
			}
			return nil
		})
	}
}

// removeCgroups removes the kubepods cgroups, deepest first.
func removeCgroups() error {
	var errs []error
	for _, root := range kubepodsCgroups() {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
		for _, d := range dirs {
			if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("removing cgroup %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}
