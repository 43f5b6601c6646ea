package metrics

import (
	"encoding/binary"
	"strings"
	"unicode/utf8"
)

// Label is one name/value pair of a series.
type Label struct{ Name, Value string }

// Labels is an ordered list of labels. The order given is the order written in
// the exposition; callers should always pass the same names in the same order
// for the same kind of series, because the order is part of a series' identity.
type Labels []Label

// Get returns the value of the first label called name, and whether there is one.
func (ls Labels) Get(name string) (string, bool) {
	for _, l := range ls {
		if l.Name == name {
			return l.Value, true
		}
	}
	return "", false
}

// String renders the labels as they appear in the exposition: {a="b",c="d"}.
func (ls Labels) String() string {
	return "{" + renderLabels(ls) + "}"
}

// series is one labelled series as fixed at creation: its final labels (deduplicated,
// sanitized, static labels included) and their rendered form without braces.
type series struct {
	labels Labels
	text   string
}

// newSeries combines label lists in order into one series. A label whose name
// already occurred is dropped (the first occurrence wins); names are sanitized to
// the Prometheus alphabet and values made valid UTF-8. drop names labels to leave
// out altogether (such as "le" for histograms).
func newSeries(drop string, parts ...Labels) *series {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	out := make(Labels, 0, n)
	for _, p := range parts {
		for _, l := range p {
			name := sanitizeLabelName(l.Name)
			if name == drop {
				continue
			}
			if _, dup := out.Get(name); dup {
				continue
			}
			out = append(out, Label{Name: name, Value: strings.ToValidUTF8(l.Value, "\uFFFD")})
		}
	}
	return &series{labels: out, text: renderLabels(out)}
}

// renderLabels writes labels as a="b",c="d" with values escaped.
func renderLabels(ls Labels) string {
	var b []byte
	for i, l := range ls {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, l.Name...)
		b = append(b, '=', '"')
		b = appendEscapedValue(b, l.Value)
		b = append(b, '"')
	}
	return string(b)
}

// appendEscapedValue escapes a label value for the text format: backslash,
// double quote and newline.
func appendEscapedValue(b []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '\\':
			b = append(b, '\\', '\\')
		case '"':
			b = append(b, '\\', '"')
		case '\n':
			b = append(b, '\\', 'n')
		default:
			b = append(b, c)
		}
	}
	return b
}

// appendEscapedHelp escapes HELP text: backslash and newline.
func appendEscapedHelp(b []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '\\':
			b = append(b, '\\', '\\')
		case '\n':
			b = append(b, '\\', 'n')
		default:
			b = append(b, c)
		}
	}
	return b
}

// sanitizeLabelName maps a label name onto [a-zA-Z_][a-zA-Z0-9_]*, replacing
// any other byte with '_'.
func sanitizeLabelName(name string) string {
	return sanitize(name, false)
}

// sanitizeMetricName maps a metric name onto [a-zA-Z_:][a-zA-Z0-9_:]*.
func sanitizeMetricName(name string) string {
	return sanitize(name, true)
}

func sanitize(name string, colon bool) string {
	ok := func(c byte, first bool) bool {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
			return true
		case c >= '0' && c <= '9':
			return !first
		case c == ':':
			return colon
		}
		return false
	}
	valid := name != ""
	for i := 0; i < len(name) && valid; i++ {
		valid = ok(name[i], i == 0)
	}
	if valid {
		return name
	}
	if name == "" {
		return "_"
	}
	b := make([]byte, 0, len(name)+1)
	if name[0] >= '0' && name[0] <= '9' {
		b = append(b, '_')
	}
	for i := 0; i < len(name); {
		_, size := utf8.DecodeRuneInString(name[i:])
		if size == 1 && ok(name[i], len(b) == 0) {
			b = append(b, name[i])
		} else {
			b = append(b, '_')
		}
		i += size
	}
	return string(b)
}

// appendKey appends an unambiguous encoding of the parts to b: every string is
// prefixed by its length, so no value can forge another key. It is used to key
// the registry's maps; with a stack buffer it does not allocate.
func appendKey(b []byte, prefix string, ls Labels) []byte {
	b = binary.AppendUvarint(b, uint64(len(prefix)))
	b = append(b, prefix...)
	for _, l := range ls {
		b = binary.AppendUvarint(b, uint64(len(l.Name)))
		b = append(b, l.Name...)
		b = binary.AppendUvarint(b, uint64(len(l.Value)))
		b = append(b, l.Value...)
	}
	return b
}
