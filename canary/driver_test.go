package canary

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/analysis"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// cluster is an in-memory world behind the driver's interfaces, like
// simulate_test.go's fakeWorld but reached only through the Driver: the
// workloads, the route, the analysis, the webhooks, and what was notified
// and recorded.
type cluster struct {
	t *testing.T

	target       Workload
	targetUp     bool
	warm         int // ticks before a scaled-up or changed target is ready
	targetWarmup int
	primary      Workload
	primaryWait  int
	primaryLag   int
	services     bool
	route        Route

	// fail makes the next call of the named method fail with the error
	// (once); failed counts the failures injected.
	fail   map[string]error
	failed int

	// analyse answers Analyze; nil passes every metric (pass()).
	analyse func(c *v1beta1.Canary, rev string) []analysis.Result
	// answer answers webhook calls; nil answers OK.
	answer func(t v1beta1.HookType, name string) HookAnswer

	calls      []string // world-changing calls, in order
	analyses   int
	hooks      []string // "type/name@phase"
	eventHooks []string // "hook: Event message"
	notes      []Notification
	noted      []*v1beta1.Canary // the canary each note was sent with
	events     []string          // "Type Reason: message"
	weights    []string          // each distinct route state
}

func newCluster(t *testing.T) *cluster {
	return &cluster{
		t:        t,
		target:   Workload{Exists: true, Revision: "r1", Replicas: 2},
		targetUp: true,
		fail:     map[string]error{},
	}
}

// check fails the call named what if a failure was injected for it.
func (w *cluster) check(what string) error {
	if err, ok := w.fail[what]; ok {
		delete(w.fail, what)
		w.failed++
		return err
	}
	return nil
}

func (w *cluster) setRevision(rev string) {
	w.target.Revision = rev
	w.warm = w.targetWarmup
}

// passTime is the time between two ticks: workloads become ready.
func (w *cluster) passTime() {
	w.warm--
	w.primaryWait--
}

func (w *cluster) recordRoute() {
	r := w.route
	s := fmt.Sprintf("%d/%d", r.PrimaryWeight, r.CanaryWeight)
	if r.Mirrored {
		s += " mirror"
	}
	if r.Matched {
		s += " match"
	}
	if len(w.weights) == 0 || w.weights[len(w.weights)-1] != s {
		w.weights = append(w.weights, s)
	}
}

