package template

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/prometheus/common/model"

	"github.com/sluicehq/sluice/analysis"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
	"github.com/sluicehq/sluice/mesh/telemetry"
)

// SluiceQuery is a parsed query of the sluice provider. See ParseSluiceQuery.
type SluiceQuery struct {
	// Metric is the canonical metric name: success_rate, error_rate, rps,
	// requests, or pNN.
	Metric string
	// Quantile is the latency quantile in (0, 1] of a pNN metric.
	Quantile float64
	// Labels are the matchers given, by label name (deployment is stored as
	// workload).
	Labels map[string]string
	// Range is the window given in brackets; 0 means the check's interval.
	Range time.Duration
}

// sluiceLabels are the labels a sluice query may match on.
var sluiceLabels = map[string]string{
	"namespace":  "namespace",
	"workload":   "workload",
	"deployment": "workload",
	"revision":   "revision",
	"pod":        "pod",
	"direction":  "direction",
}

// sluiceAliases map accepted spellings to canonical metric names.
var sluiceAliases = map[string]string{
	"success_rate":         "success_rate",
	"request_success_rate": "success_rate",
	"error_rate":           "error_rate",
	"rps":                  "rps",
	"requests":             "requests",
	"request_duration":     "p99",
}

// ParseSluiceQuery parses a (rendered) query of the sluice provider, which
// reads the mesh's own telemetry. The language is one metric, an optional
// label selector and an optional range, in PromQL's shape:
//
//	success_rate
//	success_rate{workload="podinfo"}
//	p99{namespace="test", workload="podinfo", direction="inbound"}[2m]
//
// Metrics (hyphens may replace underscores: success-rate):
//
//	success_rate   percentage (0-100) of responses not classified as failures
//	               (alias request-success-rate, Flagger's built-in)
//	error_rate     percentage (0-100) of responses classified as failures
//	rps            responses per second
//	requests       number of responses
//	pNN            latency quantile in milliseconds: p50, p90, p95, p99,
//	               p99.9 (alias request-duration for p99)
//
// Labels, each at most once, "=" only: namespace (default: the canary's
// namespace), workload or its alias deployment (default: the target),
// revision and pod (default: any), direction (inbound, the default, or
// outbound). The range defaults to the check's interval and is written as
// in PromQL (30s, 1m, 1h30m). Go template actions are rendered first, so
// {{ target }} and {{ variables.x }} may appear anywhere.
//
// Every metric is no data (ErrNoData) when the window holds no responses.
func ParseSluiceQuery(query string) (SluiceQuery, error) {
	p := &sluiceParser{src: query}
	q, err := p.parse()
	if err != nil {
		return SluiceQuery{}, fmt.Errorf("sluice query %q: %w", strings.TrimSpace(query), err)
	}
	return q, nil
}

type sluiceParser struct {
	src string
	pos int
}

func (p *sluiceParser) skipSpace() {
	for p.pos < len(p.src) && unicode.IsSpace(rune(p.src[p.pos])) {
		p.pos++
	}
}

func (p *sluiceParser) peek() byte {
	if p.pos < len(p.src) {
		return p.src[p.pos]
	}
	return 0
}

func (p *sluiceParser) errorf(format string, args ...any) error {
	return fmt.Errorf("at offset %d: %s", p.pos, fmt.Sprintf(format, args...))
}

// ident reads [A-Za-z_][A-Za-z0-9_.-]*.
func (p *sluiceParser) ident() string {
	start := p.pos
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		if c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || p.pos > start && (c >= '0' && c <= '9' || c == '-' || c == '.') {
			p.pos++
			continue
		}
		break
	}
	return p.src[start:p.pos]
}

func (p *sluiceParser) parse() (SluiceQuery, error) {
	q := SluiceQuery{Labels: map[string]string{}}
	p.skipSpace()
	name := p.ident()
	if name == "" {
		return q, p.errorf("want a metric (success_rate, error_rate, rps, requests, p99, ...)")
	}
	if err := q.setMetric(name); err != nil {
		return q, err
	}
	p.skipSpace()
	if p.peek() == '{' {
		p.pos++
		if err := p.matchers(&q); err != nil {
			return q, err
		}
		p.skipSpace()
	}
	if p.peek() == '[' {
		p.pos++
		end := strings.IndexByte(p.src[p.pos:], ']')
		if end < 0 {
			return q, p.errorf("range has no closing ]")
		}
		raw := strings.TrimSpace(p.src[p.pos : p.pos+end])
		d, err := model.ParseDuration(raw)
		if err != nil || d <= 0 {
			return q, p.errorf("range [%s] is not a positive duration such as 1m", raw)
		}
		q.Range = time.Duration(d)
		p.pos += end + 1
		p.skipSpace()
	}
	if p.pos < len(p.src) {
		return q, p.errorf("unexpected %q after the query (one metric, a {selector} and a [range])", p.src[p.pos:])
	}
	return q, nil
}

// setMetric resolves name to a canonical metric.
func (q *SluiceQuery) setMetric(name string) error {
	n := strings.ToLower(strings.ReplaceAll(name, "-", "_"))
	if canon, ok := sluiceAliases[n]; ok {
		n = canon
	}
	switch {
	case n == "success_rate" || n == "error_rate" || n == "rps" || n == "requests":
		q.Metric = n
		return nil
	case len(n) > 1 && n[0] == 'p':
		pct, err := strconv.ParseFloat(n[1:], 64)
		if err == nil && pct > 0 && pct <= 100 {
			q.Metric = n
			q.Quantile = pct / 100
			return nil
		}
	}
	return fmt.Errorf("unknown metric %q (want success_rate, error_rate, rps, requests, or a latency quantile such as p50, p99, p99.9)", name)
}

