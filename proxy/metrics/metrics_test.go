package metrics_test

import (
	"bytes"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/sluicehq/sluice/proxy/metrics"
)

// lineDiff reports the lines where got differs from want, or "" if equal.
func lineDiff(want, got string) string {
	if want == got {
		return ""
	}
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	shown := 0
	for i := 0; i < max(len(w), len(g)) && shown < 10; i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n  want %q\n  got  %q\n", i+1, wl, gl)
			shown++
		}
	}
	fmt.Fprintf(&b, "(want %d lines, got %d)", len(w), len(g))
	return b.String()
}

// scrape returns the registry's text exposition.
func scrape(t testing.TB, r *metrics.Registry) string {
	t.Helper()
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatalf("WriteText: %v", err)
	}
	return b.String()
}

// parse parses text with Prometheus' own parser, failing the test if it is not
// valid exposition.
func parse(t testing.TB, text string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("exposition does not parse: %v\n%s", err, text)
	}
	return fams
}

// find returns the value of the sample called name whose labels include want,
// summed over all matching samples, and how many matched.
func find(fams []metrics.Family, name string, want map[string]string) (float64, int) {
	var sum float64
	n := 0
	for _, f := range fams {
		for _, s := range f.Samples {
			if s.Name != name || !hasLabels(s.Labels, want) {
				continue
			}
			sum += s.Value
			n++
		}
	}
	return sum, n
}

func hasLabels(ls metrics.Labels, want map[string]string) bool {
	for k, v := range want {
		if got, ok := ls.Get(k); !ok || got != v {
			return false
		}
	}
	return true
}

func TestExpositionParses(t *testing.T) {
	r := metrics.NewRegistry(staticLabels())
	fill(r)
	fams := parse(t, scrape(t, r))

	wantTypes := map[string]dto.MetricType{
		"request_total":                                      dto.MetricType_COUNTER,
		"response_total":                                     dto.MetricType_COUNTER,
		"response_latency_ms":                                dto.MetricType_HISTOGRAM,
		"tcp_open_total":                                     dto.MetricType_COUNTER,
		"tcp_open_connections":                               dto.MetricType_GAUGE,
		"tcp_close_total":                                    dto.MetricType_COUNTER,
		"tcp_read_bytes_total":                               dto.MetricType_COUNTER,
		"tcp_write_bytes_total":                              dto.MetricType_COUNTER,
		"inbound_http_authz_allow_total":                     dto.MetricType_COUNTER,
		"outbound_http_balancer_endpoints":                   dto.MetricType_GAUGE,
		"control_identity_cert_expiration_timestamp_seconds": dto.MetricType_GAUGE,
	}
	if len(fams) != len(wantTypes) {
		t.Errorf("parsed %d families, want %d", len(fams), len(wantTypes))
	}
	for name, typ := range wantTypes {
		f := fams[name]
		if f == nil {
			t.Errorf("family %s missing", name)
			continue
		}
		if f.GetType() != typ {
			t.Errorf("family %s has type %v, want %v", name, f.GetType(), typ)
		}
	}
	if got := fams["control_identity_cert_expiration_timestamp_seconds"].GetHelp(); got != "Expiry of the\ncert, \\ in seconds." {
		t.Errorf("help round trip = %q", got)
	}

	// Histograms: Prometheus reads the count and the buckets we meant.
	var total uint64
	for _, m := range fams["response_latency_ms"].GetMetric() {
		h := m.GetHistogram()
		total += h.GetSampleCount()
		var prev uint64
		for _, b := range h.GetBucket() {
			if b.GetCumulativeCount() < prev {
				t.Errorf("buckets not cumulative: %v", h)
			}
			prev = b.GetCumulativeCount()
		}
		if prev != h.GetSampleCount() {
			t.Errorf("last bucket %d != count %d", prev, h.GetSampleCount())
		}
	}
	if total != 4 {
		t.Errorf("histogram counts sum to %d, want 4 responses", total)
	}
	for _, m := range fams["request_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "direction" && l.GetValue() == "inbound" && m.GetCounter().GetValue() != 2 {
				t.Errorf("inbound request_total = %v, want 2", m.GetCounter().GetValue())
			}
		}
	}
}

