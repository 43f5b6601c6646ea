package template_test

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/analysis/template"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestRender(t *testing.T) {
	vars := template.Vars{
		Name:      "podinfo-canary",
		Namespace: "test",
		Target:    "podinfo",
		Service:   "podinfo-svc",
		Interval:  90 * time.Second,
		Variables: map[string]string{"direction": "inbound", "le": "0.5"},
	}
	for _, tc := range []struct {
		name, query string
		vars        template.Vars
		want        string
		wantErr     []string
	}{
		{name: "flagger functions", query: `{{ name }} {{ namespace }} {{ target }} {{ service }} {{ ingress }} {{ route }} {{ interval }}`,
			vars: vars, want: "podinfo-canary test podinfo podinfo-svc podinfo podinfo 1m30s"},
		{name: "variables", query: `x{direction="{{ variables.direction }}",le="{{ variables.le }}"}`, vars: vars, want: `x{direction="inbound",le="0.5"}`},
		{name: "service defaults to target", query: `{{ service }}`, vars: template.Vars{Target: "web"}, want: "web"},
		{name: "interval defaults to 1m", query: `[{{ interval }}]`, vars: template.Vars{}, want: "[1m]"},
		{name: "interval in seconds", query: `[{{ interval }}]`, vars: template.Vars{Interval: 30 * time.Second}, want: "[30s]"},
		{name: "interval in hours", query: `[{{ interval }}]`, vars: template.Vars{Interval: 2 * time.Hour}, want: "[2h]"},
		{name: "text/template builtins", query: `{{ if eq target "podinfo" }}yes{{ end }} {{ printf "%q" namespace }}`, vars: vars, want: `yes "test"`},
		{name: "flagger linkerd query", query: `sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",direction="inbound"}[{{ interval }}]))`,
			vars: vars, want: `sum(rate(response_total{namespace="test",deployment=~"podinfo",direction="inbound"}[1m30s]))`},
		{name: "missing variable", query: `{{ variables.missing }}`, vars: vars,
			wantErr: []string{`rendering query (at query:1:3): templateVariables has no key "missing" (it has direction, le)`}},
		{name: "missing variable, none set", query: `{{ variables.direction }}`, vars: template.Vars{Target: "x"},
			wantErr: []string{`templateVariables has no key "direction" (it is empty)`}},
		{name: "unknown function", query: `{{ canary }}`, vars: vars, wantErr: []string{`function "canary" not defined`}},
		{name: "syntax error", query: `{{ target }`, vars: vars, wantErr: []string{"parsing query template", "query:1"}},
		{name: "empty", query: "  ", vars: vars, wantErr: []string{"query is empty"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := template.Render(tc.query, tc.vars)
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("Render = %q, want an error", got)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			if got != tc.want {
				t.Errorf("Render =\n %q\nwant\n %q", got, tc.want)
			}
		})
	}
}

// TestQueryReuse renders one parsed query concurrently with different
// values: the Query must not keep any of them.
func TestQueryReuse(t *testing.T) {
	q, err := template.Parse(`{{ target }}/{{ variables.k }}`)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 8)
	for i := range 8 {
		go func() {
			target := strings.Repeat("x", i+1)
			for range 50 {
				got, err := q.Render(template.Vars{Target: target, Variables: map[string]string{"k": target}})
				if err != nil {
					done <- err
					return
				}
				if want := target + "/" + target; got != want {
					done <- &mismatch{got, want}
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if q.String() != `{{ target }}/{{ variables.k }}` {
		t.Errorf("String = %q", q.String())
	}
}

type mismatch struct{ got, want string }

func (m *mismatch) Error() string { return "got " + m.got + ", want " + m.want }

func TestFormatInterval(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Minute:             "1m",
		30 * time.Second:        "30s",
		90 * time.Second:        "1m30s",
		time.Hour:               "1h",
		24 * time.Hour:          "1d",
		1500 * time.Millisecond: "1s500ms",
	} {
		if got := template.FormatInterval(d); got != want {
			t.Errorf("FormatInterval(%v) = %q, want %q", d, got, want)
		}
	}
}
