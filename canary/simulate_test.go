package canary

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/analysis"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// fakeWorld is a scripted world and a tiny driver: each tick it observes,
// calls Step (again, with the answers, while Step asks for input), applies
// the actions to itself, persists the status as JSON and moves its clock by
// the requeue.
type fakeWorld struct {
	t   *testing.T
	now time.Time

	target       Workload
	targetUp     bool // scaled up (the canary runs)
	targetWarmup int  // ticks before a scaled-up or changed target is ready
	primary      Workload
	primaryLag   int // ticks a cloned or promoted primary takes to be ready
	primaryWait  int
	services     bool
	route        Route
	manual       *ManualAction
	inWindow     *bool

	// analyse answers RunAnalysis; nil passes every metric.
	analyse func(w *fakeWorld, c *v1beta1.Canary) []analysis.Result
	// hook answers CallHook; nil answers success.
	hook func(w *fakeWorld, t v1beta1.HookType, name string) HookAnswer
	// before runs at the start of each tick (a user editing things).
	before func(w *fakeWorld, c *v1beta1.Canary)

	ticks    int
	warm     int
	analyses int
	weights  []string // each distinct route state, in order
	phases   []v1beta1.CanaryPhase
	events   []string
	hooks    []string
}

// newWorld is a world with the user's deployment podinfo at r1 and nothing
// else.
func newWorld(t *testing.T) *fakeWorld {
	return &fakeWorld{
		t:        t,
		now:      t0,
		target:   Workload{Exists: true, Revision: "r1", Replicas: 2},
		targetUp: true,
	}
}

func (w *fakeWorld) observe() Observation {
	target := w.target
	target.Ready = w.targetUp && w.warm <= 0
	if !w.targetUp {
		target.Message = "scaled to zero"
	}
	primary := w.primary
	primary.Ready = primary.Exists && w.primaryWait <= 0
	return Observation{
		Now:           w.now,
		Target:        target,
		Primary:       primary,
		ServicesReady: w.services,
		Route:         w.route,
		Manual:        w.manual,
		InWindow:      w.inWindow,
	}
}

// setRevision is the user applying a new version of the target.
func (w *fakeWorld) setRevision(rev string) {
	w.target.Revision = rev
	w.warm = w.targetWarmup
}

func (w *fakeWorld) apply(c *v1beta1.Canary, a Action, obs *Observation) {
	switch a := a.(type) {
	case EnsurePrimary:
		if !w.primary.Exists {
			w.primary = Workload{Exists: true, Revision: w.target.Revision, Replicas: w.target.Replicas}
			w.primaryWait = w.primaryLag
		}
	case EnsureServices:
		w.services = true
	case EnsureRoute:
		if !w.route.Exists {
			w.route = Route{Exists: true, Accepted: true, PrimaryWeight: 100}
			w.recordRoute()
		}
	case SetWeights:
		if a.Primary+a.Canary != 100 || a.Primary < 0 || a.Canary < 0 {
			w.t.Fatalf("SetWeights %+v does not add up to 100", a)
		}
		w.route = Route{Exists: true, Accepted: true, PrimaryWeight: a.Primary, CanaryWeight: a.Canary, Mirrored: a.Mirror, Matched: a.Match}
		w.recordRoute()
	case ScaleCanary:
		if a.Up && !w.targetUp {
			w.warm = w.targetWarmup
		}
		w.targetUp = a.Up
	case ScaleTarget:
		w.targetUp = !a.Zero
	case PromotePrimary:
		if a.Revision != w.target.Revision {
			w.t.Fatalf("PromotePrimary of %q while the target runs %q", a.Revision, w.target.Revision)
		}
		w.primary.Revision = w.target.Revision
		w.primaryWait = w.primaryLag
	case RunAnalysis:
		w.analyses++
		var rs []analysis.Result
		if w.analyse != nil {
			rs = w.analyse(w, c)
		} else {
			rs = passAll(c)
		}
		obs.Analysis = &AnalysisResults{Results: rs}
	case CallHook:
		w.hooks = append(w.hooks, fmt.Sprintf("%s/%s@%s", a.Type, a.Name, a.Phase))
		ans := HookAnswer{Name: a.Name, OK: true}
		if w.hook != nil {
			ans = w.hook(w, a.Type, a.Name)
			ans.Name = a.Name
		}
		if obs.Gates == nil {
			obs.Gates = map[v1beta1.HookType]GateAnswer{}
		}
		g := obs.Gates[a.Type]
		g.Answers = append(g.Answers, ans)
		obs.Gates[a.Type] = g
	case Notify:
		w.events = append(w.events, a.Event)
	case Requeue:
	default:
		w.t.Fatalf("unknown action %T", a)
	}
}

