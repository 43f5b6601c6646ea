package manifest

import (
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

// document is one YAML document of a file.
type document struct {
	root *yaml.Node // the document's content (not the DocumentNode)
	line int        // where it starts
}

// splitDocuments parses data into its documents, dropping empty ones. On a
// syntax error it returns the documents before it and the error.
func splitDocuments(data []byte) ([]document, error) {
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	var docs []document
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return docs, err
		}
		if n.Kind != yaml.DocumentNode || len(n.Content) == 0 {
			continue
		}
		root := n.Content[0]
		if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
			continue // "---" followed by nothing but comments
		}
		docs = append(docs, document{root: root, line: max(root.Line, 1)})
	}
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxProblem turns a YAML parser error into a Problem with its line.
func syntaxProblem(file string, err error) *Problem {
	msg := err.Error()
	p := &Problem{File: file, Message: "not valid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		p.Line, _ = strconv.Atoi(m[1])
		p.Message = "not valid YAML: " + m[2]
	}
	return p
}

// nodeError is a problem found converting a node, with its position.
type nodeError struct {
	line  int
	field string
	msg   string
}

func (e *nodeError) Error() string { return e.msg }

// toValue converts a YAML node to what encoding/json marshals: maps with
// string keys, slices, strings, int64s, float64s, bools and nil. Mapping keys
// must be strings and unique; merge keys (<<) are applied, explicit keys
// winning; aliases are followed.
func toValue(n *yaml.Node, path string, depth int) (any, error) {
	if depth > 100 {
		return nil, &nodeError{line: n.Line, field: path, msg: "nested too deeply (or a recursive alias)"}
	}
	switch n.Kind {
	case yaml.AliasNode:
		return toValue(n.Alias, path, depth+1)
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return toValue(n.Content[0], path, depth+1)
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for i, c := range n.Content {
			v, err := toValue(c, fmt.Sprintf("%s[%d]", path, i), depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case yaml.MappingNode:
		out := map[string]any{}
		explicit := map[string]bool{}
		var merges []*yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.ShortTag() == "!!merge" {
				merges = append(merges, v)
				continue
			}
			if k.Kind != yaml.ScalarNode {
				return nil, &nodeError{line: k.Line, field: path, msg: "a mapping key must be a string"}
			}
			name := k.Value
			fp := joinPath(path, name)
			if explicit[name] {
				return nil, &nodeError{line: k.Line, field: fp, msg: "duplicate field"}
			}
			explicit[name] = true
			val, err := toValue(v, fp, depth+1)
			if err != nil {
				return nil, err
			}
			out[name] = val
		}
		for _, m := range merges {
			if err := mergeInto(out, explicit, m, path, depth+1); err != nil {
				return nil, err
			}
		}
		return out, nil
	case yaml.ScalarNode:
		return scalar(n, path)
	}
	return nil, &nodeError{line: n.Line, field: path, msg: fmt.Sprintf("unexpected YAML node kind %v", n.Kind)}
}

// mergeInto applies a merge key's value (a mapping, an alias of one, or a
// sequence of them) to out without replacing keys already set.
func mergeInto(out map[string]any, explicit map[string]bool, m *yaml.Node, path string, depth int) error {
	for m.Kind == yaml.AliasNode {
		m = m.Alias
	}
	switch m.Kind {
	case yaml.MappingNode:
		v, err := toValue(m, path, depth)
		if err != nil {
			return err
		}
		for k, val := range v.(map[string]any) {
			if !explicit[k] {
				if _, set := out[k]; !set {
					out[k] = val
				}
			}
		}
		return nil
	case yaml.SequenceNode:
		for _, c := range m.Content {
			if err := mergeInto(out, explicit, c, path, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return &nodeError{line: m.Line, field: path, msg: "a merge key (<<) must refer to a mapping"}
}

// scalar converts a scalar by its resolved tag.
func scalar(n *yaml.Node, path string) (any, error) {
	bad := func(err error) error {
		return &nodeError{line: n.Line, field: path, msg: fmt.Sprintf("%q: %v", n.Value, err)}
	}
	switch n.ShortTag() {
	case "!!null":
		return nil, nil
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			return nil, bad(err)
		}
		return b, nil
	case "!!int":
		var i int64
		if err := n.Decode(&i); err == nil {
			return i, nil
		}
		var u uint64
		if err := n.Decode(&u); err != nil {
			return nil, bad(err)
		}
		return float64(u), nil
	case "!!float":
		var f float64
		if err := n.Decode(&f); err != nil {
			return nil, bad(err)
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, &nodeError{line: n.Line, field: path, msg: fmt.Sprintf("%q is not a finite number", n.Value)}
		}
		return f, nil
	case "!!timestamp":
		// Kept as written; a typed field that wants a time parses it.
		if t, err := time.Parse(time.RFC3339Nano, n.Value); err == nil {
			return t.Format(time.RFC3339Nano), nil
		}
		return n.Value, nil
	default: // !!str, !!binary and custom tags: the text
		return n.Value, nil
	}
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// lineOf returns the line of the field at path ("spec.containers[0].name")
// under root: the line of its key, or of the deepest part of the path found.
func lineOf(root *yaml.Node, path string) int {
	n := root
	line := root.Line
	for _, part := range splitPath(path) {
		for n.Kind == yaml.AliasNode {
			n = n.Alias
		}
		next, keyLine := child(n, part)
		if next == nil {
			return line
		}
		if keyLine > 0 {
			line = keyLine
		} else {
			line = next.Line
		}
		n = next
	}
	return line
}

// child finds a path part in n: a mapping key, or "[i]" in a sequence. It
// returns the value node and the key's line (0 for a sequence item).
func child(n *yaml.Node, part string) (*yaml.Node, int) {
	if strings.HasPrefix(part, "[") && strings.HasSuffix(part, "]") {
		i, err := strconv.Atoi(part[1 : len(part)-1])
		if err != nil || n.Kind != yaml.SequenceNode || i < 0 || i >= len(n.Content) {
			return nil, 0
		}
		return n.Content[i], 0
	}
	if n.Kind != yaml.MappingNode {
		return nil, 0
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == part {
			return n.Content[i+1], n.Content[i].Line
		}
	}
	return nil, 0
}

// splitPath splits "a.b[2].c" into "a", "b", "[2]", "c". A key with a dot in
// it cannot be told apart; such a path resolves as far as it can.
func splitPath(path string) []string {
	var parts []string
	for seg := range strings.SplitSeq(path, ".") {
		for seg != "" {
			i := strings.IndexByte(seg, '[')
			switch {
			case i < 0:
				parts = append(parts, seg)
				seg = ""
			case i > 0:
				parts = append(parts, seg[:i])
				seg = seg[i:]
			default:
				j := strings.IndexByte(seg, ']')
				if j < 0 {
					parts = append(parts, seg)
					seg = ""
					continue
				}
				parts = append(parts, seg[:j+1])
				seg = seg[j+1:]
			}
		}
	}
	return parts
}
