package manifests

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// crdHead is the part of a CRD the tests look at.
type crdHead struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Group string `json:"group"`
		Names struct {
			Plural string `json:"plural"`
		} `json:"names"`
	} `json:"spec"`
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

func TestAllHasEveryFileAsACRD(t *testing.T) {
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
		if crd.Spec.Group != "sluice.dev" && crd.Spec.Group != "policy.sluice.dev" {
			t.Errorf("%s: group %q is not Sluice's", files[i], crd.Spec.Group)
		}
		if want := crd.Spec.Group + "_" + crd.Spec.Names.Plural + ".yaml"; files[i] != want {
			t.Errorf("document %d is %s, from file %s; want the file named %s", i, crd.Metadata.Name, files[i], want)
		}
	}
}

func TestJoin(t *testing.T) {
	fsys := fstest.MapFS{
		"b.yaml":    {Data: []byte("kind: B\n\n\n")},
		"a.yaml":    {Data: []byte("---\nkind: A")},
		"notes.txt": {Data: []byte("not YAML")},
	}
	got, err := Join(fsys)
	if err != nil {
		t.Fatal(err)
	}
	if want := "---\nkind: A\n---\nkind: B\n"; string(got) != want {
		t.Errorf("join = %q, want %q", got, want)
	}
	if strings.Contains(string(got), "not YAML") {
		t.Error("join included a file that is not *.yaml")
	}
}
