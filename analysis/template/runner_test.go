package template_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/analysis"
	"github.com/sluicehq/sluice/analysis/template"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

func ptr(v float64) *float64 { return &v }

// fakeQuerier answers queries from a map; a query it does not know is an error.
type fakeQuerier struct {
	addr     string
	answers  map[string]answer
	checkErr error

	mu      sync.Mutex
	queries []string
	closed  bool
}

type answer struct {
	v   float64
	err error
}

func (f *fakeQuerier) String() string { return "fake at " + f.addr }

func (f *fakeQuerier) Query(_ context.Context, q string, _ template.Vars) (float64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries = append(f.queries, q)
	a, ok := f.answers[q]
	if !ok {
		return 0, fmt.Errorf("%s: query failed: unknown query; query: %s", f, q)
	}
	return a.v, a.err
}

func (f *fakeQuerier) Check(context.Context) error { return f.checkErr }

func (f *fakeQuerier) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func mt(ns, name string, typ v1beta1.MetricProviderType, addr, query string) *v1beta1.MetricTemplate {
	t := &v1beta1.MetricTemplate{Spec: v1beta1.MetricTemplateSpec{
		Provider: v1beta1.MetricTemplateProvider{Type: typ, Address: addr},
		Query:    query,
	}}
	t.Namespace, t.Name = ns, name
	return t
}

