package injector

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/sluicehq/sluice/test/envtest"
)

// waitTimeout bounds every wait for something to happen; it is a failure
// guard, not a timing assertion.
const waitTimeout = 60 * time.Second

// eventually polls cond until it returns nil, failing the test with its
// last error after waitTimeout.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cluster is a real API server with `sluice injector` registered as its
// mutating webhook.
type cluster struct {
	kube    kubernetes.Interface
	metrics *Metrics
}

// TestServerOnAPIServer runs the injector's Server in-process against a
// real kube-apiserver (envtest), registered with a
// MutatingWebhookConfiguration like the one `sluice install` deploys, but
// calling https://127.0.0.1:PORT/inject.
func TestServerOnAPIServer(t *testing.T) {
	cfg, _ := envtest.Start(t, envtest.WithoutCRDs())
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c := &cluster{kube: kube, metrics: NewMetrics(prometheus.NewRegistry())}

	// The control plane's namespace and its trust anchors.
	c.namespace(t, "sluice", nil)
	if _, err := kube.CoreV1().ConfigMaps("sluice").Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: TrustRootsConfigMap, Namespace: "sluice"},
		Data:       map[string]string{TrustRootsKey: "roots-1"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	certPEM, keyPEM, _ := selfSigned(t)
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	for f, data := range map[string][]byte{certFile: certPEM, keyFile: keyPEM} {
		if err := os.WriteFile(f, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := NewServer(ServerOptions{
		Config:           Config{ControlPlaneNamespace: "sluice", ProxyVersion: "v9.9.9"},
		Client:           kube,
		CertFile:         certFile,
		KeyFile:          keyFile,
		CertPollInterval: 50 * time.Millisecond,
		Metrics:          c.metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !srv.Config().NativeSidecars {
		t.Errorf("NativeSidecars is false on an API server of version %s", mustVersion(t, kube))
	}
	if err := srv.Ready(); err == nil {
		t.Error("Ready before Serve: want an error")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(runCtx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(waitTimeout):
			t.Error("Serve did not return after cancellation")
		}
	})
	eventually(t, "the server becomes ready", srv.Ready)

	// The webhook, as WebhookConfiguration makes it, pointed at the test's
	// server; failing closed, so that a webhook the API server cannot call
	// fails the test rather than admitting pods unmodified.
	wh := WebhookConfiguration(certPEM, "sluice")
	wh.Webhooks[0].ClientConfig = admissionregistrationv1.WebhookClientConfig{
		URL:      ptr.To("https://" + ln.Addr().String() + WebhookPath),
		CABundle: certPEM,
	}
	wh.Webhooks[0].FailurePolicy = ptr.To(admissionregistrationv1.Fail)
	if _, err := kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, wh, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.namespace(t, "meshed", map[string]string{AnnotationInject: InjectEnabled})
	// The API server calls a new webhook once its own informer saw it: wait
	// for a dry-run creation (no side effects) to come back injected.
	eventually(t, "the API server calls the webhook", func() error {
		p, err := kube.CoreV1().Pods("meshed").Create(ctx, appPod("probe", nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(p.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == ProxyContainerName }) {
			return fmt.Errorf("the dry-run pod has no %s", ProxyContainerName)
		}
		return nil
	})

	t.Run("Injection", c.testInjection)
	t.Run("TrustRoots", c.testTrustRoots)
	t.Run("CertificateReload", func(t *testing.T) {
		cert2, key2, _ := selfSigned(t)
		for f, data := range map[string][]byte{keyFile: key2, certFile: cert2} {
			if err := os.WriteFile(f, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		want := certDER(t, cert2, key2)
		eventually(t, "a new handshake sees the new certificate", func() error {
			if !bytes.Equal(handshakeCert(t, ln.Addr().String()), want) {
				return errors.New("still the previous certificate")
			}
			return nil
		})
		if err := srv.Ready(); err != nil {
			t.Errorf("Ready after the reload: %v", err)
		}
	})
}

func mustVersion(t *testing.T, kube kubernetes.Interface) string {
	t.Helper()
	v, err := kube.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	return v.GitVersion
}

// namespace creates a namespace with annotations, and its default
// ServiceAccount (no controller manager makes it here).
func (c *cluster) namespace(t *testing.T, name string, annotations map[string]string) {
	t.Helper()
	ctx := context.Background()
	if _, err := c.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.kube.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: name},
	}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func appPod(name string, annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations},
		// The ServiceAccount admission plugin, which sets this in a real
		// cluster before webhooks run, is off in envtest.
		Spec: corev1.PodSpec{ServiceAccountName: "default", Containers: []corev1.Container{{
			Name: "app", Image: "ghcr.io/sluicehq/demo:1.0",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "grpc", ContainerPort: 9090}},
		}}},
	}
}

// createPod creates a pod and returns it as the API server stored it.
func (c *cluster) createPod(t *testing.T, ns string, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	got, err := c.kube.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating pod %s/%s: %v", ns, pod.Name, err)
	}
	stored, err := c.kube.CoreV1().Pods(ns).Get(context.Background(), got.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return stored
}

func (c *cluster) testInjection(t *testing.T) {
	c.namespace(t, "plain", nil)
	tests := []struct {
		name, ns    string
		annotations map[string]string
		injected    bool
	}{
		{"enabled namespace", "meshed", nil, true},
		{"disabled pod in an enabled namespace", "meshed", map[string]string{AnnotationInject: InjectDisabled}, false},
		{"unannotated namespace", "plain", nil, false},
		{"enabled pod in an unannotated namespace", "plain", map[string]string{AnnotationInject: InjectEnabled}, true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.ToFloat64(c.metrics.Injected) + testutil.ToFloat64(c.metrics.Skipped)
			pod := appPod(fmt.Sprintf("pod-%d", i), tc.annotations)
			got := c.createPod(t, tc.ns, pod.DeepCopy())
			if after := testutil.ToFloat64(c.metrics.Injected) + testutil.ToFloat64(c.metrics.Skipped); after != before+1 {
				t.Errorf("injected+skipped counted %v, then %v: want one more", before, after)
			}
			if !tc.injected {
				if len(got.Spec.InitContainers) != 0 || len(got.Spec.Containers) != 1 || len(got.Spec.Volumes) != 0 ||
					got.Annotations[AnnotationCreatedBy] != "" || got.Labels[LabelControlPlaneNamespace] != "" {
					t.Errorf("the pod was changed: init containers %v, containers %d, volumes %v, annotations %v, labels %v",
						names(got.Spec.InitContainers), len(got.Spec.Containers), got.Spec.Volumes, got.Annotations, got.Labels)
				}
				return
			}
			if n := names(got.Spec.InitContainers); !slices.Equal(n, []string{InitContainerName, ProxyContainerName}) {
				t.Fatalf("init containers = %v, want %s then %s", n, InitContainerName, ProxyContainerName)
			}
			proxy := got.Spec.InitContainers[1]
			if proxy.RestartPolicy == nil || *proxy.RestartPolicy != corev1.ContainerRestartPolicyAlways {
				t.Errorf("the proxy's restartPolicy = %v, want Always (a native sidecar)", proxy.RestartPolicy)
			}
			if proxy.Image != "ghcr.io/sluicehq/sluice-proxy:v9.9.9" {
				t.Errorf("proxy image %q", proxy.Image)
			}
			if n := names(got.Spec.Containers); !slices.Equal(n, []string{"app"}) {
				t.Errorf("containers = %v, want the application's only", n)
			}
			vols := map[string]corev1.Volume{}
			for _, v := range got.Spec.Volumes {
				vols[v.Name] = v
			}
			if v, ok := vols[TokenVolumeName]; !ok || v.Projected == nil || v.Projected.Sources[0].ServiceAccountToken.Audience != TokenAudience {
				t.Errorf("token volume = %+v", v)
			}
			if v, ok := vols[TrustRootsVolumeName]; !ok || v.ConfigMap == nil || v.ConfigMap.Name != TrustRootsConfigMap {
				t.Errorf("trust roots volume = %+v", v)
			}
			if got.Labels[LabelControlPlaneNamespace] != "sluice" || got.Annotations[AnnotationInjectedVersion] != "v9.9.9" {
				t.Errorf("labels %v, annotations %v", got.Labels, got.Annotations)
			}
			// The API server applied the patch to the pod it held: the
			// application container is as it was sent.
			app := got.Spec.Containers[0]
			if len(app.Ports) != 2 || app.Ports[0].ContainerPort != 8080 || app.Ports[1].ContainerPort != 9090 || app.Image != pod.Spec.Containers[0].Image {
				t.Errorf("application container = %+v", app)
			}
		})
	}
}

