package metrics

import (
	"math"
	"sync/atomic"
)

// Counter is a monotonically increasing count, safe for concurrent use and
// striped across cores. Get one with Registry.Counter and keep it.
type Counter struct {
	name   string
	s      *series
	stripe striped
}

// Inc adds one.
func (c *Counter) Inc() { c.stripe.add(stripe(), 1) }

// Add adds n.
func (c *Counter) Add(n uint64) { c.stripe.add(stripe(), n) }

// Value returns the current count.
func (c *Counter) Value() uint64 { return c.stripe.load() }

// Gauge is a value that goes up and down, safe for concurrent use. Get one with
// Registry.Gauge and keep it. It is a single atomic word: gauges are set, not
// incremented per request, so they are not striped.
type Gauge struct {
	name string
	s    *series
	bits atomic.Uint64
}

// Set sets the gauge to v.
func (g *Gauge) Set(v float64) { g.bits.Store(math.Float64bits(v)) }

// Add adds v (which may be negative) to the gauge.
func (g *Gauge) Add(v float64) {
	for {
		old := g.bits.Load()
		if g.bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

// Value returns the gauge's current value.
func (g *Gauge) Value() float64 { return math.Float64frombits(g.bits.Load()) }
