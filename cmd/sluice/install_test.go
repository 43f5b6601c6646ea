package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/crds/gatewayapi"
	"github.com/sluicehq/sluice/crds/manifests"
	"github.com/sluicehq/sluice/test/envtest"
)

// installCRDs runs `sluice install --crds` and returns what it printed.
func installCRDs(t *testing.T) []byte {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := run([]string{"install", "--crds"}, &stdout, &stderr); code != 0 {
		t.Fatalf("sluice install --crds exited %d: %s", code, stderr.String())
	}
	if stderr.Len() != 0 {
		t.Errorf("sluice install --crds wrote to stderr: %s", stderr.String())
	}
	return stdout.Bytes()
}

func TestInstallCRDs(t *testing.T) {
	out := installCRDs(t)
	if want := append(append([]byte(nil), manifests.All()...), gatewayapi.All()...); !bytes.Equal(out, want) {
		t.Fatalf("sluice install --crds did not print the embedded CRDs (%d bytes, want %d)", len(out), len(want))
	}
	crds, err := envtest.DecodeCRDs(out)
	if err != nil {
		t.Fatalf("decoding the output of sluice install --crds: %v", err)
	}
	var names []string
	for _, crd := range crds {
		names = append(names, crd.Name)
		if crd.Spec.Group == "gateway.networking.k8s.io" || crd.Spec.Group == "gateway.networking.x-k8s.io" {
			if got := crd.Annotations["gateway.networking.k8s.io/channel"]; got != gatewayapi.Channel {
				t.Errorf("%s: channel %q, want %q", crd.Name, got, gatewayapi.Channel)
			}
			if got := crd.Annotations["gateway.networking.k8s.io/bundle-version"]; got != gatewayapi.BundleVersion {
				t.Errorf("%s: bundle version %q, want %q", crd.Name, got, gatewayapi.BundleVersion)
			}
		}
	}
	for _, want := range []string{
		"canaries.sluice.dev", "metrictemplates.sluice.dev", "alertproviders.sluice.dev",
		"servers.policy.sluice.dev", "authorizationpolicies.policy.sluice.dev",
		"meshtlsauthentications.policy.sluice.dev", "networkauthentications.policy.sluice.dev",
		"httproutes.gateway.networking.k8s.io", "grpcroutes.gateway.networking.k8s.io",
		"gateways.gateway.networking.k8s.io", "gatewayclasses.gateway.networking.k8s.io",
		"referencegrants.gateway.networking.k8s.io",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("sluice install --crds lacks %s; it printed %v", want, names)
		}
	}
	if len(crds) != countYAML(t, manifests.All())+countYAML(t, gatewayapi.All()) {
		t.Errorf("printed %d CRDs, want one per embedded file", len(crds))
	}
}

// TestInstallCRDsServerDryRun sends `sluice install --crds` to a real API
// server with no CRD installed, as a server-side dry-run apply: the server
// validates every CRD as it would on install (structural schema, CEL rules
// and their cost) and stores nothing. Then the same through kubectl:
// `sluice install --crds | kubectl apply --server-side --dry-run=server -f -`.
func TestInstallCRDsServerDryRun(t *testing.T) {
	cfg, c := envtest.Start(t, envtest.WithoutCRDs())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out := installCRDs(t)

	objs := decodeObjects(t, out)
	for _, u := range objs {
		err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u),
			client.FieldOwner("sluice"), client.ForceOwnership, client.DryRunAll)
		if err != nil {
			t.Errorf("server-side dry-run apply of %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
	var list apiextensionsv1.CustomResourceDefinitionList
	if err := c.List(ctx, &list); err != nil {
		t.Fatalf("listing CRDs: %v", err)
	}
	if len(list.Items) != 0 {
		t.Errorf("a dry run stored %d CRDs", len(list.Items))
	}

	t.Run("kubectl", func(t *testing.T) {
		kubectl := envtest.Kubectl(t)
		kubeconfig := envtest.Kubeconfig(t, cfg)
		cmd := exec.CommandContext(ctx, kubectl, "--kubeconfig", kubeconfig,
			"apply", "--server-side", "--dry-run=server", "-f", "-")
		cmd.Stdin = bytes.NewReader(out)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("sluice install --crds | kubectl apply --server-side --dry-run=server -f -: %v\nstdout:\n%s\nstderr:\n%s",
				err, stdout.String(), stderr.String())
		}
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		if len(lines) != len(objs) {
			t.Errorf("kubectl applied %d objects, want %d:\n%s", len(lines), len(objs), stdout.String())
		}
		for _, l := range lines {
			if !strings.Contains(l, "serverside-applied (server dry run)") {
				t.Errorf("kubectl line %q is not a server dry run apply", l)
			}
		}
	})
}

// decodeObjects decodes a multi-document YAML stream into objects.
func decodeObjects(t *testing.T, stream []byte) []*unstructured.Unstructured {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	var objs []*unstructured.Unstructured
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("reading YAML: %v", err)
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			t.Fatalf("decoding YAML: %v", err)
		}
		if len(u.Object) != 0 {
			objs = append(objs, u)
		}
	}
}

// countYAML counts the non-empty documents of a YAML stream.
func countYAML(t *testing.T, stream []byte) int {
	t.Helper()
	return len(decodeObjects(t, stream))
}
