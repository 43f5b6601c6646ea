package telemetry

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"time"
)

// Selector picks the proxies and direction a query aggregates.
type Selector struct {
	// Namespace and Workload (the deployment, or other workload) are required.
	Namespace, Workload string
	// Revision and Pod narrow the selection; "" means any.
	Revision, Pod string
	// Direction is "inbound" (the default when "") or "outbound".
	Direction string
}

// validate checks the selector and returns it with defaults applied.
func (sel Selector) validate() (Selector, error) {
	var errs []error
	if sel.Namespace == "" {
		errs = append(errs, errors.New("namespace is required"))
	}
	if sel.Workload == "" {
		errs = append(errs, errors.New("workload is required"))
	}
	switch sel.Direction {
	case "":
		sel.Direction = Inbound
	case Inbound, Outbound:
	default:
		errs = append(errs, fmt.Errorf("direction %q is neither %q nor %q", sel.Direction, Inbound, Outbound))
	}
	if err := errors.Join(errs...); err != nil {
		return sel, fmt.Errorf("telemetry: bad selector: %w", err)
	}
	return sel, nil
}

func (sel Selector) matches(id *identity) bool {
	return id.namespace == sel.Namespace && id.workload == sel.Workload &&
		(sel.Revision == "" || id.revision == sel.Revision) &&
		(sel.Pod == "" || id.pod == sel.Pod)
}

// Window aggregates the selected proxies' counters over a time range: the sum
// over proxies of each counter's increase (reset-aware, as Prometheus'
// increase()).
type Window struct {
	// Requests is the number of responses; Successes and Failures split them by
	// classification (anything not "failure" is a success).
	Requests  float64 `json:"requests"`
	Successes float64 `json:"successes"`
	Failures  float64 `json:"failures"`
	// Duration is the time the counted increases cover: from the window's start
	// (or the first scrape after it) to the latest scrape in it, at most the
	// window asked for. It is what RPS divides by.
	Duration time.Duration `json:"duration"`
	// Buckets is the latency histogram's increase: cumulative counts by upper
	// bound in milliseconds, ascending, the last bound +Inf.
	Buckets []Bucket `json:"buckets"`
	// TLSRequests is the number of responses to mutually authenticated
	// requests (tls="true").
	TLSRequests float64 `json:"tls_requests"`
	// Pods is the number of distinct proxies scraped in the window.
	Pods int `json:"pods"`
}

// Bucket is one cumulative histogram bucket: Count observations of at most LE
// milliseconds. In JSON, LE is a string, as in the exposition ("10", "+Inf").
type Bucket struct {
	LE    float64
	Count float64
}

// bucketJSON is Bucket's JSON form.
type bucketJSON struct {
	LE    string  `json:"le"`
	Count float64 `json:"count"`
}

