// Package template runs the checks of a Canary that name a MetricTemplate
// (analysis.metrics[].templateRef): it renders the template's query for the
// canary, runs it on the template's provider, and judges the value against
// the check's thresholdRange.
//
// # Queries
//
// A query is a Go text/template, rendered with Flagger's functions:
//
//	{{ name }}        the Canary's name
//	{{ namespace }}   the Canary's namespace
//	{{ target }}      the target workload (targetRef.name)
//	{{ service }}     the Canary's service name (service.name, or the target)
//	{{ ingress }}     ingressRef.name, or the target
//	{{ route }}       routeRef.name, or the target
//	{{ interval }}    the check's interval, as PromQL writes it: 1m, 30s, 1m30s
//	{{ variables.KEY }}  the check's templateVariables[KEY]
//
// A key missing from templateVariables is an error, not an empty string
// (missingkey=error), and so is a function the list above does not have.
//
// # Providers
//
// Each provider type (spec.provider.type) is served by a Factory that the
// caller registers: analysis/prometheus for "prometheus", and Sluice for
// "sluice", the mesh's own telemetry, whose small query language is described
// on ParseSluiceQuery. A query that returns nothing, or NaN, is no data
// (ErrNoData): the engine's no-data policy decides, as for the built-in
// checks. Any other failure is an Error verdict whose message names the
// provider and the query.
package template

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/prometheus/common/model"
)

// Vars are the values a query is rendered with.
type Vars struct {
	// Name and Namespace are the Canary's.
	Name, Namespace string
	// Target is the target workload's name.
	Target string
	// Service is the Canary's service name; "" means Target.
	Service string
	// Ingress and Route are the Canary's ingressRef and routeRef names; ""
	// means Target.
	Ingress, Route string
	// Interval is the check's interval; 0 means analysis.DefaultInterval
	// (1m).
	Interval time.Duration
	// Variables are the check's templateVariables.
	Variables map[string]string
}

// defaultInterval is analysis.DefaultInterval, repeated to keep this file
// free of the analysis package.
const defaultInterval = time.Minute

// FormatInterval writes d as PromQL and Flagger's {{ interval }} do: 1m, 30s,
// 1m30s, 1h, 1d.
func FormatInterval(d time.Duration) string { return model.Duration(d).String() }

// Query is a parsed query template. It is safe for concurrent use.
type Query struct {
	text string
	tmpl *template.Template
}

// missingKey matches text/template's error for a missing map key, capturing
// its position and the key.
var missingKey = regexp.MustCompile(`^template: (query:\d+:\d+): executing .*: map has no entry for key "(.*)"$`)

// funcNames are the functions a query may call, besides text/template's own.
var funcNames = []string{"name", "namespace", "target", "service", "ingress", "route", "interval", "variables"}

// funcs returns the template functions reading v.
func funcs(v Vars) template.FuncMap {
	or := func(s string) string {
		if s == "" {
			return v.Target
		}
		return s
	}
	interval := v.Interval
	if interval <= 0 {
		interval = defaultInterval
	}
	vars := v.Variables
	if vars == nil {
		vars = map[string]string{}
	}
	return template.FuncMap{
		"name":      func() string { return v.Name },
		"namespace": func() string { return v.Namespace },
		"target":    func() string { return v.Target },
		"service":   func() string { return or(v.Service) },
		"ingress":   func() string { return or(v.Ingress) },
		"route":     func() string { return or(v.Route) },
		"interval":  func() string { return FormatInterval(interval) },
		"variables": func() map[string]string { return vars },
	}
}

// Parse parses a query template; the error names the line and column of a
// syntax error, or the unknown function.
func Parse(query string) (*Query, error) {
	if strings.TrimSpace(query) == "" {
		return nil, errors.New("query is empty")
	}
	t, err := template.New("query").Option("missingkey=error").Funcs(funcs(Vars{})).Parse(query)
	if err != nil {
		return nil, fmt.Errorf("parsing query template: %w", err)
	}
	return &Query{text: query, tmpl: t}, nil
}

// String returns the query template as written.
func (q *Query) String() string { return q.text }

// Render renders the query for v. A variable the query reads and v lacks is
// an error that names it and the variables there are.
func (q *Query) Render(v Vars) (string, error) {
	t, err := q.tmpl.Clone()
	if err != nil {
		return "", fmt.Errorf("rendering query: %w", err)
	}
	var b strings.Builder
	if err := t.Funcs(funcs(v)).Execute(&b, nil); err != nil {
		if m := missingKey.FindStringSubmatch(err.Error()); m != nil {
			have := "it is empty"
			if len(v.Variables) > 0 {
				have = "it has " + strings.Join(slices.Sorted(maps.Keys(v.Variables)), ", ")
			}
			return "", fmt.Errorf("rendering query (at %s): templateVariables has no key %q (%s)", m[1], m[2], have)
		}
		return "", fmt.Errorf("rendering query: %w", err)
	}
	return b.String(), nil
}

// Render parses query and renders it for v.
func Render(query string, v Vars) (string, error) {
	q, err := Parse(query)
	if err != nil {
		return "", err
	}
	return q.Render(v)
}

// Functions returns the names of the functions a query may call besides
// text/template's built-ins, for documentation and error messages.
func Functions() []string { return slices.Clone(funcNames) }
