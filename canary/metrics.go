package canary

import (
	"errors"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/analysis"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// Values of the analysis_status label of the success and failure counters,
// as Flagger has them.
const (
	// AnalysisCompleted: the run was analysed.
	AnalysisCompleted = "completed"
	// AnalysisSkipped: the revision was promoted without analysis
	// (skipAnalysis).
	AnalysisSkipped = "skipped"
)

// Values of sluice_canary_status, Flagger's: 0 while a run is under way, 1
// after success and in every other phase, 2 after a failure.
const (
	// StatusRunning: Progressing, WaitingPromotion, Promoting, Finalising.
	StatusRunning = 0
	// StatusSucceeded: Succeeded, and every phase between runs.
	StatusSucceeded = 1
	// StatusFailed: Failed.
	StatusFailed = 2
)

// Metrics are the canary controller's Prometheus metrics: Flagger's set,
// renamed from flagger_* to sluice_*, with Flagger's labels and meanings,
// so that Flagger's dashboards work after renaming. As in Flagger, the
// "name" label holds the target's name (spec.targetRef.name).
//
// The methods are safe for concurrent use; a nil *Metrics records nothing.
type Metrics struct {
	status    *prometheus.GaugeVec
	weight    *prometheus.GaugeVec
	analysis  *prometheus.GaugeVec
	duration  *prometheus.HistogramVec
	successes *prometheus.CounterVec
	failures  *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them with reg (none when reg
// is nil). A metric already registered with reg by an earlier NewMetrics is
// reused, so that two drivers may share a registry.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		status: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_canary_status",
			Help: "Last known state of the canary's run: 0 running, 1 succeeded (or idle), 2 failed.",
		}, []string{"name", "namespace"}),
		weight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_canary_weight",
			Help: "Route weight of the workload: the target (canary) and <target>-primary.",
		}, []string{"workload", "namespace"}),
		analysis: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_canary_metric_analysis",
			Help: "Last value of each metric check of the canary's analysis (durations in seconds, rates in percent).",
		}, []string{"name", "namespace", "metric"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_canary_duration_seconds",
			Help:    "Seconds spent performing canary analysis, per analysed step.",
			Buckets: prometheus.DefBuckets,
		}, []string{"name", "namespace"}),
		successes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_canary_successes_total",
			Help: "Total number of canary runs that promoted their revision.",
		}, []string{"name", "namespace", "deployment_strategy", "analysis_status"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_canary_failures_total",
			Help: "Total number of canary runs that were rolled back or whose promotion failed.",
		}, []string{"name", "namespace", "deployment_strategy", "analysis_status"}),
	}
	if reg != nil {
		m.status = register(reg, m.status)
		m.weight = register(reg, m.weight)
		m.analysis = register(reg, m.analysis)
		m.duration = register(reg, m.duration)
		m.successes = register(reg, m.successes)
		m.failures = register(reg, m.failures)
	}
	return m
}

// register registers c with reg, or returns the collector already
// registered in its place. It panics on any other registration error (a
// name clash with a different metric), as MustRegister does.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	panic("canary metrics: " + err.Error())
}

// Forget deletes every series of canary c, e.g. when it is deleted.
func (m *Metrics) Forget(c *v1beta1.Canary) {
	if m == nil || c == nil {
		return
	}
	name, ns := c.Spec.TargetRef.Name, c.Namespace
	byName := prometheus.Labels{"name": name, "namespace": ns}
	m.status.DeletePartialMatch(byName)
	m.analysis.DeletePartialMatch(byName)
	m.duration.DeletePartialMatch(byName)
	m.successes.DeletePartialMatch(byName)
	m.failures.DeletePartialMatch(byName)
	m.weight.Delete(prometheus.Labels{"workload": name, "namespace": ns})
	m.weight.Delete(prometheus.Labels{"workload": c.GetPrimaryName(), "namespace": ns})
}

// StatusValue is the value of sluice_canary_status for a phase.
func StatusValue(p v1beta1.CanaryPhase) float64 {
	switch p {
	case v1beta1.PhaseProgressing, v1beta1.PhaseWaitingPromotion, v1beta1.PhasePromoting, v1beta1.PhaseFinalising:
		return StatusRunning
	case v1beta1.PhaseFailed:
		return StatusFailed
	}
	return StatusSucceeded
}

func (m *Metrics) setStatus(c *v1beta1.Canary, p v1beta1.CanaryPhase) {
	m.status.WithLabelValues(c.Spec.TargetRef.Name, c.Namespace).Set(StatusValue(p))
}

func (m *Metrics) setWeight(c *v1beta1.Canary, primary, canary int) {
	m.weight.WithLabelValues(c.GetPrimaryName(), c.Namespace).Set(float64(primary))
	m.weight.WithLabelValues(c.Spec.TargetRef.Name, c.Namespace).Set(float64(canary))
}

// setAnalysis records a check's value; a check without a finite value
// leaves the last one. Durations are recorded in seconds, as Flagger does.
func (m *Metrics) setAnalysis(c *v1beta1.Canary, r analysis.Result) {
	v := r.Value
	if math.IsNaN(v) || math.IsInf(v, 0) || r.Verdict == analysis.NoData || r.Verdict == analysis.Error {
		return
	}
	if r.Unit == "ms" {
		v /= 1000
	}
	m.analysis.WithLabelValues(c.Spec.TargetRef.Name, c.Namespace, r.Name).Set(v)
}

func (m *Metrics) observeDuration(c *v1beta1.Canary, d time.Duration) {
	m.duration.WithLabelValues(c.Spec.TargetRef.Name, c.Namespace).Observe(d.Seconds())
}

func (m *Metrics) incSuccesses(c *v1beta1.Canary, analysisStatus string) {
	m.successes.WithLabelValues(c.Spec.TargetRef.Name, c.Namespace, string(c.GetStrategy()), analysisStatus).Inc()
}

func (m *Metrics) incFailures(c *v1beta1.Canary, analysisStatus string) {
	m.failures.WithLabelValues(c.Spec.TargetRef.Name, c.Namespace, string(c.GetStrategy()), analysisStatus).Inc()
}
