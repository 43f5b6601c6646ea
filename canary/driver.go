package canary

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sluicehq/sluice/analysis"
	"github.com/sluicehq/sluice/analysis/window"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// The driver executes Step's actions through the small interfaces below, in
// the manner of etcd raft's node loop: observe the world, call Step, carry
// out what it asks, persist. Kubernetes implements the interfaces with
// controller-runtime clients, local mode with its supervisor and store.

// Workloads reads and changes the target workload and its primary copy.
//
// Every method that changes something is declarative and idempotent: called
// twice with the same arguments it leaves the world as one call does.
type Workloads interface {
	// Observe returns the state of the target and of "<target>-primary",
	// and whether the apex, "-primary" and "-canary" Services exist as the
	// spec asks. A missing workload is Workload{Exists: false}, not an
	// error; an error means the state could not be read.
	Observe(ctx context.Context, c *v1beta1.Canary) (target, primary Workload, servicesReady bool, err error)
	// EnsurePrimary creates "<target>-primary" as a clone of the target
	// when it is missing (EnsurePrimary).
	EnsurePrimary(ctx context.Context, c *v1beta1.Canary) error
	// EnsureServices creates or updates the apex, "-primary" and "-canary"
	// Services (EnsureServices).
	EnsureServices(ctx context.Context, c *v1beta1.Canary) error
	// PromotePrimary copies the target's spec to the primary, which then
	// rolls out revision (PromotePrimary).
	PromotePrimary(ctx context.Context, c *v1beta1.Canary, revision string) error
	// ScaleCanary scales the target, serving as the canary, up or to zero
	// (ScaleCanary).
	ScaleCanary(ctx context.Context, c *v1beta1.Canary, up bool) error
	// ScaleTarget scales the target to zero after initialization, or gives
	// it its replicas back (ScaleTarget).
	ScaleTarget(ctx context.Context, c *v1beta1.Canary, zero bool) error
}

// Router reads and writes the canary's HTTPRoute.
type Router interface {
	// Observe returns the route's state; a missing route is
	// Route{Exists: false}, not an error.
	Observe(ctx context.Context, c *v1beta1.Canary) (Route, error)
	// EnsureRoute creates the route with all traffic on the primary when
	// it is missing, and leaves the weights of an existing one alone
	// (EnsureRoute).
	EnsureRoute(ctx context.Context, c *v1beta1.Canary) error
	// SetWeights sets the route's weights, mirroring and matching
	// (SetWeights).
	SetWeights(ctx context.Context, c *v1beta1.Canary, w SetWeights) error
}

// Analyzer runs the metric checks of a canary's analysis (built-in mesh
// telemetry, metric templates).
type Analyzer interface {
	// Analyze runs every check of c's analysis.metrics against the canary
	// workload at revision and returns one result per check, in Flagger's
	// order. A check that cannot be computed is an Error result; an error
	// return means the analysis itself could not run (the tick is then
	// retried, and no check is counted).
	Analyze(ctx context.Context, c *v1beta1.Canary, revision string) ([]analysis.Result, error)
}

// Hooks calls webhooks (gates included: a gate is a webhook pointed at the
// control plane's gate endpoints).
type Hooks interface {
	// Call calls hook, of any type but event, with phase in its payload.
	// It never fails: a call that could not be made is an answer that is
	// not OK, whose message says why.
	Call(ctx context.Context, c *v1beta1.Canary, hook v1beta1.CanaryWebhook, phase v1beta1.CanaryPhase) HookAnswer
	// Event sends n to hook, an event webhook. Its answer is only logged.
	Event(ctx context.Context, c *v1beta1.Canary, hook v1beta1.CanaryWebhook, n Notification) HookAnswer
}

