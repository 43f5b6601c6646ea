package route

import (
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"testing"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

// seeded returns a deterministic random source.
func seeded(seed uint64) func() uint64 {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return r.Uint64
}

// fixedRand always returns v.
func fixedRand(v uint64) func() uint64 { return func() uint64 { return v } }

func ruleWith(t testing.TB, backends ...routetable.Backend) *Rule {
	t.Helper()
	tb := mustTable(t, svcWith(routetable.Rule{Backends: backends}))
	return &tb.Rules()[0]
}

func TestPickDistribution(t *testing.T) {
	const draws = 100_000
	tests := []struct {
		name    string
		weights []uint32
		ready   func(string) bool
		want    []float64 // expected share per backend
	}{
		{"90/10", []uint32{90, 10}, nil, []float64{.9, .1}},
		{"1/99", []uint32{1, 99}, nil, []float64{.01, .99}},
		{"0/100", []uint32{0, 100}, nil, []float64{0, 1}},
		{"33/33/34", []uint32{33, 33, 34}, nil, []float64{.33, .33, .34}},
		{"70/30/0 conformance", []uint32{70, 30, 0}, nil, []float64{.7, .3, 0}},
		{"large weights", []uint32{1_000_000, 500_000, 1}, nil, []float64{1e6 / 1500001., 5e5 / 1500001., 1 / 1500001.}},
		{"unready skipped", []uint32{50, 25, 25}, func(k string) bool { return k != "b0" }, []float64{0, .5, .5}},
		{"unready with ready func, all ready", []uint32{90, 10}, func(string) bool { return true }, []float64{.9, .1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bs := make([]routetable.Backend, len(tt.weights))
			for i, w := range tt.weights {
				bs[i] = backend(fmt.Sprintf("b%d", i), w)
			}
			r := ruleWith(t, bs...)
			rnd := seeded(uint64(len(tt.name)))
			counts := make(map[string]int)
			for range draws {
				b, ok := r.PickBackend(tt.ready, rnd)
				if !ok {
					t.Fatal("PickBackend: ok=false")
				}
				counts[b.Service]++
			}
			for i, want := range tt.want {
				key := fmt.Sprintf("b%d", i)
				got := float64(counts[key]) / draws
				if want == 0 && counts[key] != 0 {
					t.Errorf("%s has weight 0 or is unready but got %d picks", key, counts[key])
				}
				if math.Abs(got-want) > 0.02 {
					t.Errorf("%s got %.4f of picks, want %.4f ± 0.02", key, got, want)
				}
			}
		})
	}
}

func TestPickSixteenBackends(t *testing.T) {
	const draws = 100_000
	bs := make([]routetable.Backend, 16)
	var total float64
	for i := range bs {
		w := uint32((i + 1) * 62_500) // up to 1,000,000
		bs[i] = backend(fmt.Sprintf("b%d", i), w)
		total += float64(w)
	}
	r := ruleWith(t, bs...)
	rnd := seeded(16)
	counts := make([]int, 16)
	for range draws {
		b, ok := r.PickBackend(func(string) bool { return true }, rnd)
		if !ok {
			t.Fatal("ok=false")
		}
		var i int
		fmt.Sscanf(b.Service, "b%d", &i)
		counts[i]++
	}
	for i, c := range counts {
		want := float64(*bs[i].Weight) / total
		if got := float64(c) / draws; math.Abs(got-want) > 0.02 {
			t.Errorf("b%d got %.4f, want %.4f", i, got, want)
		}
	}
}

// TestPickExact feeds draws spread evenly over the whole uint64 range: with total
// weight n and rnd = k·2^64/n the draw is exactly k, so every backend must get
// exactly its weight's worth of the n draws.
func TestPickExact(t *testing.T) {
	weights := []uint32{1, 0, 3, 2, 0, 4}
	bs := make([]routetable.Backend, len(weights))
	for i, w := range weights {
		bs[i] = backend(fmt.Sprintf("b%d", i), w)
	}
	r := ruleWith(t, bs...)
	const n = 10
	for _, ready := range []func(string) bool{nil, func(string) bool { return true }} {
		counts := make(map[string]int)
		var seq []string
		for k := range uint64(n) {
			// ceil(k·2^64/n) so that floor(rnd·n/2^64) == k.
			q, rem := bits.Div64(k, 0, n)
			if rem != 0 {
				q++
			}
			b, ok := r.PickBackend(ready, fixedRand(q))
			if !ok {
				t.Fatal("ok=false")
			}
			counts[b.Service]++
			seq = append(seq, b.Service)
		}
		want := "[b0 b2 b2 b2 b3 b3 b5 b5 b5 b5]"
		if got := fmt.Sprint(seq); got != want {
			t.Errorf("ready=%v: picks %s, want %s", ready != nil, got, want)
		}
	}
}

func TestPickNoneAvailable(t *testing.T) {
	none := func(string) bool { return false }
	tests := []struct {
		name     string
		backends []routetable.Backend
		ready    func(string) bool
		wantOK   bool
		want     string
	}{
		{"no backends", nil, nil, false, ""},
		{"no backends with ready", nil, none, false, ""},
		{"all zero", []routetable.Backend{backend("a", 0), backend("b", 0)}, nil, false, ""},
		{"all zero with ready", []routetable.Backend{backend("a", 0), backend("b", 0)}, func(string) bool { return true }, false, ""},
		{"single zero", []routetable.Backend{backend("a", 0)}, nil, false, ""},
		{"single unready", []routetable.Backend{backend("a")}, none, false, ""},
		{"all unready", []routetable.Backend{backend("a"), backend("b", 5)}, none, false, ""},
		{"only ready one has weight 0", []routetable.Backend{backend("a", 0), backend("b", 5)},
			func(k string) bool { return k == "a" }, false, ""},
		{"default weight is 1", []routetable.Backend{backend("a")}, nil, true, "a"},
		{"invalid backend is never skipped", []routetable.Backend{backend("", 1), backend("b", 5)}, none, true, ""},
		{"unready falls over to the ready one", []routetable.Backend{backend("a", 1000), backend("b", 1)},
			func(k string) bool { return k == "b" }, true, "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ruleWith(t, tt.backends...)
			for i := range 200 {
				b, ok := r.PickBackend(tt.ready, seeded(uint64(i)))
				if ok != tt.wantOK {
					t.Fatalf("ok=%v, want %v", ok, tt.wantOK)
				}
				if ok && b.Service != tt.want {
					t.Fatalf("picked %q, want %q", b.Service, tt.want)
				}
			}
		})
	}
}

