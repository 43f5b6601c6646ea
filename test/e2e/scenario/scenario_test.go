package scenario

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/sluicehq/sluice/test/e2e/cluster"
)

// Identities of the demo's workloads (DESIGN.md "Identity").
const (
	frontendID = "frontend.demo.serviceaccount.identity.sluice.cluster.local"
	backendID  = "backend.demo.serviceaccount.identity.sluice.cluster.local"
)

// TestEndToEnd is the whole product on a real cluster, the way a user meets it.
func TestEndToEnd(t *testing.T) {
	requireCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	e := &env{t: t, root: repoRoot(t)}
	tmp := t.TempDir()

	done := stage(t, "images")
	imageDir := filepath.Join(tmp, "images")
	build := exec.CommandContext(ctx, "go", "run", "./hack/images", "-out", imageDir, "-registry", imageRegistry, "-version", imageVersion)
	build.Dir = e.root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the images: %v\n%s", err, out)
	}
	tars, err := filepath.Glob(filepath.Join(imageDir, "*.tar"))
	if err != nil || len(tars) == 0 {
		t.Fatalf("no image archives in %s (%v)", imageDir, err)
	}
	e.sluice = filepath.Join(tmp, "sluice")
	gobuild := exec.CommandContext(ctx, "go", "build", "-ldflags", "-X main.version="+imageVersion, "-o", e.sluice, "./cmd/sluice")
	gobuild.Dir = e.root
	if out, err := gobuild.CombinedOutput(); err != nil {
		t.Fatalf("building sluice: %v\n%s", err, out)
	}
	done()

	done = stage(t, "cluster up")
	cfg := cluster.Config{Images: tars}
	cl, err := cluster.Up(ctx, cfg)
	t.Cleanup(func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer dcancel()
		if t.Failed() && cl != nil {
			e.diagnose(dctx)
		}
		end := stage(t, "cluster down")
		if err := cluster.Down(dctx, cfg); err != nil {
			t.Errorf("cluster down (the host must be as it was): %v", err)
		}
		end()
	})
	if err != nil {
		t.Fatalf("bringing the cluster up: %v", err)
	}
	e.cl = cl
	e.kubectl = filepath.Join(cl.Config.EnvtestBinDir, "kubectl")
	done()

	e.install(ctx)
	e.meshDemo(ctx)
	e.routePolicies(ctx)
	e.canary(ctx)
}

// install installs Sluice with its own CLI and checks it.
func (e *env) install(ctx context.Context) {
	t := e.t
	defer stage(t, "install")()
	crds := e.must(ctx, nil, e.sluice, "install", "--crds")
	e.apply(ctx, []byte(crds))
	e.kubectlMust(ctx, nil, "wait", "--for=condition=Established", "crd", "--all", "--timeout=2m")
	manifests := e.must(ctx, nil, e.sluice, "install", "--registry", imageRegistry, "--version", imageVersion, "--image-pull-policy", "Never")
	e.apply(ctx, []byte(manifests))
	e.kubectlMust(ctx, nil, "-n", "sluice", "wait", "--for=condition=Available", "deployment", "--all", "--timeout=5m")
	var r result
	e.eventually(ctx, 2*time.Minute, "sluice check passes", func() error {
		r = e.run(ctx, nil, e.sluice, "check", "--kubeconfig", e.cl.Kubeconfig)
		if r.code != 0 {
			return fmt.Errorf("exit %d:\n%s%s", r.code, r.stdout, r.stderr)
		}
		return nil
	})
	if strings.Contains(r.stdout, "×") {
		t.Errorf("sluice check passed with failures:\n%s", r.stdout)
	}
	t.Logf("sluice check:\n%s", r.stdout)
}

