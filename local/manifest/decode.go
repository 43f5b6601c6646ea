package manifest

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	k8sjson "sigs.k8s.io/json"

	policyv1beta1 "github.com/sluicehq/sluice/crds/policy/v1beta1"
)

// DefaultNamespace is the namespace of a document that names none.
const DefaultNamespace = "default"

// Groups whose kinds local mode reads.
const (
	// SluiceGroup is the group of Sluice's own kinds; its subgroups
	// (policy.sluice.dev, ...) count as Sluice's too.
	SluiceGroup = "sluice.dev"
	// GatewayGroup is the Gateway API group.
	GatewayGroup = "gateway.networking.k8s.io"
)

// kindInfo says how to decode and check one kind.
type kindInfo struct {
	apiVersion string
	newObj     func() any
	validate   func(obj any) []fieldProblem
}

// kinds are the typed kinds local mode runs, by kind name.
var kinds = map[string]kindInfo{
	"Deployment": {"apps/v1", func() any { return &appsv1.Deployment{} }, func(o any) []fieldProblem { return validateDeployment(o.(*appsv1.Deployment)) }},
	"Service":    {"v1", func() any { return &corev1.Service{} }, func(o any) []fieldProblem { return validateService(o.(*corev1.Service)) }},
	"HTTPRoute":  {GatewayGroup + "/v1", func() any { return &gatewayv1.HTTPRoute{} }, func(o any) []fieldProblem { return validateHTTPRoute(o.(*gatewayv1.HTTPRoute)) }},
	policyv1beta1.KindServer: {policyv1beta1.GroupVersion.String(), func() any { return &policyv1beta1.Server{} },
		func(o any) []fieldProblem { return policyProblem(o.(*policyv1beta1.Server).Validate()) }},
	"AuthorizationPolicy": {policyv1beta1.GroupVersion.String(), func() any { return &policyv1beta1.AuthorizationPolicy{} },
		func(o any) []fieldProblem { return policyProblem(o.(*policyv1beta1.AuthorizationPolicy).Validate()) }},
	policyv1beta1.KindMeshTLSAuthentication: {policyv1beta1.GroupVersion.String(), func() any { return &policyv1beta1.MeshTLSAuthentication{} },
		func(o any) []fieldProblem { return policyProblem(o.(*policyv1beta1.MeshTLSAuthentication).Validate()) }},
	policyv1beta1.KindNetworkAuthentication: {policyv1beta1.GroupVersion.String(), func() any { return &policyv1beta1.NetworkAuthentication{} },
		func(o any) []fieldProblem { return policyProblem(o.(*policyv1beta1.NetworkAuthentication).Validate()) }},
}

// IsSluiceGroup reports whether an API group is sluice.dev or one of its
// subgroups (policy.sluice.dev, ...).
func IsSluiceGroup(group string) bool {
	return group == SluiceGroup || strings.HasSuffix(group, "."+SluiceGroup)
}

// fieldProblem is a problem with one field of a decoded object.
type fieldProblem struct {
	field    string
	msg      string
	severity Severity
}

