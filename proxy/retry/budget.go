package retry

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Budget defaults, as in Linkerd's ServiceProfile retries (tower's TpsBudget).
const (
	DefaultBudgetRatio  = 0.2
	DefaultMinPerSecond = 10
	DefaultBudgetTTL    = 10 * time.Second
)

const (
	// budgetSlots is how many time slots the ttl window is cut into.
	budgetSlots = 10
	// unitsPerRetry is the fixed-point scale of balances: a retry costs this
	// many units and a request earns ratio times as many.
	unitsPerRetry = 1_000_000
	// maxRatio bounds the retry ratio (tower's bound).
	maxRatio = 1000
)

// Budget caps retries to a share of recent traffic, like tower's TpsBudget:
// within a sliding ttl window, the retries allowed are
// minPerSecond*ttl_seconds + ratio*requests, minus the retries already taken.
// Requests and retries older than the window stop counting. The window moves
// in ten slots, so an entry expires between 0.9 and 1.0 ttl after it was made.
//
// Deposit is lock-free on its common path; Withdraw takes a small mutex. A nil
// *Budget is no budget: Deposit does nothing and Withdraw always allows.
type Budget struct {
	clock     func() time.Time
	epoch     time.Time
	slotWidth time.Duration
	deposit   int64 // units earned by one request
	reserve   int64 // units always available in a window

	cur     atomic.Int64 // number of the current slot, counted from epoch
	current atomic.Int64 // balance of the current slot

	mu        sync.Mutex
	slots     [budgetSlots]int64 // balances of past slots, indexed by slot number mod budgetSlots
	committed int64              // sum of slots
}

// NewBudget returns a budget allowing minPerSecond retries per second of the
// ttl window plus ratio retries per request. Zero values take the defaults
// (0.2, 10, 10s); a negative ratio or minPerSecond means none; ratio is capped
// at 1000 and ttl is held within 1s..60s, as tower does. clock nil means
// time.Now.
func NewBudget(ratio float64, minPerSecond int, ttl time.Duration, clock func() time.Time) *Budget {
	if ratio == 0 {
		ratio = DefaultBudgetRatio
	}
	if math.IsNaN(ratio) || ratio < 0 {
		ratio = 0
	}
	ratio = min(ratio, maxRatio)
	if minPerSecond == 0 {
		minPerSecond = DefaultMinPerSecond
	}
	minPerSecond = max(minPerSecond, 0)
	if ttl == 0 {
		ttl = DefaultBudgetTTL
	}
	ttl = min(max(ttl, time.Second), time.Minute)
	if clock == nil {
		clock = time.Now
	}
	return &Budget{
		clock:     clock,
		epoch:     clock(),
		slotWidth: ttl / budgetSlots,
		deposit:   int64(math.Round(ratio * unitsPerRetry)),
		// minPerSecond * ttl in seconds * unitsPerRetry, without rounding ttl.
		reserve: int64(float64(minPerSecond) * ttl.Seconds() * unitsPerRetry),
	}
}

// Deposit records one original request, earning ratio of a retry.
func (b *Budget) Deposit() {
	if b == nil || b.deposit == 0 {
		return
	}
	if n := b.slot(); n > b.cur.Load() {
		b.mu.Lock()
		b.rotateLocked(n)
		b.mu.Unlock()
	}
	b.current.Add(b.deposit)
}

// Withdraw reports whether a retry may be sent now, and if so takes it from
// the budget.
func (b *Budget) Withdraw() bool {
	if b == nil {
		return true
	}
	n := b.slot()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rotateLocked(n)
	if b.reserve+b.committed+b.current.Load() < unitsPerRetry {
		return false
	}
	b.current.Add(-unitsPerRetry)
	return true
}

// slot is the number of the time slot the clock is in now.
func (b *Budget) slot() int64 {
	return int64(max(b.clock().Sub(b.epoch), 0) / b.slotWidth)
}

// rotateLocked makes slot n current: the current balance is committed to its
// slot and the slots that fell out of the window are cleared. The clock going
// backwards leaves everything as is. b.mu must be held.
func (b *Budget) rotateLocked(n int64) {
	c := b.cur.Load()
	if n <= c {
		return
	}
	v := b.current.Swap(0)
	b.slots[c%budgetSlots] = v
	b.committed += v
	// Slots c+1..n start empty, and slot n's ring entry (n-budgetSlots) and
	// everything before it is out of the window.
	for k := c + 1; k <= n && k <= c+budgetSlots; k++ {
		b.committed -= b.slots[k%budgetSlots]
		b.slots[k%budgetSlots] = 0
	}
	b.cur.Store(n)
}

// CanWithdraw reports whether a retry would be allowed now, without consuming
// it: the proxy asks before an attempt whose retryable answer it would have to
// discard, so that a spent budget forwards that answer instead of losing it.
func (b *Budget) CanWithdraw() bool {
	if b == nil {
		return true
	}
	n := b.slot()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rotateLocked(n)
	return b.reserve+b.committed+b.current.Load() >= unitsPerRetry
}