func names(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// trustRoots returns namespace ns's copy of the trust roots.
func (c *cluster) trustRoots(ns string) (*corev1.ConfigMap, error) {
	return c.kube.CoreV1().ConfigMaps(ns).Get(context.Background(), TrustRootsConfigMap, metav1.GetOptions{})
}

// wantRoots waits until ns's copy holds roots, labelled as Sluice's.
func (c *cluster) wantRoots(t *testing.T, ns, roots string) {
	t.Helper()
	eventually(t, fmt.Sprintf("the trust roots %q in namespace %s", roots, ns), func() error {
		cm, err := c.trustRoots(ns)
		if err != nil {
			return err
		}
		if cm.Data[TrustRootsKey] != roots {
			return fmt.Errorf("%s = %q", TrustRootsKey, cm.Data[TrustRootsKey])
		}
		if cm.Labels[LabelManagedBy] != ManagedBySluice {
			return fmt.Errorf("labels %v", cm.Labels)
		}
		return nil
	})
}

// annotate annotates namespace ns sluice.dev/inject=enabled.
func (c *cluster) annotate(t *testing.T, ns string) {
	t.Helper()
	patch := fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`, AnnotationInject, InjectEnabled)
	if _, err := c.kube.CoreV1().Namespaces().Patch(context.Background(), ns, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) testTrustRoots(t *testing.T) {
	ctx := context.Background()
	cms := c.kube.CoreV1().ConfigMaps

	// The annotated namespace, and the one a pod was injected in.
	c.wantRoots(t, "meshed", "roots-1")
	c.wantRoots(t, "plain", "roots-1")
	if cm, _ := c.trustRoots("meshed"); cm.Annotations[AnnotationTrustRootsSource] != "sluice/"+TrustRootsConfigMap {
		t.Errorf("annotations %v, want %s naming the source", cm.Annotations, AnnotationTrustRootsSource)
	}

	// A namespace annotated later; one whose copy has keys of its user's;
	// one whose copy another tool manages.
	c.namespace(t, "late", nil)
	c.namespace(t, "unmeshed", nil)
	c.namespace(t, "extra", map[string]string{AnnotationInject: InjectEnabled})
	c.namespace(t, "gitops", nil)
	if _, err := cms("gitops").Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: TrustRootsConfigMap, Namespace: "gitops", Labels: map[string]string{LabelManagedBy: "argocd"}},
		Data:       map[string]string{TrustRootsKey: "theirs"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.annotate(t, "gitops")
	c.wantRoots(t, "extra", "roots-1")
	extra, err := c.trustRoots("extra")
	if err != nil {
		t.Fatal(err)
	}
	extra.Data["note"] = "mine"
	if _, err := cms("extra").Update(ctx, extra, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.annotate(t, "late")
	c.wantRoots(t, "late", "roots-1")

	// The source changes: every copy follows.
	src, err := cms("sluice").Get(ctx, TrustRootsConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	src.Data[TrustRootsKey] = "roots-2"
	if _, err := cms("sluice").Update(ctx, src, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"meshed", "plain", "late", "extra"} {
		c.wantRoots(t, ns, "roots-2")
	}
	if cm, err := c.trustRoots("extra"); err != nil || cm.Data["note"] != "mine" {
		t.Errorf("the user's key in namespace extra: %v, %v", cm, err)
	}

	// A copy deleted by mistake comes back.
	if err := cms("meshed").Delete(ctx, TrustRootsConfigMap, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.wantRoots(t, "meshed", "roots-2")

	// Never copied: into the control plane's namespace (its source), into a
	// namespace nothing meshes, over another tool's copy.
	if cm, err := c.trustRoots("gitops"); err != nil || cm.Data[TrustRootsKey] != "theirs" || cm.Labels[LabelManagedBy] != "argocd" {
		t.Errorf("another tool's copy was changed: %v, %v", cm, err)
	}
	if _, err := c.trustRoots("unmeshed"); !apierrors.IsNotFound(err) {
		t.Errorf("namespace unmeshed: %v, want no trust roots", err)
	}
	if cm, err := c.trustRoots("sluice"); err != nil || cm.Labels[LabelManagedBy] != "" {
		t.Errorf("the source was changed: %v, %v", cm, err)
	}
}
