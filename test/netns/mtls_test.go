package netns

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluicehq/sluice/mesh/api/meshv1"
	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/mesh/cptls"
	"github.com/sluicehq/sluice/mesh/destination"
	meshidentity "github.com/sluicehq/sluice/mesh/identity"
	"github.com/sluicehq/sluice/mesh/localstore"
	meshpolicy "github.com/sluicehq/sluice/mesh/policy"
	"github.com/sluicehq/sluice/proxy/config"
	"github.com/sluicehq/sluice/proxy/policy"
)

// meshNamespace is the Kubernetes namespace of the mesh test's workloads.
const meshNamespace = "netns"

// directPort is where pod b runs a second server that its init rules leave
// alone inbound (--inbound-ports-to-ignore).
const directPort = 9091

// podNetwork is a node's pod network: a bridge in a "node" namespace joining
// the pods' eth0 interfaces and one veth to the host namespace, whose host end
// has the first address of a /24 that exists only here. The control plane
// runs in the test process on that address, as on another machine of the
// pods' network. No packet is forwarded by the host.
type podNetwork struct {
	node   *netns
	prefix string // "10.a.b.": the /24 without its last byte
	hostIf string // the host end of the veth to the bridge
}

// addr is the address ending in last in the network's /24.
func (n *podNetwork) addr(last int) string { return n.prefix + strconv.Itoa(last) }

// hostIP is the host end's address, where the test process listens.
func (n *podNetwork) hostIP() string { return n.addr(1) }

// pickPrefix returns a random "10.a.b." whose /24 overlaps no route of the
// host namespace (its local routes include its own addresses).
func pickPrefix(t *testing.T) string {
	t.Helper()
	var routes []struct {
		Dst string `json:"dst"`
	}
	decodeJSON(t, run(t, "ip", "-j", "-4", "route", "show", "table", "all"), &routes)
	var taken []netip.Prefix
	for _, r := range routes {
		p, err := netip.ParsePrefix(r.Dst)
		if err != nil {
			a, err := netip.ParseAddr(r.Dst)
			if err != nil {
				continue // "default" and the like
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		taken = append(taken, p)
	}
	for range 100 {
		a, b := 64+rand.IntN(191), rand.IntN(256)
		candidate := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(a), byte(b), 0}), 24)
		if !slices.ContainsFunc(taken, candidate.Overlaps) {
			return fmt.Sprintf("10.%d.%d.", a, b)
		}
	}
	t.Fatalf("found no 10.a.b.0/24 for the pod network that overlaps no host route: %v", taken)
	return ""
}

// hostInterface names the host end of this test process's pod network.
func hostInterface() string { return fmt.Sprintf("slh%d", os.Getpid()) }

// newPodNetwork creates the node namespace, its bridge and the veth to the
// host. Everything is deleted when the test ends, and checked gone.
func newPodNetwork(t *testing.T, prefix string) *podNetwork {
	t.Helper()
	n := &podNetwork{node: newNetns(t, "node"), prefix: prefix, hostIf: hostInterface()}
	n.node.run(t, "ip", "link", "add", "br0", "type", "bridge")
	n.node.run(t, "ip", "link", "set", "br0", "up")
	// Created in the host with its peer in the node namespace; deleting
	// either end deletes both, and deleting the node namespace (as the sweep
	// of a killed run does) deletes the pair too.
	run(t, "ip", "link", "add", n.hostIf, "type", "veth", "peer", "name", "host", "netns", n.node.name)
	t.Cleanup(func() {
		if exec.Command("ip", "link", "show", n.hostIf).Run() == nil {
			if out, err := exec.Command("ip", "link", "del", n.hostIf).CombinedOutput(); err != nil {
				t.Errorf("ip link del %s: %v\n%s", n.hostIf, err, out)
			}
		}
		if exec.Command("ip", "link", "show", n.hostIf).Run() == nil {
			t.Errorf("host interface %s still exists after deletion", n.hostIf)
		}
	})
	run(t, "ip", "addr", "add", n.hostIP()+"/24", "dev", n.hostIf)
	run(t, "ip", "link", "set", n.hostIf, "up")
	n.node.run(t, "ip", "link", "set", "host", "master", "br0")
	n.node.run(t, "ip", "link", "set", "host", "up")
	return n
}

