// Package analysis judges one step of a canary: it runs the metric checks a
// Canary's analysis lists against a metrics provider and says, for each,
// whether the canary passed, failed, could not be judged for lack of traffic,
// or could not be judged at all.
//
// The built-in provider (NewBuiltin) reads the mesh's own telemetry and
// knows Flagger's two built-in checks, request-success-rate and
// request-duration, plus two statistical comparisons of the canary with the
// primary, canary-vs-primary-latency and canary-vs-primary-success-rate.
//
// Four verdicts are kept apart, because the engine treats them differently:
// Fail (a threshold or comparison was violated), NoData (no traffic, or too
// little to judge: the step holds rather than fails), and Error (the metric
// could not be computed: bad input or an unreachable source), besides Pass.
// Failed counts Fail and Error as failed checks, as Flagger counts a failed
// query; AllNoData tells the engine that nothing could be judged.
//
// The package does not depend on the Canary API types: the canary engine maps
// a Canary's analysis.metrics onto Check values.
package analysis

import (
	"context"
	"fmt"
	"math"
	"time"
)

// Verdict is the outcome of one check in one analysis tick.
type Verdict string

// The verdicts a check can reach.
const (
	// Pass: the metric was computed and met its thresholds.
	Pass Verdict = "pass"
	// Fail: the metric was computed and violated a threshold, or the canary
	// compared significantly worse than the primary.
	Fail Verdict = "fail"
	// NoData: there was no traffic (or too little) to compute the metric.
	// This is not a failure: the engine holds the step.
	NoData Verdict = "no-data"
	// Error: the metric cannot be computed: a bad check, a bad target, an
	// unreachable or misbehaving source.
	Error Verdict = "error"
)

// Result is what one check found.
type Result struct {
	// Name is the check's name.
	Name string
	// Verdict is the outcome.
	Verdict Verdict
	// Value is the measured value in Unit; NaN when there is none (NoData,
	// Error). For request-success-rate it is the success rate in percent,
	// for request-duration the p99 in milliseconds, for
	// canary-vs-primary-latency Cliff's delta of the canary's latencies
	// against the primary's (−1 to 1, positive when the canary is slower),
	// and for canary-vs-primary-success-rate the canary's error rate minus
	// the primary's in percentage points.
	Value float64
	// Min and Max are the thresholds the value was held to; nil when none.
	Min, Max *float64
	// Unit is Value's unit: "%", "ms", "pp" (percentage points) or "".
	Unit string
	// Message says in words what was found, for status and events:
	// "request-success-rate 91.3% < min 99%",
	// "request-duration p99 512ms > max 500ms",
	// "no requests to podinfo in the last 1m",
	// "cannot compute request-duration: ...".
	Message string
}

// Target says whose metrics to read: the canary workload, and the primary
// for the checks that compare the two.
type Target struct {
	// Namespace holds both workloads.
	Namespace string
	// Canary is the workload under test; Primary the one serving the
	// current version.
	Canary, Primary Workload
}

// Workload names one workload's proxies.
type Workload struct {
	// Name is the workload (deployment) name, such as podinfo or
	// podinfo-primary.
	Name string
	// Revision, when set, narrows the metrics to that revision's proxies.
	Revision string
}

// String names the workload in messages: its name, with the revision in
// parentheses when there is one.
func (w Workload) String() string {
	if w.Revision == "" {
		return w.Name
	}
	return w.Name + " (revision " + w.Revision + ")"
}

// DefaultInterval is the window a check reads when its Interval is 0, as in
// Flagger.
const DefaultInterval = time.Minute

// Check is one metric check, as a Canary's analysis.metrics lists it.
type Check struct {
	// Name is the metric: one of the built-in names (RequestSuccessRate,
	// RequestDuration, CanaryVsPrimaryLatency, CanaryVsPrimarySuccessRate),
	// or any name when TemplateRef is set.
	Name string
	// Interval is the window the metric is computed over; 0 means
	// DefaultInterval.
	Interval time.Duration
	// Min and Max are the threshold range: the check fails when the value is
	// below Min or above Max (both inclusive bounds). nil means unbounded on
	// that side; a check with neither passes whenever it can be computed, as
	// in Flagger. They do not apply to the canary-vs-primary checks, which
	// take Compare instead.
	Min, Max *float64
	// TemplateRef, when set, names a MetricTemplate ("namespace/name" or
	// "name"): the check runs a user-defined query through a provider that
	// understands templates, not the built-in one.
	TemplateRef string
	// Compare tunes the canary-vs-primary checks; nil means the defaults.
	Compare *Comparison
}

