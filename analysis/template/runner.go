package template

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"

	"github.com/sluicehq/sluice/analysis"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// ErrNoData is what a Querier returns (wrapped, or through NoData) when its
// query returned nothing to judge: an empty result, or NaN (such as 0/0 when
// there was no traffic). The check's verdict is then analysis.NoData.
var ErrNoData = errors.New("query returned no data")

// NoData returns an error that says why there is no data (the format and
// args, as fmt.Sprintf) and that is ErrNoData for errors.Is. The Runner
// writes its text into the check's no-data message.
func NoData(format string, args ...any) error {
	return &noDataError{msg: fmt.Sprintf(format, args...)}
}

type noDataError struct{ msg string }

func (e *noDataError) Error() string        { return e.msg }
func (e *noDataError) Is(target error) bool { return target == ErrNoData }

// Querier runs rendered queries on one provider.
type Querier interface {
	// Query runs query and returns its single value. vars are what the query
	// was rendered with, for providers (such as sluice) whose queries have
	// defaults. It returns an error wrapping ErrNoData when there is no
	// value, and otherwise an error that names the provider and the query.
	Query(ctx context.Context, query string, vars Vars) (float64, error)
}

// Checker is implemented by a Querier that can tell whether its provider
// answers, so that a provider that is down is reported when a canary is
// initialized rather than at its first step.
type Checker interface {
	Check(ctx context.Context) error
}

// QueryValidator is implemented by a Querier that can check a rendered
// query's syntax without running it.
type QueryValidator interface {
	ValidateQuery(query string) error
}

// Factory builds the Querier of a MetricTemplate's provider; namespace is the
// template's (where its secretRef lives). The Runner caches what it returns
// per template, until the template's provider changes; a Querier that is an
// io.Closer is closed then, and by Runner.Close.
type Factory func(ctx context.Context, namespace string, spec v1beta1.MetricTemplateProvider) (Querier, error)

// Getter finds MetricTemplates: a Kubernetes client, or local mode's store.
type Getter interface {
	MetricTemplate(ctx context.Context, namespace, name string) (*v1beta1.MetricTemplate, error)
}

// GetterFunc adapts a function to Getter.
type GetterFunc func(ctx context.Context, namespace, name string) (*v1beta1.MetricTemplate, error)

// MetricTemplate calls f.
func (f GetterFunc) MetricTemplate(ctx context.Context, namespace, name string) (*v1beta1.MetricTemplate, error) {
	return f(ctx, namespace, name)
}

// Static is a fixed set of templates, keyed by "namespace/name".
type Static map[string]*v1beta1.MetricTemplate

// MetricTemplate returns the template namespace/name, or an error saying
// there is none.
func (s Static) MetricTemplate(_ context.Context, namespace, name string) (*v1beta1.MetricTemplate, error) {
	if t, ok := s[namespace+"/"+name]; ok && t != nil {
		return t, nil
	}
	return nil, fmt.Errorf("metric template %s/%s not found", namespace, name)
}

// Options configure a Runner.
type Options struct {
	// Templates finds the templates checks refer to. Required.
	Templates Getter
	// Providers serve the provider types; a template whose type has no
	// factory here fails its checks with an error naming the type.
	Providers map[v1beta1.MetricProviderType]Factory
	// Vars returns the values check c's query is rendered with. nil means
	// DefaultVars, which has no templateVariables: the canary engine, which
	// knows the Canary (its name, service and each metric's
	// templateVariables), sets this.
	Vars func(t analysis.Target, c analysis.Check) Vars
	// Logger receives the cache's events; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultVars are the values a query is rendered with when Options.Vars is
// nil: the canary workload's name as name, target and service, the target's
// namespace, the check's interval, and no variables.
func DefaultVars(t analysis.Target, c analysis.Check) Vars {
	return Vars{
		Name:      t.Canary.Name,
		Namespace: t.Namespace,
		Target:    t.Canary.Name,
		Interval:  c.Interval,
	}
}

// Runner is the analysis.Provider of checks with a TemplateRef. Create it
// with NewRunner; its methods are safe for concurrent use.
type Runner struct {
	opts Options
	log  *slog.Logger

	mu     sync.Mutex
	cache  map[string]*cached // by template "namespace/name"
	closed bool
}

// cached is the Querier built for one template's provider.
type cached struct {
	spec    string // the namespace and provider spec it was built from
	querier Querier
}

var _ analysis.Provider = (*Runner)(nil)

// NewRunner returns a Runner.
func NewRunner(opts Options) *Runner {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Runner{opts: opts, log: log, cache: make(map[string]*cached)}
}

// Close closes the Queriers the Runner built. A Runner must not be used after
// Close.
func (r *Runner) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for k, c := range r.cache {
		errs = append(errs, closeQuerier(c.querier))
		delete(r.cache, k)
	}
	r.closed = true
	return errors.Join(errs...)
}

