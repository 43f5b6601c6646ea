package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluicehq/sluice/mesh/api/meshv1"
	"github.com/sluicehq/sluice/mesh/cptls"
	"github.com/sluicehq/sluice/mesh/destination"
	"github.com/sluicehq/sluice/mesh/identity"
	"github.com/sluicehq/sluice/mesh/localstore"
)

func TestTokenSet(t *testing.T) {
	var ts TokenSet
	ctx := context.Background()
	const id = "web.shop.serviceaccount.identity.sluice.cluster.local"
	a, err := ts.Issue(id)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ts.Issue(id)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a, b) || len(a) != 64 {
		t.Fatalf("tokens %q and %q", a, b)
	}
	for _, tok := range [][]byte{a, b} {
		if err := ts.Authenticate(ctx, id, tok); err != nil {
			t.Errorf("a live token is refused: %v", err)
		}
	}
	if err := ts.Authenticate(ctx, "other.shop.serviceaccount.identity.sluice.cluster.local", a); !errors.Is(err, identity.ErrInvalidToken) {
		t.Errorf("a token for another identity: %v", err)
	}
	if err := ts.Authenticate(ctx, id, []byte("forged")); !errors.Is(err, identity.ErrInvalidToken) {
		t.Errorf("a forged token: %v", err)
	}
	if err := ts.Authenticate(ctx, id, nil); !errors.Is(err, identity.ErrInvalidToken) {
		t.Errorf("an empty token: %v", err)
	}
	ts.Revoke(id, a)
	if err := ts.Authenticate(ctx, id, a); !errors.Is(err, identity.ErrInvalidToken) {
		t.Errorf("a revoked token: %v", err)
	}
	if err := ts.Authenticate(ctx, id, b); err != nil {
		t.Errorf("revoking one replica's token revoked another's: %v", err)
	}
	ts.Revoke(id, b)
	if err := ts.Authenticate(ctx, id, b); err == nil || !strings.Contains(err.Error(), "no bootstrap token") {
		t.Errorf("after revoking all: %v", err)
	}
}

// controlPlane is a real control plane on loopback: identity and destination
// over one gRPC server, with the store the supervisor registers replicas in.
type controlPlane struct {
	addr    string
	name    string
	anchors string
	store   *localstore.Store
	tokens  *TokenSet
}

func startControlPlane(t *testing.T) *controlPlane {
	t.Helper()
	dir := t.TempDir()
	ca, err := identity.LoadOrCreate(filepath.Join(dir, "identity"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	cp := &controlPlane{
		anchors: filepath.Join(dir, "identity", identity.AnchorFile),
		store:   localstore.New(),
		tokens:  &TokenSet{},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cp.addr = ln.Addr().String()
	cp.name = identity.ControlPlaneName("sluice-up", "", "")
	self, err := identity.NewSelfCertificate(ca, cp.name, 0)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(cptls.ServerOptions(ca.TrustAnchors(), self.GetCertificate, cptls.MeshOnlyServices...)...)
	dst := destination.NewServer(cp.store, nil)
	meshv1.RegisterDestinationServer(srv, dst)
	meshv1.RegisterIdentityServer(srv, identity.NewServer(ca, cp.tokens, 0))
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		dst.Close()
		srv.Stop()
		<-served
	})
	return cp
}

// events records the supervisor's events.
type events struct {
	mu   sync.Mutex
	list []Event
}

func (e *events) add(ev Event) { e.mu.Lock(); e.list = append(e.list, ev); e.mu.Unlock() }

func (e *events) find(f func(Event) bool) (Event, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ev := range e.list {
		if f(ev) {
			return ev, true
		}
	}
	return Event{}, false
}

// pidSet remembers every PID seen.
type pidSet struct {
	mu   sync.Mutex
	pids map[int]bool
}

func (p *pidSet) addFrom(reps []ReplicaStatus) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pids == nil {
		p.pids = map[int]bool{}
	}
	for _, r := range reps {
		for _, ps := range []ProcessStatus{r.App, r.Proxy} {
			if ps.PID != 0 {
				p.pids[ps.PID] = true
			}
		}
	}
}

// readyReplicas returns the ready replicas of a workload in the store.
func readyReplicas(store *localstore.Store, workload string) []localstore.Replica {
	var out []localstore.Replica
	for _, r := range store.Replicas() {
		if r.Workload == workload && r.Ready {
			out = append(out, r)
		}
	}
	return out
}

