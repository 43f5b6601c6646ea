package envtest_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	sluicev1beta1 "github.com/sluicehq/sluice/crds/sluice/v1beta1"
	"github.com/sluicehq/sluice/test/envtest"
)

// validDir holds the API package's valid examples, among them the seed
// guide's Flagger Canary.
const validDir = "../../crds/sluice/v1beta1/testdata/valid"

// The API server is started once for all of this file's cases: starting it
// is what takes time.
func TestCRDsOnTheAPIServer(t *testing.T) {
	_, c := envtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t.Run("CanaryRejected", func(t *testing.T) { testCanaryRejected(ctx, t, c) })
	t.Run("ValidExamplesAccepted", func(t *testing.T) { testValidExamplesAccepted(ctx, t, c) })
	t.Run("Policy", func(t *testing.T) { testPolicy(ctx, t, c) })
	t.Run("GatewayAPIExperimental", func(t *testing.T) { testGatewayAPIExperimental(ctx, t, c) })
}

// testCanaryRejected changes one thing at a time in the seed guide's
// Canary and checks that the API server refuses it with the schema's
// message, on the field at fault.
func testCanaryRejected(ctx context.Context, t *testing.T, c client.Client) {
	ns := createNamespace(ctx, t, c, "canary-rejected")
	seed := readObjects(t, filepath.Join(validDir, "seed-linkerd-canary.yaml"))[0]

	tests := []struct {
		name   string
		change func(u map[string]any)
		field  string // the cause's field path
		msg    string // in the cause's message
	}{
		{
			name:   "no targetRef",
			change: func(u map[string]any) { unstructured.RemoveNestedField(u, "spec", "targetRef") },
			field:  "spec.targetRef",
			msg:    "Required value",
		},
		{
			name:   "interval 5s",
			change: func(u map[string]any) { set(t, u, "5s", "spec", "analysis", "interval") },
			field:  "spec.analysis.interval",
			msg:    "analysis.interval must be a duration of at least 10s",
		},
		{
			name: "stepWeight greater than maxWeight",
			change: func(u map[string]any) {
				set(t, u, int64(60), "spec", "analysis", "stepWeight")
				set(t, u, int64(50), "spec", "analysis", "maxWeight")
			},
			field: "spec.analysis.stepWeight",
			msg:   "analysis.stepWeight must not be greater than analysis.maxWeight",
		},
		{
			name:   "stepWeight and stepWeights",
			change: func(u map[string]any) { set(t, u, []any{int64(10), int64(20)}, "spec", "analysis", "stepWeights") },
			field:  "spec.analysis",
			msg:    "analysis.stepWeight, analysis.stepWeights and analysis.iterations exclude one another",
		},
		{
			name: "unknown webhook type",
			change: func(u map[string]any) {
				set(t, u, []any{map[string]any{
					"name": "load-test", "type": "pre-flight", "url": "http://flagger-loadtester.test/",
				}}, "spec", "analysis", "webhooks")
			},
			field: "spec.analysis.webhooks[0].type",
			msg:   `Unsupported value: "pre-flight"`,
		},
		{
			name: "thresholdRange min greater than max",
			change: func(u map[string]any) {
				metrics, _, _ := unstructured.NestedSlice(u, "spec", "analysis", "metrics")
				if len(metrics) == 0 {
					t.Fatal("the seed Canary has no metrics to change")
				}
				m := metrics[0].(map[string]any)
				m["thresholdRange"] = map[string]any{"min": int64(99), "max": int64(50)}
				set(t, u, metrics, "spec", "analysis", "metrics")
			},
			field: "spec.analysis.metrics[0].thresholdRange.min",
			msg:   "thresholdRange.min must not be greater than thresholdRange.max",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := seed.DeepCopy()
			u.SetNamespace(ns)
			tt.change(u.Object)
			err := c.Create(ctx, u)
			wantInvalid(t, err, tt.field, tt.msg)
		})
	}

	// The unchanged seed is accepted: the cases above fail for their change.
	u := seed.DeepCopy()
	u.SetNamespace(ns)
	if err := c.Create(ctx, u); err != nil {
		t.Fatalf("creating the unchanged seed Canary: %v", err)
	}
}

