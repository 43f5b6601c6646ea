package retry

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

func ms(n float64) routetable.Duration { return routetable.Duration(n * float64(time.Millisecond)) }

func TestNewPolicyErrors(t *testing.T) {
	tests := []struct {
		name    string
		r       routetable.Retry
		wantErr string // substring the error must name
	}{
		{"status too low", routetable.Retry{Codes: []int{503, 99}}, "99"},
		{"status too high", routetable.Retry{Codes: []int{600}}, "600"},
		{"range start out of bounds", routetable.Retry{CodeRanges: [][2]int{{42, 503}}}, "42"},
		{"range end out of bounds", routetable.Retry{CodeRanges: [][2]int{{500, 700}}}, "700"},
		{"range reversed", routetable.Retry{CodeRanges: [][2]int{{599, 500}}}, "599-500"},
		{"unknown gRPC name", routetable.Retry{GRPCCodes: []string{"unavailable", "flaky"}}, `"flaky"`},
		{"gRPC number too high", routetable.Retry{GRPCCodes: []string{"17"}}, `"17"`},
		{"gRPC number negative", routetable.Retry{GRPCCodes: []string{"-1"}}, `"-1"`},
		{"empty gRPC name", routetable.Retry{GRPCCodes: []string{""}}, `""`},
		{"negative attempts", routetable.Retry{Attempts: -1, Codes: []int{503}}, "-1"},
		{"negative backoff", routetable.Retry{Backoff: ms(-5)}, "-5ms"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewPolicy(&tc.r)
			if err == nil {
				t.Fatalf("NewPolicy(%+v) = %+v, want an error", tc.r, p)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q does not name %s", err, tc.wantErr)
			}
		})
	}
}

func TestNewPolicy(t *testing.T) {
	tests := []struct {
		name       string
		r          *routetable.Retry
		maxRetries int
		minBackoff time.Duration
		retryable  []int
		notRetry   []int
		grpc       []int
		notGRPC    []int
		wantNilPol bool
	}{
		{name: "nil", r: nil, wantNilPol: true, notRetry: []int{500, 503}, notGRPC: []int{14}},
		{
			name:       "codes with default limit",
			r:          &routetable.Retry{Codes: []int{503, 502}},
			maxRetries: 1, minBackoff: 25 * time.Millisecond,
			retryable: []int{502, 503}, notRetry: []int{500, 504, 200, 0, -1, 1000},
		},
		{
			name:       "ranges and codes",
			r:          &routetable.Retry{Codes: []int{429}, CodeRanges: [][2]int{{500, 599}, {100, 100}}, Attempts: 3, Backoff: ms(100)},
			maxRetries: 3, minBackoff: 100 * time.Millisecond,
			retryable: []int{100, 429, 500, 563, 599}, notRetry: []int{101, 428, 499, 600},
		},
		{
			name:       "gRPC codes only",
			r:          &routetable.Retry{GRPCCodes: []string{"unavailable", "DEADLINE_EXCEEDED", "resource_exhausted", "1"}},
			maxRetries: 1, minBackoff: 25 * time.Millisecond,
			grpc: []int{1, 4, 8, 14}, notGRPC: []int{0, 2, 13, 16, 17, -1},
			notRetry: []int{500, 503},
		},
		{
			name:       "attempts without codes",
			r:          &routetable.Retry{Attempts: 2},
			maxRetries: 2, minBackoff: 25 * time.Millisecond,
			notRetry: []int{500, 502, 503},
		},
		{
			name:       "nothing at all",
			r:          &routetable.Retry{},
			maxRetries: 0, minBackoff: 25 * time.Millisecond,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewPolicy(tc.r)
			if err != nil {
				t.Fatal(err)
			}
			if (p == nil) != tc.wantNilPol {
				t.Fatalf("policy = %v, want nil: %v", p, tc.wantNilPol)
			}
			if got := p.MaxRetries(); got != tc.maxRetries {
				t.Errorf("MaxRetries = %d, want %d", got, tc.maxRetries)
			}
			if got := p.MinBackoff(); got != tc.minBackoff {
				t.Errorf("MinBackoff = %v, want %v", got, tc.minBackoff)
			}
			for _, c := range tc.retryable {
				if !p.RetryableStatus(c) {
					t.Errorf("status %d not retryable", c)
				}
			}
			for _, c := range tc.notRetry {
				if p.RetryableStatus(c) {
					t.Errorf("status %d retryable", c)
				}
			}
			for _, c := range tc.grpc {
				if !p.RetryableGRPC(c) {
					t.Errorf("gRPC code %d not retryable", c)
				}
			}
			for _, c := range tc.notGRPC {
				if p.RetryableGRPC(c) {
					t.Errorf("gRPC code %d retryable", c)
				}
			}
		})
	}
}