// Notifier sends a canary's notifications to its alert providers. It never
// blocks on a receiver; an error says the notification could not be queued
// (an alert provider that cannot be resolved, for instance) and is only
// logged.
type Notifier interface {
	// Notify sends n about c, whose status is the one the tick computed.
	// It receives every notification of the tick: those with Alert set
	// are Flagger's alerts, an EventAdvanced one is a weight step (sent to
	// the providers that opt in), and the others are for the record.
	Notify(c *v1beta1.Canary, n Notification) error
}

// Events records what happened to a canary: Kubernetes Events, or the log
// in local mode.
type Events interface {
	// Event records an event of type EventTypeNormal or EventTypeWarning,
	// with a CamelCase reason.
	Event(c *v1beta1.Canary, eventType, reason, message string)
}

// Event types of Events.
const (
	// EventTypeNormal is an informational event.
	EventTypeNormal = "Normal"
	// EventTypeWarning is a warning or an error.
	EventTypeWarning = "Warning"
)

// Notification is a Notify as the driver delivers it: with the tick's time
// and, when a check failed, that check.
type Notification struct {
	Notify
	// FailingCheck names the check that failed, with its value and
	// threshold ("request-success-rate 91.3% < min 99%"), for the
	// EventCheckFailed and EventRolledBack notifications of a failed
	// check; empty otherwise.
	FailingCheck string
	// Time is the tick's time.
	Time time.Time
}

// DefaultRetryAfter is how soon a tick that failed is retried.
const DefaultRetryAfter = 5 * time.Second

// maxStepCalls bounds the calls to Step in one tick: Step asks for input at
// most a few times (the webhooks and the analysis of a step, then those of
// a retry), so more means a bug.
const maxStepCalls = 16

// Driver runs canaries: each Tick observes the world, calls Step, and
// carries out the actions Step returns. A Driver is safe for concurrent use
// by ticks of different canaries, as safe as its parts are; ticks of one
// canary must not overlap.
type Driver struct {
	// Workloads and Router are required.
	Workloads Workloads
	Router    Router
	// Analyzer is required when a canary has analysis.metrics.
	Analyzer Analyzer
	// Hooks is required when a canary has webhooks (event webhooks
	// aside, which are skipped without it).
	Hooks Hooks
	// Notifier, when set, receives every notification. It must not keep
	// the canary it is given past the call.
	Notifier Notifier
	// Events, when set, records every notification, webhook call and
	// failure of a tick.
	Events Events
	// Clock returns the time of a tick; time.Now when nil.
	Clock func() time.Time
	// Windows says whether now is inside one of c's analysis windows; nil
	// means no windows. When Windows is nil, the driver evaluates
	// analysis.windows with the window package (a set that cannot be
	// evaluated counts as closed, and is reported).
	Windows func(c *v1beta1.Canary, now time.Time) *bool
	// Metrics, when set, is updated after each successful tick.
	Metrics *Metrics
	// Logger receives what the driver does; slog.Default() when nil.
	Logger *slog.Logger
	// RetryAfter is the requeue after a failed tick; DefaultRetryAfter
	// when 0.
	RetryAfter time.Duration
}

// Tick runs one reconcile of canary c: it observes the world, calls Step,
// and executes the actions Step returns in order. The answers to the
// actions that need input (RunAnalysis, CallHook) are fed back into Step in
// the same tick, with the same time and observed world, until Step asks for
// nothing more. It returns the status to persist and when to tick again
// (0 when Step asks for no requeue: tick again when the canary or its
// target changes).
//
// manual is the last manual action a user requested (nil if none) and
// conflict names another Canary that owns the same target (empty if none);
// detecting both is the caller's business.
//
// Tick does not modify c. Notifications, events and event webhooks are
// delivered once every action of the tick has succeeded. If observing the
// world or an action fails, Tick returns c's status unchanged, the error
// (naming the action), and RetryAfter: the status of a failed tick is not
// to be persisted, so that the next tick asks again for what is still
// needed.
func (d *Driver) Tick(ctx context.Context, c *v1beta1.Canary, manual *ManualAction, conflict string) (v1beta1.CanaryStatus, time.Duration, error) {
	if c == nil {
		return v1beta1.CanaryStatus{}, d.retryAfter(), errors.New("canary driver: nil canary")
	}
	t := &tick{
		d:     d,
		log:   d.logger().With("canary", c.Namespace+"/"+c.Name),
		in:    c,
		c:     c.DeepCopy(),
		start: time.Now(),
		now:   d.now(),
		done:  map[string]Action{},
	}
	if err := t.run(ctx, manual, conflict); err != nil {
		t.failed(err)
		return *c.Status.DeepCopy(), d.retryAfter(), fmt.Errorf("canary %s/%s: %w", c.Namespace, c.Name, err)
	}
	t.deliver(ctx)
	t.updateMetrics()
	return t.c.Status, t.after, nil
}