// testValidExamplesAccepted creates every object of the API package's valid
// examples (the seed guide's Flagger Canary among them) and reads each back.
func testValidExamplesAccepted(ctx context.Context, t *testing.T, c client.Client) {
	files, err := filepath.Glob(filepath.Join(validDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no valid examples in %s (err %v)", validDir, err)
	}
	namespaces := map[string]bool{}
	for _, file := range files {
		for _, u := range readObjects(t, file) {
			t.Run(filepath.Base(file)+"/"+u.GetKind()+"/"+u.GetName(), func(t *testing.T) {
				if ns := u.GetNamespace(); ns != "" && !namespaces[ns] {
					ensureNamespace(ctx, t, c, ns)
					namespaces[ns] = true
				}
				if err := c.Create(ctx, u); err != nil {
					t.Fatalf("the API server rejected a valid %s: %v", u.GetKind(), err)
				}
				got := &unstructured.Unstructured{}
				got.SetGroupVersionKind(u.GroupVersionKind())
				if err := c.Get(ctx, client.ObjectKeyFromObject(u), got); err != nil {
					t.Fatalf("reading back %s %s: %v", u.GetKind(), client.ObjectKeyFromObject(u), err)
				}
			})
		}
	}

	// The seed Canary decodes into the Go type with its fields intact.
	var seed sluicev1beta1.Canary
	if err := c.Get(ctx, types.NamespacedName{Namespace: "production", Name: "api"}, &seed); err != nil {
		t.Fatalf("reading the seed Canary as a typed object: %v", err)
	}
	if seed.Spec.TargetRef.Name != "api" || seed.Spec.Analysis == nil || seed.Spec.Analysis.Interval != "30s" {
		t.Errorf("the stored seed Canary lost fields: targetRef %+v analysis %+v", seed.Spec.TargetRef, seed.Spec.Analysis)
	}
}

// testPolicy checks one good and one bad object of every policy kind.
func testPolicy(ctx context.Context, t *testing.T, c client.Client) {
	ns := createNamespace(ctx, t, c, "policy")
	tests := []struct {
		name  string
		good  string
		bad   string
		field string
		msg   string
	}{
		{
			name: "Server",
			good: `
apiVersion: policy.sluice.dev/v1beta1
kind: Server
metadata: {name: web-http}
spec:
  podSelector: {matchLabels: {app: web}}
  port: http
  proxyProtocol: HTTP/1
`,
			bad: `
apiVersion: policy.sluice.dev/v1beta1
kind: Server
metadata: {name: web-bad-port}
spec:
  podSelector: {matchLabels: {app: web}}
  port: 70000
`,
			field: "spec.port",
			msg:   "port must be a number from 1 to 65535 or a container port name",
		},
		{
			name: "AuthorizationPolicy",
			good: `
apiVersion: policy.sluice.dev/v1beta1
kind: AuthorizationPolicy
metadata: {name: web-from-api}
spec:
  targetRef: {group: policy.sluice.dev, kind: Server, name: web-http}
  requiredAuthenticationRefs:
  - {group: policy.sluice.dev, kind: MeshTLSAuthentication, name: api-identity}
`,
			bad: `
apiVersion: policy.sluice.dev/v1beta1
kind: AuthorizationPolicy
metadata: {name: web-bad-target}
spec:
  targetRef: {kind: Server, name: web-http}
  requiredAuthenticationRefs:
  - {group: policy.sluice.dev, kind: MeshTLSAuthentication, name: api-identity}
`,
			field: "spec.targetRef",
			msg:   "group must be policy.sluice.dev for a Server",
		},
		{
			name: "MeshTLSAuthentication",
			good: `
apiVersion: policy.sluice.dev/v1beta1
kind: MeshTLSAuthentication
metadata: {name: api-identity}
spec:
  identityRefs:
  - {kind: ServiceAccount, name: api}
`,
			bad: `
apiVersion: policy.sluice.dev/v1beta1
kind: MeshTLSAuthentication
metadata: {name: both}
spec:
  identities: ["api.default.serviceaccount.identity.sluice.cluster.local"]
  identityRefs:
  - {kind: ServiceAccount, name: api}
`,
			field: "spec",
			msg:   "exactly one of identities and identityRefs must be set",
		},
		{
			name: "NetworkAuthentication",
			good: `
apiVersion: policy.sluice.dev/v1beta1
kind: NetworkAuthentication
metadata: {name: cluster-nets}
spec:
  networks:
  - {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
`,
			bad: `
apiVersion: policy.sluice.dev/v1beta1
kind: NetworkAuthentication
metadata: {name: not-a-cidr}
spec:
  networks:
  - {cidr: 10.0.0.0/33}
`,
			field: "spec.networks[0].cidr",
			msg:   "cidr must be a CIDR (10.0.0.0/8) or an IP address",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			good := decodeOne(t, tt.good)
			good.SetNamespace(ns)
			if err := c.Create(ctx, good); err != nil {
				t.Fatalf("the API server rejected a valid %s: %v", tt.name, err)
			}
			bad := decodeOne(t, tt.bad)
			bad.SetNamespace(ns)
			wantInvalid(t, c.Create(ctx, bad), tt.field, tt.msg)
		})
	}
}

