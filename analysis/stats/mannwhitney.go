package stats

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// MannWhitney is the outcome of a Mann-Whitney U (Wilcoxon rank-sum) test of
// a first sample X against a second sample Y.
type MannWhitney struct {
	// N1 and N2 are the sizes of X and Y.
	N1, N2 float64
	// U is X's U statistic: the number of pairs (x, y) with x > y, plus half
	// the pairs that tie. It lies in [0, N1·N2].
	U float64
	// Z is the tie- and continuity-corrected normal statistic the p-value was
	// read from, oriented for the alternative: large Z is evidence for it.
	Z float64
	// P is the p-value for the alternative (normal approximation).
	P float64
	// CliffsDelta is P(X > Y) − P(X < Y) = 2U/(N1·N2) − 1, in [-1, 1]: the
	// effect size, 0 when neither sample tends to be larger, 1 when every x
	// exceeds every y.
	CliffsDelta float64
}

// MannWhitneyU tests binned samples: x[i] and y[i] are the numbers of
// observations of X and Y that fall in bin i, the bins being the same for both
// and ordered from smallest to largest values; observations in one bin are
// ties. This is exactly how two latency histograms with common bucket bounds
// look. Counts may be fractional (histograms aggregated over prorated time
// windows); the statistic is then computed as if the counts were integers.
//
// The p-value comes from the normal approximation with the tie correction
// and a continuity correction of 0.5, as scipy.stats.mannwhitneyu(x, y,
// alternative=alt, use_continuity=True, method="asymptotic") computes it.
// When every observation is tied (or there are fewer than two), the data
// carry no evidence of a difference: Z is 0 and P is 1.
//
// It fails when the bin counts differ in length, when a count is negative,
// NaN or infinite, or when either sample is empty.
func MannWhitneyU(x, y []float64, alt Alternative) (MannWhitney, error) {
	if err := alt.validate(); err != nil {
		return MannWhitney{}, err
	}
	if len(x) != len(y) {
		return MannWhitney{}, fmt.Errorf("stats: mann-whitney: %d bins for the first sample, %d for the second", len(x), len(y))
	}
	var r MannWhitney
	var below float64 // Y's observations in bins lower than the current one
	var tieTerm float64
	for i := range x {
		if err := checkCount(fmt.Sprintf("first sample's bin %d", i), x[i]); err != nil {
			return MannWhitney{}, err
		}
		if err := checkCount(fmt.Sprintf("second sample's bin %d", i), y[i]); err != nil {
			return MannWhitney{}, err
		}
		r.U += x[i] * (below + y[i]/2)
		below += y[i]
		r.N1 += x[i]
		t := x[i] + y[i]
		tieTerm += t*t*t - t
	}
	r.N2 = below
	if r.N1 <= 0 || r.N2 <= 0 {
		return MannWhitney{}, fmt.Errorf("stats: mann-whitney: empty sample (sizes %v and %v)", r.N1, r.N2)
	}
	nn := r.N1 * r.N2
	r.CliffsDelta = 2*r.U/nn - 1
	n := r.N1 + r.N2
	mu := nn / 2
	variance := 0.0
	if n > 1 {
		variance = nn / 12 * ((n + 1) - tieTerm/(n*(n-1)))
	}
	// Rounding can leave a tiny positive variance when every observation is
	// in one bin; treat anything below a sliver of the untied variance as 0.
	if !(variance > 1e-9*nn/12*(n+1)) {
		r.P = 1
		return r, nil
	}
	s := math.Sqrt(variance)
	switch alt {
	case Greater:
		r.Z = (r.U - mu - 0.5) / s
	case Less:
		r.Z = (nn - r.U - mu - 0.5) / s
	default:
		r.Z = (max(r.U, nn-r.U) - mu - 0.5) / s
	}
	r.P = pFromZ(r.Z, Greater)
	if alt == TwoSided {
		r.P = min(1, 2*r.P)
	}
	return r, nil
}

// MannWhitneyUSamples tests raw samples: it bins every distinct value of x
// and y and calls MannWhitneyU. NaN values are refused.
func MannWhitneyUSamples(x, y []float64, alt Alternative) (MannWhitney, error) {
	bx, by, err := BinSamples(x, y)
	if err != nil {
		return MannWhitney{}, err
	}
	return MannWhitneyU(bx, by, alt)
}

// BinSamples turns two raw samples into counts over their common sorted
// distinct values, the input MannWhitneyU takes.
func BinSamples(x, y []float64) (bx, by []float64, err error) {
	all := make([]float64, 0, len(x)+len(y))
	all = append(all, x...)
	all = append(all, y...)
	if slices.ContainsFunc(all, math.IsNaN) {
		return nil, nil, errors.New("stats: sample holds NaN")
	}
	slices.Sort(all)
	values := slices.Compact(all)
	bx = make([]float64, len(values))
	by = make([]float64, len(values))
	for _, v := range x {
		i, _ := slices.BinarySearch(values, v)
		bx[i]++
	}
	for _, v := range y {
		i, _ := slices.BinarySearch(values, v)
		by[i]++
	}
	return bx, by, nil
}
