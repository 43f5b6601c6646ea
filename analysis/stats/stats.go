// Package stats holds the statistics that canary analysis judges with: the
// Mann-Whitney U (Wilcoxon rank-sum) test on binned samples, the pooled
// two-proportion z-test and Fisher's exact test on 2×2 tables, and the normal
// distribution they lean on. It is pure maths: no I/O, no clocks, no
// knowledge of metrics.
package stats

import (
	"fmt"
	"math"
)

// Alternative is the alternative hypothesis a test's p-value is computed for.
type Alternative int

const (
	// TwoSided: the first sample differs from the second.
	TwoSided Alternative = iota
	// Greater: the first sample is stochastically greater (Mann-Whitney), or
	// its proportion or odds are greater (two-proportion, Fisher).
	Greater
	// Less: the first sample is stochastically smaller, or its proportion or
	// odds are smaller.
	Less
)

// String names the alternative as scipy.stats does.
func (a Alternative) String() string {
	switch a {
	case TwoSided:
		return "two-sided"
	case Greater:
		return "greater"
	case Less:
		return "less"
	}
	return fmt.Sprintf("Alternative(%d)", int(a))
}

func (a Alternative) validate() error {
	switch a {
	case TwoSided, Greater, Less:
		return nil
	}
	return fmt.Errorf("stats: unknown alternative %d", int(a))
}

// NormalSF is the standard normal survival function P(Z > z), accurate in
// the far tail (it uses erfc rather than 1-CDF).
func NormalSF(z float64) float64 {
	return 0.5 * math.Erfc(z/math.Sqrt2)
}

// NormalCDF is the standard normal distribution function P(Z ≤ z).
func NormalCDF(z float64) float64 {
	return 0.5 * math.Erfc(-z/math.Sqrt2)
}

// pFromZ turns a z statistic into a p-value for alt.
func pFromZ(z float64, alt Alternative) float64 {
	switch alt {
	case Greater:
		return NormalSF(z)
	case Less:
		return NormalCDF(z)
	default:
		return min(1, 2*NormalSF(math.Abs(z)))
	}
}

// checkCount reports a count that is not a finite non-negative number.
func checkCount(what string, v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return fmt.Errorf("stats: %s is %v, want a finite count ≥ 0", what, v)
	}
	return nil
}
