package v1beta1

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"
)

// doc is one YAML document of a testdata file.
type doc struct {
	file  string
	index int
	kind  string
	yaml  []byte
}

func (d doc) String() string { return fmt.Sprintf("%s#%d(%s)", d.file, d.index, d.kind) }

// readDocs splits a testdata file into its YAML documents.
func readDocs(t *testing.T, path string) []doc {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []doc
	for i, part := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		if strings.TrimSpace(stripComments(part)) == "" {
			continue
		}
		var meta struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(part), &meta); err != nil {
			t.Fatalf("%s#%d: %v", path, i, err)
		}
		out = append(out, doc{file: filepath.Base(path), index: i, kind: meta.Kind, yaml: []byte(part)})
	}
	return out
}

func stripComments(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// validDocs returns every document of testdata/valid.
func validDocs(t *testing.T) []doc {
	t.Helper()
	files, err := filepath.Glob("testdata/valid/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	var out []doc
	for _, f := range files {
		out = append(out, readDocs(t, f)...)
	}
	return out
}

// validatable is a kind of this package.
type validatable interface {
	Validate() field.ErrorList
}

// decodeStrict decodes a document into the type of its kind, failing on
// unknown or duplicate fields.
func decodeStrict(b []byte) (validatable, error) {
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(b, &meta); err != nil {
		return nil, err
	}
	if meta.APIVersion != GroupVersion.String() {
		return nil, fmt.Errorf("apiVersion %q, want %q", meta.APIVersion, GroupVersion)
	}
	var obj validatable
	switch meta.Kind {
	case CanaryKind:
		obj = &Canary{}
	case MetricTemplateKind:
		obj = &MetricTemplate{}
	case AlertProviderKind:
		obj = &AlertProvider{}
	default:
		return nil, fmt.Errorf("unknown kind %q", meta.Kind)
	}
	if err := yaml.UnmarshalStrict(b, obj); err != nil {
		return nil, err
	}
	return obj, nil
}

// toMap turns YAML or JSON into an unstructured object.
func toMap(t *testing.T, b []byte) map[string]any {
	t.Helper()
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return normalizeNumbers(m).(map[string]any)
}

// normalizeNumbers turns json.Numbers into int64 or float64, as the API
// server's decoder does.
func normalizeNumbers(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			v[k] = normalizeNumbers(e)
		}
		return v
	case []any:
		for i, e := range v {
			v[i] = normalizeNumbers(e)
		}
		return v
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i
		}
		f, _ := v.Float64()
		return f
	default:
		return v
	}
}

// pathStep is one step of a dotted path: a key and, with [i], an index.
var pathStep = regexp.MustCompile(`^([^\[]+)(?:\[(\d+)\])?$`)

// parent walks obj to the map holding the last key of path.
func parent(t *testing.T, obj map[string]any, path string) (map[string]any, string) {
	t.Helper()
	steps := strings.Split(path, ".")
	cur := obj
	for i, step := range steps {
		m := pathStep.FindStringSubmatch(step)
		if m == nil {
			t.Fatalf("bad path %q", path)
		}
		if i == len(steps)-1 && m[2] == "" {
			return cur, m[1]
		}
		next, ok := cur[m[1]]
		if !ok {
			next = map[string]any{}
			cur[m[1]] = next
		}
		if m[2] != "" {
			idx, _ := strconv.Atoi(m[2])
			list, ok := next.([]any)
			if !ok || idx >= len(list) {
				t.Fatalf("path %q: %s has no item %d", path, m[1], idx)
			}
			next = list[idx]
		}
		nm, ok := next.(map[string]any)
		if !ok {
			t.Fatalf("path %q: %s is %T, not an object", path, step, next)
		}
		cur = nm
	}
	t.Fatalf("path %q ends with an index", path)
	return nil, ""
}

// set sets the field at path (keys separated by dots, list items as [i]).
func set(t *testing.T, obj map[string]any, path string, v any) {
	t.Helper()
	p, k := parent(t, obj, path)
	p[k] = normalizeNumbers(jsonValue(t, v))
}

// del removes the field at path.
func del(t *testing.T, obj map[string]any, path string) {
	t.Helper()
	p, k := parent(t, obj, path)
	if _, ok := p[k]; !ok {
		t.Fatalf("delete %q: no such field", path)
	}
	delete(p, k)
}

// jsonValue turns a Go value into its unstructured form.
func jsonValue(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// errorsString lists errors one per line, for failure messages.
func errorsString(errs field.ErrorList) string {
	var b strings.Builder
	for _, e := range errs {
		b.WriteString("\n\t" + e.Error())
	}
	return b.String()
}

// diff lists the paths where two unstructured values differ.
func diff(path string, got, want any) []string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: got %v, want an object", path, got)}
		}
		var out []string
		for k, wv := range w {
			gv, ok := g[k]
			if !ok {
				out = append(out, fmt.Sprintf("%s.%s: missing, want %v", path, k, wv))
				continue
			}
			out = append(out, diff(path+"."+k, gv, wv)...)
		}
		for k, gv := range g {
			if _, ok := w[k]; !ok {
				out = append(out, fmt.Sprintf("%s.%s: unexpected %v", path, k, gv))
			}
		}
		return out
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return []string{fmt.Sprintf("%s: got %v, want %v", path, got, want)}
		}
		var out []string
		for i := range w {
			out = append(out, diff(fmt.Sprintf("%s[%d]", path, i), g[i], w[i])...)
		}
		return out
	default:
		if !reflect.DeepEqual(got, want) {
			return []string{fmt.Sprintf("%s: got %v (%T), want %v (%T)", path, got, got, want, want)}
		}
		return nil
	}
}
