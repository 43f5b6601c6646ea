package canary

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluicehq/sluice/analysis"
	"github.com/sluicehq/sluice/analysis/notify"
	"github.com/sluicehq/sluice/analysis/template"
	"github.com/sluicehq/sluice/analysis/webhook"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

func TestMetricCheck(t *testing.T) {
	num := v1beta1.NewNumber
	cases := []struct {
		name    string
		m       v1beta1.CanaryMetric
		want    analysis.Check
		wantErr string
	}{
		{"success rate range", v1beta1.CanaryMetric{Name: "request-success-rate", Interval: "2m",
			ThresholdRange: &v1beta1.CanaryThresholdRange{Min: num(99)}},
			analysis.Check{Name: "request-success-rate", Interval: 2 * time.Minute, Min: ptr(99.0)}, ""},
		{"duration range, default interval", v1beta1.CanaryMetric{Name: "request-duration",
			ThresholdRange: &v1beta1.CanaryThresholdRange{Max: num(500)}},
			analysis.Check{Name: "request-duration", Interval: time.Minute, Max: ptr(500.0)}, ""},
		{"both bounds", v1beta1.CanaryMetric{Name: "request-duration", Interval: "30s",
			ThresholdRange: &v1beta1.CanaryThresholdRange{Min: num(1), Max: num(500)}},
			analysis.Check{Name: "request-duration", Interval: 30 * time.Second, Min: ptr(1.0), Max: ptr(500.0)}, ""},
		{"deprecated threshold of success rate is a min", v1beta1.CanaryMetric{Name: "request-success-rate", Threshold: 99},
			analysis.Check{Name: "request-success-rate", Interval: time.Minute, Min: ptr(99.0)}, ""},
		{"deprecated threshold of others is a max", v1beta1.CanaryMetric{Name: "request-duration", Threshold: 500},
			analysis.Check{Name: "request-duration", Interval: time.Minute, Max: ptr(500.0)}, ""},
		{"template in the canary's namespace", v1beta1.CanaryMetric{Name: "errors", Interval: "1m",
			TemplateRef:    &v1beta1.CrossNamespaceObjectReference{Name: "error-rate"},
			ThresholdRange: &v1beta1.CanaryThresholdRange{Max: num(1)}},
			analysis.Check{Name: "errors", Interval: time.Minute, TemplateRef: "error-rate", Max: ptr(1.0)}, ""},
		{"template in another namespace", v1beta1.CanaryMetric{Name: "errors",
			TemplateRef:    &v1beta1.CrossNamespaceObjectReference{Name: "error-rate", Namespace: "monitoring"},
			ThresholdRange: &v1beta1.CanaryThresholdRange{Max: num(1)}},
			analysis.Check{Name: "errors", Interval: time.Minute, TemplateRef: "monitoring/error-rate", Max: ptr(1.0)}, ""},
		{"comparison without a range", v1beta1.CanaryMetric{Name: analysis.CanaryVsPrimaryLatency},
			analysis.Check{Name: analysis.CanaryVsPrimaryLatency, Interval: time.Minute}, ""},
		{"comparison with a range keeps it (the provider refuses it)", v1beta1.CanaryMetric{Name: analysis.CanaryVsPrimarySuccessRate,
			ThresholdRange: &v1beta1.CanaryThresholdRange{Max: num(1)}},
			analysis.Check{Name: analysis.CanaryVsPrimarySuccessRate, Interval: time.Minute, Max: ptr(1.0)}, ""},
		{"bad interval", v1beta1.CanaryMetric{Name: "request-duration", Interval: "soon"}, analysis.Check{}, `interval "soon" is not a duration`},
		{"zero interval", v1beta1.CanaryMetric{Name: "request-duration", Interval: "0s"}, analysis.Check{}, `interval "0s" is not positive`},
		{"inline query", v1beta1.CanaryMetric{Name: "custom", Query: "sum(up)"}, analysis.Check{}, "inline query is not supported"},
		{"template without a name", v1beta1.CanaryMetric{Name: "custom", TemplateRef: &v1beta1.CrossNamespaceObjectReference{}},
			analysis.Check{}, "templateRef has no name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := MetricCheck(&tc.m)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("check %+v, want %+v", describeCheck(got), describeCheck(tc.want))
			}
		})
	}
}

