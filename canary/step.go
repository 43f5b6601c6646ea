// Package canary is the canary engine. Its core, Step, is a pure state
// machine in the manner of etcd's raft: given a Canary (spec and status) and
// an Observation of the world, it returns the next status and the Actions a
// driver must carry out. Every rule of a rollout lives in Step; the driver
// only observes and executes.
package canary

import (
	"fmt"
	"math"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluicehq/sluice/analysis"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// pollInterval bounds how long Step waits before looking again at something
// expected to change soon (a workload becoming ready, a route accepted),
// whatever the analysis interval.
const pollInterval = 10 * time.Second

// maxHookMessage bounds a webhook's answer quoted in the status.
const maxHookMessage = 256

// Step computes the next status of canary c and the actions that get the
// world there, from what the world looks like (obs). It is pure: it reads
// no clock but obs.Now, does no I/O, does not modify c, and returns the same
// result for the same input. It never panics, whatever c and obs hold.
//
// Step is safe to call again within a tick with the status it returned and
// the same observation: it asks for an analysis or a webhook only when the
// observation lacks the answer, counts a step's checks once (the step's time
// is recorded and the next one is due an analysis interval later), and
// applies a manual action once.
func Step(c *v1beta1.Canary, obs Observation) (v1beta1.CanaryStatus, []Action) {
	if c == nil {
		return v1beta1.CanaryStatus{}, nil
	}
	s := &stepper{
		obs:   obs,
		now:   obs.Now,
		stamp: obs.Now.Truncate(time.Second),
		st:    *c.Status.DeepCopy(),
	}
	s.startPhase = s.st.Phase
	s.st.ObservedGeneration = c.Generation
	s.led = readLedger(&s.st)
	if errs := c.Validate(); len(errs) > 0 {
		msg := "invalid canary: " + errs.ToAggregate().Error()
		s.st.Message = msg
		s.setCondition(v1beta1.ConditionReady, metav1.ConditionFalse, v1beta1.ReasonInvalidSpec, msg)
		return s.st, nil
	}
	s.c = c.DeepCopy()
	v1beta1.SetDefaults(s.c)
	s.a = s.c.Spec.Analysis
	if s.a == nil { // Validate rejects it; keep Step total anyway.
		s.a = &v1beta1.CanaryAnalysis{}
	}
	s.interval = s.c.GetAnalysisInterval()
	s.run()
	s.finish()
	return s.st, s.actions
}

// stepper holds one call of Step.
type stepper struct {
	c        *v1beta1.Canary // defaulted copy
	a        *v1beta1.CanaryAnalysis
	obs      Observation
	now      time.Time
	stamp    time.Time // now, to the second, as stored in the status
	interval time.Duration

	st         v1beta1.CanaryStatus
	startPhase v1beta1.CanaryPhase
	led        ledger

	actions []Action
	after   time.Duration // requeue; 0 means the analysis interval
	early   bool          // refused (conflict, suspended, no target): touch nothing
	ready   *metav1.Condition
}

// ---------------------------------------------------------------------------
// Dispatch.

func (s *stepper) run() {
	switch {
	case s.obs.Conflict != "":
		s.early = true
		msg := fmt.Sprintf("refused: %s %s is already managed by canary %s; remove one of the two canaries",
			s.kind(), s.target(), s.obs.Conflict)
		s.st.Message = msg
		s.ready = &metav1.Condition{Status: metav1.ConditionFalse, Reason: "Conflict", Message: msg}
		s.requeueAfter(s.interval)
		return
	case s.c.Spec.Suspend:
		s.early = true
		s.st.Message = "suspended: no run starts or advances until spec.suspend is false"
		return
	case !s.obs.Target.Exists:
		s.early = true
		if s.st.Phase == "" {
			s.setPhase(v1beta1.PhaseInitializing)
		}
		msg := fmt.Sprintf("target %s %s not found", s.kind(), s.target())
		s.st.Message = msg
		s.ready = &metav1.Condition{Status: metav1.ConditionFalse, Reason: "TargetNotFound", Message: msg}
		s.requeueAfter(s.interval)
		return
	}
	if s.manual() {
		return
	}
	switch s.st.Phase {
	case v1beta1.PhaseInitialized, v1beta1.PhaseSucceeded, v1beta1.PhaseFailed:
		s.idle()
	case v1beta1.PhaseWaiting:
		s.waiting()
	case v1beta1.PhaseProgressing, v1beta1.PhaseWaitingPromotion:
		s.progress()
	case v1beta1.PhasePromoting:
		s.promoting()
	case v1beta1.PhaseFinalising:
		s.finalising()
	case v1beta1.PhaseTerminating, v1beta1.PhaseTerminated:
		s.early = true // deletion is the driver's business
	default: // "", Initializing, or a phase this version does not know
		s.initialize()
	}
}

// ---------------------------------------------------------------------------
// Initialization.

func (s *stepper) initialize() {
	s.setPhase(v1beta1.PhaseInitializing)
	s.requeueAfter(pollInterval)
	p := s.obs.Primary
	primary := s.c.GetPrimaryName()
	apex, primarySvc, canarySvc := s.c.GetServiceNames()
	switch {
	case !p.Exists:
		s.emit(EnsurePrimary{})
		s.st.Message = fmt.Sprintf("creating %s from %s", primary, s.target())
	case !p.Ready:
		s.st.Message = withDetail(fmt.Sprintf("waiting for %s to be ready", primary), p.Message)
	case !s.obs.ServicesReady:
		s.emit(EnsureServices{})
		s.st.Message = fmt.Sprintf("creating services %s, %s and %s", apex, primarySvc, canarySvc)
	case !s.obs.Route.Exists:
		s.emit(EnsureRoute{})
		s.st.Message = fmt.Sprintf("creating HTTPRoute %s", apex)
	case !s.routeInPlace():
		s.st.Message = fmt.Sprintf("waiting for HTTPRoute %s to be accepted with all traffic on %s", apex, primarySvc)
	case p.Revision == "" && s.obs.Target.Revision == "":
		s.st.Message = fmt.Sprintf("waiting for the revision of %s", s.target())
	default:
		// The primary runs what it was cloned from; a target that changed
		// since starts a run at the next step.
		rev := p.Revision
		if rev == "" {
			rev = s.obs.Target.Revision
		}
		s.emit(ScaleTarget{Zero: true})
		s.setPhase(v1beta1.PhaseInitialized)
		s.resetRun()
		s.st.FailedChecks = 0
		s.setObserved(rev)
		s.st.LastPromotedRevision = rev
		s.st.LastPromotedSpec = rev
		s.st.Message = fmt.Sprintf("initialized: %s serves all traffic (revision %s)", primary, rev)
		s.notify(EventInitialized, v1beta1.SeverityInfo,
			fmt.Sprintf("New %s detected, initialization completed.", s.c.Spec.TargetRef.Kind), true)
		s.requeueAfter(s.interval)
	}
}

// ---------------------------------------------------------------------------
// Between runs: Initialized, Succeeded, Failed.

func (s *stepper) idle() {
	rev := s.obs.Target.Revision
	switch {
	case rev == "":
		return
	case rev == s.st.LastPromotedRevision:
		if s.st.ObservedRevision != rev {
			s.setObserved(rev)
			s.st.Message = fmt.Sprintf("%s is back at the promoted revision %s: nothing to roll out", s.target(), rev)
		}
		return
	case rev == s.st.ObservedRevision:
		// This revision's run is over (it failed): a new revision or a
		// retry starts another.
		return
	}
	if s.led.Paused {
		s.st.Message = fmt.Sprintf("paused by user: revision %s waits for resume", rev)
		return
	}
	if s.windowClosed() {
		s.waitFor(rev, "waiting for the next analysis window to start revision "+rev)
		return
	}
	if !s.need(false, v1beta1.ConfirmRolloutHook) {
		return
	}
	s.startRun(rev, "new revision "+rev)
}

// waiting holds a new revision until the confirm-rollout webhooks approve it
// (or an analysis window opens).
func (s *stepper) waiting() {
	rev := s.obs.Target.Revision
	switch {
	case rev == "":
		return
	case rev == s.st.LastPromotedRevision:
		s.setPhase(v1beta1.PhaseSucceeded)
		s.setObserved(rev)
		s.st.Message = fmt.Sprintf("%s is back at the promoted revision %s: nothing to roll out", s.target(), rev)
		return
	}
	if s.led.Paused {
		s.st.Message = fmt.Sprintf("paused by user: revision %s waits for resume", rev)
		return
	}
	if s.windowClosed() {
		if !s.need(false, v1beta1.RollbackHook) {
			return
		}
		if s.rollbackRequested() {
			return
		}
		s.waitFor(rev, "waiting for the next analysis window to start revision "+rev)
		return
	}
	if !s.need(false, v1beta1.RollbackHook, v1beta1.ConfirmRolloutHook) {
		return
	}
	if s.rollbackRequested() {
		return
	}
	s.startRun(rev, "revision "+rev+" approved")
}

// startRun starts a run of rev once the confirm-rollout webhooks, already
// answered, agree; otherwise the canary waits.
func (s *stepper) startRun(rev, why string) {
	if g := s.gate(v1beta1.ConfirmRolloutHook); !g.ok {
		entering := s.st.Phase != v1beta1.PhaseWaiting || s.st.ObservedRevision != rev
		s.waitFor(rev, "waiting for approval: "+g.describe())
		if entering {
			s.notify(EventWaitingApproval, v1beta1.SeverityWarn, "Canary is waiting for approval.", !g.muted)
		}
		return
	}
	s.setPhase(v1beta1.PhaseProgressing)
	s.resetRun()
	s.st.FailedChecks = 0
	s.setObserved(rev)
	s.led.StepAt = time.Time{}
	s.led.ProgressAt = s.stamp
	s.emit(ScaleCanary{Up: true})
	s.st.Message = fmt.Sprintf("%s: starting the analysis, waiting for %s to be ready", why, s.target())
	s.notify(EventNewRevision, v1beta1.SeverityInfo, "New revision detected, progressing canary analysis.", true)
	s.requeueAfter(pollInterval)
}

// waitFor puts rev in the Waiting phase with msg.
func (s *stepper) waitFor(rev, msg string) {
	s.setPhase(v1beta1.PhaseWaiting)
	s.setObserved(rev)
	s.st.Message = msg
	s.requeueAfter(s.interval)
}

// ---------------------------------------------------------------------------
// A run: Progressing and WaitingPromotion.

func (s *stepper) progress() {
	if s.led.Paused {
		s.st.Message = s.pausedMessage()
		return
	}
	if rev := s.obs.Target.Revision; rev != "" && rev != s.st.ObservedRevision {
		if rev == s.st.LastPromotedRevision {
			s.cancelRun(rev)
		} else {
			s.restart(rev)
		}
		return
	}
	if s.windowClosed() && s.c.GetWindowPolicy() == v1beta1.WindowHold {
		s.led.ProgressAt = s.stamp // waiting for a window is not being stuck
		s.st.Message = fmt.Sprintf("outside the analysis windows: holding at canary weight %d%%", s.st.CanaryWeight)
		s.requeueAfter(s.interval)
		return
	}
	apex, _, _ := s.c.GetServiceNames()
	if !s.routeInPlace() {
		w := s.desiredRoute()
		s.holdFor(fmt.Sprintf("waiting for HTTPRoute %s to be accepted with weights %d/%d", apex, w.Primary, w.Canary))
		return
	}
	if t := s.obs.Target; !t.Ready {
		s.holdFor(withDetail(fmt.Sprintf("waiting for %s (revision %s) to be ready", s.target(), s.st.ObservedRevision), t.Message))
		return
	}
	if p := s.obs.Primary; !p.Ready {
		s.holdFor(withDetail(fmt.Sprintf("waiting for %s to be ready", s.c.GetPrimaryName()), p.Message))
		return
	}
	if s.c.SkipAnalysis() {
		s.promote("analysis skipped")
		return
	}
	if !s.due() {
		s.requeueAfter(s.untilDue())
		return
	}
	s.evaluate()
}

// restart begins the run again for a revision that arrived during it.
func (s *stepper) restart(rev string) {
	s.setPhase(v1beta1.PhaseProgressing)
	s.resetRun()
	s.st.FailedChecks = 0
	s.setObserved(rev)
	s.led.StepAt = time.Time{}
	s.led.ProgressAt = s.stamp
	s.st.Message = fmt.Sprintf("new revision %s detected during the run: restarting the analysis", rev)
	s.notify(EventRestarted, v1beta1.SeverityInfo, "New revision detected! Restarting analysis.", false)
	s.requeueAfter(pollInterval)
}

// cancelRun ends a run whose target went back to the promoted revision.
func (s *stepper) cancelRun(rev string) {
	s.setPhase(v1beta1.PhaseSucceeded)
	s.resetRun()
	s.setObserved(rev)
	s.emit(ScaleCanary{Up: false})
	s.st.Message = fmt.Sprintf("run cancelled: %s is back at the promoted revision %s", s.target(), rev)
	s.notify(EventRestarted, v1beta1.SeverityInfo, s.st.Message, false)
}

// stepMove is what a passed step does next.
type stepMove int

const (
	moveIncrease   stepMove = iota // canary: the next weight
	moveMirror                     // canary: mirror before the first weight
	moveIterate                    // A/B, blue/green: one more iteration
	moveSwitch                     // blue/green: all traffic to the canary
	movePromote                    // promote, once confirmed
	movePromoteNow                 // blue/green after the switch: promote
)

// gateType returns the webhook type that must agree before mv.
func (mv stepMove) gateType() v1beta1.HookType {
	switch mv {
	case moveIncrease:
		return v1beta1.ConfirmTrafficIncreaseHook
	case moveSwitch, movePromote:
		return v1beta1.ConfirmPromotionHook
	}
	return ""
}

func (s *stepper) nextMove() stepMove {
	st := &s.st
	switch s.c.GetStrategy() {
	case v1beta1.StrategyABTesting:
		if st.Iterations < s.a.Iterations {
			return moveIterate
		}
		return movePromote
	case v1beta1.StrategyBlueGreen:
		switch {
		case st.Iterations < s.a.Iterations:
			return moveIterate
		case st.Iterations == s.a.Iterations && st.CanaryWeight < totalWeight:
			return moveSwitch
		default:
			return movePromoteNow
		}
	}
	seq := weightSeq(WeightSequence(s.a))
	switch {
	case s.a.Mirror && st.Iterations == 0 && st.CanaryWeight == 0:
		return moveMirror
	case st.CanaryWeight < seq.max():
		return moveIncrease
	}
	return movePromote
}

// firstStep reports whether no step of the run was taken yet: the step that
// runs the pre-rollout webhooks instead of the analysis.
func (s *stepper) firstStep() bool {
	return s.st.Iterations == 0 && s.st.CanaryWeight == 0
}

// evaluate judges a due step and, if it passed, takes the next move.
func (s *stepper) evaluate() {
	mv := s.nextMove()
	first := s.firstStep()
	types := []v1beta1.HookType{v1beta1.RollbackHook}
	analyse := false
	if first {
		types = append(types, v1beta1.PreRolloutHook)
	} else {
		types = append(types, v1beta1.RolloutHook)
		analyse = len(s.a.Metrics) > 0
	}
	if t := mv.gateType(); t != "" {
		types = append(types, t)
	}
	if !s.need(analyse, types...) {
		return
	}
	// Everything is answered: this step counts, once.
	s.led.StepAt = s.stamp
	if s.rollbackRequested() {
		return
	}
	hookType := v1beta1.RolloutHook
	if first {
		hookType = v1beta1.PreRolloutHook
	}
	failed, noData := s.judge(hookType, analyse)
	if failed != nil {
		s.st.FailedChecks++
		s.led.ProgressAt = s.stamp
		threshold := s.c.GetAnalysisThreshold()
		msg := analysis.FormatMessage(*failed, s.st.FailedChecks, threshold)
		if s.st.FailedChecks >= threshold {
			s.rollback(msg, fmt.Sprintf("Failed checks threshold reached %d: %s", s.st.FailedChecks, msg))
			return
		}
		s.st.Message = msg
		s.notify(EventCheckFailed, v1beta1.SeverityWarn, "Halt advancement: "+msg, false)
		s.requeueAfter(s.interval)
		return
	}
	if noData != nil {
		s.holdFor("waiting for traffic: " + noData.Message)
		return
	}
	s.led.ProgressAt = s.stamp
	s.requeueAfter(s.interval)
	s.take(mv)
}

// take carries out a passed step's move.
func (s *stepper) take(mv stepMove) {
	st := &s.st
	switch mv {
	case moveMirror:
		st.Iterations++
		st.Message = fmt.Sprintf("mirroring traffic to %s before shifting any", s.target())
		s.notify(EventAdvanced, v1beta1.SeverityInfo, st.Message, false)
	case moveIterate:
		st.Iterations++
		st.Message = fmt.Sprintf("iteration %d/%d", st.Iterations, s.a.Iterations)
		s.notify(EventAdvanced, v1beta1.SeverityInfo, fmt.Sprintf("Advance %s canary iteration %d/%d", s.target(), st.Iterations, s.a.Iterations), false)
	case moveIncrease:
		if g := s.gate(v1beta1.ConfirmTrafficIncreaseHook); !g.ok {
			msg := "waiting for approval: " + g.describe()
			if st.Message != msg {
				s.notify(EventWaitingTrafficIncrease, v1beta1.SeverityWarn, "Canary traffic increase is waiting for approval.", !g.muted)
			}
			st.Message = msg
			return
		}
		seq := weightSeq(WeightSequence(s.a))
		st.CanaryWeight = seq.next(st.CanaryWeight)
		st.Iterations++
		st.Message = fmt.Sprintf("canary weight %d%% (step %d/%d)", st.CanaryWeight, seq.index(st.CanaryWeight), len(seq))
		s.notify(EventAdvanced, v1beta1.SeverityInfo, fmt.Sprintf("Advance %s canary weight %d", s.target(), st.CanaryWeight), false)
	case moveSwitch:
		if g := s.gate(v1beta1.ConfirmPromotionHook); !g.ok {
			s.waitPromotion(g)
			return
		}
		s.setPhase(v1beta1.PhaseProgressing)
		st.CanaryWeight = totalWeight
		st.Iterations++
		st.Message = fmt.Sprintf("all traffic switched to %s", s.target())
		s.notify(EventAdvanced, v1beta1.SeverityInfo, fmt.Sprintf("Routing all traffic to %s", s.target()), false)
	case movePromote:
		if g := s.gate(v1beta1.ConfirmPromotionHook); !g.ok {
			s.waitPromotion(g)
			return
		}
		s.promote("analysis passed")
	case movePromoteNow:
		s.promote("analysis passed")
	}
}

// waitPromotion holds a run that reached its end until the confirm-promotion
// webhooks agree; its checks keep running.
func (s *stepper) waitPromotion(g gateResult) {
	entering := s.st.Phase != v1beta1.PhaseWaitingPromotion
	s.setPhase(v1beta1.PhaseWaitingPromotion)
	s.st.Message = "waiting for approval: " + g.describe()
	if entering {
		s.notify(EventWaitingPromotion, v1beta1.SeverityWarn, "Canary promotion is waiting for approval.", !g.muted)
	}
}

// judge turns the answers of a step into status.checks and returns the
// first failure (webhooks first, then metrics: Flagger's order) and the
// first check without data, if any.
func (s *stepper) judge(hookType v1beta1.HookType, analyse bool) (failed, noData *analysis.Result) {
	var checks []v1beta1.CheckResult
	at := metav1.NewTime(s.stamp)
	seen := map[string]bool{}
	for _, h := range s.hooks(hookType) {
		if seen[h.Name] {
			continue
		}
		seen[h.Name] = true
		ans, _ := s.answer(hookType, h.Name)
		cr := v1beta1.CheckResult{Name: h.Name, Verdict: v1beta1.VerdictPass, Message: clip(ans.Message), Time: &at}
		if !ans.OK {
			cr.Verdict = v1beta1.VerdictFail
			if failed == nil {
				failed = &analysis.Result{Name: h.Name, Verdict: analysis.Fail,
					Message: withDetail(fmt.Sprintf("%s webhook %s failed", hookType, h.Name), clip(ans.Message))}
			}
		}
		checks = append(checks, cr)
	}
	if analyse && s.obs.Analysis != nil {
		failNoData := s.c.GetNoDataPolicy() == v1beta1.NoDataFail
		for _, r := range s.obs.Analysis.Results {
			switch r.Verdict {
			case analysis.Pass, analysis.Fail, analysis.NoData, analysis.Error:
			default:
				r.Message = withDetail(fmt.Sprintf("%s: unknown verdict %q", r.Name, r.Verdict), r.Message)
				r.Verdict = analysis.Error
			}
			checks = append(checks, checkResult(r, &at))
			switch {
			case r.Verdict == analysis.Fail || r.Verdict == analysis.Error:
				if failed == nil {
					failed = &r
				}
			case r.Verdict == analysis.NoData && failNoData:
				if failed == nil {
					r.Message = withDetail(r.Name+" no data", r.Message)
					failed = &r
				}
			case r.Verdict == analysis.NoData:
				if noData == nil {
					noData = &r
					if noData.Message == "" {
						noData.Message = r.Name + " has no data"
					}
				}
			}
		}
	}
	if len(checks) > 128 {
		checks = checks[:128]
	}
	s.st.Checks = checks
	return failed, noData
}

// checkResult converts an analysis result for the status.
func checkResult(r analysis.Result, at *metav1.Time) v1beta1.CheckResult {
	cr := v1beta1.CheckResult{
		Name:    r.Name,
		Verdict: v1beta1.CheckVerdict(r.Verdict),
		Unit:    r.Unit,
		Message: r.Message,
		Time:    at,
	}
	if finiteFloat(r.Value) && r.Verdict != analysis.NoData && r.Verdict != analysis.Error {
		cr.Value = v1beta1.NewNumber(r.Value)
	}
	if r.Min != nil && finiteFloat(*r.Min) {
		cr.Min = v1beta1.NewNumber(*r.Min)
	}
	if r.Max != nil && finiteFloat(*r.Max) {
		cr.Max = v1beta1.NewNumber(*r.Max)
	}
	return cr
}

func finiteFloat(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// ---------------------------------------------------------------------------
// Promotion.

// promote copies the run's revision to the primary.
func (s *stepper) promote(why string) {
	s.emit(PromotePrimary{Revision: s.st.ObservedRevision})
	s.setPhase(v1beta1.PhasePromoting)
	s.led.ProgressAt = s.stamp
	s.st.Message = fmt.Sprintf("%s: promoting revision %s, copying %s to %s",
		why, s.st.ObservedRevision, s.target(), s.c.GetPrimaryName())
	s.notify(EventPromoting, v1beta1.SeverityInfo,
		fmt.Sprintf("Copying %s template spec to %s", s.target(), s.c.GetPrimaryName()), false)
	s.requeueAfter(pollInterval)
}

// promoting waits for the primary to run the promoted revision, then shifts
// the traffic back to it, at once or by stepWeightPromotion each interval.
func (s *stepper) promoting() {
	if s.led.Paused {
		s.st.Message = s.pausedMessage()
		return
	}
	p := s.obs.Primary
	rev := s.st.ObservedRevision
	primary := s.c.GetPrimaryName()
	if !p.Ready || p.Revision != rev {
		if s.deadlinePassed() {
			s.failPromotion()
			return
		}
		s.st.Message = withDetail(fmt.Sprintf("waiting for %s to roll out revision %s", primary, rev), p.Message)
		s.requeueAfter(pollInterval)
		return
	}
	step := s.a.StepWeightPromotion
	if step <= 0 || s.c.GetStrategy() == v1beta1.StrategyABTesting || s.st.CanaryWeight <= 0 {
		s.finaliseRoute()
		return
	}
	if !s.due() {
		s.requeueAfter(s.untilDue())
		return
	}
	s.led.StepAt = s.stamp
	s.led.ProgressAt = s.stamp
	s.st.CanaryWeight = max(0, min(s.st.CanaryWeight, totalWeight)-step)
	if s.st.CanaryWeight == 0 {
		s.finaliseRoute()
		return
	}
	s.st.Message = fmt.Sprintf("promotion: %s weight %d%%, %s weight %d%%",
		primary, totalWeight-s.st.CanaryWeight, s.target(), s.st.CanaryWeight)
	s.requeueAfter(s.interval)
}

// finaliseRoute sends all traffic back to the promoted primary.
func (s *stepper) finaliseRoute() {
	s.setPhase(v1beta1.PhaseFinalising)
	s.st.CanaryWeight = 0
	s.st.Message = fmt.Sprintf("routing all traffic to %s", s.c.GetPrimaryName())
	s.requeueAfter(pollInterval)
}

// failPromotion ends a promotion whose primary did not roll out in time. As
// Flagger does, traffic goes to the canary, which runs the same revision,
// when it is ready.
func (s *stepper) failPromotion() {
	rev := s.st.ObservedRevision
	primary := s.c.GetPrimaryName()
	msg := withDetail(fmt.Sprintf("promotion failed: %s did not roll out revision %s within %s",
		primary, rev, s.c.GetProgressDeadline()), s.obs.Primary.Message)
	s.setPhase(v1beta1.PhaseFailed)
	s.st.Iterations = 0
	if t := s.obs.Target; t.Ready && t.Revision == rev {
		s.st.CanaryWeight = totalWeight
		msg += fmt.Sprintf("; all traffic routed to %s", s.target())
	} else {
		s.st.CanaryWeight = 0
		s.emit(ScaleCanary{Up: false})
	}
	s.st.Message = msg
	s.led.Paused = false
	s.callHooks(v1beta1.PostRolloutHook)
	s.notify(EventPromotionFailed, v1beta1.SeverityError, "Promotion failed, primary not ready: "+msg, true)
}

// finalising scales the canary down once the primary has all the traffic.
func (s *stepper) finalising() {
	if s.led.Paused {
		s.st.Message = s.pausedMessage()
		return
	}
	if !s.routeInPlace() {
		apex, _, _ := s.c.GetServiceNames()
		s.st.Message = fmt.Sprintf("waiting for HTTPRoute %s to route all traffic to %s", apex, s.c.GetPrimaryName())
		s.requeueAfter(pollInterval)
		return
	}
	rev := s.st.ObservedRevision
	s.emit(ScaleCanary{Up: false})
	s.setPhase(v1beta1.PhaseSucceeded)
	s.resetRun()
	s.st.LastPromotedRevision = rev
	s.st.LastPromotedSpec = rev
	s.st.Message = fmt.Sprintf("promoted revision %s", rev)
	s.callHooks(v1beta1.PostRolloutHook)
	msg := "Canary analysis completed successfully, promotion finished."
	if s.c.SkipAnalysis() {
		msg = "Canary analysis was skipped, promotion finished."
	}
	s.notify(EventSucceeded, v1beta1.SeverityInfo, msg, true)
}

// ---------------------------------------------------------------------------
// Rollback.

// rollback ends the run: all traffic to the primary, the canary scaled to
// zero, phase Failed with reason as the message.
func (s *stepper) rollback(reason, alert string) {
	s.setPhase(v1beta1.PhaseFailed)
	s.resetRun()
	s.led.Paused = false
	s.emit(ScaleCanary{Up: false})
	s.st.Message = reason
	s.callHooks(v1beta1.PostRolloutHook)
	if alert == "" {
		alert = "Canary failed: " + reason
	}
	s.notify(EventRolledBack, v1beta1.SeverityError, alert, true)
}

// rollbackRequested rolls back when a rollback webhook, already answered,
// asked for it.
func (s *stepper) rollbackRequested() bool {
	g := s.gate(v1beta1.RollbackHook)
	if g.anyOK == nil {
		return false
	}
	msg := fmt.Sprintf("rolled back by webhook %s", g.anyOK.Name)
	s.rollback(withDetail(msg, clip(g.anyOK.Message)), "Rolling back manual webhook invoked")
	return true
}

// holdFor holds the run for reason, unless it has made no progress for
// longer than the progress deadline, in which case it is rolled back.
func (s *stepper) holdFor(reason string) {
	if s.deadlinePassed() {
		d := s.c.GetProgressDeadline()
		msg := fmt.Sprintf("progress deadline exceeded (%s): %s", d, reason)
		s.rollback(msg, "Progress deadline exceeded: "+reason)
		return
	}
	s.st.Message = reason
	s.requeueAfter(min(pollInterval, s.interval))
}

// deadlinePassed reports whether the run made no progress for longer than
// the progress deadline.
func (s *stepper) deadlinePassed() bool {
	if s.led.ProgressAt.IsZero() {
		s.led.ProgressAt = s.stamp
	}
	return s.now.Sub(s.led.ProgressAt) > s.c.GetProgressDeadline()
}

// ---------------------------------------------------------------------------
// Manual actions.

// manual applies a user's request not applied yet; it reports whether the
// step is over.
func (s *stepper) manual() bool {
	m := s.obs.Manual
	if m == nil || !s.led.isNew(m) {
		return false
	}
	phase := s.st.Phase
	inRun := phase == v1beta1.PhaseWaiting || phase == v1beta1.PhaseProgressing || phase == v1beta1.PhaseWaitingPromotion
	promoting := phase == v1beta1.PhasePromoting || phase == v1beta1.PhaseFinalising
	done := true
	switch m.Kind {
	case ManualPause:
		done = false
		if !s.led.Paused {
			s.led.Paused = true
			s.st.Message = "paused by user"
			s.notify(EventManual, v1beta1.SeverityInfo, "Canary paused by user", false)
		}
	case ManualResume:
		done = false
		if s.led.Paused {
			s.led.Paused = false
			s.led.ProgressAt = s.stamp
			s.st.Message = "resumed by user"
			s.notify(EventManual, v1beta1.SeverityInfo, "Canary resumed by user", false)
		}
	case ManualAbort:
		if promoting {
			s.refuse(m, "the revision is already being promoted")
			break
		}
		if !inRun {
			s.refuse(m, "no run in progress")
			break
		}
		s.rollback("aborted by user", "Canary aborted by user")
	case ManualPromote:
		failedRev := s.st.ObservedRevision
		if promoting {
			s.refuse(m, "the revision is already being promoted")
			break
		}
		if !inRun && !(phase == v1beta1.PhaseFailed && failedRev != "" &&
			failedRev != s.st.LastPromotedRevision && s.obs.Target.Revision == failedRev) {
			s.refuse(m, "no run in progress and no failed revision to promote")
			break
		}
		s.led.Paused = false
		s.promote("promoted by user")
	case ManualRetry:
		rev := s.obs.Target.Revision
		if phase != v1beta1.PhaseFailed || rev == "" || rev == s.st.LastPromotedRevision {
			s.refuse(m, "only a failed run can be retried")
			break
		}
		if !s.need(false, v1beta1.ConfirmRolloutHook) {
			// Acknowledged once the webhooks answered, in the next call.
			return true
		}
		s.led.Paused = false
		s.startRun(rev, "retry requested by user")
	default:
		s.refuse(m, "unknown action")
	}
	s.led.ack(m)
	return done
}

func (s *stepper) refuse(m *ManualAction, why string) {
	phase := s.st.Phase
	if phase == "" {
		phase = v1beta1.PhaseInitializing
	}
	s.st.Message = fmt.Sprintf("%s ignored: %s (phase %s)", m.Kind, why, phase)
	s.notify(EventManual, v1beta1.SeverityWarn, s.st.Message, false)
}

func (s *stepper) pausedMessage() string {
	return fmt.Sprintf("paused by user at canary weight %d%% (phase %s): resume to continue", s.st.CanaryWeight, s.st.Phase)
}

// ---------------------------------------------------------------------------
// Inputs: analysis and webhooks.

// need reports whether the observation holds everything a decision needs:
// the analysis when analyse is set, and the answer of every webhook of the
// given types. It asks for what is missing.
func (s *stepper) need(analyse bool, types ...v1beta1.HookType) bool {
	ok := true
	if analyse && s.obs.Analysis == nil {
		s.emit(RunAnalysis{Revision: s.st.ObservedRevision})
		ok = false
	}
	for _, t := range types {
		seen := map[string]bool{}
		for _, h := range s.hooks(t) {
			if seen[h.Name] {
				continue
			}
			seen[h.Name] = true
			if _, answered := s.answer(t, h.Name); !answered {
				s.emit(CallHook{Type: t, Name: h.Name, Phase: s.st.Phase})
				ok = false
			}
		}
	}
	return ok
}

// callHooks asks for every webhook of type t to be called; their answers
// are not waited for (post-rollout).
func (s *stepper) callHooks(t v1beta1.HookType) {
	seen := map[string]bool{}
	for _, h := range s.hooks(t) {
		if !seen[h.Name] {
			seen[h.Name] = true
			s.emit(CallHook{Type: t, Name: h.Name, Phase: s.st.Phase})
		}
	}
}

// hooks returns the webhooks of type t, in the spec's order.
func (s *stepper) hooks(t v1beta1.HookType) []v1beta1.CanaryWebhook {
	var out []v1beta1.CanaryWebhook
	for _, h := range s.a.Webhooks {
		if h.GetType() == t {
			out = append(out, h)
		}
	}
	return out
}

// answer returns the answer of webhook name of type t, if the observation
// has one.
func (s *stepper) answer(t v1beta1.HookType, name string) (HookAnswer, bool) {
	for _, a := range s.obs.Gates[t].Answers {
		if a.Name == name {
			return a, true
		}
	}
	return HookAnswer{}, false
}

// gateResult sums up the answers of the webhooks of one type.
type gateResult struct {
	t      v1beta1.HookType
	ok     bool        // every webhook answered with success (or none exists)
	failed *HookAnswer // the first that did not, in the spec's order
	anyOK  *HookAnswer // the first that did
	muted  bool        // the failed webhook mutes its alerts
}

func (g gateResult) describe() string {
	if g.failed == nil {
		return string(g.t) + " webhooks"
	}
	return withDetail(fmt.Sprintf("%s webhook %s", g.t, g.failed.Name), clip(g.failed.Message))
}

// gate sums up the answers of the webhooks of type t; a webhook without an
// answer counts as not agreeing.
func (s *stepper) gate(t v1beta1.HookType) gateResult {
	g := gateResult{t: t, ok: true}
	for _, h := range s.hooks(t) {
		ans, answered := s.answer(t, h.Name)
		if !answered {
			ans = HookAnswer{Name: h.Name, Message: "no answer"}
		}
		if ans.OK {
			if g.anyOK == nil {
				a := ans
				g.anyOK = &a
			}
			continue
		}
		if g.ok {
			a := ans
			g.ok, g.failed, g.muted = false, &a, h.MuteAlert
		}
	}
	return g
}

// ---------------------------------------------------------------------------
// Routes.

// desiredRoute returns the weights the route should have for the status.
func (s *stepper) desiredRoute() SetWeights {
	st := &s.st
	w := min(max(st.CanaryWeight, 0), totalWeight)
	weighted := SetWeights{Primary: totalWeight - w, Canary: w}
	switch st.Phase {
	case v1beta1.PhaseProgressing, v1beta1.PhaseWaitingPromotion, v1beta1.PhasePromoting:
	case v1beta1.PhaseFailed:
		return weighted // all on the canary after a failed promotion
	default:
		return SetWeights{Primary: totalWeight}
	}
	shifting := st.Phase != v1beta1.PhasePromoting
	switch s.c.GetStrategy() {
	case v1beta1.StrategyABTesting:
		if st.Iterations > 0 {
			return SetWeights{Canary: totalWeight, Match: true}
		}
		return SetWeights{Primary: totalWeight}
	case v1beta1.StrategyBlueGreen:
		if w > 0 {
			return weighted
		}
		return SetWeights{Primary: totalWeight, Mirror: s.a.Mirror && st.Iterations > 0 && shifting}
	}
	weighted.Mirror = s.a.Mirror && w == 0 && st.Iterations > 0 && shifting
	return weighted
}

// routeMatches reports whether the observed route has the weights w.
func (s *stepper) routeMatches(w SetWeights) bool {
	r := s.obs.Route
	return r.Exists && r.PrimaryWeight == w.Primary && r.CanaryWeight == w.Canary &&
		r.Mirrored == w.Mirror && r.Matched == w.Match
}

// routeInPlace reports whether the route has the desired weights and was
// accepted.
func (s *stepper) routeInPlace() bool {
	return s.obs.Route.Accepted && s.routeMatches(s.desiredRoute())
}

// ---------------------------------------------------------------------------
// Finishing a step.

func (s *stepper) finish() {
	var pre []Action
	phase := s.st.Phase
	settled := !s.early && phase != "" && phase != v1beta1.PhaseTerminating && phase != v1beta1.PhaseTerminated
	if settled {
		routeComing := s.obs.Route.Exists
		if phase != v1beta1.PhaseInitializing {
			if !s.obs.Primary.Exists {
				pre = append(pre, EnsurePrimary{})
			}
			if !s.obs.ServicesReady {
				pre = append(pre, EnsureServices{})
			}
			if !s.obs.Route.Exists {
				pre = append(pre, EnsureRoute{})
				routeComing = true
			}
		}
		// A new route starts at 100/0; weights converge to the status.
		if w := s.desiredRoute(); routeComing && !s.routeMatches(w) &&
			(s.obs.Route.Exists || w != (SetWeights{Primary: totalWeight})) {
			pre = append(pre, w)
		}
	}
	s.actions = append(pre, s.actions...)
	if !s.early || s.after > 0 {
		after := s.after
		if after <= 0 {
			after = s.interval
		}
		s.actions = append(s.actions, Requeue{After: after})
	}

	if !s.early || s.st.Phase != s.startPhase {
		s.setPromoted()
	}
	switch {
	case s.ready != nil:
		s.setCondition(v1beta1.ConditionReady, s.ready.Status, s.ready.Reason, s.ready.Message)
	case phase == "" || phase == v1beta1.PhaseInitializing:
		s.setCondition(v1beta1.ConditionReady, metav1.ConditionFalse, "Initializing", s.st.Message)
	case phase == v1beta1.PhaseTerminating || phase == v1beta1.PhaseTerminated:
	case s.early:
	default:
		s.setCondition(v1beta1.ConditionReady, metav1.ConditionTrue, v1beta1.ReasonReconciled,
			fmt.Sprintf("%s, its services and route are in place", s.c.GetPrimaryName()))
	}
	s.writeLedger()
}

// setPromoted sets Flagger's Promoted condition for the phase, when the
// phase changed or the condition is missing.
func (s *stepper) setPromoted() {
	phase := s.st.Phase
	kind := s.c.Spec.TargetRef.Kind
	var status metav1.ConditionStatus
	var msg string
	switch phase {
	case v1beta1.PhaseInitializing:
		status, msg = metav1.ConditionUnknown, fmt.Sprintf("New %s detected, starting initialization.", kind)
	case v1beta1.PhaseInitialized:
		status, msg = metav1.ConditionTrue, fmt.Sprintf("%s initialization completed.", kind)
	case v1beta1.PhaseWaiting, v1beta1.PhaseWaitingPromotion:
		status, msg = metav1.ConditionUnknown, "Waiting for approval."
	case v1beta1.PhaseProgressing:
		status, msg = metav1.ConditionUnknown, "New revision detected, progressing canary analysis."
	case v1beta1.PhasePromoting:
		status, msg = metav1.ConditionUnknown, "Canary analysis completed, starting primary rolling update."
	case v1beta1.PhaseFinalising:
		status, msg = metav1.ConditionUnknown, "Canary analysis completed, routing all traffic to primary."
	case v1beta1.PhaseSucceeded:
		status, msg = metav1.ConditionTrue, "Canary analysis completed successfully, promotion finished."
	case v1beta1.PhaseFailed:
		status, msg = metav1.ConditionFalse, withDetail(fmt.Sprintf("Canary analysis failed, %s scaled to zero.", kind), s.st.Message)
	default:
		return
	}
	if phase == s.startPhase && s.findCondition(v1beta1.ConditionPromoted) != nil {
		return
	}
	s.setCondition(v1beta1.ConditionPromoted, status, string(phase), msg)
}

func (s *stepper) findCondition(t string) *metav1.Condition {
	for i := range s.st.Conditions {
		if s.st.Conditions[i].Type == t {
			return &s.st.Conditions[i]
		}
	}
	return nil
}

// setCondition sets a condition, moving its transition time to now only
// when its status changes.
func (s *stepper) setCondition(t string, status metav1.ConditionStatus, reason, msg string) {
	c := s.findCondition(t)
	if c == nil {
		s.st.Conditions = append(s.st.Conditions, metav1.Condition{Type: t})
		c = &s.st.Conditions[len(s.st.Conditions)-1]
	}
	if c.Status != status || c.LastTransitionTime.IsZero() {
		c.LastTransitionTime = metav1.NewTime(s.stamp)
	}
	c.Status, c.Reason, c.Message = status, reason, msg
	c.ObservedGeneration = s.st.ObservedGeneration
}

// ---------------------------------------------------------------------------
// Small helpers.

func (s *stepper) emit(a Action) { s.actions = append(s.actions, a) }

func (s *stepper) notify(event string, sev v1beta1.AlertSeverity, msg string, alert bool) {
	s.emit(Notify{Event: event, Severity: sev, Message: msg, Alert: alert})
}

// requeueAfter asks to be called again after d at the latest.
func (s *stepper) requeueAfter(d time.Duration) {
	if d <= 0 {
		d = time.Second
	}
	if s.after <= 0 || d < s.after {
		s.after = d
	}
}

func (s *stepper) setPhase(p v1beta1.CanaryPhase) {
	if s.st.Phase != p {
		s.st.Phase = p
		t := metav1.NewTime(s.stamp)
		s.st.LastTransitionTime = &t
	}
}

// resetRun zeroes the run's weight, iterations and checks.
func (s *stepper) resetRun() {
	s.st.CanaryWeight = 0
	s.st.Iterations = 0
	s.st.Checks = nil
}

// setObserved records rev as the revision the run is about (and as
// Flagger's lastAppliedSpec).
func (s *stepper) setObserved(rev string) {
	s.st.ObservedRevision = rev
	s.st.LastAppliedSpec = rev
}

// due reports whether the next step of the run may be analysed: an
// analysis interval after the last.
func (s *stepper) due() bool {
	return s.led.StepAt.IsZero() || !s.now.Before(s.led.StepAt.Add(s.interval))
}

func (s *stepper) untilDue() time.Duration {
	return s.led.StepAt.Add(s.interval).Sub(s.now)
}

// windowClosed reports whether the canary has analysis windows and none is
// open.
func (s *stepper) windowClosed() bool {
	return s.obs.InWindow != nil && !*s.obs.InWindow
}

func (s *stepper) target() string { return s.c.Spec.TargetRef.Name }

func (s *stepper) kind() string { return strings.ToLower(s.c.Spec.TargetRef.Kind) }

// withDetail appends ": detail" to msg when detail is not empty.
func withDetail(msg, detail string) string {
	if detail == "" {
		return msg
	}
	return msg + ": " + detail
}

// clip shortens a message quoted from elsewhere (a webhook's body).
func clip(msg string) string {
	msg = strings.TrimSpace(msg)
	if len(msg) <= maxHookMessage {
		return msg
	}
	cut := maxHookMessage
	for cut > 0 && !isRuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut] + "…"
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// ---------------------------------------------------------------------------
// The ledger: Step's bookkeeping between calls.

// ledger is what Step remembers between calls besides the phase, weight and
// counters: the bookkeeping fields of the status, as plain times.
type ledger struct {
	StepAt     time.Time  // when the last step was analysed
	ProgressAt time.Time  // when the run last made progress
	Paused     bool       // paused by a user
	ManualAt   time.Time  // request time of the last manual action applied
	ManualKind ManualKind // and its kind
}

func readLedger(st *v1beta1.CanaryStatus) ledger {
	return ledger{
		StepAt:     timeOf(st.LastAnalysisTime),
		ProgressAt: timeOf(st.LastProgressTime),
		Paused:     st.Paused,
		ManualAt:   timeOf(st.LastManualActionTime),
		ManualKind: ManualKind(st.LastManualAction),
	}
}

func (s *stepper) writeLedger() { storeLedger(&s.st, s.led) }

// storeLedger writes l into st's bookkeeping fields, at the API's precision
// of whole seconds.
func storeLedger(st *v1beta1.CanaryStatus, l ledger) {
	st.LastAnalysisTime = stampOf(l.StepAt)
	st.LastProgressTime = stampOf(l.ProgressAt)
	st.Paused = l.Paused
	st.LastManualAction = string(l.ManualKind)
	st.LastManualActionTime = stampOf(l.ManualAt)
}

func timeOf(t *metav1.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

func stampOf(t time.Time) *metav1.Time {
	if t.IsZero() {
		return nil
	}
	m := metav1.NewTime(t.Truncate(time.Second))
	return &m
}

// isNew reports whether m was not applied yet.
func (l *ledger) isNew(m *ManualAction) bool {
	if l.ManualKind == "" {
		return true
	}
	at := m.RequestedAt.Truncate(time.Second)
	return at.After(l.ManualAt) || at.Equal(l.ManualAt) && manualKey(m.Kind) != l.ManualKind
}

// ack records m as applied.
func (l *ledger) ack(m *ManualAction) {
	l.ManualAt = m.RequestedAt.Truncate(time.Second)
	l.ManualKind = manualKey(m.Kind)
}

// manualKey is the kind recorded for k: never empty, so that a recorded
// action is told apart from none.
func manualKey(k ManualKind) ManualKind {
	if k == "" {
		return "unknown"
	}
	return k
}
