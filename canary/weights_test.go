package canary

import (
	"slices"
	"testing"

	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

func TestWeightSequence(t *testing.T) {
	tests := []struct {
		name string
		a    *v1beta1.CanaryAnalysis
		want []int
	}{
		{"nil analysis", nil, nil},
		{"no step", &v1beta1.CanaryAnalysis{MaxWeight: 50}, nil},
		{"stepWeight divides maxWeight", &v1beta1.CanaryAnalysis{StepWeight: 10, MaxWeight: 50}, []int{10, 20, 30, 40, 50}},
		{"no overshoot: 30 then clamp to 50", &v1beta1.CanaryAnalysis{StepWeight: 30, MaxWeight: 50}, []int{30, 50}},
		{"no overshoot: 20 to 50", &v1beta1.CanaryAnalysis{StepWeight: 20, MaxWeight: 50}, []int{20, 40, 50}},
		{"stepWeight equals maxWeight", &v1beta1.CanaryAnalysis{StepWeight: 50, MaxWeight: 50}, []int{50}},
		{"stepWeight over maxWeight clamps", &v1beta1.CanaryAnalysis{StepWeight: 60, MaxWeight: 50}, []int{50}},
		{"maxWeight unset means 100", &v1beta1.CanaryAnalysis{StepWeight: 25}, []int{25, 50, 75, 100}},
		{"maxWeight unset, 30 clamps at 100", &v1beta1.CanaryAnalysis{StepWeight: 30}, []int{30, 60, 90, 100}},
		{"maxWeight over 100 is 100", &v1beta1.CanaryAnalysis{StepWeight: 40, MaxWeight: 150}, []int{40, 80, 100}},
		{"seed guide: 5 to 50", &v1beta1.CanaryAnalysis{StepWeight: 5, MaxWeight: 50},
			[]int{5, 10, 15, 20, 25, 30, 35, 40, 45, 50}},
		{"stepWeights as written", &v1beta1.CanaryAnalysis{StepWeights: []int{1, 2, 10, 80}}, []int{1, 2, 10, 80}},
		{"stepWeights win over stepWeight", &v1beta1.CanaryAnalysis{StepWeight: 10, StepWeights: []int{5, 50}}, []int{5, 50}},
		{"stepWeights cut at explicit maxWeight", &v1beta1.CanaryAnalysis{StepWeights: []int{10, 50, 80}, MaxWeight: 50}, []int{10, 50}},
		{"stepWeights clamp to maxWeight between steps", &v1beta1.CanaryAnalysis{StepWeights: []int{10, 40, 80}, MaxWeight: 60}, []int{10, 40, 60}},
		{"stepWeights over 100 clamp", &v1beta1.CanaryAnalysis{StepWeights: []int{50, 150}}, []int{50, 100}},
		{"stepWeights not increasing are skipped", &v1beta1.CanaryAnalysis{StepWeights: []int{-5, 0, 10, 5, 10, 20}}, []int{10, 20}},
		{"negative stepWeight", &v1beta1.CanaryAnalysis{StepWeight: -10, MaxWeight: 50}, nil},
		{"iterations: A/B or blue/green", &v1beta1.CanaryAnalysis{Iterations: 10, StepWeight: 10}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := WeightSequence(tt.a)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("WeightSequence = %v, want %v", got, tt.want)
			}
			for i, w := range got {
				if w < 1 || w > 100 || i > 0 && w <= got[i-1] {
					t.Fatalf("WeightSequence = %v: not strictly increasing within 1-100", got)
				}
			}
		})
	}
}

// The sequence agrees with the API's own GetStepWeights wherever the API
// defines one (no maxWeight cutting stepWeights).
func TestWeightSequenceMatchesAPI(t *testing.T) {
	for _, a := range []v1beta1.CanaryAnalysis{
		{StepWeight: 10, MaxWeight: 50},
		{StepWeight: 30, MaxWeight: 50},
		{StepWeight: 7},
		{StepWeights: []int{1, 5, 25, 75}},
	} {
		c := &v1beta1.Canary{Spec: v1beta1.CanarySpec{Analysis: &a}}
		if got, want := WeightSequence(&a), c.GetStepWeights(); !slices.Equal(got, want) {
			t.Errorf("%+v: WeightSequence = %v, GetStepWeights = %v", a, got, want)
		}
	}
}

func TestWeightSeq(t *testing.T) {
	q := weightSeq{10, 20, 50}
	for _, tt := range []struct{ w, next, index int }{
		{0, 10, 0}, {10, 20, 1}, {15, 20, 0}, {20, 50, 2}, {50, 50, 3}, {70, 50, 0},
	} {
		if got := q.next(tt.w); got != tt.next {
			t.Errorf("next(%d) = %d, want %d", tt.w, got, tt.next)
		}
		if got := q.index(tt.w); got != tt.index {
			t.Errorf("index(%d) = %d, want %d", tt.w, got, tt.index)
		}
	}
	if got := (weightSeq{}).next(5); got != 0 {
		t.Errorf("empty next = %d, want 0", got)
	}
}