func TestPickInvalidBackendKeepsItsShare(t *testing.T) {
	r := ruleWith(t, backend("", 1), backend("good", 1))
	rnd := seeded(3)
	invalid := 0
	for range 10_000 {
		b, ok := r.PickBackend(func(string) bool { return true }, rnd)
		if !ok {
			t.Fatal("ok=false")
		}
		if b.Service == "" {
			invalid++
		}
	}
	if invalid < 4500 || invalid > 5500 {
		t.Fatalf("invalid backend picked %d/10000 times, want about half", invalid)
	}
}

func TestPickManyBackendsBeyondStackBuffer(t *testing.T) {
	bs := make([]routetable.Backend, 100)
	for i := range bs {
		bs[i] = backend(fmt.Sprintf("b%d", i), 0)
	}
	bs[99] = backend("last", 1)
	r := ruleWith(t, bs...)
	b, ok := r.PickBackend(func(string) bool { return true }, seeded(1))
	if !ok || b.Service != "last" {
		t.Fatalf("picked %v %v", b, ok)
	}
}

func TestUniformDegenerateSourceTerminates(t *testing.T) {
	// A constant 0 is always in the rejection zone for n=3; the bound must stop it.
	if got := uniform(3, fixedRand(0)); got != 0 {
		t.Fatalf("uniform = %d", got)
	}
}

func TestMirrors(t *testing.T) {
	tests := []struct {
		name    string
		mirrors []routetable.Mirror
		want    map[string]float64 // expected firing share per backend
	}{
		{"none", nil, nil},
		{"default is all", []routetable.Mirror{{Backend: "m"}}, map[string]float64{"m": 1}},
		{"100/100", []routetable.Mirror{{Backend: "m", Numerator: 100, Denominator: 100}}, map[string]float64{"m": 1}},
		{"percent 25", []routetable.Mirror{{Backend: "m", Numerator: 25}}, map[string]float64{"m": .25}},
		{"fraction 1/3", []routetable.Mirror{{Backend: "m", Numerator: 1, Denominator: 3}}, map[string]float64{"m": 1. / 3}},
		{"zero never", []routetable.Mirror{{Backend: "m", Numerator: 0, Denominator: 100}}, map[string]float64{"m": 0}},
		{"two partial", []routetable.Mirror{
			{Backend: "a", Numerator: 50, Denominator: 100},
			{Backend: "b", Numerator: 10, Denominator: 100},
		}, map[string]float64{"a": .5, "b": .1}},
		{"one always one partial", []routetable.Mirror{
			{Backend: "a"},
			{Backend: "b", Numerator: 1, Denominator: 2},
		}, map[string]float64{"a": 1, "b": .5}},
	}
	const draws = 50_000
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := mustTable(t, svcWith(routetable.Rule{
				Backends: []routetable.Backend{backend("x")},
				Filters:  routetable.Filters{Mirrors: tt.mirrors},
			}))
			r := &tb.Rules()[0]
			rnd := seeded(7)
			counts := map[string]int{}
			for range draws {
				ms := r.Mirrors(rnd)
				seen := map[string]bool{}
				for _, m := range ms {
					if seen[m] {
						t.Fatalf("mirror %q returned twice in %v", m, ms)
					}
					seen[m] = true
					counts[m]++
				}
			}
			for k, want := range tt.want {
				got := float64(counts[k]) / draws
				if math.Abs(got-want) > 0.02 || (want == 0 && counts[k] > 0) || (want == 1 && counts[k] != draws) {
					t.Errorf("mirror %q fired %.4f, want %.4f", k, got, want)
				}
			}
			for k := range counts {
				if _, ok := tt.want[k]; !ok {
					t.Errorf("unexpected mirror %q", k)
				}
			}
		})
	}
}

func TestMirrorsNoAllocs(t *testing.T) {
	for _, ms := range [][]routetable.Mirror{nil, {{Backend: "m"}}, {{Backend: "m", Numerator: 1, Denominator: 2}}} {
		tb := mustTable(t, svcWith(routetable.Rule{Filters: routetable.Filters{Mirrors: ms}}))
		r := &tb.Rules()[0]
		rnd := seeded(1)
		if n := testing.AllocsPerRun(1000, func() { r.Mirrors(rnd) }); n != 0 {
			t.Errorf("Mirrors(%v) allocates %v times per call", ms, n)
		}
	}
}
