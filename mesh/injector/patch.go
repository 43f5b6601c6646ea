package injector

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// PatchOp is one RFC 6902 JSON Patch operation: add, remove or replace.
type PatchOp struct {
	Op    string          `json:"op"`
	Path  string          `json:"path"`
	Value json.RawMessage `json:"value,omitempty"`
}

// CreatePatch returns the JSON Patch that turns original into patched (any
// two values that marshal to JSON, such as two *corev1.Pod). It is as narrow
// as it can be: changed keys of objects one by one, and elements inserted
// into arrays as adds at their index, so that applying it to the object the
// API server holds leaves alone fields this program's types do not know.
// An array changed in any other way is replaced whole.
func CreatePatch(original, patched any) ([]PatchOp, error) {
	a, err := toGeneric(original)
	if err != nil {
		return nil, fmt.Errorf("create patch: original: %w", err)
	}
	b, err := toGeneric(patched)
	if err != nil {
		return nil, fmt.Errorf("create patch: patched: %w", err)
	}
	var ops []PatchOp
	if err := diff("", a, b, &ops); err != nil {
		return nil, fmt.Errorf("create patch: %w", err)
	}
	return ops, nil
}

// toGeneric round-trips v through JSON into maps, slices and json.Numbers.
func toGeneric(v any) (any, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return decodeGeneric(raw)
}

func decodeGeneric(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var out any
	if err := dec.Decode(&out); err != nil {
		return nil, err
	}
	return out, nil
}

func diff(path string, a, b any, ops *[]PatchOp) error {
	if reflect.DeepEqual(a, b) {
		return nil
	}
	switch av := a.(type) {
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok {
			return addOp(ops, "replace", path, b)
		}
		keys := make([]string, 0, len(av)+len(bv))
		for k := range av {
			keys = append(keys, k)
		}
		for k := range bv {
			if _, ok := av[k]; !ok {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			p := path + "/" + escapePointer(k)
			x, inA := av[k]
			y, inB := bv[k]
			switch {
			case !inB:
				*ops = append(*ops, PatchOp{Op: "remove", Path: p})
			case !inA:
				if err := addOp(ops, "add", p, y); err != nil {
					return err
				}
			default:
				if err := diff(p, x, y, ops); err != nil {
					return err
				}
			}
		}
		return nil
	case []any:
		bv, ok := b.([]any)
		if !ok {
			return addOp(ops, "replace", path, b)
		}
		if inserted, ok := insertions(av, bv); ok {
			for _, i := range inserted {
				if err := addOp(ops, "add", path+"/"+strconv.Itoa(i), bv[i]); err != nil {
					return err
				}
			}
			return nil
		}
		return addOp(ops, "replace", path, b)
	default:
		return addOp(ops, "replace", path, b)
	}
}

// insertions reports whether b is a with elements inserted, and their
// indexes in b (ascending, so that adding them in order rebuilds b).
func insertions(a, b []any) ([]int, bool) {
	if len(b) <= len(a) {
		return nil, false
	}
	var idx []int
	j := 0
	for i, v := range b {
		if j < len(a) && reflect.DeepEqual(a[j], v) {
			j++
			continue
		}
		idx = append(idx, i)
	}
	return idx, j == len(a)
}

func addOp(ops *[]PatchOp, op, path string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	*ops = append(*ops, PatchOp{Op: op, Path: path, Value: raw})
	return nil
}

// escapePointer escapes a key for a JSON Pointer (RFC 6901).
func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

func unescapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
}

// ApplyPatch applies add, remove and replace operations to doc, a value
// decoded from JSON into maps and slices, and returns the result (doc's maps
// are changed in place). It is what `sluice inject` uses to patch manifests
// as the API server would.
func ApplyPatch(doc any, ops []PatchOp) (any, error) {
	for i, op := range ops {
		var value any
		if op.Op == "add" || op.Op == "replace" {
			if len(op.Value) == 0 {
				return nil, fmt.Errorf("patch operation %d (%s %s): no value", i, op.Op, op.Path)
			}
			v, err := decodeGeneric(op.Value)
			if err != nil {
				return nil, fmt.Errorf("patch operation %d (%s %s): value: %w", i, op.Op, op.Path, err)
			}
			value = v
		}
		if op.Path == "" {
			if op.Op != "replace" && op.Op != "add" {
				return nil, fmt.Errorf("patch operation %d: %s of the whole document", i, op.Op)
			}
			doc = value
			continue
		}
		if !strings.HasPrefix(op.Path, "/") {
			return nil, fmt.Errorf("patch operation %d: path %q does not start with /", i, op.Path)
		}
		tokens := strings.Split(op.Path[1:], "/")
		for k := range tokens {
			tokens[k] = unescapePointer(tokens[k])
		}
		var err error
		if doc, err = applyAt(doc, tokens, op.Op, value); err != nil {
			return nil, fmt.Errorf("patch operation %d (%s %s): %w", i, op.Op, op.Path, err)
		}
	}
	return doc, nil
}

// applyAt applies one operation at tokens below node and returns the new node.
func applyAt(node any, tokens []string, op string, value any) (any, error) {
	tok, last := tokens[0], len(tokens) == 1
	switch n := node.(type) {
	case map[string]any:
		child, ok := n[tok]
		if last {
			switch op {
			case "add":
				n[tok] = value
			case "replace":
				if !ok {
					return nil, fmt.Errorf("no member %q to replace", tok)
				}
				n[tok] = value
			case "remove":
				if !ok {
					return nil, fmt.Errorf("no member %q to remove", tok)
				}
				delete(n, tok)
			default:
				return nil, fmt.Errorf("unsupported operation %q", op)
			}
			return n, nil
		}
		if !ok {
			return nil, fmt.Errorf("no member %q", tok)
		}
		c, err := applyAt(child, tokens[1:], op, value)
		if err != nil {
			return nil, err
		}
		n[tok] = c
		return n, nil
	case []any:
		if last && op == "add" && tok == "-" {
			return append(n, value), nil
		}
		i, err := strconv.Atoi(tok)
		if err != nil || i < 0 || i > len(n) || (i == len(n) && !(last && op == "add")) {
			return nil, fmt.Errorf("index %q out of range (length %d)", tok, len(n))
		}
		if !last {
			c, err := applyAt(n[i], tokens[1:], op, value)
			if err != nil {
				return nil, err
			}
			n[i] = c
			return n, nil
		}
		switch op {
		case "add":
			return slices.Insert(n, i, value), nil
		case "replace":
			n[i] = value
			return n, nil
		case "remove":
			return slices.Delete(n, i, i+1), nil
		default:
			return nil, fmt.Errorf("unsupported operation %q", op)
		}
	default:
		return nil, fmt.Errorf("%q: not an object or array", tok)
	}
}