// tick is one call of Tick.
type tick struct {
	d     *Driver
	log   *slog.Logger
	in    *v1beta1.Canary // as given
	c     *v1beta1.Canary // a copy whose status follows Step
	start time.Time       // wall time, for the duration metric
	now   time.Time       // the tick's time, from the clock

	obs       Observation
	after     time.Duration
	done      map[string]Action // the last action executed, by slot
	analysed  bool              // an analysis ran in this tick
	weights   *SetWeights       // the last weights set in this tick
	notes     []Notify          // to deliver when the tick succeeds
	records   []record          // events to record when the tick succeeds
	stepCalls int
}

// record is an event to record.
type record struct{ eventType, reason, message string }

// tickError is a failure of one part of a tick.
type tickError struct {
	what string // the action or step that failed, e.g. "SetWeights"
	err  error
}

func (e *tickError) Error() string { return e.what + ": " + e.err.Error() }
func (e *tickError) Unwrap() error { return e.err }

func (t *tick) run(ctx context.Context, manual *ManualAction, conflict string) error {
	if err := ctx.Err(); err != nil {
		return &tickError{"Tick", err}
	}
	d := t.d
	if d.Workloads == nil || d.Router == nil {
		return &tickError{"Tick", errors.New("the driver needs Workloads and a Router")}
	}
	t.validateProviders(ctx)
	target, primary, servicesReady, err := d.Workloads.Observe(ctx, t.c)
	if err != nil {
		return &tickError{"ObserveWorkloads", err}
	}
	route, err := d.Router.Observe(ctx, t.c)
	if err != nil {
		return &tickError{"ObserveRoute", err}
	}
	t.obs = Observation{
		Now:           t.now,
		Target:        target,
		Primary:       primary,
		ServicesReady: servicesReady,
		Route:         route,
		Manual:        manual,
		Conflict:      conflict,
		InWindow:      t.inWindow(),
	}
	for {
		if t.stepCalls == maxStepCalls {
			return &tickError{"Step", fmt.Errorf("still asks for input after %d calls", maxStepCalls)}
		}
		t.stepCalls++
		st, actions := Step(t.c, t.obs)
		t.c.Status = st
		needs := false
		for _, a := range actions {
			if NeedsInput(a) {
				needs = true
			}
			if err := t.execute(ctx, a); err != nil {
				return &tickError{actionName(a), err}
			}
		}
		if !needs {
			return nil
		}
	}
}

