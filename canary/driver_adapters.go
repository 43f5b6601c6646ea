package canary

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/analysis"
	"github.com/sluicehq/sluice/analysis/notify"
	"github.com/sluicehq/sluice/analysis/template"
	"github.com/sluicehq/sluice/analysis/webhook"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// Adapters from the analysis packages to the driver's interfaces.

// ---------------------------------------------------------------------------
// Analysis.

// ProviderAnalyzer is the Analyzer of an analysis.Provider: it maps a
// canary's analysis.metrics onto analysis.Checks and runs them. Create it
// with AnalyzerFromProvider; it is safe for concurrent use.
type ProviderAnalyzer struct {
	// Provider runs the checks; usually an analysis.Mux of the built-in
	// provider and a template.Runner.
	Provider analysis.Provider

	mu      sync.Mutex
	running map[string]*v1beta1.Canary // by "namespace/target", while analysed
}

// AnalyzerFromProvider returns the Analyzer that runs a canary's checks on
// p. The canary workload is the target at the revision under analysis, the
// primary "<target>-primary", both in the canary's namespace.
//
// Metric templates need the canary's variables: give the analyzer's
// TemplateVars to the template.Runner (template.Options.Vars). As the
// runner is usually part of p, set Provider after creating both:
//
//	a := canary.AnalyzerFromProvider(nil)
//	runner := template.NewRunner(template.Options{Vars: a.TemplateVars, ...})
//	a.Provider = analysis.Mux{Builtin: analysis.NewBuiltin(src), Templates: runner}
func AnalyzerFromProvider(p analysis.Provider) *ProviderAnalyzer {
	return &ProviderAnalyzer{Provider: p}
}

var _ Analyzer = (*ProviderAnalyzer)(nil)