func (w *cluster) countCalls(prefix string) int {
	n := 0
	for _, c := range w.calls {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

func (w *cluster) notesOf(event string) []Notification {
	var out []Notification
	for _, n := range w.notes {
		if n.Event == event {
			out = append(out, n)
		}
	}
	return out
}

// fakeWorkloads is the cluster's Workloads.
type fakeWorkloads struct{ *cluster }

func (w fakeWorkloads) Observe(_ context.Context, c *v1beta1.Canary) (Workload, Workload, bool, error) {
	if err := w.check("ObserveWorkloads"); err != nil {
		return Workload{}, Workload{}, false, err
	}
	target := w.target
	target.Ready = w.targetUp && w.warm <= 0
	primary := w.primary
	primary.Ready = primary.Exists && w.primaryWait <= 0
	return target, primary, w.services, nil
}

func (w fakeWorkloads) EnsurePrimary(_ context.Context, c *v1beta1.Canary) error {
	if err := w.check("EnsurePrimary"); err != nil {
		return err
	}
	w.calls = append(w.calls, "EnsurePrimary")
	if !w.primary.Exists {
		w.primary = Workload{Exists: true, Revision: w.target.Revision, Replicas: w.target.Replicas}
		w.primaryWait = w.primaryLag
	}
	return nil
}

func (w fakeWorkloads) EnsureServices(context.Context, *v1beta1.Canary) error {
	if err := w.check("EnsureServices"); err != nil {
		return err
	}
	w.calls = append(w.calls, "EnsureServices")
	w.services = true
	return nil
}

func (w fakeWorkloads) PromotePrimary(_ context.Context, _ *v1beta1.Canary, rev string) error {
	if err := w.check("PromotePrimary"); err != nil {
		return err
	}
	w.calls = append(w.calls, "PromotePrimary "+rev)
	if rev != w.target.Revision {
		w.t.Errorf("PromotePrimary of %q while the target runs %q", rev, w.target.Revision)
	}
	w.primary.Revision = rev
	w.primaryWait = w.primaryLag
	return nil
}

func (w fakeWorkloads) ScaleCanary(_ context.Context, _ *v1beta1.Canary, up bool) error {
	if err := w.check("ScaleCanary"); err != nil {
		return err
	}
	w.calls = append(w.calls, fmt.Sprintf("ScaleCanary up=%v", up))
	if up && !w.targetUp {
		w.warm = w.targetWarmup
	}
	w.targetUp = up
	return nil
}

func (w fakeWorkloads) ScaleTarget(_ context.Context, _ *v1beta1.Canary, zero bool) error {
	if err := w.check("ScaleTarget"); err != nil {
		return err
	}
	w.calls = append(w.calls, fmt.Sprintf("ScaleTarget zero=%v", zero))
	w.targetUp = !zero
	return nil
}

// fakeRouter is the cluster's Router.
type fakeRouter struct{ *cluster }

func (w fakeRouter) Observe(context.Context, *v1beta1.Canary) (Route, error) {
	if err := w.check("ObserveRoute"); err != nil {
		return Route{}, err
	}
	return w.route, nil
}

func (w fakeRouter) EnsureRoute(context.Context, *v1beta1.Canary) error {
	if err := w.check("EnsureRoute"); err != nil {
		return err
	}
	w.calls = append(w.calls, "EnsureRoute")
	if !w.route.Exists {
		w.route = Route{Exists: true, Accepted: true, PrimaryWeight: 100}
		w.recordRoute()
	}
	return nil
}

func (w fakeRouter) SetWeights(_ context.Context, _ *v1beta1.Canary, s SetWeights) error {
	if err := w.check("SetWeights"); err != nil {
		return err
	}
	w.calls = append(w.calls, fmt.Sprintf("SetWeights %d/%d", s.Primary, s.Canary))
	if s.Primary+s.Canary != 100 {
		w.t.Errorf("SetWeights %+v does not add up to 100", s)
	}
	w.route = Route{Exists: true, Accepted: true, PrimaryWeight: s.Primary, CanaryWeight: s.Canary, Mirrored: s.Mirror, Matched: s.Match}
	w.recordRoute()
	return nil
}

// fakeAnalyzer is the cluster's Analyzer.
type fakeAnalyzer struct{ *cluster }

func (w fakeAnalyzer) Analyze(_ context.Context, c *v1beta1.Canary, rev string) ([]analysis.Result, error) {
	if err := w.check("Analyze"); err != nil {
		return nil, err
	}
	w.analyses++
	if rev != w.target.Revision {
		w.t.Errorf("analysis of revision %q while the target runs %q", rev, w.target.Revision)
	}
	if w.analyse != nil {
		return w.analyse(c, rev), nil
	}
	return pass().Results, nil
}

// fakeHooks is the cluster's Hooks.
type fakeHooks struct{ *cluster }

func (w fakeHooks) Call(_ context.Context, c *v1beta1.Canary, h v1beta1.CanaryWebhook, phase v1beta1.CanaryPhase) HookAnswer {
	w.hooks = append(w.hooks, fmt.Sprintf("%s/%s@%s", h.GetType(), h.Name, phase))
	if w.answer != nil {
		return w.answer(h.GetType(), h.Name)
	}
	return HookAnswer{Name: h.Name, OK: true, Message: "200 OK"}
}

func (w fakeHooks) Event(_ context.Context, c *v1beta1.Canary, h v1beta1.CanaryWebhook, n Notification) HookAnswer {
	if h.GetType() != v1beta1.EventHook {
		w.t.Errorf("Event sent to %s webhook %s", h.GetType(), h.Name)
	}
	w.eventHooks = append(w.eventHooks, h.Name+": "+n.Event+" "+n.Message)
	return HookAnswer{Name: h.Name, OK: true}
}

// fakeNotifier is the cluster's Notifier.
type fakeNotifier struct{ *cluster }

func (w fakeNotifier) Notify(c *v1beta1.Canary, n Notification) error {
	w.notes = append(w.notes, n)
	w.noted = append(w.noted, c.DeepCopy())
	return nil
}

// fakeEvents is the cluster's Events.
type fakeEvents struct{ *cluster }

func (w fakeEvents) Event(_ *v1beta1.Canary, eventType, reason, msg string) {
	w.events = append(w.events, eventType+" "+reason+": "+msg)
}

// harness drives a canary through a Driver over the cluster with a fake
// clock, persisting the status through JSON as the API server does.
type harness struct {
	*cluster
	t      *testing.T
	d      *Driver
	c      *v1beta1.Canary
	now    time.Time
	manual *ManualAction
	reg    *prometheus.Registry

	ticks  int
	errs   []error
	fails  []failedTick
	phases []v1beta1.CanaryPhase
	// callsBefore is len(calls) when the last tick started.
	callsBefore int
	// after runs after each successful tick, before time passes.
	after func(h *harness)
}

func newHarness(t *testing.T, c *v1beta1.Canary) *harness {
	w := newCluster(t)
	h := &harness{cluster: w, t: t, c: c, now: t0, reg: prometheus.NewPedanticRegistry()}
	h.d = &Driver{
		Workloads: fakeWorkloads{w},
		Router:    fakeRouter{w},
		Analyzer:  fakeAnalyzer{w},
		Hooks:     fakeHooks{w},
		Notifier:  fakeNotifier{w},
		Events:    fakeEvents{w},
		Clock:     func() time.Time { return h.now },
		Metrics:   NewMetrics(h.reg),
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	return h
}

// failedTick is what a failed tick did.
type failedTick struct {
	err           error
	after         time.Duration
	notes, events int // sent during the tick
}

// tick runs one tick and persists its status; time then passes by the
// requeue.
func (h *harness) tick() (time.Duration, error) {
	h.t.Helper()
	h.ticks++
	before := h.c.DeepCopy()
	h.callsBefore = len(h.calls)
	notes, events := len(h.notes), len(h.events)
	st, after, err := h.d.Tick(context.Background(), h.c, h.manual, "")
	if !reflect.DeepEqual(before, h.c) {
		h.t.Fatalf("tick %d: Tick modified its canary", h.ticks)
	}
	if err != nil {
		h.errs = append(h.errs, err)
		h.fails = append(h.fails, failedTick{err, after, len(h.notes) - notes, len(h.events) - events})
		if !reflect.DeepEqual(st, before.Status) {
			h.t.Errorf("tick %d failed (%v) but returned a changed status", h.ticks, err)
		}
	} else {
		h.c.Status = roundTrip(h.t, st)
		if p := h.c.Status.Phase; len(h.phases) == 0 || h.phases[len(h.phases)-1] != p {
			h.phases = append(h.phases, p)
		}
		if h.after != nil {
			h.after(h)
		}
	}
	if after <= 0 {
		h.t.Fatalf("tick %d: requeue %v (err %v)", h.ticks, after, err)
	}
	h.passTime()
	h.now = h.now.Add(after)
	return after, err
}

// roundTrip returns st after a trip through JSON, as persisted.
func roundTrip(t *testing.T, st v1beta1.CanaryStatus) v1beta1.CanaryStatus {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatalf("status does not marshal: %v", err)
	}
	var out v1beta1.CanaryStatus
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// runUntil ticks until done, at most max times.
func (h *harness) runUntil(max int, done func(*v1beta1.Canary) bool) {
	h.t.Helper()
	for range max {
		h.tick()
		if done(h.c) {
			return
		}
	}
	h.t.Fatalf("not done after %d ticks: phase %s, message %q, weights %v, errors %v",
		max, h.c.Status.Phase, h.c.Status.Message, h.weights, h.errs)
}

// initialize brings the canary to Initialized and checks the world.
func (h *harness) initialize() {
	h.t.Helper()
	h.runUntil(20, phaseIs(v1beta1.PhaseInitialized))
	if h.targetUp || !h.services || !h.route.Exists || h.route.PrimaryWeight != 100 || h.primary.Revision != "r1" {
		h.t.Fatalf("initialized world: target up %v services %v route %+v primary %+v", h.targetUp, h.services, h.route, h.primary)
	}
}

// gauge reads a gauge or counter of the harness's registry.
func (h *harness) value(c prometheus.Collector) float64 {
	h.t.Helper()
	return testutil.ToFloat64(c)
}

// histogramCount returns the number of observations of the histogram name
// with the given labels.
func (h *harness) histogramCount(name string, labels map[string]string) uint64 {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue metrics
				}
			}
			return m.GetHistogram().GetSampleCount()
		}
	}
	return 0
}

