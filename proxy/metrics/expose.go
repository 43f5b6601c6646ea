package metrics

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
)

// Family is one metric family as gathered: its name, type and help, and its
// samples in exposition order. A histogram's samples are expanded as in the text
// format: name_bucket (with an le label, cumulative, ending with le="+Inf"),
// name_sum and name_count for each series.
type Family struct {
	Name    string
	Type    Type
	Help    string
	Samples []Sample
}

// Sample is one line of the exposition.
type Sample struct {
	// Name is the family name, or for histograms the family name with its
	// _bucket, _sum or _count suffix.
	Name   string
	Labels Labels
	Value  float64
}

// entry is one series of a family at scrape time: a value, or a histogram.
type entry struct {
	s *series
	v float64
	h *histSnapshot
}

// famOut is one family being gathered.
type famOut struct {
	name    string
	typ     Type
	help    string
	entries []entry
}

// collector gathers samples from every source into families.
type collector struct {
	meta map[string]familyMeta
	fams map[string]*famOut
}

func (c *collector) family(name string) *famOut {
	f := c.fams[name]
	if f == nil {
		m := c.meta[name]
		f = &famOut{name: name, typ: m.typ, help: m.help}
		c.fams[name] = f
	}
	return f
}

// value adds a counter or gauge sample.
func (c *collector) value(name string, s *series, v float64) {
	f := c.family(name)
	f.entries = append(f.entries, entry{s: s, v: v})
}

// hist adds a histogram series.
func (c *collector) hist(name string, s *series, h histSnapshot) {
	f := c.family(name)
	f.entries = append(f.entries, entry{s: s, h: &h})
}

// gather reads every series: families sorted by name, series sorted by their
// rendered labels, and series that render identically merged by summing.
func (r *Registry) gather() []*famOut {
	r.mu.RLock()
	c := &collector{meta: maps.Clone(r.meta), fams: make(map[string]*famOut)}
	https := slices.Collect(maps.Values(r.http))
	tcps := slices.Collect(maps.Values(r.tcp))
	counters := slices.Collect(maps.Values(r.counters))
	gauges := slices.Collect(maps.Values(r.gauges))
	funcs := slices.Collect(maps.Values(r.funcs))
	r.mu.RUnlock()

	for _, s := range https {
		s.collect(c)
	}
	for _, t := range tcps {
		t.collect(c)
	}
	for _, ctr := range counters {
		c.value(ctr.name, ctr.s, float64(ctr.Value()))
	}
	for _, g := range gauges {
		c.value(g.name, g.s, g.Value())
	}
	// Callbacks run without the registry lock, so they may read other handles.
	for _, e := range funcs {
		e.fn(func(labels Labels, v float64) {
			c.value(e.name, newSeries("", labels, r.static), v)
		})
	}

	fams := slices.Collect(maps.Values(c.fams))
	slices.SortFunc(fams, func(a, b *famOut) int { return cmp.Compare(a.name, b.name) })
	for _, f := range fams {
		slices.SortStableFunc(f.entries, func(a, b entry) int { return cmp.Compare(a.s.text, b.s.text) })
		f.entries = mergeEntries(f.entries)
	}
	return fams
}

// mergeEntries sums adjacent entries with identical labels, so the exposition
// never repeats a series.
func mergeEntries(es []entry) []entry {
	out := es[:0]
	for _, e := range es {
		if n := len(out); n > 0 && out[n-1].s.text == e.s.text {
			last := &out[n-1]
			switch {
			case last.h != nil && e.h != nil:
				last.h.add(e.h)
			case last.h == nil && e.h == nil:
				last.v += e.v
			}
			continue
		}
		out = append(out, e)
	}
	return out
}

// Gather returns every family with its samples, in the order WriteText writes
// them. The samples' labels are copies the caller may keep or change.
func (r *Registry) Gather() []Family {
	fams := r.gather()
	out := make([]Family, 0, len(fams))
	for _, f := range fams {
		fam := Family{Name: f.name, Type: f.typ, Help: f.help}
		for _, e := range f.entries {
			if e.h == nil {
				fam.Samples = append(fam.Samples, Sample{Name: f.name, Labels: slices.Clone(e.s.labels), Value: e.v})
				continue
			}
			for b, le := range boundsLe {
				ls := append(slices.Clone(e.s.labels), Label{"le", le})
				fam.Samples = append(fam.Samples, Sample{Name: f.name + "_bucket", Labels: ls, Value: float64(e.h.cumulative[b])})
			}
			fam.Samples = append(fam.Samples,
				Sample{Name: f.name + "_sum", Labels: slices.Clone(e.s.labels), Value: e.h.sumMs},
				Sample{Name: f.name + "_count", Labels: slices.Clone(e.s.labels), Value: float64(e.h.cumulative[numBuckets-1])},
			)
		}
		out = append(out, fam)
	}
	return out
}

// flushSize is how much text WriteText buffers before writing.
const flushSize = 32 << 10

// WriteText writes every family in the Prometheus text exposition format 0.0.4:
// a # HELP and # TYPE line per family, families sorted by name, series sorted by
// labels, label values escaped, and histograms as cumulative _bucket lines ending
// with le="+Inf", then _sum and _count.
func (r *Registry) WriteText(w io.Writer) error {
	fams := r.gather()
	b := make([]byte, 0, flushSize+4096)
	flush := func(force bool) error {
		if len(b) == 0 || (!force && len(b) < flushSize) {
			return nil
		}
		_, err := w.Write(b)
		b = b[:0]
		if err != nil {
			return fmt.Errorf("metrics: writing exposition: %w", err)
		}
		return nil
	}
	for _, f := range fams {
		if len(f.entries) == 0 {
			continue
		}
		b = append(b, "# HELP "...)
		b = append(b, f.name...)
		b = append(b, ' ')
		b = appendEscapedHelp(b, f.help)
		b = append(b, "\n# TYPE "...)
		b = append(b, f.name...)
		b = append(b, ' ')
		b = append(b, f.typ...)
		b = append(b, '\n')
		for _, e := range f.entries {
			if e.h == nil {
				b = appendSample(b, f.name, "", e.s.text, "", e.v)
			} else {
				for i, le := range boundsLe {
					b = appendSample(b, f.name, "_bucket", e.s.text, le, float64(e.h.cumulative[i]))
				}
				b = appendSample(b, f.name, "_sum", e.s.text, "", e.h.sumMs)
				b = appendSample(b, f.name, "_count", e.s.text, "", float64(e.h.cumulative[numBuckets-1]))
			}
			if err := flush(false); err != nil {
				return err
			}
		}
	}
	return flush(true)
}

// appendSample writes one line: name+suffix{labels,le="le"} value.
func appendSample(b []byte, name, suffix, labels, le string, v float64) []byte {
	b = append(b, name...)
	b = append(b, suffix...)
	if labels != "" || le != "" {
		b = append(b, '{')
		b = append(b, labels...)
		if le != "" {
			if labels != "" {
				b = append(b, ',')
			}
			b = append(b, `le="`...)
			b = append(b, le...)
			b = append(b, '"')
		}
		b = append(b, '}')
	}
	b = append(b, ' ')
	b = appendValue(b, v)
	return append(b, '\n')
}

// appendValue formats a sample value: integers without exponent or fraction
// (counters are integers), other values in Go's shortest form, and the special
// values as Prometheus spells them.
func appendValue(b []byte, v float64) []byte {
	switch {
	case math.IsNaN(v):
		return append(b, "NaN"...)
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return strconv.AppendInt(b, int64(v), 10)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}
