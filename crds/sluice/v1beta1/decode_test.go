package v1beta1

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"
)

// TestFlaggerManifestsDecodeStrictly decodes Flagger manifests (apiVersion
// changed) into the types without losing or refusing a field, and finds
// them valid, before and after defaulting.
func TestFlaggerManifestsDecodeStrictly(t *testing.T) {
	for _, d := range validDocs(t) {
		t.Run(d.String(), func(t *testing.T) {
			obj, err := decodeStrict(d.yaml)
			if err != nil {
				t.Fatalf("strict decode: %v", err)
			}
			if errs := obj.Validate(); len(errs) > 0 {
				t.Fatalf("Validate: %s", errorsString(errs))
			}

			// Every field written survives a round trip through the type.
			got, err := json.Marshal(obj)
			if err != nil {
				t.Fatal(err)
			}
			want := toMap(t, d.yaml)
			g := toMap(t, got)
			if _, ok := want["status"]; !ok {
				delete(g, "status") // written with its zero counters
			}
			if md, ok := g["metadata"].(map[string]any); ok && md["creationTimestamp"] == nil {
				delete(md, "creationTimestamp")
			}
			if d := diff("", g, want); len(d) > 0 {
				t.Fatalf("round trip changed the object:\n%s", strings.Join(d, "\n"))
			}

			if c, ok := obj.(*Canary); ok {
				SetDefaults(c)
				if errs := c.Validate(); len(errs) > 0 {
					t.Fatalf("Validate after SetDefaults: %s", errorsString(errs))
				}
			}
		})
	}
}

// TestSeedCanary checks what the seed guide's example means once decoded.
func TestSeedCanary(t *testing.T) {
	docs := readDocs(t, "testdata/valid/seed-linkerd-canary.yaml")
	obj, err := decodeStrict(docs[0].yaml)
	if err != nil {
		t.Fatal(err)
	}
	c := obj.(*Canary)
	if c.Spec.Provider != "linkerd" || c.Spec.TargetRef != (LocalObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "api"}) {
		t.Errorf("provider %q, targetRef %+v", c.Spec.Provider, c.Spec.TargetRef)
	}
	if c.Spec.Service.Port != 8080 || c.GetProgressDeadline() != 60*time.Second {
		t.Errorf("port %d, deadline %v", c.Spec.Service.Port, c.GetProgressDeadline())
	}
	if got := c.GetAnalysisInterval(); got != 30*time.Second {
		t.Errorf("interval %v, want 30s", got)
	}
	if c.GetAnalysisThreshold() != 5 || c.GetMaxWeight() != 50 || c.GetStrategy() != StrategyCanary {
		t.Errorf("threshold %d, max weight %d, strategy %s", c.GetAnalysisThreshold(), c.GetMaxWeight(), c.GetStrategy())
	}
	want := []int{5, 10, 15, 20, 25, 30, 35, 40, 45, 50}
	if got := c.GetStepWeights(); !slices.Equal(got, want) {
		t.Errorf("steps %v, want %v", got, want)
	}
	m := c.Spec.Analysis.Metrics
	if len(m) != 2 {
		t.Fatalf("%d metrics", len(m))
	}
	if lo, hi := m[0].GetThresholdRange(); m[0].Name != MetricRequestSuccessRate || lo == nil || *lo != 99 || hi != nil || m[0].GetInterval() != "1m" {
		t.Errorf("success-rate check: %+v", m[0])
	}
	if lo, hi := m[1].GetThresholdRange(); m[1].Name != MetricRequestDuration || lo != nil || hi == nil || *hi != 500 {
		t.Errorf("duration check: %+v", m[1])
	}
	if apex, primary, canary := c.GetServiceNames(); apex != "api" || primary != "api-primary" || canary != "api-canary" {
		t.Errorf("services %s %s %s", apex, primary, canary)
	}
}