func TestDriverHealthyRolloutPromotes(t *testing.T) {
	h := newHarness(t, newCanary(hook(v1beta1.EventHook, "sink")))
	h.primaryLag, h.targetWarmup = 2, 2
	h.initialize()
	if got := h.value(h.d.Metrics.status.WithLabelValues("podinfo", "test")); got != StatusSucceeded {
		t.Errorf("status gauge after initialization = %v, want %v", got, StatusSucceeded)
	}

	h.setRevision("r2")
	sawRunning := false
	h.after = func(h *harness) {
		if h.c.Status.Phase == v1beta1.PhaseProgressing &&
			h.value(h.d.Metrics.status.WithLabelValues("podinfo", "test")) == StatusRunning {
			sawRunning = true
		}
	}
	h.runUntil(200, phaseIs(v1beta1.PhaseSucceeded, v1beta1.PhaseFailed))

	st := h.c.Status
	if st.Phase != v1beta1.PhaseSucceeded || st.LastPromotedRevision != "r2" || st.Message != "promoted revision r2" {
		t.Fatalf("phase %s promoted %q message %q", st.Phase, st.LastPromotedRevision, st.Message)
	}
	if want := []string{"100/0", "90/10", "80/20", "70/30", "60/40", "50/50", "100/0"}; !slices.Equal(h.weights, want) {
		t.Errorf("weights %v, want %v", h.weights, want)
	}
	wantPhases := []v1beta1.CanaryPhase{
		v1beta1.PhaseInitializing, v1beta1.PhaseInitialized, v1beta1.PhaseProgressing,
		v1beta1.PhasePromoting, v1beta1.PhaseFinalising, v1beta1.PhaseSucceeded,
	}
	if !slices.Equal(h.phases, wantPhases) {
		t.Errorf("phases %v, want %v", h.phases, wantPhases)
	}
	if h.primary.Revision != "r2" || h.targetUp {
		t.Errorf("primary runs %q, canary up %v", h.primary.Revision, h.targetUp)
	}
	if h.analyses != 5 || h.countCalls("PromotePrimary") != 1 {
		t.Errorf("%d analyses, %d promotions: want 5 and 1", h.analyses, h.countCalls("PromotePrimary"))
	}
	if len(h.errs) != 0 {
		t.Errorf("errors: %v", h.errs)
	}
	for _, e := range []string{EventNewRevision, EventPromoting, EventSucceeded} {
		if n := len(h.notesOf(e)); n != 1 {
			t.Errorf("%s notified %d times, want once", e, n)
		}
	}
	if n := len(h.notesOf(EventAdvanced)); n != 5 {
		t.Errorf("%d weight steps notified, want 5", n)
	}
	// Every note went to the event webhook and into the events, in order.
	if len(h.eventHooks) != len(h.notes) {
		t.Errorf("%d event webhook calls for %d notes", len(h.eventHooks), len(h.notes))
	}
	for i, n := range h.notes {
		if i < len(h.eventHooks) && h.eventHooks[i] != "sink: "+n.Event+" "+n.Message {
			t.Errorf("event webhook call %d = %q for note %s", i, h.eventHooks[i], n.Event)
		}
		if !n.Time.Equal(h.noted[i].Status.LastTransitionTime.Time) && n.Event == EventSucceeded {
			t.Errorf("Succeeded note at %v, phase changed at %v", n.Time, h.noted[i].Status.LastTransitionTime)
		}
	}
	if last := h.noted[len(h.noted)-1]; last.Status.Phase != v1beta1.PhaseSucceeded {
		t.Errorf("the Succeeded note came with phase %s", last.Status.Phase)
	}
	if !slices.Contains(h.events, "Normal Succeeded: Canary analysis completed successfully, promotion finished.") {
		t.Errorf("events %q", h.events)
	}

	// Metrics.
	m := h.d.Metrics
	if !sawRunning {
		t.Error("sluice_canary_status was never 0 while Progressing")
	}
	for _, c := range []struct {
		name string
		got  prometheus.Collector
		want float64
	}{
		{"status", m.status.WithLabelValues("podinfo", "test"), StatusSucceeded},
		{"primary weight", m.weight.WithLabelValues("podinfo-primary", "test"), 100},
		{"canary weight", m.weight.WithLabelValues("podinfo", "test"), 0},
		{"success rate", m.analysis.WithLabelValues("podinfo", "test", "request-success-rate"), 99.9},
		{"duration (seconds)", m.analysis.WithLabelValues("podinfo", "test", "request-duration"), 0.12},
		{"successes", m.successes.WithLabelValues("podinfo", "test", "canary", AnalysisCompleted), 1},
		{"failures", m.failures.WithLabelValues("podinfo", "test", "canary", AnalysisCompleted), 0},
	} {
		if got := h.value(c.got); got != c.want {
			t.Errorf("%s = %v, want %v", c.name, got, c.want)
		}
	}
	if n := h.histogramCount("sluice_canary_duration_seconds", map[string]string{"name": "podinfo", "namespace": "test"}); n != 5 {
		t.Errorf("duration histogram has %d observations, want one per analysed step (5)", n)
	}
	if n, err := testutil.GatherAndCount(h.reg, "sluice_canary_weight"); err != nil || n != 2 {
		t.Errorf("sluice_canary_weight has %d series (%v), want 2", n, err)
	}
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(`
# HELP sluice_canary_successes_total Total number of canary runs that promoted their revision.
# TYPE sluice_canary_successes_total counter
sluice_canary_successes_total{analysis_status="completed",deployment_strategy="canary",name="podinfo",namespace="test"} 1
`), "sluice_canary_successes_total"); err != nil {
		t.Error(err)
	}

	// Forget removes the canary's series.
	m.Forget(h.c)
	if n, _ := testutil.GatherAndCount(h.reg, "sluice_canary_status", "sluice_canary_weight", "sluice_canary_successes_total"); n != 0 {
		t.Errorf("%d series left after Forget", n)
	}
}

