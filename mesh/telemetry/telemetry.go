// Package telemetry is the mesh's built-in metrics store: it scrapes every
// proxy's Prometheus endpoint (the admin /metrics), keeps short windows of
// golden metrics per workload, revision and pod, and answers the questions the
// canary analysis and `sluice stat` ask: success rate, requests per second,
// latency quantiles and the raw latency histogram over a window.
//
// It talks to proxies over HTTP exactly as Prometheus would, so it works with
// any proxy that writes Linkerd's metric names: inbound and outbound
// response_total (classification, tls) and response_latency_ms (milliseconds).
//
// # What is kept
//
// A scrape is reduced, per target and per direction, to four numbers and one
// histogram: responses, failures (classification="failure"), responses over
// mutual TLS (tls="true"), and response_latency_ms buckets summed by le. Every
// other label (status_code, grpc_status, authority, client_id, dst_*, ...) is
// summed away, so what is kept does not grow with the traffic's variety. All
// series of a target are attributed to one identity (namespace, workload, pod,
// revision): the target's own labels, falling back to the static labels the
// proxy writes on its series.
//
// Between two successful scrapes of a target the store records an interval: the
// counters' increase, reset-aware as Prometheus' increase() is: if any series
// went down or disappeared, or process_start_time_seconds changed, the proxy
// restarted and its new values are the increase since it started. The first
// scrape of a target, or of a URL now answered by a proxy of another identity,
// is only a baseline. A query prorates the intervals that straddle the start of
// its window, assuming an even rate within one scrape interval.
//
// # Memory
//
// Intervals older than Options.Retention are dropped, and a target that is no
// longer listed is forgotten once its newest interval is that old. Per target
// at most 2·Retention/Interval+2 intervals are kept (more than Retention/Interval
// only when rounds run faster than the interval). One interval costs about
// 48 bytes, plus 88 + 8·b bytes for each direction that saw traffic in it
// (b buckets; Linkerd's histogram has 26). With the defaults (1 h, 5 s: 720
// intervals) a proxy busy in one direction costs about 720 × (48 + 296) bytes
// ≈ 250 KB, and about 460 KB when busy in both; an idle one about 35 KB. On
// top of that each target keeps its latest scrape's response_total and bucket
// values (about 50 bytes a series) to detect counter resets.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Defaults for Options' zero fields.
const (
	DefaultInterval      = 5 * time.Second
	DefaultRetention     = time.Hour
	DefaultTimeout       = 2 * time.Second
	DefaultMaxConcurrent = 16
)

// The directions a Selector may name.
const (
	Inbound  = "inbound"
	Outbound = "outbound"
)

// ErrNoData is returned by Query when the window holds no requests for the
// selector: nothing was scraped for it in the range, or nothing was served.
var ErrNoData = errors.New("telemetry: no requests in window")

// Target is one proxy to scrape.
type Target struct {
	// URL is the proxy's metrics endpoint, such as http://127.0.0.1:4191/metrics.
	URL string
	// Labels name what the proxy serves: "namespace", "workload" (or
	// "deployment", its alias), "pod" and "revision". They override the static
	// labels the proxy writes on its series; labels missing here are taken from
	// those series.
	Labels map[string]string
}

// TargetSource lists the current targets: in local mode the supervisor's
// proxies, on Kubernetes the meshed pods.
type TargetSource interface {
	Targets() []Target
}

// TargetsFunc adapts a function to TargetSource.
type TargetsFunc func() []Target

// Targets calls f.
func (f TargetsFunc) Targets() []Target { return f() }

// Options tune a Store. The zero value means the defaults.
type Options struct {
	// Interval between scrape rounds in Run; default 5 s.
	Interval time.Duration
	// Retention is how long intervals are kept; default 1 h.
	Retention time.Duration
	// Timeout bounds one scrape; default 2 s.
	Timeout time.Duration
	// MaxConcurrent bounds the scrapes in flight in one round; default 16.
	MaxConcurrent int
	// Clock returns the time stamped on scrapes and used by queries; default time.Now.
	Clock func() time.Time
	// HTTPClient does the scrapes; default a client of the store's own, whose
	// idle connections Run closes when it returns.
	HTTPClient *http.Client
	// Logger receives scrape failures; default slog.Default().
	Logger *slog.Logger
}

