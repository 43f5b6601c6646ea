package canary

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/sluicehq/sluice/analysis"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// fuzzBytes hands out values from the fuzzer's bytes, zeros when they run
// out.
type fuzzBytes struct{ b []byte }

func (f *fuzzBytes) byte() byte {
	if len(f.b) == 0 {
		return 0
	}
	v := f.b[0]
	f.b = f.b[1:]
	return v
}

func (f *fuzzBytes) bool() bool       { return f.byte()&1 == 1 }
func (f *fuzzBytes) intn(n int) int   { return int(f.byte()) % n }
func (f *fuzzBytes) signed(n int) int { return int(int8(f.byte())) % n }

func pick[T any](f *fuzzBytes, xs ...T) T { return xs[f.intn(len(xs))] }

func (f *fuzzBytes) rev() string { return pick(f, "", "r1", "r2", "r3") }
func (f *fuzzBytes) float() float64 {
	return pick(f, 0, 99.5, 91.3, -1, math.NaN(), math.Inf(1), math.Inf(-1), 1e308)
}

func (f *fuzzBytes) workload() Workload {
	return Workload{Exists: f.byte()%8 != 0, Revision: f.rev(), Ready: f.bool(), Replicas: int32(f.signed(5)), Message: pick(f, "", "x")}
}

var fuzzHookTypes = append([]v1beta1.HookType{""}, v1beta1.HookTypes...)

func fuzzCanary(f *fuzzBytes) *v1beta1.Canary {
	mods := []func(*v1beta1.Canary){}
	switch f.intn(6) {
	case 1:
		mods = append(mods, abTesting(1+f.intn(4)))
	case 2:
		mods = append(mods, blueGreen(1+f.intn(4), f.bool()))
	case 3:
		mods = append(mods, func(c *v1beta1.Canary) {
			c.Spec.Analysis.StepWeight, c.Spec.Analysis.MaxWeight = 0, 0
			c.Spec.Analysis.StepWeights = []int{f.signed(120), f.signed(120), f.signed(120)}
		})
	case 4:
		mods = append(mods, func(c *v1beta1.Canary) { c.Spec.SkipAnalysis = true })
	case 5:
		mods = append(mods, func(c *v1beta1.Canary) { c.Spec.Analysis.StepWeight = f.signed(120) })
	}
	for range f.intn(4) {
		mods = append(mods, hook(pick(f, fuzzHookTypes...), pick(f, "a", "b")))
	}
	mods = append(mods, func(c *v1beta1.Canary) {
		a := c.Spec.Analysis
		a.Mirror = a.Mirror || f.bool()
		a.StepWeightPromotion = f.intn(101)
		a.Threshold = f.intn(7)
		a.NoDataPolicy = pick(f, "", v1beta1.NoDataHold, v1beta1.NoDataFail)
		a.WindowPolicy = pick(f, "", v1beta1.WindowHold, v1beta1.WindowFinish)
		if f.byte()%8 == 0 {
			a.Metrics = nil
		}
		c.Spec.Suspend = f.byte()%16 == 0
		if f.byte()%16 == 0 {
			c.Spec.ProgressDeadlineSeconds = ptr(int32(f.signed(100)))
		}
	})
	return newCanary(mods...)
}

func fuzzStatus(f *fuzzBytes) v1beta1.CanaryStatus {
	phases := append([]v1beta1.CanaryPhase{"", "Bogus"}, v1beta1.Phases...)
	st := v1beta1.CanaryStatus{
		Phase:                pick(f, phases...),
		FailedChecks:         f.signed(10),
		CanaryWeight:         f.signed(128),
		Iterations:           f.signed(8),
		ObservedRevision:     f.rev(),
		LastPromotedRevision: f.rev(),
	}
	switch f.intn(4) {
	case 1:
		storeLedger(&st, ledger{
			StepAt:     t0.Add(time.Duration(f.signed(100)) * 10 * time.Second),
			ProgressAt: t0.Add(time.Duration(f.signed(100)) * time.Minute),
			Paused:     f.bool(),
			ManualAt:   t0.Add(time.Duration(f.signed(100)) * time.Second),
			ManualKind: pick(f, "", ManualPromote, ManualAbort, ManualRetry, ManualPause, ManualResume, "x"),
		})
	}
	return st
}