// TestFlaggerAPIVersionAndUnknownFields: only sluice.dev/v1beta1 decodes,
// and a misspelt field is an error, not silently dropped.
func TestFlaggerAPIVersionAndUnknownFields(t *testing.T) {
	seed := string(readDocs(t, "testdata/valid/seed-linkerd-canary.yaml")[0].yaml)
	for _, tc := range []struct {
		name, from, to, want string
	}{
		{"flagger apiVersion", "apiVersion: sluice.dev/v1beta1", "apiVersion: flagger.app/v1beta1", `apiVersion "flagger.app/v1beta1"`},
		{"misspelt field", "stepWeight: 5", "stepWieght: 5", `unknown field "stepWieght"`},
		{"duplicate field", "maxWeight: 50", "maxWeight: 50\n    maxWeight: 40", `"maxWeight" already set`},
		{"string threshold", "min: 99", `min: "99"`, "want a number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := strings.Replace(seed, tc.from, tc.to, 1)
			if src == seed {
				t.Fatalf("%q not in the seed", tc.from)
			}
			_, err := decodeStrict([]byte(src))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestScheme registers the three kinds, and deep copies are independent.
func TestScheme(t *testing.T) {
	s := runtime.NewScheme()
	if err := AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{CanaryKind, "CanaryList", MetricTemplateKind, "MetricTemplateList", AlertProviderKind, "AlertProviderList"} {
		if !s.Recognizes(GroupVersion.WithKind(kind)) {
			t.Errorf("scheme does not know %s", kind)
		}
	}
	if got := Resource("canaries"); got != (schema.GroupResource{Group: "sluice.dev", Resource: "canaries"}) {
		t.Errorf("Resource = %v", got)
	}

	obj, err := decodeStrict(readDocs(t, "testdata/valid/gatewayapi-canary.yaml")[0].yaml)
	if err != nil {
		t.Fatal(err)
	}
	c := obj.(*Canary)
	c.Status = CanaryStatus{
		Phase:          PhaseProgressing,
		TrackedConfigs: map[string]string{"configmap/podinfo": "abc"},
		Checks:         []CheckResult{{Name: "error-rate", Value: NewNumber(3), Max: NewNumber(1), Verdict: VerdictFail}},
	}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(c)
	if err != nil {
		t.Fatal(err)
	}
	back := &Canary{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u, back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, back) {
		t.Fatalf("unstructured round trip changed the canary:\n%+v\n%+v", c.Spec.Analysis, back.Spec.Analysis)
	}

	cp := c.DeepCopyObject().(*Canary)
	if !reflect.DeepEqual(c, cp) {
		t.Fatal("deep copy differs")
	}
	cp.Spec.Analysis.Metrics[0].ThresholdRange.Max = NewNumber(7)
	cp.Spec.Analysis.Webhooks[0].Metadata["cmd"] = "changed"
	cp.Spec.Service.GatewayRefs[0].Namespace = nil
	cp.Status.TrackedConfigs["configmap/podinfo"] = "def"
	*cp.Status.Checks[0].Value = 4
	if c.Spec.Analysis.Metrics[0].ThresholdRange.Max.Float64() != 1 ||
		c.Spec.Analysis.Webhooks[0].Metadata["cmd"] == "changed" ||
		c.Spec.Service.GatewayRefs[0].Namespace == nil ||
		c.Status.TrackedConfigs["configmap/podinfo"] != "abc" ||
		c.Status.Checks[0].Value.Float64() != 3 {
		t.Fatal("changing the deep copy changed the original")
	}
}

// TestNumberJSON: a Number reads and writes plain JSON numbers, integer or
// decimal, and refuses strings and non-finite values.
func TestNumberJSON(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
		out  string
	}{
		{"99", 99, "99"},
		{"0.5", 0.5, "0.5"},
		{"-1.25", -1.25, "-1.25"},
		{"1e3", 1000, "1000"},
	} {
		var n Number
		if err := json.Unmarshal([]byte(tc.in), &n); err != nil || n.Float64() != tc.want {
			t.Errorf("unmarshal %s = %v, %v; want %v", tc.in, n, err, tc.want)
		}
		b, err := json.Marshal(n)
		if err != nil || string(b) != tc.out {
			t.Errorf("marshal %v = %s, %v; want %s", n, b, err, tc.out)
		}
	}
	var n Number
	if err := json.Unmarshal([]byte(`"99"`), &n); err == nil {
		t.Error("a string decoded as a Number")
	}
	if _, err := json.Marshal(Number(nanValue())); err == nil {
		t.Error("NaN encoded")
	}
	// Omitted when zero and not a pointer, like the deprecated threshold.
	b, _ := yaml.Marshal(CanaryMetric{Name: "x"})
	if strings.Contains(string(b), "threshold") {
		t.Errorf("zero threshold written: %s", b)
	}
}

func nanValue() float64 {
	zero := 0.0
	return zero / zero
}