// attach gives ns an eth0 on the bridge with address ip/24.
func (n *podNetwork) attach(t *testing.T, ns *netns, port, ip string) {
	t.Helper()
	n.node.run(t, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns.name)
	n.node.run(t, "ip", "link", "set", port, "master", "br0")
	n.node.run(t, "ip", "link", "set", port, "up")
	ns.run(t, "ip", "addr", "add", ip+"/24", "dev", "eth0")
	ns.run(t, "ip", "link", "set", "eth0", "up")
}

// hostTraces returns what the host namespace shows of Sluice and of the pod
// network: rules that name Sluice or the subnet in every iptables backend,
// and the addresses, routes and links that name the subnet or the host
// interface. Other tests may change the host meanwhile; these lines are this
// run's.
func hostTraces(t *testing.T, prefix, hostIf string) []string {
	t.Helper()
	var out []string
	// Only this run's subnet and interface: a concurrent run has its own,
	// and `ip link` names the namespaces of veth peers (sluicetest-...).
	mine := func(line string) bool {
		return strings.Contains(line, prefix) || strings.Contains(line, hostIf)
	}
	sluiceRule := func(line string) bool {
		return strings.Contains(strings.ToLower(line), "sluice") || mine(line)
	}
	for _, save := range []string{"iptables-save", "ip6tables-save", "iptables-nft-save", "ip6tables-nft-save", "iptables-legacy-save", "ip6tables-legacy-save"} {
		if _, err := exec.LookPath(save); err != nil {
			continue
		}
		b, err := exec.Command(save).Output()
		if err != nil {
			t.Errorf("%s in the host namespace: %v", save, err)
			continue
		}
		for line := range strings.Lines(string(b)) {
			if !strings.HasPrefix(line, "#") && sluiceRule(line) {
				out = append(out, save+": "+strings.TrimSpace(line))
			}
		}
	}
	for _, args := range [][]string{{"-o", "addr"}, {"route", "show", "table", "all"}, {"-6", "route", "show", "table", "all"}, {"-o", "link"}} {
		b, err := exec.Command("ip", args...).Output()
		if err != nil {
			t.Errorf("ip %s: %v", strings.Join(args, " "), err)
			continue
		}
		for line := range strings.Lines(string(b)) {
			if mine(line) {
				out = append(out, "ip "+strings.Join(args, " ")+": "+strings.TrimSpace(line))
			}
		}
	}
	return out
}

// checkHostRestored records the host's traces now and, when the test ends
// (after everything else is torn down), fails it unless they are the same.
func checkHostRestored(t *testing.T, prefix, hostIf string) {
	t.Helper()
	before := hostTraces(t, prefix, hostIf)
	t.Cleanup(func() {
		// Deleted namespaces free their interfaces asynchronously.
		var after []string
		deadline := time.Now().Add(20 * time.Second)
		for {
			after = hostTraces(t, prefix, hostIf)
			if slices.Equal(before, after) || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond) // the kernel gives no event to wait on here
		}
		if !slices.Equal(before, after) {
			t.Errorf("the host namespace was not restored:\n--- before\n%s\n--- after\n%s",
				strings.Join(before, "\n"), strings.Join(after, "\n"))
		}
	})
}

// meshControlPlane is the identity, destination and inbound policy APIs over
// a local store, served by the test process on the host end of the pod
// network. Its default inbound policy is all-authenticated.
type meshControlPlane struct {
	addr    string
	anchors []byte // PEM trust anchors
	tokens  *meshidentity.StaticTokens
	store   *localstore.Store

	mu    sync.Mutex
	peers map[string]bool // client IPs that connected
}

