package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/crds/gatewayapi"
	"github.com/sluicehq/sluice/crds/manifests"
	"github.com/sluicehq/sluice/mesh/identity"
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

// mustPair fails the test on err and returns kp.
func mustPair(t *testing.T) func(identity.KeyPair, error) identity.KeyPair {
	return func(kp identity.KeyPair, err error) identity.KeyPair {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return kp
	}
}

func TestCheckWebhookCertificate(t *testing.T) {
	now := time.Now()
	must := mustPair(t)
	ca := must(identity.NewRootCA("webhook", now, 24*time.Hour))
	otherCA := must(identity.NewRootCA("other webhook", now, 24*time.Hour))
	name := webhookServiceDNSName()
	good := must(identity.NewServingCertificate(ca, []string{name}, now, time.Hour))
	expired := must(identity.NewServingCertificate(ca, []string{name}, now.Add(-3*time.Hour), time.Hour))
	wrongName := must(identity.NewServingCertificate(ca, []string{"elsewhere.example"}, now, time.Hour))
	other := must(identity.NewServingCertificate(otherCA, []string{name}, now, time.Hour))

	for _, tc := range []struct {
		name    string
		ca      []byte
		serving identity.KeyPair
		want    string // empty: valid
	}{
		{"valid", ca.CertPEM, good, ""},
		{"expired", ca.CertPEM, expired, "expired"},
		{"another name", ca.CertPEM, wrongName, name},
		{"another CA", ca.CertPEM, other, "unknown authority"},
		{"key of another certificate", ca.CertPEM, identity.KeyPair{CertPEM: good.CertPEM, KeyPEM: other.KeyPEM}, "tls.key"},
		{"no CA", []byte("garbage"), good, "ca.crt"},
		{"no certificate", ca.CertPEM, identity.KeyPair{}, "tls.crt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkWebhookCertificate(tc.ca, tc.serving, now)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("a valid webhook certificate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error about %q", err, tc.want)
			}
		})
	}
}

