package telemetry

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestHistoryBounded checks the memory bound: intervals older than the
// retention are dropped, and rounds faster than the interval cannot grow a
// target's history past 2·Retention/Interval+2.
func TestHistoryBounded(t *testing.T) {
	tests := []struct {
		name    string
		step    time.Duration
		rounds  int
		wantLen int
	}{
		{"at the interval", 5 * time.Second, 500, 12},      // a minute of 5 s intervals
		{"faster than the interval", time.Second, 500, 26}, // capped
		{"slower than the interval", 20 * time.Second, 50, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Unix(1e9, 0)
			s := New(TargetsFunc(func() []Target { return nil }), Options{
				Interval: 5 * time.Second, Retention: time.Minute,
				Clock: func() time.Time { return now },
			})
			ts := newTargetState("k", Target{URL: "http://127.0.0.1:1/metrics"})
			ts.listed = true
			s.targets["k"] = ts
			for i := range tt.rounds {
				now = now.Add(tt.step)
				snap, err := parseMetrics(strings.NewReader(
					`response_total{direction="inbound",namespace="shop",deployment="web",pod="p"} ` + strconv.Itoa(i+1) + "\n"))
				if err != nil {
					t.Fatal(err)
				}
				ts.record(now, snap, s.maxHist)
				s.expireLocked(now)
				if n := ts.hist.len(); n > s.maxHist {
					t.Fatalf("round %d: %d intervals, more than %d", i, n, s.maxHist)
				}
				if c := cap(ts.hist.items); c > 4*s.maxHist {
					t.Fatalf("round %d: backing array of %d", i, c)
				}
			}
			if n := ts.hist.len(); n != tt.wantLen {
				t.Errorf("%d intervals kept, want %d", n, tt.wantLen)
			}
			if first := ts.hist.all()[0]; first.end < now.Add(-time.Minute).UnixNano() {
				t.Errorf("kept an interval that ended %v ago", now.Sub(time.Unix(0, first.end)))
			}
		})
	}
}

// TestParseVariants checks the text the parser accepts beyond the proxy's:
// untyped samples without TYPE lines, float counts, a histogram without a +Inf
// bucket line, and how the identity labels are found.
func TestParseVariants(t *testing.T) {
	tests := []struct {
		name      string
		text      string
		dir       string
		total     float64
		failures  float64
		tls       float64
		les       []float64
		buckets   []float64
		labels    map[string]string
		wantStart float64
	}{
		{
			name: "untyped",
			text: `response_total{direction="inbound",classification="failure",tls="true",namespace="a",statefulset="db",pod="db-0"} 2
response_total{direction="inbound",classification="success",tls="no_identity",namespace="a",statefulset="db",pod="db-0"} 3.5
response_latency_ms_bucket{direction="inbound",le="10",status_code="200"} 4
response_latency_ms_bucket{direction="inbound",le="+Inf",status_code="200"} 5
response_latency_ms_bucket{direction="inbound",le="10",status_code="500"} 1
response_latency_ms_bucket{direction="inbound",le="+Inf",status_code="500"} 1
process_start_time_seconds 1234
`,
			dir: "inbound", total: 5.5, failures: 2, tls: 2,
			les: []float64{10, math.Inf(1)}, buckets: []float64{5, 6},
			labels:    map[string]string{"namespace": "a", "statefulset": "db", "pod": "db-0"},
			wantStart: 1234,
		},
		{
			name: "histogram without +Inf line",
			text: `# TYPE response_latency_ms histogram
response_latency_ms_bucket{direction="outbound",le="5"} 2
response_latency_ms_sum{direction="outbound"} 4
response_latency_ms_count{direction="outbound"} 3
# TYPE tcp_open_total counter
tcp_open_total{direction="outbound",namespace="b",deployment="api",revision="7"} 1
`,
			dir: "outbound",
			les: []float64{5, math.Inf(1)}, buckets: []float64{2, 3},
			labels: map[string]string{"namespace": "b", "deployment": "api", "revision": "7"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap, err := parseMetrics(strings.NewReader(tt.text))
			if err != nil {
				t.Fatalf("parseMetrics: %v", err)
			}
			d := snap.dirs[tt.dir]
			if d == nil {
				t.Fatalf("no %s counters in %+v", tt.dir, snap.dirs)
			}
			if d.total != tt.total || d.failures != tt.failures || d.tls != tt.tls {
				t.Errorf("total/failures/tls = %v/%v/%v, want %v/%v/%v", d.total, d.failures, d.tls, tt.total, tt.failures, tt.tls)
			}
			if !slices.Equal(d.les, tt.les) || !slices.Equal(d.buckets, tt.buckets) {
				t.Errorf("buckets %v %v, want %v %v", d.les, d.buckets, tt.les, tt.buckets)
			}
			for k, v := range tt.labels {
				if snap.labels[k] != v {
					t.Errorf("label %s = %q, want %q", k, snap.labels[k], v)
				}
			}
			var id identity
			id.fill(snap.label)
			if id.workload == "" {
				t.Errorf("no workload found in %v", snap.labels)
			}
			if snap.start != tt.wantStart {
				t.Errorf("start = %v, want %v", snap.start, tt.wantStart)
			}
		})
	}
}

func TestScrapeBodyLimit(t *testing.T) {
	big := strings.NewReader(strings.Repeat("# comment\n", 20))
	l := &limitedReader{r: big, n: 50}
	if _, err := parseMetrics(l); err == nil && !l.exceeded {
		t.Errorf("a body over the limit was neither rejected nor flagged")
	}
	small := &limitedReader{r: strings.NewReader("# comment\n"), n: 50}
	if _, err := parseMetrics(small); err != nil || small.exceeded {
		t.Errorf("a body under the limit: err %v, exceeded %v", err, small.exceeded)
	}
}
