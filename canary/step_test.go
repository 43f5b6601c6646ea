package canary

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluicehq/sluice/analysis"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// t0 is the fake clock's "now" in the table tests.
var t0 = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

// newCanary returns a valid canary on deployment podinfo: interval 1m,
// threshold 5, stepWeight 10 up to maxWeight 50, the two built-in checks.
func newCanary(mods ...func(*v1beta1.Canary)) *v1beta1.Canary {
	c := &v1beta1.Canary{
		ObjectMeta: metav1.ObjectMeta{Name: "podinfo", Namespace: "test", Generation: 3},
		Spec: v1beta1.CanarySpec{
			TargetRef: v1beta1.LocalObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "podinfo"},
			Service:   v1beta1.CanaryService{Port: 9898},
			Analysis: &v1beta1.CanaryAnalysis{
				Interval:   "1m",
				Threshold:  5,
				MaxWeight:  50,
				StepWeight: 10,
				Metrics: []v1beta1.CanaryMetric{
					{Name: "request-success-rate", Interval: "1m", ThresholdRange: &v1beta1.CanaryThresholdRange{Min: v1beta1.NewNumber(99)}},
					{Name: "request-duration", Interval: "1m", ThresholdRange: &v1beta1.CanaryThresholdRange{Max: v1beta1.NewNumber(500)}},
				},
			},
		},
	}
	for _, m := range mods {
		m(c)
	}
	return c
}

// hook adds a webhook.
func hook(t v1beta1.HookType, name string) func(*v1beta1.Canary) {
	return func(c *v1beta1.Canary) {
		c.Spec.Analysis.Webhooks = append(c.Spec.Analysis.Webhooks,
			v1beta1.CanaryWebhook{Type: t, Name: name, URL: "http://loadtester.test/" + name})
	}
}

// abTesting makes c an A/B test of n iterations.
func abTesting(n int) func(*v1beta1.Canary) {
	return func(c *v1beta1.Canary) {
		a := c.Spec.Analysis
		a.StepWeight, a.MaxWeight, a.Iterations = 0, 0, n
		a.Match = []v1beta1.HTTPMatchRequest{{Headers: map[string]v1beta1.StringMatch{"x-canary": {Exact: "insider"}}}}
	}
}

// blueGreen makes c a blue/green run of n iterations.
func blueGreen(n int, mirror bool) func(*v1beta1.Canary) {
	return func(c *v1beta1.Canary) {
		a := c.Spec.Analysis
		a.StepWeight, a.MaxWeight, a.Iterations, a.Mirror = 0, 0, n, mirror
	}
}

// world returns an observation where everything is in place: the primary
// runs r1, the target runs r2 and is ready, the route is at 100/0.
func world() Observation {
	return Observation{
		Now:           t0,
		Target:        Workload{Exists: true, Revision: "r2", Ready: true, Replicas: 2},
		Primary:       Workload{Exists: true, Revision: "r1", Ready: true, Replicas: 2},
		ServicesReady: true,
		Route:         Route{Exists: true, Accepted: true, PrimaryWeight: 100},
	}
}

// idleStatus is a status after initialization at r1.
func idleStatus(phase v1beta1.CanaryPhase) v1beta1.CanaryStatus {
	return v1beta1.CanaryStatus{
		Phase:                phase,
		ObservedRevision:     "r1",
		LastAppliedSpec:      "r1",
		LastPromotedRevision: "r1",
		LastPromotedSpec:     "r1",
	}
}

// running puts c in a run of r2 at weight w and iterations it, its last
// step analysed 2 minutes ago and its last progress 1 minute ago, and sets
// the route to match.
func running(c *v1beta1.Canary, o *Observation, w, it int) {
	c.Status = idleStatus(v1beta1.PhaseProgressing)
	c.Status.ObservedRevision, c.Status.LastAppliedSpec = "r2", "r2"
	c.Status.CanaryWeight, c.Status.Iterations = w, it
	setLedger(c, ledger{StepAt: t0.Add(-2 * time.Minute), ProgressAt: t0.Add(-time.Minute)})
	o.Route.PrimaryWeight, o.Route.CanaryWeight = 100-w, w
}

func setLedger(c *v1beta1.Canary, l ledger) {
	storeLedger(&c.Status, l)
}

func getLedger(st v1beta1.CanaryStatus) ledger { return readLedger(&st) }

// results are analysis results.
func pass() *AnalysisResults {
	return &AnalysisResults{Results: []analysis.Result{
		{Name: "request-success-rate", Verdict: analysis.Pass, Value: 99.9, Min: ptr(99.0), Unit: "%", Message: "request-success-rate 99.9% >= min 99%"},
		{Name: "request-duration", Verdict: analysis.Pass, Value: 120, Max: ptr(500.0), Unit: "ms", Message: "request-duration p99 120ms <= max 500ms"},
	}}
}

func failing() *AnalysisResults {
	return &AnalysisResults{Results: []analysis.Result{
		{Name: "request-success-rate", Verdict: analysis.Fail, Value: 91.3, Min: ptr(99.0), Unit: "%", Message: "request-success-rate 91.3% < min 99%"},
		{Name: "request-duration", Verdict: analysis.Pass, Value: 120, Max: ptr(500.0), Unit: "ms"},
	}}
}

func noData() *AnalysisResults {
	return &AnalysisResults{Results: []analysis.Result{
		{Name: "request-success-rate", Verdict: analysis.NoData, Value: math.NaN(), Min: ptr(99.0), Message: "no requests to podinfo in the last 1m"},
		{Name: "request-duration", Verdict: analysis.NoData, Value: math.NaN(), Max: ptr(500.0), Message: "no requests to podinfo in the last 1m"},
	}}
}

func ptr[T any](v T) *T { return &v }

// answers returns gate answers: name=true/false per webhook.
func answers(t v1beta1.HookType, ok map[string]bool) map[v1beta1.HookType]GateAnswer {
	var g GateAnswer
	for name, v := range ok {
		msg := "approved"
		if !v {
			msg = "gate closed"
		}
		g.Answers = append(g.Answers, HookAnswer{Name: name, OK: v, Message: msg})
	}
	return map[v1beta1.HookType]GateAnswer{t: g}
}

// describe writes an action for comparisons.
func describe(a Action) string {
	switch a := a.(type) {
	case SetWeights:
		s := fmt.Sprintf("SetWeights %d/%d", a.Primary, a.Canary)
		if a.Mirror {
			s += " mirror"
		}
		if a.Match {
			s += " match"
		}
		return s
	case ScaleCanary:
		if a.Up {
			return "ScaleCanary up"
		}
		return "ScaleCanary down"
	case ScaleTarget:
		if a.Zero {
			return "ScaleTarget zero"
		}
		return "ScaleTarget up"
	case CallHook:
		return fmt.Sprintf("CallHook %s/%s", a.Type, a.Name)
	case Notify:
		return "Notify " + a.Event
	case Requeue:
		return "Requeue " + a.After.String()
	case PromotePrimary:
		return "PromotePrimary"
	case RunAnalysis:
		return "RunAnalysis"
	}
	return strings.TrimPrefix(fmt.Sprintf("%T", a), "canary.")
}

// describeAll describes the actions, leaving out Requeue.
func describeAll(acts []Action) []string {
	var out []string
	for _, a := range acts {
		if _, ok := a.(Requeue); ok {
			continue
		}
		out = append(out, describe(a))
	}
	return out
}

func requeueOf(acts []Action) (time.Duration, bool) {
	for _, a := range acts {
		if r, ok := a.(Requeue); ok {
			return r.After, true
		}
	}
	return 0, false
}

func condition(st v1beta1.CanaryStatus, t string) *metav1.Condition {
	for i := range st.Conditions {
		if st.Conditions[i].Type == t {
			return &st.Conditions[i]
		}
	}
	return nil
}

type stepCase struct {
	name  string
	mods  []func(*v1beta1.Canary)
	setup func(c *v1beta1.Canary, o *Observation)
	// want
	phase   v1beta1.CanaryPhase
	actions []string // nil: not checked; use []string{} for none
	message string   // substring
	check   func(t *testing.T, st v1beta1.CanaryStatus, acts []Action)
}

func runCases(t *testing.T, cases []stepCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCanary(tc.mods...)
			o := world()
			if tc.setup != nil {
				tc.setup(c, &o)
			}
			before := c.DeepCopy()
			st, acts := Step(c, o)
			if !equalCanary(before, c) {
				t.Fatalf("Step modified its canary")
			}
			if tc.phase != "" && st.Phase != tc.phase {
				t.Errorf("phase = %q, want %q (message %q)", st.Phase, tc.phase, st.Message)
			}
			if got := describeAll(acts); tc.actions != nil && !slices.Equal(got, tc.actions) {
				t.Errorf("actions = %q\nwant      %q\n(message %q)", got, tc.actions, st.Message)
			}
			if !strings.Contains(st.Message, tc.message) {
				t.Errorf("message = %q, want it to contain %q", st.Message, tc.message)
			}
			if tc.check != nil {
				tc.check(t, st, acts)
			}
		})
	}
}