func TestReadClusterCertificates(t *testing.T) {
	now := time.Now()
	must := mustPair(t)
	anchor := must(identity.NewRootCA("root", now, 24*time.Hour))
	issuer := must(identity.NewIntermediateCA(anchor, "issuer", now, 24*time.Hour))
	expiredIssuer := must(identity.NewIntermediateCA(anchor, "old issuer", now.Add(-3*time.Hour), time.Hour))
	otherAnchor := must(identity.NewRootCA("other root", now, 24*time.Hour))
	webCA := must(identity.NewRootCA("webhook", now, 24*time.Hour))
	serving := must(identity.NewServingCertificate(webCA, []string{webhookServiceDNSName()}, now, time.Hour))
	expiredServing := must(identity.NewServingCertificate(webCA, []string{webhookServiceDNSName()}, now.Add(-3*time.Hour), time.Hour))

	trustRoots := func(pem []byte) runtime.Object {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "sluice", Name: trustRootsConfigMap}, Data: map[string]string{"ca.crt": string(pem)}}
	}
	issuerSec := func(kp identity.KeyPair) runtime.Object {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "sluice", Name: issuerSecret}, Data: map[string][]byte{"tls.crt": kp.CertPEM, "tls.key": kp.KeyPEM}}
	}
	webhookSec := func(kp identity.KeyPair) runtime.Object {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "sluice", Name: injectorTLSSecret}, Data: map[string][]byte{"tls.crt": kp.CertPEM, "tls.key": kp.KeyPEM, "ca.crt": webCA.CertPEM}}
	}

	for _, tc := range []struct {
		name         string
		objs         []runtime.Object
		withIdentity bool
		wantIssuer   bool
		wantWebhook  bool
		wantErr      []string
	}{
		{name: "nothing installed", withIdentity: true},
		{name: "everything installed", objs: []runtime.Object{trustRoots(anchor.CertPEM), issuerSec(issuer), webhookSec(serving)}, withIdentity: true, wantIssuer: true, wantWebhook: true},
		{name: "identity from files", objs: []runtime.Object{trustRoots(anchor.CertPEM), issuerSec(expiredIssuer), webhookSec(serving)}, wantWebhook: true},
		{name: "no webhook Secret", objs: []runtime.Object{trustRoots(anchor.CertPEM), issuerSec(issuer)}, withIdentity: true, wantIssuer: true},
		{name: "expired issuer", objs: []runtime.Object{trustRoots(anchor.CertPEM), issuerSec(expiredIssuer), webhookSec(serving)}, withIdentity: true,
			wantErr: []string{"Secret sluice/" + issuerSecret, "expired", "--" + flagIssuerCertFile, "--" + flagIgnoreCluster}},
		{name: "issuer of other anchors", objs: []runtime.Object{trustRoots(otherAnchor.CertPEM), issuerSec(issuer)}, withIdentity: true,
			wantErr: []string{"Secret sluice/" + issuerSecret, "does not chain"}},
		{name: "anchors not PEM", objs: []runtime.Object{trustRoots([]byte("garbage")), issuerSec(issuer)}, withIdentity: true,
			wantErr: []string{"ConfigMap sluice/" + trustRootsConfigMap, "no PEM certificate"}},
		{name: "anchors without issuer", objs: []runtime.Object{trustRoots(anchor.CertPEM)}, withIdentity: true,
			wantErr: []string{"holds ConfigMap sluice/" + trustRootsConfigMap + " but not Secret sluice/" + issuerSecret, "--" + flagTrustAnchorsFile, "--" + flagIgnoreCluster}},
		{name: "issuer without anchors", objs: []runtime.Object{issuerSec(issuer)}, withIdentity: true,
			wantErr: []string{"holds Secret sluice/" + issuerSecret + " but not ConfigMap sluice/" + trustRootsConfigMap}},
		{name: "expired webhook certificate", objs: []runtime.Object{trustRoots(anchor.CertPEM), issuerSec(issuer), webhookSec(expiredServing)}, withIdentity: true,
			wantErr: []string{"Secret sluice/" + injectorTLSSecret, "expired", "delete secret " + injectorTLSSecret}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := fake.NewClientset(tc.objs...)
			certs, err := readClusterCertificates(context.Background(), cs, "test-cluster", tc.withIdentity, now)
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatal("got no error")
				}
				for _, w := range append(tc.wantErr, "test-cluster") {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := certs.issuer != nil; got != tc.wantIssuer {
				t.Errorf("issuer reused: %v, want %v", got, tc.wantIssuer)
			} else if got && (!bytes.Equal(certs.anchorsPEM, anchor.CertPEM) || !bytes.Equal(certs.issuer.CertPEM, issuer.CertPEM) || !bytes.Equal(certs.issuer.KeyPEM, issuer.KeyPEM)) {
				t.Error("the reused trust anchors and issuer are not the cluster's")
			}
			if got := certs.webhook != nil; got != tc.wantWebhook {
				t.Errorf("webhook certificate reused: %v, want %v", got, tc.wantWebhook)
			} else if got && (!bytes.Equal(certs.webhookCA, webCA.CertPEM) || !bytes.Equal(certs.webhook.CertPEM, serving.CertPEM)) {
				t.Error("the reused webhook certificate is not the cluster's")
			}
		})
	}
}

// TestInstallWithoutACluster: with no explicit cluster, a missing or silent
// kubeconfig cluster means new certificates and a note; an explicit one
// that does not answer is an error.
func TestInstallWithoutACluster(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// A port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := l.Addr().String()
	l.Close()
	silent := filepath.Join(dir, "silent")
	kc := `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://` + closedAddr + `", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: ctx, context: {cluster: c, user: u}}]
current-context: ctx
`
	if err := os.WriteFile(silent, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", dir)
	for _, tc := range []struct {
		name       string
		kubeconfig string
		args       []string
		wantErr    bool
		want       []string
	}{
		{"no kubeconfig", empty, nil, false, []string{"no Kubernetes cluster configured", "generating new certificates"}},
		{"silent cluster", silent, nil, false, []string{closedAddr, "did not answer", "generating new certificates"}},
		{"explicit silent cluster", "", []string{"--kubeconfig", silent}, true, []string{closedAddr, "did not answer", "--" + flagIgnoreCluster}},
		{"explicit missing kubeconfig", "", []string{"--kubeconfig", filepath.Join(dir, "missing")}, true, []string{"missing", "--" + flagIgnoreCluster}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("KUBECONFIG", tc.kubeconfig)
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"install"}, tc.args...), &stdout, &stderr)
			if tc.wantErr {
				if code == 0 || stdout.Len() != 0 {
					t.Fatalf("exit %d with %d bytes on stdout, want a failure and nothing on stdout", code, stdout.Len())
				}
			} else if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			} else if _, ok := decodeTyped(t, stdout.Bytes())["Secret/sluice-identity-issuer"]; !ok {
				t.Error("printed no issuer Secret")
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr %q lacks %q", stderr.String(), w)
				}
			}
		})
	}
}