func TestDriverFailingRolloutRollsBack(t *testing.T) {
	h := newHarness(t, newCanary())
	h.initialize()
	h.analyse = func(*v1beta1.Canary, string) []analysis.Result { return failing().Results }
	h.setRevision("r2")
	h.runUntil(100, phaseIs(v1beta1.PhaseSucceeded, v1beta1.PhaseFailed))

	st := h.c.Status
	if st.Phase != v1beta1.PhaseFailed || st.Message != "request-success-rate 91.3% < min 99% (5/5 failed checks)" {
		t.Fatalf("phase %s message %q", st.Phase, st.Message)
	}
	if want := []string{"100/0", "90/10", "100/0"}; !slices.Equal(h.weights, want) {
		t.Errorf("weights %v, want %v", h.weights, want)
	}
	if h.targetUp || h.primary.Revision != "r1" || h.countCalls("PromotePrimary") != 0 {
		t.Errorf("canary up %v, primary %q, %d promotions", h.targetUp, h.primary.Revision, h.countCalls("PromotePrimary"))
	}

	// Notifications name the failing check, with its value and threshold.
	const check = "request-success-rate 91.3% < min 99%"
	halts := h.notesOf(EventCheckFailed)
	if len(halts) != 4 {
		t.Fatalf("%d CheckFailed notes, want 4", len(halts))
	}
	for _, n := range halts {
		if n.FailingCheck != check || n.Alert {
			t.Errorf("CheckFailed note %+v", n)
		}
	}
	rb := h.notesOf(EventRolledBack)
	if len(rb) != 1 {
		t.Fatalf("%d RolledBack notes", len(rb))
	}
	if n := rb[0]; n.FailingCheck != check || !n.Alert || n.Severity != v1beta1.SeverityError ||
		!strings.Contains(n.Message, "Failed checks threshold reached 5") {
		t.Errorf("RolledBack note %+v", n)
	}
	for _, n := range h.notes {
		if n.Event != EventCheckFailed && n.Event != EventRolledBack && n.FailingCheck != "" {
			t.Errorf("%s note has failing check %q", n.Event, n.FailingCheck)
		}
	}
	if !slices.ContainsFunc(h.events, func(e string) bool { return strings.HasPrefix(e, "Warning RolledBack: ") }) {
		t.Errorf("no RolledBack warning in %q", h.events)
	}

	m := h.d.Metrics
	if got := h.value(m.status.WithLabelValues("podinfo", "test")); got != StatusFailed {
		t.Errorf("status gauge %v, want %v", got, StatusFailed)
	}
	if got := h.value(m.failures.WithLabelValues("podinfo", "test", "canary", AnalysisCompleted)); got != 1 {
		t.Errorf("failures %v, want 1", got)
	}
	if got := h.value(m.analysis.WithLabelValues("podinfo", "test", "request-success-rate")); got != 91.3 {
		t.Errorf("success-rate gauge %v, want 91.3", got)
	}
	if got := h.value(m.weight.WithLabelValues("podinfo", "test")); got != 0 {
		t.Errorf("canary weight gauge %v after rollback", got)
	}
}

func TestDriverActionErrorsAreRetried(t *testing.T) {
	for _, tc := range []struct {
		method, action string
		initOnly       bool // called only during initialization
	}{
		{"ObserveWorkloads", "ObserveWorkloads", false},
		{"ObserveRoute", "ObserveRoute", false},
		{"EnsurePrimary", "EnsurePrimary", true},
		{"EnsureServices", "EnsureServices", true},
		{"EnsureRoute", "EnsureRoute", true},
		{"ScaleTarget", "ScaleTarget", true},
		{"ScaleCanary", "ScaleCanary", false},
		{"SetWeights", "SetWeights", false},
		{"Analyze", "RunAnalysis", false},
		{"PromotePrimary", "PromotePrimary", false},
	} {
		t.Run(tc.method, func(t *testing.T) {
			h := newHarness(t, newCanary())
			h.primaryLag, h.targetWarmup = 1, 1
			injected := errors.New("injected failure")
			// Fail the first call during initialization, or during the
			// rollout for what runs there.
			if tc.initOnly {
				h.fail[tc.method] = injected
			}
			h.initialize()
			if !tc.initOnly {
				h.fail[tc.method] = injected
			}
			h.setRevision("r2")
			h.runUntil(200, func(c *v1beta1.Canary) bool {
				return c.Status.Phase == v1beta1.PhaseSucceeded && c.Status.ObservedRevision == "r2" || c.Status.Phase == v1beta1.PhaseFailed
			})

			if h.failed != 1 || len(h.fails) != 1 {
				t.Fatalf("%d failures injected, %d ticks failed: %v", h.failed, len(h.fails), h.errs)
			}
			ft := h.fails[0]
			if !errors.Is(ft.err, injected) || !strings.Contains(ft.err.Error(), tc.action+": ") || !strings.Contains(ft.err.Error(), "test/podinfo") {
				t.Errorf("error %q does not wrap the failure or name %s and the canary", ft.err, tc.action)
			}
			if ft.after != DefaultRetryAfter {
				t.Errorf("failed tick requeues after %v, want %v", ft.after, DefaultRetryAfter)
			}
			if ft.notes != 0 || ft.events != 1 {
				t.Errorf("failed tick sent %d notes and %d events, want none and one warning", ft.notes, ft.events)
			}
			if !slices.Contains(h.events, "Warning Failed"+tc.action+": "+tc.action+": injected failure") {
				t.Errorf("no failure warning in %q", h.events)
			}
			// Retried, the rollout ends as if nothing had failed.
			st := h.c.Status
			if st.Phase != v1beta1.PhaseSucceeded || st.LastPromotedRevision != "r2" || h.primary.Revision != "r2" || h.targetUp {
				t.Fatalf("phase %s promoted %q primary %q canary up %v: %s", st.Phase, st.LastPromotedRevision, h.primary.Revision, h.targetUp, st.Message)
			}
			if want := []string{"100/0", "90/10", "80/20", "70/30", "60/40", "50/50", "100/0"}; !slices.Equal(h.weights, want) {
				t.Errorf("weights %v, want %v", h.weights, want)
			}
			for _, e := range []string{EventInitialized, EventNewRevision, EventPromoting, EventSucceeded} {
				if n := len(h.notesOf(e)); n != 1 {
					t.Errorf("%s notified %d times, want once", e, n)
				}
			}
			if n := len(h.notesOf(EventAdvanced)); n != 5 {
				t.Errorf("%d weight steps notified, want 5", n)
			}
			if got := h.value(h.d.Metrics.successes.WithLabelValues("podinfo", "test", "canary", AnalysisCompleted)); got != 1 {
				t.Errorf("successes %v, want 1", got)
			}
		})
	}
}

