package stats

import (
	"math"
	"math/rand/v2"
	"testing"
)

// Reference values below were computed with SciPy 1.10.1 (Debian's
// python3-scipy), by the calls quoted next to each case, or by hand where
// noted.

// approx reports whether got is within a relative tolerance of want (or an
// absolute one near zero).
func approx(got, want float64) bool {
	if got == want {
		return true
	}
	return math.Abs(got-want) <= 1e-9*math.Max(math.Abs(want), 1e-300) || math.Abs(got-want) < 1e-15
}

func TestNormal(t *testing.T) {
	tests := []struct {
		z, sf float64
	}{
		// scipy.stats.norm.sf(z); well-known table values.
		{0, 0.5},
		{1.6448536269514722, 0.05},
		{1.959963984540054, 0.025},
		{-1.959963984540054, 0.975},
		{10, 7.619853024160527e-24},
	}
	for _, tt := range tests {
		if got := NormalSF(tt.z); !approx(got, tt.sf) {
			t.Errorf("NormalSF(%v) = %v, want %v", tt.z, got, tt.sf)
		}
		if got := NormalCDF(-tt.z); !approx(got, tt.sf) {
			t.Errorf("NormalCDF(%v) = %v, want %v", -tt.z, got, tt.sf)
		}
	}
}

func TestMannWhitneyUSamples(t *testing.T) {
	// scipy's documentation example (mannwhitneyu: male and female ages).
	males := []float64{19, 22, 16, 29, 24}
	females := []float64{20, 11, 17, 12}
	// Ties across and within samples.
	x := []float64{1, 2, 2, 3, 3, 3, 4}
	y := []float64{2, 3, 3, 4, 4, 5, 5, 5}
	tests := []struct {
		name  string
		x, y  []float64
		alt   Alternative
		u, p  float64
		delta float64
	}{
		// mannwhitneyu(males, females, method="asymptotic", alternative=alt)
		{"docs two-sided", males, females, TwoSided, 17, 0.11134688653314041, 0.7},
		{"docs greater", males, females, Greater, 17, 0.055673443266570206, 0.7},
		{"docs less", males, females, Less, 17, 0.9669037101389033, 0.7},
		// mannwhitneyu(x, y, method="asymptotic", alternative=alt); U by hand:
		// 11 = Σ over x of (y below) + ½(y equal): 0+.5+.5+2+2+2+4.
		{"ties two-sided", x, y, TwoSided, 11, 0.049238967838553395, 2*11.0/56 - 1},
		{"ties greater", x, y, Greater, 11, 0.9814970702168354, 2*11.0/56 - 1},
		{"ties less", x, y, Less, 11, 0.024619483919276697, 2*11.0/56 - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := MannWhitneyUSamples(tt.x, tt.y, tt.alt)
			if err != nil {
				t.Fatal(err)
			}
			if r.U != tt.u || !approx(r.P, tt.p) || !approx(r.CliffsDelta, tt.delta) {
				t.Errorf("got U=%v p=%v delta=%v, want U=%v p=%v delta=%v", r.U, r.P, r.CliffsDelta, tt.u, tt.p, tt.delta)
			}
			if r.N1 != float64(len(tt.x)) || r.N2 != float64(len(tt.y)) {
				t.Errorf("sizes %v, %v; want %d, %d", r.N1, r.N2, len(tt.x), len(tt.y))
			}
		})
	}
}

func TestMannWhitneyUBinned(t *testing.T) {
	// Two latency histograms on Linkerd's bounds up to 1000 ms (counts per
	// bucket). Reference: mannwhitneyu(np.repeat(np.arange(16), a),
	// np.repeat(np.arange(16), b), method="asymptotic", alternative=alt).
	a := []float64{0, 0, 0, 1, 3, 10, 25, 30, 12, 8, 5, 2, 1, 0, 0, 1}
	b := []float64{0, 1, 2, 4, 8, 20, 30, 20, 6, 3, 3, 1, 0, 0, 0, 0}
	tests := []struct {
		alt Alternative
		p   float64
	}{
		{TwoSided, 2.149071715304427e-05},
		{Greater, 1.0745358576522136e-05},
		{Less, 0.9999893774673206},
	}
	for _, tt := range tests {
		t.Run(tt.alt.String(), func(t *testing.T) {
			r, err := MannWhitneyU(a, b, tt.alt)
			if err != nil {
				t.Fatal(err)
			}
			if r.U != 6452.5 || !approx(r.P, tt.p) {
				t.Errorf("got U=%v p=%v, want U=6452.5 p=%v", r.U, r.P, tt.p)
			}
			if r.N1 != 98 || r.N2 != 98 {
				t.Errorf("sizes %v, %v; want 98, 98", r.N1, r.N2)
			}
		})
	}
}