// meshDemo deploys the demo in a meshed namespace and proves the traffic
// between its pods goes through both proxies over mutual TLS.
func (e *env) meshDemo(ctx context.Context) {
	t := e.t
	defer stage(t, "mesh")()
	for _, f := range []string{"00-namespace.yaml", "backend.yaml", "frontend.yaml", "loadtester.yaml"} {
		e.apply(ctx, e.example(f))
	}
	e.kubectlMust(ctx, nil, "-n", "demo", "wait", "--for=condition=Available", "deployment", "--all", "--timeout=5m")
	pods, err := e.cl.Client.CoreV1().Pods("demo").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("listing the demo's pods: %v", err)
	}
	for _, p := range pods.Items {
		if !hasNativeProxy(&p) {
			t.Errorf("pod %s has no sluice-proxy native sidecar: init containers %v", p.Name, containerNames(p.Spec.InitContainers))
		}
	}

	frontend := e.serviceURL(ctx, "demo", "frontend")
	// kube-proxy programs a Service's endpoints a moment after they are ready.
	e.eventually(ctx, time.Minute, "the frontend answers through its ClusterIP", func() error {
		code, body, err := httpGet(ctx, frontend+"/")
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("%d %v %s", code, err, body)
		}
		return nil
	})
	for i := range 20 {
		code, body, err := httpGet(ctx, frontend+"/")
		if err != nil || code != http.StatusOK || !strings.Contains(body, `"backend"`) {
			t.Fatalf("GET frontend #%d: %d %v %s", i, code, err, body)
		}
	}
	fm := e.proxyMetrics(ctx, "demo", "app=frontend")
	if n := metricSum(fm, "response_total", map[string]string{"direction": "outbound", "tls": "true", "server_id": backendID}); n < 20 {
		t.Errorf("the frontend's proxy counted %v outbound responses over mTLS from %s, want ≥ 20\n%s", n, backendID, fm)
	}
	bm := e.proxyMetrics(ctx, "demo", "app=backend")
	if n := metricSum(bm, "request_total", map[string]string{"direction": "inbound", "tls": "true", "client_id": frontendID}); n < 20 {
		t.Errorf("the backend's proxy counted %v inbound requests over mTLS from %s, want ≥ 20\n%s", n, frontendID, bm)
	}
	stat := e.must(ctx, nil, e.sluice, "stat", "--kubeconfig", e.cl.Kubeconfig, "-n", "demo")
	if !strings.Contains(stat, "backend") || !strings.Contains(stat, "frontend") {
		t.Errorf("sluice stat -n demo does not list the demo:\n%s", stat)
	}
	t.Logf("sluice stat -n demo:\n%s", stat)

	// An un-meshed client (the host) is refused by the backend's
	// all-authenticated policy, on the pod's own address.
	backendPod := e.podIP(ctx, "demo", "app=backend")
	code, body, err := httpGet(ctx, "http://"+backendPod+":8080/")
	if err != nil || code != http.StatusForbidden {
		t.Errorf("an un-meshed GET of the backend pod: %d %v %s, want 403 from the all-authenticated policy", code, err, body)
	}
}

