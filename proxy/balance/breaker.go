package balance

import (
	"sync"
	"sync/atomic"
)

// attemptKind is how an attempt's outcome feeds the breaker.
type attemptKind uint8

const (
	// attemptCounted started while the breaker was open: its outcome accrues.
	attemptCounted attemptKind = iota
	// attemptProbe is the one request allowed on probation: it decides.
	attemptProbe
	// attemptIgnored started while the breaker was shut: its outcome is ignored.
	attemptIgnored
)

// breaker is Linkerd's consecutive-failure accrual, computed lazily from the
// clock:
//
//	open --MaxFailures consecutive failures--> shut (ejected until shutUntil)
//	shut --clock passes shutUntil--> probation (one probe request allowed)
//	probation --probe succeeds--> open (backoff resets)
//	probation --probe fails--> shut, with the next longer backoff
//
// The phase and a generation number are packed into state (gen<<1 | shut); the
// generation grows on every transition, so an attempt knows whether the phase it
// started in is still current when it ends. Transitions are serialized by mu;
// the request path only reads atomics, except on the failure that trips it.
type breaker struct {
	state     atomic.Uint64
	failures  atomic.Int64 // consecutive failures while open
	shutUntil atomic.Int64 // end of the current backoff, ns since the epoch
	// probed is the highest shut state whose probe has been claimed: on
	// probation with state s, a probe is in flight iff probed >= s.
	probed atomic.Uint64

	mu        sync.Mutex // serializes transitions
	ejections int        // consecutive ejections without a successful probe; guarded by mu
}

const shutBit = 1

func nextState(s uint64, shut bool) uint64 {
	next := (s>>1 + 1) << 1
	if shut {
		next |= shutBit
	}
	return next
}

// ready reports whether a request may be sent: open, or on probation with no
// probe in flight.
func (b *breaker) ready(now int64) bool {
	s := b.state.Load()
	if s&shutBit == 0 {
		return true
	}
	if now < b.shutUntil.Load() {
		return false
	}
	return b.probed.Load() < s
}

// phase names the breaker's phase.
func (b *breaker) phase(now int64) string {
	s := b.state.Load()
	switch {
	case s&shutBit == 0:
		return "ready"
	case now < b.shutUntil.Load():
		return "ejected"
	default:
		return "probation"
	}
}

// start classifies a new attempt and, on probation, claims the probe for it.
func (b *breaker) start(now int64) (attemptKind, uint64) {
	s := b.state.Load()
	switch {
	case s&shutBit == 0:
		return attemptCounted, s
	case now >= b.shutUntil.Load() && b.claimProbe(s):
		return attemptProbe, s
	default:
		return attemptIgnored, s
	}
}

// claimProbe marks the probe of shut state s in flight; false if another
// attempt already holds it. probed only grows, so a claim made with a stale
// state can never release a newer one.
func (b *breaker) claimProbe(s uint64) bool {
	for {
		p := b.probed.Load()
		if p >= s {
			return false
		}
		if b.probed.CompareAndSwap(p, s) {
			return true
		}
	}
}

// done feeds the outcome of an attempt that started in state s.
func (b *breaker) done(cfg *settings, kind attemptKind, s uint64, failed bool, now int64) {
	switch kind {
	case attemptCounted:
		if b.state.Load() != s {
			return // the breaker moved on: shut meanwhile, or reopened since
		}
		if !failed {
			if b.failures.Load() != 0 {
				b.failures.Store(0)
			}
			return
		}
		if b.failures.Add(1) >= cfg.maxFailures && !cfg.noBreaker {
			b.trip(cfg, s, now)
		}
	case attemptProbe:
		b.resolve(cfg, s, failed, now)
	}
}

// trip shuts an open breaker in state s for the first backoff.
func (b *breaker) trip(cfg *settings, s uint64, now int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state.Load() != s {
		return // another failure tripped it first
	}
	b.failures.Store(0)
	b.shutUntil.Store(now + int64(cfg.penalty(0)))
	b.ejections = 1
	b.state.Store(nextState(s, true))
}

// resolve ends the probation of shut state s with the probe's outcome.
func (b *breaker) resolve(cfg *settings, s uint64, failed bool, now int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state.Load() != s {
		return
	}
	if !failed {
		b.failures.Store(0)
		b.ejections = 0
		b.state.Store(nextState(s, false))
		return
	}
	b.shutUntil.Store(now + int64(cfg.penalty(b.ejections)))
	b.ejections++
	b.state.Store(nextState(s, true))
}