func TestMannWhitneyUEdges(t *testing.T) {
	tests := []struct {
		name    string
		x, y    []float64
		wantErr bool
		p       float64
		delta   float64
	}{
		// mannwhitneyu([1]*50, [1]*70, alternative="less", method="asymptotic")
		{name: "all tied in one bin", x: []float64{0, 50, 0}, y: []float64{0, 70, 0}, p: 1, delta: 0},
		// mannwhitneyu([0], [1], alternative="less", method="asymptotic")
		{name: "single observations", x: []float64{1, 0}, y: []float64{0, 1}, p: 0.5, delta: -1},
		// Complete separation, U = 0: mannwhitneyu([0]*30, [1]*30,
		// alternative="less", method="asymptotic").
		{name: "separated", x: []float64{30, 0}, y: []float64{0, 30}, p: 8.426490974463215e-15, delta: -1},
		{name: "length mismatch", x: []float64{1, 2}, y: []float64{1}, wantErr: true},
		{name: "empty first", x: []float64{0, 0}, y: []float64{1, 2}, wantErr: true},
		{name: "empty both", x: nil, y: nil, wantErr: true},
		{name: "negative", x: []float64{-1, 2}, y: []float64{1, 2}, wantErr: true},
		{name: "NaN", x: []float64{math.NaN(), 2}, y: []float64{1, 2}, wantErr: true},
		{name: "Inf", x: []float64{1, 2}, y: []float64{math.Inf(1), 2}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := MannWhitneyU(tt.x, tt.y, Less)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("want an error, got %+v", r)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !approx(r.P, tt.p) || !approx(r.CliffsDelta, tt.delta) {
				t.Errorf("got p=%v delta=%v, want p=%v delta=%v", r.P, r.CliffsDelta, tt.p, tt.delta)
			}
		})
	}
	if _, err := MannWhitneyU([]float64{1}, []float64{1}, Alternative(7)); err == nil {
		t.Error("unknown alternative accepted")
	}
	if _, err := MannWhitneyUSamples([]float64{1, math.NaN()}, []float64{1}, Greater); err == nil {
		t.Error("NaN sample accepted")
	}
}

// TestMannWhitneyUCalibration draws both samples from one distribution: the
// test must reject at about alpha (generous bound), and must reject nearly
// always when one sample is shifted.
func TestMannWhitneyUCalibration(t *testing.T) {
	const trials, alpha = 200, 0.05
	rng := rand.New(rand.NewPCG(1, 2))
	draw := func(shift float64) []float64 {
		h := make([]float64, 12)
		for range 100 {
			v := math.Exp(rng.NormFloat64()*0.5+2) + shift // lognormal around 7 ms
			i := min(int(v/4), len(h)-1)                   // 4 ms bins
			h[i]++
		}
		return h
	}
	var same, shifted int
	for range trials {
		if r, err := MannWhitneyU(draw(0), draw(0), Greater); err != nil {
			t.Fatal(err)
		} else if r.P < alpha {
			same++
		}
		if r, err := MannWhitneyU(draw(4), draw(0), Greater); err != nil {
			t.Fatal(err)
		} else if r.P < alpha {
			shifted++
		}
	}
	if rate := float64(same) / trials; rate > 2.5*alpha {
		t.Errorf("false-positive rate %v with alpha %v", rate, alpha)
	}
	if rate := float64(shifted) / trials; rate < 0.9 {
		t.Errorf("power %v against a 4 ms shift, want ≥ 0.9", rate)
	}
}