// routePolicies sets a retry and a timeout on HTTPRoutes and checks that
// meshed clients (the load tester's pod) get them.
func (e *env) routePolicies(ctx context.Context) {
	t := e.t
	defer stage(t, "retry and timeout")()
	e.apply(ctx, retag([]byte(flakyAndSlow)))
	e.kubectlMust(ctx, nil, "-n", "demo", "wait", "--for=condition=Available", "deployment/flaky", "deployment/slow", "--timeout=3m")
	lt := e.serviceURL(ctx, "demo", "loadtester")

	baseline := e.load(ctx, lt, "flaky-baseline", map[string]any{"kind": "http", "url": "http://flaky.demo.svc.cluster.local/", "requests": 100, "rate": 10, "concurrency": 2})
	e.apply(ctx, []byte(flakyRoute))
	e.eventually(ctx, time.Minute, "the flaky route is accepted", func() error { return e.routeAccepted(ctx, "demo", "flaky") })
	retried := e.load(ctx, lt, "flaky-retried", map[string]any{"kind": "http", "url": "http://flaky.demo.svc.cluster.local/", "requests": 100, "rate": 10, "concurrency": 2})
	// Without retries about half fail; with them (4 attempts) about 6 % do.
	// The breaker may eject the lone endpoint after 7 failures in a row, but
	// the balancer then still uses it (panic) rather than answering 503s.
	if b, r := 100-baseline["200"], 100-retried["200"]; b < 25 || 3*r > 2*b || retried["500"]*3 > baseline["500"] {
		t.Errorf("failures without retries %d, with retries %d: want the route's retries to remove most 500s (codes %v vs %v)", b, r, baseline, retried)
	}

	e.apply(ctx, []byte(slowRoute))
	e.eventually(ctx, time.Minute, "the slow route is accepted", func() error { return e.routeAccepted(ctx, "demo", "slow") })
	timed := e.load(ctx, lt, "slow-timeout", map[string]any{"kind": "http", "url": "http://slow.demo.svc.cluster.local/", "requests": 5, "concurrency": 1, "timeout": "10s"})
	if timed["504"] != 5 {
		t.Errorf("requests to a 3 s backend under a 1 s route timeout: %v, want five 504s", timed)
	}
}