func describeCheck(c analysis.Check) string {
	b, _ := json.Marshal(c)
	return string(b)
}

// recordingProvider answers every check with a pass, recording what it was
// asked and, for template checks, the variables the analyzer gives.
type recordingProvider struct {
	a      *ProviderAnalyzer
	mu     sync.Mutex
	calls  []string
	target []analysis.Target
	vars   map[string]template.Vars
}

func (p *recordingProvider) Run(_ context.Context, t analysis.Target, c analysis.Check) analysis.Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, c.Name)
	p.target = append(p.target, t)
	if c.TemplateRef != "" {
		if p.vars == nil {
			p.vars = map[string]template.Vars{}
		}
		p.vars[c.Name] = p.a.TemplateVars(t, c)
	}
	if c.Name == "explodes" {
		panic("boom")
	}
	return analysis.Result{Name: c.Name, Verdict: analysis.Pass, Value: 1}
}

func TestProviderAnalyzer(t *testing.T) {
	c := newCanary(func(c *v1beta1.Canary) {
		c.Spec.Service.Name = "web"
		c.Spec.Analysis.Metrics = []v1beta1.CanaryMetric{
			{Name: "errors", TemplateRef: &v1beta1.CrossNamespaceObjectReference{Name: "error-rate"},
				TemplateVariables: map[string]string{"route": "/api"}},
			{Name: "request-success-rate", Threshold: 99},
			{Name: "broken", Interval: "soon"},
			{Name: "explodes"},
			{Name: "request-duration", Threshold: 500},
		}
	})
	a := AnalyzerFromProvider(nil)
	p := &recordingProvider{a: a}
	a.Provider = p
	results, err := a.Analyze(context.Background(), c, "r2")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range results {
		names = append(names, r.Name+":"+string(r.Verdict))
	}
	// Built-in checks first, template checks last, each in spec order.
	want := "request-success-rate:pass broken:error explodes:error request-duration:pass errors:pass"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("results %s\nwant %s", got, want)
	}
	if msg := results[1].Message; !strings.Contains(msg, `analysis.metrics[2]: interval "soon" is not a duration`) || !math.IsNaN(results[1].Value) {
		t.Errorf("broken check: %+v", results[1])
	}
	if !strings.Contains(results[2].Message, "panicked") {
		t.Errorf("panicking provider: %+v", results[2])
	}
	wantTarget := analysis.Target{Namespace: "test",
		Canary:  analysis.Workload{Name: "podinfo", Revision: "r2"},
		Primary: analysis.Workload{Name: "podinfo-primary"}}
	for _, tg := range p.target {
		if tg != wantTarget {
			t.Errorf("target %+v, want %+v", tg, wantTarget)
		}
	}
	wantVars := template.Vars{Name: "podinfo", Namespace: "test", Target: "podinfo", Service: "web",
		Interval: time.Minute, Variables: map[string]string{"route": "/api"}}
	if got := p.vars["errors"]; !reflect.DeepEqual(got, wantVars) {
		t.Errorf("template vars %+v, want %+v", got, wantVars)
	}
	// Outside an analysis, the defaults.
	if got := a.TemplateVars(wantTarget, analysis.Check{Name: "errors"}); got.Service != "" || got.Variables != nil {
		t.Errorf("vars outside an analysis: %+v", got)
	}

	// A cancelled analysis is an error, not failed checks.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if rs, err := a.Analyze(ctx, c, "r2"); !errors.Is(err, context.Canceled) || rs != nil {
		t.Errorf("cancelled: %v, %v", rs, err)
	}
}

// stubQuerier answers every query with 0.5 and records it.
type stubQuerier struct {
	mu      sync.Mutex
	queries []string
}

func (q *stubQuerier) Query(_ context.Context, query string, _ template.Vars) (float64, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.queries = append(q.queries, query)
	return 0.5, nil
}

