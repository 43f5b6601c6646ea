package telemetry

import (
	"context"
	"fmt"
	"hash/maphash"
	"io"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metric and label names read from the proxies.
const (
	metricResponseTotal   = "response_total"
	metricRequestTotal    = "request_total"
	metricLatency         = "response_latency_ms"
	metricLatencyBucket   = "response_latency_ms_bucket"
	metricProcessStart    = "process_start_time_seconds"
	labelDirection        = "direction"
	labelClassification   = "classification"
	labelTLS              = "tls"
	labelLe               = "le"
	classificationFailure = "failure"
)

// maxScrapeBytes bounds the body of one scrape.
const maxScrapeBytes = 32 << 20

// acceptHeader asks for the Prometheus text format, the one the store parses.
const acceptHeader = "text/plain;version=0.0.4;q=1,*/*;q=0.1"

// snapshot is one successful scrape, reduced: per direction the counters the
// store keeps, plus the labels needed to attribute it.
type snapshot struct {
	at     int64   // Unix nanoseconds of the round
	start  float64 // process_start_time_seconds, 0 when not exposed
	dirs   map[string]*dirCounts
	labels map[string]string // static labels found on the series (namespace, pod, ...)
	// raw holds every response_total and response_latency_ms bucket series
	// read, by a hash of its name and labels, to tell counter resets apart.
	raw map[uint64]float64
}

// seriesSeed seeds the hashes of snapshot.raw; it is fixed for the process,
// so that the hashes of two scrapes compare.
var seriesSeed = maphash.MakeSeed()

// seriesHash hashes a series' name and labels, independently of label order.
func seriesHash(name string, labels []*dto.LabelPair) uint64 {
	h := maphash.String(seriesSeed, name)
	for _, lp := range labels {
		h += maphash.String(seriesSeed, lp.GetName()+"\xff"+lp.GetValue()) * 0x9e3779b97f4a7c15
	}
	return h
}

// label returns the scraped label name, or "".
func (s *snapshot) label(name string) string { return s.labels[name] }

// dirCounts are one direction's counters: cumulative in a snapshot, increases
// in an interval.
type dirCounts struct {
	direction string
	total     float64   // response_total
	failures  float64   // response_total{classification="failure"}
	tls       float64   // response_total{tls="true"}
	les       []float64 // response_latency_ms bucket bounds, ascending, ending with +Inf
	buckets   []float64 // cumulative counts, aligned with les
}

// zero reports whether every counter is zero.
func (d *dirCounts) zero() bool {
	if d.total != 0 || d.failures != 0 || d.tls != 0 {
		return false
	}
	for _, b := range d.buckets {
		if b != 0 {
			return false
		}
	}
	return true
}

// scrape fetches and parses one target.
func (s *Store) scrape(ctx context.Context, url string) (*snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("scraping %q: %w", url, err)
	}
	req.Header.Set("Accept", acceptHeader)
	req.Header.Set("User-Agent", "sluice-telemetry")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("scraping %s: status %s", url, resp.Status)
	}
	body := &limitedReader{r: resp.Body, n: maxScrapeBytes}
	snap, err := parseMetrics(body)
	if body.exceeded {
		return nil, fmt.Errorf("scraping %s: body exceeds %d bytes", url, maxScrapeBytes)
	}
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", url, err)
	}
	return snap, nil
}

// limitedReader reads at most n bytes and remembers whether there were more.
type limitedReader struct {
	r        io.Reader
	n        int64
	exceeded bool
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		var one [1]byte
		if n, _ := l.r.Read(one[:]); n > 0 {
			l.exceeded = true
		}
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// parseMetrics parses the Prometheus text format and reduces it to a snapshot.
func parseMetrics(r io.Reader) (*snapshot, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parsing metrics: %w", err)
	}
	snap := &snapshot{dirs: make(map[string]*dirCounts), labels: staticLabels(fams), raw: make(map[uint64]float64)}
	hists := make(map[string]map[float64]float64) // direction -> le -> cumulative count

	if f := fams[metricResponseTotal]; f != nil {
		for _, m := range f.GetMetric() {
			dir := labelValue(m, labelDirection)
			if dir == "" {
				continue
			}
			v := scalar(m)
			if math.IsNaN(v) {
				continue
			}
			snap.raw[seriesHash(metricResponseTotal, m.GetLabel())] = v
			d := snap.dir(dir)
			d.total += v
			if labelValue(m, labelClassification) == classificationFailure {
				d.failures += v
			}
			if labelValue(m, labelTLS) == "true" {
				d.tls += v
			}
		}
	}
	addBucket := func(dir string, m *dto.Metric, le, v float64) {
		if dir == "" || math.IsNaN(le) || math.IsNaN(v) {
			return
		}
		snap.raw[seriesHash(metricLatencyBucket+"\xff"+strconv.FormatFloat(le, 'g', -1, 64), m.GetLabel())] = v
		h := hists[dir]
		if h == nil {
			h = make(map[float64]float64)
			hists[dir] = h
		}
		h[le] += v
	}
	if f := fams[metricLatency]; f != nil && f.GetType() == dto.MetricType_HISTOGRAM {
		for _, m := range f.GetMetric() {
			dir := labelValue(m, labelDirection)
			h := m.GetHistogram()
			sawInf := false
			for _, b := range h.GetBucket() {
				c := float64(b.GetCumulativeCount())
				if b.CumulativeCountFloat != nil {
					c = b.GetCumulativeCountFloat()
				}
				le := b.GetUpperBound()
				sawInf = sawInf || math.IsInf(le, 1)
				addBucket(dir, m, le, c)
			}
			if !sawInf && len(h.GetBucket()) > 0 {
				c := float64(h.GetSampleCount())
				if h.SampleCountFloat != nil {
					c = h.GetSampleCountFloat()
				}
				addBucket(dir, m, math.Inf(1), c)
			}
		}
	} else if f := fams[metricLatencyBucket]; f != nil {
		// Without a TYPE line the buckets are an untyped family of their own.
		for _, m := range f.GetMetric() {
			le, err := strconv.ParseFloat(labelValue(m, labelLe), 64)
			if err != nil {
				continue
			}
			addBucket(labelValue(m, labelDirection), m, le, scalar(m))
		}
	}
	for dir, h := range hists {
		d := snap.dir(dir)
		d.les = slices.Sorted(maps.Keys(h))
		d.buckets = make([]float64, len(d.les))
		for i, le := range d.les {
			d.buckets[i] = h[le]
		}
	}
	if f := fams[metricProcessStart]; f != nil && len(f.GetMetric()) > 0 {
		snap.start = scalar(f.GetMetric()[0])
	}
	return snap, nil
}

