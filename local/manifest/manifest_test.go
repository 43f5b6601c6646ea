package manifest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	policyv1beta1 "github.com/sluicehq/sluice/crds/policy/v1beta1"
)

const goodApp = `# a two-document file
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web, version: v1}
    spec:
      serviceAccountName: web
      containers:
      - name: app
        command: [sluice-demo-app]
        args: ["--name=web"]
        env:
        - name: VERSION
          value: v1
        - name: ME
          valueFrom:
            fieldRef: {fieldPath: metadata.name}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
---
# only a comment
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
  namespace: shop
spec:
  parentRefs:
  - {group: core, kind: Service, name: web, port: 80}
  rules:
  - backendRefs:
    - {name: web, port: 80}
---
apiVersion: policy.sluice.dev/v1beta1
kind: Server
metadata: {name: web-http, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  port: 8080
  proxyProtocol: HTTP/1
---
apiVersion: policy.sluice.dev/v1beta1
kind: AuthorizationPolicy
metadata: {name: web-authn, namespace: shop}
spec:
  targetRef: {group: policy.sluice.dev, kind: Server, name: web-http}
  requiredAuthenticationRefs:
  - {group: policy.sluice.dev, kind: MeshTLSAuthentication, name: meshed}
---
apiVersion: policy.sluice.dev/v1beta1
kind: MeshTLSAuthentication
metadata: {name: meshed, namespace: shop}
spec:
  identities: ["*.shop.serviceaccount.identity.sluice.cluster.local"]
---
apiVersion: sluice.dev/v1beta1
kind: Canary
metadata: {name: web}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
`

func TestParseGood(t *testing.T) {
	f := Parse("app.yaml", []byte(goodApp))
	if len(f.Problems) != 0 {
		t.Fatalf("problems: %v", f.Problems)
	}
	if !f.Complete() {
		t.Fatal("Complete() = false")
	}
	type want struct {
		kind, ns, name string
		line           int
	}
	wants := []want{
		{"Deployment", "shop", "web", 2},
		{"Service", "shop", "web", 27},
		{"HTTPRoute", "shop", "web", 40},
		{"Server", "shop", "web-http", 52},
		{"AuthorizationPolicy", "shop", "web-authn", 60},
		{"MeshTLSAuthentication", "shop", "meshed", 68},
		{"Canary", "default", "web", 74},
	}
	if len(f.Objects) != len(wants) {
		t.Fatalf("got %d objects, want %d: %+v", len(f.Objects), len(wants), f.Objects)
	}
	for i, w := range wants {
		o := f.Objects[i]
		if o.Kind != w.kind || o.Namespace != w.ns || o.Name != w.name || o.Line != w.line || o.File != "app.yaml" {
			t.Errorf("object %d = %s %s/%s at %s:%d, want %s %s/%s at line %d", i, o.Kind, o.Namespace, o.Name, o.File, o.Line, w.kind, w.ns, w.name, w.line)
		}
	}
	d, ok := f.Objects[0].Object.(*appsv1.Deployment)
	if !ok {
		t.Fatalf("Deployment decoded as %T", f.Objects[0].Object)
	}
	if *d.Spec.Replicas != 2 || d.Spec.Template.Spec.Containers[0].Command[0] != "sluice-demo-app" ||
		d.Spec.Template.Spec.Containers[0].Env[1].ValueFrom.FieldRef.FieldPath != "metadata.name" {
		t.Errorf("Deployment decoded wrong: %+v", d.Spec)
	}
	if s, ok := f.Objects[1].Object.(*corev1.Service); !ok || s.Spec.Ports[0].Port != 80 || s.Spec.Selector["app"] != "web" {
		t.Errorf("Service decoded wrong: %+v", f.Objects[1].Object)
	}
	if r, ok := f.Objects[2].Object.(*gatewayv1.HTTPRoute); !ok || string(r.Spec.ParentRefs[0].Name) != "web" {
		t.Errorf("HTTPRoute decoded wrong: %+v", f.Objects[2].Object)
	}
	if s, ok := f.Objects[3].Object.(*policyv1beta1.Server); !ok || s.Spec.Port.IntValue() != 8080 {
		t.Errorf("Server decoded wrong: %+v", f.Objects[3].Object)
	}
	u, ok := f.Objects[6].Object.(*unstructured.Unstructured)
	if !ok {
		t.Fatalf("Canary decoded as %T, want unstructured", f.Objects[6].Object)
	}
	if u.GetNamespace() != "default" || u.GetName() != "web" {
		t.Errorf("Canary metadata = %s/%s", u.GetNamespace(), u.GetName())
	}
	if got := f.Objects[6].Key(); got != "Canary.sluice.dev/default/web" {
		t.Errorf("Key() = %q", got)
	}
	if got := f.Objects[1].Key(); got != "Service/shop/web" {
		t.Errorf("Key() = %q", got)
	}
}

