package loadtest

import (
	"math"
	"sync"
	"time"
)

// Latency summarizes a load's latencies, in milliseconds. Quantiles are read
// from a log-scale histogram whose buckets are 10% wide, so they are upper
// bounds within 10% of the true value.
type Latency struct {
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
}

// Histogram bounds: bucket i holds latencies up to minLatencyMs·growth^i.
const (
	minLatencyMs = 0.01
	growth       = 1.1
	numBuckets   = 200 // up to about 0.01·1.1^199 ms ≈ 1.8e6 s
)

var logGrowth = math.Log(growth)

// bucketOf returns the bucket of a latency in milliseconds.
func bucketOf(ms float64) int {
	if ms <= minLatencyMs {
		return 0
	}
	i := int(math.Ceil(math.Log(ms/minLatencyMs) / logGrowth))
	return min(max(i, 0), numBuckets-1)
}

// bucketBound is bucket i's upper bound in milliseconds.
func bucketBound(i int) float64 { return minLatencyMs * math.Pow(growth, float64(i)) }

// stats accumulates one run's outcomes.
type stats struct {
	mu       sync.Mutex
	requests uint64
	errors   uint64
	codes    map[string]uint64
	buckets  [numBuckets]uint64
	sumMs    float64
	maxMs    float64
	lastErr  string
}

func newStats() *stats { return &stats{codes: make(map[string]uint64)} }

// record counts one request: its outcome code ("200", "OK", "Unavailable",
// "error"), whether it failed, the error text if any, and its latency.
func (s *stats) record(code string, failed bool, errText string, d time.Duration) {
	ms := float64(d) / float64(time.Millisecond)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	if failed {
		s.errors++
	}
	if errText != "" {
		s.lastErr = errText
	}
	s.codes[code]++
	s.buckets[bucketOf(ms)]++
	s.sumMs += ms
	s.maxMs = max(s.maxMs, ms)
}

// snapshot fills st's counters.
func (s *stats) snapshot(st *Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st.Requests, st.Errors, st.LastError = s.requests, s.errors, s.lastErr
	st.Codes = make(map[string]uint64, len(s.codes))
	for k, v := range s.codes {
		st.Codes[k] = v
	}
	if s.requests == 0 {
		return
	}
	st.Latency = Latency{
		Mean: s.sumMs / float64(s.requests),
		P50:  s.quantileLocked(0.5),
		P90:  s.quantileLocked(0.9),
		P99:  s.quantileLocked(0.99),
		Max:  s.maxMs,
	}
}

// quantileLocked returns the upper bound of the bucket holding quantile q,
// at most the largest latency seen.
func (s *stats) quantileLocked(q float64) float64 {
	rank := uint64(math.Ceil(q * float64(s.requests)))
	var seen uint64
	for i, n := range s.buckets {
		seen += n
		if seen >= rank && n > 0 {
			return min(bucketBound(i), s.maxMs)
		}
	}
	return s.maxMs
}