func TestLabelEscapingAndSanitizing(t *testing.T) {
	awkward := "a\\b\"c\nd"
	r := metrics.NewRegistry(metrics.Labels{{"pod", "p\xff"}})
	r.HTTP("inbound", metrics.Labels{{"authority", awkward}, {"dst.service", "x"}}).Request()
	r.Counter("my-metric.total", "Help with \\ and \n.", metrics.Labels{{"9lives", "cat"}}).Inc()
	text := scrape(t, r)

	for _, want := range []string{
		`request_total{direction="inbound",authority="a\\b\"c\nd",dst_service="x",pod="p` + "\uFFFD" + `"} 1`,
		`# HELP my_metric_total Help with \\ and \n.`,
		`my_metric_total{_9lives="cat",pod="p` + "\uFFFD" + `"} 1`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("exposition lacks line %q:\n%s", want, text)
		}
	}
	if got, want := (metrics.Labels{{"a", awkward}, {"b", ""}}).String(), `{a="a\\b\"c\nd",b=""}`; got != want {
		t.Errorf("Labels.String() = %s, want %s", got, want)
	}
	fams := parse(t, text)
	got := fams["request_total"].GetMetric()[0].GetLabel()
	if got[1].GetName() != "authority" || got[1].GetValue() != awkward {
		t.Errorf("parsed authority label = %v, want value %q", got[1], awkward)
	}
}

func TestLabelOrderAndPrecedence(t *testing.T) {
	r := metrics.NewRegistry(metrics.Labels{{"namespace", "static"}, {"pod", "p"}})
	h := r.HTTP("outbound", metrics.Labels{
		{"direction", "ignored"}, {"namespace", "caller"}, {"le", "x"}, {"dst_service", "api"},
	})
	h.Request()
	h.Response(204, -1, false, "", time.Millisecond)
	text := scrape(t, r)
	for _, want := range []string{
		`request_total{direction="outbound",namespace="caller",le="x",dst_service="api",pod="p"} 1`,
		// A histogram series never carries the caller's le.
		`response_latency_ms_bucket{direction="outbound",namespace="caller",dst_service="api",status_code="204",pod="p",le="1"} 1`,
		`response_total{direction="outbound",namespace="caller",le="x",dst_service="api",status_code="204",classification="success",pod="p"} 1`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("exposition lacks line %q:\n%s", want, text)
		}
	}
	parse(t, text)
}

func TestHistogramBuckets(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name      string
		latencies []time.Duration
		want      map[string]float64 // le -> cumulative count
		sum       float64
	}{
		{"on a bound", []time.Duration{ms}, map[string]float64{"1": 1, "2": 1, "+Inf": 1}, 1},
		{"just above a bound", []time.Duration{ms + 1}, map[string]float64{"1": 0, "2": 1, "+Inf": 1}, 1},
		{"zero and negative", []time.Duration{0, -5 * ms}, map[string]float64{"1": 2, "+Inf": 2}, 0},
		{"last bound", []time.Duration{50 * time.Second}, map[string]float64{"40000": 0, "50000": 1, "+Inf": 1}, 50000},
		{"above the last bound", []time.Duration{50*time.Second + 1, time.Hour}, map[string]float64{"50000": 0, "+Inf": 2}, 3650000},
		{"sum rounds to microseconds", []time.Duration{1499 * time.Nanosecond, 2500 * time.Nanosecond}, map[string]float64{"1": 2}, 0.004},
		{"spread", []time.Duration{500 * time.Microsecond, 3 * ms, 7 * ms, 150 * ms, 2 * time.Second},
			map[string]float64{"1": 1, "2": 1, "3": 2, "5": 2, "10": 3, "100": 3, "200": 4, "1000": 4, "2000": 5, "+Inf": 5}, 2160.5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := metrics.NewRegistry(nil)
			h := r.HTTP("inbound", nil)
			for _, d := range tc.latencies {
				h.Response(200, -1, false, "", d)
			}
			fams := r.Gather()
			var les []string
			var prev float64
			for _, f := range fams {
				for _, s := range f.Samples {
					if s.Name != "response_latency_ms_bucket" {
						continue
					}
					le, _ := s.Labels.Get("le")
					les = append(les, le)
					if s.Value < prev {
						t.Errorf("bucket le=%s = %v below previous %v: not cumulative", le, s.Value, prev)
					}
					prev = s.Value
					if want, ok := tc.want[le]; ok && s.Value != want {
						t.Errorf("bucket le=%s = %v, want %v", le, s.Value, want)
					}
				}
			}
			wantLes := make([]string, 0, len(metrics.LatencyBucketsMs)+1)
			for _, b := range metrics.LatencyBucketsMs {
				wantLes = append(wantLes, fmt.Sprint(b))
			}
			wantLes = append(wantLes, "+Inf")
			if strings.Join(les, ",") != strings.Join(wantLes, ",") {
				t.Errorf("le values = %v, want %v", les, wantLes)
			}
			if got, _ := find(fams, "response_latency_ms_count", nil); got != float64(len(tc.latencies)) {
				t.Errorf("count = %v, want %d", got, len(tc.latencies))
			}
			if got, _ := find(fams, "response_latency_ms_sum", nil); math.Abs(got-tc.sum) > 1e-6 {
				t.Errorf("sum = %v, want %v", got, tc.sum)
			}
		})
	}
}

