package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kcanary "github.com/sluicehq/sluice/canary/kubernetes"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
	"github.com/sluicehq/sluice/mesh/injector"
	"github.com/sluicehq/sluice/test/envtest"
)

// cliRun is one run of the CLI: its exit code and output.
type cliRun struct {
	code        int
	out, errOut string
}

// kubeCLI runs the CLI against the test API server of kubeconfig.
func kubeCLI(kubeconfig string) func(args ...string) cliRun {
	return func(args ...string) cliRun {
		var out, errOut bytes.Buffer
		code := run(append(args, "--kubeconfig", kubeconfig), &out, &errOut)
		return cliRun{code, out.String(), errOut.String()}
	}
}

// TestKubernetesCLI runs the CLI's canary commands and `sluice check`
// against a real API server with Sluice's and the Gateway API's CRDs.
func TestKubernetesCLI(t *testing.T) {
	cfg, c := envtest.Start(t)
	kubeconfig := envtest.Kubeconfig(t, cfg)
	sluice := kubeCLI(kubeconfig)
	ctx := t.Context()

	// First: a cluster with only the CRDs.
	t.Run("check with only CRDs", func(t *testing.T) {
		r := sluice("check")
		if r.code != 1 {
			t.Errorf("exit %d, want 1\n%s%s", r.code, r.out, r.errOut)
		}
		for _, want := range []string{
			"kubernetes-api\n--------------\n✓ can initialize the client",
			"✓ can query the Kubernetes API",
			"✓ is running the minimum Kubernetes API version (v1.37.2)",
			"✓ Sluice CRDs are installed (7/7)",
			"✓ Sluice CRDs are current",
			"✓ Gateway API (experimental v1.6.3) CRDs are installed (13/13)",
			"× control plane namespace exists (sluice)\n    namespace sluice does not exist: " + hintInstall,
			"× sluice-controller is available\n    deployment sluice/sluice-controller does not exist: " + hintInstall,
			"× sluice-injector is available",
			"× trust anchors are readable",
			"× webhook configuration exists",
			"Status check results are ×",
		} {
			if !strings.Contains(r.out, want) {
				t.Errorf("output lacks %q:\n%s", want, r.out)
			}
		}
	})

	t.Run("check with a changed CRD", func(t *testing.T) {
		var crd apiextensionsv1.CustomResourceDefinition
		if err := c.Get(ctx, types.NamespacedName{Name: "metrictemplates.sluice.dev"}, &crd); err != nil {
			t.Fatal(err)
		}
		orig := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Description
		crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Description = "as an older release described it"
		if err := c.Update(ctx, &crd); err != nil {
			t.Fatal(err)
		}
		r := sluice("check")
		want := "‼ Sluice CRDs are current\n    CRD metrictemplates.sluice.dev: the schema of version v1beta1 differs from this CLI's (an older or newer install)\n"
		if !strings.Contains(r.out, want) {
			t.Errorf("output lacks %q:\n%s", want, r.out)
		}
		if err := c.Get(ctx, types.NamespacedName{Name: crd.Name}, &crd); err != nil {
			t.Fatal(err)
		}
		crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Description = orig
		if err := c.Update(ctx, &crd); err != nil {
			t.Fatal(err)
		}
		if r := sluice("check"); !strings.Contains(r.out, "✓ Sluice CRDs are current") {
			t.Errorf("after restoring the CRD:\n%s", r.out)
		}
	})

	t.Run("check --pre", func(t *testing.T) {
		r := sluice("check", "--pre")
		if r.code != 0 {
			t.Errorf("exit %d, want 0\n%s%s", r.code, r.out, r.errOut)
		}
		for _, want := range []string{
			"pre-kubernetes-setup\n--------------------\n✓ control plane namespace does not already exist",
			"✓ can create CustomResourceDefinitions",
			"✓ can create MutatingWebhookConfigurations",
			"✓ can create Deployments in namespace sluice",
			"Status check results are ✓",
		} {
			if !strings.Contains(r.out, want) {
				t.Errorf("output lacks %q:\n%s", want, r.out)
			}
		}
		if strings.Contains(r.out, "control-plane") {
			t.Errorf("--pre checked the control plane:\n%s", r.out)
		}
	})

	for _, ns := range []string{"shop", controlPlaneNamespace} {
		if ns == controlPlaneNamespace {
			t.Run("canaries", func(t *testing.T) { testKubeCanaries(t, c, kubeconfig) })
		}
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("check --pre with sluice installed", func(t *testing.T) {
		r := sluice("check", "--pre")
		if r.code != 0 || !strings.Contains(r.out, "‼ control plane namespace does not already exist\n    namespace sluice exists") {
			t.Errorf("exit %d\n%s%s", r.code, r.out, r.errOut)
		}
	})

	t.Run("target selection", func(t *testing.T) { testTargetSelection(t, kubeconfig) })
	t.Run("identity", func(t *testing.T) { testKubeIdentity(t, c, sluice) })
	t.Run("webhook", func(t *testing.T) { testKubeWebhook(t, c, sluice) })
	t.Run("proxies", func(t *testing.T) { testKubeProxies(t, c, sluice) })
	t.Run("stat", func(t *testing.T) { testKubeStat(t, c, sluice) })
}

func testCanary(ns, name string) *v1beta1.Canary {
	return &v1beta1.Canary{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1beta1.CanarySpec{
			TargetRef: v1beta1.LocalObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: name},
			Service:   v1beta1.CanaryService{Port: 9898},
			Analysis:  &v1beta1.CanaryAnalysis{Interval: "1m", Threshold: 2, StepWeight: 25, MaxWeight: 50},
		},
	}
}