func equalCanary(a, b *v1beta1.Canary) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func TestStepInitialization(t *testing.T) {
	fresh := func(c *v1beta1.Canary, o *Observation) {
		o.Primary = Workload{}
		o.ServicesReady = false
		o.Route = Route{}
		o.Target.Revision = "r1"
	}
	runCases(t, []stepCase{
		{
			name: "new canary creates the primary", setup: fresh,
			phase: v1beta1.PhaseInitializing, actions: []string{"EnsurePrimary"}, message: "creating podinfo-primary from podinfo",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if c := condition(st, v1beta1.ConditionReady); c == nil || c.Status != metav1.ConditionFalse {
					t.Errorf("Ready = %+v, want False", c)
				}
				if c := condition(st, v1beta1.ConditionPromoted); c == nil || c.Status != metav1.ConditionUnknown || c.Reason != "Initializing" {
					t.Errorf("Promoted = %+v, want Unknown/Initializing", c)
				}
				if st.LastTransitionTime == nil || !st.LastTransitionTime.Time.Equal(t0) {
					t.Errorf("lastTransitionTime = %v, want %v", st.LastTransitionTime, t0)
				}
				if st.ObservedGeneration != 3 {
					t.Errorf("observedGeneration = %d, want 3", st.ObservedGeneration)
				}
			},
		},
		{
			name: "waits for the primary to be ready",
			setup: func(c *v1beta1.Canary, o *Observation) {
				fresh(c, o)
				o.Primary = Workload{Exists: true, Revision: "r1", Message: "0/2 replicas available"}
			},
			phase: v1beta1.PhaseInitializing, actions: []string{}, message: "waiting for podinfo-primary to be ready: 0/2 replicas available",
		},
		{
			name: "creates the services once the primary is ready",
			setup: func(c *v1beta1.Canary, o *Observation) {
				fresh(c, o)
				o.Primary = Workload{Exists: true, Revision: "r1", Ready: true}
			},
			phase: v1beta1.PhaseInitializing, actions: []string{"EnsureServices"}, message: "creating services podinfo, podinfo-primary and podinfo-canary",
		},
		{
			name: "creates the route",
			setup: func(c *v1beta1.Canary, o *Observation) {
				fresh(c, o)
				o.Primary = Workload{Exists: true, Revision: "r1", Ready: true}
				o.ServicesReady = true
			},
			phase: v1beta1.PhaseInitializing, actions: []string{"EnsureRoute"}, message: "creating HTTPRoute podinfo",
		},
		{
			name: "sets the route to 100/0",
			setup: func(c *v1beta1.Canary, o *Observation) {
				o.Target.Revision = "r1"
				o.Route.PrimaryWeight, o.Route.CanaryWeight = 90, 10
			},
			phase: v1beta1.PhaseInitializing, actions: []string{"SetWeights 100/0"}, message: "waiting for HTTPRoute podinfo to be accepted",
		},
		{
			name: "waits for the route to be accepted",
			setup: func(c *v1beta1.Canary, o *Observation) {
				o.Target.Revision = "r1"
				o.Route.Accepted = false
			},
			phase: v1beta1.PhaseInitializing, actions: []string{}, message: "waiting for HTTPRoute podinfo to be accepted",
		},
		{
			name:  "initialized: target scaled to zero",
			setup: func(c *v1beta1.Canary, o *Observation) { o.Target.Revision = "r1" },
			phase: v1beta1.PhaseInitialized, actions: []string{"ScaleTarget zero", "Notify Initialized"},
			message: "initialized: podinfo-primary serves all traffic (revision r1)",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if st.LastPromotedRevision != "r1" || st.ObservedRevision != "r1" || st.LastPromotedSpec != "r1" {
					t.Errorf("revisions = %q/%q/%q, want r1", st.LastPromotedRevision, st.ObservedRevision, st.LastPromotedSpec)
				}
				if c := condition(st, v1beta1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
					t.Errorf("Ready = %+v, want True", c)
				}
				if c := condition(st, v1beta1.ConditionPromoted); c == nil || c.Status != metav1.ConditionTrue || c.Reason != "Initialized" {
					t.Errorf("Promoted = %+v, want True/Initialized", c)
				}
				n := acts[1].(Notify)
				if !n.Alert || n.Message != "New Deployment detected, initialization completed." {
					t.Errorf("notify = %+v", n)
				}
			},
		},
		{
			name: "a target changed during initialization keeps the primary's revision as promoted",
			setup: func(c *v1beta1.Canary, o *Observation) {
				c.Status.Phase = v1beta1.PhaseInitializing
			},
			phase: v1beta1.PhaseInitialized,
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if st.LastPromotedRevision != "r1" {
					t.Errorf("lastPromotedRevision = %q, want the primary's r1", st.LastPromotedRevision)
				}
			},
		},
		{
			name: "waits for a revision",
			setup: func(c *v1beta1.Canary, o *Observation) {
				o.Target.Revision, o.Primary.Revision = "", ""
			},
			phase: v1beta1.PhaseInitializing, actions: []string{}, message: "waiting for the revision of podinfo",
		},
		{
			name: "a primary deleted later is recreated",
			setup: func(c *v1beta1.Canary, o *Observation) {
				c.Status = idleStatus(v1beta1.PhaseSucceeded)
				o.Target.Revision = "r1"
				o.Primary = Workload{}
				o.ServicesReady = false
				o.Route = Route{}
			},
			phase: v1beta1.PhaseSucceeded, actions: []string{"EnsurePrimary", "EnsureServices", "EnsureRoute"},
		},
	})
}

func TestStepRevisionDetection(t *testing.T) {
	runCases(t, []stepCase{
		{
			name: "same revision as promoted: no run",
			setup: func(c *v1beta1.Canary, o *Observation) {
				c.Status = idleStatus(v1beta1.PhaseInitialized)
				o.Target.Revision = "r1"
			},
			phase: v1beta1.PhaseInitialized, actions: []string{},
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if d, ok := requeueOf(acts); !ok || d != time.Minute {
					t.Errorf("requeue = %v %v, want 1m", d, ok)
				}
			},
		},
		{
			name:    "new revision starts a run",
			setup:   func(c *v1beta1.Canary, o *Observation) { c.Status = idleStatus(v1beta1.PhaseInitialized) },
			phase:   v1beta1.PhaseProgressing,
			actions: []string{"ScaleCanary up", "Notify NewRevision"},
			message: "new revision r2: starting the analysis",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if st.ObservedRevision != "r2" || st.LastAppliedSpec != "r2" || st.LastPromotedRevision != "r1" {
					t.Errorf("revisions observed %q applied %q promoted %q", st.ObservedRevision, st.LastAppliedSpec, st.LastPromotedRevision)
				}
				if l := getLedger(st); !l.ProgressAt.Equal(t0) || !l.StepAt.IsZero() {
					t.Errorf("ledger = %+v", l)
				}
				if c := condition(st, v1beta1.ConditionPromoted); c.Status != metav1.ConditionUnknown || c.Reason != "Progressing" {
					t.Errorf("Promoted = %+v", c)
				}
			},
		},
		{
			name: "new revision after a success starts a run and resets counters",
			setup: func(c *v1beta1.Canary, o *Observation) {
				c.Status = idleStatus(v1beta1.PhaseSucceeded)
				c.Status.FailedChecks = 2
			},
			phase: v1beta1.PhaseProgressing,
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if st.FailedChecks != 0 || st.CanaryWeight != 0 || st.Iterations != 0 {
					t.Errorf("counters %d/%d/%d, want 0", st.FailedChecks, st.CanaryWeight, st.Iterations)
				}
			},
		},
		{
			name: "the failed revision does not start again by itself",
			setup: func(c *v1beta1.Canary, o *Observation) {
				c.Status = idleStatus(v1beta1.PhaseFailed)
				c.Status.ObservedRevision = "r2"
				c.Status.Message = "request-success-rate 91.3% < min 99% (5/5 failed checks)"
			},
			phase: v1beta1.PhaseFailed, actions: []string{}, message: "request-success-rate 91.3% < min 99% (5/5 failed checks)",
		},
		{
			name: "another revision after a failure starts a run",
			setup: func(c *v1beta1.Canary, o *Observation) {
				c.Status = idleStatus(v1beta1.PhaseFailed)
				c.Status.ObservedRevision = "r2"
				o.Target.Revision = "r3"
			},
			phase: v1beta1.PhaseProgressing, actions: []string{"ScaleCanary up", "Notify NewRevision"},
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if st.ObservedRevision != "r3" {
					t.Errorf("observedRevision = %q, want r3", st.ObservedRevision)
				}
			},
		},
		{
			name: "reverting to the promoted revision after a failure starts nothing",
			setup: func(c *v1beta1.Canary, o *Observation) {
				c.Status = idleStatus(v1beta1.PhaseFailed)
				c.Status.ObservedRevision = "r2"
				o.Target.Revision = "r1"
			},
			phase: v1beta1.PhaseFailed, actions: []string{}, message: "podinfo is back at the promoted revision r1",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if st.ObservedRevision != "r1" {
					t.Errorf("observedRevision = %q, want r1", st.ObservedRevision)
				}
			},
		},
		{
			name: "unknown revision: nothing",
			setup: func(c *v1beta1.Canary, o *Observation) {
				c.Status = idleStatus(v1beta1.PhaseSucceeded)
				o.Target.Revision = ""
			},
			phase: v1beta1.PhaseSucceeded, actions: []string{},
		},
		{
			name: "outside the analysis windows a new revision waits",
			setup: func(c *v1beta1.Canary, o *Observation) {
				c.Status = idleStatus(v1beta1.PhaseSucceeded)
				o.InWindow = ptr(false)
			},
			phase: v1beta1.PhaseWaiting, actions: []string{}, message: "waiting for the next analysis window to start revision r2",
		},
		{
			name: "the window opens: the run starts",
			setup: func(c *v1beta1.Canary, o *Observation) {
				c.Status = idleStatus(v1beta1.PhaseWaiting)
				c.Status.ObservedRevision = "r2"
				o.InWindow = ptr(true)
			},
			phase: v1beta1.PhaseProgressing, actions: []string{"ScaleCanary up", "Notify NewRevision"},
		},
	})
}

