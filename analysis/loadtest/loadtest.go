// Package loadtest is Sluice's built-in load tester: it sends HTTP or gRPC
// load to a service while its canary is analysed, so that a canary in quiet
// hours still gets traffic to be judged on.
//
// Loads are keyed by canary ("namespace/name") and deduplicated: asking again
// for the load that is running (every analysis tick does) leaves it alone;
// asking for a different one replaces it; asking after it finished starts it
// again. A load stops at the end of its duration, after its request count,
// when Stop(key) is called (the canary left Progressing), or at StopAll and
// Close; the tester's MaxDuration caps every load.
//
// The HTTP API (Handler) is compatible with Flagger's flagger-loadtester:
// its "/" task endpoint takes a webhook payload whose metadata holds a "cmd"
// with a hey or ghz command line (parsed, never executed; see ParseCommand
// for the flags understood), or a typed load (metadata "kind": http or grpc;
// see the Handler documentation). GET /status reports every load's
// requests, errors and latency.
package loadtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of a Tester's Options.
const (
	// DefaultMaxDuration caps every load, as flagger-loadtester's -timeout.
	DefaultMaxDuration = time.Hour
	// DefaultMaxConcurrency is the most workers one load may have.
	DefaultMaxConcurrency = 100
	// DefaultPrepareTimeout bounds connecting to a gRPC target and resolving
	// its method when a load starts.
	DefaultPrepareTimeout = 10 * time.Second
)

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("load tester is closed")

// Options configure a Tester. The zero value means the defaults.
type Options struct {
	// MaxDuration caps each load's duration; default DefaultMaxDuration.
	MaxDuration time.Duration
	// MaxConcurrency is the most workers a load may ask for; default
	// DefaultMaxConcurrency.
	MaxConcurrency int
	// PrepareTimeout bounds preparing a gRPC load; default
	// DefaultPrepareTimeout.
	PrepareTimeout time.Duration
	// Logger receives loads starting and ending; default slog.Default().
	Logger *slog.Logger
}

// State is where a load is in its life.
type State string

// The states of a load.
const (
	// Running: sending requests.
	Running State = "running"
	// Finished: it ran its duration or its request count.
	Finished State = "finished"
	// Stopped: Stop, StopAll, Close or a replacing load ended it.
	Stopped State = "stopped"
)

// Status is what one load did: the current run of its key, or the last one.
type Status struct {
	// Key is the canary, "namespace/name".
	Key string `json:"key"`
	// Spec is the load, normalized (defaults applied, duration capped).
	Spec Spec `json:"spec"`
	// State is running, finished or stopped.
	State State `json:"state"`
	// Runs counts the loads started for Key, this one included.
	Runs int `json:"runs"`
	// Started is when this run began; Ended when it ended (zero while
	// running).
	Started time.Time `json:"started"`
	Ended   time.Time `json:"ended,omitzero"`
	// Requests is how many requests completed; Errors how many of them
	// failed (a transport error, an HTTP status of 500 or more, a gRPC
	// status other than OK).
	Requests uint64 `json:"requests"`
	Errors   uint64 `json:"errors"`
	// Codes counts the outcomes: HTTP status codes ("200"), gRPC codes
	// ("OK", "Unavailable"), or "error" for a request that got no answer.
	Codes map[string]uint64 `json:"codes"`
	// Latency summarizes the completed requests' latencies.
	Latency Latency `json:"latency"`
	// LastError is the last failure's text.
	LastError string `json:"lastError,omitempty"`
}

// Outcome says what Start did.
type Outcome string

// The outcomes of Start.
const (
	// Started: there was no load running for the key; one started.
	Started Outcome = "started"
	// AlreadyRunning: the same load was running; nothing changed.
	AlreadyRunning Outcome = "running"
	// Replaced: a different load was running; it was stopped and the new
	// one started.
	Replaced Outcome = "replaced"
)

// Tester runs loads. Create it with New and Close it when done; its methods
// are safe for concurrent use.
type Tester struct {
	opts   Options
	lim    limits
	log    *slog.Logger
	ctx    context.Context // parent of every run; cancelled by Close
	cancel context.CancelFunc

	mu      sync.Mutex
	runs    map[string]*run        // the current or last run of each key
	keyLock map[string]*sync.Mutex // serializes Start per key
	counts  map[string]int         // runs started per key
	closed  bool
	wg      sync.WaitGroup
}

