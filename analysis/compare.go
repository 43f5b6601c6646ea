package analysis

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/sluicehq/sluice/analysis/stats"
	"github.com/sluicehq/sluice/mesh/telemetry"
)

// Defaults of the canary-vs-primary checks.
const (
	// DefaultAlpha is the significance level of the comparisons' one-sided
	// tests.
	DefaultAlpha = 0.05
	// DefaultLatencyMinEffect is the Cliff's delta from which a significant
	// latency difference fails canary-vs-primary-latency.
	//
	// Cliff's delta is P(canary slower) − P(canary faster) over all pairs of
	// one canary and one primary request. It was chosen over a ratio of
	// medians because it comes from the same U statistic the test computes,
	// is defined on the tied, coarsely binned data a latency histogram holds,
	// does not depend on interpolating inside a bucket (a median ratio does,
	// and jumps when both medians share a wide bucket such as 100-200 ms), and
	// is not moved by a few outliers. 0.33 is the conventional border between
	// a "small" and a "medium" effect (Romano et al., 2006): a random canary
	// request is slower than a random primary request about two times in
	// three. A slowdown of only the tail is what request-duration's p99
	// threshold is for.
	DefaultLatencyMinEffect = 0.33
	// DefaultSuccessRateMinEffect is the difference of error rates, in
	// percentage points, from which a significant difference fails
	// canary-vs-primary-success-rate.
	DefaultSuccessRateMinEffect = 1.0
	// MinSamples is the fewest requests each side needs for a comparison;
	// with fewer the check reports NoData.
	MinSamples = 20
	// fisherMinExpected is the smallest expected cell count of the 2×2 table
	// for which the z-test's normal approximation is trusted; below it the
	// success-rate comparison uses Fisher's exact test (Cochran's rule).
	fisherMinExpected = 5
	// effectSlack absorbs floating-point rounding when an effect is compared
	// with its minimum, so that an effect of exactly MinEffect fails.
	effectSlack = 1e-9
)

// comparison returns c's alpha and minimum effect with defaults applied, or
// an error naming what is out of range.
func comparison(c Check, defaultEffect, maxEffect float64) (alpha, minEffect float64, err error) {
	if c.Min != nil || c.Max != nil {
		return 0, 0, errors.New("a thresholdRange does not apply to a canary-vs-primary check (it compares the canary with the primary); tune it with alpha and minEffect")
	}
	alpha, minEffect = DefaultAlpha, defaultEffect
	if c.Compare != nil {
		if c.Compare.Alpha != 0 {
			alpha = c.Compare.Alpha
		}
		if c.Compare.MinEffect != 0 {
			minEffect = c.Compare.MinEffect
		}
	}
	if !(alpha > 0 && alpha < 1) {
		return 0, 0, fmt.Errorf("alpha %v is not between 0 and 1", alpha)
	}
	if !(minEffect > 0 && minEffect <= maxEffect) {
		return 0, 0, fmt.Errorf("minEffect %v is not in (0, %v]", minEffect, maxEffect)
	}
	return alpha, minEffect, nil
}

// queryBoth reads the canary's and the primary's windows. A non-nil Result
// means the comparison cannot go on: NoData when a side got no requests,
// Error otherwise.
func (b *builtin) queryBoth(ctx context.Context, t Target, c Check, unit string) (cw, pw telemetry.Window, bad *Result) {
	if t.Primary.Name == "" {
		r := ErrorResult(c, errors.New("primary workload name is empty"))
		r.Unit = unit
		return cw, pw, &r
	}
	cw, bad = b.query(ctx, t.Namespace, t.Canary, c)
	if bad == nil {
		pw, bad = b.query(ctx, t.Namespace, t.Primary, c)
		if bad != nil && bad.Verdict == NoData {
			bad.Message += " to compare the canary with"
		}
	}
	if bad != nil {
		bad.Unit = unit
	}
	return cw, pw, bad
}

// notEnough is the NoData result of a comparison with fewer than MinSamples
// on a side, or nil.
func notEnough(t Target, c Check, what string, nc, np float64, unit string) *Result {
	if nc >= MinSamples && np >= MinSamples {
		return nil
	}
	r := NoDataResult(c, fmt.Sprintf("not enough samples to compare: %s %s for %s, %s for %s in the last %s (need %d each)",
		formatNumber(nc, 0), what, t.Canary, formatNumber(np, 0), t.Primary, formatDuration(interval(c)), MinSamples))
	r.Unit = unit
	return &r
}

// compareLatency runs canary-vs-primary-latency: a one-sided Mann-Whitney U
// test of the canary's latency histogram against the primary's, on the
// bucket bounds both share, with Cliff's delta as the effect size.
func (b *builtin) compareLatency(ctx context.Context, t Target, c Check) Result {
	alpha, minEffect, err := comparison(c, DefaultLatencyMinEffect, 1)
	if err != nil {
		return ErrorResult(c, err)
	}
	cw, pw, bad := b.queryBoth(ctx, t, c, "")
	if bad != nil {
		return *bad
	}
	cb, pb, err := commonBins(cw.Buckets, pw.Buckets)
	if err != nil {
		return ErrorResult(c, err)
	}
	if r := notEnough(t, c, "latency observations", sum(cb), sum(pb), ""); r != nil {
		return *r
	}
	mw, err := stats.MannWhitneyU(cb, pb, stats.Greater)
	if err != nil {
		return ErrorResult(c, err)
	}
	r := Result{Name: c.Name, Verdict: Pass, Value: mw.CliffsDelta}
	medians := fmt.Sprintf("p50 %sms vs %sms", formatNumber(cw.Quantile(0.5), 1), formatNumber(pw.Quantile(0.5), 1))
	if mw.P < alpha && mw.CliffsDelta >= minEffect-effectSlack {
		r.Verdict = Fail
		r.Message = fmt.Sprintf("%s: %s slower than %s (%s, Cliff's delta %s >= %s, p=%s < alpha %s)",
			c.Name, t.Canary, t.Primary, medians, formatNumber(mw.CliffsDelta, 2), formatBound(minEffect), formatP(mw.P), formatBound(alpha))
		return r
	}
	r.Message = fmt.Sprintf("%s: %s not materially slower than %s (%s, Cliff's delta %s, p=%s)",
		c.Name, t.Canary, t.Primary, medians, formatNumber(mw.CliffsDelta, 2), formatP(mw.P))
	return r
}

