package canaries

import (
	"context"
	"math"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/analysis"
	"github.com/sluicehq/sluice/canary"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
	"github.com/sluicehq/sluice/local/supervisor"
	"github.com/sluicehq/sluice/mesh/localstore"
	"github.com/sluicehq/sluice/routing"
)

// fakeSupervisor runs nothing: every applied workload is ready at once
// (unless notReady names it).
type fakeSupervisor struct {
	mu       sync.Mutex
	applied  map[string]supervisor.Workload
	notReady map[string]bool
}

func (f *fakeSupervisor) Apply(w supervisor.Workload) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.applied == nil {
		f.applied = map[string]supervisor.Workload{}
	}
	f.applied[w.Key()] = w
}

func (f *fakeSupervisor) Delete(ns, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.applied, ns+"/"+name)
}

func (f *fakeSupervisor) Workloads() []supervisor.WorkloadStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []supervisor.WorkloadStatus
	for k, w := range f.applied {
		ready := w.Replicas
		if f.notReady[k] {
			ready = 0
		}
		out = append(out, supervisor.WorkloadStatus{Namespace: w.Namespace, Name: w.Name, Revision: w.Revision,
			Replicas: w.Replicas, Current: w.Replicas, Ready: ready})
	}
	return out
}

func (f *fakeSupervisor) get(key string) (supervisor.Workload, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w, ok := f.applied[key]
	return w, ok
}

// fakeAnalyzer answers every check with the success rate it holds.
type fakeAnalyzer struct {
	mu   sync.Mutex
	rate float64
}

func (a *fakeAnalyzer) Analyze(ctx context.Context, c *v1beta1.Canary, rev string) ([]analysis.Result, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []analysis.Result
	for _, m := range c.Spec.Analysis.Metrics {
		chk, _ := canary.MetricCheck(&m)
		v := a.rate
		verdict := analysis.Pass
		if chk.Min != nil && v < *chk.Min {
			verdict = analysis.Fail
		}
		out = append(out, analysis.Result{Name: m.Name, Value: v, Verdict: verdict, Min: chk.Min, Max: chk.Max})
	}
	return out, nil
}

const canaryYAML = `
apiVersion: sluice.dev/v1beta1
kind: Canary
metadata:
  name: backend
  namespace: default
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: backend}
  service: {port: 80}
  analysis:
    interval: 10s
    threshold: 2
    stepWeight: 50
    maxWeight: 50
    metrics:
    - name: request-success-rate
      thresholdRange: {min: 99}
      interval: 10s
`

func canaryObject(t *testing.T) *unstructured.Unstructured {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal([]byte(canaryYAML), &m); err != nil {
		t.Fatal(err)
	}
	return &unstructured.Unstructured{Object: m}
}

func backend(rev string) supervisor.Workload {
	return supervisor.Workload{Namespace: "default", Name: "backend", Replicas: 2, Revision: rev,
		Labels: map[string]string{"app": "backend"}, Command: []string{"app"}}
}

// harness runs a controller over a real store and a fake supervisor with a
// fake clock.
type harness struct {
	t     *testing.T
	ctrl  *Controller
	sup   *fakeSupervisor
	store *localstore.Store
	an    *fakeAnalyzer
	now   time.Time
	dir   string
}

func newHarness(t *testing.T, dir string) *harness {
	h := &harness{t: t, sup: &fakeSupervisor{}, store: localstore.New(), an: &fakeAnalyzer{rate: 100},
		now: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC), dir: dir}
	ctrl, err := New(Options{StateDir: dir, Supervisor: h.sup, Store: h.store, Analyzer: h.an,
		Clock: func() time.Time { return h.now }})
	if err != nil {
		t.Fatal(err)
	}
	h.ctrl = ctrl
	return h
}

// tick advances the fake clock and ticks every canary.
func (h *harness) tick(d time.Duration) v1beta1.CanaryStatus {
	h.now = h.now.Add(d)
	h.ctrl.mu.Lock()
	for _, e := range h.ctrl.entries {
		h.ctrl.tickLocked(context.Background(), e)
	}
	h.ctrl.mu.Unlock()
	c, ok := h.ctrl.Get("default", "backend")
	if !ok {
		h.t.Fatal("canary default/backend not found")
	}
	return c.Status
}

