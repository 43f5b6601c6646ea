package main

import (
	"bytes"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"

	"github.com/sluicehq/sluice/crds/manifests"
)

func TestRenderCategoriesGolden(t *testing.T) {
	cats := []checkCategory{
		{Name: "kubernetes-api", Results: []checkResult{
			{Name: "can initialize the client", OK: true, Detail: "https://10.0.0.1:6443, context prod"},
			{Name: "can query the Kubernetes API", OK: true},
			{Name: "is running the minimum Kubernetes API version", Warn: true, Detail: "v1.28.4",
				Hints: []string{"Kubernetes 1.29 or later runs the proxy as a native sidecar"}},
		}},
		{Name: "control-plane", Results: []checkResult{
			{Name: "control plane namespace exists", OK: true, Detail: "sluice"},
			{Name: "sluice-controller is available", Hints: []string{"deployment sluice/sluice-controller does not exist: " + hintInstall}},
		}},
	}
	var b bytes.Buffer
	renderCategories(&b, cats)
	golden(t, "check_kube.golden", b.Bytes())
	if categoriesPassed(cats) {
		t.Error("categoriesPassed with a ×")
	}
	// ‼ alone passes.
	cats[1].Results = cats[1].Results[:1]
	b.Reset()
	renderCategories(&b, cats)
	if !categoriesPassed(cats) || !strings.HasSuffix(b.String(), "Status check results are ✓\n") {
		t.Errorf("warnings only:\n%s", b.String())
	}
}

func TestCertValidity(t *testing.T) {
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	for _, tc := range []struct {
		name       string
		from, to   time.Time
		mark, hint string
	}{
		{"valid", now.Add(-day), now.Add(365 * day), "✓", ""},
		{"expires in 30 days", now.Add(-day), now.Add(30 * day), "‼", "expires in 30 days: rotate it before then"},
		{"expires in 61 days", now.Add(-day), now.Add(61 * day), "✓", ""},
		{"expired", now.Add(-10 * day), now.Add(-3 * day), "×", "expired 3 days ago"},
		{"expired an hour ago", now.Add(-10 * day), now.Add(-time.Hour), "×", "expired 1h0m0s ago"},
		{"not yet valid", now.Add(day), now.Add(10 * day), "×", "not valid before 2026-06-02T00:00:00Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCert(t, "issuer", tc.from, tc.to, nil, true)
			r := certValidity("issuer certificate", c.cert, now)
			if r.mark() != tc.mark {
				t.Errorf("mark %s, want %s (%+v)", r.mark(), tc.mark, r)
			}
			if r.Name != `issuer certificate "issuer" is valid` || r.Detail != "NotAfter "+tc.to.Format(time.RFC3339) {
				t.Errorf("line %q (%q)", r.Name, r.Detail)
			}
			if tc.hint != "" && (len(r.Hints) == 0 || !strings.HasPrefix(r.Hints[0], tc.hint)) {
				t.Errorf("hints %q, want %q", r.Hints, tc.hint)
			}
		})
	}
}

func TestChainsTo(t *testing.T) {
	now := time.Now()
	root := newCert(t, "root", now.Add(-time.Hour), now.Add(time.Hour), nil, true)
	mid := newCert(t, "mid", now.Add(-time.Hour), now.Add(time.Hour), root, true)
	leaf := newCert(t, "leaf", now.Add(-time.Hour), now.Add(time.Hour), mid, true)
	other := newCert(t, "other", now.Add(-time.Hour), now.Add(time.Hour), nil, true)
	for _, tc := range []struct {
		name    string
		chain   []*testCA
		anchors []*testCA
		err     string
	}{
		{"issued by the anchor", []*testCA{mid}, []*testCA{other, root}, ""},
		{"through an intermediate", []*testCA{leaf, mid}, []*testCA{root}, ""},
		{"the anchor itself", []*testCA{root}, []*testCA{root}, ""},
		{"another root", []*testCA{mid}, []*testCA{other}, `"mid" (issued by "CN=root") is signed by none of the 1 trust anchors`},
		{"broken chain", []*testCA{leaf, other}, []*testCA{root}, `"leaf" is not signed by the next certificate of the chain, "other"`},
	} {
		certs := func(cs []*testCA) (out []*x509.Certificate) {
			for _, c := range cs {
				out = append(out, c.cert)
			}
			return out
		}
		err := chainsTo(certs(tc.chain), certs(tc.anchors))
		if (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.err)
		}
	}
}

