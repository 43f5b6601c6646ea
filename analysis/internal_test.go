package analysis

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/sluicehq/sluice/mesh/telemetry"
)

// hist builds buckets from (bound, count) pairs.
func hist(pairs ...float64) []telemetry.Bucket {
	var out []telemetry.Bucket
	for i := 0; i+1 < len(pairs); i += 2 {
		out = append(out, telemetry.Bucket{LE: pairs[i], Count: pairs[i+1]})
	}
	return out
}

func TestCommonBins(t *testing.T) {
	inf := math.Inf(1)
	tests := []struct {
		name    string
		a, b    []telemetry.Bucket
		wantA   []float64
		wantB   []float64
		wantErr string
	}{
		{
			name:  "same bounds",
			a:     hist(5, 1, 10, 4, inf, 6),
			b:     hist(5, 0, 10, 2, inf, 2),
			wantA: []float64{1, 3, 2},
			wantB: []float64{0, 2, 0},
		},
		{
			// b lacks 10 and has 20: bins become [0,5], (5,+Inf].
			name:  "coarsened to shared bounds",
			a:     hist(5, 1, 10, 4, inf, 6),
			b:     hist(5, 3, 20, 5, inf, 9),
			wantA: []float64{1, 5},
			wantB: []float64{3, 6},
		},
		{
			name:  "decreasing counts smoothed",
			a:     hist(5, 4, 10, 3, inf, 6),
			b:     hist(5, 1, 10, 1, inf, 1),
			wantA: []float64{4, 0, 2},
			wantB: []float64{1, 0, 0},
		},
		{name: "empty", a: nil, b: hist(inf, 1), wantErr: "a latency histogram is empty"},
		{name: "no +Inf", a: hist(inf, 1), b: hist(5, 1), wantErr: "a latency histogram has no +Inf bucket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b, err := commonBins(tt.a, tt.b)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(a) != fmt.Sprint(tt.wantA) || fmt.Sprint(b) != fmt.Sprint(tt.wantB) {
				t.Errorf("got %v, %v; want %v, %v", a, b, tt.wantA, tt.wantB)
			}
		})
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Minute:                   "1m",
		30 * time.Second:              "30s",
		90 * time.Second:              "1m30s",
		time.Hour:                     "1h",
		time.Hour + time.Minute:       "1h1m",
		10 * time.Minute:              "10m",
		1500 * time.Millisecond:       "1.5s",
		time.Hour + 30*time.Second:    "1h0m30s",
		2*time.Hour + 10*time.Minute:  "2h10m",
		100*time.Minute + time.Second: "1h40m1s",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestFormatAgainst(t *testing.T) {
	tests := []struct {
		v, bound float64
		decimals int
		want     string
	}{
		{91.3, 99, 1, "91.3"},
		{99.0, 99.5, 1, "99"},
		{99.95, 99.96, 1, "99.95"},
		{99.96, 99.95, 1, "100"}, // 100 is still above 99.95
		{500.2, 500, 0, "500.2"},
		{512.19, 500, 0, "512"},
		{99.9999999, 100, 1, "100"}, // gives up after 6 decimals
		{-0.01, 0, 0, "-0.01"},
	}
	for _, tt := range tests {
		if got := formatAgainst(tt.v, tt.bound, tt.decimals); got != tt.want {
			t.Errorf("formatAgainst(%v, %v, %d) = %q, want %q", tt.v, tt.bound, tt.decimals, got, tt.want)
		}
	}
	if got := formatNumber(-0.0001, 2); got != "0" {
		t.Errorf("formatNumber(-0.0001, 2) = %q", got)
	}
	if got := formatP(0.05567); got != "0.056" {
		t.Errorf("formatP = %q", got)
	}
}