// New returns a Tester.
func New(opts Options) *Tester {
	if opts.MaxDuration <= 0 {
		opts.MaxDuration = DefaultMaxDuration
	}
	if opts.MaxConcurrency <= 0 {
		opts.MaxConcurrency = DefaultMaxConcurrency
	}
	if opts.PrepareTimeout <= 0 {
		opts.PrepareTimeout = DefaultPrepareTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Tester{
		opts:    opts,
		lim:     limits{maxDuration: opts.MaxDuration, maxConcurrency: opts.MaxConcurrency},
		log:     log,
		ctx:     ctx,
		cancel:  cancel,
		runs:    make(map[string]*run),
		keyLock: make(map[string]*sync.Mutex),
		counts:  make(map[string]int),
	}
}

// Normalize validates spec as Start would and returns it with the defaults
// applied and its duration capped by the tester's MaxDuration.
func (t *Tester) Normalize(spec Spec) (Spec, error) { return spec.normalize(t.lim) }

// Start runs spec for key ("namespace/name" of the canary), unless the same
// load is already running for it. A different load running for key is
// stopped first. ctx bounds only the preparation (connecting to a gRPC
// target and resolving its method); the load runs until its end, Stop or
// Close. The error wraps ErrInvalid when spec cannot run, and ErrClosed after
// Close.
func (t *Tester) Start(ctx context.Context, key string, spec Spec) (Outcome, error) {
	if key == "" {
		return "", fmt.Errorf("%w: the key (namespace/name of the canary) is empty", ErrInvalid)
	}
	spec, err := spec.normalize(t.lim)
	if err != nil {
		return "", err
	}
	unlock, err := t.lockKey(key)
	if err != nil {
		return "", err
	}
	defer unlock()

	t.mu.Lock()
	old := t.runs[key]
	t.mu.Unlock()
	if old != nil && old.active() && old.spec.equal(spec) {
		return AlreadyRunning, nil
	}

	h, err := t.prepare(ctx, spec)
	if err != nil {
		return "", err
	}
	outcome := Started
	if old != nil && old.active() {
		old.stop()
		<-old.done
		outcome = Replaced
	}

	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		h.close()
		return "", ErrClosed
	}
	t.counts[key]++
	r := newRun(key, spec, h, t.counts[key])
	t.runs[key] = r
	t.wg.Add(1)
	t.mu.Unlock()

	t.log.Info("load test started", "key", key, "kind", spec.Kind, "url", spec.URL, "method", spec.Method,
		"rate", spec.Rate, "concurrency", spec.Concurrency, "duration", spec.Duration, "requests", spec.Requests, "outcome", outcome)
	go func() {
		defer t.wg.Done()
		r.run(t.ctx)
		st := r.status()
		t.log.Info("load test ended", "key", key, "state", st.State, "requests", st.Requests, "errors", st.Errors,
			"p99_ms", st.Latency.P99, "last_error", st.LastError)
	}()
	return outcome, nil
}

// lockKey takes key's Start lock.
func (t *Tester) lockKey(key string) (unlock func(), err error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, ErrClosed
	}
	l, ok := t.keyLock[key]
	if !ok {
		l = &sync.Mutex{}
		t.keyLock[key] = l
	}
	t.mu.Unlock()
	l.Lock()
	return l.Unlock, nil
}

// prepare builds the hitter of a normalized spec.
func (t *Tester) prepare(ctx context.Context, spec Spec) (hitter, error) {
	switch spec.Kind {
	case GRPC:
		ctx, cancel := context.WithTimeout(ctx, t.opts.PrepareTimeout)
		defer cancel()
		return newGRPCHitter(ctx, spec)
	default:
		return newHTTPHitter(spec), nil
	}
}

// Stop stops key's load and waits for its workers to return. It reports
// whether a load was running.
func (t *Tester) Stop(key string) bool {
	t.mu.Lock()
	r := t.runs[key]
	t.mu.Unlock()
	if r == nil || !r.active() {
		return false
	}
	r.stop()
	<-r.done
	return true
}

// StopAll stops every load and waits for them. It returns the keys whose
// load was running, sorted.
func (t *Tester) StopAll() []string {
	t.mu.Lock()
	runs := slices.Collect(maps.Values(t.runs))
	t.mu.Unlock()
	var keys []string
	for _, r := range runs {
		if r.active() {
			r.stop()
			keys = append(keys, r.key)
		}
	}
	for _, r := range runs {
		<-r.done
	}
	slices.Sort(keys)
	return keys
}

// Close stops every load, waits for them, and makes Start fail with
// ErrClosed.
func (t *Tester) Close() error {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.StopAll()
	t.cancel()
	t.wg.Wait()
	return nil
}

// Status returns key's current or last load.
func (t *Tester) Status(key string) (Status, bool) {
	t.mu.Lock()
	r := t.runs[key]
	t.mu.Unlock()
	if r == nil {
		return Status{}, false
	}
	return r.status(), true
}

