package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Cluster is a running single-node cluster.
type Cluster struct {
	// Config is the configuration the cluster was brought up with, with
	// every default filled in.
	Config Config
	// Kubeconfig is the path of a cluster-admin kubeconfig.
	Kubeconfig string
	// NodeIP is the node's address; the API server listens on it.
	NodeIP netip.Addr
	// REST is the cluster-admin client configuration.
	REST *rest.Config
	// Client is a cluster-admin clientset.
	Client kubernetes.Interface
}

// components are the processes of the cluster, in start order; Down stops
// them in reverse, the kubelet first.
var components = []string{"containerd", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"}

// Files in the work directory that outlive a run until Down.
const (
	beforeFile       = "host-before.json"  // the host state before Up
	sysctlFile       = "sysctl-orig.json"  // the sysctls before Up
	createdPathsFile = "created-paths.txt" // fixed paths Up created
)

// timeouts for Up's waits: generous, the machine is shared.
const (
	readyTimeout = 3 * time.Minute
	stopGrace    = 10 * time.Second
)

// Open returns a handle on the cluster whose work directory cfg names,
// without checking that it runs or starting anything.
func Open(cfg Config) (*Cluster, error) {
	c, err := cfg.Defaults()
	if err != nil {
		return nil, err
	}
	cl := &Cluster{Config: c, Kubeconfig: c.kubeconfig(), NodeIP: c.NodeIP}
	if _, err := os.Stat(cl.Kubeconfig); err != nil {
		return cl, nil
	}
	rc, err := clientcmd.BuildConfigFromFlags("", cl.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("reading kubeconfig %s: %w", cl.Kubeconfig, err)
	}
	rc.Timeout = 15 * time.Second
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	cl.REST, cl.Client = rc, cs
	return cl, nil
}

// requireRoot fails unless this process runs as root.
func requireRoot(what string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%s needs root (it runs containerd and the kubelet, creates interfaces and iptables rules); run it with sudo", what)
	}
	return nil
}

// binaries lists the executables Up runs, and the hint for each missing one.
func (c Config) binaries() map[string]string {
	node := "build it with hack/kube-node.sh (make e2e-up does)"
	envtest := "build it with hack/envtest.sh (make envtest)"
	deb := "install the Debian package (hack/kube-node.sh does)"
	return map[string]string{
		filepath.Join(c.BinDir, "kubelet"):                 node,
		filepath.Join(c.BinDir, "kube-controller-manager"): node,
		filepath.Join(c.BinDir, "kube-scheduler"):          node,
		filepath.Join(c.BinDir, "kube-proxy"):              node,
		filepath.Join(c.BinDir, "coredns"):                 node,
		filepath.Join(c.EnvtestBinDir, "kube-apiserver"):   envtest,
		filepath.Join(c.EnvtestBinDir, "etcd"):             envtest,
		"/usr/bin/containerd":                              deb + " containerd",
		"/usr/bin/ctr":                                     deb + " containerd",
		"/usr/sbin/runc":                                   deb + " runc",
		filepath.Join(cniBinDir, "bridge"):                 deb + " containernetworking-plugins",
		"/usr/sbin/conntrack":                              deb + " conntrack",
	}
}

func (c Config) checkBinaries() error {
	var errs []error
	for path, hint := range c.binaries() {
		if _, err := os.Stat(path); err != nil {
			errs = append(errs, fmt.Errorf("%s is missing: %s", path, hint))
		}
	}
	return errors.Join(errs...)
}