// decodeDocument decodes and checks one document. It returns the object when
// it is one local mode uses and valid, and the problems found.
func decodeDocument(file string, d document) (*Object, []*Problem) {
	prob := func(line int, object, field, msg string, sev Severity) *Problem {
		if line == 0 {
			line = d.line
		}
		return &Problem{File: file, Line: line, Object: object, Field: field, Message: msg, Severity: sev}
	}
	v, err := toValue(d.root, "", 0)
	if err != nil {
		var ne *nodeError
		if errors.As(err, &ne) {
			return nil, []*Problem{prob(ne.line, "", ne.field, ne.msg, Invalid)}
		}
		return nil, []*Problem{prob(0, "", "", err.Error(), Invalid)}
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, []*Problem{prob(0, "", "", "a document must be an object with apiVersion, kind and metadata", Invalid)}
	}
	apiVersion, _ := m["apiVersion"].(string)
	kind, _ := m["kind"].(string)
	meta, _ := m["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	ns, _ := meta["namespace"].(string)
	if ns == "" {
		ns = DefaultNamespace
	}
	if apiVersion == "" || kind == "" {
		var missing []string
		if apiVersion == "" {
			missing = append(missing, "apiVersion")
		}
		if kind == "" {
			missing = append(missing, "kind")
		}
		return nil, []*Problem{prob(0, "", strings.Join(missing, ", "), "required (a string)", Invalid)}
	}
	ref := kind + " " + ns + "/" + name
	if name == "" {
		ref = kind
	}
	group, _, _ := strings.Cut(apiVersion, "/")
	if !strings.Contains(apiVersion, "/") {
		group = ""
	}

	info, typed := kinds[kind]
	generic := false
	switch {
	case typed && info.apiVersion == apiVersion:
	case typed && groupOf(info.apiVersion) == group:
		return nil, []*Problem{prob(lineOf(d.root, "apiVersion"), ref, "apiVersion", fmt.Sprintf("%q is not read by local mode; use %s", apiVersion, info.apiVersion), Unsupported)}
	case IsSluiceGroup(group):
		generic = true
	default:
		return nil, []*Problem{prob(0, ref, "", fmt.Sprintf("kind %s (apiVersion %s) is not run in local mode; skipped (local mode reads Deployment, Service, HTTPRoute, the policy.sluice.dev kinds and the sluice.dev kinds)", kind, apiVersion), Unsupported)}
	}

	var problems []*Problem
	if name == "" {
		problems = append(problems, prob(lineOf(d.root, "metadata"), ref, "metadata.name", "required", Invalid))
	} else if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 && kind != "Service" { // validateService is stricter
		problems = append(problems, prob(lineOf(d.root, "metadata.name"), ref, "metadata.name", fmt.Sprintf("%q: %s", name, strings.Join(errs, "; ")), Invalid))
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		problems = append(problems, prob(lineOf(d.root, "metadata.namespace"), ref, "metadata.namespace", fmt.Sprintf("%q: %s", ns, strings.Join(errs, "; ")), Invalid))
	}
	if meta == nil {
		meta = map[string]any{}
		m["metadata"] = meta
	}
	meta["namespace"] = ns
	data, err := json.Marshal(m)
	if err != nil {
		return nil, append(problems, prob(0, ref, "", fmt.Sprintf("cannot encode as JSON: %v", err), Invalid))
	}

	var obj any
	if generic {
		obj = &unstructured.Unstructured{Object: m}
	} else {
		obj = info.newObj()
		strictErrs, err := k8sjson.UnmarshalStrict(data, obj)
		if err != nil {
			field, msg := typeErrorField(data, info.newObj(), err)
			return nil, append(problems, prob(lineOf(d.root, field), ref, field, msg, Invalid))
		}
		for _, se := range strictErrs {
			field, msg := "", se.Error()
			var fe k8sjson.FieldError
			if errors.As(se, &fe) {
				field = fe.FieldPath()
				msg = strictMessage(se.Error(), field)
			}
			problems = append(problems, prob(lineOf(d.root, field), ref, field, msg, Invalid))
		}
		for _, fp := range info.validate(obj) {
			problems = append(problems, prob(lineOf(d.root, fp.field), ref, fp.field, fp.msg, fp.severity))
		}
	}
	for _, p := range problems {
		if p.Severity == Invalid {
			return nil, problems
		}
	}
	return &Object{
		File:       file,
		Line:       d.line,
		APIVersion: apiVersion,
		Kind:       kind,
		Namespace:  ns,
		Name:       name,
		Object:     obj,
		JSON:       data,
	}, problems
}

func groupOf(apiVersion string) string {
	g, _, ok := strings.Cut(apiVersion, "/")
	if !ok {
		return ""
	}
	return g
}

// strictMessage turns sigs.k8s.io/json's `unknown field "a.b"` into "unknown
// field" (the path is reported separately).
func strictMessage(msg, field string) string {
	msg = strings.TrimPrefix(msg, "json: ")
	if field != "" {
		msg = strings.Replace(msg, fmt.Sprintf(" %q", field), "", 1)
	}
	return msg
}

var goStructField = regexp.MustCompile(`Go struct field [A-Za-z0-9_]+\.([^ ]+) of type`)

// typeErrorField finds the field of a decoding error: encoding/json reports
// the full path of a value of the wrong type; a custom unmarshaler's error
// has none.
func typeErrorField(data []byte, fresh any, err error) (field, msg string) {
	var te *json.UnmarshalTypeError
	if stdErr := json.Unmarshal(data, fresh); errors.As(stdErr, &te) && te.Field != "" {
		return te.Field, fmt.Sprintf("must be %s, got %s", jsonTypeName(te.Type.Kind().String()), te.Value)
	}
	msg = strings.TrimPrefix(err.Error(), "json: ")
	if m := goStructField.FindStringSubmatch(msg); m != nil {
		return m[1], msg
	}
	return "", msg
}

func jsonTypeName(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	case "slice", "array":
		return "a list"
	case "map", "struct":
		return "an object"
	}
	return "a " + goKind
}

// policyPrefix is what the policy types' Validate errors start with.
var policyPrefix = regexp.MustCompile(`^[a-z]+ [^ :]+/[^ :]+: `)

// policyProblem turns a policy Validate error into a problem with the spec.
func policyProblem(err error) []fieldProblem {
	if err == nil {
		return nil
	}
	return []fieldProblem{{field: "spec", msg: policyPrefix.ReplaceAllString(err.Error(), ""), severity: Invalid}}
}