func TestStepCanaryStrategy(t *testing.T) {
	runCases(t, []stepCase{
		{
			name: "waits for the canary to be ready",
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 0, 0)
				o.Target.Ready = false
				o.Target.Message = "CrashLoopBackOff"
			},
			phase: v1beta1.PhaseProgressing, actions: []string{}, message: "waiting for podinfo (revision r2) to be ready: CrashLoopBackOff",
		},
		{
			name: "the canary not ready past the progress deadline rolls back",
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 0, 0)
				c.Spec.ProgressDeadlineSeconds = ptr(int32(60))
				setLedger(c, ledger{ProgressAt: t0.Add(-61 * time.Second)})
				o.Target.Ready = false
			},
			phase: v1beta1.PhaseFailed, actions: []string{"ScaleCanary down", "Notify RolledBack"},
			message: "progress deadline exceeded (1m0s): waiting for podinfo (revision r2) to be ready",
		},
		{
			name: "waits for the primary to be ready",
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 10, 1)
				o.Primary.Ready = false
			},
			phase: v1beta1.PhaseProgressing, actions: []string{}, message: "waiting for podinfo-primary to be ready",
		},
		{
			name: "waits for the route to be accepted",
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 10, 1)
				o.Route.Accepted = false
			},
			phase: v1beta1.PhaseProgressing, actions: []string{}, message: "waiting for HTTPRoute podinfo to be accepted with weights 90/10",
		},
		{
			name: "a route with other weights is set back",
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 20, 2)
				o.Route.PrimaryWeight, o.Route.CanaryWeight = 100, 0
			},
			phase: v1beta1.PhaseProgressing, actions: []string{"SetWeights 80/20"}, message: "waiting for HTTPRoute podinfo",
		},
		{
			name:    "first step: no analysis, first weight",
			setup:   func(c *v1beta1.Canary, o *Observation) { running(c, o, 0, 0) },
			phase:   v1beta1.PhaseProgressing,
			actions: []string{"SetWeights 90/10", "Notify Advanced"},
			message: "canary weight 10% (step 1/5)",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if st.CanaryWeight != 10 || st.Iterations != 1 {
					t.Errorf("weight %d iterations %d, want 10/1", st.CanaryWeight, st.Iterations)
				}
				if l := getLedger(st); !l.StepAt.Equal(t0) || !l.ProgressAt.Equal(t0) {
					t.Errorf("ledger = %+v, want step and progress at t0", l)
				}
				if d, _ := requeueOf(acts); d != time.Minute {
					t.Errorf("requeue %v, want 1m", d)
				}
			},
		},
		{
			name:    "a due step asks for the analysis and changes nothing",
			setup:   func(c *v1beta1.Canary, o *Observation) { running(c, o, 10, 1) },
			phase:   v1beta1.PhaseProgressing,
			actions: []string{"RunAnalysis"},
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if st.CanaryWeight != 10 || st.Iterations != 1 {
					t.Errorf("weight %d iterations %d, want 10/1", st.CanaryWeight, st.Iterations)
				}
				if l := getLedger(st); !l.StepAt.Equal(t0.Add(-2 * time.Minute)) {
					t.Errorf("step time moved: %+v", l)
				}
				if ra := acts[0].(RunAnalysis); ra.Revision != "r2" {
					t.Errorf("RunAnalysis revision %q, want r2", ra.Revision)
				}
			},
		},
		{
			name: "a step not due waits for the interval",
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 10, 1)
				setLedger(c, ledger{StepAt: t0.Add(-20 * time.Second), ProgressAt: t0.Add(-20 * time.Second)})
			},
			phase: v1beta1.PhaseProgressing, actions: []string{},
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if d, _ := requeueOf(acts); d != 40*time.Second {
					t.Errorf("requeue %v, want 40s", d)
				}
			},
		},
		{
			name:    "a passed step advances the weight",
			setup:   func(c *v1beta1.Canary, o *Observation) { running(c, o, 10, 1); o.Analysis = pass() },
			phase:   v1beta1.PhaseProgressing,
			actions: []string{"SetWeights 80/20", "Notify Advanced"},
			message: "canary weight 20% (step 2/5)",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if len(st.Checks) != 2 || st.Checks[0].Verdict != v1beta1.VerdictPass || st.Checks[0].Value.Float64() != 99.9 {
					t.Errorf("checks = %+v", st.Checks)
				}
				if st.Checks[0].Time == nil || !st.Checks[0].Time.Time.Equal(t0) {
					t.Errorf("check time = %v", st.Checks[0].Time)
				}
			},
		},
		{
			name:    "the last step clamps to maxWeight",
			mods:    []func(*v1beta1.Canary){func(c *v1beta1.Canary) { c.Spec.Analysis.StepWeight = 30 }},
			setup:   func(c *v1beta1.Canary, o *Observation) { running(c, o, 30, 1); o.Analysis = pass() },
			actions: []string{"SetWeights 50/50", "Notify Advanced"},
			message: "canary weight 50% (step 2/2)",
		},
		{
			name: "stepWeights are followed",
			mods: []func(*v1beta1.Canary){func(c *v1beta1.Canary) {
				c.Spec.Analysis.StepWeight, c.Spec.Analysis.MaxWeight = 0, 0
				c.Spec.Analysis.StepWeights = []int{1, 5, 25}
			}},
			setup:   func(c *v1beta1.Canary, o *Observation) { running(c, o, 5, 2); o.Analysis = pass() },
			actions: []string{"SetWeights 75/25", "Notify Advanced"},
			message: "canary weight 25% (step 3/3)",
		},
		{
			name:    "a passed step at maxWeight promotes",
			setup:   func(c *v1beta1.Canary, o *Observation) { running(c, o, 50, 5); o.Analysis = pass() },
			phase:   v1beta1.PhasePromoting,
			actions: []string{"PromotePrimary", "Notify Promoting"},
			message: "analysis passed: promoting revision r2, copying podinfo to podinfo-primary",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if p := acts[0].(PromotePrimary); p.Revision != "r2" {
					t.Errorf("PromotePrimary revision %q", p.Revision)
				}
				if st.CanaryWeight != 50 {
					t.Errorf("weight %d: traffic stays on the canary until the primary is promoted", st.CanaryWeight)
				}
			},
		},
		{
			name: "a failed check is counted and holds",
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 20, 2)
				c.Status.FailedChecks = 2
				o.Analysis = failing()
			},
			phase:   v1beta1.PhaseProgressing,
			actions: []string{"Notify CheckFailed"},
			message: "request-success-rate 91.3% < min 99% (3/5 failed checks)",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if st.FailedChecks != 3 || st.CanaryWeight != 20 {
					t.Errorf("failedChecks %d weight %d, want 3/20", st.FailedChecks, st.CanaryWeight)
				}
				if st.Checks[0].Verdict != v1beta1.VerdictFail || st.Checks[0].Min.Float64() != 99 {
					t.Errorf("checks = %+v", st.Checks)
				}
			},
		},
		{
			name: "the threshold of failed checks rolls back",
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 20, 2)
				c.Status.FailedChecks = 4
				o.Analysis = failing()
			},
			phase:   v1beta1.PhaseFailed,
			actions: []string{"SetWeights 100/0", "ScaleCanary down", "Notify RolledBack"},
			message: "request-success-rate 91.3% < min 99% (5/5 failed checks)",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if st.FailedChecks != 5 || st.CanaryWeight != 0 || st.Iterations != 0 {
					t.Errorf("failedChecks %d weight %d iterations %d", st.FailedChecks, st.CanaryWeight, st.Iterations)
				}
				c := condition(st, v1beta1.ConditionPromoted)
				if c == nil || c.Status != metav1.ConditionFalse || c.Reason != "Failed" ||
					!strings.Contains(c.Message, "request-success-rate 91.3% < min 99%") {
					t.Errorf("Promoted = %+v", c)
				}
				n := acts[2].(Notify)
				if n.Severity != v1beta1.SeverityError || !n.Alert || !strings.Contains(n.Message, "Failed checks threshold reached 5") {
					t.Errorf("notify = %+v", n)
				}
				if st.LastPromotedRevision != "r1" || st.ObservedRevision != "r2" {
					t.Errorf("revisions promoted %q observed %q", st.LastPromotedRevision, st.ObservedRevision)
				}
			},
		},
		{
			name: "an error counts as a failed check, named as such",
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 20, 2)
				o.Analysis = &AnalysisResults{Results: []analysis.Result{
					{Name: "request-duration", Verdict: analysis.Error, Value: math.NaN(), Message: "cannot compute request-duration: telemetry unreachable"},
				}}
			},
			phase:   v1beta1.PhaseProgressing,
			message: "cannot compute request-duration: telemetry unreachable (1/5 failed checks)",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if st.FailedChecks != 1 || st.Checks[0].Value != nil || st.Checks[0].Verdict != v1beta1.VerdictError {
					t.Errorf("failedChecks %d checks %+v", st.FailedChecks, st.Checks)
				}
			},
		},
		{
			name: "no data holds without a failed check",
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 20, 2)
				o.Analysis = noData()
			},
			phase:   v1beta1.PhaseProgressing,
			actions: []string{},
			message: "waiting for traffic: no requests to podinfo in the last 1m",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if st.FailedChecks != 0 || st.CanaryWeight != 20 {
					t.Errorf("failedChecks %d weight %d, want 0/20", st.FailedChecks, st.CanaryWeight)
				}
				l := getLedger(st)
				if !l.StepAt.Equal(t0) || !l.ProgressAt.Equal(t0.Add(-time.Minute)) {
					t.Errorf("ledger = %+v: the step counts, the progress does not", l)
				}
				if st.Checks[0].Verdict != v1beta1.VerdictNoData {
					t.Errorf("checks = %+v", st.Checks)
				}
			},
		},
		{
			name: "no data past the progress deadline rolls back",
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 20, 2)
				setLedger(c, ledger{StepAt: t0.Add(-time.Minute), ProgressAt: t0.Add(-11 * time.Minute)})
				o.Analysis = noData()
			},
			phase:   v1beta1.PhaseFailed,
			actions: []string{"SetWeights 100/0", "ScaleCanary down", "Notify RolledBack"},
			message: "progress deadline exceeded (10m0s): waiting for traffic: no requests to podinfo in the last 1m",
		},
		{
			name: "noDataPolicy fail counts no data as a failed check",
			mods: []func(*v1beta1.Canary){func(c *v1beta1.Canary) { c.Spec.Analysis.NoDataPolicy = v1beta1.NoDataFail }},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 20, 2)
				o.Analysis = noData()
			},
			phase:   v1beta1.PhaseProgressing,
			message: "request-success-rate no data: no requests to podinfo in the last 1m (1/5 failed checks)",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if st.FailedChecks != 1 || st.CanaryWeight != 20 {
					t.Errorf("failedChecks %d weight %d, want 1/20", st.FailedChecks, st.CanaryWeight)
				}
			},
		},
		{
			name: "a failure wins over no data",
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 20, 2)
				o.Analysis = &AnalysisResults{Results: []analysis.Result{noData().Results[0], failing().Results[0]}}
			},
			message: "request-success-rate 91.3% < min 99% (1/5 failed checks)",
		},
		{
			name: "a new revision in the middle of a run restarts it",
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 30, 3)
				c.Status.FailedChecks = 2
				o.Target.Revision = "r3"
			},
			phase:   v1beta1.PhaseProgressing,
			actions: []string{"SetWeights 100/0", "Notify Restarted"},
			message: "new revision r3 detected during the run: restarting the analysis",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if st.FailedChecks != 0 || st.CanaryWeight != 0 || st.Iterations != 0 || st.ObservedRevision != "r3" {
					t.Errorf("failedChecks %d weight %d iterations %d observed %q", st.FailedChecks, st.CanaryWeight, st.Iterations, st.ObservedRevision)
				}
				if l := getLedger(st); !l.StepAt.IsZero() || !l.ProgressAt.Equal(t0) {
					t.Errorf("ledger = %+v", l)
				}
			},
		},
		{
			name: "a new revision while waiting for promotion restarts the run",
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 50, 5)
				c.Status.Phase = v1beta1.PhaseWaitingPromotion
				o.Target.Revision = "r3"
			},
			phase: v1beta1.PhaseProgressing, actions: []string{"SetWeights 100/0", "Notify Restarted"},
		},
		{
			name: "the target back at the promoted revision cancels the run",
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 30, 3)
				o.Target.Revision = "r1"
			},
			phase:   v1beta1.PhaseSucceeded,
			actions: []string{"SetWeights 100/0", "ScaleCanary down", "Notify Restarted"},
			message: "run cancelled: podinfo is back at the promoted revision r1",
		},
		{
			name: "mirror: the first step mirrors",
			mods: []func(*v1beta1.Canary){func(c *v1beta1.Canary) { c.Spec.Analysis.Mirror = true }},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 0, 0)
			},
			actions: []string{"SetWeights 100/0 mirror", "Notify Advanced"},
			message: "mirroring traffic to podinfo",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if st.CanaryWeight != 0 || st.Iterations != 1 {
					t.Errorf("weight %d iterations %d, want 0/1", st.CanaryWeight, st.Iterations)
				}
			},
		},
		{
			name: "mirror: the next step shifts the first weight",
			mods: []func(*v1beta1.Canary){func(c *v1beta1.Canary) { c.Spec.Analysis.Mirror = true }},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 0, 1)
				o.Route.Mirrored = true
				o.Analysis = pass()
			},
			actions: []string{"SetWeights 90/10", "Notify Advanced"},
		},
		{
			name: "skipAnalysis promotes as soon as the canary is ready",
			mods: []func(*v1beta1.Canary){func(c *v1beta1.Canary) { c.Spec.SkipAnalysis = true }},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 0, 0)
			},
			phase:   v1beta1.PhasePromoting,
			actions: []string{"PromotePrimary", "Notify Promoting"},
			message: "analysis skipped",
		},
		{
			name: "skipAnalysis still waits for the canary",
			mods: []func(*v1beta1.Canary){func(c *v1beta1.Canary) { c.Spec.SkipAnalysis = true }},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 0, 0)
				o.Target.Ready = false
			},
			phase: v1beta1.PhaseProgressing, actions: []string{},
		},
		{
			name: "outside the windows with windowPolicy hold the run holds",
			mods: []func(*v1beta1.Canary){func(c *v1beta1.Canary) {
				c.Spec.Analysis.WindowPolicy = v1beta1.WindowHold
				c.Spec.Analysis.Windows = []v1beta1.AnalysisWindow{{Schedule: "0 9 * * 1-5", Duration: "8h"}}
			}},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 20, 2)
				o.InWindow = ptr(false)
				o.Analysis = pass()
			},
			phase: v1beta1.PhaseProgressing, actions: []string{}, message: "outside the analysis windows: holding at canary weight 20%",
		},
		{
			name: "outside the windows with windowPolicy finish the run goes on",
			mods: []func(*v1beta1.Canary){func(c *v1beta1.Canary) {
				c.Spec.Analysis.Windows = []v1beta1.AnalysisWindow{{Schedule: "0 9 * * 1-5", Duration: "8h"}}
			}},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 20, 2)
				o.InWindow = ptr(false)
				o.Analysis = pass()
			},
			actions: []string{"SetWeights 70/30", "Notify Advanced"},
		},
	})
}