// Up brings the cluster up and returns once the node and CoreDNS are
// ready, with Config.Images imported. On a cluster that is already up and
// healthy it only imports Config.Images (no process is restarted). A
// leftover of a killed run is torn down first. If Up fails it writes the
// diagnostics to WorkDir/logs/up-failure.txt and tears everything down.
func Up(ctx context.Context, cfg Config) (*Cluster, error) {
	if err := requireRoot("cluster.Up"); err != nil {
		return nil, err
	}
	cl, err := Open(cfg)
	if err != nil {
		return nil, err
	}
	c := cl.Config
	if err := c.checkBinaries(); err != nil {
		return nil, err
	}
	if cl.Healthy(ctx) == nil {
		c.Logger.Info("cluster already up", "workdir", c.WorkDir, "kubeconfig", cl.Kubeconfig)
		// The caller's images may be new to this cluster; importing one
		// that is there changes nothing.
		if err := cl.ImportImages(ctx, c.Images...); err != nil {
			return nil, err
		}
		return cl, nil
	}
	if c.leftover() {
		c.Logger.Info("tearing down the leftover of an earlier run", "workdir", c.WorkDir)
		if err := Down(ctx, cfg); err != nil {
			return nil, fmt.Errorf("tearing down the leftover of an earlier run: %w", err)
		}
	}
	// Another cluster with the same interfaces (another work directory)
	// owns the host's cluster network: fail before changing anything, so
	// that tearing this attempt down cannot touch it.
	for _, l := range []string{c.NodeBridge, c.CNIBridge} {
		if linkExists(ctx, l) {
			return nil, fmt.Errorf("interface %s exists but no cluster of work directory %s runs: another cluster (another work directory, e.g. make e2e-up's ~/.cache/sluice/cluster/run) is up, or a run with another work directory was killed; take it down with e2e-cluster -work-dir DIR down", l, c.WorkDir)
		}
	}
	if err := c.up(ctx); err != nil {
		report := c.path("logs", "up-failure.txt")
		if f, ferr := os.Create(report); ferr == nil {
			if cl, oerr := Open(cfg); oerr == nil {
				cl.Diagnostics(context.WithoutCancel(ctx), f)
			}
			f.Close()
		}
		if derr := Down(context.WithoutCancel(ctx), cfg); derr != nil {
			return nil, fmt.Errorf("%w (diagnostics in %s); tearing down also failed: %v", err, report, derr)
		}
		return nil, fmt.Errorf("%w (diagnostics in %s)", err, report)
	}
	return Open(cfg)
}

// leftover reports whether the work directory holds the state of an
// earlier run. Interfaces alone do not count: they may belong to another
// cluster with the same names, which createNodeBridge then reports.
func (c Config) leftover() bool {
	for _, f := range []string{beforeFile, "pids", createdPathsFile, sysctlFile} {
		if _, err := os.Stat(c.path(f)); err == nil {
			return true
		}
	}
	return false
}

// Healthy reports why the cluster is not usable (a process is not
// running, the API server is not ready, the node is not Ready), or nil.
func (cl *Cluster) Healthy(ctx context.Context) error {
	if cl.Client == nil {
		return fmt.Errorf("no kubeconfig in %s: the cluster was never brought up", cl.Config.WorkDir)
	}
	for _, name := range components {
		if !processRunning(cl.Config, name) {
			return fmt.Errorf("%s is not running", name)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := cl.readyz(ctx); err != nil {
		return err
	}
	return cl.nodeReady(ctx)
}

func (cl *Cluster) readyz(ctx context.Context) error {
	body, err := cl.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("API server /readyz: %w", err)
	}
	if strings.TrimSpace(string(body)) != "ok" {
		return fmt.Errorf("API server /readyz: %s", body)
	}
	return nil
}

func (cl *Cluster) nodeReady(ctx context.Context) error {
	n, err := cl.Client.CoreV1().Nodes().Get(ctx, cl.Config.NodeName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("node %s: %w", cl.Config.NodeName, err)
	}
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			if cond.Status == corev1.ConditionTrue {
				return nil
			}
			return fmt.Errorf("node %s is not Ready: %s: %s", n.Name, cond.Reason, cond.Message)
		}
	}
	return fmt.Errorf("node %s has no Ready condition yet", n.Name)
}

