package gatewayapi

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

const module = "sigs.k8s.io/gateway-api"

// crdHead is the part of a CRD the tests look at.
type crdHead struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name        string            `json:"name"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
}

// documents splits a YAML stream into its non-empty documents.
func documents(t *testing.T, stream []byte) [][]byte {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("reading the YAML stream: %v", err)
		}
		if len(bytes.TrimSpace(doc)) != 0 {
			docs = append(docs, doc)
		}
	}
}

func TestAllHasEveryFileAsACRDOfTheBundle(t *testing.T) {
	files, err := fs.Glob(FS, "*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no embedded CRD files (err %v)", err)
	}
	docs := documents(t, All())
	if len(docs) != len(files) {
		t.Fatalf("All has %d documents for %d files", len(docs), len(files))
	}
	for i, doc := range docs {
		var crd crdHead
		if err := yaml.Unmarshal(doc, &crd); err != nil {
			t.Fatalf("document %d (%s): %v", i, files[i], err)
		}
		if crd.APIVersion != "apiextensions.k8s.io/v1" || crd.Kind != "CustomResourceDefinition" {
			t.Errorf("%s is a %s %s, not a CRD", files[i], crd.APIVersion, crd.Kind)
		}
		a := crd.Metadata.Annotations
		if a["gateway.networking.k8s.io/bundle-version"] != BundleVersion || a["gateway.networking.k8s.io/channel"] != Channel {
			t.Errorf("%s: bundle %q channel %q, want %s %s", files[i],
				a["gateway.networking.k8s.io/bundle-version"], a["gateway.networking.k8s.io/channel"], BundleVersion, Channel)
		}
	}
}

// TestSameAsModule checks that the embedded files are the CRDs of the
// sigs.k8s.io/gateway-api version in go.mod, byte for byte: run
// hack/gatewayapi-crds.sh (and update BundleVersion) after changing it.
func TestSameAsModule(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}} {{.Dir}}", module).Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v", module, err)
	}
	version, dir, ok := strings.Cut(strings.TrimSpace(string(out)), " ")
	if !ok || dir == "" {
		t.Fatalf("%s is not in the module cache (go list said %q): run go mod download %s", module, out, module)
	}
	if version != BundleVersion {
		t.Errorf("go.mod has %s %s but the embedded CRDs are %s: run hack/gatewayapi-crds.sh and update BundleVersion",
			module, version, BundleVersion)
	}
	src := filepath.Join(dir, "config", "crd", Channel)
	paths, err := filepath.Glob(filepath.Join(src, "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no CRD files in %s (err %v)", src, err)
	}
	want := map[string]bool{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte("\nkind: CustomResourceDefinition\n")) && !bytes.HasPrefix(b, []byte("kind: CustomResourceDefinition\n")) {
			continue // kustomization.yaml, the safe-upgrades ValidatingAdmissionPolicy
		}
		name := filepath.Base(p)
		want[name] = true
		got, err := fs.ReadFile(FS, name)
		if err != nil {
			t.Errorf("%s of %s is not embedded: run hack/gatewayapi-crds.sh", name, module)
			continue
		}
		if !bytes.Equal(got, b) {
			t.Errorf("the embedded %s differs from %s@%s's: run hack/gatewayapi-crds.sh", name, module, version)
		}
	}
	files, _ := fs.Glob(FS, "*.yaml")
	for _, f := range files {
		if !want[f] {
			t.Errorf("the embedded %s is not a CRD of %s@%s: run hack/gatewayapi-crds.sh", f, module, version)
		}
	}
}
