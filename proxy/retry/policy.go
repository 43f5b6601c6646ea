// Package retry decides whether and when a failed request is tried again: a
// compiled retry policy (which HTTP statuses and gRPC codes are retryable, how
// many retries, how long to wait), and a retry budget that caps retries to a
// share of recent traffic.
package retry

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

// MaxBufferedBody is the largest request body that is buffered for retrying;
// a request whose body is larger is never retried (Linkerd's limit).
const MaxBufferedBody = 64 << 10

// DefaultBackoff is the minimum wait between attempts when a Retry sets none.
const DefaultBackoff = 25 * time.Millisecond

// minBackoffCap is the lowest the backoff cap can be, whatever the minimum.
const minBackoffCap = 250 * time.Millisecond

// Policy is a compiled routetable.Retry. A nil *Policy retries nothing.
type Policy struct {
	status     [10]uint64 // bit c set: HTTP status c is retryable (c < 640)
	grpc       uint32     // bit c set: gRPC code c is retryable
	maxRetries int
	minBackoff time.Duration
	maxBackoff time.Duration
}

// NewPolicy compiles and validates a retry configuration. A nil r gives a nil
// policy and no error. Statuses must be within 100..599, ranges must have
// from <= to, gRPC codes must be canonical names (in kebab, snake or upper case)
// or numbers 0..16, and Attempts must not be negative. With no Backoff the
// minimum wait is 25ms; with Attempts 0 and any retryable code the limit is 1
// retry, Linkerd's default.
func NewPolicy(r *routetable.Retry) (*Policy, error) {
	if r == nil {
		return nil, nil
	}
	p := &Policy{maxRetries: r.Attempts, minBackoff: r.Backoff.D()}
	if r.Attempts < 0 {
		return nil, fmt.Errorf("retry attempts %d: must not be negative", r.Attempts)
	}
	if r.Backoff < 0 {
		return nil, fmt.Errorf("retry backoff %v: must not be negative", r.Backoff.D())
	}
	for _, c := range r.Codes {
		if err := checkStatus(c); err != nil {
			return nil, err
		}
		p.setStatus(c, c)
	}
	for _, rg := range r.CodeRanges {
		from, to := rg[0], rg[1]
		if err := checkStatus(from); err != nil {
			return nil, fmt.Errorf("retry status range %d-%d: %w", from, to, err)
		}
		if err := checkStatus(to); err != nil {
			return nil, fmt.Errorf("retry status range %d-%d: %w", from, to, err)
		}
		if from > to {
			return nil, fmt.Errorf("retry status range %d-%d: start is after end", from, to)
		}
		p.setStatus(from, to)
	}
	for _, name := range r.GRPCCodes {
		c, err := ParseGRPCCode(name)
		if err != nil {
			return nil, fmt.Errorf("retry gRPC codes: %w", err)
		}
		p.grpc |= 1 << c
	}
	if p.maxRetries == 0 && (len(r.Codes) > 0 || len(r.CodeRanges) > 0 || len(r.GRPCCodes) > 0) {
		p.maxRetries = 1
	}
	if p.minBackoff == 0 {
		p.minBackoff = DefaultBackoff
	}
	p.maxBackoff = max(10*p.minBackoff, minBackoffCap)
	if p.minBackoff > math.MaxInt64/10 {
		p.maxBackoff = math.MaxInt64
	}
	return p, nil
}

func checkStatus(c int) error {
	if c < 100 || c > 599 {
		return fmt.Errorf("retry status code %d: must be within 100-599", c)
	}
	return nil
}

func (p *Policy) setStatus(from, to int) {
	for c := from; c <= to; c++ {
		p.status[c/64] |= 1 << (c % 64)
	}
}

// MaxRetries is how many times a request may be retried after its first
// attempt (0 for a nil policy).
func (p *Policy) MaxRetries() int {
	if p == nil {
		return 0
	}
	return p.maxRetries
}

// RetryableStatus reports whether an HTTP response status is worth retrying.
func (p *Policy) RetryableStatus(code int) bool {
	if p == nil || code < 0 || code >= 64*len(p.status) {
		return false
	}
	return p.status[code/64]&(1<<(code%64)) != 0
}

// RetryableGRPC reports whether a gRPC status code is worth retrying.
func (p *Policy) RetryableGRPC(code int) bool {
	if p == nil || code < 0 || code > 16 {
		return false
	}
	return p.grpc&(1<<code) != 0
}

// MinBackoff is the configured minimum wait between attempts (0 for a nil policy).
func (p *Policy) MinBackoff() time.Duration {
	if p == nil {
		return 0
	}
	return p.minBackoff
}

// Backoff is the wait before the given retry (1 for the first). The base grows
// exponentially from the minimum backoff, min * 2^(retry-1), up to a cap of ten
// times the minimum (at least 250ms); jitter adds up to the base again,
// base * (1 + rnd()), still within the cap. The wait is never below the
// configured minimum: in the Gateway API the backoff is the minimum wait. rnd
// returns values in [0, 1); nil uses math/rand/v2. A nil policy waits 0.
func (p *Policy) Backoff(retry int, rnd func() float64) time.Duration {
	if p == nil {
		return 0
	}
	base := p.minBackoff
	for i := 1; i < retry && base < p.maxBackoff; i++ {
		if base > p.maxBackoff/2 {
			base = p.maxBackoff
			break
		}
		base *= 2
	}
	base = min(base, p.maxBackoff)
	if rnd == nil {
		rnd = rand.Float64
	}
	u := rnd()
	if !(u > 0) { // also NaN
		u = 0
	}
	u = min(u, 1)
	jitter := p.maxBackoff - base // what room the cap leaves
	if j := float64(base) * u; j < float64(jitter) {
		jitter = time.Duration(j)
	}
	return max(p.minBackoff, base+jitter)
}

// grpcCodes are the canonical gRPC status code names, indexed by code.
var grpcCodes = [...]string{
	"OK",
	"CANCELLED",
	"UNKNOWN",
	"INVALID_ARGUMENT",
	"DEADLINE_EXCEEDED",
	"NOT_FOUND",
	"ALREADY_EXISTS",
	"PERMISSION_DENIED",
	"RESOURCE_EXHAUSTED",
	"FAILED_PRECONDITION",
	"ABORTED",
	"OUT_OF_RANGE",
	"UNIMPLEMENTED",
	"INTERNAL",
	"UNAVAILABLE",
	"DATA_LOSS",
	"UNAUTHENTICATED",
}

// ParseGRPCCode reads a gRPC status code written as its canonical name in
// kebab, snake or upper case ("deadline-exceeded", "deadline_exceeded",
// "DEADLINE_EXCEEDED"; "canceled" is taken for "cancelled") or as a number 0..16.
func ParseGRPCCode(s string) (int, error) {
	trimmed := strings.TrimSpace(s)
	if n, err := strconv.Atoi(trimmed); err == nil {
		if n < 0 || n >= len(grpcCodes) {
			return 0, fmt.Errorf("gRPC code %q: numbers must be within 0-%d", s, len(grpcCodes)-1)
		}
		return n, nil
	}
	name := strings.ToUpper(strings.ReplaceAll(trimmed, "-", "_"))
	if name == "CANCELED" {
		name = "CANCELLED"
	}
	for i, c := range grpcCodes {
		if c == name {
			return i, nil
		}
	}
	return 0, fmt.Errorf("gRPC code %q: not a gRPC status code name", s)
}