func TestStepPromotion(t *testing.T) {
	promoting := func(w int) func(c *v1beta1.Canary, o *Observation) {
		return func(c *v1beta1.Canary, o *Observation) {
			running(c, o, w, 5)
			c.Status.Phase = v1beta1.PhasePromoting
			setLedger(c, ledger{StepAt: t0.Add(-2 * time.Minute), ProgressAt: t0.Add(-time.Minute)})
			o.Primary.Revision = "r2"
		}
	}
	runCases(t, []stepCase{
		{
			name: "waits for the primary to roll out the revision",
			setup: func(c *v1beta1.Canary, o *Observation) {
				promoting(50)(c, o)
				o.Primary.Revision = "r1"
			},
			phase: v1beta1.PhasePromoting, actions: []string{}, message: "waiting for podinfo-primary to roll out revision r2",
		},
		{
			name: "waits for the promoted primary to be ready",
			setup: func(c *v1beta1.Canary, o *Observation) {
				promoting(50)(c, o)
				o.Primary.Ready = false
				o.Primary.Message = "1/2 updated"
			},
			phase: v1beta1.PhasePromoting, actions: []string{}, message: "waiting for podinfo-primary to roll out revision r2: 1/2 updated",
		},
		{
			name:    "the promoted primary takes all traffic back at once",
			setup:   promoting(50),
			phase:   v1beta1.PhaseFinalising,
			actions: []string{"SetWeights 100/0"},
			message: "routing all traffic to podinfo-primary",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if st.CanaryWeight != 0 {
					t.Errorf("weight %d", st.CanaryWeight)
				}
			},
		},
		{
			name:    "stepWeightPromotion shifts traffic back by steps",
			mods:    []func(*v1beta1.Canary){func(c *v1beta1.Canary) { c.Spec.Analysis.StepWeightPromotion = 20 }},
			setup:   promoting(50),
			phase:   v1beta1.PhasePromoting,
			actions: []string{"SetWeights 70/30"},
			message: "promotion: podinfo-primary weight 70%, podinfo weight 30%",
		},
		{
			name: "stepWeightPromotion waits an interval between steps",
			mods: []func(*v1beta1.Canary){func(c *v1beta1.Canary) { c.Spec.Analysis.StepWeightPromotion = 20 }},
			setup: func(c *v1beta1.Canary, o *Observation) {
				promoting(30)(c, o)
				setLedger(c, ledger{StepAt: t0.Add(-30 * time.Second), ProgressAt: t0.Add(-30 * time.Second)})
			},
			phase: v1beta1.PhasePromoting, actions: []string{},
		},
		{
			name:    "stepWeightPromotion's last step finalises",
			mods:    []func(*v1beta1.Canary){func(c *v1beta1.Canary) { c.Spec.Analysis.StepWeightPromotion = 20 }},
			setup:   promoting(10),
			phase:   v1beta1.PhaseFinalising,
			actions: []string{"SetWeights 100/0"},
		},
		{
			name: "a primary that does not roll out in time fails the promotion, traffic on the canary",
			setup: func(c *v1beta1.Canary, o *Observation) {
				promoting(50)(c, o)
				setLedger(c, ledger{ProgressAt: t0.Add(-11 * time.Minute)})
				o.Primary.Ready = false
			},
			phase:   v1beta1.PhaseFailed,
			actions: []string{"SetWeights 0/100", "Notify PromotionFailed"},
			message: "promotion failed: podinfo-primary did not roll out revision r2 within 10m0s; all traffic routed to podinfo",
		},
		{
			name: "finalising: canary scaled to zero, Succeeded",
			setup: func(c *v1beta1.Canary, o *Observation) {
				promoting(0)(c, o)
				c.Status.Phase = v1beta1.PhaseFinalising
				c.Status.FailedChecks = 1
			},
			phase:   v1beta1.PhaseSucceeded,
			actions: []string{"ScaleCanary down", "Notify Succeeded"},
			message: "promoted revision r2",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if st.LastPromotedRevision != "r2" || st.LastPromotedSpec != "r2" || st.ObservedRevision != "r2" {
					t.Errorf("revisions promoted %q observed %q", st.LastPromotedRevision, st.ObservedRevision)
				}
				c := condition(st, v1beta1.ConditionPromoted)
				if c == nil || c.Status != metav1.ConditionTrue || c.Reason != "Succeeded" {
					t.Errorf("Promoted = %+v", c)
				}
				if n := acts[1].(Notify); n.Message != "Canary analysis completed successfully, promotion finished." || !n.Alert {
					t.Errorf("notify = %+v", n)
				}
				if st.FailedChecks != 1 {
					t.Errorf("failedChecks %d: kept to show how the run went", st.FailedChecks)
				}
			},
		},
		{
			name: "finalising waits for the route",
			setup: func(c *v1beta1.Canary, o *Observation) {
				promoting(0)(c, o)
				c.Status.Phase = v1beta1.PhaseFinalising
				o.Route.PrimaryWeight, o.Route.CanaryWeight = 50, 50
			},
			phase:   v1beta1.PhaseFinalising,
			actions: []string{"SetWeights 100/0"},
			message: "waiting for HTTPRoute podinfo to route all traffic to podinfo-primary",
		},
		{
			name: "finalising after skipAnalysis says so",
			mods: []func(*v1beta1.Canary){func(c *v1beta1.Canary) { c.Spec.SkipAnalysis = true }},
			setup: func(c *v1beta1.Canary, o *Observation) {
				promoting(0)(c, o)
				c.Status.Phase = v1beta1.PhaseFinalising
			},
			phase: v1beta1.PhaseSucceeded,
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if n := acts[1].(Notify); n.Message != "Canary analysis was skipped, promotion finished." {
					t.Errorf("notify = %+v", n)
				}
			},
		},
	})
}