func TestDriverHooksInOrderWithPhase(t *testing.T) {
	c := newCanary(
		hook(v1beta1.ConfirmRolloutHook, "start"),
		hook(v1beta1.PreRolloutHook, "smoke"),
		hook(v1beta1.RolloutHook, "load"),
		hook(v1beta1.ConfirmTrafficIncreaseHook, "more"),
		hook(v1beta1.ConfirmPromotionHook, "ship"),
		hook(v1beta1.PostRolloutHook, "report"),
		hook(v1beta1.RollbackHook, "undo"),
		hook(v1beta1.EventHook, "sink"),
	)
	h := newHarness(t, c)
	h.answer = func(t v1beta1.HookType, name string) HookAnswer {
		// A rollback hook that succeeds asks for a rollback: it does not.
		return HookAnswer{OK: t != v1beta1.RollbackHook, Message: string(t) + " hook " + name + ": 200 OK"}
	}
	h.initialize()
	if len(h.hooks) != 0 {
		t.Fatalf("hooks called during initialization: %v", h.hooks)
	}
	h.setRevision("r2")
	h.runUntil(200, phaseIs(v1beta1.PhaseSucceeded, v1beta1.PhaseFailed))
	if h.c.Status.Phase != v1beta1.PhaseSucceeded {
		t.Fatalf("phase %s: %s", h.c.Status.Phase, h.c.Status.Message)
	}

	want := []string{
		"confirm-rollout/start@Initialized",
		"rollback/undo@Progressing", "pre-rollout/smoke@Progressing", "confirm-traffic-increase/more@Progressing",
	}
	for range 4 { // the analysed steps at 10, 20, 30 and 40%
		want = append(want, "rollback/undo@Progressing", "rollout/load@Progressing", "confirm-traffic-increase/more@Progressing")
	}
	want = append(want, "rollback/undo@Progressing", "rollout/load@Progressing", "confirm-promotion/ship@Progressing",
		"post-rollout/report@Succeeded")
	if !slices.Equal(h.hooks, want) {
		t.Errorf("webhook calls\n got %q\nwant %q", h.hooks, want)
	}
	// The answers of check webhooks are in the status of their step.
	var sawLoad bool
	for _, n := range h.noted {
		for _, cr := range n.Status.Checks {
			if cr.Name == "load" && cr.Verdict == v1beta1.VerdictPass && cr.Message == "rollout hook load: 200 OK" {
				sawLoad = true
			}
		}
	}
	if !sawLoad {
		t.Error("the rollout webhook's answer never appeared in status.checks")
	}
	// Each call is recorded; the event webhook got every note, and no
	// other webhook was sent an event.
	if n := len(slices.DeleteFunc(slices.Clone(h.events), func(e string) bool { return !strings.HasPrefix(e, "Normal Webhook: ") })); n != len(want) {
		t.Errorf("%d webhook events recorded for %d calls", n, len(want))
	}
	if len(h.eventHooks) != len(h.notes) || len(h.notes) == 0 {
		t.Errorf("%d event webhook calls for %d notes", len(h.eventHooks), len(h.notes))
	}
}

func TestDriverHookFailureIsAFailedCheck(t *testing.T) {
	c := newCanary(hook(v1beta1.RolloutHook, "load"), func(c *v1beta1.Canary) { c.Spec.Analysis.Threshold = 2 })
	h := newHarness(t, c)
	h.answer = func(t v1beta1.HookType, name string) HookAnswer {
		return HookAnswer{OK: false, Message: "rollout hook load: 500 Internal Server Error: boom"}
	}
	h.initialize()
	h.setRevision("r2")
	h.runUntil(50, phaseIs(v1beta1.PhaseSucceeded, v1beta1.PhaseFailed))
	if h.c.Status.Phase != v1beta1.PhaseFailed {
		t.Fatalf("phase %s", h.c.Status.Phase)
	}
	rb := h.notesOf(EventRolledBack)
	if len(rb) != 1 || rb[0].FailingCheck != "rollout webhook load failed: rollout hook load: 500 Internal Server Error: boom" {
		t.Errorf("RolledBack notes %+v", rb)
	}
	if cf := h.notesOf(EventCheckFailed); len(cf) != 1 || !strings.HasPrefix(cf[0].FailingCheck, "load fail") {
		t.Errorf("CheckFailed notes %+v", cf)
	}
	if !slices.ContainsFunc(h.events, func(e string) bool { return strings.HasPrefix(e, "Warning Webhook: rollout hook load: 500") }) {
		t.Errorf("failed webhook not recorded as a warning: %q", h.events)
	}
}