func fuzzObservation(f *fuzzBytes) Observation {
	o := Observation{
		Now:           t0.Add(time.Duration(f.signed(100)) * 37 * time.Second),
		Target:        f.workload(),
		Primary:       f.workload(),
		ServicesReady: f.bool(),
		Route: Route{
			Exists: f.bool(), Accepted: f.bool(),
			PrimaryWeight: f.signed(128), CanaryWeight: f.signed(128),
			Mirrored: f.bool(), Matched: f.bool(),
		},
	}
	if f.byte()%16 == 0 {
		o.Now = time.Time{}
	}
	if f.bool() {
		o.Analysis = &AnalysisResults{}
		for range f.intn(4) {
			r := analysis.Result{
				Name:    pick(f, "request-success-rate", "request-duration", ""),
				Verdict: pick(f, analysis.Pass, analysis.Fail, analysis.NoData, analysis.Error, "weird"),
				Value:   f.float(),
				Message: pick(f, "", "m"),
			}
			if f.bool() {
				r.Min = ptr(f.float())
			}
			if f.bool() {
				r.Max = ptr(f.float())
			}
			o.Analysis.Results = append(o.Analysis.Results, r)
		}
	}
	if f.bool() {
		o.Gates = map[v1beta1.HookType]GateAnswer{}
		for range f.intn(4) {
			t := pick(f, fuzzHookTypes...)
			g := o.Gates[t]
			g.Answers = append(g.Answers, HookAnswer{Name: pick(f, "a", "b", ""), OK: f.bool(), Message: pick(f, "", "no", string(make([]byte, 300)))})
			o.Gates[t] = g
		}
	}
	if f.byte()%4 == 0 {
		o.Manual = &ManualAction{
			Kind:        pick(f, ManualPromote, ManualAbort, ManualRetry, ManualPause, ManualResume, "", "x"),
			RequestedAt: t0.Add(time.Duration(f.signed(100)) * time.Second),
		}
	}
	if f.byte()%16 == 0 {
		o.Conflict = "other"
	}
	if f.byte()%4 == 0 {
		o.InWindow = ptr(f.bool())
	}
	return o
}

// FuzzStep checks that Step never panics and keeps its promises on any
// status and observation: weights that add up to 100, at most one requeue
// and last, a status that can be persisted, a canary left untouched.
func FuzzStep(f *testing.F) {
	for _, seed := range [][]byte{
		nil,
		{0, 0, 0, 0},
		[]byte("progressing with analysis"),
		{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30},
		{255, 254, 253, 252, 251, 250, 249, 248, 247, 246, 245, 244, 243, 242, 241, 240, 239, 238, 237, 236},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fb := &fuzzBytes{b: data}
		c := fuzzCanary(fb)
		c.Status = fuzzStatus(fb)
		obs := fuzzObservation(fb)
		before, _ := json.Marshal(c)

		st, acts := Step(c, obs)

		if after, _ := json.Marshal(c); string(after) != string(before) {
			t.Fatalf("Step modified the canary")
		}
		for i, a := range acts {
			switch a := a.(type) {
			case nil:
				t.Fatalf("nil action")
			case SetWeights:
				if a.Primary < 0 || a.Canary < 0 || a.Primary+a.Canary != 100 {
					t.Fatalf("SetWeights %+v", a)
				}
			case Requeue:
				if i != len(acts)-1 || a.After <= 0 {
					t.Fatalf("requeue %v at %d of %d", a.After, i, len(acts))
				}
			case CallHook:
				if a.Type == "" || a.Name == "" {
					t.Fatalf("CallHook %+v", a)
				}
			}
		}
		if _, err := json.Marshal(st); err != nil {
			t.Fatalf("status does not marshal: %v", err)
		}
		if st.CanaryWeight != c.Status.CanaryWeight && (st.CanaryWeight < 0 || st.CanaryWeight > 100) {
			t.Fatalf("weight set to %d", st.CanaryWeight)
		}
		// Again with what it returned: still no panic, a requeue still last.
		c.Status = st
		_, acts = Step(c, obs)
		for i, a := range acts {
			if _, ok := a.(Requeue); ok && i != len(acts)-1 {
				t.Fatalf("second call: requeue at %d of %d", i, len(acts))
			}
		}
	})
}