func TestStepABTesting(t *testing.T) {
	runCases(t, []stepCase{
		{
			name:    "first step routes matching requests to the canary",
			mods:    []func(*v1beta1.Canary){abTesting(3)},
			setup:   func(c *v1beta1.Canary, o *Observation) { running(c, o, 0, 0) },
			phase:   v1beta1.PhaseProgressing,
			actions: []string{"SetWeights 0/100 match", "Notify Advanced"},
			message: "iteration 1/3",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if st.CanaryWeight != 0 || st.Iterations != 1 {
					t.Errorf("weight %d iterations %d, want 0/1", st.CanaryWeight, st.Iterations)
				}
			},
		},
		{
			name: "a passed iteration counts",
			mods: []func(*v1beta1.Canary){abTesting(3)},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 0, 1)
				o.Route = Route{Exists: true, Accepted: true, CanaryWeight: 100, Matched: true}
				o.Analysis = pass()
			},
			actions: []string{"Notify Advanced"},
			message: "iteration 2/3",
		},
		{
			name: "the last iteration promotes",
			mods: []func(*v1beta1.Canary){abTesting(3)},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 0, 3)
				o.Route = Route{Exists: true, Accepted: true, CanaryWeight: 100, Matched: true}
				o.Analysis = pass()
			},
			phase:   v1beta1.PhasePromoting,
			actions: []string{"PromotePrimary", "Notify Promoting"},
		},
		{
			name: "promoting keeps the match route until the primary is ready, then 100/0 at once",
			mods: []func(*v1beta1.Canary){abTesting(3), func(c *v1beta1.Canary) { c.Spec.Analysis.StepWeightPromotion = 10 }},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 0, 3)
				c.Status.Phase = v1beta1.PhasePromoting
				o.Route = Route{Exists: true, Accepted: true, CanaryWeight: 100, Matched: true}
				o.Primary.Revision = "r2"
			},
			phase:   v1beta1.PhaseFinalising,
			actions: []string{"SetWeights 100/0"},
		},
		{
			name: "failing checks count",
			mods: []func(*v1beta1.Canary){abTesting(3)},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 0, 2)
				o.Route = Route{Exists: true, Accepted: true, CanaryWeight: 100, Matched: true}
				o.Analysis = failing()
			},
			message: "(1/5 failed checks)",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if st.Iterations != 2 {
					t.Errorf("iterations %d, want 2", st.Iterations)
				}
			},
		},
	})
}

func TestStepBlueGreen(t *testing.T) {
	runCases(t, []stepCase{
		{
			name:    "first step: no traffic to the canary",
			mods:    []func(*v1beta1.Canary){blueGreen(2, false)},
			setup:   func(c *v1beta1.Canary, o *Observation) { running(c, o, 0, 0) },
			actions: []string{"Notify Advanced"},
			message: "iteration 1/2",
		},
		{
			name:    "first step with mirror mirrors",
			mods:    []func(*v1beta1.Canary){blueGreen(2, true)},
			setup:   func(c *v1beta1.Canary, o *Observation) { running(c, o, 0, 0) },
			actions: []string{"SetWeights 100/0 mirror", "Notify Advanced"},
		},
		{
			name: "after the iterations all traffic switches to the canary",
			mods: []func(*v1beta1.Canary){blueGreen(2, false)},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 0, 2)
				o.Analysis = pass()
			},
			phase:   v1beta1.PhaseProgressing,
			actions: []string{"SetWeights 0/100", "Notify Advanced"},
			message: "all traffic switched to podinfo",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if st.CanaryWeight != 100 || st.Iterations != 3 {
					t.Errorf("weight %d iterations %d, want 100/3", st.CanaryWeight, st.Iterations)
				}
			},
		},
		{
			name: "confirm-promotion holds the switch",
			mods: []func(*v1beta1.Canary){blueGreen(2, false), hook(v1beta1.ConfirmPromotionHook, "gate")},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 0, 2)
				o.Analysis = pass()
				o.Gates = answers(v1beta1.ConfirmPromotionHook, map[string]bool{"gate": false})
			},
			phase:   v1beta1.PhaseWaitingPromotion,
			actions: []string{"Notify WaitingPromotion"},
			message: "waiting for approval: confirm-promotion webhook gate: gate closed",
		},
		{
			name: "the step after the switch promotes",
			mods: []func(*v1beta1.Canary){blueGreen(2, false)},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 100, 3)
				o.Analysis = pass()
			},
			phase:   v1beta1.PhasePromoting,
			actions: []string{"PromotePrimary", "Notify Promoting"},
		},
	})
}