// setCanaryStatus writes a canary's status, as the controller would.
func setCanaryStatus(t *testing.T, c client.Client, ns, name string, st v1beta1.CanaryStatus) {
	t.Helper()
	var cn v1beta1.Canary
	if err := c.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: name}, &cn); err != nil {
		t.Fatal(err)
	}
	cn.Status = st
	if err := c.Status().Update(t.Context(), &cn); err != nil {
		t.Fatalf("writing the status of canary %s/%s: %v", ns, name, err)
	}
}

// runAsync runs the CLI in the background; wait returns its result.
func runAsync(sluice func(...string) cliRun, args ...string) (wait func() cliRun) {
	var r cliRun
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r = sluice(args...)
	}()
	return func() cliRun { wg.Wait(); return r }
}

func testKubeCanaries(t *testing.T, c client.Client, kubeconfig string) {
	ctx := t.Context()
	sluice := kubeCLI(kubeconfig)
	if r := sluice("get", "canaries"); r.code != 0 || r.out != "No canaries found.\n" {
		t.Errorf("get canaries on an empty cluster: exit %d, %q %q", r.code, r.out, r.errOut)
	}

	// apply -f: server-side apply of the sluice.dev kinds only.
	dir := t.TempDir()
	manifest := filepath.Join(dir, "canary.yaml")
	if err := os.WriteFile(manifest, []byte(`apiVersion: sluice.dev/v1beta1
kind: Canary
metadata:
  name: backend
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: backend}
  service: {port: 8080}
  analysis: {interval: 1m, threshold: 2, stepWeight: 20, maxWeight: 60}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	r := sluice("apply", "-f", manifest)
	if r.code != 0 || !strings.Contains(r.out, "Canary default/backend applied (server-side, field manager sluice)") {
		t.Fatalf("apply: exit %d, %q %q", r.code, r.out, r.errOut)
	}
	var applied v1beta1.Canary
	if err := c.Get(ctx, types.NamespacedName{Namespace: "default", Name: "backend"}, &applied); err != nil {
		t.Fatalf("the applied canary: %v", err)
	}
	if len(applied.ManagedFields) == 0 || applied.ManagedFields[0].Manager != "sluice" || applied.ManagedFields[0].Operation != metav1.ManagedFieldsOperationApply {
		t.Errorf("managed fields %+v, want an Apply by sluice", applied.ManagedFields)
	}
	deploy := filepath.Join(dir, "deploy.yaml")
	if err := os.WriteFile(deploy, []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := sluice("apply", "-f", deploy); r.code != exitUnreachable || !strings.Contains(r.errOut, `document 1 is a Deployment "web" (apiVersion "apps/v1"): sluice apply sends only Canary, MetricTemplate, AlertProvider`) {
		t.Errorf("apply of a Deployment: exit %d, %q", r.code, r.errOut)
	}

	if err := c.Create(ctx, testCanary("shop", "api")); err != nil {
		t.Fatal(err)
	}
	setCanaryStatus(t, c, "default", "backend", v1beta1.CanaryStatus{
		Phase: v1beta1.PhaseProgressing, CanaryWeight: 20, ObservedRevision: "rev2", LastPromotedRevision: "rev1",
		LastTransitionTime: ptr.To(metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))),
	})

	r = sluice("get", "canaries")
	want := "NAMESPACE   NAME      STATUS        WEIGHT   FAILEDCHECKS   LASTTRANSITIONTIME\n" +
		"default     backend   Progressing   20       0              2026-01-02T03:04:05Z\n"
	if r.code != 0 || r.out != want {
		t.Errorf("get canaries: exit %d\n%s%s\nwant\n%s", r.code, r.out, r.errOut, want)
	}
	if r := sluice("get", "canaries", "-A"); r.code != 0 || !strings.Contains(r.out, "shop        api") || !strings.Contains(r.out, "default     backend") {
		t.Errorf("get canaries -A: exit %d\n%s%s", r.code, r.out, r.errOut)
	}
	if r := sluice("get", "canaries", "-n", "shop", "-o", "json"); r.code != 0 || !strings.Contains(r.out, `"name": "api"`) ||
		!strings.Contains(r.out, `"kind": "Canary"`) || strings.Contains(r.out, "managedFields") || strings.Contains(r.out, "backend") {
		t.Errorf("get canaries -n shop -o json: exit %d\n%s%s", r.code, r.out, r.errOut)
	}

	// get -w prints again when a canary changes, through a watch.
	wctx, stopWatch := context.WithCancel(ctx)
	var wout bytes.Buffer
	var wmu sync.Mutex
	watchDone := make(chan int)
	go func() {
		root := newRootCmd(&lockedWriter{w: &wout, mu: &wmu}, &bytes.Buffer{})
		root.SetArgs([]string{"get", "canaries", "-w", "--kubeconfig", kubeconfig})
		code := 0
		if err := root.ExecuteContext(wctx); err != nil {
			code, _ = exitCodeOf(err)
		}
		watchDone <- code
	}()
	kubeEventually(t, "get -w prints the table", func() bool { wmu.Lock(); defer wmu.Unlock(); return strings.Contains(wout.String(), "Progressing") })
	setCanaryStatus(t, c, "default", "backend", v1beta1.CanaryStatus{
		Phase: v1beta1.PhaseProgressing, CanaryWeight: 40, ObservedRevision: "rev2", LastPromotedRevision: "rev1",
		LastTransitionTime: ptr.To(metav1.NewTime(time.Date(2026, 1, 2, 3, 5, 5, 0, time.UTC))),
	})
	kubeEventually(t, "get -w prints the change", func() bool {
		wmu.Lock()
		defer wmu.Unlock()
		return regexp.MustCompile(`(?m)^default +backend +Progressing +40 +0 +2026-01-02T03:05:05Z$`).MatchString(wout.String())
	})
	stopWatch()
	if code := <-watchDone; code != 0 {
		t.Errorf("get -w ended with exit %d", code)
	}

	// status --wait follows the watch to the verdict.
	wait := runAsync(sluice, "status", "backend", "--wait", "--timeout", "2m")
	setCanaryStatus(t, c, "default", "backend", v1beta1.CanaryStatus{
		Phase: v1beta1.PhaseSucceeded, ObservedRevision: "rev2", LastPromotedRevision: "rev2", Message: "promoted",
	})
	if r := wait(); r.code != exitPromoted || !strings.Contains(r.out, "canary default/backend: revision rev2 promoted") {
		t.Errorf("status --wait of a promoted canary: exit %d\n%s%s", r.code, r.out, r.errOut)
	}
	setCanaryStatus(t, c, "shop", "api", v1beta1.CanaryStatus{Phase: v1beta1.PhaseProgressing, ObservedRevision: "b", LastPromotedRevision: "a"})
	wait = runAsync(sluice, "status", "shop/api", "--wait", "--timeout", "2m")
	setCanaryStatus(t, c, "shop", "api", v1beta1.CanaryStatus{
		Phase: v1beta1.PhaseFailed, ObservedRevision: "b", LastPromotedRevision: "a", Message: "request-success-rate 80% < min 99%",
	})
	if r := wait(); r.code != exitFailed || !strings.Contains(r.out, "canary shop/api: revision b failed: request-success-rate 80% < min 99%") {
		t.Errorf("status --wait of a failed canary: exit %d\n%s%s", r.code, r.out, r.errOut)
	}
	setCanaryStatus(t, c, "shop", "api", v1beta1.CanaryStatus{Phase: v1beta1.PhaseProgressing, ObservedRevision: "c", LastPromotedRevision: "a"})
	if r := sluice("status", "api", "-n", "shop", "--wait", "--timeout", "1s"); r.code != exitTimeout || !strings.Contains(r.errOut, "timed out after 1s") {
		t.Errorf("status --wait --timeout 1s of a progressing canary: exit %d\n%s%s", r.code, r.out, r.errOut)
	}

	// promote sets the two annotations.
	before := time.Now().UTC()
	r = sluice("promote", "api", "-n", "shop")
	if r.code != 0 || !strings.HasPrefix(r.out, "canary shop/api: promote requested (sluice.dev/action-at=") {
		t.Errorf("promote: exit %d, %q %q", r.code, r.out, r.errOut)
	}
	var cn v1beta1.Canary
	if err := c.Get(ctx, types.NamespacedName{Namespace: "shop", Name: "api"}, &cn); err != nil {
		t.Fatal(err)
	}
	at, err := time.Parse(time.RFC3339Nano, cn.Annotations[kcanary.ActionAtAnnotation])
	if cn.Annotations[kcanary.ActionAnnotation] != "promote" || err != nil || at.Before(before.Add(-time.Second)) {
		t.Errorf("annotations after promote: %v (%v)", cn.Annotations, err)
	}
	if r := sluice("pause", "shop/api"); r.code != 0 {
		t.Errorf("pause: exit %d, %q", r.code, r.errOut)
	}
	if err := c.Get(ctx, types.NamespacedName{Namespace: "shop", Name: "api"}, &cn); err != nil || cn.Annotations[kcanary.ActionAnnotation] != "pause" {
		t.Errorf("annotations after pause: %v (%v)", cn.Annotations, err)
	}

	// An unknown canary is bad input, exit 3.
	for _, args := range [][]string{
		{"status", "nope"},
		{"status", "nope", "--wait"},
		{"promote", "nope", "-n", "shop"},
		{"abort", "shop/nope"},
	} {
		r := sluice(args...)
		ns := "default"
		if strings.Contains(strings.Join(args, " "), "shop") {
			ns = "shop"
		}
		if r.code != exitUnreachable || !strings.Contains(r.errOut, "no canary "+ns+"/nope (see `sluice get canaries -n "+ns+"`)") {
			t.Errorf("sluice %v: exit %d, stderr %q", args, r.code, r.errOut)
		}
	}
}

// lockedWriter is an io.Writer safe for a writer and a reader goroutine.
type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// kubeEventually polls cond until it holds, failing the test after a generous
// deadline.
func kubeEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testCA is a certificate authority for the tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

// newCert makes a certificate valid from notBefore to notAfter, signed by
// parent (self-signed when nil).
func newCert(t *testing.T, cn string, notBefore, notAfter time.Time, parent *testCA, isCA bool, hosts ...string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true, IsCA: isCA,
	}
	if !isCA {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (c *testCA) keyPEM(t *testing.T) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(c.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

func testKubeIdentity(t *testing.T, c client.Client, sluice func(...string) cliRun) {
	ctx := t.Context()
	now := time.Now()
	year := 365 * 24 * time.Hour
	root := newCert(t, "root.sluice.test", now.Add(-time.Hour), now.Add(year), nil, true)
	soon := newCert(t, "old-root.sluice.test", now.Add(-year), now.Add(30*24*time.Hour), nil, true)
	issuer := newCert(t, "identity.sluice.test", now.Add(-48*time.Hour), now.Add(-24*time.Hour), root, true)
	if err := c.Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: controlPlaneNamespace, Name: trustRootsConfigMap},
		Data:       map[string]string{trustRootsKey: string(root.pem) + string(soon.pem)},
	}); err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: controlPlaneNamespace, Name: issuerSecret},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: issuer.pem, corev1.TLSPrivateKeyKey: issuer.keyPEM(t)},
	}
	if err := c.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	r := sluice("check")
	if r.code != 1 {
		t.Errorf("exit %d, want 1", r.code)
	}
	ymd := func(c *testCA) string { return c.cert.NotAfter.UTC().Format(time.RFC3339) }
	for _, want := range []string{
		"identity\n--------\n✓ trust anchors are readable (2 certificates)\n✓ issuer credentials are readable (secret sluice/sluice-identity-issuer)\n",
		"✓ issuer certificate chains to a trust anchor\n",
		`✓ trust anchor "root.sluice.test" is valid (NotAfter ` + ymd(root) + ")\n",
		`‼ trust anchor "old-root.sluice.test" is valid (NotAfter ` + ymd(soon) + ")\n    expires in 29 days: rotate it before then\n",
		`× issuer certificate "identity.sluice.test" is valid (NotAfter ` + ymd(issuer) + ")\n    expired 23h59m",
	} {
		if !strings.Contains(r.out, want) && !strings.Contains(r.out, strings.Replace(want, "29 days", "30 days", 1)) &&
			!strings.Contains(r.out, strings.Replace(want, "23h59m", "24h0m", 1)) {
			t.Errorf("output lacks %q:\n%s", want, r.out)
		}
	}

	// An issuer from another root does not chain; a key of another
	// certificate does not parse as a pair.
	stranger := newCert(t, "stranger", now.Add(-time.Hour), now.Add(year), nil, true)
	other := newCert(t, "identity.other", now.Add(-time.Hour), now.Add(year), stranger, true)
	secret.Data = map[string][]byte{corev1.TLSCertKey: other.pem, corev1.TLSPrivateKeyKey: other.keyPEM(t)}
	if err := c.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	r = sluice("check")
	if want := `× issuer certificate chains to a trust anchor
    "identity.other" (issued by "CN=stranger") is signed by none of the 2 trust anchors`; !strings.Contains(r.out, want) {
		t.Errorf("output lacks %q:\n%s", want, r.out)
	}
	if !strings.Contains(r.out, `✓ issuer certificate "identity.other" is valid`) {
		t.Errorf("a valid issuer is not ✓:\n%s", r.out)
	}
	secret.Data[corev1.TLSPrivateKeyKey] = root.keyPEM(t)
	if err := c.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	r = sluice("check")
	if want := "× issuer credentials are readable (secret sluice/sluice-identity-issuer)\n    secret sluice/sluice-identity-issuer: tls.crt and tls.key: tls: private key does not match public key"; !strings.Contains(r.out, want) {
		t.Errorf("output lacks %q:\n%s", want, r.out)
	}
}

// testKubeWebhook serves the injector on 127.0.0.1 and registers it as the
// webhook: the check's dry-run pod comes back injected only when the API
// server calls it.
func testKubeWebhook(t *testing.T, c client.Client, sluice func(...string) cliRun) {
	ctx := t.Context()
	now := time.Now()
	ca := newCert(t, "injector-ca", now.Add(-time.Hour), now.Add(24*time.Hour), nil, true)
	serving := newCert(t, "sluice-injector.sluice.svc", now.Add(-time.Hour), now.Add(24*time.Hour), ca, false, "sluice-injector.sluice.svc", "127.0.0.1")
	if err := c.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: controlPlaneNamespace, Name: injectorTLSSecret},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: serving.pem, corev1.TLSPrivateKeyKey: serving.keyPEM(t), "ca.crt": ca.pem},
	}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() {
		h := &injector.Handler{Config: injector.DefaultConfig()}
		served <- h.ServeListener(sctx, ln, serving.pem, serving.keyPEM(t))
	}()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("injector: %v", err)
		}
	})

	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: injectorWebhook},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: "inject.sluice.dev",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				URL:      ptr.To("https://" + ln.Addr().String() + "/inject"),
				CABundle: ca.pem,
			},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
			FailurePolicy:           ptr.To(admissionregistrationv1.Ignore),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
		}},
	}
	if err := c.Create(ctx, mwc); err != nil {
		t.Fatal(err)
	}
	r := sluice("check")
	for _, want := range []string{
		"webhook\n-------\n✓ webhook configuration exists (mutatingwebhookconfiguration sluice-injector)\n" +
			"✓ webhook caBundle verifies the injector's certificate (secret sluice/sluice-injector-tls)\n" +
			"✓ the API server calls the injector (dry-run pod in namespace default)\n",
	} {
		if !strings.Contains(r.out, want) {
			t.Errorf("output lacks %q:\n%s", want, r.out)
		}
	}

	// A caBundle of another CA: × for the certificate; the API server
	// cannot call the webhook either (failurePolicy Ignore: no proxy).
	other := newCert(t, "other-ca", now.Add(-time.Hour), now.Add(24*time.Hour), nil, true)
	mwc.Webhooks[0].ClientConfig.CABundle = other.pem
	if err := c.Update(ctx, mwc); err != nil {
		t.Fatal(err)
	}
	kubeEventually(t, "the API server uses the new caBundle", func() bool {
		r = sluice("check")
		return strings.Contains(r.out, "× the API server calls the injector")
	})
	for _, want := range []string{
		"× webhook caBundle verifies the injector's certificate (secret sluice/sluice-injector-tls)\n    webhook inject.sluice.dev: the caBundle does not verify \"sluice-injector.sluice.svc\": x509: certificate signed by unknown authority",
		"× the API server calls the injector (dry-run pod in namespace default)\n    the dry-run pod came back without sluice-proxy",
	} {
		if !strings.Contains(r.out, want) {
			t.Errorf("output lacks %q:\n%s", want, r.out)
		}
	}
}

func testKubeProxies(t *testing.T, c client.Client, sluice func(...string) cliRun) {
	ctx := t.Context()
	pod := func(ns, name, image string, ready bool) {
		t.Helper()
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.PodSpec{
				InitContainers: []corev1.Container{{Name: injector.ProxyContainerName, Image: image, RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways)}},
				Containers:     []corev1.Container{{Name: "app", Image: "example.com/app:1"}},
			},
		}
		if err := c.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: injector.ProxyContainerName, Image: image, Ready: ready}}
		if err := c.Status().Update(ctx, p); err != nil {
			t.Fatalf("writing the status of pod %s/%s: %v", ns, name, err)
		}
	}
	if err := c.Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "plain"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}}},
	}); err != nil {
		t.Fatal(err)
	}
	pod("shop", "web-1", "ghcr.io/sluicehq/sluice-proxy:"+version, true)
	pod("shop", "web-2", "ghcr.io/sluicehq/sluice-proxy:v0.0.9", true)
	pod("default", "api-1", "ghcr.io/sluicehq/sluice-proxy:"+version, false)

	r := sluice("check", "--proxy", "-n", "shop")
	want := "data-plane\n----------\n✓ data plane proxies are ready (2/2 in namespace shop)\n" +
		"‼ data plane proxies run this CLI's version (" + version + ")\n    pod shop/web-2 runs ghcr.io/sluicehq/sluice-proxy:v0.0.9\n"
	if !strings.Contains(r.out, want) {
		t.Errorf("check --proxy -n shop: output lacks %q:\n%s", want, r.out)
	}
	r = sluice("check", "--proxy")
	want = "× data plane proxies are ready (2/3 in every namespace)\n    pod default/api-1: sluice-proxy is not ready (see kubectl -n default logs api-1 -c sluice-proxy)\n"
	if r.code != 1 || !strings.Contains(r.out, want) {
		t.Errorf("check --proxy: exit %d, output lacks %q:\n%s", r.code, want, r.out)
	}
	r = sluice("check", "--proxy", "-n", "kube-system")
	want = "‼ data plane proxies are ready (0/0 in namespace kube-system)\n    no pod runs sluice-proxy in namespace kube-system"
	if !strings.Contains(r.out, want) {
		t.Errorf("check --proxy -n kube-system: output lacks %q:\n%s", want, r.out)
	}
}

// testKubeStat checks what `sluice stat` reads from the API server: the
// Deployments and their pods (the telemetry behind the service proxy is
// not reachable from a test API server, which proxies to no loopback
// address).
func testKubeStat(t *testing.T, c client.Client, sluice func(...string) cliRun) {
	ctx := t.Context()
	if r := sluice("stat", "-n", "shop"); r.code != 1 || !strings.Contains(r.errOut, "has no service sluice/sluice-telemetry to ask for metrics: "+hintInstall) {
		t.Errorf("stat without telemetry: exit %d, %q", r.code, r.errOut)
	}

	labels := map[string]string{"app": "web"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/web:1"}}},
			},
		},
	}
	if err := c.Create(ctx, dep); err != nil {
		t.Fatal(err)
	}
	owner := func(kind, name string, uid types.UID) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: name, UID: uid, Controller: ptr.To(true)}}
	}
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-7d9f", OwnerReferences: owner("Deployment", "web", dep.UID)},
		Spec:       appsv1.ReplicaSetSpec{Selector: dep.Spec.Selector, Template: dep.Spec.Template},
	}
	if err := c.Create(ctx, rs); err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		name              string
		ready, proxyReady bool
		waiting           string
	}{
		{"web-7d9f-a", true, true, ""},
		{"web-7d9f-b", false, false, "CrashLoopBackOff"},
	} {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: p.name, Labels: labels, OwnerReferences: owner("ReplicaSet", rs.Name, rs.UID)},
			Spec: corev1.PodSpec{
				InitContainers: []corev1.Container{{Name: injector.ProxyContainerName, Image: "ghcr.io/sluicehq/sluice-proxy:dev", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways)}},
				Containers:     []corev1.Container{{Name: "app", Image: "example.com/web:1"}},
			},
		}
		if err := c.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		ready := corev1.ConditionFalse
		if p.ready {
			ready = corev1.ConditionTrue
		}
		app := corev1.ContainerStatus{Name: "app", Ready: p.ready, RestartCount: 3}
		if p.waiting != "" {
			app.State.Waiting = &corev1.ContainerStateWaiting{Reason: p.waiting}
		}
		pod.Status = corev1.PodStatus{
			Phase:                 corev1.PodRunning,
			Conditions:            []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}},
			InitContainerStatuses: []corev1.ContainerStatus{{Name: injector.ProxyContainerName, Ready: p.proxyReady}},
			ContainerStatuses:     []corev1.ContainerStatus{app},
		}
		if err := c.Status().Update(ctx, pod); err != nil {
			t.Fatal(err)
		}
	}
	st, err := kubeWorkloads(ctx, c, "shop")
	if err != nil {
		t.Fatal(err)
	}
	rows := statRows(st, nil, "shop", "")
	if len(rows) != 1 || rows[0].Name != "web" || rows[0].Meshed != "1/2" || len(rows[0].Problems) != 1 {
		t.Fatalf("stat rows %+v, want web 1/2 meshed with one problem", rows)
	}
	if p := rows[0].Problems[0]; p.Pod != "web-7d9f-b" || p.Problem != "container app: CrashLoopBackOff" || p.Restarts != 3 {
		t.Errorf("problem %+v", p)
	}
}

// testTargetSelection checks which of a local sluice up and the cluster the
// commands act on.
func testTargetSelection(t *testing.T, kubeconfig string) {
	t.Chdir(t.TempDir()) // no .sluice here
	t.Setenv("SLUICE_STATE_DIR", "")
	t.Setenv("KUBERNETES_SERVICE_HOST", "") // never in-cluster
	run1 := func(args ...string) cliRun {
		var out, errOut bytes.Buffer
		code := run(args, &out, &errOut)
		return cliRun{code, out.String(), errOut.String()}
	}

	// No sluice up runs: $KUBECONFIG's cluster.
	t.Setenv("KUBECONFIG", kubeconfig)
	if r := run1("get", "canaries", "-A"); r.code != 0 || !strings.Contains(r.out, "backend") {
		t.Errorf("with $KUBECONFIG: exit %d, %q %q", r.code, r.out, r.errOut)
	}
	// --state-dir names a sluice up: never the cluster.
	if r := run1("get", "canaries", "--state-dir", t.TempDir()); r.code != exitUnreachable || !strings.Contains(r.errOut, "no sluice up is running") {
		t.Errorf("with --state-dir: exit %d, %q %q", r.code, r.out, r.errOut)
	}
	// A context the kubeconfig does not have.
	if r := run1("get", "canaries", "--context", "nope"); r.code != exitUnreachable || !strings.Contains(r.errOut, `context "nope" does not exist`) {
		t.Errorf("with --context nope: exit %d, %q %q", r.code, r.out, r.errOut)
	}
	if r := run1("check", "--context", "nope"); r.code != 1 || !strings.Contains(r.out, "× can initialize the client\n    loading the Kubernetes configuration") {
		t.Errorf("check --context nope: exit %d, %q %q", r.code, r.out, r.errOut)
	}
	// Neither: both are named.
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "missing"))
	if r := run1("status", "backend"); r.code != exitUnreachable ||
		!strings.Contains(r.errOut, "no sluice up is running with state directory .sluice") ||
		!strings.Contains(r.errOut, "and no Kubernetes cluster is configured") {
		t.Errorf("with neither: exit %d, %q %q", r.code, r.out, r.errOut)
	}
}

// TestKubernetesCLIWithoutCRDs checks what the CLI says on a cluster
// without Sluice's CRDs.
func TestKubernetesCLIWithoutCRDs(t *testing.T) {
	cfg, _ := envtest.Start(t, envtest.WithoutCRDs())
	sluice := kubeCLI(envtest.Kubeconfig(t, cfg))
	r := sluice("check")
	for _, want := range []string{
		"× Sluice CRDs are installed (0/7)\n    none of its 7 CRDs is installed\n    " + hintInstallCRDs + "\n× Gateway API",
		"× Gateway API (experimental v1.6.3) CRDs are installed (0/13)\n    none of its 13 CRDs is installed\n",
	} {
		if r.code != 1 || !strings.Contains(r.out, want) {
			t.Errorf("check: exit %d, output lacks %q:\n%s", r.code, want, r.out)
		}
	}
	for _, args := range [][]string{{"get", "canaries"}, {"status", "backend"}} {
		r := sluice(args...)
		if r.code != exitUnreachable || !strings.Contains(r.errOut, "has no Sluice CRDs: "+hintInstallCRDs) {
			t.Errorf("sluice %v: exit %d, %q", args, r.code, r.errOut)
		}
	}
}