// A workload's replicas run as real processes beside real sidecars: they
// are registered ready, answer through their sidecar, restart after a crash,
// roll to a new revision without losing the old one while the new one
// crashes, and stopping leaves no process behind.
func TestSupervisorRunsReplicas(t *testing.T) {
	cp := startControlPlane(t)
	stateDir := t.TempDir()
	cp.store.ApplyService(&corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Port: 80}},
		},
	})
	var evs events
	sup, err := New(Options{
		StateDir:         stateDir,
		ProxyBinary:      proxyBin,
		ControlPlane:     cp.addr,
		ControlPlaneName: cp.name,
		TrustAnchors:     cp.anchors,
		Tokens:           cp.tokens,
		Registry:         cp.store,
		Backoff:          Backoff{Min: 50 * time.Millisecond, Max: 400 * time.Millisecond},
		StopGrace:        5 * time.Second,
		ProbeInterval:    50 * time.Millisecond,
		Drain:            -1,
		OnEvent:          evs.add,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- sup.Run(ctx) }()
	var seen pidSet
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		seen.addFrom(sup.Replicas())
		cancel()
		select {
		case err := <-runDone:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Error("Run did not return after cancel")
		}
	}
	t.Cleanup(stop)
	wait := func(what string, cond func() bool) {
		t.Helper()
		waitFor(t, what, 60*time.Second, func() bool { seen.addFrom(sup.Replicas()); return cond() })
	}

	sup.SetServices([]ServicePort{{Namespace: "default", Name: "web", Port: 80}})
	web := Workload{
		Namespace: "default", Name: "web", Replicas: 2, Revision: "aaaa",
		Labels:  map[string]string{"app": "web"},
		Command: []string{filepath.Base(demoApp)}, Args: []string{"--name=$(SERVICE)"},
		Env: []EnvVar{
			{Name: "SERVICE", Value: "web"},
			{Name: "VERSION", Value: "v1"},
			{Name: "PATH", Value: filepath.Dir(demoApp) + ":/usr/bin:/bin"},
		},
	}
	sup.Apply(web)
	wait("two ready replicas", func() bool { return len(readyReplicas(cp.store, "web")) == 2 })

	// Each answers through its sidecar's inbound listener, as itself.
	for _, r := range readyReplicas(cp.store, "web") {
		var got struct{ Service, Version, Pod string }
		getJSON(t, "http://"+r.Address+"/", &got)
		if got.Service != "web" || got.Version != "v1" || got.Pod != r.Pod {
			t.Errorf("replica %s answered %+v", r.Pod, got)
		}
		if r.Identity != "default.default.serviceaccount.identity.sluice.cluster.local" || r.Revision != "aaaa" || r.Labels["app"] != "web" {
			t.Errorf("replica record %+v", r)
		}
	}
	reps := sup.Replicas()
	if len(reps) != 2 {
		t.Fatalf("Replicas() = %+v", reps)
	}
	first := reps[0]
	tokenInfo, err := os.Stat(filepath.Join(stateDir, "pods", "default", first.Pod, "token"))
	if err != nil {
		t.Fatal(err)
	}
	if tokenInfo.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v, want 0600", tokenInfo.Mode().Perm())
	}
	cfg, err := os.ReadFile(filepath.Join(stateDir, "pods", "default", first.Pod, "proxy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"address: " + cp.addr, "service: web.default:80", "listen: " + first.Address, "pod: " + first.Pod} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("sidecar configuration lacks %q:\n%s", want, cfg)
		}
	}
	for _, f := range []string{first.App.Log, first.Proxy.Log} {
		if !strings.HasPrefix(f, filepath.Join(stateDir, "logs", "default", first.Pod)) {
			t.Errorf("log %s is not under logs/default/%s", f, first.Pod)
		}
	}

	// A crashed application is restarted, and the replica is ready again.
	oldPID := first.App.PID
	if err := syscall.Kill(oldPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wait("the crashed app to restart", func() bool {
		for _, r := range sup.Replicas() {
			if r.Pod == first.Pod {
				return r.App.Restarts == 1 && r.App.PID != 0 && r.App.PID != oldPID && r.Ready
			}
		}
		return false
	})
	ev, ok := evs.find(func(e Event) bool { return e.Type == ProcessExited && e.Pod == first.Pod })
	if !ok || ev.Container != ContainerApp || ev.Exit.RestartIn != 50*time.Millisecond || !strings.Contains(ev.Message, "signal: killed") {
		t.Errorf("exit event = %+v (found %v)", ev, ok)
	}
	if !processGone(oldPID) {
		t.Errorf("the killed app %d is still there", oldPID)
	}

	// A new revision rolls: the new replicas come up, then the old ones go.
	oldPods := map[string]ReplicaStatus{}
	for _, r := range sup.Replicas() {
		oldPods[r.Pod] = r
	}
	v2 := web
	v2.Revision = "bbbb"
	v2.Env = append(v2.Env[:1:1], EnvVar{Name: "VERSION", Value: "v2"}, web.Env[2])
	sup.Apply(v2)
	wait("the roll to bbbb", func() bool {
		reps := sup.Replicas()
		if len(reps) != 2 {
			return false
		}
		for _, r := range reps {
			if r.Revision != "bbbb" || !r.Ready {
				return false
			}
		}
		return len(readyReplicas(cp.store, "web")) == 2
	})
	for pod, r := range oldPods {
		for _, pid := range []int{r.App.PID, r.Proxy.PID} {
			if !processGone(pid) {
				t.Errorf("process %d of the replaced %s is still there", pid, pod)
			}
		}
		if _, err := os.Stat(filepath.Join(stateDir, "pods", "default", pod)); !os.IsNotExist(err) {
			t.Errorf("the state of the replaced %s was not removed: %v", pod, err)
		}
	}
	for _, r := range readyReplicas(cp.store, "web") {
		var got struct{ Version string }
		getJSON(t, "http://"+r.Address+"/", &got)
		if got.Version != "v2" {
			t.Errorf("after the roll %s answers version %q", r.Pod, got.Version)
		}
	}

	// Scale down to one.
	v2.Replicas = 1
	sup.Apply(v2)
	wait("one replica", func() bool { return len(sup.Replicas()) == 1 && len(cp.store.Replicas()) == 1 })
	survivor := sup.Replicas()[0]

	// A revision that cannot start crash-loops beside the good one, which
	// keeps serving.
	bad := v2
	bad.Revision = "cccc"
	bad.Args = []string{"--error-rate", "2"}
	sup.Apply(bad)
	wait("the bad revision to crash twice", func() bool {
		for _, r := range sup.Replicas() {
			if r.Revision == "cccc" && r.App.Restarts >= 2 {
				return true
			}
		}
		return false
	})
	ws := sup.Workloads()
	if len(ws) != 1 || ws[0].Revision != "cccc" || ws[0].Ready != 0 || ws[0].Old != 1 {
		t.Errorf("Workloads() = %+v", ws)
	}
	if got := readyReplicas(cp.store, "web"); len(got) != 1 || got[0].Pod != survivor.Pod {
		t.Errorf("ready replicas while the new revision crashes: %+v, want only %s", got, survivor.Pod)
	}
	for _, r := range sup.Replicas() {
		if r.Revision == "cccc" && (r.Ready || !strings.Contains(r.Problem, "application")) {
			t.Errorf("crash-looping replica status: ready %v, problem %q", r.Ready, r.Problem)
		}
	}

	// Deleting the workload stops everything.
	sup.Delete("default", "web")
	wait("no replica", func() bool { return len(sup.Replicas()) == 0 && len(cp.store.Replicas()) == 0 })

	sup.Apply(web) // something running when the supervisor stops
	wait("replicas again", func() bool { return len(readyReplicas(cp.store, "web")) == 2 })
	stop()
	seen.mu.Lock()
	defer seen.mu.Unlock()
	if len(seen.pids) < 8 {
		t.Errorf("saw only %d processes", len(seen.pids))
	}
	for pid := range seen.pids {
		if !processGone(pid) {
			t.Errorf("process %d is still there after the supervisor stopped", pid)
		}
	}
	if left := processesWithEnv("SLUICE_STATE_DIR=" + stateDir); len(left) > 0 {
		t.Errorf("processes of this supervisor still running: %v", left)
	}
	if len(cp.store.Replicas()) != 0 {
		t.Errorf("replicas still registered: %+v", cp.store.Replicas())
	}
}

// processesWithEnv lists the processes whose environment holds kv.
func processesWithEnv(kv string) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		for _, v := range bytes.Split(data, []byte{0}) {
			if string(v) == kv {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

func getJSON(t *testing.T, url string, into any) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, body)
	}
	if err := json.Unmarshal(body, into); err != nil {
		t.Fatalf("GET %s: %v: %s", url, err, body)
	}
}