func TestStepWebhooks(t *testing.T) {
	runCases(t, []stepCase{
		{
			name: "confirm-rollout is asked before a run starts; nothing changes until it answers",
			mods: []func(*v1beta1.Canary){hook(v1beta1.ConfirmRolloutHook, "gate")},
			setup: func(c *v1beta1.Canary, o *Observation) {
				c.Status = idleStatus(v1beta1.PhaseSucceeded)
			},
			phase:   v1beta1.PhaseSucceeded,
			actions: []string{"CallHook confirm-rollout/gate"},
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if st.ObservedRevision != "r1" {
					t.Errorf("observedRevision %q changed before the answer", st.ObservedRevision)
				}
				if ch := acts[0].(CallHook); ch.Phase != v1beta1.PhaseSucceeded {
					t.Errorf("hook phase %q", ch.Phase)
				}
			},
		},
		{
			name: "confirm-rollout closed: Waiting",
			mods: []func(*v1beta1.Canary){hook(v1beta1.ConfirmRolloutHook, "gate")},
			setup: func(c *v1beta1.Canary, o *Observation) {
				c.Status = idleStatus(v1beta1.PhaseSucceeded)
				o.Gates = answers(v1beta1.ConfirmRolloutHook, map[string]bool{"gate": false})
			},
			phase:   v1beta1.PhaseWaiting,
			actions: []string{"Notify WaitingApproval"},
			message: "waiting for approval: confirm-rollout webhook gate: gate closed",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if st.ObservedRevision != "r2" {
					t.Errorf("observedRevision %q, want r2", st.ObservedRevision)
				}
				if c := condition(st, v1beta1.ConditionPromoted); c.Status != metav1.ConditionUnknown || c.Message != "Waiting for approval." {
					t.Errorf("Promoted = %+v", c)
				}
			},
		},
		{
			name: "confirm-rollout muted: no alert",
			mods: []func(*v1beta1.Canary){hook(v1beta1.ConfirmRolloutHook, "gate"), func(c *v1beta1.Canary) { c.Spec.Analysis.Webhooks[0].MuteAlert = true }},
			setup: func(c *v1beta1.Canary, o *Observation) {
				c.Status = idleStatus(v1beta1.PhaseSucceeded)
				o.Gates = answers(v1beta1.ConfirmRolloutHook, map[string]bool{"gate": false})
			},
			phase: v1beta1.PhaseWaiting,
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if n := acts[0].(Notify); n.Alert {
					t.Errorf("notify %+v: muted", n)
				}
			},
		},
		{
			name: "Waiting asks confirm-rollout and rollback again",
			mods: []func(*v1beta1.Canary){hook(v1beta1.ConfirmRolloutHook, "gate"), hook(v1beta1.RollbackHook, "undo")},
			setup: func(c *v1beta1.Canary, o *Observation) {
				c.Status = idleStatus(v1beta1.PhaseWaiting)
				c.Status.ObservedRevision = "r2"
			},
			phase:   v1beta1.PhaseWaiting,
			actions: []string{"CallHook rollback/undo", "CallHook confirm-rollout/gate"},
		},
		{
			name: "Waiting, still closed: no new alert",
			mods: []func(*v1beta1.Canary){hook(v1beta1.ConfirmRolloutHook, "gate")},
			setup: func(c *v1beta1.Canary, o *Observation) {
				c.Status = idleStatus(v1beta1.PhaseWaiting)
				c.Status.ObservedRevision = "r2"
				o.Gates = answers(v1beta1.ConfirmRolloutHook, map[string]bool{"gate": false})
			},
			phase: v1beta1.PhaseWaiting, actions: []string{},
		},
		{
			name: "Waiting, approved: the run starts",
			mods: []func(*v1beta1.Canary){hook(v1beta1.ConfirmRolloutHook, "gate")},
			setup: func(c *v1beta1.Canary, o *Observation) {
				c.Status = idleStatus(v1beta1.PhaseWaiting)
				c.Status.ObservedRevision = "r2"
				o.Gates = answers(v1beta1.ConfirmRolloutHook, map[string]bool{"gate": true})
			},
			phase: v1beta1.PhaseProgressing, actions: []string{"ScaleCanary up", "Notify NewRevision"},
			message: "revision r2 approved",
		},
		{
			name: "Waiting, rollback asked: Failed",
			mods: []func(*v1beta1.Canary){hook(v1beta1.ConfirmRolloutHook, "gate"), hook(v1beta1.RollbackHook, "undo")},
			setup: func(c *v1beta1.Canary, o *Observation) {
				c.Status = idleStatus(v1beta1.PhaseWaiting)
				c.Status.ObservedRevision = "r2"
				o.Gates = answers(v1beta1.ConfirmRolloutHook, map[string]bool{"gate": false})
				o.Gates[v1beta1.RollbackHook] = GateAnswer{Answers: []HookAnswer{{Name: "undo", OK: true, Message: "ok"}}}
			},
			phase: v1beta1.PhaseFailed, message: "rolled back by webhook undo",
		},
		{
			name: "pre-rollout, rollback and confirm-traffic-increase are asked at the first step, no analysis",
			mods: []func(*v1beta1.Canary){
				hook(v1beta1.PreRolloutHook, "smoke"), hook(v1beta1.RolloutHook, "load"),
				hook(v1beta1.RollbackHook, "undo"), hook(v1beta1.ConfirmTrafficIncreaseHook, "more"),
			},
			setup:   func(c *v1beta1.Canary, o *Observation) { running(c, o, 0, 0) },
			phase:   v1beta1.PhaseProgressing,
			actions: []string{"CallHook rollback/undo", "CallHook pre-rollout/smoke", "CallHook confirm-traffic-increase/more"},
		},
		{
			name: "rollout hooks and the analysis are asked at later steps",
			mods: []func(*v1beta1.Canary){hook(v1beta1.PreRolloutHook, "smoke"), hook("", "load")},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 10, 1)
			},
			actions: []string{"RunAnalysis", "CallHook rollout/load"},
		},
		{
			name: "a failed pre-rollout hook is a failed check",
			mods: []func(*v1beta1.Canary){hook(v1beta1.PreRolloutHook, "smoke")},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 0, 0)
				o.Gates = answers(v1beta1.PreRolloutHook, map[string]bool{"smoke": false})
			},
			phase:   v1beta1.PhaseProgressing,
			actions: []string{"Notify CheckFailed"},
			message: "pre-rollout webhook smoke failed: gate closed (1/5 failed checks)",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if st.CanaryWeight != 0 || st.FailedChecks != 1 {
					t.Errorf("weight %d failedChecks %d", st.CanaryWeight, st.FailedChecks)
				}
			},
		},
		{
			name: "a failed rollout hook is a failed check, before the metrics",
			mods: []func(*v1beta1.Canary){hook(v1beta1.RolloutHook, "load")},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 10, 1)
				o.Analysis = failing()
				o.Gates = answers(v1beta1.RolloutHook, map[string]bool{"load": false})
			},
			message: "rollout webhook load failed: gate closed (1/5 failed checks)",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if st.FailedChecks != 1 || len(st.Checks) != 3 || st.Checks[0].Name != "load" {
					t.Errorf("failedChecks %d checks %+v", st.FailedChecks, st.Checks)
				}
			},
		},
		{
			name: "confirm-traffic-increase closed holds the weight, without a failed check",
			mods: []func(*v1beta1.Canary){hook(v1beta1.ConfirmTrafficIncreaseHook, "more")},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 10, 1)
				o.Analysis = pass()
				o.Gates = answers(v1beta1.ConfirmTrafficIncreaseHook, map[string]bool{"more": false})
			},
			phase:   v1beta1.PhaseProgressing,
			actions: []string{"Notify WaitingTrafficIncrease"},
			message: "waiting for approval: confirm-traffic-increase webhook more: gate closed",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if st.CanaryWeight != 10 || st.FailedChecks != 0 {
					t.Errorf("weight %d failedChecks %d", st.CanaryWeight, st.FailedChecks)
				}
			},
		},
		{
			name: "confirm-traffic-increase open: the weight increases",
			mods: []func(*v1beta1.Canary){hook(v1beta1.ConfirmTrafficIncreaseHook, "more")},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 10, 1)
				o.Analysis = pass()
				o.Gates = answers(v1beta1.ConfirmTrafficIncreaseHook, map[string]bool{"more": true})
			},
			actions: []string{"SetWeights 80/20", "Notify Advanced"},
		},
		{
			name: "confirm-traffic-increase is not asked at maxWeight, confirm-promotion is",
			mods: []func(*v1beta1.Canary){hook(v1beta1.ConfirmTrafficIncreaseHook, "more"), hook(v1beta1.ConfirmPromotionHook, "ship")},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 50, 5)
			},
			actions: []string{"RunAnalysis", "CallHook confirm-promotion/ship"},
		},
		{
			name: "confirm-promotion closed: WaitingPromotion",
			mods: []func(*v1beta1.Canary){hook(v1beta1.ConfirmPromotionHook, "ship")},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 50, 5)
				o.Analysis = pass()
				o.Gates = answers(v1beta1.ConfirmPromotionHook, map[string]bool{"ship": false})
			},
			phase:   v1beta1.PhaseWaitingPromotion,
			actions: []string{"Notify WaitingPromotion"},
			message: "waiting for approval: confirm-promotion webhook ship",
		},
		{
			name: "WaitingPromotion keeps checking",
			mods: []func(*v1beta1.Canary){hook(v1beta1.ConfirmPromotionHook, "ship")},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 50, 5)
				c.Status.Phase = v1beta1.PhaseWaitingPromotion
				o.Analysis = failing()
				o.Gates = answers(v1beta1.ConfirmPromotionHook, map[string]bool{"ship": true})
			},
			phase:   v1beta1.PhaseWaitingPromotion,
			message: "(1/5 failed checks)",
		},
		{
			name: "WaitingPromotion approved: Promoting",
			mods: []func(*v1beta1.Canary){hook(v1beta1.ConfirmPromotionHook, "ship")},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 50, 5)
				c.Status.Phase = v1beta1.PhaseWaitingPromotion
				o.Analysis = pass()
				o.Gates = answers(v1beta1.ConfirmPromotionHook, map[string]bool{"ship": true})
			},
			phase:   v1beta1.PhasePromoting,
			actions: []string{"PromotePrimary", "Notify Promoting"},
		},
		{
			name: "a rollback hook that answers success rolls back",
			mods: []func(*v1beta1.Canary){hook(v1beta1.RollbackHook, "undo"), hook(v1beta1.PostRolloutHook, "report")},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 20, 2)
				o.Analysis = pass()
				o.Gates = answers(v1beta1.RollbackHook, map[string]bool{"undo": true})
			},
			phase:   v1beta1.PhaseFailed,
			actions: []string{"SetWeights 100/0", "ScaleCanary down", "CallHook post-rollout/report", "Notify RolledBack"},
			message: "rolled back by webhook undo: approved",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if ch := acts[2].(CallHook); ch.Phase != v1beta1.PhaseFailed {
					t.Errorf("post-rollout phase %q, want Failed", ch.Phase)
				}
			},
		},
		{
			name: "a rollback hook that answers failure does nothing",
			mods: []func(*v1beta1.Canary){hook(v1beta1.RollbackHook, "undo")},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 20, 2)
				o.Analysis = pass()
				o.Gates = answers(v1beta1.RollbackHook, map[string]bool{"undo": false})
			},
			phase: v1beta1.PhaseProgressing, actions: []string{"SetWeights 70/30", "Notify Advanced"},
		},
		{
			name: "post-rollout is called after a success",
			mods: []func(*v1beta1.Canary){hook(v1beta1.PostRolloutHook, "report")},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 0, 5)
				c.Status.Phase = v1beta1.PhaseFinalising
				o.Primary.Revision = "r2"
			},
			phase:   v1beta1.PhaseSucceeded,
			actions: []string{"ScaleCanary down", "CallHook post-rollout/report", "Notify Succeeded"},
		},
	})
}