func TestParseGRPCCode(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{"ok", 0},
		{"cancelled", 1},
		{"canceled", 1},
		{"CANCELLED", 1},
		{"unknown", 2},
		{"invalid-argument", 3},
		{"deadline-exceeded", 4},
		{"deadline_exceeded", 4},
		{"DEADLINE_EXCEEDED", 4},
		{"Deadline-Exceeded", 4},
		{"not-found", 5},
		{"already_exists", 6},
		{"permission-denied", 7},
		{"resource-exhausted", 8},
		{"failed-precondition", 9},
		{"aborted", 10},
		{"out-of-range", 11},
		{"unimplemented", 12},
		{"internal", 13},
		{"unavailable", 14},
		{" unavailable ", 14},
		{"data-loss", 15},
		{"unauthenticated", 16},
		{"0", 0},
		{"14", 14},
		{"16", 16},
	}
	for _, tc := range tests {
		got, err := ParseGRPCCode(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseGRPCCode(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "17", "-1", "99", "unavailable!", "deadline exceeded", "retry", "0x0e", "1.5"} {
		if got, err := ParseGRPCCode(bad); err == nil {
			t.Errorf("ParseGRPCCode(%q) = %d, want an error", bad, got)
		}
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		name    string
		backoff routetable.Duration
		rnd     float64
		want    []time.Duration // by retry 1, 2, ...
	}{
		{"default, no jitter", 0, 0, durs(25, 50, 100, 200, 250, 250)},
		{"default, half jitter", 0, 0.5, durs(37.5, 75, 150, 250, 250)},
		{"default, full jitter", 0, 0.999999, durs(49.999975, 99.99995, 199.9999, 250, 250)},
		{"100ms min: cap 1s", ms(100), 0, durs(100, 200, 400, 800, 1000, 1000)},
		{"100ms min, jitter", ms(100), 0.5, durs(150, 300, 600, 1000, 1000)},
		{"1ms min: cap is still 250ms", ms(1), 0, durs(1, 2, 4, 8, 16, 32, 64, 128, 250, 250)},
		{"2s min", ms(2000), 0.25, durs(2500, 5000, 10000, 20000, 20000)},
		{"rnd out of range is clamped", ms(10), 7, durs(20, 40, 80, 160, 250)},
		{"negative rnd is clamped", ms(10), -3, durs(10, 20, 40)},
		{"NaN rnd", ms(10), math.NaN(), durs(10, 20)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewPolicy(&routetable.Retry{Attempts: 10, Backoff: tc.backoff})
			if err != nil {
				t.Fatal(err)
			}
			for i, want := range tc.want {
				if got := p.Backoff(i+1, func() float64 { return tc.rnd }); got != want {
					t.Errorf("Backoff(%d) = %v, want %v", i+1, got, want)
				}
			}
		})
	}

	// With real randomness, never below the minimum and never above the cap.
	for _, min := range []time.Duration{time.Millisecond, 25 * time.Millisecond, 100 * time.Millisecond, time.Second} {
		p, err := NewPolicy(&routetable.Retry{Backoff: routetable.Duration(min)})
		if err != nil {
			t.Fatal(err)
		}
		limit := max(10*min, 250*time.Millisecond)
		r := rand.New(rand.NewPCG(1, 2))
		for retry := -1; retry <= 70; retry++ {
			for range 50 {
				if got := p.Backoff(retry, r.Float64); got < min || got > limit {
					t.Fatalf("min %v: Backoff(%d) = %v, outside [%v, %v]", min, retry, got, min, limit)
				}
			}
		}
		if got := p.Backoff(3, nil); got < min || got > limit {
			t.Fatalf("min %v: Backoff with nil rnd = %v", min, got)
		}
	}

	var nilPolicy *Policy
	if got := nilPolicy.Backoff(1, nil); got != 0 {
		t.Fatalf("nil policy Backoff = %v, want 0", got)
	}
}

func durs(msecs ...float64) []time.Duration {
	out := make([]time.Duration, len(msecs))
	for i, m := range msecs {
		out[i] = time.Duration(m * float64(time.Millisecond))
	}
	return out
}
