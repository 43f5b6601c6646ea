package controlplane

import (
	"context"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
)

// Reconnect backoff bounds of the Destination streams.
const (
	// DefaultMinBackoff is the first wait before a lost stream is reopened.
	DefaultMinBackoff = 100 * time.Millisecond
	// DefaultMaxBackoff caps the wait between attempts to reopen a stream.
	DefaultMaxBackoff = 10 * time.Second
)

// ConnectParams are the connection parameters to dial the control plane with
// (grpc.WithConnectParams): the channel reconnects on the same 100 ms to 10 s
// jittered schedule as the streams, so that a restarted control plane is found
// again within seconds rather than grpc's default two minutes.
func ConnectParams() grpc.ConnectParams {
	return grpc.ConnectParams{
		Backoff: grpcbackoff.Config{
			BaseDelay:  DefaultMinBackoff,
			Multiplier: 1.6,
			Jitter:     0.2,
			MaxDelay:   DefaultMaxBackoff,
		},
		MinConnectTimeout: 5 * time.Second,
	}
}

// backoff is capped exponential backoff with jitter: the n-th wait is drawn
// uniformly from [d/2, d] where d = min·2ⁿ, capped at max.
type backoff struct {
	min, max time.Duration
	n        int
}

// next returns the wait before the next attempt and counts the attempt.
func (b *backoff) next() time.Duration {
	d := b.min
	for i := 0; i < b.n && d < b.max; i++ {
		d *= 2
	}
	d = min(d, b.max)
	b.n++
	half := d / 2
	return half + rand.N(d-half+1)
}

// reset starts the schedule over after a success.
func (b *backoff) reset() { b.n = 0 }

// sleep waits for d or until ctx ends, and reports whether the wait ran out.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
