package stats

import (
	"fmt"
	"math"
)

// TwoProportion is the outcome of a pooled two-proportion z-test.
type TwoProportion struct {
	// P1 and P2 are the observed proportions x1/n1 and x2/n2.
	P1, P2 float64
	// Z is (P1 − P2) / SE with the pooled standard error; 0 when SE is 0.
	Z float64
	// P is the p-value for the alternative (normal approximation).
	P float64
}

// TwoProportionZ tests whether the proportion x1/n1 differs from x2/n2 (for
// alt Greater: whether the first is larger), pooling both samples for the
// standard error, as statsmodels' proportions_ztest(prop_var=False) does.
// Counts may be fractional. When the pooled proportion is 0 or 1 the
// samples agree perfectly: Z is 0 and P is 1.
//
// It fails when a count is negative, NaN or infinite, when a sample size is
// 0, or when a count of successes exceeds its sample size.
func TwoProportionZ(x1, n1, x2, n2 float64, alt Alternative) (TwoProportion, error) {
	if err := alt.validate(); err != nil {
		return TwoProportion{}, err
	}
	if err := checkTwoSamples(x1, n1, x2, n2); err != nil {
		return TwoProportion{}, err
	}
	r := TwoProportion{P1: x1 / n1, P2: x2 / n2}
	pool := (x1 + x2) / (n1 + n2)
	se := math.Sqrt(pool * (1 - pool) * (1/n1 + 1/n2))
	if !(se > 0) {
		r.P = 1
		return r, nil
	}
	r.Z = (r.P1 - r.P2) / se
	r.P = pFromZ(r.Z, alt)
	return r, nil
}

func checkTwoSamples(x1, n1, x2, n2 float64) error {
	for _, c := range []struct {
		what string
		v    float64
	}{{"x1", x1}, {"n1", n1}, {"x2", x2}, {"n2", n2}} {
		if err := checkCount(c.what, c.v); err != nil {
			return err
		}
	}
	switch {
	case n1 == 0 || n2 == 0:
		return fmt.Errorf("stats: empty sample (n1=%v, n2=%v)", n1, n2)
	case x1 > n1:
		return fmt.Errorf("stats: x1=%v exceeds n1=%v", x1, n1)
	case x2 > n2:
		return fmt.Errorf("stats: x2=%v exceeds n2=%v", x2, n2)
	}
	return nil
}

// FisherExact returns the p-value of Fisher's exact test on the 2×2 table
//
//	a b
//	c d
//
// for alt, as scipy.stats.fisher_exact(table, alternative=alt) does: Greater
// asks whether the first row's odds a/b exceed the second row's c/d, i.e.
// P(A ≥ a) for A hypergeometric with the table's margins; Less is P(A ≤ a);
// TwoSided sums the probabilities of every table no more likely than the
// observed one. Its cost grows with the smallest of the table's margins.
func FisherExact(a, b, c, d int64, alt Alternative) (float64, error) {
	if err := alt.validate(); err != nil {
		return 0, err
	}
	if a < 0 || b < 0 || c < 0 || d < 0 {
		return 0, fmt.Errorf("stats: fisher: negative cell in [[%d %d] [%d %d]]", a, b, c, d)
	}
	row1, col1, n := a+b, a+c, a+b+c+d
	lo, hi := max(0, row1+col1-n), min(row1, col1)
	if lo == hi { // Only one table has these margins.
		return 1, nil
	}
	logPMF := hypergeomLogPMF(row1, col1, n)
	switch alt {
	case Greater:
		return min(1, sumExp(logPMF, a, hi, logPMF(a))), nil
	case Less:
		return min(1, sumExp(logPMF, lo, a, logPMF(a))), nil
	}
	// Two-sided: tables at most as likely as the observed one, with scipy's
	// relative tolerance so that ties in probability are counted.
	observed := logPMF(a)
	const relErr = 1 + 1e-7
	limit := observed + math.Log(relErr)
	var sum float64
	for k := lo; k <= hi; k++ {
		if lp := logPMF(k); lp <= limit {
			sum += math.Exp(lp - observed)
		}
	}
	return min(1, sum*math.Exp(observed)), nil
}

// hypergeomLogPMF returns log P(A = k) for A the count of the first row in
// the first column, given the row total row1, column total col1 and grand
// total n.
func hypergeomLogPMF(row1, col1, n int64) func(k int64) float64 {
	lchoose := func(n, k int64) float64 {
		a, _ := math.Lgamma(float64(n + 1))
		b, _ := math.Lgamma(float64(k + 1))
		c, _ := math.Lgamma(float64(n - k + 1))
		return a - b - c
	}
	denom := lchoose(n, row1)
	return func(k int64) float64 {
		return lchoose(col1, k) + lchoose(n-col1, row1-k) - denom
	}
}

// sumExp returns Σ exp(logPMF(k)) for k in [from, to], scaled around ref to
// keep the sum accurate when the terms are tiny.
func sumExp(logPMF func(int64) float64, from, to int64, ref float64) float64 {
	var sum float64
	for k := from; k <= to; k++ {
		sum += math.Exp(logPMF(k) - ref)
	}
	return sum * math.Exp(ref)
}