// TestDriverTickIsIdempotent repeats every tick of a rollout at the same
// time, with the status the first one persisted. The repeat never analyses
// again nor counts a step twice; when the first tick left the world as it
// found it, the repeat does nothing at all and returns the same status.
// (When the first tick changed the world, the repeat may go on from there:
// that is progress, not repetition.)
func TestDriverTickIsIdempotent(t *testing.T) {
	c := newCanary(hook(v1beta1.RolloutHook, "load"), hook(v1beta1.PostRolloutHook, "report"))
	h := newHarness(t, c)
	h.primaryLag, h.targetWarmup = 3, 3 // ticks with nothing to do while they warm up
	quiet := map[v1beta1.CanaryPhase]int{}
	h.after = func(h *harness) {
		first := h.c.DeepCopy()
		changedWorld := len(h.calls) != h.callsBefore
		analyses, hooks, notes, calls := h.analyses, len(h.hooks), len(h.notes), len(h.calls)
		st, _, err := h.d.Tick(context.Background(), h.c, h.manual, "")
		if err != nil {
			t.Fatalf("repeated tick: %v", err)
		}
		st = roundTrip(t, st)
		if h.analyses != analyses {
			t.Errorf("repeated tick in %s analysed again", first.Status.Phase)
		}
		if st.Phase == first.Status.Phase && (st.FailedChecks != first.Status.FailedChecks ||
			st.Iterations != first.Status.Iterations || st.CanaryWeight != first.Status.CanaryWeight) {
			t.Errorf("repeated tick counted again: %+v after %+v", st, first.Status)
		}
		if !changedWorld {
			quiet[first.Status.Phase]++
			if len(h.calls) != calls || len(h.hooks) != hooks || len(h.notes) != notes {
				t.Errorf("repeated quiet tick in %s: %v calls, %d webhook calls, %d notes",
					first.Status.Phase, h.calls[calls:], len(h.hooks)-hooks, len(h.notes)-notes)
			}
			if !reflect.DeepEqual(st, first.Status) {
				t.Errorf("repeated quiet tick changed the status:\n%+v\n%+v", first.Status, st)
			}
		}
		// The repeat's status is the one persisted, as a controller would.
		h.c.Status = st
	}
	h.initialize()
	h.setRevision("r2")
	h.runUntil(200, phaseIs(v1beta1.PhaseSucceeded, v1beta1.PhaseFailed))
	if h.c.Status.Phase != v1beta1.PhaseSucceeded || h.analyses != 5 {
		t.Fatalf("phase %s after %d analyses", h.c.Status.Phase, h.analyses)
	}
	if want := []string{"100/0", "90/10", "80/20", "70/30", "60/40", "50/50", "100/0"}; !slices.Equal(h.weights, want) {
		t.Errorf("weights %v, want %v", h.weights, want)
	}
	for _, e := range []string{EventInitialized, EventNewRevision, EventPromoting, EventSucceeded} {
		if n := len(h.notesOf(e)); n != 1 {
			t.Errorf("%s notified %d times, want once", e, n)
		}
	}
	if n := len(h.notesOf(EventAdvanced)); n != 5 {
		t.Errorf("%d weight steps notified, want 5", n)
	}
	if n := count(h.hooks, "post-rollout/report@Succeeded"); n != 1 {
		t.Errorf("post-rollout called %d times", n)
	}
	if n := count(h.hooks, "rollout/load@Progressing"); n != 5 {
		t.Errorf("rollout webhook called %d times, want once per analysis (5)", n)
	}
	for _, p := range []v1beta1.CanaryPhase{v1beta1.PhaseInitializing, v1beta1.PhaseProgressing, v1beta1.PhasePromoting} {
		if quiet[p] == 0 {
			t.Errorf("no quiet tick in %s to repeat (%v): the test does not test much", p, quiet)
		}
	}
}

// TestDriverLostStatusWrites drops the status of every third tick, as when
// a status update loses a conflict: the rollout still ends right.
func TestDriverLostStatusWrites(t *testing.T) {
	h := newHarness(t, newCanary())
	h.primaryLag, h.targetWarmup = 1, 1
	h.initialize()
	h.setRevision("r2")
	n := 0
	var kept v1beta1.CanaryStatus
	h.after = func(h *harness) {
		n++
		if n%3 == 0 {
			h.c.Status = kept
		}
		kept = *h.c.Status.DeepCopy()
	}
	kept = *h.c.Status.DeepCopy()
	h.runUntil(300, func(c *v1beta1.Canary) bool {
		return c.Status.Phase == v1beta1.PhaseSucceeded && c.Status.ObservedRevision == "r2" || c.Status.Phase == v1beta1.PhaseFailed
	})
	if st := h.c.Status; st.Phase != v1beta1.PhaseSucceeded || st.LastPromotedRevision != "r2" || h.primary.Revision != "r2" || h.targetUp {
		t.Fatalf("phase %s promoted %q primary %q canary up %v", st.Phase, st.LastPromotedRevision, h.primary.Revision, h.targetUp)
	}
	// A lost write sends the route back to the weight of the persisted
	// status (the status is the truth), never past the run's steps.
	steps := []string{"100/0", "90/10", "80/20", "70/30", "60/40", "50/50"}
	for _, w := range h.weights {
		if !slices.Contains(steps, w) {
			t.Errorf("route went to %s (weights %v)", w, h.weights)
		}
	}
	if h.weights[len(h.weights)-1] != "100/0" || !slices.Contains(h.weights, "50/50") {
		t.Errorf("weights %v", h.weights)
	}
	// (A notification of a tick whose status was lost is sent again: the
	// driver cannot know the write will be lost.)
	if n := len(h.notesOf(EventSucceeded)); n < 1 {
		t.Errorf("Succeeded notified %d times", n)
	}
}