// compareSuccessRate runs canary-vs-primary-success-rate: a one-sided test
// that the canary's error rate exceeds the primary's, the pooled
// two-proportion z-test when every expected cell count of the 2×2 table is
// at least 5, Fisher's exact test (on counts rounded to integers) otherwise.
func (b *builtin) compareSuccessRate(ctx context.Context, t Target, c Check) Result {
	alpha, minEffect, err := comparison(c, DefaultSuccessRateMinEffect, 100)
	if err != nil {
		return ErrorResult(c, err)
	}
	cw, pw, bad := b.queryBoth(ctx, t, c, "pp")
	if bad != nil {
		return *bad
	}
	if r := notEnough(t, c, "requests", cw.Requests, pw.Requests, "pp"); r != nil {
		return *r
	}
	f1, n1 := min(cw.Failures, cw.Requests), cw.Requests
	f2, n2 := min(pw.Failures, pw.Requests), pw.Requests
	p, test, err := errorRateTest(f1, n1, f2, n2)
	if err != nil {
		return ErrorResult(c, err)
	}
	e1, e2 := 100*f1/n1, 100*f2/n2
	diff := e1 - e2
	r := Result{Name: c.Name, Verdict: Pass, Value: diff, Unit: "pp"}
	rates := fmt.Sprintf("%s error rate %s%% vs %s%% for %s", t.Canary, formatNumber(e1, 2), formatNumber(e2, 2), t.Primary)
	if p < alpha && diff >= minEffect-effectSlack {
		r.Verdict = Fail
		r.Message = fmt.Sprintf("%s: %s (%s points >= %s, p=%s < alpha %s, %s)",
			c.Name, rates, signed(diff), formatBound(minEffect), formatP(p), formatBound(alpha), test)
		return r
	}
	r.Message = fmt.Sprintf("%s: %s (%s points, p=%s, %s)", c.Name, rates, signed(diff), formatP(p), test)
	return r
}

// errorRateTest returns the one-sided p-value that the first error rate
// f1/n1 exceeds f2/n2, and the test used.
func errorRateTest(f1, n1, f2, n2 float64) (float64, string, error) {
	n, f := n1+n2, f1+f2
	expected := min(n1, n2) * min(f, n-f) / n
	if expected >= fisherMinExpected {
		z, err := stats.TwoProportionZ(f1, n1, f2, n2, stats.Greater)
		return z.P, "z-test", err
	}
	r := func(v float64) int64 { return int64(math.Round(v)) }
	a, c := r(f1), r(f2)
	p, err := stats.FisherExact(a, r(n1)-a, c, r(n2)-c, stats.Greater)
	return p, "Fisher's exact test", err
}

// signed writes v with two decimals at most and an explicit sign.
func signed(v float64) string {
	s := formatNumber(v, 2)
	if s != "0" && s[0] != '-' {
		s = "+" + s
	}
	return s
}

func sum(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s
}

// commonBins turns two cumulative latency histograms into per-bin counts on
// the bounds both have, so that the bins mean the same for both: [0, b0],
// (b0, b1], …, (bk, +Inf]. Coarsening to shared bounds is exact, where
// splitting a bucket the other histogram lacks would need a guess. Counts
// that decrease with the bound (proxies with different bounds aggregated)
// are smoothed to non-decreasing first, as histogram_quantile does.
func commonBins(a, b []telemetry.Bucket) ([]float64, []float64, error) {
	if len(a) == 0 || len(b) == 0 {
		return nil, nil, errors.New("a latency histogram is empty")
	}
	for _, h := range [][]telemetry.Bucket{a, b} {
		if !math.IsInf(h[len(h)-1].LE, 1) {
			return nil, nil, errors.New("a latency histogram has no +Inf bucket")
		}
	}
	inB := make(map[float64]bool, len(b))
	for _, bk := range b {
		inB[bk.LE] = true
	}
	var bounds []float64
	for _, bk := range a {
		if inB[bk.LE] {
			bounds = append(bounds, bk.LE)
		}
	}
	return binsAt(a, bounds), binsAt(b, bounds), nil
}

// binsAt returns h's per-bin counts between consecutive bounds, each bound
// present in h, the last +Inf.
func binsAt(h []telemetry.Bucket, bounds []float64) []float64 {
	out := make([]float64, 0, len(bounds))
	var cum, prev float64
	j := 0
	for _, bk := range h {
		cum = max(cum, bk.Count)
		if j < len(bounds) && bk.LE == bounds[j] {
			out = append(out, cum-prev)
			prev = cum
			j++
		}
	}
	return out
}