// Comparison tunes a canary-vs-primary check. A check fails only when the
// canary is worse than the primary both significantly (p < Alpha) and by
// enough to matter (effect ≥ MinEffect), so that a large sample cannot fail
// a canary over a negligible difference, nor a small one over noise.
type Comparison struct {
	// Alpha is the significance level of the one-sided test, in (0, 1); 0
	// means DefaultAlpha.
	Alpha float64
	// MinEffect is the smallest effect that fails the check; 0 means the
	// check's default. For canary-vs-primary-latency it is Cliff's delta, in
	// (0, 1] (DefaultLatencyMinEffect); for canary-vs-primary-success-rate it
	// is the difference of error rates in percentage points, in (0, 100]
	// (DefaultSuccessRateMinEffect).
	MinEffect float64
}

// Provider runs checks of one kind: the built-in mesh telemetry now, metric
// templates against Prometheus and others later.
type Provider interface {
	// Run runs check c against target t. It reports every problem in the
	// Result (Verdict Error or NoData) rather than returning an error.
	Run(ctx context.Context, t Target, c Check) Result
}

// Analyze runs every check and returns their results in Flagger's order: the
// built-in checks (no TemplateRef) first, in the order given, then the
// template checks, in the order given. Unlike Flagger it does not stop at the
// first failure, so that the status can show every check's value; the first
// of Failed(results) is the check Flagger would have halted on.
//
// Analyze never panics on odd data: a provider that panics yields an Error
// result for its check.
func Analyze(ctx context.Context, p Provider, t Target, checks []Check) []Result {
	results := make([]Result, 0, len(checks))
	for _, templates := range []bool{false, true} {
		for _, c := range checks {
			if (c.TemplateRef != "") != templates {
				continue
			}
			results = append(results, runSafely(ctx, p, t, c))
		}
	}
	return results
}

// runSafely runs one check, turning a panic into an Error result.
func runSafely(ctx context.Context, p Provider, t Target, c Check) (r Result) {
	defer func() {
		if v := recover(); v != nil {
			r = ErrorResult(c, fmt.Errorf("provider panicked: %v", v))
		}
	}()
	if p == nil {
		return ErrorResult(c, fmt.Errorf("no metrics provider"))
	}
	r = p.Run(ctx, t, c)
	if r.Name == "" {
		r.Name = c.Name
	}
	switch r.Verdict {
	case Pass, Fail, NoData, Error:
	default:
		return ErrorResult(c, fmt.Errorf("provider returned unknown verdict %q", r.Verdict))
	}
	return r
}

// Failed returns the results that count as failed checks: Fail and Error,
// since Flagger counts a metric that cannot be computed as a failed check.
// NoData results are not failures.
func Failed(results []Result) []Result {
	var out []Result
	for _, r := range results {
		if r.Verdict == Fail || r.Verdict == Error {
			out = append(out, r)
		}
	}
	return out
}

// AllNoData reports whether there were results and every one is NoData: the
// canary could not be judged at all this tick, so the engine holds.
func AllNoData(results []Result) bool {
	if len(results) == 0 {
		return false
	}
	for _, r := range results {
		if r.Verdict != NoData {
			return false
		}
	}
	return true
}

// FormatMessage returns r's message with the run's failed-check count, for
// the Canary's status: "request-success-rate 91.3% < min 99% (3/5 failed
// checks)". A threshold ≤ 0 leaves out the "/threshold".
func FormatMessage(r Result, failedChecks, threshold int) string {
	msg := r.Message
	if msg == "" {
		msg = r.Name + " " + string(r.Verdict)
	}
	if threshold <= 0 {
		return fmt.Sprintf("%s (%d failed checks)", msg, failedChecks)
	}
	return fmt.Sprintf("%s (%d/%d failed checks)", msg, failedChecks, threshold)
}

// ErrorResult is the Error result of c: "cannot compute <name>: <err>".
// Providers (built-in and template) report a metric they cannot compute with it.
func ErrorResult(c Check, err error) Result {
	return NewResult(c, Error, math.NaN(), fmt.Sprintf("cannot compute %s: %v", c.Name, err))
}

// NoDataResult is the NoData result of c with msg.
func NoDataResult(c Check, msg string) Result {
	return NewResult(c, NoData, math.NaN(), msg)
}

// NewResult is a result of check c, carrying copies of its bounds.
func NewResult(c Check, v Verdict, value float64, msg string) Result {
	return Result{Name: c.Name, Verdict: v, Value: value, Min: clone(c.Min), Max: clone(c.Max), Message: msg}
}

func clone(p *float64) *float64 {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}