func TestDriverNonFiniteResults(t *testing.T) {
	h := newHarness(t, newCanary(func(c *v1beta1.Canary) { c.Spec.Analysis.Threshold = 10 }))
	h.initialize()
	nan := func() float64 { var z float64; return z / z }()
	inf := 1 / func() float64 { var z float64; return z }()
	h.analyse = func(*v1beta1.Canary, string) []analysis.Result {
		return []analysis.Result{
			{Name: "request-success-rate", Verdict: analysis.Pass, Value: inf, Min: &nan, Unit: "%"},
			{Name: "request-duration", Verdict: analysis.Error, Value: nan, Max: &inf, Message: "cannot compute request-duration: boom"},
		}
	}
	h.setRevision("r2")
	h.runUntil(20, func(c *v1beta1.Canary) bool { return c.Status.FailedChecks > 0 })
	checks := h.c.Status.Checks
	if len(checks) != 2 {
		t.Fatalf("checks %+v", checks)
	}
	for _, cr := range checks {
		if cr.Value != nil || cr.Min != nil || cr.Max != nil {
			t.Errorf("check %s keeps a non-finite number: %+v", cr.Name, cr)
		}
	}
	// Non-finite values are not recorded as metrics either.
	if n, _ := testutil.GatherAndCount(h.reg, "sluice_canary_metric_analysis"); n != 0 {
		t.Errorf("%d metric analysis series for non-finite values", n)
	}
}

func TestDriverManualAndConflict(t *testing.T) {
	h := newHarness(t, newCanary())
	h.initialize()
	h.setRevision("r2")
	h.runUntil(50, func(c *v1beta1.Canary) bool { return c.Status.CanaryWeight == 20 })

	h.manual = &ManualAction{Kind: ManualPause, RequestedAt: h.now}
	analyses := h.analyses
	for range 5 {
		if _, err := h.tick(); err != nil {
			t.Fatal(err)
		}
	}
	if !h.c.Status.Paused || h.c.Status.CanaryWeight != 20 || h.analyses != analyses {
		t.Fatalf("pause: paused %v weight %d analyses %d→%d", h.c.Status.Paused, h.c.Status.CanaryWeight, analyses, h.analyses)
	}
	if n := len(h.notesOf(EventManual)); n != 1 {
		t.Errorf("%d manual notes, want 1", n)
	}

	// A conflict touches nothing.
	calls := len(h.calls)
	st, after, err := h.d.Tick(context.Background(), h.c, nil, "test/other")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st.Message, "already managed by canary test/other") || len(h.calls) != calls || after <= 0 {
		t.Errorf("conflict: message %q, %d calls, requeue %v", st.Message, len(h.calls)-calls, after)
	}
}

func TestDriverWindows(t *testing.T) {
	// Working hours, Monday to Friday 09:00-17:00 UTC.
	windowed := func(c *v1beta1.Canary) {
		c.Spec.Analysis.Windows = []v1beta1.AnalysisWindow{{Schedule: "0 9 * * 1-5", Duration: "8h"}}
	}
	cases := []struct {
		name    string
		at      time.Time
		windows func(*v1beta1.Canary, time.Time) *bool
		want    v1beta1.CanaryPhase
	}{
		{"inside", time.Date(2026, 3, 4, 11, 0, 0, 0, time.UTC), nil, v1beta1.PhaseProgressing},
		{"outside", time.Date(2026, 3, 7, 11, 0, 0, 0, time.UTC), nil, v1beta1.PhaseWaiting},
		{"override closed", time.Date(2026, 3, 4, 11, 0, 0, 0, time.UTC),
			func(*v1beta1.Canary, time.Time) *bool { return ptr(false) }, v1beta1.PhaseWaiting},
		{"override open", time.Date(2026, 3, 7, 11, 0, 0, 0, time.UTC),
			func(*v1beta1.Canary, time.Time) *bool { return ptr(true) }, v1beta1.PhaseProgressing},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, newCanary(windowed))
			h.d.Windows = tc.windows
			h.initialize() // initialization does not wait for a window
			h.now = tc.at
			h.setRevision("r2")
			if _, err := h.tick(); err != nil {
				t.Fatal(err)
			}
			if h.c.Status.Phase != tc.want {
				t.Errorf("phase %s, want %s (%s)", h.c.Status.Phase, tc.want, h.c.Status.Message)
			}
		})
	}

	t.Run("broken windows count as closed", func(t *testing.T) {
		h := newHarness(t, newCanary(func(c *v1beta1.Canary) {
			// Validation accepts it; it never fires.
			c.Spec.Analysis.Windows = []v1beta1.AnalysisWindow{{Schedule: "0 0 30 2 *", Duration: "1h"}}
		}))
		h.initialize()
		h.setRevision("r2")
		h.tick()
		if h.c.Status.Phase != v1beta1.PhaseWaiting {
			t.Errorf("phase %s (%s)", h.c.Status.Phase, h.c.Status.Message)
		}
		if !slices.ContainsFunc(h.events, func(e string) bool { return strings.HasPrefix(e, "Warning InvalidWindows: ") }) {
			t.Errorf("no InvalidWindows warning in %q", h.events)
		}
	})
}

