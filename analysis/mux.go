package analysis

import (
	"context"
	"errors"
	"fmt"
)

// Mux is the Provider of a Canary's whole analysis: it sends a check that
// names a metric template (TemplateRef set) to Templates, and any other to
// Builtin.
type Mux struct {
	// Builtin runs the built-in checks; usually NewBuiltin.
	Builtin Provider
	// Templates runs the checks with a TemplateRef; usually a
	// *template.Runner (analysis/template).
	Templates Provider
}

var _ Provider = Mux{}

// Run runs c on the provider its kind calls for; a missing provider is an
// Error result naming what is not configured.
func (m Mux) Run(ctx context.Context, t Target, c Check) Result {
	if c.TemplateRef != "" {
		if m.Templates == nil {
			return ErrorResult(c, fmt.Errorf("metric template %q: no metric template provider is configured", c.TemplateRef))
		}
		return m.Templates.Run(ctx, t, c)
	}
	if m.Builtin == nil {
		return ErrorResult(c, errors.New("no built-in metrics provider is configured"))
	}
	return m.Builtin.Run(ctx, t, c)
}
