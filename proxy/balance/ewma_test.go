package balance

import (
	"math"
	"testing"
	"time"
)

func TestPeakEWMA(t *testing.T) {
	clk := newFakeClock()
	b := New(Config{Clock: clk, Rand: constRand(0)})
	b.Update(eps("a:1"))
	e := byAddr(t, b, "a:1")
	ms := float64(time.Millisecond)

	check := func(step string, want float64) {
		t.Helper()
		if got := e.Cost(); !approx(got, want) {
			t.Fatalf("%s: cost = %v, want %v", step, got, want)
		}
	}

	// A new endpoint starts at the default RTT.
	check("new", 30*ms)

	// The load decays toward zero with time: after one decay window, by 1/e.
	clk.Advance(10 * time.Second)
	est := 30 * ms * math.Exp(-1)
	check("after 10s", est)

	// Cost stores the decayed value (as tower's load does), so decay compounds:
	// 5s + 5s is the same as 10s in one go.
	clk.Advance(5 * time.Second)
	check("after 15s", est*math.Exp(-0.5))
	clk.Advance(5 * time.Second)
	est *= math.Exp(-1)
	check("after 20s", est)

	// Pending requests multiply the cost.
	a := e.Start()
	check("one pending", est*2)

	// A sample above the estimate replaces it (peak).
	clk.Advance(100 * time.Millisecond)
	a.FirstByte()
	est = 100 * ms
	check("peak sample, still pending", est*2)

	// FirstByte is idempotent and Done does not sample again after it.
	clk.Advance(50 * time.Millisecond)
	a.FirstByte()
	a.Done(false)
	est *= math.Exp(-0.005) // 50ms of decay toward zero, nothing else
	check("after Done", est)

	// A sample below the estimate is blended in with weight 1-exp(-elapsed/decay),
	// elapsed counted from the last update of the estimate.
	clk.Advance(2 * time.Second)
	a = e.Start()
	clk.Advance(10 * time.Millisecond)
	a.Done(false) // no FirstByte: Done takes the sample
	d := math.Exp(-2.010 / 10)
	est = est*d + 10*ms*(1-d)
	check("low sample", est)

	// A low sample right after an update barely moves the estimate.
	a = e.Start()
	a.Done(false) // rtt 0, elapsed 0: decay 1
	check("instant sample", est)

	// Reading the cost restarts the blend's clock (tower's load stores the
	// decayed estimate and its time): a sample 5s after a read blends with
	// weight 1-exp(-0.5), not 1-exp(-1).
	clk.Advance(5 * time.Second)
	est *= math.Exp(-0.5)
	check("read halfway", est)
	clk.Advance(5 * time.Second)
	a = e.Start()
	clk.Advance(10 * time.Millisecond)
	a.Done(false)
	d = math.Exp(-5.010 / 10)
	est = est*d + 10*ms*(1-d)
	check("sample after read", est)
}

func TestPeakEWMAConfig(t *testing.T) {
	clk := newFakeClock()
	b := New(Config{Clock: clk, DefaultRTT: time.Second, Decay: time.Second})
	b.Update(eps("a:1"))
	a := byAddr(t, b, "a:1")
	if got := a.Cost(); !approx(got, float64(time.Second)) {
		t.Fatalf("DefaultRTT: cost = %v, want 1s", got)
	}
	clk.Advance(time.Second)
	if got, want := a.Cost(), float64(time.Second)*math.Exp(-1); !approx(got, want) {
		t.Fatalf("Decay: cost = %v, want %v", got, want)
	}

	// An endpoint added later starts at the default too, whatever the age of the
	// balancer.
	clk.Advance(time.Hour)
	b.Update(eps("a:1", "b:1"))
	if got := byAddr(t, b, "b:1").Cost(); !approx(got, float64(time.Second)) {
		t.Fatalf("late endpoint: cost = %v, want 1s", got)
	}
}

func TestEWMAClockBackwards(t *testing.T) {
	// A clock that steps back must not make the estimate grow or go negative.
	clk := newFakeClock()
	b := New(Config{Clock: clk})
	b.Update(eps("a:1"))
	e := byAddr(t, b, "a:1")
	clk.Advance(-time.Hour)
	a := e.Start()
	clk.Advance(time.Millisecond)
	a.Done(false)
	if got := e.Cost(); got < 0 || got > float64(DefaultRTT) {
		t.Fatalf("cost = %v after clock went backwards", got)
	}
}