// MarshalJSON writes {"le": "<bound>", "count": n}, since JSON has no infinity.
func (b Bucket) MarshalJSON() ([]byte, error) {
	return json.Marshal(bucketJSON{LE: strconv.FormatFloat(b.LE, 'g', -1, 64), Count: b.Count})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (b *Bucket) UnmarshalJSON(data []byte) error {
	var j bucketJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	le, err := strconv.ParseFloat(j.LE, 64)
	if err != nil {
		return fmt.Errorf("telemetry: bucket bound %q: %w", j.LE, err)
	}
	b.LE, b.Count = le, j.Count
	return nil
}

// SuccessRate returns Successes/Requests, between 0 and 1; NaN when there
// were no requests.
func (w Window) SuccessRate() float64 {
	if w.Requests <= 0 {
		return math.NaN()
	}
	return w.Successes / w.Requests
}

// RPS returns the requests per second over the window's Duration; 0 when it
// covers no time.
func (w Window) RPS() float64 {
	if w.Duration <= 0 {
		return 0
	}
	return w.Requests / w.Duration.Seconds()
}

// TLSShare returns TLSRequests/Requests, between 0 and 1; NaN when there were
// no requests.
func (w Window) TLSShare() float64 {
	if w.Requests <= 0 {
		return math.NaN()
	}
	return w.TLSRequests / w.Requests
}

// Quantile estimates the q-quantile (0 ≤ q ≤ 1) of the latency in
// milliseconds from Buckets, as PromQL's histogram_quantile does: it finds the
// bucket holding the rank q·count and interpolates linearly within it (the
// first bucket starts at 0). A rank in the +Inf bucket returns the highest
// finite bound. It returns NaN without observations or without a +Inf bucket,
// -Inf for q < 0 and +Inf for q > 1.
func (w Window) Quantile(q float64) float64 {
	switch {
	case math.IsNaN(q):
		return math.NaN()
	case q < 0:
		return math.Inf(-1)
	case q > 1:
		return math.Inf(1)
	}
	bs := w.Buckets
	if len(bs) < 2 || !math.IsInf(bs[len(bs)-1].LE, 1) {
		return math.NaN()
	}
	// Counts must not decrease with the bound; smooth any that do (they can
	// when proxies of one selection use different bounds).
	counts := make([]float64, len(bs))
	for i, b := range bs {
		counts[i] = b.Count
		if i > 0 && counts[i] < counts[i-1] {
			counts[i] = counts[i-1]
		}
	}
	total := counts[len(counts)-1]
	if total <= 0 {
		return math.NaN()
	}
	rank := q * total
	i := sort.SearchFloat64s(counts, rank)
	if rank == 0 {
		// The minimum: the lower end of the first bucket holding anything.
		i = sort.Search(len(counts), func(i int) bool { return counts[i] > 0 })
		if i == 0 {
			return min(0, bs[0].LE)
		}
		return bs[i-1].LE
	}
	if i == len(bs)-1 {
		return bs[len(bs)-2].LE
	}
	if i == 0 && bs[0].LE <= 0 {
		return bs[0].LE
	}
	lo, hi, n := 0.0, bs[i].LE, counts[i]
	if i > 0 {
		lo = bs[i-1].LE
		n -= counts[i-1]
		rank -= counts[i-1]
	}
	return lo + (hi-lo)*(rank/n)
}

// Query aggregates the selected proxies over the last d: [now-d, now]. When
// the range holds no requests it returns ErrNoData, with the window filled in
// as far as known (Pods, Duration); other errors name a bad selector or
// duration.
func (s *Store) Query(sel Selector, d time.Duration) (Window, error) {
	sel, err := sel.validate()
	if err != nil {
		return Window{}, err
	}
	if d <= 0 {
		return Window{}, fmt.Errorf("telemetry: window %v is not positive", d)
	}
	now := s.clock()
	s.mu.RLock()
	w := s.aggregateLocked(sel, now.Add(-d).UnixNano(), now.UnixNano())
	s.mu.RUnlock()
	if w.Requests <= 0 {
		return w, fmt.Errorf("telemetry: %s/%s (%s) over %v: %w", sel.Namespace, sel.Workload, sel.Direction, d, ErrNoData)
	}
	return w, nil
}

// aggregateLocked sums the intervals matching sel over [from, to], prorating
// the intervals that straddle from. s.mu must be held.
func (s *Store) aggregateLocked(sel Selector, from, to int64) Window {
	var w Window
	pods := make(map[string]bool)
	hist := make(map[float64]float64)
	spanFrom, spanTo := int64(math.MaxInt64), int64(math.MinInt64)
	for _, ts := range s.targets {
		ivs := ts.hist.all()
		// Intervals are ordered by end; skip those that ended before the window.
		first := sort.Search(len(ivs), func(i int) bool { return ivs[i].end > from })
		for _, iv := range ivs[first:] {
			if iv.end > to || !sel.matches(iv.id) {
				continue
			}
			pods[podKey(ts, iv.id)] = true
			start := max(iv.start, from)
			frac := float64(iv.end-start) / float64(iv.end-iv.start)
			spanFrom, spanTo = min(spanFrom, start), max(spanTo, iv.end)
			for i := range iv.dirs {
				dc := &iv.dirs[i]
				if dc.direction != sel.Direction {
					continue
				}
				w.Requests += frac * dc.total
				w.Failures += frac * dc.failures
				w.TLSRequests += frac * dc.tls
				for j, le := range dc.les {
					hist[le] += frac * dc.buckets[j]
				}
			}
		}
		// A proxy scraped only once in the window (a baseline) was still seen.
		if p := ts.prev; p != nil && p.at > from && p.at <= to && sel.matches(ts.id) {
			pods[podKey(ts, ts.id)] = true
		}
	}
	w.Successes = w.Requests - w.Failures
	w.Pods = len(pods)
	if spanTo > spanFrom {
		w.Duration = time.Duration(spanTo - spanFrom)
	}
	if len(hist) > 0 {
		w.Buckets = make([]Bucket, 0, len(hist))
		for le, c := range hist {
			w.Buckets = append(w.Buckets, Bucket{LE: le, Count: c})
		}
		slices.SortFunc(w.Buckets, func(a, b Bucket) int { return cmp.Compare(a.LE, b.LE) })
	}
	return w
}

// podKey names the proxy behind ts for counting distinct pods: its pod name,
// or else the target.
func podKey(ts *targetState, id *identity) string {
	if id != nil && id.pod != "" {
		return id.namespace + "/" + id.pod
	}
	return "\x00" + ts.key
}

// WorkloadSummary is one workload's state, for `sluice stat`.
type WorkloadSummary struct {
	Namespace string `json:"namespace"`
	Workload  string `json:"workload"`
	// Pods is the number of the workload's proxies listed now; Meshed is how
	// many of them answered their latest scrape. A workload no longer listed
	// but with traffic in the window has 0 of 0 (its Window.Pods still counts
	// the proxies that served it).
	Pods   int `json:"pods"`
	Meshed int `json:"meshed"`
	// Window is the workload's inbound traffic over the window, all revisions.
	Window Window `json:"window"`
	// Errors are the latest scrape failures of the workload's listed proxies
	// that failed their latest scrape: "<pod>: <error>".
	Errors []string `json:"errors,omitempty"`
}

// Workloads summarizes every workload with a proxy listed now or scraped in
// the last d, sorted by namespace and workload.
func (s *Store) Workloads(d time.Duration) []WorkloadSummary {
	now := s.clock()
	from, to := now.Add(-d).UnixNano(), now.UnixNano()
	type wkey struct{ namespace, workload string }
	type acc struct {
		pods, meshed map[string]bool // listed now, answering
		errs         []string
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	accs := make(map[wkey]*acc)
	get := func(id *identity) *acc {
		k := wkey{id.namespace, id.workload}
		a := accs[k]
		if a == nil {
			a = &acc{pods: make(map[string]bool), meshed: make(map[string]bool)}
			accs[k] = a
		}
		return a
	}
	for _, ts := range s.targets {
		if ts.listed {
			id := ts.currentIdentity()
			a := get(&id)
			pk := podKey(ts, &id)
			a.pods[pk] = true
			if ts.ok {
				a.meshed[pk] = true
			} else if ts.lastErr != "" {
				a.errs = append(a.errs, ts.podName()+": "+ts.lastErr)
			}
		}
		// Make workloads seen in the window appear, even if no longer listed.
		for _, iv := range ts.hist.all() {
			if iv.end > from && iv.end <= to {
				get(iv.id)
			}
		}
		if p := ts.prev; p != nil && p.at > from && p.at <= to {
			get(ts.id)
		}
	}
	out := make([]WorkloadSummary, 0, len(accs))
	for k, a := range accs {
		slices.Sort(a.errs)
		ws := WorkloadSummary{
			Namespace: k.namespace,
			Workload:  k.workload,
			Pods:      len(a.pods),
			Meshed:    len(a.meshed),
			Errors:    a.errs,
		}
		if sel, err := (Selector{Namespace: k.namespace, Workload: k.workload}).validate(); err == nil {
			ws.Window = s.aggregateLocked(sel, from, to)
		}
		out = append(out, ws)
	}
	slices.SortFunc(out, func(a, b WorkloadSummary) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Workload, b.Workload))
	})
	return out
}
