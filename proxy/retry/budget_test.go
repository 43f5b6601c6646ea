package retry

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// drain withdraws until the budget refuses and returns how many it allowed.
func drain(b *Budget) int {
	n := 0
	for b.Withdraw() {
		n++
		if n > 1e6 {
			panic("budget never runs out")
		}
	}
	return n
}

func TestBudgetWindow(t *testing.T) {
	tests := []struct {
		name         string
		ratio        float64
		minPerSecond int
		ttl          time.Duration
		deposits     int
		want         int
	}{
		{"defaults, no traffic", 0, 0, 0, 0, 100},
		{"defaults, 1000 requests", 0, 0, 0, 1000, 300},
		{"defaults, 7 requests", 0, 0, 0, 7, 101},
		{"no reserve", 0.5, -1, 2 * time.Second, 10, 5},
		{"no ratio", -1, 3, 2 * time.Second, 1000, 6},
		{"ratio above 1", 2.5, -1, time.Second, 10, 25},
		{"odd ratio is exact", 0.3, -1, time.Second, 1000, 300},
		{"ttl held to at least 1s", 0, 5, time.Millisecond, 0, 5},
		{"ttl held to at most 60s", 0, 1, time.Hour, 0, 60},
		{"fractional ttl", 0, 10, 1500 * time.Millisecond, 0, 15},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock()
			b := NewBudget(tc.ratio, tc.minPerSecond, tc.ttl, clk.Now)
			for range tc.deposits {
				b.Deposit()
			}
			if got := drain(b); got != tc.want {
				t.Fatalf("retries allowed = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestBudgetExpiry(t *testing.T) {
	clk := newFakeClock()
	b := NewBudget(0, 0, 0, clk.Now) // 0.2, 10/s, 10s

	// Retries taken at t0 count against the window until it has passed.
	if got := drain(b); got != 100 {
		t.Fatalf("first window: %d retries, want 100", got)
	}
	clk.Advance(5 * time.Second)
	if b.Withdraw() {
		t.Fatal("retry allowed halfway through a drained window")
	}
	clk.Advance(5 * time.Second)
	if got := drain(b); got != 100 {
		t.Fatalf("after the window: %d retries, want 100 again", got)
	}

	// Requests earn retries for one window, then expire.
	clk.Advance(10 * time.Second)
	for range 1000 {
		b.Deposit()
	}
	clk.Advance(8 * time.Second)
	for range 500 {
		b.Deposit()
	}
	clk.Advance(time.Second) // 9s after the first 1000: still in the window
	if got := drain(b); got != 100+200+100 {
		t.Fatalf("two batches within the window: %d retries, want 400", got)
	}
	clk.Advance(time.Second) // the first batch and the retries taken at 9s expire ...
	if got := drain(b); got != 100+100-(400-200) {
		// ... but the retries taken at 9s still count against the second batch.
		t.Fatalf("after the first batch expired: %d retries, want 0", got)
	}
	clk.Advance(9 * time.Second)
	if got := drain(b); got != 100 {
		t.Fatalf("after everything expired: %d retries, want 100", got)
	}

	// A long quiet spell (more than a whole window) clears everything.
	for range 1000 {
		b.Deposit()
	}
	clk.Advance(time.Hour)
	if got := drain(b); got != 100 {
		t.Fatalf("after an hour: %d retries, want 100", got)
	}
}

func TestBudgetSlotBoundaries(t *testing.T) {
	// With ten slots, a deposit lives at least 0.9 ttl and at most one ttl.
	tests := []struct {
		after time.Duration
		alive bool
	}{
		{0, true},
		{8 * time.Second, true},
		{9 * time.Second, true},
		{10 * time.Second, false},
		{11 * time.Second, false},
	}
	for _, tc := range tests {
		clk := newFakeClock()
		b := NewBudget(1, -1, 10*time.Second, clk.Now)
		clk.Advance(500 * time.Millisecond) // mid-slot
		b.Deposit()
		clk.Advance(tc.after)
		if got := b.Withdraw(); got != tc.alive {
			t.Errorf("%v after the deposit: Withdraw = %v, want %v", tc.after, got, tc.alive)
		}
	}
}

func TestBudgetClockBackwards(t *testing.T) {
	clk := newFakeClock()
	b := NewBudget(0, 1, time.Second, clk.Now)
	clk.Advance(-time.Hour)
	b.Deposit()
	if got := drain(b); got != 1 {
		t.Fatalf("retries = %d, want 1", got)
	}
}

func TestNilBudget(t *testing.T) {
	var b *Budget
	b.Deposit()
	for range 10 {
		if !b.Withdraw() {
			t.Fatal("nil budget refused a retry")
		}
	}
}

func TestBudgetConcurrent(t *testing.T) {
	clk := newFakeClock()
	b := NewBudget(0.2, 10, 10*time.Second, clk.Now)
	const workers, requests = 8, 2000
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range requests {
				b.Deposit()
				if i%3 == 0 && b.Withdraw() {
					allowed.Add(1)
				}
				if w == 0 && i%100 == 0 {
					clk.Advance(10 * time.Millisecond) // 200ms in all: one window
				}
			}
		})
	}
	wg.Wait()
	total := int64(100 + workers*requests/5)
	if got := allowed.Load() + int64(drain(b)); got != total {
		t.Fatalf("retries allowed in all = %d, want exactly %d", got, total)
	}
}

func BenchmarkBudget(b *testing.B) {
	budget := NewBudget(0, 0, 0, nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			budget.Deposit()
			if i%10 == 0 {
				budget.Withdraw()
			}
			i++
		}
	})
}

func TestCanWithdrawDoesNotConsume(t *testing.T) {
	now := time.Unix(1000, 0)
	b := NewBudget(0.2, 1, time.Second, func() time.Time { return now })
	for i := 0; i < 5; i++ {
		if !b.CanWithdraw() {
			t.Fatalf("peek %d: budget empty before any withdrawal", i)
		}
	}
	if !b.Withdraw() {
		t.Fatal("withdraw refused after peeks")
	}
	if b.CanWithdraw() {
		t.Fatal("peek says yes after the only retry was withdrawn")
	}
	if b.Withdraw() {
		t.Fatal("second withdraw allowed with minPerSecond 1 and no deposits")
	}
}