// Store scrapes targets and keeps their recent history. Create it with New.
// Its methods are safe for concurrent use.
type Store struct {
	src       TargetSource
	interval  time.Duration
	retention time.Duration
	timeout   time.Duration
	maxConc   int
	clock     func() time.Time
	client    *http.Client
	ownClient bool
	log       *slog.Logger
	maxHist   int // intervals kept per target at most

	round sync.Mutex // serializes scrape rounds, so deltas are taken in order

	mu      sync.RWMutex
	targets map[string]*targetState // by targetKey
}

// New returns a store that scrapes the targets src lists. It does nothing
// until Run or ScrapeOnce is called.
func New(src TargetSource, opts Options) *Store {
	s := &Store{
		src:       src,
		interval:  opts.Interval,
		retention: opts.Retention,
		timeout:   opts.Timeout,
		maxConc:   opts.MaxConcurrent,
		clock:     opts.Clock,
		client:    opts.HTTPClient,
		log:       opts.Logger,
		targets:   make(map[string]*targetState),
	}
	if s.interval <= 0 {
		s.interval = DefaultInterval
	}
	if s.retention <= 0 {
		s.retention = DefaultRetention
	}
	if s.timeout <= 0 {
		s.timeout = DefaultTimeout
	}
	if s.maxConc <= 0 {
		s.maxConc = DefaultMaxConcurrent
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	if s.client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 1
		s.client = &http.Client{Transport: tr}
		s.ownClient = true
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.maxHist = 2*int(s.retention/s.interval) + 2
	return s
}

// Run scrapes every target at once, then again every Interval, until ctx is
// cancelled; then it returns nil. Scrapes in flight are cancelled with ctx.
func (s *Store) Run(ctx context.Context) error {
	if s.ownClient {
		defer s.client.CloseIdleConnections()
	}
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		s.ScrapeOnce(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// ScrapeOnce runs one round: it lists the targets, scrapes them all
// concurrently (at most MaxConcurrent at a time), records the results stamped
// with the round's start time, and forgets what is older than the retention.
// It returns when every scrape of the round has finished.
func (s *Store) ScrapeOnce(ctx context.Context) {
	s.round.Lock()
	defer s.round.Unlock()

	now := s.clock()
	listed := s.src.Targets()

	// Register the listed targets and mark the others as gone.
	s.mu.Lock()
	batch := make([]*targetState, 0, len(listed))
	seen := make(map[string]bool, len(listed))
	for _, tg := range listed {
		k := targetKey(tg)
		if seen[k] {
			continue
		}
		seen[k] = true
		ts := s.targets[k]
		if ts == nil {
			ts = newTargetState(k, tg)
			s.targets[k] = ts
		}
		ts.listedAt = now
		batch = append(batch, ts)
	}
	for k, ts := range s.targets {
		ts.listed = seen[k]
	}
	s.mu.Unlock()

	sem := make(chan struct{}, s.maxConc)
	var wg sync.WaitGroup
	for _, ts := range batch {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			snap, err := s.scrape(ctx, ts.url)
			if err != nil && ctx.Err() != nil {
				return // cancelled by the caller, not the target's fault
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if err != nil {
				s.recordFailure(ts, now, err)
				return
			}
			if !ts.ok && ts.lastErr != "" {
				s.log.Info("telemetry: scrape recovered", "url", ts.url, "pod", ts.podName())
			}
			ts.record(now, snap, s.maxHist)
		})
	}
	wg.Wait()

	s.mu.Lock()
	s.expireLocked(now)
	s.mu.Unlock()
}

// recordFailure notes a failed scrape; s.mu must be held.
func (s *Store) recordFailure(ts *targetState, now time.Time, err error) {
	msg := err.Error()
	if ts.lastErr != msg {
		s.log.Warn("telemetry: scrape failed", "url", ts.url, "pod", ts.podName(), "error", err)
	}
	ts.lastErr = msg
	ts.lastErrAt = now
	ts.ok = false
}

// expireLocked drops intervals older than the retention, and targets that are
// no longer listed and have nothing left within it. s.mu must be held.
func (s *Store) expireLocked(now time.Time) {
	cutoff := now.Add(-s.retention).UnixNano()
	for k, ts := range s.targets {
		ts.hist.dropEndedBy(cutoff)
		if ts.listed {
			continue
		}
		last := ts.listedAt.UnixNano()
		if ts.prev != nil {
			last = max(last, ts.prev.at)
		}
		if last < cutoff {
			delete(s.targets, k)
		}
	}
}

// targetKey identifies a target by its URL and labels: a URL reused by another
// pod (another label set) is another target.
func targetKey(t Target) string {
	var b strings.Builder
	b.WriteString(t.URL)
	for _, k := range slices.Sorted(maps.Keys(t.Labels)) {
		fmt.Fprintf(&b, "\x00%s=%s", k, t.Labels[k])
	}
	return b.String()
}

// identity is what a proxy's series are attributed to.
type identity struct {
	namespace, workload, pod, revision string
}

// workloadLabels are the label names that name a workload, in order of
// preference: the target's "workload", then the workload kinds Linkerd's
// scrape configuration turns pod labels into.
var workloadLabels = []string{
	"workload", "deployment", "statefulset", "daemonset", "replicaset",
	"k8s_job", "cronjob", "replicationcontroller",
}

// fill sets the fields still empty from labels (get returns "" when absent).
func (id *identity) fill(get func(string) string) {
	if id.namespace == "" {
		id.namespace = get("namespace")
	}
	if id.pod == "" {
		id.pod = get("pod")
	}
	if id.revision == "" {
		id.revision = get("revision")
	}
	for _, l := range workloadLabels {
		if id.workload != "" {
			break
		}
		id.workload = get(l)
	}
}

// targetState is everything kept about one target. Its fields are guarded by
// Store.mu, except the immutable url, key and labels.
type targetState struct {
	key    string
	url    string
	labels identity // from Target.Labels

	listed    bool      // in the latest listing
	listedAt  time.Time // latest listing that named it
	ok        bool      // the latest scrape succeeded
	lastErr   string    // the latest failure, kept after later successes
	lastErrAt time.Time

	prev *snapshot // the latest successful scrape, the base of the next delta
	id   *identity // the identity of prev, shared by the intervals it started
	hist history
}

func newTargetState(key string, t Target) *targetState {
	var id identity
	id.fill(func(k string) string { return t.Labels[k] })
	return &targetState{key: key, url: t.URL, labels: id}
}

// podName names the target for people: its pod, or else its URL.
func (ts *targetState) podName() string {
	if ts.id != nil && ts.id.pod != "" {
		return ts.id.pod
	}
	if ts.labels.pod != "" {
		return ts.labels.pod
	}
	return ts.url
}

// currentIdentity is the identity of the latest successful scrape, or else
// what the target's labels say.
func (ts *targetState) currentIdentity() identity {
	if ts.id != nil {
		return *ts.id
	}
	return ts.labels
}

// record adds a successful scrape taken at now: an interval from the previous
// one, unless this is the first scrape, the proxy behind the URL changed
// identity, or the clock did not advance.
func (ts *targetState) record(now time.Time, snap *snapshot, maxHist int) {
	ts.ok = true
	snap.at = now.UnixNano()
	id := ts.labels
	id.fill(snap.label)
	if ts.id == nil || *ts.id != id {
		ts.id = &id
		ts.prev = snap // a new proxy: a new baseline
		return
	}
	prev := ts.prev
	ts.prev = snap
	if prev == nil || snap.at <= prev.at {
		return
	}
	ts.hist.push(interval{
		start: prev.at,
		end:   snap.at,
		id:    ts.id,
		dirs:  delta(prev, snap),
	}, maxHist)
}

// history is the target's intervals, oldest first: a slice used as a queue.
type history struct {
	items []interval
	head  int
}

// interval is the increase of a target's counters between two scrapes.
type interval struct {
	start, end int64 // Unix nanoseconds of the two scrapes
	id         *identity
	dirs       []dirCounts // directions with a non-zero increase
}

func (h *history) push(iv interval, maxLen int) {
	if h.len() >= maxLen {
		h.items[h.head] = interval{}
		h.head++
	}
	h.items = append(h.items, iv)
	h.compact()
}

func (h *history) len() int { return len(h.items) - h.head }

// all returns the intervals, oldest first.
func (h *history) all() []interval { return h.items[h.head:] }

// dropEndedBy forgets the intervals that ended at or before t.
func (h *history) dropEndedBy(t int64) {
	n := sort.Search(h.len(), func(i int) bool { return h.items[h.head+i].end > t })
	for i := range n {
		h.items[h.head+i] = interval{}
	}
	h.head += n
	h.compact()
}

// compact moves the live items to the front once half the slice is dead, so
// the backing array does not grow without bound.
func (h *history) compact() {
	if h.head == 0 || h.head < len(h.items)/2 {
		return
	}
	n := copy(h.items, h.items[h.head:])
	clear(h.items[n:])
	h.items = h.items[:n]
	h.head = 0
}