func TestStepManual(t *testing.T) {
	req := func(k ManualKind) *ManualAction { return &ManualAction{Kind: k, RequestedAt: t0.Add(-5 * time.Second)} }
	acked := func(k ManualKind) func(*testing.T, v1beta1.CanaryStatus, []Action) {
		return func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
			t.Helper()
			l := getLedger(st)
			if l.ManualKind != k || !l.ManualAt.Equal(t0.Add(-5*time.Second)) {
				t.Errorf("ledger %+v: want %s acknowledged", l, k)
			}
		}
	}
	runCases(t, []stepCase{
		{
			name: "promote skips to promotion",
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 20, 2)
				o.Manual = req(ManualPromote)
			},
			phase: v1beta1.PhasePromoting, actions: []string{"PromotePrimary", "Notify Promoting"},
			message: "promoted by user", check: acked(ManualPromote),
		},
		{
			name: "promote while waiting for approval",
			mods: []func(*v1beta1.Canary){hook(v1beta1.ConfirmPromotionHook, "ship")},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 50, 5)
				c.Status.Phase = v1beta1.PhaseWaitingPromotion
				o.Manual = req(ManualPromote)
			},
			phase: v1beta1.PhasePromoting, actions: []string{"PromotePrimary", "Notify Promoting"},
		},
		{
			name: "promote a failed revision",
			setup: func(c *v1beta1.Canary, o *Observation) {
				c.Status = idleStatus(v1beta1.PhaseFailed)
				c.Status.ObservedRevision = "r2"
				o.Manual = req(ManualPromote)
			},
			phase: v1beta1.PhasePromoting, actions: []string{"PromotePrimary", "Notify Promoting"},
		},
		{
			name: "promote with nothing to promote is refused",
			setup: func(c *v1beta1.Canary, o *Observation) {
				c.Status = idleStatus(v1beta1.PhaseSucceeded)
				o.Target.Revision = "r1"
				o.Manual = req(ManualPromote)
			},
			phase: v1beta1.PhaseSucceeded, actions: []string{"Notify Manual"},
			message: "promote ignored: no run in progress and no failed revision to promote (phase Succeeded)",
			check:   acked(ManualPromote),
		},
		{
			name: "abort rolls back now",
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 30, 3)
				o.Manual = req(ManualAbort)
			},
			phase:   v1beta1.PhaseFailed,
			actions: []string{"SetWeights 100/0", "ScaleCanary down", "Notify RolledBack"},
			message: "aborted by user",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				acked(ManualAbort)(t, st, acts)
				if c := condition(st, v1beta1.ConditionPromoted); c.Status != metav1.ConditionFalse {
					t.Errorf("Promoted = %+v", c)
				}
			},
		},
		{
			name: "abort while Waiting",
			setup: func(c *v1beta1.Canary, o *Observation) {
				c.Status = idleStatus(v1beta1.PhaseWaiting)
				c.Status.ObservedRevision = "r2"
				o.Manual = req(ManualAbort)
			},
			phase: v1beta1.PhaseFailed, message: "aborted by user",
		},
		{
			name: "abort with no run is refused",
			setup: func(c *v1beta1.Canary, o *Observation) {
				c.Status = idleStatus(v1beta1.PhaseSucceeded)
				o.Target.Revision = "r1"
				o.Manual = req(ManualAbort)
			},
			phase: v1beta1.PhaseSucceeded, message: "abort ignored: no run in progress (phase Succeeded)",
		},
		{
			name: "abort during promotion is refused",
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 50, 5)
				c.Status.Phase = v1beta1.PhasePromoting
				o.Manual = req(ManualAbort)
			},
			phase: v1beta1.PhasePromoting, actions: []string{"Notify Manual"},
			message: "abort ignored: the revision is already being promoted (phase Promoting)",
		},
		{
			name: "an acknowledged action is not applied again",
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 30, 3)
				setLedger(c, ledger{StepAt: t0, ProgressAt: t0, ManualKind: ManualAbort, ManualAt: t0.Add(-5 * time.Second)})
				o.Manual = &ManualAction{Kind: ManualAbort, RequestedAt: t0.Add(-5*time.Second + 300*time.Millisecond)}
			},
			phase: v1beta1.PhaseProgressing, actions: []string{},
		},
		{
			name: "retry re-runs the failed revision",
			setup: func(c *v1beta1.Canary, o *Observation) {
				c.Status = idleStatus(v1beta1.PhaseFailed)
				c.Status.ObservedRevision = "r2"
				c.Status.FailedChecks = 5
				o.Manual = req(ManualRetry)
			},
			phase:   v1beta1.PhaseProgressing,
			actions: []string{"ScaleCanary up", "Notify NewRevision"},
			message: "retry requested by user",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				acked(ManualRetry)(t, st, acts)
				if st.FailedChecks != 0 || st.ObservedRevision != "r2" {
					t.Errorf("failedChecks %d observed %q", st.FailedChecks, st.ObservedRevision)
				}
			},
		},
		{
			name: "retry asks confirm-rollout first and is acknowledged only then",
			mods: []func(*v1beta1.Canary){hook(v1beta1.ConfirmRolloutHook, "gate")},
			setup: func(c *v1beta1.Canary, o *Observation) {
				c.Status = idleStatus(v1beta1.PhaseFailed)
				c.Status.ObservedRevision = "r2"
				o.Manual = req(ManualRetry)
			},
			phase:   v1beta1.PhaseFailed,
			actions: []string{"CallHook confirm-rollout/gate"},
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if l := getLedger(st); l.ManualKind != "" {
					t.Errorf("ledger %+v: acknowledged before the answer", l)
				}
			},
		},
		{
			name: "retry of a success is refused",
			setup: func(c *v1beta1.Canary, o *Observation) {
				c.Status = idleStatus(v1beta1.PhaseSucceeded)
				o.Target.Revision = "r1"
				o.Manual = req(ManualRetry)
			},
			phase: v1beta1.PhaseSucceeded, message: "retry ignored: only a failed run can be retried (phase Succeeded)",
		},
		{
			name: "pause holds the weight even when a step is due",
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 20, 2)
				o.Manual = req(ManualPause)
				o.Analysis = pass()
			},
			phase:   v1beta1.PhaseProgressing,
			actions: []string{"Notify Manual"},
			message: "paused by user at canary weight 20%",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				acked(ManualPause)(t, st, acts)
				if !getLedger(st).Paused || st.CanaryWeight != 20 {
					t.Errorf("paused %v weight %d", getLedger(st).Paused, st.CanaryWeight)
				}
			},
		},
		{
			name: "paused: the progress deadline does not run out",
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 20, 2)
				setLedger(c, ledger{StepAt: t0.Add(-time.Hour), ProgressAt: t0.Add(-time.Hour), Paused: true})
				o.Target.Ready = false
			},
			phase: v1beta1.PhaseProgressing, actions: []string{}, message: "paused by user",
		},
		{
			name: "paused: a new revision waits",
			setup: func(c *v1beta1.Canary, o *Observation) {
				c.Status = idleStatus(v1beta1.PhaseSucceeded)
				setLedger(c, ledger{Paused: true})
			},
			phase: v1beta1.PhaseSucceeded, actions: []string{}, message: "paused by user: revision r2 waits for resume",
		},
		{
			name: "paused: the weights are still kept in place",
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 20, 2)
				setLedger(c, ledger{Paused: true})
				o.Route.PrimaryWeight, o.Route.CanaryWeight = 100, 0
			},
			actions: []string{"SetWeights 80/20"},
		},
		{
			name: "resume: the deadline restarts and the step runs",
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 20, 2)
				setLedger(c, ledger{StepAt: t0.Add(-time.Hour), ProgressAt: t0.Add(-time.Hour), Paused: true})
				o.Manual = req(ManualResume)
				o.Analysis = noData()
			},
			phase:   v1beta1.PhaseProgressing,
			actions: []string{"Notify Manual"},
			message: "waiting for traffic",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				acked(ManualResume)(t, st, acts)
				if l := getLedger(st); l.Paused || !l.ProgressAt.Equal(t0) {
					t.Errorf("ledger %+v", l)
				}
			},
		},
		{
			name: "unknown action is refused once",
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 20, 2)
				o.Manual = req("explode")
			},
			message: "explode ignored: unknown action",
		},
	})
}