// TestProviderAnalyzerWithTemplateRunner wires the analyzer as documented,
// with a real template.Runner, and checks what the query is rendered with.
func TestProviderAnalyzerWithTemplateRunner(t *testing.T) {
	q := &stubQuerier{}
	a := AnalyzerFromProvider(nil)
	runner := template.NewRunner(template.Options{
		Templates: template.Static{"test/error-rate": {
			ObjectMeta: metav1.ObjectMeta{Name: "error-rate", Namespace: "test"},
			Spec: v1beta1.MetricTemplateSpec{
				Provider: v1beta1.MetricTemplateProvider{Type: v1beta1.MetricProviderPrometheus},
				Query:    `errors{ns="{{ namespace }}",svc="{{ service }}",path="{{ variables.path }}"}[{{ interval }}]`,
			},
		}},
		Providers: map[v1beta1.MetricProviderType]template.Factory{
			v1beta1.MetricProviderPrometheus: func(context.Context, string, v1beta1.MetricTemplateProvider) (template.Querier, error) {
				return q, nil
			},
		},
		Vars:   a.TemplateVars,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	defer runner.Close()
	a.Provider = analysis.Mux{Templates: runner}
	c := newCanary(func(c *v1beta1.Canary) {
		c.Spec.Service.Name = "web"
		c.Spec.Analysis.Metrics = []v1beta1.CanaryMetric{{
			Name: "errors", Interval: "2m",
			TemplateRef:       &v1beta1.CrossNamespaceObjectReference{Name: "error-rate"},
			TemplateVariables: map[string]string{"path": "/api"},
			ThresholdRange:    &v1beta1.CanaryThresholdRange{Max: v1beta1.NewNumber(1)},
		}}
	})
	rs, err := a.Analyze(context.Background(), c, "r2")
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 || rs[0].Verdict != analysis.Pass || rs[0].Value != 0.5 {
		t.Fatalf("results %+v", rs)
	}
	if want := `errors{ns="test",svc="web",path="/api"}[2m]`; len(q.queries) != 1 || q.queries[0] != want {
		t.Errorf("queries %q, want %q", q.queries, want)
	}
}

// webhookServer records the payloads it receives and answers with the
// status of the hook named in its path.
type webhookServer struct {
	*httptest.Server
	mu       sync.Mutex
	payloads map[string][]webhook.Payload
}

func newWebhookServer(t *testing.T) *webhookServer {
	s := &webhookServer{payloads: map[string][]webhook.Payload{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p webhook.Payload
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.payloads[r.URL.Path] = append(s.payloads[r.URL.Path], p)
		s.mu.Unlock()
		if strings.HasPrefix(r.URL.Path, "/fail") {
			http.Error(w, "nope", http.StatusForbidden)
			return
		}
		w.WriteHeader(http.StatusNoContent) // any 2xx is success
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *webhookServer) got(path string) []webhook.Payload {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.payloads[path]
}

func TestHooksFromCaller(t *testing.T) {
	srv := newWebhookServer(t)
	hooks := HooksFromCaller(&webhook.Caller{HTTPClient: srv.Client()})
	c := newCanary()
	c.Status.ObservedRevision = "r2"
	c.Status.Phase = v1beta1.PhaseProgressing

	ok := v1beta1.CanaryWebhook{Type: v1beta1.ConfirmPromotionHook, Name: "ship", URL: srv.URL + "/ok",
		Metadata: map[string]string{"cmd": "go"}}
	ans := hooks.Call(context.Background(), c, ok, v1beta1.PhaseWaitingPromotion)
	if !ans.OK || ans.Name != "ship" || !strings.Contains(ans.Message, "confirm-promotion hook ship: 204") {
		t.Errorf("answer %+v", ans)
	}
	want := webhook.Payload{Name: "podinfo", Namespace: "test", Phase: v1beta1.PhaseWaitingPromotion, Checksum: "r2",
		Metadata: map[string]string{"cmd": "go"}}
	if got := srv.got("/ok"); len(got) != 1 || !reflect.DeepEqual(got[0], want) {
		t.Errorf("payloads %+v, want %+v", got, want)
	}

	closed := v1beta1.CanaryWebhook{Type: v1beta1.ConfirmRolloutHook, Name: "gate", URL: srv.URL + "/fail"}
	if ans := hooks.Call(context.Background(), c, closed, v1beta1.PhaseWaiting); ans.OK || !strings.Contains(ans.Message, "403") {
		t.Errorf("closed gate answer %+v", ans)
	}

	sink := v1beta1.CanaryWebhook{Type: v1beta1.EventHook, Name: "sink", URL: srv.URL + "/events"}
	at := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	n := Notification{Notify: Notify{Event: EventRolledBack, Severity: v1beta1.SeverityError, Message: "Canary failed"}, Time: at}
	if ans := hooks.Event(context.Background(), c, sink, n); !ans.OK {
		t.Errorf("event answer %+v", ans)
	}
	got := srv.got("/events")
	if len(got) != 1 {
		t.Fatalf("event payloads %+v", got)
	}
	if p := got[0]; p.Phase != v1beta1.PhaseProgressing || p.Metadata["eventMessage"] != "Canary failed" ||
		p.Metadata["eventType"] != "Warning" || p.Metadata["timestamp"] != "1772445600000" {
		t.Errorf("event payload %+v", p)
	}
}

// alertSink records generic alerts.
type alertSink struct {
	*httptest.Server
	got chan notify.GenericMessage
}

func newAlertSink(t *testing.T) *alertSink {
	s := &alertSink{got: make(chan notify.GenericMessage, 16)}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m notify.GenericMessage
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
			t.Errorf("alert body: %v", err)
		}
		s.got <- m
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *alertSink) next(t *testing.T) notify.GenericMessage {
	t.Helper()
	select {
	case m := <-s.got:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no alert arrived")
		return notify.GenericMessage{}
	}
}

func TestNotifierFromDispatcher(t *testing.T) {
	sink := newAlertSink(t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	d := notify.NewDispatcher(context.Background(), notify.NewSender(notify.Options{HTTPClient: sink.Client(), Logger: logger}),
		notify.DispatcherOptions{Logger: logger})
	defer d.Close()

	c := newCanary(func(c *v1beta1.Canary) {
		c.Spec.Analysis.Alerts = []v1beta1.CanaryAlert{
			{Name: "ops", Severity: v1beta1.SeverityWarn, ProviderRef: v1beta1.CrossNamespaceObjectReference{Name: "generic"}},
			{Name: "missing", ProviderRef: v1beta1.CrossNamespaceObjectReference{Name: "nowhere", Namespace: "other"}},
		}
	})
	c.Status = v1beta1.CanaryStatus{Phase: v1beta1.PhaseFailed, ObservedRevision: "r2", CanaryWeight: 0}
	var resolved []string
	n := NotifierFromDispatcher(d, func(c *v1beta1.Canary, a v1beta1.CanaryAlert) (notify.Target, error) {
		resolved = append(resolved, a.Name)
		if a.ProviderRef.Name != "generic" {
			return notify.Target{}, errors.New("alert provider not found")
		}
		return notify.Target{Name: "generic", Namespace: "test",
			Spec: v1beta1.AlertProviderSpec{Type: notify.Generic, Address: sink.URL}}, nil
	})

	at := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	// Filtered by the alert's severity (warn): nothing is sent for an
	// info alert, nor for what is not an alert.
	for _, note := range []Notification{
		{Notify: Notify{Event: EventNewRevision, Severity: v1beta1.SeverityInfo, Message: "New revision detected", Alert: true}, Time: at},
		{Notify: Notify{Event: EventCheckFailed, Severity: v1beta1.SeverityWarn, Message: "Halt advancement"}, Time: at},
	} {
		err := n.Notify(c, note)
		if note.Alert && (err == nil || !strings.Contains(err.Error(), "alert missing (provider other/nowhere): alert provider not found")) {
			t.Errorf("error %v", err)
		}
	}
	rb := Notification{
		Notify:       Notify{Event: EventRolledBack, Severity: v1beta1.SeverityError, Message: "Canary failed: threshold reached", Alert: true},
		FailingCheck: "request-success-rate 91.3% < min 99%",
		Time:         at,
	}
	if err := n.Notify(c, rb); err == nil {
		t.Error("no error for the missing provider")
	}
	m := sink.next(t)
	want := notify.GenericMessage{Kind: notify.KindRolledBack, Canary: "podinfo", Namespace: "test", Phase: v1beta1.PhaseFailed,
		Revision: "r2", Weight: 0, FailingCheck: "request-success-rate 91.3% < min 99%", Message: "Canary failed: threshold reached",
		Severity: v1beta1.SeverityError, Timestamp: at}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("alert\n got %+v\nwant %+v", m, want)
	}
	select {
	case m := <-sink.got:
		t.Errorf("unexpected alert %+v", m)
	default:
	}
	if st := d.Stats(); st.Filtered != 1 {
		t.Errorf("dispatcher stats %+v: the info alert should be filtered", st)
	}
	if len(resolved) != 4 {
		t.Errorf("resolved %v: each alert of each alerting notification", resolved)
	}
}

func TestNotifyEvent(t *testing.T) {
	at := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	c := newCanary()
	c.Status = v1beta1.CanaryStatus{Phase: v1beta1.PhaseProgressing, ObservedRevision: "r2", CanaryWeight: 30}
	skip := newCanary(func(c *v1beta1.Canary) { c.Spec.SkipAnalysis = true })
	cases := []struct {
		name string
		c    *v1beta1.Canary
		n    Notify
		kind notify.EventKind
		ok   bool
	}{
		{"initialized", c, Notify{Event: EventInitialized, Alert: true}, notify.KindInitialized, true},
		{"new revision", c, Notify{Event: EventNewRevision, Alert: true}, notify.KindNewRevision, true},
		{"waiting approval", c, Notify{Event: EventWaitingApproval, Alert: true}, notify.KindWaitingApproval, true},
		{"waiting traffic increase", c, Notify{Event: EventWaitingTrafficIncrease, Alert: true}, notify.KindWaitingApproval, true},
		{"waiting promotion", c, Notify{Event: EventWaitingPromotion, Alert: true}, notify.KindWaitingApproval, true},
		{"muted waiting", c, Notify{Event: EventWaitingPromotion}, "", false},
		{"weight step", c, Notify{Event: EventAdvanced}, notify.KindWeightStep, true},
		{"promoted", c, Notify{Event: EventSucceeded, Alert: true}, notify.KindPromoted, true},
		{"skipped", skip, Notify{Event: EventSucceeded, Alert: true}, notify.KindSkipped, true},
		{"rolled back", c, Notify{Event: EventRolledBack, Alert: true}, notify.KindRolledBack, true},
		{"promotion failed", c, Notify{Event: EventPromotionFailed, Alert: true}, notify.KindRolledBack, true},
		{"check failed is not an alert", c, Notify{Event: EventCheckFailed}, "", false},
		{"manual is not an alert", c, Notify{Event: EventManual}, "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev, ok := NotifyEvent(tc.c, Notification{Notify: tc.n, Time: at})
			if ok != tc.ok || ev.Kind != tc.kind {
				t.Fatalf("NotifyEvent = %q, %v; want %q, %v", ev.Kind, ok, tc.kind, tc.ok)
			}
			if !ok {
				return
			}
			if ev.Canary != "podinfo" || ev.Namespace != "test" || ev.Severity != v1beta1.SeverityInfo || !ev.Time.Equal(at) {
				t.Errorf("event %+v", ev)
			}
			if tc.c == c && (ev.Revision != "r2" || ev.Weight != 30 || ev.Phase != v1beta1.PhaseProgressing) {
				t.Errorf("event %+v does not carry the status", ev)
			}
			hasFacts := len(ev.Fields) > 0
			if wantFacts := tc.kind == notify.KindInitialized || tc.kind == notify.KindNewRevision; hasFacts != wantFacts {
				t.Errorf("fields %+v", ev.Fields)
			}
		})
	}
	ev, _ := NotifyEvent(c, Notification{Notify: Notify{Event: EventNewRevision, Alert: true}})
	want := []notify.Field{
		{Name: "Target", Value: "Deployment/podinfo.test"},
		{Name: "Failed checks threshold", Value: "5"},
		{Name: "Progress deadline", Value: "10m0s"},
		{Name: "Traffic routing", Value: "Weight steps: 10, 20, 30, 40, 50"},
	}
	if !reflect.DeepEqual(ev.Fields, want) {
		t.Errorf("fields %+v, want %+v", ev.Fields, want)
	}
}