// poll calls check until it returns nil or timeout passes, and returns
// check's last error then.
func poll(ctx context.Context, timeout time.Duration, what string, check func(context.Context) error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not done after %s: %w", what, timeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last: %v)", what, ctx.Err(), err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// stage logs how long a step of Up took.
func (c Config) stage(name string, start time.Time) {
	c.Logger.Info("cluster: "+name, "took", time.Since(start).Round(time.Millisecond))
}

// up starts everything from a clean state.
func (c Config) up(ctx context.Context) error {
	start := time.Now()
	if err := c.resetWorkDir(); err != nil {
		return err
	}
	before, err := snapshotHost(ctx, c)
	if err != nil {
		return err
	}
	if err := writeJSON(c.path(beforeFile), before); err != nil {
		return err
	}
	if err := writeJSON(c.path(sysctlFile), readSysctls()); err != nil {
		return err
	}
	var created []string
	for _, p := range fixedPaths {
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			created = append(created, p)
		}
	}
	if err := os.WriteFile(c.path(createdPathsFile), []byte(strings.Join(created, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	if err := writePKI(c); err != nil {
		return fmt.Errorf("writing the cluster's PKI: %w", err)
	}
	if err := writeConfigs(c); err != nil {
		return err
	}
	if err := createNodeBridge(ctx, c); err != nil {
		return err
	}
	if err := addGuardRules(ctx, c); err != nil {
		return err
	}
	c.stage("host prepared", start)

	t := time.Now()
	images, err := systemImages(ctx, c)
	if err != nil {
		return fmt.Errorf("building the pause and CoreDNS images: %w", err)
	}
	c.stage("system images built", t)

	t = time.Now()
	if err := startProcess(c, "containerd", "/usr/bin/containerd", "--config", c.path("containerd", "config.toml")); err != nil {
		return err
	}
	sock := c.path("containerd", "run", "containerd.sock")
	if err := poll(ctx, time.Minute, "containerd socket "+sock, func(context.Context) error {
		if !processRunning(c, "containerd") {
			return fmt.Errorf("containerd exited; see %s", c.path("logs", "containerd.log"))
		}
		_, err := os.Stat(sock)
		return err
	}); err != nil {
		return err
	}
	if err := importImages(ctx, c, append(images, c.Images...)...); err != nil {
		return err
	}
	c.stage("containerd up, images imported", t)

	t = time.Now()
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", c.EtcdPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", c.EtcdPort+1)
	if err := startProcess(c, "etcd", filepath.Join(c.EnvtestBinDir, "etcd"),
		"--name=default", "--data-dir="+c.path("etcd-data"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL,
		fmt.Sprintf("--listen-metrics-urls=http://127.0.0.1:%d", c.EtcdPort+2),
		"--unsafe-no-fsync"); err != nil {
		return err
	}
	pki := func(f string) string { return c.path("pki", f) }
	if err := startProcess(c, "kube-apiserver", filepath.Join(c.EnvtestBinDir, "kube-apiserver"),
		"--etcd-servers="+etcdURL,
		"--bind-address="+c.NodeIP.String(), "--advertise-address="+c.NodeIP.String(),
		"--secure-port="+strconv.Itoa(c.APIServerPort),
		"--tls-cert-file="+pki("apiserver.crt"), "--tls-private-key-file="+pki("apiserver.key"),
		"--client-ca-file="+pki("ca.crt"),
		"--service-account-key-file="+pki("sa.pub"), "--service-account-signing-key-file="+pki("sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range="+c.ServiceCIDR.String(),
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--kubelet-client-certificate="+pki("apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+pki("apiserver-kubelet-client.key"),
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--allow-privileged=true", "--cert-dir="+c.path("apiserver-certs")); err != nil {
		return err
	}
	cl, err := Open(c)
	if err != nil {
		return err
	}
	if err := poll(ctx, readyTimeout, "API server ready", func(ctx context.Context) error {
		for _, p := range []string{"etcd", "kube-apiserver"} {
			if !processRunning(c, p) {
				return fmt.Errorf("%s exited; see %s", p, c.path("logs", p+".log"))
			}
		}
		return cl.readyz(ctx)
	}); err != nil {
		return err
	}
	c.stage("API server ready", t)

	t = time.Now()
	kc := func(f string) string { return c.path("kubeconfig", f+".conf") }
	if err := startProcess(c, "kube-controller-manager", filepath.Join(c.BinDir, "kube-controller-manager"),
		"--kubeconfig="+kc("kcm"), "--authentication-kubeconfig="+kc("kcm"), "--authorization-kubeconfig="+kc("kcm"),
		"--bind-address=127.0.0.1", "--service-account-private-key-file="+pki("sa.key"),
		"--root-ca-file="+pki("ca.crt"),
		"--cluster-signing-cert-file="+pki("ca.crt"), "--cluster-signing-key-file="+pki("ca.key"),
		"--use-service-account-credentials=true",
		"--service-cluster-ip-range="+c.ServiceCIDR.String(), "--cluster-cidr="+c.ClusterCIDR.String(),
		"--allocate-node-cidrs=false", "--leader-elect=false", "--controllers=*,-nodeipam",
		"--cert-dir="+c.path("kcm-certs")); err != nil {
		return err
	}
	if err := startProcess(c, "kube-scheduler", filepath.Join(c.BinDir, "kube-scheduler"),
		"--kubeconfig="+kc("scheduler"), "--authentication-kubeconfig="+kc("scheduler"),
		"--authorization-kubeconfig="+kc("scheduler"),
		"--bind-address=127.0.0.1", "--leader-elect=false", "--cert-dir="+c.path("scheduler-certs")); err != nil {
		return err
	}
	if err := startProcess(c, "kubelet", filepath.Join(c.BinDir, "kubelet"),
		"--config="+c.path("kubelet-config.yaml"), "--kubeconfig="+kc("kubelet"),
		"--root-dir="+c.path("kubelet-root"), "--cert-dir="+c.path("kubelet-pki"),
		"--hostname-override="+c.NodeName, "--node-ip="+c.NodeIP.String(), "-v=1"); err != nil {
		return err
	}
	if err := ensureProxierBinding(ctx, cl.Client); err != nil {
		return err
	}
	if err := startProcess(c, "kube-proxy", filepath.Join(c.BinDir, "kube-proxy"),
		"--config="+c.path("kube-proxy.yaml")); err != nil {
		return err
	}
	if err := poll(ctx, readyTimeout, "node "+c.NodeName+" Ready", func(ctx context.Context) error {
		for _, p := range components {
			if !processRunning(c, p) {
				return fmt.Errorf("%s exited; see %s", p, c.path("logs", p+".log"))
			}
		}
		return cl.nodeReady(ctx)
	}); err != nil {
		return err
	}
	c.stage("node Ready", t)

	t = time.Now()
	if err := deployCoreDNS(ctx, c, cl.Client); err != nil {
		return err
	}
	if err := poll(ctx, readyTimeout, "CoreDNS available", func(ctx context.Context) error {
		return coreDNSReady(ctx, cl.Client)
	}); err != nil {
		return err
	}
	c.stage("CoreDNS ready", t)
	c.stage("up", start)
	return nil
}

// resetWorkDir empties the work directory, refusing while anything is
// mounted under it (removing it would reach through the mount).
func (c Config) resetWorkDir() error {
	for _, m := range mountPoints() {
		if under(m, c.WorkDir) {
			return fmt.Errorf("%s is mounted inside the work directory %s; run Down (e2e-cluster down) first", m, c.WorkDir)
		}
	}
	if err := os.RemoveAll(c.WorkDir); err != nil {
		return fmt.Errorf("emptying the work directory: %w", err)
	}
	return os.MkdirAll(c.WorkDir, 0o755)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func readJSON(path string, v any) (bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("reading %s: %w", path, err)
	}
	return true, nil
}

// ensureProxierBinding lets kube-proxy (user system:kube-proxy) watch
// Services and EndpointSlices.
func ensureProxierBinding(ctx context.Context, cs kubernetes.Interface) error {
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "sluice-e2e:kube-proxy"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:node-proxier"},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: "system:kube-proxy"}},
	}
	_, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating ClusterRoleBinding %s: %w", crb.Name, err)
	}
	return nil
}

// ImportImages imports OCI image archives (as `ctr images import` reads
// them) into containerd's k8s.io namespace, where the kubelet finds them.
func (cl *Cluster) ImportImages(ctx context.Context, tars ...string) error {
	return importImages(ctx, cl.Config, tars...)
}

func importImages(ctx context.Context, c Config, tars ...string) error {
	sock := c.path("containerd", "run", "containerd.sock")
	for _, t := range tars {
		if _, err := os.Stat(t); err != nil {
			return fmt.Errorf("image archive %s: %w", t, err)
		}
		out, err := exec.CommandContext(ctx, "ctr", "--address", sock, "--namespace", "k8s.io", "images", "import", t).CombinedOutput()
		if err != nil {
			return fmt.Errorf("importing image archive %s (ctr images import): %w: %s", t, err, strings.TrimSpace(string(out)))
		}
		c.Logger.Debug("imported image", "archive", t)
	}
	return nil
}

// Down tears the cluster down and gives the host back: it stops the
// processes recorded in the work directory and their children, the
// containers, unmounts what is mounted under the work directory, deletes
// the interfaces, iptables chains and cgroups the cluster created,
// restores the sysctls and removes the fixed paths Up created. It works on
// the leftover of a killed run too, and on nothing at all. When Up saved
// the host state, Down compares it with the state after teardown and
// returns an error listing every difference.
func Down(ctx context.Context, cfg Config) error {
	if err := requireRoot("cluster.Down"); err != nil {
		return err
	}
	c, err := cfg.Defaults()
	if err != nil {
		return err
	}
	start := time.Now()
	var before hostState
	haveBefore, err := readJSON(c.path(beforeFile), &before)
	if err != nil {
		return err
	}
	var errs []error
	// The kubelet first, so that it restarts nothing; containerd last but
	// for the containers.
	for i := len(components) - 1; i >= 1; i-- {
		grace := stopGrace
		if components[i] == "kube-apiserver" {
			// Its graceful shutdown drains requests for longer than a
			// teardown needs to wait; etcd's data goes anyway.
			grace = 2 * time.Second
		}
		if err := stopProcess(ctx, c, components[i], grace); err != nil {
			errs = append(errs, err)
		}
	}
	killCgroupProcesses()
	if err := stopProcess(ctx, c, "containerd", stopGrace); err != nil {
		errs = append(errs, err)
	}
	// containerd's shims outlive it; they name the work directory.
	for _, p := range processesReferencing(c.WorkDir) {
		if err := terminate(ctx, p.pid, p.startTime, stopGrace); err != nil {
			errs = append(errs, fmt.Errorf("stopping PID %d (%s): %w", p.pid, processName(p.pid), err))
		}
	}
	// Container processes die asynchronously after SIGKILL.
	_ = poll(ctx, stopGrace, "containers gone", func(context.Context) error {
		killCgroupProcesses()
		if err := removeCgroups(); err != nil {
			return err
		}
		return nil
	})
	if err := unmountUnder(c.WorkDir); err != nil {
		errs = append(errs, err)
	}
	if err := deleteLinks(ctx, c); err != nil {
		errs = append(errs, err)
	}
	if err := removeIptables(ctx, c, before.Chains); err != nil {
		errs = append(errs, err)
	}
	if haveBefore {
		if err := removeNewNFTables(ctx, before.NFTables); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeCgroups(); err != nil {
		errs = append(errs, err)
	}
	var sysctls map[string]string
	if ok, err := readJSON(c.path(sysctlFile), &sysctls); err != nil {
		errs = append(errs, err)
	} else if ok {
		if err := writeSysctls(sysctls); err != nil {
			errs = append(errs, err)
		}
	}
	if b, err := os.ReadFile(c.path(createdPathsFile)); err == nil {
		for _, p := range strings.Fields(string(b)) {
			if !filepath.IsAbs(p) || !slices.Contains(fixedPaths, p) {
				errs = append(errs, fmt.Errorf("%s lists %q, which is not a path the cluster creates; not removing it", createdPathsFile, p))
				continue
			}
			if err := unmountUnder(p); err != nil {
				errs = append(errs, err)
			}
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, fmt.Errorf("removing %s (created by Up): %w", p, err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tearing down the cluster in %s: %w", c.WorkDir, err)
	}
	for _, f := range []string{createdPathsFile, sysctlFile, "pids"} {
		_ = os.RemoveAll(c.path(f))
	}
	if haveBefore {
		after, err := snapshotHost(ctx, c)
		if err != nil {
			return err
		}
		if d := before.diff(after); len(d) > 0 {
			return fmt.Errorf("the host differs from before Up (the record stays in %s):\n  %s", c.path(beforeFile), strings.Join(d, "\n  "))
		}
		if err := os.Remove(c.path(beforeFile)); err != nil {
			return err
		}
	}
	c.stage("down", start)
	return nil
}
