package v1beta1

import (
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"
)

// Defaults, as Flagger applies them.
const (
	// DefaultProgressDeadlineSeconds is spec.progressDeadlineSeconds when unset.
	DefaultProgressDeadlineSeconds = 600
	// DefaultAnalysisInterval is analysis.interval when empty or unparsable.
	DefaultAnalysisInterval = 60 * time.Second
	// MinAnalysisInterval is the shortest analysis.interval; shorter ones are
	// rejected by validation and raised to it by GetAnalysisInterval.
	MinAnalysisInterval = 10 * time.Second
	// DefaultAnalysisThreshold is analysis.threshold when 0.
	DefaultAnalysisThreshold = 1
	// DefaultMaxWeight is analysis.maxWeight when 0, and the total weight.
	DefaultMaxWeight = 100
	// DefaultReadyThreshold is analysis.primaryReadyThreshold and
	// canaryReadyThreshold when unset, in percent.
	DefaultReadyThreshold = 100
	// DefaultMetricInterval is metrics[].interval when empty.
	DefaultMetricInterval = "1m"
	// DefaultWebhookTimeout is webhooks[].timeout when empty or unparsable.
	DefaultWebhookTimeout = 10 * time.Second
	// DefaultSessionAffinityMaxAge is sessionAffinity.maxAge when 0, in
	// seconds.
	DefaultSessionAffinityMaxAge = 86400
	// DefaultPortName is service.portName when empty.
	DefaultPortName = "http"
	// DefaultGatewayGroup and DefaultGatewayKind are a gatewayRef's group and
	// kind when unset.
	DefaultGatewayGroup = "gateway.networking.k8s.io"
	// DefaultGatewayKind is a gatewayRef's kind when unset.
	DefaultGatewayKind = "Gateway"
)

// Strategy is how a run moves traffic, derived from the analysis.
type Strategy string

const (
	// StrategyCanary shifts a growing weight of traffic to the canary
	// (stepWeight or stepWeights).
	StrategyCanary Strategy = "canary"
	// StrategyBlueGreen runs iterations with no user traffic on the canary
	// (or mirrored traffic), then switches all of it.
	StrategyBlueGreen Strategy = "blue-green"
	// StrategyABTesting routes the requests that match analysis.match to the
	// canary for iterations.
	StrategyABTesting Strategy = "ab-testing"
)

// SetDefaults fills the fields Flagger defaults when they are empty, so the
// engine reads one value per field. It leaves analysis.stepWeight,
// stepWeights and iterations alone, and sets nothing a valid object would
// not accept: Validate passes on a canary after SetDefaults if it passed
// before. Validate first to report what the user wrote (an empty interval is
// an error there, and 1m here).
func SetDefaults(c *Canary) {
	s := &c.Spec
	if s.ProgressDeadlineSeconds == nil {
		d := int32(DefaultProgressDeadlineSeconds)
		s.ProgressDeadlineSeconds = &d
	}

	svc := &s.Service
	if svc.PortName == "" {
		svc.PortName = DefaultPortName
	}
	if svc.TargetPort == nil {
		svc.TargetPort = ptrTo(intstr.FromInt32(svc.Port))
	}
	if svc.Rewrite != nil && svc.Rewrite.Type == "" {
		svc.Rewrite.Type = RewriteFullPath
	}
	for i := range svc.GatewayRefs {
		ref := &svc.GatewayRefs[i]
		if ref.Group == nil {
			ref.Group = ptrTo(DefaultGatewayGroup)
		}
		if ref.Kind == nil {
			ref.Kind = ptrTo(DefaultGatewayKind)
		}
	}
	for i := range svc.Mirror {
		ref := &svc.Mirror[i].BackendRef
		if ref.Group == nil {
			ref.Group = ptrTo("")
		}
		if ref.Kind == nil {
			ref.Kind = ptrTo("Service")
		}
	}

	a := s.Analysis
	if a == nil {
		return
	}
	if a.Interval == "" {
		a.Interval = DefaultAnalysisInterval.String()
	}
	if a.Threshold <= 0 {
		a.Threshold = DefaultAnalysisThreshold
	}
	if a.MaxWeight == 0 && len(a.StepWeights) == 0 {
		a.MaxWeight = DefaultMaxWeight
	}
	if a.PrimaryReadyThreshold == nil {
		a.PrimaryReadyThreshold = ptrTo(DefaultReadyThreshold)
	}
	if a.CanaryReadyThreshold == nil {
		a.CanaryReadyThreshold = ptrTo(DefaultReadyThreshold)
	}
	if a.NoDataPolicy == "" {
		a.NoDataPolicy = NoDataHold
	}
	if a.WindowPolicy == "" {
		a.WindowPolicy = WindowFinish
	}
	for i := range a.Metrics {
		if a.Metrics[i].Interval == "" {
			a.Metrics[i].Interval = DefaultMetricInterval
		}
	}
	for i := range a.Webhooks {
		w := &a.Webhooks[i]
		if w.Type == "" {
			w.Type = RolloutHook
		}
		if w.Timeout == "" {
			w.Timeout = DefaultWebhookTimeout.String()
		}
	}
	for i := range a.Alerts {
		if a.Alerts[i].Severity == "" {
			a.Alerts[i].Severity = SeverityInfo
		}
	}
	if a.SessionAffinity != nil && a.SessionAffinity.MaxAge == 0 {
		a.SessionAffinity.MaxAge = DefaultSessionAffinityMaxAge
	}
}