// startControlPlane serves the control plane on ip, port chosen by the OS,
// until the test ends. It serves TLS with a certificate for
// netnsControlPlaneName, as `sluice up`'s control plane does.
func startControlPlane(t *testing.T, ip string) *meshControlPlane {
	t.Helper()
	ca, err := meshidentity.LoadOrCreate(filepath.Join(t.TempDir(), "ca"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("control plane on the host end of the pod network: %v", err)
	}
	cp := &meshControlPlane{
		addr:    ln.Addr().String(),
		anchors: ca.TrustAnchorPEM(),
		tokens:  &meshidentity.StaticTokens{},
		store:   localstore.New(),
		peers:   map[string]bool{},
	}
	w := &testLogWriter{t: t}
	t.Cleanup(func() { // runs after the server has stopped
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
	self, err := meshidentity.NewSelfCertificate(ca, netnsControlPlaneName, 0)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(cptls.ServerOptions(ca.TrustAnchors(), self.GetCertificate, cptls.MeshOnlyServices...)...)
	dest := destination.NewServer(cp.store, log)
	meshv1.RegisterDestinationServer(srv, dest)
	meshv1.RegisterIdentityServer(srv, meshidentity.NewServer(ca, cp.tokens, 0))
	identityOf := func(sa, ns string) string { return meshidentity.Name(sa, ns, "", "") }
	policies := meshpolicy.NewServer(cp.store, policy.AllAuthenticated, nil, identityOf, log)
	meshv1.RegisterInboundPoliciesServer(srv, policies)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(&recordingListener{Listener: ln, record: cp.recordPeer})
	}()
	t.Cleanup(func() {
		dest.Close() // their streams wait for changes: end them
		policies.Close()
		srv.Stop()
		<-done
	})
	return cp
}

func (cp *meshControlPlane) recordPeer(a net.Addr) {
	host, _, _ := net.SplitHostPort(a.String())
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.peers[host] = true
}

// connected reports whether a client from ip has connected.
func (cp *meshControlPlane) connected(ip string) bool {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.peers[ip]
}

// recordingListener reports the remote address of every accepted connection.
type recordingListener struct {
	net.Listener
	record func(net.Addr)
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.record(c.RemoteAddr())
	}
	return c, err
}

// testLogWriter passes the control plane's log lines to t.Log until the
// test ends.
type testLogWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func (w *testLogWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(b), "\n"))
	}
	return len(b), nil
}

// startEchoServer serves, on ip (port chosen by the OS) until the test ends,
// the client's address as the JSON {"remote": ...}.
func startEchoServer(t *testing.T, ip string) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_ = json.NewEncoder(w).Encode(echoReply{Remote: r.RemoteAddr})
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// meshedPod is a pod of the mesh test: its workload and mesh identity.
type meshedPod struct {
	*pod
	workload string
	identity string
}