// canary walks a Canary on the backend through a promotion and a rollback
// under load, and deletes it.
func (e *env) canary(ctx context.Context) {
	t := e.t
	defer stage(t, "canary")()
	frontend := e.serviceURL(ctx, "demo", "frontend")
	tr := startTraffic(ctx, frontend+"/", 10)
	defer tr.stop()

	e.apply(ctx, e.example("canary.yaml"))
	e.waitPhase(ctx, "Initialized", 3*time.Minute)
	tr.setPhase("initialized")

	// A healthy version is promoted.
	tr.setPhase("v2")
	e.kubectlMust(ctx, nil, "-n", "demo", "set", "env", "deployment/backend", "VERSION=v2")
	r := e.run(ctx, nil, e.sluice, "status", "backend", "-n", "demo", "--kubeconfig", e.cl.Kubeconfig, "--wait", "--timeout", "6m")
	if r.code != 0 {
		t.Fatalf("sluice status --wait for v2: exit %d, want 0\n%s%s", r.code, r.stdout, r.stderr)
	}
	if v := e.envOf(ctx, "backend-primary", "VERSION"); v != "v2" {
		t.Errorf("backend-primary runs VERSION=%q after the promotion, want v2", v)
	}
	e.checkSettled(ctx)
	if total, failed, counts := tr.stats("v2"); total == 0 || failed > 0 {
		t.Errorf("while v2 was rolled out the client saw %d failures of %d (%s), want none", failed, total, counts)
	}

	// A failing version is rolled back; the client only sees failures while
	// the canary has its share.
	tr.setPhase("v3")
	e.kubectlMust(ctx, nil, "-n", "demo", "set", "env", "deployment/backend", "VERSION=v3", "ERROR_RATE=1")
	r = e.run(ctx, nil, e.sluice, "status", "backend", "-n", "demo", "--kubeconfig", e.cl.Kubeconfig, "--wait", "--timeout", "6m")
	if r.code != 1 {
		t.Fatalf("sluice status --wait for v3: exit %d, want 1 (rolled back)\n%s%s", r.code, r.stdout, r.stderr)
	}
	tr.setPhase("after")
	if v := e.envOf(ctx, "backend-primary", "VERSION"); v != "v2" {
		t.Errorf("backend-primary runs VERSION=%q after the rollback, want v2", v)
	}
	e.checkSettled(ctx)
	if total, failed, counts := tr.stats("v3"); total == 0 || float64(failed) > 0.3*float64(total) {
		t.Errorf("while v3 was analysed the client saw %d failures of %d (%s), want at most the canary's 20 %% share (+ margin)", failed, total, counts)
	}
	time.Sleep(5 * time.Second)
	if total, failed, counts := tr.stats("after"); total == 0 || failed > 0 {
		t.Errorf("after the rollback the client saw %d failures of %d (%s), want none", failed, total, counts)
	}

	// sluice stat shows the backend's traffic as mutual TLS (the load
	// tester's and the frontend's; only the kubelet's probes are plain).
	e.eventually(ctx, time.Minute, "sluice stat shows backend-primary's traffic over mTLS", func() error {
		out := e.run(ctx, nil, e.sluice, "stat", "--kubeconfig", e.cl.Kubeconfig, "-n", "demo")
		for _, line := range strings.Split(out.stdout, "\n") {
			f := strings.Fields(line)
			if len(f) == 0 || f[0] != "backend-primary" {
				continue
			}
			share, err := strconv.ParseFloat(strings.TrimSuffix(f[len(f)-1], "%"), 64)
			if err != nil || share < 50 {
				return fmt.Errorf("TLS share %q:\n%s", f[len(f)-1], out.stdout)
			}
			return nil
		}
		return fmt.Errorf("no backend-primary row:\n%s%s", out.stdout, out.stderr)
	})

	// Deleting the Canary restores the original Deployment, as it is: put
	// the promoted version back in it first (the same revision as the
	// primary's, so no new run starts), then delete.
	e.kubectlMust(ctx, nil, "-n", "demo", "set", "env", "deployment/backend", "VERSION=v2", "ERROR_RATE=0")
	time.Sleep(5 * time.Second)
	e.kubectlMust(ctx, nil, "-n", "demo", "delete", "canary", "backend", "--timeout=2m")
	e.eventually(ctx, 2*time.Minute, "the backend Deployment is restored", func() error {
		d, err := e.cl.Client.AppsV1().Deployments("demo").Get(ctx, "backend", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Spec.Replicas == nil || *d.Spec.Replicas < 1 || d.Status.AvailableReplicas < 1 {
			return fmt.Errorf("backend: replicas %v, available %d", d.Spec.Replicas, d.Status.AvailableReplicas)
		}
		return nil
	})
	e.eventually(ctx, time.Minute, "the frontend answers, from the restored backend", func() error {
		code, body, err := httpGet(ctx, frontend+"/")
		if err != nil || code != http.StatusOK || !strings.Contains(body, `"pod":"backend-`) || strings.Contains(body, "backend-primary") {
			return fmt.Errorf("%d %v %s", code, err, body)
		}
		return nil
	})
}

// checkSettled checks the state after a run ended: the target at zero and
// the route back at 100/0 for the primary.
func (e *env) checkSettled(ctx context.Context) {
	t := e.t
	e.eventually(ctx, time.Minute, "the canary is scaled to zero and the route is 100/0", func() error {
		d, err := e.cl.Client.AppsV1().Deployments("demo").Get(ctx, "backend", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Spec.Replicas == nil || *d.Spec.Replicas != 0 {
			return fmt.Errorf("deployment backend has %v replicas, want 0", d.Spec.Replicas)
		}
		gw, err := gatewayclient.NewForConfig(e.cl.REST)
		if err != nil {
			return err
		}
		rt, err := gw.GatewayV1().HTTPRoutes("demo").Get(ctx, "backend", metav1.GetOptions{})
		if err != nil {
			return err
		}
		weights := map[string]int32{}
		for _, r := range rt.Spec.Rules {
			for _, b := range r.BackendRefs {
				if b.Weight != nil {
					weights[string(b.Name)] += *b.Weight
				}
			}
		}
		if weights["backend-primary"] != 100 || weights["backend-canary"] != 0 {
			return fmt.Errorf("route weights %v, want backend-primary 100, backend-canary 0", weights)
		}
		return nil
	})
	_ = t
}

// waitPhase waits for the backend Canary's phase.
func (e *env) waitPhase(ctx context.Context, phase string, timeout time.Duration) {
	e.eventually(ctx, timeout, "canary backend is "+phase, func() error {
		out := e.run(ctx, nil, e.kubectl, "-n", "demo", "get", "canary", "backend", "-o", "jsonpath={.status.phase}")
		if strings.TrimSpace(out.stdout) != phase {
			return fmt.Errorf("phase %q", out.stdout)
		}
		return nil
	})
}

// envOf is an environment variable of a Deployment's first container.
func (e *env) envOf(ctx context.Context, deployment, name string) string {
	d, err := e.cl.Client.AppsV1().Deployments("demo").Get(ctx, deployment, metav1.GetOptions{})
	if err != nil {
		e.t.Fatalf("deployment %s: %v", deployment, err)
	}
	return containerEnv(d, name)
}

func containerEnv(d *appsv1.Deployment, name string) string {
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == "sluice-proxy" {
			continue
		}
		for _, v := range c.Env {
			if v.Name == name {
				return v.Value
			}
		}
	}
	return ""
}

// serviceURL is http://<ClusterIP>:<first port> of a Service, reachable from
// the host through kube-proxy.
func (e *env) serviceURL(ctx context.Context, ns, name string) string {
	svc, err := e.cl.Client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatalf("service %s/%s: %v", ns, name, err)
	}
	return fmt.Sprintf("http://%s:%d", svc.Spec.ClusterIP, svc.Spec.Ports[0].Port)
}

