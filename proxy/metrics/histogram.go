package metrics

import (
	"math/bits"
	"strconv"
	"sync/atomic"
	"time"
)

// LatencyBucketsMs are the upper bounds, in milliseconds, of Linkerd's
// response_latency_ms histogram; a +Inf bucket follows them. It is exported for
// reference: the registry uses its own copy, so changing it has no effect.
var LatencyBucketsMs = []float64{
	1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500,
	1000, 2000, 3000, 4000, 5000, 10000, 20000, 30000, 40000, 50000,
}

// numBounds is len(LatencyBucketsMs); numBuckets adds +Inf.
const (
	numBounds  = 25
	numBuckets = numBounds + 1
)

// boundsNs are the bucket bounds in nanoseconds, for exact integer comparison,
// and boundsLe their rendering as le label values.
var boundsNs, boundsLe = func() ([numBounds]int64, [numBuckets]string) {
	var ns [numBounds]int64
	var le [numBuckets]string
	for i, ms := range LatencyBucketsMs {
		ns[i] = int64(ms) * int64(time.Millisecond)
		le[i] = strconv.FormatFloat(ms, 'g', -1, 64)
	}
	le[numBounds] = "+Inf"
	return ns, le
}()

// bucketStart[n] is the first bucket whose bound is at least 2^(n-1) ns: where
// a duration of bit length n starts its search. Any power-of-two range holds at
// most three bounds, so bucketOf compares a few times at most.
var bucketStart = func() (t [65]uint8) {
	for n := range t {
		var lo int64
		if n > 0 {
			lo = int64(1) << min(n-1, 62)
		}
		i := 0
		for i < numBounds && boundsNs[i] < lo {
			i++
		}
		t[n] = uint8(i)
	}
	return t
}()

// bucketOf returns the index of the first bucket whose bound is >= d, or the
// +Inf bucket above the last bound. d must not be negative.
func bucketOf(d time.Duration) int {
	ns := int64(d)
	i := int(bucketStart[bits.Len64(uint64(ns))])
	for i < numBounds && boundsNs[i] < ns {
		i++
	}
	return i
}

// histCell is one stripe of a latency histogram: non-cumulative bucket counts and
// the sum in microseconds, padded to whole cache lines (27 words + 5 = 4 lines).
// Microseconds keep far more precision than the millisecond exposition needs and
// take 58 years at 10,000 one-second responses a second to overflow.
type histCell struct {
	buckets [numBuckets]atomic.Uint64
	sumUs   atomic.Uint64
	_       [4*cacheLine - (numBuckets+1)*8]byte
}

// latencyHist is a striped histogram over the latency buckets.
type latencyHist struct {
	cells []histCell
}

func newLatencyHist() latencyHist { return latencyHist{cells: make([]histCell, numStripes)} }

// observe records d in the stripe i. Negative durations count as zero.
func (h *latencyHist) observe(i uint32, d time.Duration) {
	d = max(d, 0)
	c := &h.cells[i&stripeMask]
	c.buckets[bucketOf(d)].Add(1)
	c.sumUs.Add(uint64((d + time.Microsecond/2) / time.Microsecond))
}

// histSnapshot is a point-in-time read of a histogram: cumulative counts per
// bucket (the last is +Inf, equal to the count) and the sum in milliseconds.
type histSnapshot struct {
	cumulative [numBuckets]uint64
	sumMs      float64
}

// snapshot sums the stripes. The count is derived from the buckets, so _count
// always equals the +Inf bucket even while observations race with the read.
func (h *latencyHist) snapshot() histSnapshot {
	var s histSnapshot
	var sum uint64
	for i := range h.cells {
		c := &h.cells[i]
		for b := range c.buckets {
			s.cumulative[b] += c.buckets[b].Load()
		}
		sum += c.sumUs.Load()
	}
	for b := 1; b < numBuckets; b++ {
		s.cumulative[b] += s.cumulative[b-1]
	}
	s.sumMs = float64(sum) / 1000
	return s
}

// add accumulates o into s (used when two series render identically).
func (s *histSnapshot) add(o *histSnapshot) {
	for b := range s.cumulative {
		s.cumulative[b] += o.cumulative[b]
	}
	s.sumMs += o.sumMs
}
