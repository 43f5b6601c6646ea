package supervisor

import "time"

// Default restart backoff bounds.
const (
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 30 * time.Second
)

// Backoff is the delay before restarting a process that exited: Min, then
// doubling at every consecutive exit, capped at Max. A process that ran for
// at least Max before exiting starts the sequence again at Min. The zero
// value uses DefaultMinBackoff and DefaultMaxBackoff.
type Backoff struct {
	Min, Max time.Duration

	n int // consecutive short runs
}

func (b *Backoff) bounds() (lo, hi time.Duration) {
	lo, hi = b.Min, b.Max
	if lo <= 0 {
		lo = DefaultMinBackoff
	}
	if hi <= 0 {
		hi = DefaultMaxBackoff
	}
	return lo, max(lo, hi)
}

// Next returns the delay before the next restart of a process that ran for
// ran, and advances the sequence.
func (b *Backoff) Next(ran time.Duration) time.Duration {
	lo, hi := b.bounds()
	if ran >= hi {
		b.n = 0
	}
	d := lo
	for i := 0; i < b.n && d < hi; i++ {
		d *= 2
	}
	b.n++
	return min(d, hi)
}

// Reset starts the sequence again at Min.
func (b *Backoff) Reset() { b.n = 0 }