func TestRunner(t *testing.T) {
	const rate = `sum(rate(x{ns="{{ namespace }}",d="{{ target }}"}[{{ interval }}]))`
	templates := template.Static{
		"test/rate":     mt("test", "rate", "fake", "http://fake", rate),
		"shared/rate":   mt("shared", "rate", "fake", "http://shared", rate),
		"test/vars":     mt("test", "vars", "fake", "http://fake", `y{dir="{{ variables.direction }}"}`),
		"test/broken":   mt("test", "broken", "fake", "http://fake", `{{ target `),
		"test/influx":   mt("test", "influx", "influxdb", "http://influx", `select 1`),
		"test/no-model": mt("test", "no-model", "fake", "http://fake", `{{ model }}`),
	}
	var (
		mu      sync.Mutex
		built   []*fakeQuerier
		answers = map[string]answer{
			`sum(rate(x{ns="test",d="podinfo"}[1m]))`:  {v: 97.5},
			`sum(rate(x{ns="test",d="podinfo"}[30s]))`: {v: 42},
			`sum(rate(x{ns="test",d="idle"}[1m]))`:     {err: template.NoData("the query returned an empty vector")},
			`sum(rate(x{ns="test",d="nan"}[1m]))`:      {v: math.NaN()},
			`sum(rate(x{ns="test",d="many"}[1m]))`:     {err: errors.New("fake at http://fake: query returned 3 series, want 1: add sum() or by() to aggregate them")},
			`sum(rate(x{ns="test",d="inf"}[1m]))`:      {v: math.Inf(1)},
			`sum(rate(x{ns="test",d="close"}[1m]))`:    {v: 98.99996},
			`y{dir="inbound"}`:                         {v: 1},
		}
	)
	factory := func(_ context.Context, ns string, spec v1beta1.MetricTemplateProvider) (template.Querier, error) {
		mu.Lock()
		defer mu.Unlock()
		if spec.Address == "http://refused" {
			return nil, errors.New("address refused")
		}
		q := &fakeQuerier{addr: spec.Address, answers: answers}
		built = append(built, q)
		return q, nil
	}
	r := template.NewRunner(template.Options{
		Templates: templates,
		Providers: map[v1beta1.MetricProviderType]template.Factory{"fake": factory},
		Vars: func(tg analysis.Target, c analysis.Check) template.Vars {
			v := template.DefaultVars(tg, c)
			if c.Name == "with-vars" {
				v.Variables = map[string]string{"direction": "inbound"}
			}
			return v
		},
	})
	t.Cleanup(func() { _ = r.Close() })
	target := func(name string) analysis.Target {
		return analysis.Target{Namespace: "test", Canary: analysis.Workload{Name: name}}
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		target string
		check  analysis.Check
		want   string // verdict: message
	}{
		{"pass", "podinfo", analysis.Check{Name: "rate", TemplateRef: "rate", Min: ptr(95)}, "pass: rate 97.5 (min 95)"},
		{"pass, both bounds", "podinfo", analysis.Check{Name: "rate", TemplateRef: "test/rate", Min: ptr(95), Max: ptr(100)}, "pass: rate 97.5 (min 95, max 100)"},
		{"pass, no bounds", "podinfo", analysis.Check{Name: "rate", TemplateRef: "rate"}, "pass: rate 97.5"},
		{"fail min", "podinfo", analysis.Check{Name: "rate", TemplateRef: "rate", Min: ptr(99)}, "fail: rate 97.5 < min 99"},
		{"fail max", "podinfo", analysis.Check{Name: "rate", TemplateRef: "rate", Max: ptr(50.5)}, "fail: rate 97.5 > max 50.5"},
		{"fail close to the bound", "close", analysis.Check{Name: "rate", TemplateRef: "rate", Min: ptr(99)}, "fail: rate 98.99996 < min 99"},
		{"infinity fails max", "inf", analysis.Check{Name: "rate", TemplateRef: "rate", Max: ptr(1)}, "fail: rate +Inf > max 1"},
		{"interval", "podinfo", analysis.Check{Name: "rate", TemplateRef: "rate", Interval: 30 * time.Second}, "pass: rate 42"},
		{"cross-namespace template", "podinfo", analysis.Check{Name: "rate", TemplateRef: "shared/rate"}, "pass: rate 97.5"},
		{"variables", "podinfo", analysis.Check{Name: "with-vars", TemplateRef: "vars"}, "pass: with-vars 1"},
		{"no data", "idle", analysis.Check{Name: "rate", TemplateRef: "rate", Min: ptr(99)},
			"no-data: no values for rate from fake at http://fake (metric template test/rate): the query returned an empty vector; probably idle.test is not receiving traffic"},
		{"NaN", "nan", analysis.Check{Name: "rate", TemplateRef: "rate"},
			"no-data: no values for rate from fake at http://fake (metric template test/rate): the query returned NaN; probably nan.test is not receiving traffic"},
		{"several series", "many", analysis.Check{Name: "rate", TemplateRef: "rate"},
			"error: cannot compute rate: metric template test/rate: fake at http://fake: query returned 3 series, want 1: add sum() or by() to aggregate them"},
		{"query fails", "unknown", analysis.Check{Name: "rate", TemplateRef: "rate"},
			`error: cannot compute rate: metric template test/rate: fake at http://fake: query failed: unknown query; query: sum(rate(x{ns="test",d="unknown"}[1m]))`},
		{"missing variable", "podinfo", analysis.Check{Name: "no-vars", TemplateRef: "vars"},
			`error: cannot compute no-vars: metric template test/vars: rendering query (at query:1:10): templateVariables has no key "direction" (it is empty)`},
		{"bad template", "podinfo", analysis.Check{Name: "rate", TemplateRef: "broken"},
			"error: cannot compute rate: metric template test/broken: parsing query template: template: query:1: unclosed action"},
		{"unknown function", "podinfo", analysis.Check{Name: "rate", TemplateRef: "no-model"},
			`error: cannot compute rate: metric template test/no-model: parsing query template: template: query:1: function "model" not defined`},
		{"no such template", "podinfo", analysis.Check{Name: "rate", TemplateRef: "nope"},
			"error: cannot compute rate: metric template test/nope: metric template test/nope not found"},
		{"bad ref", "podinfo", analysis.Check{Name: "rate", TemplateRef: "a/b/c"},
			`error: cannot compute rate: templateRef "a/b/c" is not "name" or "namespace/name" (target namespace "test")`},
		{"unsupported provider", "podinfo", analysis.Check{Name: "rate", TemplateRef: "influx"},
			`error: cannot compute rate: metric template test/influx: provider type "influxdb" is not supported (supported: fake)`},
		{"min above max", "podinfo", analysis.Check{Name: "rate", TemplateRef: "rate", Min: ptr(2), Max: ptr(1)},
			"error: cannot compute rate: threshold min 2 is greater than max 1"},
		{"NaN bound", "podinfo", analysis.Check{Name: "rate", TemplateRef: "rate", Min: ptr(math.NaN())},
			"error: cannot compute rate: threshold min NaN is not a number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := r.Run(ctx, target(tc.target), tc.check)
			if got := string(res.Verdict) + ": " + res.Message; got != tc.want {
				t.Errorf("got\n %s\nwant\n %s", got, tc.want)
			}
			if res.Name != tc.check.Name {
				t.Errorf("name %q, want %q", res.Name, tc.check.Name)
			}
			if (res.Verdict == analysis.Pass || res.Verdict == analysis.Fail) == math.IsNaN(res.Value) {
				t.Errorf("verdict %s with value %v", res.Verdict, res.Value)
			}
			if (res.Min == nil) != (tc.check.Min == nil) || (res.Max == nil) != (tc.check.Max == nil) {
				t.Errorf("thresholds %v/%v not carried over", res.Min, res.Max)
			}
		})
	}

	// One querier per template, reused across runs.
	mu.Lock()
	n := len(built)
	mu.Unlock()
	if n != 3 { // test/rate (and the templates sharing its key are separate), shared/rate, test/vars
		t.Errorf("built %d queriers, want 3 (one per template with a supported provider)", n)
	}

	// A changed provider spec replaces (and closes) the cached querier.
	templates["test/rate"] = mt("test", "rate", "fake", "http://fake2", rate)
	res := r.Run(ctx, target("podinfo"), analysis.Check{Name: "rate", TemplateRef: "rate"})
	if res.Verdict != analysis.Pass || !strings.Contains(res.Message, "97.5") {
		t.Errorf("after the change: %s: %s", res.Verdict, res.Message)
	}
	mu.Lock()
	if len(built) != 4 || !built[0].closed || built[3].addr != "http://fake2" {
		t.Errorf("after a spec change: %d built, first closed %v", len(built), built[0].closed)
	}
	mu.Unlock()

	// A factory error is an Error result naming the template and provider.
	templates["test/refused"] = mt("test", "refused", "fake", "http://refused", rate)
	res = r.Run(ctx, target("podinfo"), analysis.Check{Name: "rate", TemplateRef: "refused"})
	if want := "cannot compute rate: metric template test/refused: fake provider: address refused"; res.Verdict != analysis.Error || res.Message != want {
		t.Errorf("factory error: %s: %s\nwant %s", res.Verdict, res.Message, want)
	}

	// Close closes every querier, and the runner refuses work after it.
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	for i, q := range built {
		if !q.closed {
			t.Errorf("querier %d (%s) not closed", i, q.addr)
		}
	}
	mu.Unlock()
	if res := r.Run(ctx, target("podinfo"), analysis.Check{Name: "rate", TemplateRef: "rate"}); res.Verdict != analysis.Error || !strings.Contains(res.Message, "closed") {
		t.Errorf("after Close: %s: %s", res.Verdict, res.Message)
	}
}