// meshProxyConfig is a meshed pod's proxy configuration, as the injector
// would write it: the standard ports, inbound connections forwarded to
// their original destination (the application on loopback for connections
// made to the proxy itself), every
// inbound connection required to be mutually authenticated until the
// control plane says otherwise, and the control plane on the host end of
// the pod network. watch lists the services it discovers up front.
func meshProxyConfig(t *testing.T, p *meshedPod, cp *meshControlPlane, tokenFile, anchorsFile string, watch ...string) []byte {
	t.Helper()
	cfg := config.Config{
		Admin: fmt.Sprintf(":%d", adminPort),
		Inbound: config.Inbound{
			Listen:        fmt.Sprintf(":%d", inboundPort),
			App:           fmt.Sprintf("127.0.0.1:%d", appPort),
			OriginalDst:   true,
			DefaultPolicy: policy.AllAuthenticated,
		},
		Outbound:      config.Outbound{Listen: fmt.Sprintf("127.0.0.1:%d", outboundPort)},
		Labels:        map[string]string{"namespace": meshNamespace, "deployment": p.workload, "pod": p.workload + "-" + p.name},
		ShutdownGrace: routetable.Duration(5 * time.Second),
		ControlPlane: &config.ControlPlane{
			Address:         cp.addr,
			DestinationName: netnsControlPlaneName,
			Identity:        p.identity,
			TokenFile:       tokenFile,
			TrustAnchors:    anchorsFile,
			Namespace:       meshNamespace,
			Workload:        meshNamespace + "/" + p.workload + "-" + p.name,
			Watch:           watch,
		},
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := config.Parse(data); err != nil {
		t.Fatalf("proxy configuration for %s: %v\n%s", p.name, err, data)
	}
	return data
}

// meshSetup is the mesh test's node: the pod network, the control plane,
// the meshed pods a (frontend) and b (backend), the unmeshed pod c (a
// legacy server the control plane knows without identity), and two echo
// servers of the test process on the host end.
type meshSetup struct {
	net       *podNetwork
	cp        *meshControlPlane
	a, b      *meshedPod
	c         *pod
	clusterIP string // the backend Service's virtual IP: no interface has it
	// skippedPort and passedPort are echo servers on the host end; pod a's
	// init rules let connections to skippedPort bypass its proxy.
	skippedPort, passedPort int
}

// backendAuthority is how an application names the backend Service.
func (m *meshSetup) backendAuthority() string {
	return fmt.Sprintf("backend.%s.svc.cluster.local:%d", meshNamespace, appPort)
}

// startMesh builds the node: pods joined by a bridge, the control plane in
// the test process on the host end, `sluice-proxy init`'s rules in pods a
// and b, the applications, and the proxies as UID 2102 with certificates
// from the control plane. It returns once both proxies are ready. Everything
// is removed when the test ends, even on failure, and the host is checked
// to be as it was.
func startMesh(t *testing.T) *meshSetup {
	t.Helper()
	requireNetns(t, "iptables")
	prefix := pickPrefix(t)
	m := &meshSetup{}
	checkHostRestored(t, prefix, hostInterface()) // first registered: checked last
	bins := buildBinaries(t)
	dir := sharedTempDir(t)

	m.net = newPodNetwork(t, prefix)
	// The host check sees the pod network while it exists.
	if traces := hostTraces(t, prefix, hostInterface()); !slices.ContainsFunc(traces, func(l string) bool { return strings.Contains(l, m.net.hostIP()) }) {
		t.Fatalf("the host check does not see %s on %s:\n%s", m.net.hostIP(), hostInterface(), strings.Join(traces, "\n"))
	}
	m.cp = startControlPlane(t, m.net.hostIP())
	m.skippedPort = startEchoServer(t, m.net.hostIP())
	m.passedPort = startEchoServer(t, m.net.hostIP())
	m.clusterIP = m.net.addr(200)

	m.a = &meshedPod{pod: &pod{netns: newNetns(t, "a"), name: "a", ip: m.net.addr(2)}, workload: "frontend"}
	m.b = &meshedPod{pod: &pod{netns: newNetns(t, "b"), name: "b", ip: m.net.addr(3)}, workload: "backend"}
	m.c = &pod{netns: newNetns(t, "c"), name: "c", ip: m.net.addr(4)}
	for _, p := range []*pod{m.a.pod, m.b.pod, m.c} {
		m.net.attach(t, p.netns, "veth-"+p.name, p.ip)
	}
	// Every pod reaches the control plane before any rule is installed.
	for _, p := range []*pod{m.a.pod, m.b.pod} {
		p.run(t, "ip", "route", "get", m.net.hostIP())
	}

	// What the injector's init container does, with each pod's skip ports.
	initArgs := func(extra ...string) []string {
		return append([]string{"init",
			"--proxy-uid", strconv.Itoa(proxyUID),
			"--inbound-port", strconv.Itoa(inboundPort),
			"--outbound-port", strconv.Itoa(outboundPort),
			"--admin-port", strconv.Itoa(adminPort)}, extra...)
	}
	m.a.run(t, bins.proxy, initArgs("--outbound-ports-to-ignore", strconv.Itoa(m.skippedPort))...)
	m.b.run(t, bins.proxy, initArgs("--inbound-ports-to-ignore", strconv.Itoa(directPort))...)

	// The control plane knows both workloads: a Service for each, and each
	// pod as a ready replica at its pod address with its identity.
	for _, p := range []*meshedPod{m.a, m.b} {
		p.identity = meshidentity.Name(p.workload, meshNamespace, "", "")
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: p.workload, Namespace: meshNamespace},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": p.workload},
				Ports:    []corev1.ServicePort{{Name: "http", Port: appPort}},
			},
		}
		if p == m.b {
			svc.Spec.ClusterIP = m.clusterIP
		}
		m.cp.store.ApplyService(svc)
		m.cp.store.SetReplica(localstore.Replica{
			Namespace: meshNamespace, Workload: p.workload, Pod: p.workload + "-" + p.name, Revision: "1",
			Labels:   map[string]string{"app": p.workload},
			Address:  net.JoinHostPort(p.ip, strconv.Itoa(appPort)),
			Identity: p.identity,
			Ready:    true,
		})
	}

	// Pod c runs no proxy: the control plane knows it as a replica with no
	// identity, as it knows an unmeshed pod.
	m.cp.store.SetReplica(localstore.Replica{
		Namespace: meshNamespace, Workload: "legacy", Pod: "legacy-" + m.c.name, Revision: "1",
		Labels:  map[string]string{"app": "legacy"},
		Address: net.JoinHostPort(m.c.ip, strconv.Itoa(appPort)),
		Ready:   true,
	})

	// The applications know nothing of the proxy: they listen on every
	// address, and the frontend calls the backend Service's cluster IP.
	appArgs := func(name, version string, port int) []string {
		return []string{bins.app, "--name", name, "--version", version, "--listen", fmt.Sprintf("0.0.0.0:%d", port)}
	}
	m.b.procs = append(m.b.procs,
		m.b.start(t, dir, "b-app", []string{"POD_NAME=backend-b"}, appArgs("backend", "b-v1", appPort)...),
		m.b.start(t, dir, "b-app-direct", []string{"POD_NAME=backend-b"}, appArgs("backend-direct", "b-direct", directPort)...))
	m.a.procs = append(m.a.procs,
		m.a.start(t, dir, "a-app", []string{"POD_NAME=frontend-a", "BACKEND_SERVICE_HOST=" + m.clusterIP, "BACKEND_SERVICE_PORT=" + strconv.Itoa(appPort)},
			appArgs("frontend", "a-v1", appPort)...))
	m.c.procs = append(m.c.procs, m.c.start(t, dir, "c-app", []string{"POD_NAME=legacy-c"}, appArgs("legacy", "c-v1", appPort)...))

	anchorsFile := filepath.Join(dir, "trust-anchors.pem")
	if err := os.WriteFile(anchorsFile, m.cp.anchors, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, pw := range []struct {
		p     *meshedPod
		watch []string
	}{
		// No watch list, as the injector writes none: pod a's proxy asks the
		// control plane about the backend's cluster IP at its first
		// connection there.
		{m.a, nil},
		{m.b, nil},
	} {
		p := pw.p
		token, err := m.cp.tokens.Issue(p.identity)
		if err != nil {
			t.Fatal(err)
		}
		// The token is the proxy's alone, as a projected token would be.
		tokenFile := filepath.Join(dir, p.name+".token")
		if err := os.WriteFile(tokenFile, token, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(tokenFile, proxyUID, proxyUID); err != nil {
			t.Fatal(err)
		}
		cfgPath := filepath.Join(dir, p.name+"-proxy.json")
		if err := os.WriteFile(cfgPath, meshProxyConfig(t, p, m.cp, tokenFile, anchorsFile, pw.watch...), 0o644); err != nil {
			t.Fatal(err)
		}
		p.procs = append(p.procs, p.start(t, dir, p.name+"-proxy", nil,
			"setpriv", "--reuid", strconv.Itoa(proxyUID), "--regid", strconv.Itoa(proxyUID), "--clear-groups", "--pdeathsig", "KILL",
			bins.proxy, "--config", cfgPath, "--log-level", "debug"))
	}

	// Ready means certified by the identity API and synced with the
	// destination API: both over the pod network, as UID 2102.
	for _, p := range []*pod{m.a.pod, m.b.pod} {
		for _, u := range []string{
			fmt.Sprintf("http://127.0.0.1:%d/ready", adminPort),
			fmt.Sprintf("http://127.0.0.1:%d/healthz", appPort),
		} {
			if status, body := p.get(t, u, 1, readyWait, p.procs...); status != http.StatusOK {
				t.Fatalf("pod %s: %s answered %d: %s", p.name, u, status, body)
			}
		}
	}
	if status, body := m.b.get(t, fmt.Sprintf("http://127.0.0.1:%d/healthz", directPort), 1, readyWait, m.b.procs...); status != http.StatusOK {
		t.Fatalf("pod b: the server on the port skipped inbound answered %d: %s", status, body)
	}
	if status, body := m.c.get(t, fmt.Sprintf("http://127.0.0.1:%d/healthz", appPort), 1, readyWait, m.c.procs...); status != http.StatusOK {
		t.Fatalf("pod c: the application answered %d: %s", status, body)
	}
	return m
}

// series is a counter of a pod's proxy: the sum of the metric's series whose
// labels include labels.
type series struct {
	pod    *pod
	metric string
	labels map[string]string
}

func (s series) String() string {
	keys := make([]string, 0, len(s.labels))
	for k, v := range s.labels {
		keys = append(keys, k+"="+strconv.Quote(v))
	}
	slices.Sort(keys)
	return fmt.Sprintf("pod %s %s{%s}", s.pod.name, s.metric, strings.Join(keys, ","))
}

// measure scrapes every pod once and returns each series' value by name.
func measure(t *testing.T, ss []series) map[string]float64 {
	t.Helper()
	scraped := map[*pod]bool{}
	out := map[string]float64{}
	for _, s := range ss {
		if scraped[s.pod] {
			continue
		}
		scraped[s.pod] = true
		fams := s.pod.scrape(t, adminPort)
		for _, o := range ss {
			if o.pod == s.pod {
				out[o.String()] = sum(fams, o.metric, o.labels)
			}
		}
	}
	return out
}

// growth is by how much a series must grow.
type growth struct {
	series
	by float64
}

// expectGrowth waits until every series has grown by at least its amount
// since before, then requires exactly that amount: more would mean a
// connection or request was counted twice (the proxy's own connection
// looped back into it) or went where it should not.
func expectGrowth(t *testing.T, before map[string]float64, want ...growth) {
	t.Helper()
	ss := seriesOf(want)
	deadline := time.Now().Add(20 * time.Second)
	var now map[string]float64
	for {
		now = measure(t, ss)
		done := true
		for _, g := range want {
			if now[g.String()]-before[g.String()] < g.by {
				done = false
			}
		}
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond) // metrics live in other processes: poll
	}
	for _, g := range want {
		if got := now[g.String()] - before[g.String()]; got != g.by {
			t.Errorf("%s grew by %v, want %v", g, got, g.by)
		}
	}
}

