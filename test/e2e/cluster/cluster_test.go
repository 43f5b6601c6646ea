package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// stages records how long each step of the test took.
type stages struct {
	t     *testing.T
	last  time.Time
	lines []string
}

func (s *stages) done(name string) {
	d := time.Since(s.last).Round(time.Millisecond)
	s.lines = append(s.lines, fmt.Sprintf("  %-34s %s", name, d))
	s.t.Logf("stage %s: %s", name, d)
	s.last = time.Now()
}

// TestCluster brings a real cluster up, runs a pod and a Service reached
// from the host through kube-proxy, checks that a second Up changes
// nothing, tears it down and checks that the host is as before; then does
// it again with the cluster's processes killed before Down.
func TestCluster(t *testing.T) {
	Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	st := &stages{t: t, last: time.Now()}
	defer func() { t.Logf("stage durations:\n%s", strings.Join(st.lines, "\n")) }()

	bin, err := EnsureBinaries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("binaries in %s", bin)
	st.done("binaries (hack/kube-node.sh)")

	cfg, err := Config{WorkDir: testWorkDir(t)}.Defaults()
	if err != nil {
		t.Fatal(err)
	}
	before, err := snapshotHost(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	echoTar := filepath.Join(t.TempDir(), "echo.tar")
	const echoRef = "localhost/sluice-e2e-echo:test"
	if err := BuildGoImage(ctx, "./test/e2e/cluster/testdata/echo", echoRef, echoTar); err != nil {
		t.Fatal(err)
	}
	st.done("echo image built")

	cfg.Images = []string{echoTar}
	var cl *Cluster
	t.Cleanup(func() {
		ctx := context.Background()
		if t.Failed() {
			if b, err := os.ReadFile(cfg.path("logs", "up-failure.txt")); err == nil {
				t.Logf("diagnostics when Up failed:\n%s", b)
			} else if cl != nil {
				var b bytes.Buffer
				cl.Diagnostics(ctx, &b)
				t.Logf("diagnostics:\n%s", b.String())
			}
		}
		if err := Down(ctx, cfg); err != nil {
			t.Errorf("Down (cleanup): %v", err)
		}
	})
	cl, err = Up(ctx, cfg)
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	st.done("Up (node Ready, CoreDNS Ready)")
	if cl.Kubeconfig != cfg.kubeconfig() || cl.NodeIP != cfg.NodeIP {
		t.Errorf("Up returned kubeconfig %s and node IP %s, want %s and %s", cl.Kubeconfig, cl.NodeIP, cfg.kubeconfig(), cfg.NodeIP)
	}
	if err := cl.Healthy(ctx); err != nil {
		t.Fatalf("Healthy after Up: %v", err)
	}
	if err := coreDNSReady(ctx, cl.Client); err != nil {
		t.Fatalf("CoreDNS after Up: %v", err)
	}

	// Importing again is harmless; a missing archive is named.
	if err := cl.ImportImages(ctx, echoTar); err != nil {
		t.Errorf("ImportImages(%s) again: %v", echoTar, err)
	}
	missing := filepath.Join(t.TempDir(), "missing.tar")
	if err := cl.ImportImages(ctx, missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("ImportImages(%s) = %v, want an error naming the archive", missing, err)
	}

	cs := cl.Client
	ns := "default"
	pause := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "pause"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "pause", Image: pauseImage, ImagePullPolicy: corev1.PullNever,
		}}},
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, pause, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := poll(ctx, 3*time.Minute, "pod pause running", func(ctx context.Context) error {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, "pause", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("phase %s", p.Status.Phase)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st.done("pause pod running")

	labels := map[string]string{"app": "echo"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "echo", Image: echoRef, ImagePullPolicy: corev1.PullNever,
					Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
					ReadinessProbe: &corev1.Probe{
						ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(8080)}},
						PeriodSeconds: 1,
					},
				}}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	svc, err = cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("http://%s/hello", net.JoinHostPort(svc.Spec.ClusterIP, "80"))
	client := &http.Client{Timeout: 3 * time.Second}
	var body string
	if err := poll(ctx, 3*time.Minute, "GET "+url+" from the host", func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %s", resp.Status)
		}
		body = string(b)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(body, "echo from echo-") || !strings.Contains(body, "/hello") {
		t.Errorf("GET %s answered %q, want the echo pod's answer", url, body)
	}
	st.done("Service ClusterIP reached from host")

	// CoreDNS answers through its ClusterIP, by kube-proxy too.
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, net.JoinHostPort(cfg.DNSIP.String(), "53"))
	}}
	name := "echo.default.svc.cluster.local"
	if err := poll(ctx, time.Minute, "resolving "+name+" through kube-dns", func(ctx context.Context) error {
		addrs, err := resolver.LookupHost(ctx, name)
		if err != nil {
			return err
		}
		if len(addrs) != 1 || addrs[0] != svc.Spec.ClusterIP {
			return fmt.Errorf("%s resolves to %v, want [%s]", name, addrs, svc.Spec.ClusterIP)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st.done("Service name resolved by CoreDNS")

	pidsBefore := recordedPIDs(cfg)
	again, err := Up(ctx, cfg)
	if err != nil {
		t.Fatalf("second Up: %v", err)
	}
	if got := recordedPIDs(cfg); got != pidsBefore {
		t.Errorf("second Up restarted processes: PIDs were\n%s\nnow\n%s", pidsBefore, got)
	}
	if again.Kubeconfig != cl.Kubeconfig {
		t.Errorf("second Up returned kubeconfig %s, want %s", again.Kubeconfig, cl.Kubeconfig)
	}
	if _, err := cs.CoreV1().Pods(ns).Get(ctx, "pause", metav1.GetOptions{}); err != nil {
		t.Errorf("after the second Up: %v", err)
	}
	// ForTest hands a test the running cluster and leaves it running.
	t.Run("ForTest reuses the running cluster", func(t *testing.T) {
		got := ForTest(t, cfg)
		if got.Kubeconfig != cl.Kubeconfig {
			t.Errorf("ForTest returned kubeconfig %s, want %s", got.Kubeconfig, cl.Kubeconfig)
		}
	})
	if err := cl.Healthy(ctx); err != nil {
		t.Errorf("after ForTest's test ended: %v", err)
	}
	if got := recordedPIDs(cfg); got != pidsBefore {
		t.Errorf("ForTest restarted processes")
	}
	// A cluster of another work directory cannot come up beside this one,
	// and trying must not harm it.
	other := Config{WorkDir: cfg.WorkDir + "-other"}
	if _, err := Up(ctx, other); err == nil || !strings.Contains(err.Error(), "interface "+cfg.NodeBridge+" exists") {
		t.Errorf("Up of a second cluster beside the first = %v, want an error naming interface %s", err, cfg.NodeBridge)
	}
	if err := cl.Healthy(ctx); err != nil {
		t.Errorf("after a second cluster's Up failed: %v", err)
	}
	_ = os.RemoveAll(other.WorkDir)
	st.done("second Up (no-op), ForTest, other cluster refused")

	if err := Down(ctx, cfg); err != nil {
		t.Fatalf("Down: %v", err)
	}
	st.done("Down")
	after, err := snapshotHost(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if d := before.diff(after); len(d) > 0 {
		t.Errorf("host differs from before Up:\n  %s", strings.Join(d, "\n  "))
	}
	if _, err := os.Stat(cfg.path(beforeFile)); err == nil {
		t.Errorf("Down left %s behind after a clean teardown", cfg.path(beforeFile))
	}

	// A run that dies: the node's main processes are killed with pods
	// running (their shims and containers stay), and Down must still give
	// the host back.
	cl, err = Up(ctx, cfg)
	if err != nil {
		t.Fatalf("Up after Down: %v", err)
	}
	if _, err := cl.Client.CoreV1().Pods(ns).Create(ctx, pause, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := poll(ctx, 3*time.Minute, "pod pause running", func(ctx context.Context) error {
		p, err := cl.Client.CoreV1().Pods(ns).Get(ctx, "pause", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("phase %s", p.Status.Phase)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st.done("Up again, pause pod running")
	for _, name := range []string{"containerd", "kubelet", "kube-apiserver", "etcd"} {
		pid, _, ok := recordedProcess(cfg, name)
		if !ok {
			t.Fatalf("no PID recorded for %s", name)
		}
		killPID(pid)
	}
	if err := Down(ctx, cfg); err != nil {
		t.Fatalf("Down after the cluster's processes were killed: %v", err)
	}
	st.done("Down after a crash")
	after, err = snapshotHost(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if d := before.diff(after); len(d) > 0 {
		t.Errorf("host differs from before Up after the crash:\n  %s", strings.Join(d, "\n  "))
	}
}

// testWorkDir is the test's own work directory, beside the default one
// so that a cluster brought up by make e2e-up keeps its state.
func testWorkDir(t *testing.T) string {
	c, err := Config{}.Defaults()
	if err != nil {
		t.Fatal(err)
	}
	return c.WorkDir + "-test"
}

// recordedPIDs returns the PID files' contents, one line per component.
func recordedPIDs(c Config) string {
	var b strings.Builder
	for _, name := range components {
		pid, start, _ := recordedProcess(c, name)
		fmt.Fprintf(&b, "%s %d %d\n", name, pid, start)
	}
	return b.String()
}
