package analysis

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/sluicehq/sluice/mesh/telemetry"
)

// The built-in checks' names.
const (
	// RequestSuccessRate is the canary's share of non-failure responses, in
	// percent (Flagger's built-in; thresholds are usually a min).
	RequestSuccessRate = "request-success-rate"
	// RequestDuration is the canary's p99 latency in milliseconds (Flagger's
	// built-in; thresholds are usually a max).
	RequestDuration = "request-duration"
	// CanaryVsPrimaryLatency fails when the canary's latencies are
	// significantly and materially higher than the primary's (Mann-Whitney U
	// test, Cliff's delta effect size).
	CanaryVsPrimaryLatency = "canary-vs-primary-latency"
	// CanaryVsPrimarySuccessRate fails when the canary's error rate is
	// significantly and materially higher than the primary's (two-proportion
	// z-test, or Fisher's exact test for small counts).
	CanaryVsPrimarySuccessRate = "canary-vs-primary-success-rate"
)

// builtinNames lists the built-in checks, in the order messages name them.
var builtinNames = []string{RequestSuccessRate, RequestDuration, CanaryVsPrimaryLatency, CanaryVsPrimarySuccessRate}

// IsBuiltin reports whether name is a check the built-in provider runs.
func IsBuiltin(name string) bool {
	for _, n := range builtinNames {
		if n == name {
			return true
		}
	}
	return false
}

// Source is the built-in mesh telemetry: *telemetry.Client implements it, and
// StoreSource adapts an in-process *telemetry.Store. It returns an error
// wrapping telemetry.ErrNoData when the window holds no requests.
type Source interface {
	Window(ctx context.Context, sel telemetry.Selector, d time.Duration) (telemetry.Window, error)
}

var _ Source = (*telemetry.Client)(nil)

// Querier is what StoreSource needs of a *telemetry.Store.
type Querier interface {
	Query(sel telemetry.Selector, d time.Duration) (telemetry.Window, error)
}

// StoreSource adapts an in-process telemetry store to a Source.
func StoreSource(q Querier) Source { return storeSource{q} }

type storeSource struct{ q Querier }

func (s storeSource) Window(ctx context.Context, sel telemetry.Selector, d time.Duration) (telemetry.Window, error) {
	if err := ctx.Err(); err != nil {
		return telemetry.Window{}, err
	}
	return s.q.Query(sel, d)
}

// NewBuiltin returns the provider of the built-in checks, reading the mesh
// telemetry from src: the inbound traffic of the target's workloads.
func NewBuiltin(src Source) Provider { return &builtin{src: src} }

type builtin struct{ src Source }

// Run runs one built-in check. See the package documentation for the
// verdicts, and the check names' documentation for what each measures.
func (b *builtin) Run(ctx context.Context, t Target, c Check) Result {
	if c.TemplateRef != "" {
		return ErrorResult(c, fmt.Errorf("metric template %q needs a metric template provider; the built-in provider runs only %s",
			c.TemplateRef, strings.Join(builtinNames, ", ")))
	}
	if b.src == nil {
		return ErrorResult(c, errors.New("no telemetry source"))
	}
	if err := checkCommon(t, c); err != nil {
		return ErrorResult(c, err)
	}
	switch c.Name {
	case RequestSuccessRate:
		return b.successRate(ctx, t, c)
	case RequestDuration:
		return b.duration(ctx, t, c)
	case CanaryVsPrimaryLatency:
		return b.compareLatency(ctx, t, c)
	case CanaryVsPrimarySuccessRate:
		return b.compareSuccessRate(ctx, t, c)
	}
	return ErrorResult(c, fmt.Errorf("unknown built-in metric %q (built-ins: %s; other metrics need a templateRef)",
		c.Name, strings.Join(builtinNames, ", ")))
}

// checkCommon validates what every built-in check needs.
func checkCommon(t Target, c Check) error {
	var errs []error
	if t.Namespace == "" {
		errs = append(errs, errors.New("target namespace is empty"))
	}
	if t.Canary.Name == "" {
		errs = append(errs, errors.New("canary workload name is empty"))
	}
	if c.Interval < 0 {
		errs = append(errs, fmt.Errorf("interval %v is negative", c.Interval))
	}
	if c.Min != nil && !finite(*c.Min) {
		errs = append(errs, fmt.Errorf("threshold min %v is not a number", *c.Min))
	}
	if c.Max != nil && !finite(*c.Max) {
		errs = append(errs, fmt.Errorf("threshold max %v is not a number", *c.Max))
	}
	if c.Min != nil && c.Max != nil && *c.Min > *c.Max {
		errs = append(errs, fmt.Errorf("threshold min %v is greater than max %v", *c.Min, *c.Max))
	}
	return errors.Join(errs...)
}

func interval(c Check) time.Duration {
	if c.Interval == 0 {
		return DefaultInterval
	}
	return c.Interval
}