// until ticks every 5 s until the phase is want (or fails after 60 ticks).
func (h *harness) until(want v1beta1.CanaryPhase) v1beta1.CanaryStatus {
	h.t.Helper()
	var st v1beta1.CanaryStatus
	for range 60 {
		st = h.tick(5 * time.Second)
		if st.Phase == want {
			return st
		}
	}
	h.t.Fatalf("phase %s never reached; last %s: %s", want, st.Phase, st.Message)
	return st
}

func (h *harness) weights() (int32, int32) {
	rt, ok := h.store.HTTPRoute("default", "backend")
	if !ok {
		h.t.Fatal("no HTTPRoute default/backend")
	}
	ws := routing.BackendWeights(rt, "backend-primary", "backend-canary")
	if len(ws) != 1 {
		h.t.Fatalf("route has %d split rules", len(ws))
	}
	return ws[0].Weights["backend-primary"], ws[0].Weights["backend-canary"]
}

func TestControllerPromotesAndRollsBack(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.ctrl.ApplyWorkload(backend("r1"))
	h.ctrl.SetObjects([]*unstructured.Unstructured{canaryObject(t)})

	st := h.until(v1beta1.PhaseInitialized)
	p, ok := h.sup.get("default/backend-primary")
	if !ok || p.Revision != "r1" || p.Labels["app"] != "backend-primary" || p.Replicas != 2 {
		t.Fatalf("primary = %+v, %v; want revision r1, app=backend-primary, 2 replicas", p, ok)
	}
	if tg, _ := h.sup.get("default/backend"); tg.Replicas != 0 {
		t.Errorf("target has %d replicas after initialization, want 0", tg.Replicas)
	}
	for _, n := range []string{"backend", "backend-primary", "backend-canary"} {
		svc, ok := h.store.ServiceObject("default", n)
		if !ok {
			t.Fatalf("no Service %s", n)
		}
		want := "backend-primary"
		if n == "backend-canary" {
			want = "backend"
		}
		if svc.Spec.Selector["app"] != want {
			t.Errorf("Service %s selects app=%s, want %s", n, svc.Spec.Selector["app"], want)
		}
	}
	if pw, cw := h.weights(); pw != 100 || cw != 0 {
		t.Errorf("weights %d/%d after initialization, want 100/0", pw, cw)
	}
	_ = st

	// A new revision is rolled out and promoted.
	h.ctrl.ApplyWorkload(backend("r2"))
	st = h.until(v1beta1.PhaseProgressing)
	if tg, _ := h.sup.get("default/backend"); tg.Replicas != 2 || tg.Revision != "r2" {
		t.Errorf("canary = %+v, want 2 replicas of r2", tg)
	}
	sawHalf := false
	for range 60 {
		st = h.tick(5 * time.Second)
		if pw, cw := h.weights(); pw == 50 && cw == 50 {
			sawHalf = true
		}
		if st.Phase == v1beta1.PhaseSucceeded {
			break
		}
	}
	if st.Phase != v1beta1.PhaseSucceeded || st.LastPromotedRevision != "r2" || !sawHalf {
		t.Fatalf("phase %s promoted %q sawHalf=%v: %s", st.Phase, st.LastPromotedRevision, sawHalf, st.Message)
	}
	if p, _ := h.sup.get("default/backend-primary"); p.Revision != "r2" {
		t.Errorf("primary runs %s after promotion, want r2", p.Revision)
	}
	if pw, cw := h.weights(); pw != 100 || cw != 0 {
		t.Errorf("weights %d/%d after promotion, want 100/0", pw, cw)
	}

	// A bad revision is rolled back; the primary keeps r2.
	h.an.mu.Lock()
	h.an.rate = 50
	h.an.mu.Unlock()
	h.ctrl.ApplyWorkload(backend("r3"))
	st = h.until(v1beta1.PhaseFailed)
	if st.ObservedRevision != "r3" || st.LastPromotedRevision != "r2" {
		t.Errorf("observed %s promoted %s, want r3 and r2", st.ObservedRevision, st.LastPromotedRevision)
	}
	if p, _ := h.sup.get("default/backend-primary"); p.Revision != "r2" {
		t.Errorf("primary runs %s after rollback, want r2", p.Revision)
	}
	if pw, cw := h.weights(); pw != 100 || cw != 0 {
		t.Errorf("weights %d/%d after rollback, want 100/0", pw, cw)
	}
	if tg, _ := h.sup.get("default/backend"); tg.Replicas != 0 {
		t.Errorf("canary has %d replicas after rollback, want 0", tg.Replicas)
	}
}

