package v1beta1

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsinstall "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/install"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsvalidation "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	structuralpruning "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"
)

// The tests in this file check the generated CRDs (crds/manifests) without
// an API server: each CRD is validated as the API server validates it on
// creation (structural schema, CEL compilation and cost), and objects go
// through the steps a create goes through: pruning of unknown fields,
// defaulting, OpenAPI validation and CEL validation, using the API server's
// own packages. The real API server check is the envtest suite.

const manifestDir = "../../manifests"

// crdSchema is one version of a generated CRD, ready to admit objects.
type crdSchema struct {
	crd        *apiextensionsv1.CustomResourceDefinition
	structural *structuralschema.Structural
	openapi    apiservervalidation.SchemaValidator
	cel        *cel.Validator
}

// loadCRD reads a generated CRD, checks it as the API server does, and
// prepares its v1beta1 schema.
func loadCRD(t *testing.T, file string) *crdSchema {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(manifestDir, file))
	if err != nil {
		t.Fatalf("%v (run make generate)", err)
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.UnmarshalStrict(b, crd); err != nil {
		t.Fatalf("%s: %v", file, err)
	}

	scheme := runtime.NewScheme()
	apiextensionsinstall.Install(scheme)
	scheme.Default(crd)
	internal := &apiextensions.CustomResourceDefinition{}
	if err := scheme.Convert(crd, internal, nil); err != nil {
		t.Fatalf("%s: convert: %v", file, err)
	}
	if errs := apiextensionsvalidation.ValidateCustomResourceDefinition(context.Background(), internal); len(errs) > 0 {
		t.Fatalf("%s is not a valid CRD:%s", file, errorsString(errs))
	}

	validation, err := apiextensions.GetSchemaForVersion(internal, GroupVersion.Version)
	if err != nil || validation == nil || validation.OpenAPIV3Schema == nil {
		t.Fatalf("%s: no schema for %s: %v", file, GroupVersion.Version, err)
	}
	s, err := structuralschema.NewStructural(validation.OpenAPIV3Schema)
	if err != nil {
		t.Fatalf("%s: not structural: %v", file, err)
	}
	openapi, _, err := apiservervalidation.NewSchemaValidator(validation.OpenAPIV3Schema)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return &crdSchema{
		crd:        crd,
		structural: s,
		openapi:    openapi,
		cel:        cel.NewValidator(s, true, celconfig.PerCallLimit),
	}
}

