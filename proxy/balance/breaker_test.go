package balance

import (
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

func secs(n float64) routetable.Duration { return routetable.Duration(n * float64(time.Second)) }

// single is a balancer with one endpoint, a fake clock and no jitter (Rand 0).
func single(t *testing.T, brk routetable.Breaker) (*Balancer, *Endpoint, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	b := New(Config{Clock: clk, Rand: constRand(0), Breaker: brk})
	b.Update(eps("a:1"))
	return b, byAddr(t, b, "a:1"), clk
}

func wantState(t *testing.T, e *Endpoint, state string, ready bool) {
	t.Helper()
	if got := e.State(); got != state {
		t.Fatalf("state = %q, want %q", got, state)
	}
	if got := e.Ready(); got != ready {
		t.Fatalf("in state %s: Ready = %v, want %v", state, got, ready)
	}
}

func TestBreakerEjectsAfterConsecutiveFailures(t *testing.T) {
	for _, maxFailures := range []int{0, 1, 3} {
		t.Run(fmt.Sprintf("maxFailures=%d", maxFailures), func(t *testing.T) {
			limit := maxFailures
			if limit == 0 {
				limit = DefaultMaxFailures
			}
			b, e, _ := single(t, routetable.Breaker{MaxFailures: maxFailures})
			for round := range 3 {
				// limit-1 failures, then a success: the count starts over.
				for range limit - 1 {
					e.Start().Done(true)
				}
				wantState(t, e, "ready", true)
				if round < 2 {
					e.Start().Done(false)
				}
			}
			e.Start().Done(true)
			wantState(t, e, "ejected", false)
			// The lone endpoint is ejected: picked anyway (panic), and its
			// outcome while ejected changes nothing.
			if got, err := b.Pick(); err != nil || got != e {
				t.Fatalf("Pick = %v, %v; want the ejected endpoint (panic)", got, err)
			}
			e.Start().Done(false)
			wantState(t, e, "ejected", false)
			if n := b.ReadyCount(); n != 0 {
				t.Fatalf("ReadyCount = %d, want 0", n)
			}
		})
	}
}

func TestBreakerBackoffAndProbation(t *testing.T) {
	b, e, clk := single(t, routetable.Breaker{MinPenalty: secs(1), MaxPenalty: secs(10)})
	for range DefaultMaxFailures {
		e.Start().Done(true)
	}
	for _, penalty := range []time.Duration{1, 2, 4, 8, 10, 10} {
		penalty *= time.Second
		wantState(t, e, "ejected", false)
		clk.Advance(penalty - time.Nanosecond)
		wantState(t, e, "ejected", false)

		clk.Advance(time.Nanosecond)
		wantState(t, e, "probation", true)
		if got, err := b.Pick(); err != nil || got != e {
			t.Fatalf("Pick on probation = %v, %v", got, err)
		}
		probe := e.Start()
		// Exactly one probe: the endpoint is not ready while it is in flight.
		wantState(t, e, "probation", false)
		if n := b.ReadyCount(); n != 0 {
			t.Fatalf("ReadyCount with probe in flight = %d, want 0", n)
		}
		// A request that slipped through anyway does not decide anything.
		extra := e.Start()
		extra.Done(false)
		wantState(t, e, "probation", false)

		probe.Done(true) // the probe fails: ejected again, longer
	}

	// A successful probe reopens and resets the backoff.
	clk.Advance(10 * time.Second)
	probe := e.Start()
	probe.Done(false)
	wantState(t, e, "ready", true)
	for range DefaultMaxFailures - 1 {
		e.Start().Done(true)
	}
	wantState(t, e, "ready", true) // the failure count was reset too
	e.Start().Done(true)
	wantState(t, e, "ejected", false)
	clk.Advance(time.Second)
	wantState(t, e, "probation", true) // back to the minimum penalty
}

func TestBreakerIgnoresResponsesWhileShut(t *testing.T) {
	_, e, clk := single(t, routetable.Breaker{})
	early := []*Attempt{e.Start(), e.Start(), e.Start()}
	for range DefaultMaxFailures {
		e.Start().Done(true)
	}
	wantState(t, e, "ejected", false)

	// Responses arriving while ejected change nothing, successes included.
	early[0].Done(false)
	early[1].Done(true)
	during := e.Start()
	during.Done(false)
	wantState(t, e, "ejected", false)

	// Nor on probation: only the probe decides.
	clk.Advance(time.Second)
	wantState(t, e, "probation", true)
	late := e.Start() // the probe
	wantState(t, e, "probation", false)
	late.Done(false)
	wantState(t, e, "ready", true)

	// An attempt that started before the ejection and ends after the reopening
	// does not count in the new open phase: its success resets nothing.
	for range DefaultMaxFailures - 1 {
		e.Start().Done(true)
	}
	early[2].Done(false)
	wantState(t, e, "ready", true)
	e.Start().Done(true)
	wantState(t, e, "ejected", false)
	if e.Pending() != 0 {
		t.Fatalf("pending = %d, want 0", e.Pending())
	}
}

func TestBreakerProbeClaimedOnce(t *testing.T) {
	_, e, clk := single(t, routetable.Breaker{})
	for range DefaultMaxFailures {
		e.Start().Done(true)
	}
	clk.Advance(2 * time.Second)
	attempts := make([]*Attempt, 5)
	for i := range attempts {
		attempts[i] = e.Start()
	}
	probes := 0
	for _, a := range attempts {
		if a.kind == attemptProbe {
			probes++
		}
	}
	if probes != 1 || attempts[0].kind != attemptProbe {
		t.Fatalf("%d probes among 5 attempts on probation, want exactly the first", probes)
	}
	// The non-probes failing does not re-eject; the probe decides.
	for _, a := range attempts[1:] {
		a.Done(true)
	}
	wantState(t, e, "probation", false)
	attempts[0].Done(false)
	wantState(t, e, "ready", true)
}

func seconds(v ...float64) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, s := range v {
		out[i] = time.Duration(s * float64(time.Second))
	}
	return out
}