// query reads w's inbound window over c's interval. It returns a NoData
// result when there were no requests, an Error result on any other failure,
// or the window, checked for sanity.
func (b *builtin) query(ctx context.Context, ns string, w Workload, c Check) (telemetry.Window, *Result) {
	d := interval(c)
	sel := telemetry.Selector{Namespace: ns, Workload: w.Name, Revision: w.Revision, Direction: telemetry.Inbound}
	win, err := b.src.Window(ctx, sel, d)
	switch {
	case errors.Is(err, telemetry.ErrNoData):
		r := NoDataResult(c, noRequests(w, d))
		return win, &r
	case err != nil:
		r := ErrorResult(c, fmt.Errorf("reading telemetry of %s: %w", w, err))
		return win, &r
	}
	if err := checkWindow(win); err != nil {
		r := ErrorResult(c, fmt.Errorf("telemetry of %s: %w", w, err))
		return win, &r
	}
	if win.Requests == 0 {
		r := NoDataResult(c, noRequests(w, d))
		return win, &r
	}
	return win, nil
}

func noRequests(w Workload, d time.Duration) string {
	return fmt.Sprintf("no requests to %s in the last %s", w, formatDuration(d))
}

// checkWindow refuses windows no proxy could have produced.
func checkWindow(w telemetry.Window) error {
	for _, f := range []struct {
		what string
		v    float64
	}{{"requests", w.Requests}, {"successes", w.Successes}, {"failures", w.Failures}} {
		if !finite(f.v) || f.v < 0 {
			return fmt.Errorf("%s count is %v", f.what, f.v)
		}
	}
	// Allow for the rounding of prorated counts.
	slack := 1e-9 * max(1, w.Requests)
	if w.Successes > w.Requests+slack {
		return fmt.Errorf("successes (%v) exceed requests (%v)", w.Successes, w.Requests)
	}
	if w.Failures > w.Requests+slack {
		return fmt.Errorf("failures (%v) exceed requests (%v)", w.Failures, w.Requests)
	}
	for i, bk := range w.Buckets {
		switch {
		case math.IsNaN(bk.LE):
			return fmt.Errorf("latency bucket %d has bound NaN", i)
		case !finite(bk.Count) || bk.Count < 0:
			return fmt.Errorf("latency bucket le=%v has count %v", bk.LE, bk.Count)
		case i > 0 && bk.LE <= w.Buckets[i-1].LE:
			return fmt.Errorf("latency buckets are not in ascending order of bound (le=%v after le=%v)", bk.LE, w.Buckets[i-1].LE)
		}
	}
	return nil
}

// successRate runs request-success-rate.
func (b *builtin) successRate(ctx context.Context, t Target, c Check) Result {
	w, bad := b.query(ctx, t.Namespace, t.Canary, c)
	if bad != nil {
		bad.Unit = "%"
		return *bad
	}
	rate := min(100, 100*w.Successes/w.Requests)
	return threshold(c, rate, "%", c.Name, 1)
}

// duration runs request-duration.
func (b *builtin) duration(ctx context.Context, t Target, c Check) Result {
	w, bad := b.query(ctx, t.Namespace, t.Canary, c)
	if bad != nil {
		bad.Unit = "ms"
		return *bad
	}
	p99 := w.Quantile(0.99)
	if math.IsNaN(p99) {
		r := NoDataResult(c, fmt.Sprintf("no latency observations for %s in the last %s", t.Canary, formatDuration(interval(c))))
		r.Unit = "ms"
		return r
	}
	return threshold(c, p99, "ms", c.Name+" p99", 0)
}

// threshold judges value against c's range. label names the value in the
// message; decimals is how precisely to write it.
func threshold(c Check, value float64, unit, label string, decimals int) Result {
	r := Result{Name: c.Name, Verdict: Pass, Value: value, Min: clone(c.Min), Max: clone(c.Max), Unit: unit}
	switch {
	case c.Min != nil && value < *c.Min:
		r.Verdict = Fail
		r.Message = fmt.Sprintf("%s %s%s < min %s%s", label, formatAgainst(value, *c.Min, decimals), unit, formatBound(*c.Min), unit)
	case c.Max != nil && value > *c.Max:
		r.Verdict = Fail
		r.Message = fmt.Sprintf("%s %s%s > max %s%s", label, formatAgainst(value, *c.Max, decimals), unit, formatBound(*c.Max), unit)
	default:
		r.Message = label + " " + formatNumber(value, decimals) + unit
		var bounds []string
		if c.Min != nil {
			bounds = append(bounds, "min "+formatBound(*c.Min)+unit)
		}
		if c.Max != nil {
			bounds = append(bounds, "max "+formatBound(*c.Max)+unit)
		}
		if len(bounds) > 0 {
			r.Message += " (" + strings.Join(bounds, ", ") + ")"
		}
	}
	return r
}