func TestControllerResumesFromState(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, dir)
	h.ctrl.ApplyWorkload(backend("r1"))
	h.ctrl.SetObjects([]*unstructured.Unstructured{canaryObject(t)})
	h.until(v1beta1.PhaseInitialized)
	h.ctrl.ApplyWorkload(backend("r2"))
	st := h.until(v1beta1.PhaseProgressing)
	for st.CanaryWeight == 0 {
		st = h.tick(5 * time.Second)
	}

	// A new controller over a new store (a restarted sluice up).
	h2 := newHarness(t, dir)
	h2.now = h.now
	h2.ctrl.ApplyWorkload(backend("r2"))
	if p, ok := h2.sup.get("default/backend-primary"); !ok || p.Revision != "r1" {
		t.Fatalf("restored primary = %+v, %v; want revision r1 before the Canary is read", p, ok)
	}
	h2.ctrl.SetObjects([]*unstructured.Unstructured{canaryObject(t)})
	st2 := h2.tick(time.Second)
	if st2.ObservedRevision != "r2" || st2.Phase == v1beta1.PhaseInitializing || st2.Phase == v1beta1.PhaseSucceeded {
		t.Fatalf("after restart: phase %s observed %s: %s", st2.Phase, st2.ObservedRevision, st2.Message)
	}
	var final v1beta1.CanaryStatus
	for range 60 {
		final = h2.tick(5 * time.Second)
		if final.Phase == v1beta1.PhaseSucceeded {
			break
		}
	}
	if final.Phase != v1beta1.PhaseSucceeded || final.LastPromotedRevision != "r2" {
		t.Fatalf("after restart: phase %s promoted %s: %s", final.Phase, final.LastPromotedRevision, final.Message)
	}
}

func TestControllerManualAbort(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.ctrl.ApplyWorkload(backend("r1"))
	h.ctrl.SetObjects([]*unstructured.Unstructured{canaryObject(t)})
	h.until(v1beta1.PhaseInitialized)
	h.ctrl.ApplyWorkload(backend("r2"))
	h.until(v1beta1.PhaseProgressing)
	if err := h.ctrl.Request("default", "backend", canary.ManualAbort); err != nil {
		t.Fatal(err)
	}
	st := h.until(v1beta1.PhaseFailed)
	if st.LastPromotedRevision != "r1" {
		t.Errorf("promoted %s after abort, want r1", st.LastPromotedRevision)
	}
	if err := h.ctrl.Request("default", "nope", canary.ManualAbort); err == nil {
		t.Error("a request for an unknown canary was accepted")
	}
	if err := h.ctrl.Request("default", "backend", "explode"); err == nil {
		t.Error("an unknown action was accepted")
	}
}

func TestPrimaryLabels(t *testing.T) {
	for _, tc := range []struct {
		in   map[string]string
		want map[string]string
	}{
		{map[string]string{"app": "backend", "tier": "web"}, map[string]string{"app": "backend-primary", "tier": "web"}},
		{map[string]string{"tier": "web"}, map[string]string{"app": "backend-primary", "tier": "web"}},
	} {
		got := primaryLabelsOf(tc.in, "backend", "backend-primary")
		if len(got) != len(tc.want) {
			t.Errorf("primaryLabelsOf(%v) = %v, want %v", tc.in, got, tc.want)
		}
		for k, v := range tc.want {
			if got[k] != v {
				t.Errorf("primaryLabelsOf(%v) = %v, want %v", tc.in, got, tc.want)
			}
		}
	}
	_ = math.NaN
}

func TestControllerRunTicks(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.ctrl.opts.Clock = nil
	h.ctrl.driver.Clock = nil
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = h.ctrl.Run(ctx) }()
	defer func() { cancel(); <-done }()
	h.ctrl.ApplyWorkload(backend("r1"))
	h.ctrl.SetObjects([]*unstructured.Unstructured{canaryObject(t)})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, ok := h.ctrl.Get("default", "backend"); ok && c.Status.Phase == v1beta1.PhaseInitialized {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	c, _ := h.ctrl.Get("default", "backend")
	t.Fatalf("Run never initialized the canary: %s: %s", c.Status.Phase, c.Status.Message)
}