func TestImageTag(t *testing.T) {
	for in, want := range map[string]string{
		"ghcr.io/sluicehq/sluice-proxy:v1.2.3":                 "v1.2.3",
		"localhost:5000/sluice-proxy:dev":                      "dev",
		"localhost:5000/sluice-proxy":                          "",
		"ghcr.io/sluicehq/sluice-proxy:v1@sha256:0123456789ab": "v1",
		"sluice-proxy": "",
	} {
		if got := imageTag(in); got != want {
			t.Errorf("imageTag(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCRDDiff(t *testing.T) {
	crds, err := decodeCRDs(manifests.All())
	if err != nil || len(crds) == 0 {
		t.Fatalf("decoding the embedded CRDs: %v (%d)", err, len(crds))
	}
	want := crds[0]
	if d := crdDiff(want, want.DeepCopy()); d != "" {
		t.Errorf("a CRD differs from itself: %s", d)
	}
	older := want.DeepCopy()
	older.Spec.Versions = append(older.Spec.Versions, apiextensionsv1.CustomResourceDefinitionVersion{Name: "v1alpha1", Served: true})
	if d := crdDiff(want, older); !strings.Contains(d, "serves versions v1beta1, v1alpha1, this CLI's serves v1beta1") {
		t.Errorf("extra version: %q", d)
	}
	changed := want.DeepCopy()
	changed.Spec.Versions[0].Schema.OpenAPIV3Schema.Description = "an older description"
	if d := crdDiff(want, changed); !strings.Contains(d, "the schema of version v1beta1 differs") {
		t.Errorf("changed schema: %q", d)
	}
}

func TestDecodeApply(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, err string
		n               int
	}{
		{"canary and template", "apiVersion: sluice.dev/v1beta1\nkind: Canary\nmetadata: {name: a}\n---\n# comment\n---\napiVersion: sluice.dev/v1beta1\nkind: MetricTemplate\nmetadata: {name: t, namespace: ops}\n", "", 2},
		{"deployment", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n", `f.yaml: document 1 is a Deployment "web" (apiVersion "apps/v1"): sluice apply sends only Canary, MetricTemplate, AlertProvider of sluice.dev/v1beta1 to a cluster; apply other kinds with kubectl`, 0},
		{"flagger", "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {name: web}\n", `document 1 is a Canary "web" (apiVersion "flagger.app/v1beta1")`, 0},
		{"no name", "apiVersion: sluice.dev/v1beta1\nkind: AlertProvider\n", "f.yaml: document 1, a AlertProvider, has no metadata.name", 0},
		{"empty", "# nothing\n", "f.yaml holds no object", 0},
		{"bad yaml", "kind: [\n", "f.yaml: YAML document 1", 0},
	} {
		objs, err := decodeApply("f.yaml", []byte(tc.yaml), "shop")
		if (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.err)
			continue
		}
		if code, _ := exitCodeOf(err); err != nil && code != exitUnreachable {
			t.Errorf("%s: exit code %d, want %d", tc.name, code, exitUnreachable)
		}
		if len(objs) != tc.n {
			t.Errorf("%s: %d objects, want %d", tc.name, len(objs), tc.n)
		}
		if tc.n == 2 && (objs[0].GetNamespace() != "shop" || objs[1].GetNamespace() != "ops") {
			t.Errorf("%s: namespaces %s, %s", tc.name, objs[0].GetNamespace(), objs[1].GetNamespace())
		}
	}
}