func TestResponseLabels(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		grpc    int
		failure bool
		err     string
		want    string // the response_total line's labels
	}{
		{"plain success", 200, -1, false, "", `status_code="200",classification="success"`},
		{"plain failure", 500, -1, true, "", `status_code="500",classification="failure"`},
		{"grpc ok", 200, 0, false, "", `status_code="200",classification="success",grpc_status="0"`},
		{"grpc unauthenticated", 200, 16, true, "", `status_code="200",classification="failure",grpc_status="16"`},
		{"grpc unknown code", 200, 42, true, "", `status_code="200",classification="failure",grpc_status="42"`},
		{"any negative grpc is not grpc", 200, -7, false, "", `status_code="200",classification="success"`},
		{"proxy error with status", 504, -1, true, "timeout", `status_code="504",classification="failure",error="timeout"`},
		{"proxy error with grpc", 200, 4, true, "timeout", `status_code="200",classification="failure",grpc_status="4",error="timeout"`},
		{"no response", 0, -1, true, "unexpected", `classification="failure",error="unexpected"`},
		{"negative status is no response", -1, -1, true, "", `classification="failure"`},
		{"nonstandard status", 99, -1, false, "", `status_code="99",classification="success"`},
		{"status above 599", 999, -1, true, "", `status_code="999",classification="failure"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := metrics.NewRegistry(nil)
			h := r.HTTP("inbound", nil)
			h.Response(tc.status, tc.grpc, tc.failure, tc.err, time.Millisecond)
			h.Response(tc.status, tc.grpc, tc.failure, tc.err, time.Millisecond)
			text := scrape(t, r)
			want := `response_total{direction="inbound",` + tc.want + "} 2\n"
			if !strings.Contains(text, want) {
				t.Errorf("want line %q in:\n%s", want, text)
			}
			parse(t, text)
		})
	}
}

func TestHandlesAreCached(t *testing.T) {
	r := metrics.NewRegistry(nil)
	a := metrics.Labels{{"authority", "a"}, {"tls", "true"}}
	if r.HTTP("inbound", a) != r.HTTP("inbound", metrics.Labels{{"authority", "a"}, {"tls", "true"}}) {
		t.Error("same labels gave two HTTP handles")
	}
	if r.HTTP("inbound", a) == r.HTTP("outbound", a) {
		t.Error("different directions share an HTTP handle")
	}
	if r.HTTP("inbound", metrics.Labels{{"a", "bc"}}) == r.HTTP("inbound", metrics.Labels{{"ab", "c"}}) {
		t.Error("keys are ambiguous")
	}
	if r.TCP("inbound", a) != r.TCP("inbound", a) {
		t.Error("same labels gave two TCP handles")
	}
	if r.Counter("c", "", a) != r.Counter("c", "", a) || r.Gauge("g", "", a) != r.Gauge("g", "", a) {
		t.Error("same labels gave two counters or gauges")
	}
	long := metrics.Labels{{"authority", strings.Repeat("x", 1000)}}
	if r.HTTP("inbound", long) != r.HTTP("inbound", long) {
		t.Error("long keys gave two handles")
	}
}

func TestTCPStats(t *testing.T) {
	r := metrics.NewRegistry(nil)
	tc := r.TCP("outbound", nil)
	tc.Open()
	tc.Open()
	if got := tc.OpenConnections(); got != 2 {
		t.Errorf("open connections = %d, want 2", got)
	}
	tc.Close()
	tc.CloseWith(true)
	tc.CloseWith(false)
	if got := tc.OpenConnections(); got != 0 {
		t.Errorf("open connections after extra close = %d, want 0 (no wrap-around)", got)
	}
	tc.AddRead(-3) // ignored
	tc.AddRead(10)
	tc.AddWrite(7)
	fams := r.Gather()
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"tcp_open_total", nil, 2},
		{"tcp_open_connections", nil, 0},
		{"tcp_close_total", map[string]string{"classification": "success"}, 2},
		{"tcp_close_total", map[string]string{"classification": "failure"}, 1},
		{"tcp_read_bytes_total", map[string]string{"direction": "outbound"}, 10},
		{"tcp_write_bytes_total", nil, 7},
	} {
		if got, n := find(fams, c.name, c.labels); n != 1 || got != c.want {
			t.Errorf("%s%v = %v (%d series), want %v", c.name, c.labels, got, n, c.want)
		}
	}
}

func TestCounterAndGauge(t *testing.T) {
	r := metrics.NewRegistry(nil)
	c := r.Counter("retries_total", "Retries.", nil)
	c.Inc()
	c.Add(4)
	if c.Value() != 5 {
		t.Errorf("counter = %d, want 5", c.Value())
	}
	g := r.Gauge("temperature", "Temp.", nil)
	g.Set(1.5)
	g.Add(-3)
	if g.Value() != -1.5 {
		t.Errorf("gauge = %v, want -1.5", g.Value())
	}
	text := scrape(t, r)
	if !strings.Contains(text, "retries_total 5\n") || !strings.Contains(text, "temperature -1.5\n") {
		t.Errorf("unexpected exposition:\n%s", text)
	}
}

func TestGaugeFuncs(t *testing.T) {
	r := metrics.NewRegistry(metrics.Labels{{"pod", "p"}})
	emitN := func(n float64) func(func(metrics.Labels, float64)) {
		return func(emit func(metrics.Labels, float64)) { emit(metrics.Labels{{"state", "ready"}}, n) }
	}
	value := func() (float64, int) {
		return find(r.Gather(), "endpoints", map[string]string{"state": "ready", "pod": "p"})
	}

	unregOld := r.GaugeFunc("endpoints", "Endpoints.", emitN(1))
	if v, n := value(); v != 1 || n != 1 {
		t.Fatalf("endpoints = %v (%d series), want 1", v, n)
	}
	unregNew := r.GaugeFunc("endpoints", "Endpoints.", emitN(2))
	if v, n := value(); v != 2 || n != 1 {
		t.Fatalf("after replace: endpoints = %v (%d series), want 2 from the new callback only", v, n)
	}
	unregOld() // replaced already: must not remove the new one
	if v, _ := value(); v != 2 {
		t.Fatalf("stale unregister removed the replacement: endpoints = %v", v)
	}

	// Keyed callbacks add up; identical series are merged, not repeated.
	unregA := r.GaugeFuncKey("endpoints", "a", "Endpoints.", emitN(10))
	unregB := r.GaugeFuncKey("endpoints", "b", "Endpoints.", emitN(100))
	if v, n := value(); v != 112 || n != 1 {
		t.Fatalf("keyed: endpoints = %v (%d series), want 112 in one series", v, n)
	}
	parse(t, scrape(t, r))
	unregA()
	unregB()
	unregNew()
	if _, n := value(); n != 0 {
		t.Fatalf("after unregistering all, %d series remain", n)
	}
	if text := scrape(t, r); strings.Contains(text, "endpoints") {
		t.Errorf("empty family still written:\n%s", text)
	}

	unreg := r.CounterFunc("cpu_seconds_total", "CPU.", func(emit func(metrics.Labels, float64)) { emit(nil, 1.25) })
	defer unreg()
	fams := parse(t, scrape(t, r))
	if f := fams["cpu_seconds_total"]; f.GetType() != dto.MetricType_COUNTER || f.GetMetric()[0].GetCounter().GetValue() != 1.25 {
		t.Errorf("counter func family = %v", f)
	}
}

func TestTypeConflictPanics(t *testing.T) {
	tests := []struct {
		name string
		f    func(r *metrics.Registry)
	}{
		{"gauge over builtin counter", func(r *metrics.Registry) { r.Gauge("request_total", "", nil) }},
		{"counter over builtin histogram", func(r *metrics.Registry) { r.Counter("response_latency_ms", "", nil) }},
		{"gauge over counter", func(r *metrics.Registry) { r.Counter("x", "", nil); r.Gauge("x", "", nil) }},
		{"gauge func over counter", func(r *metrics.Registry) {
			r.Counter("x", "", nil)
			r.GaugeFunc("x", "", func(func(metrics.Labels, float64)) {})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			tc.f(metrics.NewRegistry(nil))
		})
	}
	// The same type is fine: a counter joins the builtin family.
	r := metrics.NewRegistry(nil)
	r.Counter("request_total", "", metrics.Labels{{"direction", "control"}}).Inc()
	r.HTTP("inbound", nil).Request()
	if got, n := find(r.Gather(), "request_total", nil); got != 2 || n != 2 {
		t.Errorf("request_total = %v in %d series, want 2 in 2", got, n)
	}
}

func TestGatherReturnsCopies(t *testing.T) {
	r := metrics.NewRegistry(staticLabels())
	fill(r)
	before := scrape(t, r)
	for _, f := range r.Gather() {
		for _, s := range f.Samples {
			for i := range s.Labels {
				s.Labels[i].Value = "changed"
			}
		}
	}
	if after := scrape(t, r); after != before {
		t.Errorf("changing gathered labels changed the registry:\n%s", lineDiff(before, after))
	}
}

// TestConcurrentRecording hammers one registry from many goroutines — creating
// handles and series concurrently, recording, and scraping — and checks that
// every count is exact at the end. Run it with -race.
func TestConcurrentRecording(t *testing.T) {
	const (
		workers = 8
		iters   = 3000
	)
	statuses := []int{200, 404, 503, 0, 700}
	grpcs := []int{-1, 0, 14, 99}
	r := metrics.NewRegistry(staticLabels())
	labels := metrics.Labels{{"authority", "web"}}

	done := make(chan struct{})
	var scrapes atomic.Int64
	var scraper sync.WaitGroup
	scraper.Go(func() {
		for i := 0; i < 200; i++ {
			select {
			case <-done:
				return
			default:
			}
			var b bytes.Buffer
			if err := r.WriteText(&b); err != nil {
				t.Errorf("WriteText: %v", err)
				return
			}
			if i%20 == 0 {
				parse(t, b.String())
			}
			scrapes.Add(1)
		}
	})

	handles := make([]*metrics.HTTPStats, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			h := r.HTTP("inbound", labels)
			handles[w] = h
			tc := r.TCP("inbound", labels)
			g := r.Gauge("inflight", "", nil)
			for i := range iters {
				h.Request()
				err := ""
				if i%7 == 0 {
					err = "timeout"
				}
				h.Response(statuses[i%len(statuses)], grpcs[i%len(grpcs)], i%2 == 0, err, time.Duration(i)*time.Millisecond)
				tc.Open()
				tc.AddRead(3)
				tc.AddWrite(5)
				tc.Close()
				r.Counter("retries_total", "", metrics.Labels{{"worker", fmt.Sprint(w % 2)}}).Inc()
				g.Add(1)
			}
		})
	}
	wg.Wait()
	close(done)
	scraper.Wait()
	t.Logf("%d scrapes ran concurrently", scrapes.Load())

	for _, h := range handles[1:] {
		if h != handles[0] {
			t.Fatal("concurrent HTTP lookups returned different handles")
		}
	}
	fams := r.Gather()
	parse(t, scrape(t, r))
	n := float64(workers * iters)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"request_total", nil, n},
		{"response_total", nil, n},
		{"response_latency_ms_count", nil, n},
		{"response_latency_ms_bucket", map[string]string{"le": "+Inf"}, n},
		{"response_total", map[string]string{"status_code": "404"}, n / float64(len(statuses))},
		{"response_latency_ms_count", map[string]string{"status_code": "700"}, n / float64(len(statuses))},
		{"response_total", map[string]string{"grpc_status": "14"}, n / float64(len(grpcs))},
		{"response_total", map[string]string{"classification": "failure"}, n / 2},
		{"tcp_open_total", nil, n},
		{"tcp_close_total", nil, n},
		{"tcp_open_connections", nil, 0},
		{"tcp_read_bytes_total", nil, 3 * n},
		{"tcp_write_bytes_total", nil, 5 * n},
		{"retries_total", nil, n},
		{"inflight", nil, n},
	} {
		if got, _ := find(fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// The latency sum is exact too: every worker observed 0..iters-1 ms.
	wantSum := float64(workers) * float64(iters*(iters-1)/2)
	if got, _ := find(fams, "response_latency_ms_sum", nil); got != wantSum {
		t.Errorf("latency sum = %v, want %v", got, wantSum)
	}
}

// TestNoAllocations pins the hot path: recording on a cached handle, and looking
// up an existing handle, allocate nothing.
func TestNoAllocations(t *testing.T) {
	r := metrics.NewRegistry(staticLabels())
	labels := metrics.Labels{{"authority", "web.shop.svc.cluster.local:8080"}, {"tls", "true"}}
	h := r.HTTP("inbound", labels)
	tc := r.TCP("inbound", labels)
	c := r.Counter("retries_total", "", labels)
	g := r.Gauge("inflight", "", labels)
	// Create the series first: creation may allocate, recording may not.
	h.Response(200, -1, false, "", time.Millisecond)
	h.Response(200, 14, true, "", time.Millisecond)
	h.Response(503, -1, true, "loadshed", time.Millisecond)
	h.Response(200, 99, true, "", time.Millisecond)

	tests := []struct {
		name string
		f    func()
	}{
		{"Request", h.Request},
		{"Response", func() { h.Response(200, -1, false, "", 3*time.Millisecond) }},
		{"Response gRPC", func() { h.Response(200, 14, true, "", 3*time.Millisecond) }},
		{"Response with error", func() { h.Response(503, -1, true, "loadshed", 3*time.Millisecond) }},
		{"Response unusual gRPC code", func() { h.Response(200, 99, true, "", 3*time.Millisecond) }},
		{"TCP", func() { tc.Open(); tc.AddRead(10); tc.AddWrite(10); tc.Close() }},
		{"Counter.Inc", c.Inc},
		{"Gauge.Add", func() { g.Add(1) }},
		{"Registry.HTTP hit", func() { r.HTTP("inbound", labels) }},
		{"Registry.TCP hit", func() { r.TCP("inbound", labels) }},
		{"Registry.Counter hit", func() { r.Counter("retries_total", "", labels) }},
	}
	for _, tc := range tests {
		if got := testing.AllocsPerRun(1000, tc.f); got != 0 {
			t.Errorf("%s: %v allocations per call, want 0", tc.name, got)
		}
	}
}

func BenchmarkRequest(b *testing.B) {
	h := metrics.NewRegistry(staticLabels()).HTTP("inbound", nil)
	b.ReportAllocs()
	for b.Loop() {
		h.Request()
	}
}

func BenchmarkResponse(b *testing.B) {
	h := metrics.NewRegistry(staticLabels()).HTTP("inbound", nil)
	b.ReportAllocs()
	for b.Loop() {
		h.Response(200, -1, false, "", 7*time.Millisecond)
	}
}

func BenchmarkRequestParallel(b *testing.B) {
	h := metrics.NewRegistry(staticLabels()).HTTP("inbound", nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			h.Request()
		}
	})
}

func BenchmarkResponseParallel(b *testing.B) {
	h := metrics.NewRegistry(staticLabels()).HTTP("inbound", nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			h.Response(200, -1, false, "", 7*time.Millisecond)
		}
	})
}

func BenchmarkTCPAddReadParallel(b *testing.B) {
	tc := metrics.NewRegistry(staticLabels()).TCP("inbound", nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tc.AddRead(1500)
		}
	})
}

// BenchmarkSharedAtomicParallel is the baseline the striping is measured
// against: one atomic word incremented by every goroutine.
func BenchmarkSharedAtomicParallel(b *testing.B) {
	var n atomic.Uint64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n.Add(1)
		}
	})
}

func BenchmarkHTTPLookupParallel(b *testing.B) {
	r := metrics.NewRegistry(staticLabels())
	labels := metrics.Labels{{"authority", "web.shop.svc.cluster.local:8080"}, {"tls", "true"}}
	r.HTTP("inbound", labels)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r.HTTP("inbound", labels)
		}
	})
}

func BenchmarkWriteText(b *testing.B) {
	r := metrics.NewRegistry(staticLabels())
	for i := range 100 {
		h := r.HTTP("outbound", metrics.Labels{{"dst_service", fmt.Sprintf("svc-%d", i)}, {"tls", "true"}})
		h.Request()
		h.Response(200, -1, false, "", time.Millisecond)
		h.Response(503, -1, true, "", time.Millisecond)
		r.TCP("outbound", metrics.Labels{{"dst_service", fmt.Sprintf("svc-%d", i)}}).Open()
	}
	var buf bytes.Buffer
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		if err := r.WriteText(&buf); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(buf.Len()))
}