// testGatewayAPIExperimental checks that the Gateway API CRDs are the
// experimental channel's: an HTTPRoute keeps its retry, which the standard
// channel would prune, and the schema's own checks apply.
func testGatewayAPIExperimental(ctx context.Context, t *testing.T, c client.Client) {
	ns := createNamespace(ctx, t, c, "gateway")
	route := func(name string, weight int32) *gwv1.HTTPRoute {
		port := gwv1.PortNumber(8080)
		attempts := 2
		backoff := gwv1.Duration("100ms")
		return &gwv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: gwv1.HTTPRouteSpec{
				CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{
					Group: ptr(gwv1.Group("")), Kind: ptr(gwv1.Kind("Service")), Name: "podinfo", Port: &port,
				}}},
				Rules: []gwv1.HTTPRouteRule{{
					BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{
						BackendObjectReference: gwv1.BackendObjectReference{Name: "podinfo-primary", Port: &port},
						Weight:                 &weight,
					}}},
					Retry: &gwv1.HTTPRouteRetry{Codes: []gwv1.HTTPRouteRetryStatusCode{503}, Attempts: &attempts, Backoff: &backoff},
				}},
			},
		}
	}
	if err := c.Create(ctx, route("podinfo", 100)); err != nil {
		t.Fatalf("creating an HTTPRoute with a Service parent and retry: %v", err)
	}
	var got gwv1.HTTPRoute
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "podinfo"}, &got); err != nil {
		t.Fatalf("reading back the HTTPRoute: %v", err)
	}
	if r := got.Spec.Rules[0].Retry; r == nil || r.Attempts == nil || *r.Attempts != 2 {
		t.Errorf("the HTTPRoute's retry was not kept (standard-channel CRD installed?): %+v", r)
	}
	wantInvalid(t, c.Create(ctx, route("too-heavy", 1_000_001)), "spec.rules[0].backendRefs[0].weight", "should be less than or equal to 1000000")
}

// wantInvalid checks that err is the API server's Invalid error with a
// cause on field whose message contains msg.
func wantInvalid(t *testing.T, err error, field, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("the API server accepted the object; want it rejected on %s with %q", field, msg)
	}
	if !apierrors.IsInvalid(err) {
		t.Fatalf("want an Invalid error on %s with %q, got %v", field, msg, err)
	}
	var status apierrors.APIStatus
	if !errors.As(err, &status) || status.Status().Details == nil {
		t.Fatalf("the Invalid error has no details: %v", err)
	}
	for _, cause := range status.Status().Details.Causes {
		if cause.Field == field && strings.Contains(cause.Message, msg) {
			if !strings.Contains(err.Error(), msg) {
				t.Errorf("the error text %q does not carry the cause's message %q", err, msg)
			}
			return
		}
	}
	t.Errorf("want a cause on field %s with %q; the API server said: %v (causes %+v)",
		field, msg, err, status.Status().Details.Causes)
}

// createNamespace creates a namespace named after prefix and returns its name.
func createNamespace(ctx context.Context, t *testing.T, c client.Client, prefix string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}
	if err := c.Create(ctx, ns); err != nil {
		t.Fatalf("creating a namespace: %v", err)
	}
	return ns.Name
}

// ensureNamespace creates the namespace name unless it exists.
func ensureNamespace(ctx context.Context, t *testing.T, c client.Client, name string) {
	t.Helper()
	err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
}

// readObjects reads every object of a multi-document YAML file.
func readObjects(t *testing.T, path string) []*unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	var objs []*unstructured.Unstructured
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("reading %s: %v", path, err)
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			t.Fatalf("decoding a document of %s: %v", path, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		objs = append(objs, u)
	}
	if len(objs) == 0 {
		t.Fatalf("%s has no object", path)
	}
	return objs
}

// decodeOne decodes a single YAML object.
func decodeOne(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		t.Fatalf("decoding test object: %v\n%s", err, doc)
	}
	return u
}

// set sets a nested field of an unstructured object.
func set(t *testing.T, u map[string]any, value any, fields ...string) {
	t.Helper()
	if err := unstructured.SetNestedField(u, value, fields...); err != nil {
		t.Fatalf("setting %s: %v", strings.Join(fields, "."), err)
	}
}

func ptr[T any](v T) *T { return &v }