// seriesOf lists the series of want, to measure before the action.
func seriesOf(want []growth) []series {
	ss := make([]series, len(want))
	for i, g := range want {
		ss[i] = g.series
	}
	return ss
}

// hostOf is the host part of a host:port.
func hostOf(addr string) string {
	host, _, _ := net.SplitHostPort(addr)
	return host
}

// TestMutualTLSInterception runs a node as Kubernetes would: pods as network
// namespaces on a bridge, each meshed pod with `sluice-proxy init`'s rules
// and a proxy running as UID 2102 that gets its certificate and its services
// from a control plane on the host end of the pod network. The
// applications call each other's plain addresses; the tests check from the
// proxies' metrics and the applications' answers that the traffic went
// through both proxies over mutual TLS (to a Service's cluster IP and to a
// bare pod address alike), that the proxies' own traffic is not
// intercepted, that skipped ports bypass the proxies, that an unmeshed pod
// is reached in plain text and that a client outside the mesh is refused by
// the backend's all-authenticated policy.
func TestMutualTLSInterception(t *testing.T) {
	m := startMesh(t)
	a, b, c := m.a, m.b, m.c
	total := func(p *pod, metric, direction string) series {
		return series{p, metric, map[string]string{"direction": direction}}
	}
	mtlsOut := series{a.pod, "request_total", map[string]string{"direction": "outbound", "tls": "true", "server_id": b.identity}}
	mtlsIn := series{b.pod, "request_total", map[string]string{"direction": "inbound", "tls": "true", "client_id": a.identity}}
	// Linkerd's labels for a request sent in plain text because discovery
	// gave no identity for its destination.
	plainOut := series{a.pod, "request_total", map[string]string{"direction": "outbound", "tls": "no_identity", "no_tls_reason": "not_provided_by_service_discovery"}}
	// The control plane's default policy for pod b's port.
	allowed := series{b.pod, "inbound_http_authz_allow_total", map[string]string{"srv_kind": "default", "srv_name": policy.AllAuthenticated}}
	denied := series{b.pod, "inbound_http_authz_deny_total", map[string]string{"srv_kind": "default", "srv_name": policy.AllAuthenticated}}
	aConnsOut := total(a.pod, "protocol_detect_total", "outbound")
	bConnsIn := total(b.pod, "protocol_detect_total", "inbound")

	t.Run("proxies reach the control plane without intercepting themselves", func(t *testing.T) {
		for _, p := range []*meshedPod{a, b} {
			if !m.cp.connected(p.ip) {
				t.Errorf("the control plane saw no connection from pod %s's address %s", p.name, p.ip)
			}
			// The proxy is certified and synced, over connections from
			// UID 2102 that its outbound listener never saw.
			now := measure(t, []series{
				{p.pod, "identity_cert_refreshes_total", nil},
				total(p.pod, "protocol_detect_total", "outbound"),
			})
			if got := now[series{p.pod, "identity_cert_refreshes_total", nil}.String()]; got < 1 {
				t.Errorf("pod %s's proxy has no certificate (identity_cert_refreshes_total %v)", p.name, got)
			}
			if got := now[total(p.pod, "protocol_detect_total", "outbound").String()]; got != 0 {
				t.Errorf("pod %s's outbound listener served %v connections before any application traffic: the proxy's own connections were intercepted", p.name, got)
			}
		}
	})

	t.Run("frontend calls the backend's cluster IP over mutual TLS", func(t *testing.T) {
		want := []growth{
			{mtlsOut, 1}, {total(a.pod, "request_total", "outbound"), 1},
			{mtlsIn, 1}, {total(b.pod, "request_total", "inbound"), 1}, {allowed, 1},
			{total(a.pod, "request_total", "inbound"), 0}, {total(b.pod, "request_total", "outbound"), 0},
		}
		before := measure(t, seriesOf(want))
		// The frontend application, asked on loopback, calls
		// http://<cluster IP>:8080/: an address no interface has, which
		// only pod a's proxy can resolve.
		status, body := a.get(t, a.url(appPort, "/"), 1, 0)
		if status != http.StatusOK {
			t.Fatalf("GET / of the frontend: %d %s", status, body)
		}
		var got frontendReply
		decodeJSON(t, body, &got)
		if got.Backend == nil || got.Backend.Service != "backend" || got.Backend.Version != "b-v1" {
			t.Errorf("frontend answered %s, want the backend b-v1 behind it", body)
		}
		expectGrowth(t, before, want...)
	})

	t.Run("pod address with the service's name over mutual TLS", func(t *testing.T) {
		// A client that looked up a headless Service connects to the pod
		// address and names the Service as its authority. It also forges
		// sluice-client-id, which the proxies must replace.
		const n = 3
		want := []growth{
			{mtlsOut, n}, {aConnsOut, n}, {plainOut, 0},
			{mtlsIn, n}, {total(b.pod, "request_total", "inbound"), n}, {allowed, n},
		}
		before := measure(t, seriesOf(want))
		forged := meshidentity.Name("admin", "kube-system", "", "")
		r := a.request(t, helperRequest{url: b.url(appPort, "/echo"), count: n, headers: map[string]string{
			"Host":             m.backendAuthority(),
			"Sluice-Client-Id": forged,
		}})
		if r.status != http.StatusOK {
			t.Fatalf("GET %s from pod a: %d %s %s", b.url(appPort, "/echo"), r.status, r.proxyError, r.body)
		}
		var echo struct {
			echoReply
			Headers http.Header `json:"headers"`
		}
		decodeJSON(t, r.body, &echo)
		if echo.Version != "b-v1" {
			t.Errorf("answered by %q, want the backend b-v1", echo.Version)
		}
		// Pod b's application sees its own proxy, never pod a.
		// Its proxy forwards to the port pod a dialled, on loopback
		// (inbound.originalDst).
		if host := hostOf(echo.Remote); host != "127.0.0.1" {
			t.Errorf("the backend saw client %s, want 127.0.0.1 (pod b's inbound proxy), not pod a's %s", echo.Remote, a.ip)
		}
		if ids := echo.Headers.Values("Sluice-Client-Id"); !slices.Equal(ids, []string{a.identity}) {
			t.Errorf("the backend got sluice-client-id %q, want only pod a's verified identity %q", ids, a.identity)
		}
		expectGrowth(t, before, want...)
	})

	t.Run("meshed pod address no service claims goes over mutual TLS and is allowed", func(t *testing.T) {
		// A client that dials a pod directly (a StatefulSet pod's DNS name,
		// a headless Service's endpoint) names nothing but the address. Pod
		// a's proxy asks the control plane about it, which answers with pod
		// b and its identity, as Linkerd's destination service resolves pod
		// IPs: the request goes over mutual TLS and pod b's
		// all-authenticated policy lets it in.
		want := []growth{{mtlsOut, 1}, {plainOut, 0}, {mtlsIn, 1}, {allowed, 1}, {denied, 0}}
		before := measure(t, seriesOf(want))
		r := a.request(t, helperRequest{url: b.url(appPort, "/echo"), count: 1})
		if r.status != http.StatusOK {
			t.Fatalf("GET %s from pod a: %d %q %s, want 200 from the backend", b.url(appPort, "/echo"), r.status, r.proxyError, r.body)
		}
		var echo struct {
			echoReply
			Headers http.Header `json:"headers"`
		}
		decodeJSON(t, r.body, &echo)
		if echo.Version != "b-v1" {
			t.Errorf("answered by %q, want the backend b-v1", echo.Version)
		}
		if ids := echo.Headers.Values("Sluice-Client-Id"); !slices.Equal(ids, []string{a.identity}) {
			t.Errorf("the backend got sluice-client-id %q, want pod a's verified identity %q", ids, a.identity)
		}
		expectGrowth(t, before, want...)
	})

	t.Run("unmeshed pod address leaves in plain text", func(t *testing.T) {
		// Pod c runs no proxy: the control plane knows its address but
		// gives it no identity, so pod a's proxy sends the request as it
		// is, labelled with why, and pod c's application sees pod a.
		plainToC := series{a.pod, "request_total", map[string]string{
			"direction": "outbound", "tls": "no_identity", "no_tls_reason": "not_provided_by_service_discovery", "dst_pod": "legacy-" + c.name,
		}}
		want := []growth{{plainToC, 1}, {plainOut, 1}, {mtlsOut, 0}}
		before := measure(t, seriesOf(want))
		r := a.request(t, helperRequest{url: c.url(appPort, "/echo"), count: 1})
		if r.status != http.StatusOK {
			t.Fatalf("GET %s from pod a: %d %q %s, want 200 from pod c", c.url(appPort, "/echo"), r.status, r.proxyError, r.body)
		}
		var echo echoReply
		decodeJSON(t, r.body, &echo)
		if echo.Version != "c-v1" {
			t.Errorf("answered by %q, want pod c's c-v1", echo.Version)
		}
		if host := hostOf(echo.Remote); host != a.ip {
			t.Errorf("pod c saw client %s, want pod a's address %s", echo.Remote, a.ip)
		}
		expectGrowth(t, before, want...)
	})

	t.Run("clients outside the mesh are refused", func(t *testing.T) {
		want := []growth{{denied, 2}, {allowed, 0}, {mtlsIn, 0}, {bConnsIn, 2}}
		before := measure(t, seriesOf(want))
		// From pod c, which has no proxy...
		r := c.request(t, helperRequest{url: b.url(appPort, "/echo"), count: 1})
		if r.status != http.StatusForbidden || !strings.Contains(r.proxyError, "unauthorized") {
			t.Errorf("GET %s from pod c: %d %q, want 403 from pod b's proxy", b.url(appPort, "/echo"), r.status, r.proxyError)
		}
		// ...and from the host.
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := client.Get(b.url(appPort, "/echo"))
		if err != nil {
			t.Fatalf("GET %s from the host: %v", b.url(appPort, "/echo"), err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if reason := resp.Header.Get("Sluice-Proxy-Error"); resp.StatusCode != http.StatusForbidden || !strings.Contains(reason, "unauthorized") {
			t.Errorf("GET %s from the host: %d %q, want 403 from pod b's proxy", b.url(appPort, "/echo"), resp.StatusCode, reason)
		}
		expectGrowth(t, before, want...)
	})

	t.Run("skipped outbound port bypasses the proxy", func(t *testing.T) {
		// Of two requests to the host end, only the one to the port that is
		// not skipped reaches pod a's outbound listener.
		want := []growth{{aConnsOut, 1}, {total(a.pod, "request_total", "outbound"), 1}, {plainOut, 1}}
		before := measure(t, seriesOf(want))
		for _, port := range []int{m.skippedPort, m.passedPort} {
			url := "http://" + net.JoinHostPort(m.net.hostIP(), strconv.Itoa(port)) + "/"
			r := a.request(t, helperRequest{url: url, count: 1})
			if r.status != http.StatusOK {
				t.Fatalf("GET %s from pod a: %d %s", url, r.status, r.body)
			}
			var echo echoReply
			decodeJSON(t, r.body, &echo)
			if host := hostOf(echo.Remote); host != a.ip {
				t.Errorf("the server on port %d saw client %s, want pod a's address %s", port, echo.Remote, a.ip)
			}
		}
		expectGrowth(t, before, want...)
	})

	t.Run("skipped inbound port bypasses the backend's proxy", func(t *testing.T) {
		// Pod c's request to the skipped port reaches the server behind it
		// directly, in plain text, despite the all-authenticated policy;
		// its request to the application's port is refused by the proxy.
		want := []growth{{bConnsIn, 1}, {denied, 1}}
		before := measure(t, seriesOf(want))
		r := c.request(t, helperRequest{url: b.url(directPort, "/echo"), count: 1})
		if r.status != http.StatusOK {
			t.Fatalf("GET %s from pod c: %d %s", b.url(directPort, "/echo"), r.status, r.body)
		}
		var echo echoReply
		decodeJSON(t, r.body, &echo)
		if echo.Version != "b-direct" {
			t.Errorf("skipped port answered by %q, want the b-direct server", echo.Version)
		}
		if host := hostOf(echo.Remote); host != c.ip {
			t.Errorf("the server on the skipped port saw client %s, want pod c's address %s (no proxy in between)", echo.Remote, c.ip)
		}
		if r := c.request(t, helperRequest{url: b.url(appPort, "/echo"), count: 1}); r.status != http.StatusForbidden {
			t.Errorf("GET %s from pod c: %d, want 403 from pod b's proxy", b.url(appPort, "/echo"), r.status)
		}
		expectGrowth(t, before, want...)
	})
}

// netnsControlPlaneName is the identity the test control plane presents.
var netnsControlPlaneName = meshidentity.ControlPlaneName("sluice-up", "", "")