func closeQuerier(q Querier) error {
	if c, ok := q.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// prepared is a check resolved down to a rendered query and its querier.
type prepared struct {
	ref      string // "namespace/name" of the template
	provider string // the provider, for messages
	query    string // rendered
	vars     Vars
	querier  Querier
}

// prepare finds c's template, renders its query for t and finds its querier.
func (r *Runner) prepare(ctx context.Context, t analysis.Target, c analysis.Check) (*prepared, error) {
	if c.TemplateRef == "" {
		return nil, fmt.Errorf("check %q has no templateRef", c.Name)
	}
	if err := checkThresholds(c); err != nil {
		return nil, err
	}
	ns, name := t.Namespace, c.TemplateRef
	if before, after, ok := strings.Cut(c.TemplateRef, "/"); ok {
		ns, name = before, after
	}
	if ns == "" || name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("templateRef %q is not \"name\" or \"namespace/name\" (target namespace %q)", c.TemplateRef, t.Namespace)
	}
	ref := ns + "/" + name
	if r.opts.Templates == nil {
		return nil, fmt.Errorf("metric template %s: no template source configured", ref)
	}
	mt, err := r.opts.Templates.MetricTemplate(ctx, ns, name)
	if err != nil {
		return nil, fmt.Errorf("metric template %s: %w", ref, err)
	}
	if mt == nil {
		return nil, fmt.Errorf("metric template %s not found", ref)
	}
	q, err := Parse(mt.Spec.Query)
	if err != nil {
		return nil, fmt.Errorf("metric template %s: %w", ref, err)
	}
	varsOf := r.opts.Vars
	if varsOf == nil {
		varsOf = DefaultVars
	}
	vars := varsOf(t, c)
	if vars.Interval <= 0 {
		vars.Interval = defaultInterval
	}
	rendered, err := q.Render(vars)
	if err != nil {
		return nil, fmt.Errorf("metric template %s: %w", ref, err)
	}
	querier, err := r.querier(ctx, ref, ns, mt.Spec.Provider)
	if err != nil {
		return nil, fmt.Errorf("metric template %s: %w", ref, err)
	}
	return &prepared{ref: ref, provider: describe(querier, mt.Spec.Provider), query: rendered, vars: vars, querier: querier}, nil
}

// describe names a querier in messages: its String, or its provider type.
func describe(q Querier, spec v1beta1.MetricTemplateProvider) string {
	if s, ok := q.(fmt.Stringer); ok {
		return s.String()
	}
	if spec.Address != "" {
		return fmt.Sprintf("%s at %s", spec.Type, spec.Address)
	}
	return string(spec.Type)
}

// querier returns the cached Querier of template ref, building it when there
// is none or the provider spec changed.
func (r *Runner) querier(ctx context.Context, ref, ns string, spec v1beta1.MetricTemplateProvider) (Querier, error) {
	raw, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("provider spec: %w", err)
	}
	key := ns + "\x00" + string(raw)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errors.New("metric template runner is closed")
	}
	if c, ok := r.cache[ref]; ok {
		if c.spec == key {
			return c.querier, nil
		}
		if err := closeQuerier(c.querier); err != nil {
			r.log.Warn("closing the old provider of a metric template", "template", ref, "error", err)
		}
		delete(r.cache, ref)
	}
	factory, ok := r.opts.Providers[spec.Type]
	if !ok || factory == nil {
		return nil, fmt.Errorf("provider type %q is not supported (supported: %s)", spec.Type, r.supported())
	}
	q, err := factory(ctx, ns, spec)
	if err != nil {
		return nil, fmt.Errorf("%s provider: %w", spec.Type, err)
	}
	r.cache[ref] = &cached{spec: key, querier: q}
	return q, nil
}