func TestParseProblems(t *testing.T) {
	const deployHead = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
`
	tests := []struct {
		name    string
		content string
		// want are substrings of the problems' Error(), in order.
		want     []string
		severity []Severity
		objects  int
	}{
		{
			name:     "syntax error names the line",
			content:  "apiVersion: v1\nkind: Service\nmetadata: x: y\n",
			want:     []string{"bad.yaml:3: not valid YAML: mapping values are not allowed in this context"},
			severity: []Severity{Invalid},
		},
		{
			name:     "syntax error after good documents keeps them",
			content:  "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: [{port: 80}]\n---\nmetadata:\n  name: [x\n",
			want:     []string{"bad.yaml:7: not valid YAML"},
			severity: []Severity{Invalid},
			objects:  1,
		},
		{
			name:     "unterminated flow sequence",
			content:  "apiVersion: v1\nkind: Service\nmetadata:\n  name: [x\n",
			want:     []string{"bad.yaml:3: not valid YAML: did not find expected ',' or ']'"},
			severity: []Severity{Invalid},
		},
		{
			name:     "unknown field with its path and line",
			content:  deployHead + "        command: [x]\n        comand: [x]\n",
			want:     []string{"bad.yaml:15: Deployment default/web: spec.template.spec.containers[0].comand: unknown field"},
			severity: []Severity{Invalid},
		},
		{
			name:     "wrong type with its path and line",
			content:  strings.Replace(deployHead, "spec:\n  selector", "spec:\n  replicas: two\n  selector", 1) + "        command: [x]\n",
			want:     []string{"bad.yaml:6: Deployment default/web: spec.replicas: must be an integer, got string"},
			severity: []Severity{Invalid},
		},
		{
			name:     "missing command",
			content:  deployHead,
			want:     []string{"bad.yaml:13: Deployment default/web: spec.template.spec.containers[0].command: required in local mode"},
			severity: []Severity{Invalid},
		},
		{
			name:     "selector does not match",
			content:  strings.Replace(deployHead, "labels: {app: web}", "labels: {app: other}", 1) + "        command: [x]\n",
			want:     []string{"bad.yaml:10: Deployment default/web: spec.template.metadata.labels: map[app:other] do not match spec.selector"},
			severity: []Severity{Invalid},
		},
		{
			name:     "secret env is not supported",
			content:  deployHead + "        command: [x]\n        env:\n        - name: A\n          valueFrom:\n            secretKeyRef: {name: s, key: k}\n",
			want:     []string{"bad.yaml:17: Deployment default/web: spec.template.spec.containers[0].env[0].valueFrom: configMapKeyRef and secretKeyRef are not supported"},
			severity: []Severity{Invalid},
		},
		{
			name:     "extra containers are a warning",
			content:  deployHead + "        command: [x]\n      - name: other\n        image: nginx\n",
			want:     []string{"bad.yaml:15: Deployment default/web: spec.template.spec.containers[1]: only containers[0] runs"},
			severity: []Severity{Warning},
			objects:  1,
		},
		{
			name:     "duplicate key",
			content:  "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  name: b\nspec:\n  ports: [{port: 80}]\n",
			want:     []string{"bad.yaml:5: metadata.name: duplicate field"},
			severity: []Severity{Invalid},
		},
		{
			name:     "unknown kind is skipped, the rest is read",
			content:  "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: [{port: 80}]\n",
			want:     []string{"bad.yaml:1: ConfigMap default/c: kind ConfigMap (apiVersion v1) is not run in local mode; skipped"},
			severity: []Severity{Unsupported},
			objects:  1,
		},
		{
			name:     "old API version of a known kind",
			content:  "apiVersion: apps/v1beta2\nkind: Deployment\nmetadata: {name: d}\n",
			want:     []string{`bad.yaml:1: Deployment default/d: apiVersion: "apps/v1beta2" is not read by local mode; use apps/v1`},
			severity: []Severity{Unsupported},
		},
		{
			name:     "missing kind",
			content:  "apiVersion: v1\nmetadata: {name: x}\n",
			want:     []string{"bad.yaml:1: kind: required"},
			severity: []Severity{Invalid},
		},
		{
			name:     "service without ports, second document",
			content:  "apiVersion: v1\nkind: Service\nmetadata: {name: ok}\nspec:\n  ports: [{port: 80}]\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: bad\nspec:\n  selector: {app: x}\n",
			want:     []string{"bad.yaml:11: Service default/bad: spec.ports: at least one port is required"},
			severity: []Severity{Invalid},
			objects:  1,
		},
		{
			name:     "invalid policy",
			content:  "apiVersion: policy.sluice.dev/v1beta1\nkind: Server\nmetadata: {name: s}\nspec:\n  podSelector: {}\n  port: 0\n",
			want:     []string{"bad.yaml:4: Server default/s: spec: port 0 is not in 1-65535"},
			severity: []Severity{Invalid},
		},
		{
			name:     "invalid name",
			content:  "apiVersion: v1\nkind: Service\nmetadata: {name: Web_1}\nspec:\n  ports: [{port: 80}]\n",
			want:     []string{"bad.yaml:3: Service default/Web_1: metadata.name: \"Web_1\""},
			severity: []Severity{Invalid},
		},
		{
			name:     "not an object",
			content:  "- a\n- b\n",
			want:     []string{"bad.yaml:1: a document must be an object"},
			severity: []Severity{Invalid},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := Parse("bad.yaml", []byte(tt.content))
			if len(f.Problems) != len(tt.want) {
				t.Fatalf("got %d problems, want %d:\n%v", len(f.Problems), len(tt.want), f.Problems)
			}
			for i, p := range f.Problems {
				if !strings.Contains(p.Error(), tt.want[i]) {
					t.Errorf("problem %d = %q, want it to contain %q", i, p.Error(), tt.want[i])
				}
				if p.Severity != tt.severity[i] {
					t.Errorf("problem %d severity = %v, want %v", i, p.Severity, tt.severity[i])
				}
			}
			if len(f.Objects) != tt.objects {
				t.Errorf("got %d objects, want %d", len(f.Objects), tt.objects)
			}
			wantComplete := true
			for _, s := range tt.severity {
				if s == Invalid {
					wantComplete = false
				}
			}
			if f.Complete() != wantComplete {
				t.Errorf("Complete() = %v, want %v", f.Complete(), wantComplete)
			}
		})
	}
}

func TestReadDir(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("b.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec:\n  ports: [{port: 80}]\n")
	write("a.yml", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  ports: [{port: 80}]\n")
	write("c.json", `{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "c"}, "spec": {"ports": [{"port": 80}]}}`)
	write("empty.yaml", "# nothing yet\n")
	write("notes.txt", "not a manifest")
	write(".hidden.yaml", "garbage: [")
	write("backup.yaml~", "garbage: [")
	if err := os.Mkdir(filepath.Join(dir, "sub.yaml"), 0o755); err != nil {
		t.Fatal(err)
	}
	files, err := ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f.Path))
		if len(f.Problems) > 0 {
			t.Errorf("%s: %v", f.Path, f.Problems)
		}
	}
	if got, want := strings.Join(names, ","), "a.yml,b.yaml,c.json,empty.yaml"; got != want {
		t.Errorf("files = %s, want %s", got, want)
	}
	if len(files[2].Objects) != 1 || files[2].Objects[0].Name != "c" {
		t.Errorf("c.json objects = %+v", files[2].Objects)
	}
	if _, err := ReadDir(filepath.Join(dir, "missing")); err == nil {
		t.Error("ReadDir of a missing directory: no error")
	}
}

func TestReadFileMissing(t *testing.T) {
	f := ReadFile(filepath.Join(t.TempDir(), "gone.yaml"))
	if f.Complete() || len(f.Problems) != 1 || !strings.Contains(f.Problems[0].Error(), "gone.yaml: cannot read: no such file or directory") {
		t.Errorf("problems = %v", f.Problems)
	}
}

func TestAnchorsAndMerge(t *testing.T) {
	content := `apiVersion: v1
kind: Service
metadata:
  name: s
  labels: &l {a: "1"}
  annotations:
    <<: *l
    b: "2"
spec:
  ports: [{port: 80}]
`
	f := Parse("m.yaml", []byte(content))
	if len(f.Problems) > 0 {
		t.Fatal(f.Problems)
	}
	s := f.Objects[0].Object.(*corev1.Service)
	if s.Annotations["a"] != "1" || s.Annotations["b"] != "2" || s.Labels["a"] != "1" {
		t.Errorf("labels %v annotations %v", s.Labels, s.Annotations)
	}
}

func TestSplitPath(t *testing.T) {
	tests := map[string]string{
		"spec.template.spec.containers[0].command": "spec|template|spec|containers|[0]|command",
		"a[1][2].b": "a|[1]|[2]|b",
		"":          "",
	}
	for in, want := range tests {
		if got := strings.Join(splitPath(in), "|"); got != want {
			t.Errorf("splitPath(%q) = %q, want %q", in, got, want)
		}
	}
}
