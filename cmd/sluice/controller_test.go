package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	ck "github.com/sluicehq/sluice/canary/kubernetes"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
	meshk8s "github.com/sluicehq/sluice/mesh/kubernetes"
	"github.com/sluicehq/sluice/test/envtest"
)

// TestControllerCommand runs `sluice controller` against a real API server:
// it elects itself leader, serves /healthz, /readyz and /metrics, and
// initializes a Canary, recording Kubernetes Events, as the test plays the
// kubelet and Sluice's own GAMMA status writer accepts the routes.
func TestControllerCommand(t *testing.T) {
	if cmd, _, err := newRootCmd(io.Discard, io.Discard).Find([]string{"controller"}); err != nil || cmd.Name() != "controller" {
		t.Fatalf("sluice has no controller command (%v)", err)
	}
	cfg, c := envtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute) // a failure guard
	defer cancel()

	o := &controllerOptions{
		kubeconfig:      envtest.Kubeconfig(t, cfg),
		metricsAddr:     freeLoopbackAddr(t),
		healthAddr:      freeLoopbackAddr(t),
		leaderElect:     true,
		leaderNamespace: "default",
		leaderID:        "sluice-controller-test",
		telemetryAddr:   "http://127.0.0.1:1", // no check runs during initialization
		controllerName:  ck.DefaultControllerName,
		workers:         2,
		logLevel:        "info",

		skipNameValidation: true, // go test -count=2
	}
	runCtx, stop := context.WithCancel(ctx)
	logs := &controllerLogs{}
	done := make(chan error, 1)
	logger, err := roleLogger("controller", o.logLevel, logs)
	if err != nil {
		t.Fatal(err)
	}
	// The waits below end early, with the reason, if the controller does.
	ctx, endWaits := context.WithCancelCause(ctx)
	defer endWaits(nil)
	go func() {
		err := runController(runCtx, o, logger)
		endWaits(fmt.Errorf("the controller ended: %v", err))
		done <- err
	}()

	// The destination service's side: Sluice's own GAMMA status writer
	// accepts the routes the controller writes.
	if ck.DefaultControllerName != string(meshk8s.ControllerName) {
		t.Fatalf("the controller waits for %s, the destination writes %s", ck.DefaultControllerName, meshk8s.ControllerName)
	}
	src, err := meshk8s.NewSourceForConfig(cfg, meshk8s.Options{Log: logger})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gatewayclient.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	statusDone := make(chan error, 2)
	go func() { statusDone <- src.Run(runCtx) }()
	go func() { statusDone <- meshk8s.NewStatusWriter(src, gw, logger).Run(runCtx) }()

	defer func() {
		stop()
		for i := range 3 {
			var err error
			what := "the controller"
			select {
			case err = <-done:
			case err = <-statusDone:
				what = "the destination's source or status writer"
			case <-time.After(time.Minute):
				t.Errorf("%d of 3 runs did not stop within a minute of their context's end", 3-i)
				return
			}
			if err != nil {
				t.Errorf("%s ended with %v", what, err)
			}
		}
		if t.Failed() {
			t.Logf("controller logs:\n%s", logs.String())
		}
	}()

	const ns = "demo"
	createObject(ctx, t, c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	labels := map[string]string{"app": "podinfo"}
	createObject(ctx, t, c, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "podinfo"},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "podinfo:1"}}},
			},
		},
	})
	createObject(ctx, t, c, &v1beta1.Canary{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "podinfo"},
		Spec: v1beta1.CanarySpec{
			TargetRef: v1beta1.LocalObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "podinfo"},
			Service:   v1beta1.CanaryService{Port: 9898},
			Analysis:  &v1beta1.CanaryAnalysis{Interval: "30s", Threshold: 1, StepWeight: 50},
		},
	})

	// Play the kubelet and the destination service until the canary is
	// initialized: the controller reacts to each change.
	key := types.NamespacedName{Namespace: ns, Name: "podinfo"}
	waitFor(ctx, t, "the canary to be initialized", func() (bool, string) {
		var deps appsv1.DeploymentList
		if err := c.List(ctx, &deps, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		for i := range deps.Items {
			d := &deps.Items[i]
			n := *d.Spec.Replicas
			if d.Status.ObservedGeneration != d.Generation || d.Status.AvailableReplicas != n {
				d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n}
				_ = c.Status().Update(ctx, d)
			}
		}
		cn := &v1beta1.Canary{}
		if err := c.Get(ctx, key, cn); err != nil {
			return false, err.Error()
		}
		return cn.Status.Phase == v1beta1.PhaseInitialized, fmt.Sprintf("phase %q, message %q", cn.Status.Phase, cn.Status.Message)
	})

	route := &gatewayv1.HTTPRoute{}
	if err := c.Get(ctx, key, route); err != nil {
		t.Fatalf("reading the canary's route: %v", err)
	}
	if len(route.Status.Parents) != 1 {
		t.Fatalf("route status parents = %+v, want one", route.Status.Parents)
	}
	if accepted := meta.FindStatusCondition(route.Status.Parents[0].Conditions, "Accepted"); route.Status.Parents[0].ControllerName != meshk8s.ControllerName ||
		accepted == nil || accepted.Status != metav1.ConditionTrue || accepted.ObservedGeneration != route.Generation {
		t.Errorf("route status = %+v, want Accepted by %s for generation %d", route.Status, meshk8s.ControllerName, route.Generation)
	}

	waitFor(ctx, t, "the leader-election Lease", func() (bool, string) {
		lease := &coordinationv1.Lease{}
		err := c.Get(ctx, types.NamespacedName{Namespace: "default", Name: o.leaderID}, lease)
		return err == nil && lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity != "", fmt.Sprint(err)
	})
	waitFor(ctx, t, "an Initialized Event about the canary", func() (bool, string) {
		var list eventsv1.EventList
		if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, e := range list.Items {
			seen = append(seen, e.Reason)
			if e.Reason == "Initialized" && e.Regarding.Kind == "Canary" && e.Regarding.Name == "podinfo" && e.ReportingController != "" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("events: %v", seen)
	})
	for _, probe := range []struct{ addr, path, want string }{
		{o.healthAddr, "/healthz", "ok"},
		{o.healthAddr, "/readyz", "ok"},
		{o.metricsAddr, "/metrics", `sluice_canary_status{name="podinfo",namespace="demo"} 1`},
		{o.metricsAddr, "/metrics", `controller_runtime_reconcile_total{controller="canary"`},
	} {
		waitFor(ctx, t, probe.path+" to answer "+probe.want, func() (bool, string) {
			body, err := getBody(ctx, "http://"+probe.addr+probe.path)
			if err != nil {
				return false, err.Error()
			}
			return strings.Contains(body, probe.want), body
		})
	}
}

func createObject(ctx context.Context, t *testing.T, c client.Client, obj client.Object) {
	t.Helper()
	if err := c.Create(ctx, obj); err != nil {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

// waitFor calls f until it reports done, failing the test with f's last
// message if ctx ends first.
func waitFor(ctx context.Context, t *testing.T, what string, f func() (bool, string)) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, msg := f()
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			if len(msg) > 2000 {
				msg = msg[:2000] + "…"
			}
			t.Fatalf("waiting for %s: %v; last: %s", what, context.Cause(ctx), msg)
		case <-tick.C:
		}
	}
}

func getBody(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return string(body), err
}

// freeLoopbackAddr returns a loopback address with a port free a moment ago, for
// the servers of the controller, which take addresses rather than
// listeners.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// controllerLogs is a bytes.Buffer safe for concurrent writes.
type controllerLogs struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *controllerLogs) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *controllerLogs) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