// admit runs obj through what the API server does to a created object: it
// returns the unknown fields it pruned and the validation errors.
func (c *crdSchema) admit(t *testing.T, obj map[string]any) (pruned []string, errs field.ErrorList) {
	t.Helper()
	pruned = structuralpruning.PruneWithOptions(obj, c.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	structuraldefaulting.Default(obj, c.structural)
	errs = apiservervalidation.ValidateCustomResource(nil, obj, c.openapi)
	if c.cel != nil {
		celErrs, remaining := c.cel.Validate(context.Background(), nil, c.structural, obj, nil, celconfig.RuntimeCELCostBudget)
		if remaining < 0 {
			t.Fatalf("CEL cost budget exceeded")
		}
		errs = append(errs, celErrs...)
	}
	return pruned, errs
}

// crdFiles maps each kind to its generated CRD.
var crdFiles = map[string]string{
	CanaryKind:         "sluice.dev_canaries.yaml",
	MetricTemplateKind: "sluice.dev_metrictemplates.yaml",
	AlertProviderKind:  "sluice.dev_alertproviders.yaml",
}

func loadCRDs(t *testing.T) map[string]*crdSchema {
	t.Helper()
	out := map[string]*crdSchema{}
	for kind, file := range crdFiles {
		out[kind] = loadCRD(t, file)
	}
	return out
}

// TestSchemaAdmitsFlaggerManifests: every valid manifest passes the
// schema, CEL rules included, with no field pruned.
func TestSchemaAdmitsFlaggerManifests(t *testing.T) {
	crds := loadCRDs(t)
	for _, d := range validDocs(t) {
		t.Run(d.String(), func(t *testing.T) {
			pruned, errs := crds[d.kind].admit(t, toMap(t, d.yaml))
			if len(pruned) > 0 {
				t.Errorf("fields unknown to the schema: %v", pruned)
			}
			if len(errs) > 0 {
				t.Errorf("rejected:%s", errorsString(errs))
			}
		})
	}
}

// TestSchemaPrunesUnknownFields: a misspelt field is reported, which the
// API server turns into an error with fieldValidation=Strict.
func TestSchemaPrunesUnknownFields(t *testing.T) {
	crd := loadCRD(t, crdFiles[CanaryKind])
	obj := toMap(t, readDocs(t, "testdata/valid/seed-linkerd-canary.yaml")[0].yaml)
	set(t, obj, "spec.analysis.stepWieght", 5)
	pruned, _ := crd.admit(t, obj)
	if !slices.Equal(pruned, []string{"spec.analysis.stepWieght"}) {
		t.Fatalf("pruned %v", pruned)
	}
}

// TestSchemaDefaults: the schema defaults only what Flagger's does, and the
// Gateway API reference defaults.
func TestSchemaDefaults(t *testing.T) {
	crd := loadCRD(t, crdFiles[CanaryKind])
	obj := toMap(t, readDocs(t, "testdata/valid/gatewayapi-canary.yaml")[0].yaml)
	del(t, obj, "spec.analysis.sessionAffinity.maxAge")
	if _, errs := crd.admit(t, obj); len(errs) > 0 {
		t.Fatal(errorsString(errs))
	}
	c := decodeMap(t, obj)
	ref := c.Spec.Service.GatewayRefs[0]
	if c.Spec.Analysis.SessionAffinity.MaxAge != DefaultSessionAffinityMaxAge || ref.Group == nil || *ref.Group != DefaultGatewayGroup || ref.Kind == nil || *ref.Kind != DefaultGatewayKind {
		t.Fatalf("defaults not applied: maxAge %d, gatewayRef %+v", c.Spec.Analysis.SessionAffinity.MaxAge, ref)
	}
	if c.Spec.Analysis.NoDataPolicy != "" || c.Spec.ProgressDeadlineSeconds == nil || *c.Spec.ProgressDeadlineSeconds != 120 {
		t.Fatalf("schema defaulted what it should leave to SetDefaults: %+v", c.Spec)
	}
}

// TestPrinterColumns: kubectl get shows Status, Weight, FailedChecks and
// LastTransitionTime; -o wide adds the rest.
func TestPrinterColumns(t *testing.T) {
	crd := loadCRD(t, crdFiles[CanaryKind])
	var normal, wide []string
	for _, col := range crd.crd.Spec.Versions[0].AdditionalPrinterColumns {
		if col.Priority == 0 {
			normal = append(normal, col.Name)
		} else {
			wide = append(wide, col.Name)
		}
	}
	if want := []string{"Status", "Weight", "FailedChecks", "LastTransitionTime"}; !slices.Equal(normal, want) {
		t.Errorf("columns %v, want %v", normal, want)
	}
	if want := []string{"Suspended", "Interval", "Mirror", "StepWeight", "StepWeights", "MaxWeight", "Revision", "Message"}; !slices.Equal(wide, want) {
		t.Errorf("wide columns %v, want %v", wide, want)
	}
	v := crd.crd.Spec.Versions[0]
	if v.Subresources == nil || v.Subresources.Status == nil || !v.Served || !v.Storage {
		t.Errorf("version %s: served %v storage %v subresources %+v", v.Name, v.Served, v.Storage, v.Subresources)
	}
	if crd.crd.Spec.Names.Plural != "canaries" || crd.crd.Spec.Scope != apiextensionsv1.NamespaceScoped {
		t.Errorf("names %+v scope %s", crd.crd.Spec.Names, crd.crd.Spec.Scope)
	}
}

// TestSchemaStatus: a status as the engine writes it is accepted, and one
// with an unknown verdict is not.
func TestSchemaStatus(t *testing.T) {
	crd := loadCRD(t, crdFiles[CanaryKind])
	obj := toMap(t, readDocs(t, "testdata/valid/seed-linkerd-canary.yaml")[0].yaml)
	status := CanaryStatus{
		ObservedGeneration: 3,
		Phase:              PhaseFailed,
		FailedChecks:       5,
		TrackedConfigs:     map[string]string{"secret/api": "1a2b3c4d"},
		LastAppliedSpec:    "7d9f8c",
		ObservedRevision:   "7d9f8c-1a2b",
		Message:            "request-success-rate 91.3% < min 99% (5/5 failed checks)",
		Checks: []CheckResult{
			{Name: "request-success-rate", Value: NewNumber(91.3), Min: NewNumber(99), Unit: "%", Verdict: VerdictFail},
			{Name: "request-duration", Max: NewNumber(500), Unit: "ms", Verdict: VerdictNoData},
		},
	}
	status.Conditions = append(status.Conditions,
		conditionFor(ConditionPromoted, "False", string(PhaseFailed)),
		conditionFor(ConditionReady, "True", ReasonReconciled))
	set(t, obj, "status", status)
	if pruned, errs := crd.admit(t, obj); len(pruned) > 0 || len(errs) > 0 {
		t.Fatalf("pruned %v, errors:%s", pruned, errorsString(errs))
	}
	set(t, obj, "status.checks[0].verdict", "inconclusive")
	if _, errs := crd.admit(t, obj); len(errs) != 1 || errs[0].Field != "status.checks[0].verdict" {
		t.Fatalf("errors:%s", errorsString(errs))
	}
}

// decodeMap decodes an unstructured Canary.
func decodeMap(t *testing.T, obj map[string]any) *Canary {
	t.Helper()
	c := &Canary{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, c); err != nil {
		t.Fatal(err)
	}
	return c
}

func conditionFor(typ, status, reason string) metav1.Condition {
	return metav1.Condition{
		Type:               typ,
		Status:             metav1.ConditionStatus(status),
		Reason:             reason,
		Message:            typ + " is " + status,
		LastTransitionTime: metav1.Now(),
	}
}