// execute carries out one action.
func (t *tick) execute(ctx context.Context, a Action) error {
	d := t.d
	switch a := a.(type) {
	case Requeue:
		t.after = a.After
		return nil
	case Notify:
		for _, n := range t.notes {
			if n == a {
				return nil
			}
		}
		t.notes = append(t.notes, a)
		return nil
	case RunAnalysis:
		return t.analyse(ctx, a)
	case CallHook:
		return t.callHook(ctx, a)
	}
	// The world is observed once per tick and these actions are
	// declarative: one equal to the last of its slot is already done.
	slot := actionSlot(a)
	if last, ok := t.done[slot]; ok && last == a {
		return nil
	}
	var err error
	switch a := a.(type) {
	case EnsurePrimary:
		err = d.Workloads.EnsurePrimary(ctx, t.c)
	case EnsureServices:
		err = d.Workloads.EnsureServices(ctx, t.c)
	case EnsureRoute:
		err = d.Router.EnsureRoute(ctx, t.c)
	case SetWeights:
		err = d.Router.SetWeights(ctx, t.c, a)
		if err == nil {
			w := a
			t.weights = &w
		}
	case ScaleCanary:
		err = d.Workloads.ScaleCanary(ctx, t.c, a.Up)
	case ScaleTarget:
		err = d.Workloads.ScaleTarget(ctx, t.c, a.Zero)
	case PromotePrimary:
		err = d.Workloads.PromotePrimary(ctx, t.c, a.Revision)
	default:
		err = fmt.Errorf("unknown action %T", a)
	}
	if err != nil {
		return err
	}
	t.done[slot] = a
	t.log.Debug("canary action done", "action", fmt.Sprintf("%+v", a), "phase", t.c.Status.Phase)
	return nil
}

// analyse runs the analysis Step asked for, once per tick.
func (t *tick) analyse(ctx context.Context, a RunAnalysis) error {
	if t.obs.Analysis != nil {
		return nil
	}
	if t.d.Analyzer == nil {
		return errors.New("the driver has no Analyzer")
	}
	results, err := t.d.Analyzer.Analyze(ctx, t.c, a.Revision)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		// Results computed while the tick was being cancelled are errors
		// of the cancellation, not of the canary.
		return err
	}
	t.obs.Analysis = &AnalysisResults{Results: results}
	t.analysed = true
	return nil
}

// callHook calls the webhook Step asked for, once per tick, and adds its
// answer to the observation.
func (t *tick) callHook(ctx context.Context, a CallHook) error {
	for _, ans := range t.obs.Gates[a.Type].Answers {
		if ans.Name == a.Name {
			return nil
		}
	}
	ans := HookAnswer{Name: a.Name}
	switch h, ok := findHook(t.c, a.Type, a.Name); {
	case !ok:
		ans.Message = fmt.Sprintf("no %s webhook named %q", a.Type, a.Name)
	case t.d.Hooks == nil:
		return errors.New("the driver has no Hooks")
	default:
		ans = t.d.Hooks.Call(ctx, t.c, h, a.Phase)
		ans.Name = a.Name
		if err := ctx.Err(); err != nil {
			// An answer cut short by the tick's end says nothing about
			// the canary: it must not count as a failed check.
			return err
		}
	}
	if t.obs.Gates == nil {
		t.obs.Gates = map[v1beta1.HookType]GateAnswer{}
	}
	g := t.obs.Gates[a.Type]
	g.Answers = append(g.Answers, ans)
	t.obs.Gates[a.Type] = g

	eventType := EventTypeNormal
	if !ans.OK && hookFailureWarns(a.Type) {
		eventType = EventTypeWarning
	}
	msg := ans.Message
	if msg == "" {
		msg = fmt.Sprintf("%s webhook %s answered ok=%v", a.Type, a.Name, ans.OK)
	}
	t.records = append(t.records, record{eventType, "Webhook", msg})
	t.log.Info("canary webhook called", "type", a.Type, "webhook", a.Name, "phase", a.Phase, "ok", ans.OK, "message", ans.Message)
	return nil
}

// hookFailureWarns reports whether a webhook of type t that does not answer
// with success is worth a warning: a failed check or post-rollout call is;
// a closed gate or a rollback hook that asks for nothing is not.
func hookFailureWarns(t v1beta1.HookType) bool {
	switch t {
	case v1beta1.PreRolloutHook, v1beta1.RolloutHook, v1beta1.PostRolloutHook, v1beta1.EventHook:
		return true
	}
	return false
}