func TestDriverMissingParts(t *testing.T) {
	t.Run("no analyzer", func(t *testing.T) {
		h := newHarness(t, newCanary())
		h.d.Analyzer = nil
		h.initialize()
		h.setRevision("r2")
		for range 5 {
			h.tick()
		}
		if len(h.errs) == 0 || !strings.Contains(h.errs[0].Error(), "RunAnalysis: the driver has no Analyzer") {
			t.Errorf("errors %v", h.errs)
		}
		if h.c.Status.CanaryWeight != 10 {
			t.Errorf("weight %d: the first step needs no analysis", h.c.Status.CanaryWeight)
		}
	})
	t.Run("no hooks", func(t *testing.T) {
		h := newHarness(t, newCanary(hook(v1beta1.PreRolloutHook, "smoke")))
		h.d.Hooks = nil
		h.initialize()
		h.setRevision("r2")
		for range 3 {
			h.tick()
		}
		if len(h.errs) == 0 || !strings.Contains(h.errs[0].Error(), "CallHook: the driver has no Hooks") {
			t.Errorf("errors %v", h.errs)
		}
		if h.c.Status.CanaryWeight != 0 || h.c.Status.FailedChecks != 0 {
			t.Errorf("weight %d failed checks %d", h.c.Status.CanaryWeight, h.c.Status.FailedChecks)
		}
	})
	t.Run("cancelled during a webhook", func(t *testing.T) {
		h := newHarness(t, newCanary(hook(v1beta1.RolloutHook, "load")))
		h.initialize()
		h.setRevision("r2")
		h.runUntil(20, func(c *v1beta1.Canary) bool { return c.Status.CanaryWeight == 10 })
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		h.answer = func(v1beta1.HookType, string) HookAnswer {
			cancel()
			return HookAnswer{Message: "context canceled"}
		}
		h.now = h.now.Add(time.Hour)
		st, _, err := h.d.Tick(ctx, h.c, nil, "")
		if !errors.Is(err, context.Canceled) || !reflect.DeepEqual(st, h.c.Status) {
			t.Errorf("Tick = %v, status changed %v", err, !reflect.DeepEqual(st, h.c.Status))
		}
	})
	t.Run("no workloads", func(t *testing.T) {
		d := &Driver{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
		c := newCanary()
		st, after, err := d.Tick(context.Background(), c, nil, "")
		if err == nil || after != DefaultRetryAfter || !reflect.DeepEqual(st, c.Status) {
			t.Errorf("Tick = %+v, %v, %v", st, after, err)
		}
	})
	t.Run("nil canary", func(t *testing.T) {
		if _, _, err := (&Driver{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}).Tick(context.Background(), nil, nil, ""); err == nil {
			t.Error("no error")
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		h := newHarness(t, newCanary())
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, _, err := h.d.Tick(ctx, h.c, nil, ""); !errors.Is(err, context.Canceled) {
			t.Errorf("err %v", err)
		}
		if len(h.calls) != 0 {
			t.Errorf("calls %v", h.calls)
		}
	})
	t.Run("invalid canary", func(t *testing.T) {
		h := newHarness(t, newCanary(func(c *v1beta1.Canary) { c.Spec.Analysis.Interval = "soon" }))
		st, after, err := h.d.Tick(context.Background(), h.c, nil, "")
		if err != nil || after != 0 || !strings.HasPrefix(st.Message, "invalid canary") || len(h.calls) != 0 {
			t.Errorf("Tick = %q, %v, %v; calls %v", st.Message, after, err, h.calls)
		}
	})
}

func TestStatusValue(t *testing.T) {
	want := map[v1beta1.CanaryPhase]float64{
		v1beta1.PhaseInitializing: 1, v1beta1.PhaseInitialized: 1, v1beta1.PhaseWaiting: 1,
		v1beta1.PhaseProgressing: 0, v1beta1.PhaseWaitingPromotion: 0, v1beta1.PhasePromoting: 0,
		v1beta1.PhaseFinalising: 0, v1beta1.PhaseSucceeded: 1, v1beta1.PhaseFailed: 2,
		v1beta1.PhaseTerminating: 1, v1beta1.PhaseTerminated: 1,
	}
	for _, p := range v1beta1.Phases {
		if got := StatusValue(p); got != want[p] {
			t.Errorf("StatusValue(%s) = %v, want %v", p, got, want[p])
		}
	}
}

func TestNewMetricsSharesARegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, b := NewMetrics(reg), NewMetrics(reg)
	c := newCanary()
	a.setStatus(c, v1beta1.PhaseFailed)
	if got := testutil.ToFloat64(b.status.WithLabelValues("podinfo", "test")); got != StatusFailed {
		t.Errorf("second Metrics reads %v", got)
	}
	var nilMetrics *Metrics
	nilMetrics.Forget(c) // no panic
}

// TestDriverFailedTickSendsNothing fails a tick after Step asked for a
// notification: nothing of the failed tick is notified, and the retry
// notifies it once.
func TestDriverFailedTickSendsNothing(t *testing.T) {
	h := newHarness(t, newCanary(hook(v1beta1.EventHook, "sink")))
	h.initialize()
	h.setRevision("r2")
	h.runUntil(50, func(c *v1beta1.Canary) bool { return c.Status.CanaryWeight == 20 })
	h.manual = &ManualAction{Kind: ManualPause, RequestedAt: h.now}
	for range 3 {
		h.tick()
	}
	// Resuming notifies, then analyses the due step: the analysis fails.
	h.manual = &ManualAction{Kind: ManualResume, RequestedAt: h.now}
	h.fail["Analyze"] = errors.New("telemetry unreachable")
	notes, sinks := len(h.notes), len(h.eventHooks)
	if _, err := h.tick(); err == nil {
		t.Fatal("the tick did not fail")
	}
	if len(h.notes) != notes || len(h.eventHooks) != sinks || !h.c.Status.Paused {
		t.Fatalf("failed tick: %d notes, %d event webhook calls, paused %v", len(h.notes)-notes, len(h.eventHooks)-sinks, h.c.Status.Paused)
	}
	h.runUntil(50, func(c *v1beta1.Canary) bool { return c.Status.CanaryWeight == 30 })
	var resumed int
	for _, n := range h.notesOf(EventManual) {
		if n.Message == "Canary resumed by user" {
			resumed++
		}
	}
	if resumed != 1 {
		t.Errorf("resume notified %d times, want once", resumed)
	}
}

// validatingAnalyzer is an analyzer whose template provider is down.
type validatingAnalyzer struct {
	fakeAnalyzer
	validated *int
}

func (v validatingAnalyzer) Validate(context.Context, *v1beta1.Canary) []error {
	*v.validated++
	return []error{errors.New("metric error-rate: prometheus at http://127.0.0.1:1 is unreachable")}
}

// TestDriverReportsADownProviderAtInitialization: a metric provider that is
// down is reported while the canary initializes, not at the first analysis,
// and only then.
func TestDriverReportsADownProviderAtInitialization(t *testing.T) {
	h := newHarness(t, newCanary())
	n := 0
	h.d.Analyzer = validatingAnalyzer{fakeAnalyzer{h.cluster}, &n}
	h.initialize()
	found := false
	for _, e := range h.events {
		if strings.Contains(e, "MetricProviderUnavailable") && strings.Contains(e, "is unreachable") {
			found = true
		}
	}
	if !found {
		t.Fatalf("no MetricProviderUnavailable event during initialization; events: %q", h.events)
	}
	before := n
	if _, err := h.tick(); err != nil {
		t.Fatal(err)
	}
	if n != before {
		t.Fatalf("providers validated again after initialization (%d -> %d)", before, n)
	}
}