// supported lists the provider types with a factory.
func (r *Runner) supported() string {
	var types []string
	for t, f := range r.opts.Providers {
		if f != nil {
			types = append(types, string(t))
		}
	}
	if len(types) == 0 {
		return "none"
	}
	slices.Sort(types)
	return strings.Join(types, ", ")
}

// Validate checks, when a canary is initialized, everything Run would need
// for c: that the template exists and renders for t (every variable it reads
// is set), that the rendered query is well formed when the provider can tell,
// and that the provider answers. The error names the check, the template and
// what is wrong.
func (r *Runner) Validate(ctx context.Context, t analysis.Target, c analysis.Check) error {
	p, err := r.prepare(ctx, t, c)
	if err != nil {
		return fmt.Errorf("check %s: %w", c.Name, err)
	}
	if v, ok := p.querier.(QueryValidator); ok {
		if err := v.ValidateQuery(p.query); err != nil {
			return fmt.Errorf("check %s: metric template %s: %w", c.Name, p.ref, err)
		}
	}
	if ch, ok := p.querier.(Checker); ok {
		if err := ch.Check(ctx); err != nil {
			return fmt.Errorf("check %s: metric template %s: %w", c.Name, p.ref, err)
		}
	}
	return nil
}

// Run runs check c, whose TemplateRef names a MetricTemplate, against target
// t. Every problem is in the Result: NoData when the query returned nothing
// or NaN, Error when the template, its rendering, its provider or the query
// failed.
func (r *Runner) Run(ctx context.Context, t analysis.Target, c analysis.Check) analysis.Result {
	p, err := r.prepare(ctx, t, c)
	if err != nil {
		return analysis.ErrorResult(c, err)
	}
	v, err := p.querier.Query(ctx, p.query, p.vars)
	switch {
	case errors.Is(err, ErrNoData):
		return r.noData(c, p, err.Error())
	case err != nil:
		return analysis.ErrorResult(c, fmt.Errorf("metric template %s: %w", p.ref, err))
	case math.IsNaN(v):
		return r.noData(c, p, "the query returned NaN")
	}
	return judge(c, v)
}

// noData is c's NoData result: why, and Flagger's hint.
func (r *Runner) noData(c analysis.Check, p *prepared, why string) analysis.Result {
	return analysis.NoDataResult(c, fmt.Sprintf("no values for %s from %s (metric template %s): %s; probably %s.%s is not receiving traffic",
		c.Name, p.provider, p.ref, why, p.vars.Target, p.vars.Namespace))
}

// checkThresholds refuses threshold ranges no value can be judged against.
func checkThresholds(c analysis.Check) error {
	var errs []error
	if c.Min != nil && (math.IsNaN(*c.Min) || math.IsInf(*c.Min, 0)) {
		errs = append(errs, fmt.Errorf("threshold min %v is not a number", *c.Min))
	}
	if c.Max != nil && (math.IsNaN(*c.Max) || math.IsInf(*c.Max, 0)) {
		errs = append(errs, fmt.Errorf("threshold max %v is not a number", *c.Max))
	}
	if len(errs) == 0 && c.Min != nil && c.Max != nil && *c.Min > *c.Max {
		errs = append(errs, fmt.Errorf("threshold min %v is greater than max %v", *c.Min, *c.Max))
	}
	return errors.Join(errs...)
}

// judge compares v with c's thresholdRange: it fails when v < min or
// v > max; a check with neither passes whenever it has a value, as in
// Flagger.
func judge(c analysis.Check, v float64) analysis.Result {
	res := analysis.NewResult(c, analysis.Pass, v, "")
	switch {
	case c.Min != nil && v < *c.Min:
		res.Verdict = analysis.Fail
		res.Message = fmt.Sprintf("%s %s < min %s", c.Name, formatAgainst(v, *c.Min), formatBound(*c.Min))
	case c.Max != nil && v > *c.Max:
		res.Verdict = analysis.Fail
		res.Message = fmt.Sprintf("%s %s > max %s", c.Name, formatAgainst(v, *c.Max), formatBound(*c.Max))
	default:
		res.Message = c.Name + " " + formatValue(v)
		var bounds []string
		if c.Min != nil {
			bounds = append(bounds, "min "+formatBound(*c.Min))
		}
		if c.Max != nil {
			bounds = append(bounds, "max "+formatBound(*c.Max))
		}
		if len(bounds) > 0 {
			res.Message += " (" + strings.Join(bounds, ", ") + ")"
		}
	}
	return res
}