func ptrTo[T any](v T) *T { return &v }

// GetServiceNames returns the names of the apex, primary and canary
// Services: service.name (or targetRef.name) and that with "-primary" and
// "-canary".
func (c *Canary) GetServiceNames() (apex, primary, canary string) {
	apex = c.Spec.Service.Name
	if apex == "" {
		apex = c.Spec.TargetRef.Name
	}
	return apex, apex + "-primary", apex + "-canary"
}

// GetPrimaryName returns the name of the primary copy of the target,
// "<target>-primary".
func (c *Canary) GetPrimaryName() string {
	return c.Spec.TargetRef.Name + "-primary"
}

// GetProgressDeadline returns spec.progressDeadlineSeconds as a duration,
// 600s when unset.
func (c *Canary) GetProgressDeadline() time.Duration {
	if d := c.Spec.ProgressDeadlineSeconds; d != nil && *d > 0 {
		return time.Duration(*d) * time.Second
	}
	return DefaultProgressDeadlineSeconds * time.Second
}

// SkipAnalysis reports whether a new revision is promoted without analysis:
// spec.skipAnalysis is set, or there is no analysis.
func (c *Canary) SkipAnalysis() bool {
	return c.Spec.SkipAnalysis || c.Spec.Analysis == nil
}

// GetStrategy returns how a run moves traffic: A/B testing with match and
// iterations, blue/green with iterations alone, a canary release otherwise.
func (c *Canary) GetStrategy() Strategy {
	a := c.Spec.Analysis
	switch {
	case a == nil || a.Iterations <= 0:
		return StrategyCanary
	case len(a.Match) > 0:
		return StrategyABTesting
	default:
		return StrategyBlueGreen
	}
}

// GetAnalysisInterval returns the time between two steps: analysis.interval,
// 60s when empty or unparsable, and never less than 10s.
func (c *Canary) GetAnalysisInterval() time.Duration {
	a := c.Spec.Analysis
	if a == nil || a.Interval == "" {
		return DefaultAnalysisInterval
	}
	d, err := time.ParseDuration(a.Interval)
	if err != nil {
		return DefaultAnalysisInterval
	}
	return max(d, MinAnalysisInterval)
}

// GetAnalysisThreshold returns how many failed checks roll a run back:
// analysis.threshold, 1 when 0.
func (c *Canary) GetAnalysisThreshold() int {
	if a := c.Spec.Analysis; a != nil && a.Threshold > 0 {
		return a.Threshold
	}
	return DefaultAnalysisThreshold
}

// GetMaxWeight returns the canary weight at which a canary release is
// promoted: the last of analysis.stepWeights (at most 100) when set,
// otherwise analysis.maxWeight, 100 when 0.
func (c *Canary) GetMaxWeight() int {
	a := c.Spec.Analysis
	if a == nil {
		return DefaultMaxWeight
	}
	if n := len(a.StepWeights); n > 0 {
		return min(a.StepWeights[n-1], DefaultMaxWeight)
	}
	if a.MaxWeight > 0 {
		return min(a.MaxWeight, DefaultMaxWeight)
	}
	return DefaultMaxWeight
}

// GetStepWeights returns the canary's weight at each step of a canary
// release, the last being GetMaxWeight: analysis.stepWeights as written, or
// multiples of analysis.stepWeight with the last step cut at maxWeight (so
// maxWeight 50 and stepWeight 20 give 20, 40, 50; Flagger would go to 60).
// It returns nil for A/B testing and blue/green, and when no step is set.
func (c *Canary) GetStepWeights() []int {
	a := c.Spec.Analysis
	if a == nil || c.GetStrategy() != StrategyCanary {
		return nil
	}
	if len(a.StepWeights) > 0 {
		out := make([]int, 0, len(a.StepWeights))
		for _, w := range a.StepWeights {
			out = append(out, min(w, DefaultMaxWeight))
		}
		return out
	}
	if a.StepWeight <= 0 {
		return nil
	}
	limit := c.GetMaxWeight()
	var out []int
	for w := 0; w < limit; {
		w = min(w+a.StepWeight, limit)
		out = append(out, w)
	}
	return out
}