func TestValidate(t *testing.T) {
	down := &fakeQuerier{addr: "http://down", checkErr: errors.New("prometheus at http://down is unreachable: connection refused")}
	templates := template.Static{
		"test/ok":     mt("test", "ok", "fake", "http://up", `x{d="{{ target }}"}`),
		"test/down":   mt("test", "down", "down", "http://down", `x`),
		"test/vars":   mt("test", "vars", "fake", "http://up", `{{ variables.v }}`),
		"test/sluice": mt("test", "sluice", "sluice", "", `success_rate{workload="{{ target }}"}`),
		"test/typo":   mt("test", "typo", "sluice", "", `success_ratio`),
	}
	r := template.NewRunner(template.Options{
		Templates: templates,
		Providers: map[v1beta1.MetricProviderType]template.Factory{
			"fake": func(context.Context, string, v1beta1.MetricTemplateProvider) (template.Querier, error) {
				return &fakeQuerier{addr: "http://up"}, nil
			},
			"down": func(context.Context, string, v1beta1.MetricTemplateProvider) (template.Querier, error) {
				return down, nil
			},
			"sluice": template.SluiceFactory(&fakeSource{}),
		},
	})
	t.Cleanup(func() { _ = r.Close() })
	tg := analysis.Target{Namespace: "test", Canary: analysis.Workload{Name: "podinfo"}}
	ctx := context.Background()
	for _, tc := range []struct {
		ref     string
		wantErr string
	}{
		{"ok", ""},
		{"sluice", ""},
		{"down", "check c: metric template test/down: prometheus at http://down is unreachable: connection refused"},
		{"vars", `check c: metric template test/vars: rendering query`},
		{"typo", `check c: metric template test/typo: sluice query "success_ratio": unknown metric "success_ratio"`},
		{"missing", "check c: metric template test/missing: metric template test/missing not found"},
	} {
		t.Run(tc.ref, func(t *testing.T) {
			err := r.Validate(ctx, tg, analysis.Check{Name: "c", TemplateRef: tc.ref})
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("Validate = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestMux routes checks with a TemplateRef to the runner and the others to
// the built-in provider, through analysis.Analyze.
func TestMux(t *testing.T) {
	r := template.NewRunner(template.Options{
		Templates: template.Static{"test/t": mt("test", "t", "sluice", "", "requests")},
		Providers: map[v1beta1.MetricProviderType]template.Factory{
			"sluice": template.SluiceFactory(&fakeSource{}),
		},
	})
	t.Cleanup(func() { _ = r.Close() })
	mux := analysis.Mux{Builtin: builtinStub{}, Templates: r}
	tg := analysis.Target{Namespace: "test", Canary: analysis.Workload{Name: "podinfo"}}
	results := analysis.Analyze(context.Background(), mux, tg, []analysis.Check{
		{Name: "from-template", TemplateRef: "t"},
		{Name: "request-success-rate"},
	})
	var got []string
	for _, res := range results {
		got = append(got, res.Name+" "+string(res.Verdict)+": "+res.Message)
	}
	want := []string{
		"request-success-rate pass: builtin",
		"from-template no-data: no values for from-template from sluice telemetry (metric template test/t): test/podinfo has no inbound requests in the last 1m; probably podinfo.test is not receiving traffic",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if res := (analysis.Mux{Builtin: builtinStub{}}).Run(context.Background(), tg, analysis.Check{Name: "x", TemplateRef: "t"}); res.Verdict != analysis.Error ||
		res.Message != `cannot compute x: metric template "t": no metric template provider is configured` {
		t.Errorf("no template provider: %s: %s", res.Verdict, res.Message)
	}
}

type builtinStub struct{}

func (builtinStub) Run(_ context.Context, _ analysis.Target, c analysis.Check) analysis.Result {
	return analysis.Result{Name: c.Name, Verdict: analysis.Pass, Value: 1, Message: "builtin"}
}
