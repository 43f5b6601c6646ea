package metrics

import (
	"testing"
	"time"
)

// bucketLinear is the obvious definition bucketOf must agree with.
func bucketLinear(d time.Duration) int {
	for i, ms := range LatencyBucketsMs {
		if float64(d)/float64(time.Millisecond) <= ms {
			return i
		}
	}
	return len(LatencyBucketsMs)
}

// spread is a fixed pseudo-random set of latencies from 0.1 ms to about 2 s.
var spread = func() []time.Duration {
	out := make([]time.Duration, 1024)
	x := uint64(12345)
	for i := range out {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		out[i] = time.Duration(100_000<<(x%15)) + time.Duration(x%100_000)
	}
	return out
}()

func TestBucketOf(t *testing.T) {
	check := func(d time.Duration) {
		t.Helper()
		if got, want := bucketOf(d), bucketLinear(d); got != want {
			t.Fatalf("bucketOf(%v) = %d, want %d", d, got, want)
		}
	}
	for _, ms := range LatencyBucketsMs {
		b := time.Duration(ms * float64(time.Millisecond))
		check(b - 1)
		check(b)
		check(b + 1)
	}
	for _, d := range []time.Duration{0, 1, 1 << 40, 1<<62 + 1, 1<<63 - 1} {
		check(d)
	}
	for _, d := range spread {
		check(d)
	}
	for d := time.Duration(0); d < 60*time.Second; d += 997 * time.Microsecond {
		check(d)
	}
}

var sink int

// BenchmarkBucketOf uses mixed latencies, so branch prediction cannot learn one answer.
func BenchmarkBucketOf(b *testing.B) {
	for i := 0; b.Loop(); i++ {
		sink += bucketOf(spread[i&1023])
	}
}

// bucketBinary is a plain binary search, the baseline for BenchmarkBucketOf.
func bucketBinary(d time.Duration) int {
	lo, hi := 0, numBounds
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if boundsNs[m] < int64(d) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

func BenchmarkBucketBinarySearch(b *testing.B) {
	for i := 0; b.Loop(); i++ {
		sink += bucketBinary(spread[i&1023])
	}
}

// TestStripeSpreads checks that live goroutines do not all land on one stripe:
// if they did, striping would be a costly no-op.
func TestStripeSpreads(t *testing.T) {
	if numStripes < 2 {
		t.Skip("one stripe")
	}
	const n = 64
	got := make(chan uint32, n)
	release := make(chan struct{})
	for range n {
		go func() {
			got <- stripe()
			<-release // stay alive so no two goroutines share a stack
		}()
	}
	seen := map[uint32]bool{}
	for range n {
		s := <-got
		if s >= uint32(numStripes) {
			t.Fatalf("stripe %d out of range [0,%d)", s, numStripes)
		}
		seen[s] = true
	}
	close(release)
	if len(seen) < 2 {
		t.Errorf("%d goroutines used %d stripe(s) of %d", n, len(seen), numStripes)
	}
}
