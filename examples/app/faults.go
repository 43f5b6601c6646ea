package main

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// faults decides, per request, the injected delay and whether the request
// fails. It is safe for concurrent use; with a fixed seed and sequential
// requests its decisions are reproducible.
type faults struct {
	errorRate float64
	latency   time.Duration
	jitter    time.Duration

	mu  sync.Mutex
	rng *rand.Rand
}

// newFaults returns a fault injector; seed 0 picks a random seed.
func newFaults(errorRate float64, latency, jitter time.Duration, seed uint64) *faults {
	if seed == 0 {
		seed = rand.Uint64()
	}
	return &faults{
		errorRate: errorRate,
		latency:   latency,
		jitter:    jitter,
		rng:       rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
	}
}

// decide returns the delay to add and whether to fail this request.
func (f *faults) decide() (delay time.Duration, fail bool) {
	delay = f.latency
	if f.errorRate <= 0 && f.jitter <= 0 {
		return delay, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.jitter > 0 {
		delay += time.Duration(f.rng.Int64N(int64(f.jitter)))
	}
	if f.errorRate > 0 {
		fail = f.rng.Float64() < f.errorRate
	}
	return delay, fail
}

// sleepFunc waits for d or until ctx is done, returning ctx's error then.
type sleepFunc func(ctx context.Context, d time.Duration) error

// sleepCtx is the real sleepFunc.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