func TestTwoProportionZ(t *testing.T) {
	tests := []struct {
		name           string
		x1, n1, x2, n2 float64
		alt            Alternative
		// z2 is z², checked against scipy.stats.chi2_contingency(
		// [[x1, n1-x1], [x2, n2-x2]], correction=False) whose statistic
		// equals it; p is that call's p-value (two-sided) or half of it.
		z2, p float64
	}{
		{"10% vs 0%", 100, 1000, 0, 1000, Greater, 105.26315789473685, 1.0694621986423894e-24 / 2},
		{"1.5% vs 1%", 15, 1000, 10, 1000, Greater, 1.0126582278481013, 0.15713342553869958},
		{"1.5% vs 1% two-sided", 15, 1000, 10, 1000, TwoSided, 1.0126582278481013, 0.31426685107739916},
		{"15% vs 8% two-sided", 30, 200, 20, 250, TwoSided, 5.5125, 0.018881040156098833},
		{"15% vs 8% less", 30, 200, 20, 250, Less, 5.5125, 1 - 0.009440520078049417},
		{"no failures anywhere", 0, 500, 0, 700, Greater, 0, 1},
		{"all failures", 20, 20, 30, 30, Greater, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := TwoProportionZ(tt.x1, tt.n1, tt.x2, tt.n2, tt.alt)
			if err != nil {
				t.Fatal(err)
			}
			if !approx(r.Z*r.Z, tt.z2) || math.Abs(r.P-tt.p) > 1e-9*max(tt.p, 1e-30) {
				t.Errorf("got z²=%v p=%v, want z²=%v p=%v", r.Z*r.Z, r.P, tt.z2, tt.p)
			}
			if r.P1 != tt.x1/tt.n1 || r.P2 != tt.x2/tt.n2 {
				t.Errorf("proportions %v, %v", r.P1, r.P2)
			}
		})
	}
	for _, bad := range [][4]float64{{1, 0, 1, 10}, {11, 10, 1, 10}, {1, 10, 11, 10}, {-1, 10, 1, 10}, {math.NaN(), 10, 1, 10}, {1, math.Inf(1), 1, 10}} {
		if _, err := TwoProportionZ(bad[0], bad[1], bad[2], bad[3], Greater); err == nil {
			t.Errorf("TwoProportionZ%v: no error", bad)
		}
	}
}

func TestFisherExact(t *testing.T) {
	tests := []struct {
		table [4]int64
		alt   Alternative
		p     float64
	}{
		// scipy.stats.fisher_exact(table, alternative=alt)[1]
		{[4]int64{6, 2, 1, 4}, TwoSided, 0.10256410256410256},
		{[4]int64{6, 2, 1, 4}, Greater, 0.08624708624708625},
		{[4]int64{6, 2, 1, 4}, Less, 0.9953379953379954},
		{[4]int64{8, 2, 1, 5}, TwoSided, 0.034965034965034975},
		{[4]int64{8, 2, 1, 5}, Greater, 0.024475524475524483},
		{[4]int64{8, 2, 1, 5}, Less, 0.9991258741258742},
		{[4]int64{3, 997, 0, 1000}, TwoSided, 0.24962481240620307},
		{[4]int64{3, 997, 0, 1000}, Greater, 0.12481240620310154},
		{[4]int64{3, 997, 0, 1000}, Less, 1},
		{[4]int64{12, 988, 2, 998}, TwoSided, 0.012641030596819505},
		{[4]int64{12, 988, 2, 998}, Greater, 0.006320515298409752},
		{[4]int64{12, 988, 2, 998}, Less, 0.999114715672939},
		// By hand: [[1 0] [0 1]] greater is P(A ≥ 1) = 1/C(2,1) = 0.5.
		{[4]int64{1, 0, 0, 1}, Greater, 0.5},
		// One table only (a zero margin).
		{[4]int64{0, 10, 0, 20}, Greater, 1},
	}
	for _, tt := range tests {
		a, b, c, d := tt.table[0], tt.table[1], tt.table[2], tt.table[3]
		p, err := FisherExact(a, b, c, d, tt.alt)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(p-tt.p) > 1e-9*tt.p {
			t.Errorf("FisherExact(%v, %v) = %v, want %v", tt.table, tt.alt, p, tt.p)
		}
	}
	if _, err := FisherExact(-1, 1, 1, 1, Greater); err == nil {
		t.Error("negative cell accepted")
	}
}

func TestAlternativeString(t *testing.T) {
	for alt, want := range map[Alternative]string{TwoSided: "two-sided", Greater: "greater", Less: "less", 9: "Alternative(9)"} {
		if got := alt.String(); got != want {
			t.Errorf("%d: %q, want %q", int(alt), got, want)
		}
	}
}
