package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"

	"sigs.k8s.io/yaml"
)

// decode turns YAML or JSON into a Config without defaults or validation. Before
// decoding, it checks the document's shape against the Config type so that an
// unknown field or a value of the wrong type is reported with its full path
// ("table.services[0].rules[1].match.pth: unknown field").
func decode(data []byte) (*Config, error) {
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("not valid YAML or JSON: %w", trimYAMLError(err))
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("not valid YAML or JSON: %w", err)
	}
	if doc == nil {
		return nil, errors.New("the configuration is empty")
	}
	if errs := checkShape("", doc, reflect.TypeFor[Config]()); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	var c Config
	dec = json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, err // checkShape should have caught it
	}
	return &c, nil
}

// trimYAMLError drops sigs.k8s.io/yaml's wrapping ("error converting YAML to JSON:").
func trimYAMLError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "error converting YAML to JSON: ")
	return errors.New(msg)
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// checkShape reports every place where v (a document decoded with UseNumber)
// does not fit type t: unknown fields, wrong JSON types, numbers out of range,
// and values a json.Unmarshaler rejects.
func checkShape(path string, v any, t reflect.Type) []error {
	if v == nil {
		return nil // null leaves the zero value
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		raw, err := json.Marshal(v)
		if err == nil {
			err = reflect.New(t).Interface().(json.Unmarshaler).UnmarshalJSON(raw)
		}
		if err != nil {
			return []error{fmt.Errorf("%s: %w", label(path), err)}
		}
		return nil
	}
	wrong := func(want string) []error {
		return []error{fmt.Errorf("%s: must be %s, got %s", label(path), want, describe(v))}
	}
	switch t.Kind() {
	case reflect.Pointer:
		return checkShape(path, v, t.Elem())
	case reflect.Interface:
		return nil
	case reflect.String:
		if _, ok := v.(string); !ok {
			if _, isBool := v.(bool); isBool {
				return []error{fmt.Errorf("%s: must be a string, got %s (quote it: YAML reads bare on, off, yes and no as booleans)", label(path), describe(v))}
			}
			return wrong("a string")
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			return wrong("true or false")
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := v.(json.Number)
		if !ok {
			return wrong("an integer")
		}
		if _, err := strconv.ParseInt(n.String(), 10, t.Bits()); err != nil {
			return wrong(fmt.Sprintf("an integer that fits in %d bits", t.Bits()))
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := v.(json.Number)
		if !ok {
			return wrong("a non-negative integer")
		}
		if _, err := strconv.ParseUint(n.String(), 10, t.Bits()); err != nil {
			return wrong(fmt.Sprintf("a non-negative integer that fits in %d bits", t.Bits()))
		}
	case reflect.Float32, reflect.Float64:
		n, ok := v.(json.Number)
		if !ok {
			return wrong("a number")
		}
		if _, err := strconv.ParseFloat(n.String(), t.Bits()); err != nil {
			return wrong("a number")
		}
	case reflect.Slice, reflect.Array:
		list, ok := v.([]any)
		if !ok {
			return wrong("a list")
		}
		if t.Kind() == reflect.Array && len(list) != t.Len() {
			return wrong(fmt.Sprintf("a list of %d items", t.Len()))
		}
		var errs []error
		for i, item := range list {
			errs = append(errs, checkShape(fmt.Sprintf("%s[%d]", path, i), item, t.Elem())...)
		}
		return errs
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			return wrong("a map")
		}
		var errs []error
		for _, k := range sortedKeys(m) {
			errs = append(errs, checkShape(fmt.Sprintf("%s[%q]", path, k), m[k], t.Elem())...)
		}
		return errs
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return wrong("an object")
		}
		fields := fieldsOf(t)
		var errs []error
		for _, k := range sortedKeys(m) {
			f, ok := fields[k]
			if !ok {
				msg := "unknown field"
				if s := suggest(k, fields); s != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", s)
				}
				errs = append(errs, fmt.Errorf("%s: %s", label(join(path, k)), msg))
				continue
			}
			errs = append(errs, checkShape(join(path, k), m[k], f)...)
		}
		return errs
	default:
		return []error{fmt.Errorf("%s: unsupported field type %v", label(path), t)}
	}
	return nil
}

func label(path string) string {
	if path == "" {
		return "configuration"
	}
	return path
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// describe names a decoded JSON value for an error message.
func describe(v any) string {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("string %q", x)
	case bool:
		return strconv.FormatBool(x)
	case json.Number:
		return "number " + x.String()
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

var fieldCache sync.Map // reflect.Type -> map[string]reflect.Type

// fieldsOf maps the JSON names of t's fields to their types, as encoding/json
// sees them (tags, untagged names, embedded structs flattened).
func fieldsOf(t reflect.Type) map[string]reflect.Type {
	if f, ok := fieldCache.Load(t); ok {
		return f.(map[string]reflect.Type)
	}
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		sf := t.Field(i)
		tag := sf.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if sf.Anonymous && name == "" {
			et := sf.Type
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				for k, v := range fieldsOf(et) {
					if _, ok := out[k]; !ok {
						out[k] = v
					}
				}
				continue
			}
		}
		if !sf.IsExported() {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		out[name] = sf.Type
	}
	fieldCache.Store(t, out)
	return out
}

// suggest returns the known field closest to an unknown key: the same name in
// another case, or one within two edits.
func suggest(key string, fields map[string]reflect.Type) string {
	best, bestDist := "", 3
	for name := range fields {
		if strings.EqualFold(name, key) {
			return name
		}
		if d := editDistance(strings.ToLower(key), strings.ToLower(name)); d < bestDist || (d == bestDist && best != "" && name < best) {
			best, bestDist = name, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