func TestStepRefusals(t *testing.T) {
	runCases(t, []stepCase{
		{
			name: "invalid canary: Ready=False naming the field, no actions",
			mods: []func(*v1beta1.Canary){func(c *v1beta1.Canary) { c.Spec.Analysis.StepWeight = 60 }},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 20, 2)
			},
			phase: v1beta1.PhaseProgressing, actions: []string{}, message: "spec.analysis.stepWeight",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if len(acts) != 0 {
					t.Errorf("actions %v, want none", acts)
				}
				c := condition(st, v1beta1.ConditionReady)
				if c == nil || c.Status != metav1.ConditionFalse || c.Reason != v1beta1.ReasonInvalidSpec ||
					!strings.Contains(c.Message, "spec.analysis.stepWeight") {
					t.Errorf("Ready = %+v", c)
				}
			},
		},
		{
			name:    "invalid canary without a target",
			mods:    []func(*v1beta1.Canary){func(c *v1beta1.Canary) { c.Spec.TargetRef = v1beta1.LocalObjectReference{} }},
			actions: []string{}, message: "spec.targetRef",
		},
		{
			name: "target missing: waits with a message",
			setup: func(c *v1beta1.Canary, o *Observation) {
				o.Target = Workload{}
			},
			phase: v1beta1.PhaseInitializing, actions: []string{}, message: "target deployment podinfo not found",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if _, ok := requeueOf(acts); !ok {
					t.Errorf("no requeue")
				}
				if c := condition(st, v1beta1.ConditionReady); c == nil || c.Reason != "TargetNotFound" {
					t.Errorf("Ready = %+v", c)
				}
			},
		},
		{
			name: "conflict: refused naming the other canary",
			setup: func(c *v1beta1.Canary, o *Observation) {
				o.Conflict = "podinfo-other"
			},
			actions: []string{}, message: "deployment podinfo is already managed by canary podinfo-other",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if c := condition(st, v1beta1.ConditionReady); c == nil || c.Status != metav1.ConditionFalse || c.Reason != "Conflict" {
					t.Errorf("Ready = %+v", c)
				}
			},
		},
		{
			name: "suspended: no actions at all",
			mods: []func(*v1beta1.Canary){func(c *v1beta1.Canary) { c.Spec.Suspend = true }},
			setup: func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 20, 2)
				o.Analysis = pass()
				o.Route.CanaryWeight = 0
				o.Manual = &ManualAction{Kind: ManualAbort, RequestedAt: t0}
			},
			phase: v1beta1.PhaseProgressing, message: "suspended",
			check: func(t *testing.T, st v1beta1.CanaryStatus, acts []Action) {
				if len(acts) != 0 {
					t.Errorf("actions %v, want none", acts)
				}
				if st.CanaryWeight != 20 {
					t.Errorf("weight %d", st.CanaryWeight)
				}
			},
		},
		{
			name: "Terminating is left to the driver",
			setup: func(c *v1beta1.Canary, o *Observation) {
				c.Status.Phase = v1beta1.PhaseTerminating
			},
			phase: v1beta1.PhaseTerminating, actions: []string{},
		},
	})
}

// Calling Step again with the status it returned and the same observation
// (as the driver does within a tick) counts nothing twice and acts once.
func TestStepIdempotentWithinATick(t *testing.T) {
	tests := []struct {
		name  string
		mods  []func(*v1beta1.Canary)
		setup func(c *v1beta1.Canary, o *Observation)
	}{
		{"passed step", nil, func(c *v1beta1.Canary, o *Observation) { running(c, o, 10, 1); o.Analysis = pass() }},
		{"failed check", nil, func(c *v1beta1.Canary, o *Observation) { running(c, o, 10, 1); o.Analysis = failing() }},
		{"no data", nil, func(c *v1beta1.Canary, o *Observation) { running(c, o, 10, 1); o.Analysis = noData() }},
		{"first step", []func(*v1beta1.Canary){hook(v1beta1.PreRolloutHook, "smoke")}, func(c *v1beta1.Canary, o *Observation) {
			running(c, o, 0, 0)
			o.Gates = answers(v1beta1.PreRolloutHook, map[string]bool{"smoke": false})
		}},
		{"manual promote", nil, func(c *v1beta1.Canary, o *Observation) {
			running(c, o, 10, 1)
			o.Manual = &ManualAction{Kind: ManualPromote, RequestedAt: t0}
		}},
		{"manual pause", nil, func(c *v1beta1.Canary, o *Observation) {
			running(c, o, 10, 1)
			o.Manual = &ManualAction{Kind: ManualPause, RequestedAt: t0}
		}},
		{"rollback", nil, func(c *v1beta1.Canary, o *Observation) {
			running(c, o, 10, 1)
			c.Status.FailedChecks = 4
			o.Analysis = failing()
		}},
		{"promotion step", []func(*v1beta1.Canary){func(c *v1beta1.Canary) { c.Spec.Analysis.StepWeightPromotion = 10 }},
			func(c *v1beta1.Canary, o *Observation) {
				running(c, o, 50, 5)
				c.Status.Phase = v1beta1.PhasePromoting
				o.Primary.Revision = "r2"
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCanary(tt.mods...)
			o := world()
			tt.setup(c, &o)
			st1, _ := Step(c, o)
			c.Status = st1
			st2, acts := Step(c, o)
			for _, a := range acts {
				switch a.(type) {
				case Requeue, SetWeights:
				default:
					t.Errorf("second call acted again: %s", describe(a))
				}
			}
			// The message may say what the next call waits for (the route
			// set by the first call is not observed yet); nothing else moves.
			st1.Message, st2.Message = "", ""
			j1, _ := json.Marshal(st1)
			j2, _ := json.Marshal(st2)
			if string(j1) != string(j2) {
				t.Errorf("second call changed the status:\n%s\n%s", j1, j2)
			}
		})
	}
}

// The status, persisted as JSON (times to the second), reads back into
// the same bookkeeping.
func TestLedgerSurvivesPersistence(t *testing.T) {
	c := newCanary()
	o := world()
	running(c, &o, 10, 1)
	o.Now = t0.Add(700 * time.Millisecond)
	o.Analysis = pass()
	o.Manual = &ManualAction{Kind: ManualPause, RequestedAt: t0.Add(300 * time.Millisecond)}
	st, _ := Step(c, o)
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back v1beta1.CanaryStatus
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if got, want := getLedger(back), getLedger(st); got != want {
		t.Fatalf("ledger after a round trip %+v, want %+v", got, want)
	}
	// The same request, seen again after the round trip, is not new.
	c.Status = back
	o.Manual = &ManualAction{Kind: ManualPause, RequestedAt: t0.Add(300 * time.Millisecond)}
	o.Manual.Kind = ManualPause
	l := getLedger(back)
	if l.isNew(o.Manual) {
		t.Fatalf("request seen as new after a round trip: %+v", l)
	}
	if !l.isNew(&ManualAction{Kind: ManualResume, RequestedAt: t0.Add(300 * time.Millisecond)}) {
		t.Fatalf("a different request in the same second not seen as new")
	}
}

func TestNeedsInput(t *testing.T) {
	for _, tt := range []struct {
		a    Action
		want bool
	}{
		{RunAnalysis{}, true}, {CallHook{}, true}, {SetWeights{}, false}, {Notify{}, false}, {Requeue{}, false},
		{EnsurePrimary{}, false}, {EnsureServices{}, false}, {EnsureRoute{}, false}, {ScaleCanary{}, false},
		{ScaleTarget{}, false}, {PromotePrimary{}, false},
	} {
		if got := NeedsInput(tt.a); got != tt.want {
			t.Errorf("NeedsInput(%T) = %v, want %v", tt.a, got, tt.want)
		}
	}
}

func TestStepNilCanary(t *testing.T) {
	st, acts := Step(nil, Observation{})
	if st.Phase != "" || acts != nil {
		t.Fatalf("Step(nil) = %+v, %v", st, acts)
	}
}