// Statuses returns every key's current or last load, by key.
func (t *Tester) Statuses() []Status {
	t.mu.Lock()
	runs := slices.Collect(maps.Values(t.runs))
	t.mu.Unlock()
	out := make([]Status, 0, len(runs))
	for _, r := range runs {
		out = append(out, r.status())
	}
	slices.SortFunc(out, func(a, b Status) int {
		switch {
		case a.Key < b.Key:
			return -1
		case a.Key > b.Key:
			return 1
		}
		return 0
	})
	return out
}

// Wait blocks until key's current load ends or ctx is done, and returns its
// status.
func (t *Tester) Wait(ctx context.Context, key string) (Status, error) {
	t.mu.Lock()
	r := t.runs[key]
	t.mu.Unlock()
	if r == nil {
		return Status{}, fmt.Errorf("no load for %s", key)
	}
	select {
	case <-r.done:
		return r.status(), nil
	case <-ctx.Done():
		return r.status(), ctx.Err()
	}
}

// run is one load of one key.
type run struct {
	key     string
	spec    Spec
	h       hitter
	n       int
	started time.Time
	stats   *stats

	cancel  context.CancelFunc // set by run before done can close
	stopped atomic.Bool
	mu      sync.Mutex
	ended   time.Time
	ctxSet  chan struct{} // closed once cancel is set
	done    chan struct{} // closed when every worker returned
}

func newRun(key string, spec Spec, h hitter, n int) *run {
	return &run{
		key: key, spec: spec, h: h, n: n, started: time.Now(), stats: newStats(),
		ctxSet: make(chan struct{}), done: make(chan struct{}),
	}
}

// active reports whether the run has not ended.
func (r *run) active() bool {
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

// stop ends the run early.
func (r *run) stop() {
	r.stopped.Store(true)
	<-r.ctxSet
	r.cancel()
}

// run sends the load until its duration, request count or cancellation,
// then closes the hitter and done.
func (r *run) run(parent context.Context) {
	ctx, cancel := context.WithTimeout(parent, r.spec.Duration)
	r.cancel = cancel
	close(r.ctxSet)
	defer func() {
		cancel()
		r.h.close()
		r.mu.Lock()
		r.ended = time.Now()
		r.mu.Unlock()
		close(r.done)
	}()
	if parent.Err() != nil {
		r.stopped.Store(true)
	}

	var issued atomic.Int64
	limit := int64(r.spec.Requests)
	tokens := make(chan struct{})
	paceCtx, stopPacing := context.WithCancel(ctx)
	defer stopPacing()
	var pacer sync.WaitGroup
	if r.spec.Rate > 0 {
		pacer.Go(func() { pace(paceCtx, r.spec.Rate, tokens) })
	}
	var workers sync.WaitGroup
	for range r.spec.Concurrency {
		workers.Go(func() {
			for {
				if r.spec.Rate > 0 {
					select {
					case <-ctx.Done():
						return
					case <-tokens:
					}
				} else if ctx.Err() != nil {
					return
				}
				if limit > 0 && issued.Add(1) > limit {
					return // the count is reached; requests in flight finish
				}
				start := time.Now()
				code, failed, text := r.h.hit(ctx)
				if failed && ctx.Err() != nil {
					// Cut short by the run's own end, not the target's failure.
					return
				}
				r.stats.record(code, failed, text, time.Since(start))
			}
		})
	}
	workers.Wait()
	stopPacing()
	pacer.Wait()
	if parent.Err() != nil {
		r.stopped.Store(true)
	}
}

// pace sends a token on tokens every 1/rate seconds until ctx is done. It
// does not catch up on tokens the workers were too busy to take: after a
// stall the schedule restarts from the late token, so over any span d at
// most 1 + d·rate tokens are sent.
func pace(ctx context.Context, rate float64, tokens chan<- struct{}) {
	interval := time.Duration(float64(time.Second) / rate)
	if interval <= 0 {
		interval = time.Nanosecond
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	next := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		select {
		case <-ctx.Done():
			return
		case tokens <- struct{}{}:
		}
		// The next token is due an interval after this one was planned, or
		// after it was taken if that was later: tokens are never closer
		// than the interval.
		if now := time.Now(); next.Before(now) {
			next = now
		}
		next = next.Add(interval)
		timer.Reset(time.Until(next))
	}
}

// status reports the run.
func (r *run) status() Status {
	st := Status{Key: r.key, Spec: r.spec, Runs: r.n, Started: r.started, State: Running}
	r.mu.Lock()
	st.Ended = r.ended
	r.mu.Unlock()
	if !r.active() {
		st.State = Finished
		if r.stopped.Load() {
			st.State = Stopped
		}
	}
	r.stats.snapshot(&st)
	return st
}
