package main

import (
	"bytes"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/mesh/injector"
)

// runInject runs `sluice inject args...` with stdin and returns the exit
// code, stdout and stderr.
func runInject(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	root := newRootCmd(&out, &errb)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(append([]string{"inject"}, args...))
	code := 0
	if err := root.Execute(); err != nil {
		errb.WriteString("sluice: " + err.Error() + "\n")
		code = 1
	}
	return code, out.String(), errb.String()
}

func TestInjectMultiDocGolden(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"inject", "-f", "testdata/inject_multi.yaml"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	golden(t, "inject_multi.golden.yaml", out.Bytes())
	golden(t, "inject_multi.stderr.golden", errb.Bytes())

	// Injecting the output again changes nothing.
	code, again, stderr := runInject(t, out.String(), "-f", "-")
	if code != 0 {
		t.Fatalf("second run: exit %d: %s", code, stderr)
	}
	if again != out.String() {
		t.Errorf("injecting twice changed the output:\n%s", again)
	}
	if n := strings.Count(stderr, "skipped: already injected"); n != 4 {
		t.Errorf("second run: %d already-injected lines, want 4:\n%s", n, stderr)
	}
}

func TestInjectClassicKeepsUnknownFields(t *testing.T) {
	const in = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    spec:
      containers:
      - name: web
        image: web:1
        futureField: kept
`
	code, out, stderr := runInject(t, in, "-f", "-", "--native-sidecars=false", "--proxy-image=example.com/proxy", "--proxy-version=v9")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if stderr != "deployment/web: injected (sidecar container)\n" {
		t.Errorf("stderr = %q", stderr)
	}
	if !strings.Contains(out, "futureField: kept") {
		t.Errorf("a field unknown to the Kubernetes types was lost:\n%s", out)
	}
	var d appsv1.Deployment
	if err := yaml.Unmarshal([]byte(out), &d); err != nil {
		t.Fatal(err)
	}
	spec := d.Spec.Template.Spec
	if len(spec.Containers) != 2 || spec.Containers[0].Name != injector.ProxyContainerName || spec.Containers[0].Image != "example.com/proxy:v9" {
		t.Errorf("containers = %+v", spec.Containers)
	}
	if len(spec.InitContainers) != 1 || spec.InitContainers[0].Name != injector.InitContainerName {
		t.Errorf("initContainers = %+v", spec.InitContainers)
	}
	if got := d.Spec.Template.Labels[injector.LabelWorkloadPrefix+"deployment"]; got != "web" {
		t.Errorf("workload label = %q", got)
	}
}

func TestInjectErrors(t *testing.T) {
	const bad = `apiVersion: v1
kind: Service
metadata:
  name: web
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    metadata:
      annotations:
        config.sluice.dev/proxy-log-level: loud
    spec:
      containers:
      - name: web
        image: web:1
`
	tests := []struct {
		name, stdin string
		args        []string
		want        string
	}{
		{"invalid annotation", bad, []string{"-f", "-"},
			`inject: document 2: deployment/web: pod annotation config.sluice.dev/proxy-log-level="loud": want one of debug, info, warn, error`},
		{"no file", "", nil, "-f FILE (or - for stdin) is required"},
		{"missing file", "", []string{"-f", "testdata/nope.yaml"}, "testdata/nope.yaml: no such file"},
		{"no template", "kind: Deployment\nmetadata: {name: x}\nspec: {}\n", []string{"-f", "-"}, "document 1: deployment/x: no spec.template"},
		{"bad yaml", "kind: [\n", []string{"-f", "-"}, "document 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, stderr := runInject(t, tc.stdin, tc.args...)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			if out != "" {
				t.Errorf("stdout not empty on error:\n%s", out)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr %q lacks %q", stderr, tc.want)
			}
		})
	}
}

// TestInjectPassThroughVerbatim checks that a document without a pod keeps
// its comments and layout.
func TestInjectPassThroughVerbatim(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"inject", "-f", "testdata/inject_multi.yaml"}, &out, &errb); code != 0 {
		t.Fatal(errb.String())
	}
	if !bytes.HasPrefix(out.Bytes(), []byte("# The demo's namespace: passed through, comments and all.\napiVersion: v1\nkind: Namespace\n")) {
		t.Errorf("the Namespace document was not passed through verbatim:\n%s", out.Bytes()[:200])
	}
}