// GetPrimaryReadyThreshold returns the percentage of the primary's pods that
// must be available for it to be ready, 100 when unset.
func (c *Canary) GetPrimaryReadyThreshold() int {
	if a := c.Spec.Analysis; a != nil && a.PrimaryReadyThreshold != nil {
		return *a.PrimaryReadyThreshold
	}
	return DefaultReadyThreshold
}

// GetCanaryReadyThreshold returns the percentage of the canary's pods that
// must be available for it to be ready, 100 when unset.
func (c *Canary) GetCanaryReadyThreshold() int {
	if a := c.Spec.Analysis; a != nil && a.CanaryReadyThreshold != nil {
		return *a.CanaryReadyThreshold
	}
	return DefaultReadyThreshold
}

// GetNoDataPolicy returns what a check without data counts as, hold when
// unset.
func (c *Canary) GetNoDataPolicy() NoDataPolicy {
	if a := c.Spec.Analysis; a != nil && a.NoDataPolicy != "" {
		return a.NoDataPolicy
	}
	return NoDataHold
}

// GetWindowPolicy returns what a run does when its window closes, finish
// when unset.
func (c *Canary) GetWindowPolicy() WindowPolicy {
	if a := c.Spec.Analysis; a != nil && a.WindowPolicy != "" {
		return a.WindowPolicy
	}
	return WindowFinish
}

// GetInterval returns the metric's query window, "1m" when empty. It is a
// string because templates receive it as written ({{ interval }}).
func (m *CanaryMetric) GetInterval() string {
	if m.Interval == "" {
		return DefaultMetricInterval
	}
	return m.Interval
}

// IsBuiltin reports whether the metric is a built-in one: it has neither a
// template nor a query.
func (m *CanaryMetric) IsBuiltin() bool {
	return m.TemplateRef == nil && m.Query == ""
}

// GetThresholdRange returns the bounds the metric's value must stay within,
// nil for an unbounded side. thresholdRange wins; otherwise the deprecated
// threshold is a minimum for request-success-rate and a maximum for every
// other metric, as in Flagger (so a template metric with neither passes
// only at or below 0).
func (m *CanaryMetric) GetThresholdRange() (lo, hi *float64) {
	if r := m.ThresholdRange; r != nil {
		if r.Min != nil {
			lo = ptrTo(r.Min.Float64())
		}
		if r.Max != nil {
			hi = ptrTo(r.Max.Float64())
		}
		return lo, hi
	}
	t := m.Threshold.Float64()
	if m.Name == MetricRequestSuccessRate {
		return &t, nil
	}
	return nil, &t
}

// GetType returns the webhook's type, rollout when empty.
func (w *CanaryWebhook) GetType() HookType {
	if w.Type == "" {
		return RolloutHook
	}
	return w.Type
}

// GetTimeout returns the timeout of a call, 10s when empty or unparsable.
func (w *CanaryWebhook) GetTimeout() time.Duration {
	d, err := time.ParseDuration(w.Timeout)
	if err != nil || d <= 0 {
		return DefaultWebhookTimeout
	}
	return d
}

// GetSeverity returns the alert's severity, info when empty.
func (a *CanaryAlert) GetSeverity() AlertSeverity {
	if a.Severity == "" {
		return SeverityInfo
	}
	return a.Severity
}

// GetMaxAge returns the cookie lifetime in seconds, 86400 when 0.
func (s *SessionAffinity) GetMaxAge() int {
	if s.MaxAge == 0 {
		return DefaultSessionAffinityMaxAge
	}
	return s.MaxAge
}

// GetDuration returns how long the window stays open; 0 if it does not
// parse (which validation rejects).
func (w *AnalysisWindow) GetDuration() time.Duration {
	d, err := time.ParseDuration(w.Duration)
	if err != nil {
		return 0
	}
	return d
}

// GetLocation returns the window's time zone, UTC when empty.
func (w *AnalysisWindow) GetLocation() (*time.Location, error) {
	if w.TimeZone == "" {
		return time.UTC, nil
	}
	return time.LoadLocation(w.TimeZone)
}
