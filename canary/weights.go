package canary

import "github.com/sluicehq/sluice/crds/sluice/v1beta1"

// totalWeight is the sum of the primary's and the canary's weights.
const totalWeight = 100

// WeightSequence returns the canary's weight at each step of a canary
// release, in order; the last is the weight at which the canary is
// promoted. It never overshoots maxWeight: stepWeight 30 with maxWeight 50
// gives 30, 50 (Flagger would go to 60), and stepWeights above an explicit
// maxWeight are cut there, maxWeight becoming the last step.
//
// stepWeights wins over stepWeight; without either, or for A/B testing and
// blue/green (iterations), it returns nil. Weights that are not increasing
// or out of 1-100 are left out, so the result is always strictly
// increasing within 1-100.
func WeightSequence(a *v1beta1.CanaryAnalysis) []int {
	if a == nil || a.Iterations > 0 {
		return nil
	}
	limit := totalWeight
	if a.MaxWeight > 0 && a.MaxWeight < totalWeight {
		limit = a.MaxWeight
	}
	var out []int
	last := 0
	if len(a.StepWeights) > 0 {
		for _, w := range a.StepWeights {
			if w <= last {
				continue
			}
			if w >= limit {
				return append(out, limit)
			}
			out = append(out, w)
			last = w
		}
		return out
	}
	if a.StepWeight <= 0 {
		return nil
	}
	for w := a.StepWeight; ; w += a.StepWeight {
		if w >= limit {
			return append(out, limit)
		}
		out = append(out, w)
	}
}

// weightSeq is a WeightSequence.
type weightSeq []int

// next returns the first weight of q above w, or the last of q when there
// is none (0 for an empty q).
func (q weightSeq) next(w int) int {
	for _, s := range q {
		if s > w {
			return s
		}
	}
	return q.max()
}

// max returns the last weight of q, the promotion weight; 0 when empty.
func (q weightSeq) max() int {
	if len(q) == 0 {
		return 0
	}
	return q[len(q)-1]
}

// index returns the 1-based position of w in q, or 0.
func (q weightSeq) index(w int) int {
	for i, s := range q {
		if s == w {
			return i + 1
		}
	}
	return 0
}