// podIP is the address of the first running pod matching selector.
func (e *env) podIP(ctx context.Context, ns, selector string) string {
	pods, err := e.cl.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector, FieldSelector: "status.phase=Running"})
	if err != nil || len(pods.Items) == 0 {
		e.t.Fatalf("no running pod %s in %s: %v", selector, ns, err)
	}
	return pods.Items[0].Status.PodIP
}

// proxyMetrics scrapes the proxy of the first pod matching selector.
func (e *env) proxyMetrics(ctx context.Context, ns, selector string) string {
	ip := e.podIP(ctx, ns, selector)
	code, body, err := httpGet(ctx, "http://"+ip+":4191/metrics")
	if err != nil || code != http.StatusOK {
		e.t.Fatalf("scraping the proxy of %s (%s): %d %v", selector, ip, code, err)
	}
	return body
}

// routeAccepted checks that the mesh accepted an HTTPRoute.
func (e *env) routeAccepted(ctx context.Context, ns, name string) error {
	gw, err := gatewayclient.NewForConfig(e.cl.REST)
	if err != nil {
		return err
	}
	rt, err := gw.GatewayV1().HTTPRoutes(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	for _, p := range rt.Status.Parents {
		for _, c := range p.Conditions {
			if c.Type == "Accepted" && c.Status == metav1.ConditionTrue && c.ObservedGeneration == rt.Generation {
				// Give the proxies a moment to receive the new table.
				time.Sleep(3 * time.Second)
				return nil
			}
		}
	}
	return fmt.Errorf("route %s/%s not accepted: %+v", ns, name, rt.Status.Parents)
}

// load runs a typed load from the meshed load tester and returns its codes.
func (e *env) load(ctx context.Context, base, name string, spec map[string]any) map[string]int {
	t := e.t
	meta := map[string]json.RawMessage{}
	for k, v := range spec {
		b, _ := json.Marshal(v)
		meta[k] = b
	}
	body, _ := json.Marshal(map[string]any{"name": name, "namespace": "demo", "metadata": meta})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("starting load %s: %v", name, err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("starting load %s: %s", name, resp.Status)
	}
	var st struct {
		State string         `json:"state"`
		Codes map[string]int `json:"codes"`
	}
	e.eventually(ctx, 3*time.Minute, "load "+name+" finishes", func() error {
		code, b, err := httpGet(ctx, base+"/status?namespace=demo&name="+name)
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("%d %v %s", code, err, b)
		}
		if err := json.Unmarshal([]byte(b), &st); err != nil {
			return fmt.Errorf("status %s: %v", b, err)
		}
		if st.State == "running" {
			return fmt.Errorf("still running: %v", st.Codes)
		}
		return nil
	})
	t.Logf("load %s: %v", name, st.Codes)
	return st.Codes
}