// Analyze runs c's checks on the canary at revision, in Flagger's order:
// the built-in checks first, then those with a template (each group in the
// spec's order). A metric that cannot be mapped onto a check (a bad
// interval, an inline query) is an Error result naming what is wrong. It
// returns an error only when ctx ends, since results computed then say
// nothing about the canary.
func (a *ProviderAnalyzer) Analyze(ctx context.Context, c *v1beta1.Canary, revision string) ([]analysis.Result, error) {
	if c == nil || c.Spec.Analysis == nil {
		return nil, nil
	}
	defer a.track(c)()

	t := AnalysisTarget(c, revision)
	metrics := c.Spec.Analysis.Metrics
	results := make([]analysis.Result, 0, len(metrics))
	for _, custom := range []bool{false, true} {
		for i := range metrics {
			m := &metrics[i]
			if m.IsBuiltin() == custom {
				continue
			}
			chk, err := MetricCheck(m)
			if err != nil {
				results = append(results, analysis.Result{
					Name:    m.Name,
					Verdict: analysis.Error,
					Value:   math.NaN(),
					Message: fmt.Sprintf("cannot compute %s: analysis.metrics[%d]: %v", m.Name, i, err),
				})
				continue
			}
			results = append(results, analysis.Analyze(ctx, a.Provider, t, []analysis.Check{chk})...)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return results, nil
}

// TemplateVars returns the variables a metric template's query is rendered
// with for check chk of the canary being analysed for target t: Flagger's
// name, namespace, target, service, ingress, route, interval and the
// metric's templateVariables. For a target no canary is being analysed for
// it returns template.DefaultVars.
func (a *ProviderAnalyzer) TemplateVars(t analysis.Target, chk analysis.Check) template.Vars {
	a.mu.Lock()
	c := a.running[t.Namespace+"/"+t.Canary.Name]
	a.mu.Unlock()
	if c == nil {
		return template.DefaultVars(t, chk)
	}
	s := c.Spec
	v := template.Vars{
		Name:      c.Name,
		Namespace: c.Namespace,
		Target:    s.TargetRef.Name,
		Service:   s.Service.Name,
		Interval:  chk.Interval,
	}
	if s.IngressRef != nil {
		v.Ingress = s.IngressRef.Name
	}
	if s.RouteRef != nil {
		v.Route = s.RouteRef.Name
	}
	for _, m := range s.Analysis.Metrics {
		if m.Name == chk.Name && m.TemplateRef != nil {
			v.Variables = m.TemplateVariables
			break
		}
	}
	return v
}

// AnalysisTarget is whose metrics c's checks read: the target at revision,
// compared with "<target>-primary", in c's namespace.
func AnalysisTarget(c *v1beta1.Canary, revision string) analysis.Target {
	return analysis.Target{
		Namespace: c.Namespace,
		Canary:    analysis.Workload{Name: c.Spec.TargetRef.Name, Revision: revision},
		Primary:   analysis.Workload{Name: c.GetPrimaryName()},
	}
}

// MetricCheck maps one of analysis.metrics onto a check: its name, its
// interval (1m when empty), its threshold range (thresholdRange, or the
// deprecated threshold as Flagger reads it), and its templateRef
// ("namespace/name", or "name" in the canary's namespace). The
// canary-vs-primary checks take a thresholdRange only when one is written
// (they refuse it; the deprecated threshold does not apply to them). An
// inline query is refused: it needs a MetricTemplate.
func MetricCheck(m *v1beta1.CanaryMetric) (analysis.Check, error) {
	chk := analysis.Check{Name: m.Name}
	d, err := time.ParseDuration(m.GetInterval())
	switch {
	case err != nil:
		return chk, fmt.Errorf("interval %q is not a duration, such as 1m", m.Interval)
	case d <= 0:
		return chk, fmt.Errorf("interval %q is not positive", m.Interval)
	}
	chk.Interval = d
	if m.TemplateRef != nil {
		ref := m.TemplateRef.Name
		if ref == "" {
			return chk, errors.New("templateRef has no name")
		}
		if m.TemplateRef.Namespace != "" {
			ref = m.TemplateRef.Namespace + "/" + ref
		}
		chk.TemplateRef = ref
	} else if m.Query != "" {
		return chk, errors.New("an inline query is not supported: put it in a MetricTemplate and refer to it with templateRef")
	}
	switch {
	case m.TemplateRef == nil && (m.Name == analysis.CanaryVsPrimaryLatency || m.Name == analysis.CanaryVsPrimarySuccessRate):
		if r := m.ThresholdRange; r != nil {
			if r.Min != nil {
				chk.Min = newFloat(r.Min.Float64())
			}
			if r.Max != nil {
				chk.Max = newFloat(r.Max.Float64())
			}
		}
	default:
		chk.Min, chk.Max = m.GetThresholdRange()
	}
	return chk, nil
}

func newFloat(v float64) *float64 { return &v }

// ---------------------------------------------------------------------------
// Webhooks.

// HooksFromCaller returns the Hooks that call webhooks with c: Flagger's
// payload {name, namespace, phase, checksum, metadata}, the checksum being
// the canary's observed revision; event webhooks also get eventMessage,
// eventType and timestamp in the metadata.
func HooksFromCaller(c *webhook.Caller) Hooks { return callerHooks{c} }

type callerHooks struct{ c *webhook.Caller }

func (h callerHooks) Call(ctx context.Context, c *v1beta1.Canary, hook v1beta1.CanaryWebhook, phase v1beta1.CanaryPhase) HookAnswer {
	return answerOf(hook, h.c.Call(ctx, hook, webhook.NewPayload(c, phase)))
}

func (h callerHooks) Event(ctx context.Context, c *v1beta1.Canary, hook v1beta1.CanaryWebhook, n Notification) HookAnswer {
	eventType := webhook.EventNormal
	if eventTypeOf(n.Severity) == EventTypeWarning {
		eventType = webhook.EventWarning
	}
	p := webhook.EventPayload(c, c.Status.Phase, n.Message, eventType, n.Time)
	return answerOf(hook, h.c.Call(ctx, hook, p))
}

func answerOf(hook v1beta1.CanaryWebhook, o webhook.Outcome) HookAnswer {
	msg := o.Message
	if msg == "" && o.Err != nil {
		msg = o.Err.Error()
	}
	return HookAnswer{Name: hook.Name, OK: o.OK, Message: msg}
}

// ---------------------------------------------------------------------------
// Notifications.

// DispatchNotifier is the Notifier that queues a canary's alerts on a
// notify.Dispatcher, one per alert of analysis.alerts. Create it with
// NotifierFromDispatcher.
type DispatchNotifier struct {
	// Dispatcher delivers the events.
	Dispatcher *notify.Dispatcher
	// Resolve finds the target of one of a canary's alerts (its
	// AlertProvider); the alert's severity and weightSteps are applied to
	// the target it returns when it leaves them unset.
	Resolve func(c *v1beta1.Canary, alert v1beta1.CanaryAlert) (notify.Target, error)
	// Global are the targets of canaries without alerts (the controller's
	// own notifier, configured by flags); may be empty.
	Global []notify.Target
}

// NotifierFromDispatcher returns the Notifier that sends a canary's alerts
// through d to the targets resolve finds.
func NotifierFromDispatcher(d *notify.Dispatcher, resolve func(c *v1beta1.Canary, alert v1beta1.CanaryAlert) (notify.Target, error)) *DispatchNotifier {
	return &DispatchNotifier{Dispatcher: d, Resolve: resolve}
}

var _ Notifier = (*DispatchNotifier)(nil)

// Notify queues n for each of c's alert targets, when n is an alert or a
// weight step (the targets filter by severity and weight steps). It never
// blocks; the error joins the alerts whose target could not be resolved.
func (d *DispatchNotifier) Notify(c *v1beta1.Canary, n Notification) error {
	ev, ok := NotifyEvent(c, n)
	if !ok || d.Dispatcher == nil {
		return nil
	}
	var alerts []v1beta1.CanaryAlert
	if c.Spec.Analysis != nil {
		alerts = c.Spec.Analysis.Alerts
	}
	if len(alerts) == 0 {
		for _, t := range d.Global {
			d.Dispatcher.Enqueue(t, ev)
		}
		return nil
	}
	if d.Resolve == nil {
		return errors.New("canary alerts: no alert provider resolver")
	}
	var errs []error
	for _, a := range alerts {
		t, err := d.Resolve(c, a)
		if err != nil {
			errs = append(errs, fmt.Errorf("alert %s (provider %s): %w", a.Name, providerName(c, a), err))
			continue
		}
		if t.Severity == "" {
			t.Severity = a.GetSeverity()
		}
		t.WeightSteps = t.WeightSteps || a.WeightSteps
		d.Dispatcher.Enqueue(t, ev)
	}
	return errors.Join(errs...)
}

func providerName(c *v1beta1.Canary, a v1beta1.CanaryAlert) string {
	ns := a.ProviderRef.Namespace
	if ns == "" {
		ns = c.Namespace
	}
	return ns + "/" + a.ProviderRef.Name
}

// NotifyEvent maps a notification about c onto an alert: its kind, c's name,
// namespace, phase, observed revision and canary weight, the failing check,
// the message and severity, and (for initialized and new-revision alerts)
// Flagger's facts about the canary. It reports false for what is not an
// alert: a notification without Alert set other than a weight step.
func NotifyEvent(c *v1beta1.Canary, n Notification) (notify.Event, bool) {
	kind, ok := notifyKind(c, n.Notify)
	if !ok {
		return notify.Event{}, false
	}
	ev := notify.Event{
		Kind:         kind,
		Canary:       c.Name,
		Namespace:    c.Namespace,
		Phase:        c.Status.Phase,
		Revision:     c.Status.ObservedRevision,
		Weight:       c.Status.CanaryWeight,
		FailingCheck: n.FailingCheck,
		Message:      n.Message,
		Severity:     n.Severity,
		Time:         n.Time,
	}
	if ev.Severity == "" {
		ev.Severity = v1beta1.SeverityInfo
	}
	if kind == notify.KindInitialized || kind == notify.KindNewRevision {
		ev.Fields = canaryFacts(c)
	}
	return ev, true
}

// notifyKind is the alert kind of n.
func notifyKind(c *v1beta1.Canary, n Notify) (notify.EventKind, bool) {
	if n.Event == EventAdvanced {
		return notify.KindWeightStep, true
	}
	if !n.Alert {
		return "", false
	}
	switch n.Event {
	case EventInitialized:
		return notify.KindInitialized, true
	case EventNewRevision:
		return notify.KindNewRevision, true
	case EventWaitingApproval, EventWaitingTrafficIncrease, EventWaitingPromotion:
		return notify.KindWaitingApproval, true
	case EventSucceeded:
		if c.SkipAnalysis() {
			return notify.KindSkipped, true
		}
		return notify.KindPromoted, true
	case EventRolledBack, EventPromotionFailed:
		return notify.KindRolledBack, true
	}
	return notify.EventKind(strings.ToLower(n.Event)), true
}

// canaryFacts are the facts Flagger shows with its initialized and
// new-revision alerts.
func canaryFacts(c *v1beta1.Canary) []notify.Field {
	facts := []notify.Field{
		{Name: "Target", Value: fmt.Sprintf("%s/%s.%s", c.Spec.TargetRef.Kind, c.Spec.TargetRef.Name, c.Namespace)},
		{Name: "Failed checks threshold", Value: strconv.Itoa(c.GetAnalysisThreshold())},
		{Name: "Progress deadline", Value: c.GetProgressDeadline().String()},
	}
	a := c.Spec.Analysis
	if a == nil {
		return facts
	}
	var routing string
	switch c.GetStrategy() {
	case v1beta1.StrategyABTesting:
		routing = fmt.Sprintf("A/B testing, %d iterations", a.Iterations)
	case v1beta1.StrategyBlueGreen:
		routing = fmt.Sprintf("Blue/Green, %d iterations", a.Iterations)
	default:
		seq := WeightSequence(a)
		parts := make([]string, len(seq))
		for i, w := range seq {
			parts[i] = strconv.Itoa(w)
		}
		routing = "Weight steps: " + strings.Join(parts, ", ")
	}
	return append(facts, notify.Field{Name: "Traffic routing", Value: routing})
}

// checkValidator is a provider that can check a check's provider up front:
// template.Runner does (the template exists and renders, the provider answers).
type checkValidator interface {
	Validate(ctx context.Context, t analysis.Target, c analysis.Check) error
}

var _ Validator = (*ProviderAnalyzer)(nil)

// Validate checks the provider of every metric with a template: one error
// per metric that cannot be run, naming it.
func (a *ProviderAnalyzer) Validate(ctx context.Context, c *v1beta1.Canary) []error {
	if c == nil || c.Spec.Analysis == nil {
		return nil
	}
	var v checkValidator
	switch p := a.Provider.(type) {
	case analysis.Mux:
		v, _ = p.Templates.(checkValidator)
	case *analysis.Mux:
		v, _ = p.Templates.(checkValidator)
	case checkValidator:
		v = p
	}
	if v == nil {
		return nil
	}
	defer a.track(c)()
	t := AnalysisTarget(c, c.Status.ObservedRevision)
	var errs []error
	for i := range c.Spec.Analysis.Metrics {
		m := &c.Spec.Analysis.Metrics[i]
		if m.IsBuiltin() {
			continue
		}
		chk, err := MetricCheck(m)
		if err != nil {
			errs = append(errs, fmt.Errorf("metric %s: analysis.metrics[%d]: %w", m.Name, i, err))
			continue
		}
		if err := v.Validate(ctx, t, chk); err != nil {
			errs = append(errs, fmt.Errorf("metric %s: %w", m.Name, err))
		}
	}
	return errs
}

// track records c as the canary analysed for its target, so that
// TemplateVars can find its variables, until the returned func is called.
func (a *ProviderAnalyzer) track(c *v1beta1.Canary) (untrack func()) {
	key := c.Namespace + "/" + c.Spec.TargetRef.Name
	a.mu.Lock()
	if a.running == nil {
		a.running = map[string]*v1beta1.Canary{}
	}
	a.running[key] = c
	a.mu.Unlock()
	return func() {
		a.mu.Lock()
		if a.running[key] == c {
			delete(a.running, key)
		}
		a.mu.Unlock()
	}
}