// findHook returns c's webhook of type t named name.
func findHook(c *v1beta1.Canary, t v1beta1.HookType, name string) (v1beta1.CanaryWebhook, bool) {
	if c.Spec.Analysis == nil {
		return v1beta1.CanaryWebhook{}, false
	}
	for _, h := range c.Spec.Analysis.Webhooks {
		if h.GetType() == t && h.Name == name {
			return h, true
		}
	}
	return v1beta1.CanaryWebhook{}, false
}

// inWindow evaluates c's analysis windows at the tick's time.
func (t *tick) inWindow() *bool {
	if t.d.Windows != nil {
		return t.d.Windows(t.c, t.now)
	}
	a := t.c.Spec.Analysis
	if a == nil || len(a.Windows) == 0 {
		return nil
	}
	inside, _, _, err := window.Evaluate(a.Windows, t.now)
	if err != nil {
		// Fail safe: no new run starts (a rollback never waits for a
		// window), and the user is told why.
		inside = false
		msg := "analysis windows cannot be evaluated, counted as closed: " + err.Error()
		t.log.Warn(msg)
		t.records = append(t.records, record{EventTypeWarning, "InvalidWindows", msg})
	}
	return &inside
}

// deliver sends the tick's notifications and records its events.
func (t *tick) deliver(ctx context.Context) {
	d := t.d
	c := t.c
	for _, r := range t.records {
		d.event(c, r.eventType, r.reason, r.message)
	}
	notes := make([]Notification, 0, len(t.notes))
	for _, n := range t.notes {
		note := Notification{Notify: n, Time: t.now}
		if n.Event == EventCheckFailed || n.Event == EventRolledBack {
			note.FailingCheck = t.failingCheck()
		}
		notes = append(notes, note)
		d.event(c, eventTypeOf(n.Severity), n.Event, n.Message)
		t.log.Info("canary "+n.Event, "message", n.Message, "severity", n.Severity, "alert", n.Alert,
			"phase", c.Status.Phase, "weight", c.Status.CanaryWeight)
		if d.Notifier != nil {
			if err := d.Notifier.Notify(c, note); err != nil {
				t.log.Error("canary notification not sent", "event", n.Event, "error", err)
			}
		}
	}
	// Event webhooks last: they are HTTP calls, which may be slow.
	if len(notes) == 0 || d.Hooks == nil || c.Spec.Analysis == nil {
		return
	}
	for _, h := range c.Spec.Analysis.Webhooks {
		if h.GetType() != v1beta1.EventHook {
			continue
		}
		for _, note := range notes {
			if ctx.Err() != nil {
				return
			}
			ans := d.Hooks.Event(ctx, c, h, note)
			if !ans.OK {
				t.log.Warn("canary event webhook failed", "webhook", h.Name, "event", note.Event, "message", ans.Message)
			}
		}
	}
}

// failingCheck names the check that failed in this tick: the first failed
// check of the status (webhooks first, then metrics, as Step judges), or,
// when Step cleared the checks (a rollback), the first failure among the
// tick's answers.
func (t *tick) failingCheck() string {
	for _, cr := range t.c.Status.Checks {
		if cr.Verdict == v1beta1.VerdictFail || cr.Verdict == v1beta1.VerdictError {
			return cr.Summary()
		}
	}
	for _, typ := range []v1beta1.HookType{v1beta1.PreRolloutHook, v1beta1.RolloutHook} {
		for _, a := range t.obs.Gates[typ].Answers {
			if !a.OK {
				return withDetail(fmt.Sprintf("%s webhook %s failed", typ, a.Name), clip(a.Message))
			}
		}
	}
	if t.obs.Analysis != nil {
		for _, r := range analysis.Failed(t.obs.Analysis.Results) {
			if r.Message != "" {
				return r.Message
			}
			return r.Name + " " + string(r.Verdict)
		}
	}
	return ""
}

