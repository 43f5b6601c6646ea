package metrics

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// numGRPC is the number of per-status response slots kept lock-free: "not gRPC"
// plus the 17 gRPC codes 0 (OK) to 16 (UNAUTHENTICATED).
const numGRPC = 18

// HTTPStats records request_total, response_total and response_latency_ms for one
// direction and label set. Get it from Registry.HTTP and cache it. Its recording
// methods take no lock and do not allocate once the series they touch exist.
type HTTPStats struct {
	base   Labels // direction + caller labels, as given
	static Labels

	reqSeries *series
	requests  striped

	// statuses holds per-status-code stats for codes 0..599, one lazily created
	// table of 100 slots per hundred; code 0 (or below) means "no response".
	statuses [6]atomic.Pointer[[100]atomic.Pointer[statusStats]]

	mu    sync.RWMutex
	other map[int]*statusStats // codes of 600 and above, under mu
}

// statusStats is everything recorded for one status code.
type statusStats struct {
	owner  *HTTPStats
	status int

	latencySeries *series
	latency       latencyHist

	// resp[failure][grpc+1] for grpc in -1 (not gRPC) .. 16, without an error label.
	resp [2][numGRPC]atomic.Pointer[respCounter]

	mu   sync.RWMutex
	rare map[respKey]*respCounter // with an error label or an unusual gRPC code
}

// respKey identifies a response_total series within one status code.
type respKey struct {
	failure bool
	grpc    int
	err     string
}

// respCounter is one response_total series.
type respCounter struct {
	s *series
	n striped
}

func newHTTPStats(direction string, labels, static Labels) *HTTPStats {
	base := make(Labels, 0, len(labels)+1)
	base = append(base, Label{"direction", direction})
	base = append(base, labels...)
	return &HTTPStats{
		base:      base,
		static:    static,
		reqSeries: newSeries("", base, static),
		requests:  newStriped(),
	}
}

// Request counts one request (request_total).
func (s *HTTPStats) Request() { s.requests.add(stripe(), 1) }

// Requests returns the number of requests counted so far.
func (s *HTTPStats) Requests() uint64 { return s.requests.load() }

// Response records one response: response_total{status_code, classification,
// grpc_status, error} +1 and latency (the time to response headers, or to the
// error) in response_latency_ms{status_code}.
//
// status <= 0 means no response was received or sent: the status_code label is
// left out. grpcStatus < 0 means the request was not gRPC: the grpc_status label
// is left out (Prometheus treats an absent label and an empty one alike, so
// queries written for Linkerd's grpc_status="" still match). failure selects
// classification="failure" over "success". err, when not empty, adds an error
// label naming a proxy-generated error.
func (s *HTTPStats) Response(status int, grpcStatus int, failure bool, err string, latency time.Duration) {
	st := s.statusFor(status)
	i := stripe()
	st.latency.observe(i, latency)
	st.counterFor(grpcStatus, failure, err).n.add(i, 1)
}

// statusFor returns the stats for status, creating them on first use. The
// common case is two atomic loads.
func (s *HTTPStats) statusFor(status int) *statusStats {
	if uint(status) < 600 {
		if t := s.statuses[status/100].Load(); t != nil {
			if st := t[status%100].Load(); st != nil {
				return st
			}
		}
	}
	return s.slowStatus(status)
}

func (s *HTTPStats) slowStatus(status int) *statusStats {
	status = max(status, 0)
	s.mu.Lock()
	defer s.mu.Unlock()
	if status >= 600 {
		if st := s.other[status]; st != nil {
			return st
		}
		st := s.newStatus(status)
		if s.other == nil {
			s.other = make(map[int]*statusStats)
		}
		s.other[status] = st
		return st
	}
	t := s.statuses[status/100].Load()
	if t == nil {
		t = new([100]atomic.Pointer[statusStats])
		s.statuses[status/100].Store(t)
	}
	if st := t[status%100].Load(); st != nil {
		return st
	}
	st := s.newStatus(status)
	t[status%100].Store(st)
	return st
}

func (s *HTTPStats) newStatus(status int) *statusStats {
	return &statusStats{
		owner:         s,
		status:        status,
		latencySeries: newSeries("le", s.base, statusLabel(status), s.static),
		latency:       newLatencyHist(),
	}
}

// statusLabel is the status_code label for status, or none for "no response".
func statusLabel(status int) Labels {
	if status <= 0 {
		return nil
	}
	return Labels{{"status_code", strconv.Itoa(status)}}
}

// counterFor returns the response_total series for the outcome, creating it on
// first use. Without an error label and for a known gRPC code it is one atomic load.
func (st *statusStats) counterFor(grpc int, failure bool, err string) *respCounter {
	grpc = max(grpc, -1)
	f := 0
	if failure {
		f = 1
	}
	if err == "" && grpc < numGRPC-1 {
		if c := st.resp[f][grpc+1].Load(); c != nil {
			return c
		}
	}
	return st.slowCounter(respKey{failure: failure, grpc: grpc, err: err})
}

func (st *statusStats) slowCounter(k respKey) *respCounter {
	common := k.err == "" && k.grpc < numGRPC-1
	if !common {
		st.mu.RLock()
		c := st.rare[k]
		st.mu.RUnlock()
		if c != nil {
			return c
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	f := 0
	if k.failure {
		f = 1
	}
	if common {
		if c := st.resp[f][k.grpc+1].Load(); c != nil {
			return c
		}
	} else if c := st.rare[k]; c != nil {
		return c
	}
	class := "success"
	if k.failure {
		class = "failure"
	}
	own := Labels{{"classification", class}}
	if k.grpc >= 0 {
		own = append(own, Label{"grpc_status", strconv.Itoa(k.grpc)})
	}
	if k.err != "" {
		own = append(own, Label{"error", k.err})
	}
	c := &respCounter{
		s: newSeries("", st.owner.base, statusLabel(st.status), own, st.owner.static),
		n: newStriped(),
	}
	if common {
		st.resp[f][k.grpc+1].Store(c)
	} else {
		if st.rare == nil {
			st.rare = make(map[respKey]*respCounter)
		}
		st.rare[k] = c
	}
	return c
}

// collect adds the handle's series to c.
func (s *HTTPStats) collect(c *collector) {
	c.value(RequestTotal, s.reqSeries, float64(s.requests.load()))
	for i := range s.statuses {
		t := s.statuses[i].Load()
		if t == nil {
			continue
		}
		for j := range t {
			if st := t[j].Load(); st != nil {
				st.collect(c)
			}
		}
	}
	s.mu.RLock()
	for _, st := range s.other {
		st.collect(c)
	}
	s.mu.RUnlock()
}

func (st *statusStats) collect(c *collector) {
	// Read the counters before the histogram: a response counts in both, and the
	// histogram is written first, so the histogram's count is never below the
	// counters' sum in one scrape.
	for f := range st.resp {
		for g := range st.resp[f] {
			if rc := st.resp[f][g].Load(); rc != nil {
				c.value(ResponseTotal, rc.s, float64(rc.n.load()))
			}
		}
	}
	st.mu.RLock()
	for _, rc := range st.rare {
		c.value(ResponseTotal, rc.s, float64(rc.n.load()))
	}
	st.mu.RUnlock()
	c.hist(ResponseLatencyMs, st.latencySeries, st.latency.snapshot())
}