// diagnose prints what explains a red run: pods, events, and the logs of
// Sluice's components and of the demo's proxies.
func (e *env) diagnose(ctx context.Context) {
	e.cl.Diagnostics(ctx, os.Stdout)
	for _, args := range [][]string{
		{"get", "pods", "-A", "-o", "wide"},
		{"get", "events", "-A", "--sort-by=.lastTimestamp"},
		{"-n", "demo", "get", "canaries", "-o", "yaml"},
		{"-n", "demo", "get", "httproutes", "-o", "yaml"},
	} {
		r := e.run(ctx, nil, e.kubectl, args...)
		fmt.Printf("--- kubectl %s\n%s%s\n", strings.Join(args, " "), r.stdout, r.stderr)
	}
	for _, d := range []string{"sluice-controller", "sluice-destination", "sluice-identity", "sluice-telemetry", "sluice-injector"} {
		r := e.run(ctx, nil, e.kubectl, "-n", "sluice", "logs", "deployment/"+d, "--tail=60", "--all-containers")
		fmt.Printf("--- logs sluice/%s\n%s%s\n", d, r.stdout, r.stderr)
	}
	pods, err := e.cl.Client.CoreV1().Pods("demo").List(ctx, metav1.ListOptions{})
	if err == nil {
		for _, p := range pods.Items {
			r := e.run(ctx, nil, e.kubectl, "-n", "demo", "logs", p.Name, "-c", "sluice-proxy", "--tail=40")
			fmt.Printf("--- proxy logs demo/%s\n%s%s\n", p.Name, r.stdout, r.stderr)
		}
	}
}

func hasNativeProxy(p *corev1.Pod) bool {
	for _, c := range p.Spec.InitContainers {
		if c.Name == "sluice-proxy" && c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			return true
		}
	}
	return false
}

func containerNames(cs []corev1.Container) []string {
	var n []string
	for _, c := range cs {
		n = append(n, c.Name)
	}
	return n
}

// flakyAndSlow are two more backends: flaky fails half its requests, slow
// answers after 3 s.
var flakyAndSlow = demoBackend("flaky", "--error-rate=0.5") + "---\n" + demoBackend("slow", "--latency=3s")

// demoBackend is a one-replica Deployment of the demo app named name, run
// with arg, and its Service on port 80, in namespace demo.
func demoBackend(name, arg string) string {
	return strings.ReplaceAll(strings.ReplaceAll(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: NAME, namespace: demo}
spec:
  replicas: 1
  selector: {matchLabels: {app: NAME}}
  template:
    metadata: {labels: {app: NAME}}
    spec:
      enableServiceLinks: false
      containers:
      - name: app
        image: ghcr.io/sluicehq/sluice-demo-app:dev
        args: ["--name=NAME", "ARG"]
        ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: NAME, namespace: demo}
spec:
  selector: {app: NAME}
  ports: [{name: http, port: 80, targetPort: http}]
`, "NAME", name), "ARG", arg)
}

// flakyRoute retries 500s up to three times.
const flakyRoute = `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: flaky, namespace: demo}
spec:
  parentRefs: [{group: "", kind: Service, name: flaky, port: 80}]
  rules:
  - backendRefs: [{name: flaky, port: 80}]
    retry: {codes: [500], attempts: 3}
`

// slowRoute times requests out after 1 s.
const slowRoute = `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: slow, namespace: demo}
spec:
  parentRefs: [{group: "", kind: Service, name: slow, port: 80}]
  rules:
  - backendRefs: [{name: slow, port: 80}]
    timeouts: {request: 1s}
`