// matchers reads label="value" pairs up to the closing brace.
func (p *sluiceParser) matchers(q *SluiceQuery) error {
	for {
		p.skipSpace()
		if p.peek() == '}' {
			p.pos++
			return nil
		}
		label := p.ident()
		if label == "" {
			return p.errorf("want a label name or }")
		}
		canon, ok := sluiceLabels[label]
		if !ok {
			return p.errorf("unknown label %q (want namespace, workload, deployment, revision, pod or direction)", label)
		}
		if _, dup := q.Labels[canon]; dup {
			return p.errorf("label %q given twice", label)
		}
		p.skipSpace()
		if p.peek() != '=' {
			return p.errorf("want = after %s (only equality matchers are supported)", label)
		}
		p.pos++
		if p.pos < len(p.src) && (p.src[p.pos] == '~' || p.src[p.pos] == '=') {
			return p.errorf("only = matchers are supported")
		}
		p.skipSpace()
		if p.peek() != '"' {
			return p.errorf("want a double-quoted value for %s", label)
		}
		// Find the closing quote, honouring backslash escapes, and unquote.
		end := p.pos + 1
		for end < len(p.src) && p.src[end] != '"' {
			if p.src[end] == '\\' {
				end++
			}
			end++
		}
		if end >= len(p.src) {
			return p.errorf("value of %s has no closing quote", label)
		}
		v, err := strconv.Unquote(p.src[p.pos : end+1])
		if err != nil {
			return p.errorf("value of %s: %v", label, err)
		}
		if canon == "direction" && v != telemetry.Inbound && v != telemetry.Outbound {
			return p.errorf("direction %q is neither inbound nor outbound", v)
		}
		q.Labels[canon] = v
		p.pos = end + 1
		p.skipSpace()
		switch p.peek() {
		case ',':
			p.pos++
		case '}':
		default:
			return p.errorf("want , or } after the value of %s", label)
		}
	}
}

// Sluice is the Querier of the "sluice" provider type: it answers
// ParseSluiceQuery's language from the mesh's own telemetry.
type Sluice struct {
	// Source is the telemetry: an in-process store
	// (analysis.StoreSource(store)) or a *telemetry.Client.
	Source analysis.Source
}

// SluiceFactory returns the Factory of the "sluice" provider type, reading
// src. The template's address, headers and secret are not used.
func SluiceFactory(src analysis.Source) Factory {
	s := &Sluice{Source: src}
	return func(context.Context, string, v1beta1.MetricTemplateProvider) (Querier, error) {
		if src == nil {
			return nil, errors.New("no telemetry source")
		}
		return s, nil
	}
}

// String names the provider in messages.
func (s *Sluice) String() string { return "sluice telemetry" }

// ValidateQuery parses query.
func (s *Sluice) ValidateQuery(query string) error {
	_, err := ParseSluiceQuery(query)
	return err
}

// Check reads an empty window, to tell whether the telemetry answers.
func (s *Sluice) Check(ctx context.Context) error {
	if s.Source == nil {
		return errors.New("sluice telemetry: no telemetry source")
	}
	_, err := s.Source.Window(ctx, telemetry.Selector{Namespace: "sluice-check", Workload: "sluice-check"}, time.Minute)
	if err != nil && !errors.Is(err, telemetry.ErrNoData) {
		return fmt.Errorf("sluice telemetry is unreachable: %w", err)
	}
	return nil
}

// Query runs a sluice query; vars give the selector's defaults.
func (s *Sluice) Query(ctx context.Context, query string, vars Vars) (float64, error) {
	q, err := ParseSluiceQuery(query)
	if err != nil {
		return 0, err
	}
	if s.Source == nil {
		return 0, errors.New("sluice telemetry: no telemetry source")
	}
	sel := telemetry.Selector{
		Namespace: or(q.Labels["namespace"], vars.Namespace),
		Workload:  or(q.Labels["workload"], vars.Target),
		Revision:  q.Labels["revision"],
		Pod:       q.Labels["pod"],
		Direction: or(q.Labels["direction"], telemetry.Inbound),
	}
	d := q.Range
	if d == 0 {
		d = vars.Interval
	}
	if d <= 0 {
		d = defaultInterval
	}
	w, err := s.Source.Window(ctx, sel, d)
	switch {
	case errors.Is(err, telemetry.ErrNoData):
		return 0, NoData("%s/%s has no %s requests in the last %s", sel.Namespace, sel.Workload, sel.Direction, FormatInterval(d))
	case err != nil:
		return 0, fmt.Errorf("sluice telemetry: query %q failed: %w", strings.TrimSpace(query), err)
	case w.Requests <= 0:
		return 0, NoData("%s/%s has no %s requests in the last %s", sel.Namespace, sel.Workload, sel.Direction, FormatInterval(d))
	}
	switch q.Metric {
	case "success_rate":
		return min(100, 100*w.Successes/w.Requests), nil
	case "error_rate":
		return min(100, 100*w.Failures/w.Requests), nil
	case "rps":
		return w.RPS(), nil
	case "requests":
		return w.Requests, nil
	}
	v := w.Quantile(q.Quantile)
	if v != v { // NaN: no latency observations
		return 0, NoData("%s/%s has no latency observations in the last %s", sel.Namespace, sel.Workload, FormatInterval(d))
	}
	return v, nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