func TestPenalty(t *testing.T) {
	tests := []struct {
		name     string
		brk      routetable.Breaker
		base     []time.Duration // by previous ejections 0, 1, 2, ...
		jitter   float64
		maxTotal time.Duration
	}{
		{
			name:     "defaults",
			base:     seconds(1, 2, 4, 8, 16, 32, 60, 60, 60),
			jitter:   0.5,
			maxTotal: 90 * time.Second,
		},
		{
			name:     "no jitter",
			brk:      routetable.Breaker{MinPenalty: secs(0.1), MaxPenalty: secs(1), JitterRatio: -1},
			base:     seconds(0.1, 0.2, 0.4, 0.8, 1, 1),
			jitter:   0,
			maxTotal: time.Second,
		},
		{
			name:     "max below min is raised to min",
			brk:      routetable.Breaker{MinPenalty: secs(5), MaxPenalty: secs(2), JitterRatio: 2},
			base:     seconds(5, 5, 5),
			jitter:   2,
			maxTotal: 15 * time.Second,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Rand 0: no jitter, the base exactly.
			s := New(Config{Rand: constRand(0), Breaker: tc.brk}).cfg
			for k, want := range tc.base {
				if got := s.penalty(k); got != want {
					t.Fatalf("penalty(%d) = %v, want %v", k, got, want)
				}
			}
			// Random jitter stays within [base, base*(1+jitter)] and the cap.
			r := seeded(11)
			s.rand = r
			for range 2000 {
				k := int(r() % 40)
				s.rand = constRand(0)
				base := s.penalty(k)
				s.rand = r
				got := s.penalty(k)
				hi := time.Duration(float64(base) * (1 + tc.jitter))
				if got < base || got > hi || got > tc.maxTotal {
					t.Fatalf("penalty(%d) = %v, want in [%v, %v] and <= %v", k, got, base, hi, tc.maxTotal)
				}
			}
			s.rand = constRand(^uint64(0))
			if got := s.penalty(1000); got > tc.maxTotal {
				t.Fatalf("penalty(1000) with maximal jitter = %v, above %v", got, tc.maxTotal)
			}
		})
	}
}

// TestNoBreaker checks that without failure accrual an endpoint stays ready
// whatever its failures (the inbound side's application).
func TestNoBreaker(t *testing.T) {
	b := New(Config{Clock: newFakeClock(), Rand: constRand(0), NoBreaker: true})
	b.Update(eps("a:1"))
	e := byAddr(t, b, "a:1")
	for range 10 * DefaultMaxFailures {
		e.Start().Done(true)
	}
	wantState(t, e, "ready", true)
	if _, err := b.Pick(); err != nil {
		t.Fatalf("Pick = %v, want the endpoint", err)
	}
}