// dir returns the counters of direction, creating them.
func (s *snapshot) dir(direction string) *dirCounts {
	d := s.dirs[direction]
	if d == nil {
		d = &dirCounts{direction: direction}
		s.dirs[direction] = d
	}
	return d
}

// identityFamilies are searched first, in this order, for the labels that
// attribute a proxy; then every other family in name order.
var identityFamilies = []string{metricResponseTotal, metricRequestTotal, metricLatency, "tcp_open_total"}

// staticLabels returns, for each label that names a proxy (namespace, pod,
// revision and the workload labels), the first non-empty value found.
func staticLabels(fams map[string]*dto.MetricFamily) map[string]string {
	want := append([]string{"namespace", "pod", "revision"}, workloadLabels...)
	out := make(map[string]string)
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range fams {
			if !slices.Contains(identityFamilies, n) && !yield(n) {
				return
			}
		}
	})
	for _, n := range append(slices.Clone(identityFamilies), names...) {
		f := fams[n]
		if f == nil {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetValue() != "" && out[lp.GetName()] == "" && slices.Contains(want, lp.GetName()) {
					out[lp.GetName()] = lp.GetValue()
				}
			}
			if len(out) == len(want) {
				return out
			}
		}
	}
	return out
}

// labelValue returns the value of the label name on m, or "".
func labelValue(m *dto.Metric, name string) string {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name {
			return lp.GetValue()
		}
	}
	return ""
}

// scalar returns the value of a counter, gauge or untyped sample, or NaN.
func scalar(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	}
	return math.NaN()
}

// delta returns the increase from prev to cur per direction, leaving out
// directions that did not change. If the proxy restarted in between (its start
// time changed, or any series went down or disappeared) the increase is the
// whole of cur, as Prometheus' increase() treats a counter reset: a proxy
// restarts all its counters at once. Bucket
// bounds equal to prev's are replaced in cur by prev's slice, so that a
// target's intervals share one copy.
func delta(prev, cur *snapshot) []dirCounts {
	for dir, c := range cur.dirs {
		if p := prev.dirs[dir]; p != nil && slices.Equal(p.les, c.les) {
			c.les = p.les
		}
	}
	reset := prev.start != 0 && cur.start != 0 && prev.start != cur.start
	for k, p := range prev.raw {
		if reset {
			break
		}
		c, ok := cur.raw[k]
		reset = !ok || c < p
	}
	var out []dirCounts
	for _, dir := range slices.Sorted(maps.Keys(cur.dirs)) {
		c := cur.dirs[dir]
		p := prev.dirs[dir]
		d := dirCounts{direction: dir, les: c.les}
		if reset || p == nil {
			d.total, d.failures, d.tls = c.total, c.failures, c.tls
			d.buckets = slices.Clone(c.buckets)
		} else {
			d.total, d.failures, d.tls = c.total-p.total, c.failures-p.failures, c.tls-p.tls
			d.buckets = make([]float64, len(c.les))
			for i, le := range c.les {
				d.buckets[i] = c.buckets[i] - bucketAt(p, le)
			}
		}
		if !d.zero() {
			out = append(out, d)
		}
	}
	return out
}

// bucketAt returns d's cumulative count at bound le, or 0 when d has no such bound.
func bucketAt(d *dirCounts, le float64) float64 {
	if i, ok := slices.BinarySearch(d.les, le); ok {
		return d.buckets[i]
	}
	return 0
}