// updateMetrics updates the metrics after a successful tick.
func (t *tick) updateMetrics() {
	m := t.d.Metrics
	if m == nil {
		return
	}
	c := t.c
	m.setStatus(c, c.Status.Phase)
	switch {
	case t.weights != nil:
		m.setWeight(c, t.weights.Primary, t.weights.Canary)
	case t.obs.Route.Exists:
		m.setWeight(c, t.obs.Route.PrimaryWeight, t.obs.Route.CanaryWeight)
	}
	if t.analysed {
		for _, r := range t.obs.Analysis.Results {
			m.setAnalysis(c, r)
		}
		m.observeDuration(c, time.Since(t.start))
	}
	for _, n := range t.notes {
		switch n.Event {
		case EventSucceeded:
			status := AnalysisCompleted
			if c.SkipAnalysis() {
				status = AnalysisSkipped
			}
			m.incSuccesses(c, status)
		case EventRolledBack, EventPromotionFailed:
			m.incFailures(c, AnalysisCompleted)
		}
	}
}

// failed reports a tick that failed.
func (t *tick) failed(err error) {
	what := "Tick"
	var te *tickError
	if errors.As(err, &te) {
		what = te.what
	}
	t.log.Error("canary tick failed; status not changed, retrying", "action", what, "error", err)
	t.d.event(t.in, EventTypeWarning, "Failed"+what, err.Error())
}

func (d *Driver) event(c *v1beta1.Canary, eventType, reason, msg string) {
	if d.Events != nil {
		d.Events.Event(c, eventType, reason, msg)
	}
}

func (d *Driver) now() time.Time {
	if d.Clock != nil {
		return d.Clock()
	}
	return time.Now()
}

func (d *Driver) logger() *slog.Logger {
	if d.Logger != nil {
		return d.Logger
	}
	return slog.Default()
}

func (d *Driver) retryAfter() time.Duration {
	if d.RetryAfter > 0 {
		return d.RetryAfter
	}
	return DefaultRetryAfter
}

// eventTypeOf is the event type of a notification of severity sev.
func eventTypeOf(sev v1beta1.AlertSeverity) string {
	if sev == v1beta1.SeverityWarn || sev == v1beta1.SeverityError {
		return EventTypeWarning
	}
	return EventTypeNormal
}

// actionSlot groups the actions that change the same thing: an action equal
// to the last one done in its slot in this tick need not be done again.
func actionSlot(a Action) string {
	switch a.(type) {
	case ScaleCanary, ScaleTarget: // both scale the target
		return "scale"
	}
	return actionName(a)
}

// actionName names an action in errors and events.
func actionName(a Action) string {
	switch a.(type) {
	case EnsurePrimary:
		return "EnsurePrimary"
	case EnsureServices:
		return "EnsureServices"
	case EnsureRoute:
		return "EnsureRoute"
	case SetWeights:
		return "SetWeights"
	case ScaleCanary:
		return "ScaleCanary"
	case ScaleTarget:
		return "ScaleTarget"
	case PromotePrimary:
		return "PromotePrimary"
	case RunAnalysis:
		return "RunAnalysis"
	case CallHook:
		return "CallHook"
	case Notify:
		return "Notify"
	case Requeue:
		return "Requeue"
	}
	return fmt.Sprintf("%T", a)
}

// Validator is implemented by an Analyzer that can check a canary's metric
// providers before any analysis runs (a Prometheus that is down, a template
// that does not render).
type Validator interface {
	Validate(ctx context.Context, c *v1beta1.Canary) []error
}

// validateProviders checks the metric providers while the canary is being
// initialized, so that a provider that is down is reported then rather than
// discovered at the first analysis. Problems become warning events.
func (t *tick) validateProviders(ctx context.Context) {
	v, ok := t.d.Analyzer.(Validator)
	if !ok || t.c.Spec.Analysis == nil {
		return
	}
	if p := t.c.Status.Phase; p != "" && p != v1beta1.PhaseInitializing {
		return
	}
	for _, err := range v.Validate(ctx, t.c) {
		t.records = append(t.records, record{EventTypeWarning, "MetricProviderUnavailable", err.Error()})
	}
}