func (w *fakeWorld) recordRoute() {
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

// tick runs one tick of the driver and returns the requeue.
func (w *fakeWorld) tick(c *v1beta1.Canary) time.Duration {
	w.t.Helper()
	w.ticks++
	if w.before != nil {
		w.before(w, c)
	}
	obs := w.observe()
	var after time.Duration
	for i := 0; ; i++ {
		if i == 10 {
			w.t.Fatalf("tick %d: Step still asks for input after %d calls", w.ticks, i)
		}
		st, acts := Step(c, obs)
		c.Status = st
		needs := false
		requeues := 0
		for _, a := range acts {
			w.apply(c, a, &obs)
			needs = needs || NeedsInput(a)
			if r, ok := a.(Requeue); ok {
				after = r.After
				requeues++
			}
		}
		if requeues != 1 {
			w.t.Fatalf("tick %d: %d requeues in %v", w.ticks, requeues, acts)
		}
		if !needs {
			break
		}
	}
	// Persist: the status goes through JSON, as through the API server.
	b, err := json.Marshal(c.Status)
	if err != nil {
		w.t.Fatalf("status does not marshal: %v", err)
	}
	c.Status = v1beta1.CanaryStatus{}
	if err := json.Unmarshal(b, &c.Status); err != nil {
		w.t.Fatal(err)
	}
	if p := c.Status.Phase; len(w.phases) == 0 || w.phases[len(w.phases)-1] != p {
		w.phases = append(w.phases, p)
	}
	// Time passes: workloads become ready.
	w.warm--
	w.primaryWait--
	if after <= 0 {
		w.t.Fatalf("tick %d: requeue %v", w.ticks, after)
	}
	w.now = w.now.Add(after)
	return after
}

// runUntil ticks until done or the tick budget runs out.
func (w *fakeWorld) runUntil(c *v1beta1.Canary, max int, done func(*v1beta1.Canary) bool) {
	w.t.Helper()
	for range max {
		w.tick(c)
		if done(c) {
			return
		}
	}
	w.t.Fatalf("not done after %d ticks: phase %s, message %q, weights %v", max, c.Status.Phase, c.Status.Message, w.weights)
}

func phaseIs(ps ...v1beta1.CanaryPhase) func(*v1beta1.Canary) bool {
	return func(c *v1beta1.Canary) bool { return slices.Contains(ps, c.Status.Phase) }
}

// initialize brings a fresh world to Initialized.
func (w *fakeWorld) initialize(c *v1beta1.Canary) {
	w.t.Helper()
	w.runUntil(c, 20, phaseIs(v1beta1.PhaseInitialized))
	if w.targetUp {
		w.t.Fatalf("target not scaled to zero after initialization")
	}
	if w.route.PrimaryWeight != 100 || !w.services || w.primary.Revision != "r1" {
		w.t.Fatalf("initialized world: route %+v services %v primary %+v", w.route, w.services, w.primary)
	}
}

// passAll returns passing results for c's metrics.
func passAll(c *v1beta1.Canary) []analysis.Result {
	var rs []analysis.Result
	for _, m := range c.Spec.Analysis.Metrics {
		rs = append(rs, analysis.Result{Name: m.Name, Verdict: analysis.Pass, Value: 1})
	}
	return rs
}

// successRate returns results where request-success-rate is rate.
func successRate(rate float64) func(*fakeWorld, *v1beta1.Canary) []analysis.Result {
	return func(w *fakeWorld, c *v1beta1.Canary) []analysis.Result {
		r := analysis.Result{Name: "request-success-rate", Verdict: analysis.Pass, Value: rate, Min: ptr(99.0), Unit: "%"}
		if rate < 99 {
			r.Verdict = analysis.Fail
			r.Message = fmt.Sprintf("request-success-rate %g%% < min 99%%", rate)
		}
		return []analysis.Result{r, {Name: "request-duration", Verdict: analysis.Pass, Value: 100, Max: ptr(500.0), Unit: "ms"}}
	}
}

func TestSimulateHealthyCanaryPromotes(t *testing.T) {
	c := newCanary()
	w := newWorld(t)
	w.primaryLag, w.targetWarmup = 2, 2
	w.initialize(c)

	w.setRevision("r2")
	start := w.now
	w.runUntil(c, 200, phaseIs(v1beta1.PhaseSucceeded, v1beta1.PhaseFailed))

	want := []string{"100/0", "90/10", "80/20", "70/30", "60/40", "50/50", "100/0"}
	if !slices.Equal(w.weights, want) {
		t.Errorf("route weights %v, want %v", w.weights, want)
	}
	wantPhases := []v1beta1.CanaryPhase{
		v1beta1.PhaseInitializing, v1beta1.PhaseInitialized, v1beta1.PhaseProgressing,
		v1beta1.PhasePromoting, v1beta1.PhaseFinalising, v1beta1.PhaseSucceeded,
	}
	if !slices.Equal(w.phases, wantPhases) {
		t.Errorf("phases %v, want %v", w.phases, wantPhases)
	}
	st := c.Status
	if st.LastPromotedRevision != "r2" || st.ObservedRevision != "r2" || w.primary.Revision != "r2" {
		t.Errorf("promoted %q observed %q primary %q, want r2", st.LastPromotedRevision, st.ObservedRevision, w.primary.Revision)
	}
	if w.targetUp {
		t.Errorf("canary not scaled to zero")
	}
	if w.analyses != 5 {
		t.Errorf("%d analyses, want one per weight (5)", w.analyses)
	}
	if st.FailedChecks != 0 || st.Message != "promoted revision r2" {
		t.Errorf("failedChecks %d message %q", st.FailedChecks, st.Message)
	}
	// One step per interval: 0→10 waits for the canary, then five analysed
	// steps an interval apart.
	if took := w.now.Sub(start); took < 5*time.Minute {
		t.Errorf("run took %v of simulated time, want at least 5 intervals", took)
	}
	for _, e := range []string{EventNewRevision, EventPromoting, EventSucceeded} {
		if n := count(w.events, e); n != 1 {
			t.Errorf("event %s sent %d times, want once (events %v)", e, n, w.events)
		}
	}

	// Nothing more happens without a new revision.
	before := len(w.weights)
	for range 5 {
		w.tick(c)
	}
	if c.Status.Phase != v1beta1.PhaseSucceeded || len(w.weights) != before {
		t.Errorf("idle canary moved: phase %s weights %v", c.Status.Phase, w.weights)
	}
}

func TestSimulateFailingCanaryRollsBack(t *testing.T) {
	c := newCanary()
	w := newWorld(t)
	w.initialize(c)
	w.analyse = successRate(91.3)
	w.setRevision("r2")
	w.runUntil(c, 100, phaseIs(v1beta1.PhaseSucceeded, v1beta1.PhaseFailed))

	st := c.Status
	if st.Phase != v1beta1.PhaseFailed {
		t.Fatalf("phase %s, want Failed", st.Phase)
	}
	if want := "request-success-rate 91.3% < min 99% (5/5 failed checks)"; st.Message != want {
		t.Errorf("message %q, want %q", st.Message, want)
	}
	if w.analyses != 5 || st.FailedChecks != 5 {
		t.Errorf("%d analyses, %d failed checks, want 5 each", w.analyses, st.FailedChecks)
	}
	if want := []string{"100/0", "90/10", "100/0"}; !slices.Equal(w.weights, want) {
		t.Errorf("weights %v, want %v", w.weights, want)
	}
	if w.targetUp || w.primary.Revision != "r1" || st.LastPromotedRevision != "r1" || st.ObservedRevision != "r2" {
		t.Errorf("after rollback: canary up %v, primary %q, promoted %q, observed %q", w.targetUp, w.primary.Revision, st.LastPromotedRevision, st.ObservedRevision)
	}
	if c := condition(st, v1beta1.ConditionPromoted); c == nil || c.Status != "False" {
		t.Errorf("Promoted = %+v", c)
	}

	// The failed revision does not run again by itself...
	for range 5 {
		w.tick(c)
	}
	if c.Status.Phase != v1beta1.PhaseFailed || w.targetUp {
		t.Fatalf("failed revision restarted: phase %s", c.Status.Phase)
	}
	// ...but a retry runs it again without editing the workload; healthy
	// this time, it is promoted.
	w.analyse = nil
	w.manual = &ManualAction{Kind: ManualRetry, RequestedAt: w.now}
	w.runUntil(c, 100, phaseIs(v1beta1.PhaseSucceeded))
	if c.Status.LastPromotedRevision != "r2" || c.Status.FailedChecks != 0 {
		t.Errorf("after retry: promoted %q failedChecks %d", c.Status.LastPromotedRevision, c.Status.FailedChecks)
	}
}

func TestSimulateNewRevisionMidRunRestarts(t *testing.T) {
	c := newCanary()
	w := newWorld(t)
	w.initialize(c)
	// r2 fails twice at 30%; then the user ships r3.
	fails := 0
	w.analyse = func(w *fakeWorld, c *v1beta1.Canary) []analysis.Result {
		if w.target.Revision == "r2" && w.route.CanaryWeight == 30 {
			fails++
			return successRate(95)(w, c)
		}
		return passAll(c)
	}
	w.before = func(w *fakeWorld, c *v1beta1.Canary) {
		if fails == 2 && w.target.Revision == "r2" {
			if c.Status.FailedChecks != 2 {
				t.Fatalf("failedChecks %d before the new revision, want 2", c.Status.FailedChecks)
			}
			w.setRevision("r3")
		}
	}
	w.setRevision("r2")
	w.runUntil(c, 200, phaseIs(v1beta1.PhaseSucceeded, v1beta1.PhaseFailed))

	want := []string{"100/0", "90/10", "80/20", "70/30", "100/0", "90/10", "80/20", "70/30", "60/40", "50/50", "100/0"}
	if !slices.Equal(w.weights, want) {
		t.Errorf("weights %v, want %v", w.weights, want)
	}
	if st := c.Status; st.Phase != v1beta1.PhaseSucceeded || st.LastPromotedRevision != "r3" || st.FailedChecks != 0 {
		t.Errorf("phase %s promoted %q failedChecks %d", st.Phase, st.LastPromotedRevision, st.FailedChecks)
	}
	if n := count(w.events, EventRestarted); n != 1 {
		t.Errorf("restarted %d times", n)
	}
}

func TestSimulateSeedGuideCanary(t *testing.T) {
	b, err := os.ReadFile("testdata/seed-canary.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := &v1beta1.Canary{}
	if err := yaml.UnmarshalStrict(b, c); err != nil {
		t.Fatalf("seed canary: %v", err)
	}
	if errs := c.Validate(); len(errs) > 0 {
		t.Fatalf("seed canary invalid: %v", errs)
	}
	w := newWorld(t)
	w.initialize(c)
	w.setRevision("r2")
	w.runUntil(c, 300, phaseIs(v1beta1.PhaseSucceeded, v1beta1.PhaseFailed))
	if c.Status.Phase != v1beta1.PhaseSucceeded || c.Status.LastPromotedRevision != "r2" {
		t.Fatalf("phase %s promoted %q: %s", c.Status.Phase, c.Status.LastPromotedRevision, c.Status.Message)
	}
	var canaryWeights []int
	for _, s := range w.weights {
		var p, cw int
		fmt.Sscanf(s, "%d/%d", &p, &cw)
		canaryWeights = append(canaryWeights, cw)
	}
	want := []int{0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 0}
	if !slices.Equal(canaryWeights, want) {
		t.Errorf("canary weights %v, want %v", canaryWeights, want)
	}
}

func TestSimulateNoDataHoldsThenAdvances(t *testing.T) {
	c := newCanary()
	w := newWorld(t)
	w.initialize(c)
	traffic := false
	var messages []string
	w.analyse = func(w *fakeWorld, c *v1beta1.Canary) []analysis.Result {
		if !traffic {
			return noData().Results
		}
		return passAll(c)
	}
	w.before = func(w *fakeWorld, c *v1beta1.Canary) {
		messages = append(messages, c.Status.Message)
		if w.analyses == 4 {
			traffic = true
		}
	}
	w.setRevision("r2")
	w.runUntil(c, 200, phaseIs(v1beta1.PhaseSucceeded, v1beta1.PhaseFailed))
	if c.Status.Phase != v1beta1.PhaseSucceeded || c.Status.FailedChecks != 0 {
		t.Fatalf("phase %s failedChecks %d: %s", c.Status.Phase, c.Status.FailedChecks, c.Status.Message)
	}
	if !slices.Contains(messages, "waiting for traffic: no requests to podinfo in the last 1m") {
		t.Errorf("no waiting-for-traffic message in %q", messages)
	}
}

func TestSimulateNoDataForeverHitsTheDeadline(t *testing.T) {
	c := newCanary(func(c *v1beta1.Canary) { c.Spec.ProgressDeadlineSeconds = ptr(int32(300)) })
	w := newWorld(t)
	w.initialize(c)
	w.analyse = func(*fakeWorld, *v1beta1.Canary) []analysis.Result { return noData().Results }
	w.setRevision("r2")
	start := w.now
	w.runUntil(c, 200, phaseIs(v1beta1.PhaseSucceeded, v1beta1.PhaseFailed))
	st := c.Status
	if st.Phase != v1beta1.PhaseFailed || st.FailedChecks != 0 ||
		!strings.HasPrefix(st.Message, "progress deadline exceeded (5m0s): waiting for traffic") {
		t.Fatalf("phase %s failedChecks %d message %q", st.Phase, st.FailedChecks, st.Message)
	}
	if took := w.now.Sub(start); took < 5*time.Minute {
		t.Errorf("rolled back after %v, before the deadline", took)
	}
}

func TestSimulateNoDataPolicyFail(t *testing.T) {
	c := newCanary(func(c *v1beta1.Canary) { c.Spec.Analysis.NoDataPolicy = v1beta1.NoDataFail })
	w := newWorld(t)
	w.initialize(c)
	w.analyse = func(*fakeWorld, *v1beta1.Canary) []analysis.Result { return noData().Results }
	w.setRevision("r2")
	w.runUntil(c, 200, phaseIs(v1beta1.PhaseSucceeded, v1beta1.PhaseFailed))
	if st := c.Status; st.Phase != v1beta1.PhaseFailed || st.FailedChecks != 5 ||
		st.Message != "request-success-rate no data: no requests to podinfo in the last 1m (5/5 failed checks)" {
		t.Fatalf("phase %s failedChecks %d message %q", st.Phase, st.FailedChecks, st.Message)
	}
}

func TestSimulateABTesting(t *testing.T) {
	c := newCanary(abTesting(4))
	w := newWorld(t)
	w.initialize(c)
	w.setRevision("r2")
	w.runUntil(c, 200, phaseIs(v1beta1.PhaseSucceeded, v1beta1.PhaseFailed))
	if want := []string{"100/0", "0/100 match", "100/0"}; !slices.Equal(w.weights, want) {
		t.Errorf("weights %v, want %v", w.weights, want)
	}
	if c.Status.Phase != v1beta1.PhaseSucceeded || w.analyses != 4 {
		t.Errorf("phase %s after %d analyses, want Succeeded after 4", c.Status.Phase, w.analyses)
	}
}

func TestSimulateBlueGreen(t *testing.T) {
	for _, mirror := range []bool{false, true} {
		t.Run(fmt.Sprintf("mirror=%v", mirror), func(t *testing.T) {
			c := newCanary(blueGreen(3, mirror))
			w := newWorld(t)
			w.initialize(c)
			w.setRevision("r2")
			w.runUntil(c, 200, phaseIs(v1beta1.PhaseSucceeded, v1beta1.PhaseFailed))
			want := []string{"100/0", "0/100", "100/0"}
			if mirror {
				want = []string{"100/0", "100/0 mirror", "0/100", "100/0"}
			}
			if !slices.Equal(w.weights, want) {
				t.Errorf("weights %v, want %v", w.weights, want)
			}
			// Three iterations, the switch step, and the step after it.
			if c.Status.Phase != v1beta1.PhaseSucceeded || w.analyses != 4 {
				t.Errorf("phase %s after %d analyses", c.Status.Phase, w.analyses)
			}
		})
	}
}

func TestSimulateStepWeightPromotionAndMirror(t *testing.T) {
	c := newCanary(func(c *v1beta1.Canary) {
		c.Spec.Analysis.StepWeight, c.Spec.Analysis.MaxWeight = 30, 50
		c.Spec.Analysis.StepWeightPromotion = 20
		c.Spec.Analysis.Mirror = true
	})
	w := newWorld(t)
	w.initialize(c)
	w.setRevision("r2")
	w.runUntil(c, 200, phaseIs(v1beta1.PhaseSucceeded, v1beta1.PhaseFailed))
	want := []string{"100/0", "100/0 mirror", "70/30", "50/50", "70/30", "90/10", "100/0"}
	if !slices.Equal(w.weights, want) {
		t.Errorf("weights %v, want %v", w.weights, want)
	}
}

func TestSimulateGates(t *testing.T) {
	c := newCanary(
		hook(v1beta1.ConfirmRolloutHook, "start"),
		hook(v1beta1.PreRolloutHook, "smoke"),
		hook(v1beta1.RolloutHook, "load"),
		hook(v1beta1.ConfirmTrafficIncreaseHook, "more"),
		hook(v1beta1.ConfirmPromotionHook, "ship"),
		hook(v1beta1.PostRolloutHook, "report"),
		hook(v1beta1.RollbackHook, "undo"),
	)
	w := newWorld(t)
	w.initialize(c)
	calls := map[v1beta1.HookType]int{}
	w.hook = func(w *fakeWorld, t v1beta1.HookType, name string) HookAnswer {
		calls[t]++
		switch t {
		case v1beta1.ConfirmRolloutHook:
			return HookAnswer{OK: calls[t] > 2}
		case v1beta1.ConfirmTrafficIncreaseHook:
			return HookAnswer{OK: calls[t]%2 == 0} // every other ask
		case v1beta1.ConfirmPromotionHook:
			return HookAnswer{OK: calls[t] > 1}
		case v1beta1.RollbackHook:
			return HookAnswer{OK: false}
		}
		return HookAnswer{OK: true}
	}
	w.setRevision("r2")
	w.runUntil(c, 300, phaseIs(v1beta1.PhaseSucceeded, v1beta1.PhaseFailed))
	if c.Status.Phase != v1beta1.PhaseSucceeded {
		t.Fatalf("phase %s: %s", c.Status.Phase, c.Status.Message)
	}
	wantPhases := []v1beta1.CanaryPhase{
		v1beta1.PhaseInitializing, v1beta1.PhaseInitialized, v1beta1.PhaseWaiting, v1beta1.PhaseProgressing,
		v1beta1.PhaseWaitingPromotion, v1beta1.PhasePromoting, v1beta1.PhaseFinalising, v1beta1.PhaseSucceeded,
	}
	if !slices.Equal(w.phases, wantPhases) {
		t.Errorf("phases %v, want %v", w.phases, wantPhases)
	}
	if want := []string{"100/0", "90/10", "80/20", "70/30", "60/40", "50/50", "100/0"}; !slices.Equal(w.weights, want) {
		t.Errorf("weights %v, want %v", w.weights, want)
	}
	// pre-rollout runs at each try of the first step, as in Flagger: the
	// first confirm-traffic-increase is refused, so twice.
	if calls[v1beta1.PreRolloutHook] != 2 || calls[v1beta1.PostRolloutHook] != 1 || calls[v1beta1.ConfirmRolloutHook] != 3 {
		t.Errorf("calls %v", calls)
	}
	// Rollout hooks run with each analysis.
	if calls[v1beta1.RolloutHook] != w.analyses {
		t.Errorf("%d rollout calls for %d analyses", calls[v1beta1.RolloutHook], w.analyses)
	}
	if !slices.Contains(w.hooks, "post-rollout/report@Succeeded") || !slices.Contains(w.hooks, "pre-rollout/smoke@Progressing") {
		t.Errorf("hook calls %v", w.hooks)
	}
	if c.Status.FailedChecks != 0 {
		t.Errorf("failedChecks %d: closed gates are not failures", c.Status.FailedChecks)
	}
}

func TestSimulatePauseResumeAbort(t *testing.T) {
	c := newCanary(func(c *v1beta1.Canary) { c.Spec.ProgressDeadlineSeconds = ptr(int32(120)) })
	w := newWorld(t)
	w.initialize(c)
	w.setRevision("r2")
	w.runUntil(c, 50, func(c *v1beta1.Canary) bool { return c.Status.CanaryWeight == 20 })

	w.manual = &ManualAction{Kind: ManualPause, RequestedAt: w.now}
	analyses := w.analyses
	for range 30 { // well past the progress deadline
		w.tick(c)
	}
	if c.Status.Phase != v1beta1.PhaseProgressing || c.Status.CanaryWeight != 20 || w.analyses != analyses {
		t.Fatalf("paused run moved: phase %s weight %d analyses %d→%d", c.Status.Phase, c.Status.CanaryWeight, analyses, w.analyses)
	}
	if !strings.HasPrefix(c.Status.Message, "paused by user at canary weight 20%") {
		t.Errorf("message %q", c.Status.Message)
	}

	w.manual = &ManualAction{Kind: ManualResume, RequestedAt: w.now}
	w.runUntil(c, 50, func(c *v1beta1.Canary) bool { return c.Status.CanaryWeight == 30 })

	w.manual = &ManualAction{Kind: ManualAbort, RequestedAt: w.now}
	w.tick(c)
	if c.Status.Phase != v1beta1.PhaseFailed || c.Status.Message != "aborted by user" || w.route.CanaryWeight != 0 || w.targetUp {
		t.Fatalf("after abort: phase %s message %q route %+v canary up %v", c.Status.Phase, c.Status.Message, w.route, w.targetUp)
	}
	// The abort request stays in place (like an annotation): applied once.
	w.manual = &ManualAction{Kind: ManualRetry, RequestedAt: w.now}
	w.runUntil(c, 100, phaseIs(v1beta1.PhaseSucceeded))
}

func TestSimulateManualPromote(t *testing.T) {
	c := newCanary()
	w := newWorld(t)
	w.initialize(c)
	w.setRevision("r2")
	w.runUntil(c, 50, func(c *v1beta1.Canary) bool { return c.Status.CanaryWeight == 20 })
	w.manual = &ManualAction{Kind: ManualPromote, RequestedAt: w.now}
	w.runUntil(c, 50, phaseIs(v1beta1.PhaseSucceeded))
	if want := []string{"100/0", "90/10", "80/20", "100/0"}; !slices.Equal(w.weights, want) {
		t.Errorf("weights %v, want %v", w.weights, want)
	}
	if n := count(w.events, EventPromoting); n != 1 {
		t.Errorf("promoted %d times", n)
	}
}

func TestSimulateSkipAnalysis(t *testing.T) {
	c := newCanary(func(c *v1beta1.Canary) { c.Spec.SkipAnalysis = true })
	w := newWorld(t)
	w.primaryLag, w.targetWarmup = 1, 1
	w.initialize(c)
	w.setRevision("r2")
	w.runUntil(c, 50, phaseIs(v1beta1.PhaseSucceeded))
	if w.analyses != 0 || len(w.weights) != 1 {
		t.Errorf("%d analyses, weights %v: want none", w.analyses, w.weights)
	}
}

func TestSimulateCanaryNeverReady(t *testing.T) {
	c := newCanary(func(c *v1beta1.Canary) { c.Spec.ProgressDeadlineSeconds = ptr(int32(60)) })
	w := newWorld(t)
	w.initialize(c)
	w.targetWarmup = math.MaxInt32
	w.setRevision("r2")
	w.runUntil(c, 50, phaseIs(v1beta1.PhaseFailed))
	if !strings.HasPrefix(c.Status.Message, "progress deadline exceeded (1m0s): waiting for podinfo (revision r2) to be ready") {
		t.Errorf("message %q", c.Status.Message)
	}
}

func count(xs []string, x string) int {
	n := 0
	for _, s := range xs {
		if s == x {
			n++
		}
	}
	return n
}
