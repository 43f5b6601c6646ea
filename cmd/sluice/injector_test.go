package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/sluicehq/sluice/mesh/identity"
	"github.com/sluicehq/sluice/mesh/injector"
	"github.com/sluicehq/sluice/test/envtest"
)

// writeServingCert writes a serving certificate for 127.0.0.1 (and the
// injector's Service name), from a new CA, and its key into dir, returning
// their paths and a pool of the CA.
func writeServingCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	now := time.Now()
	ca, err := identity.NewRootCA("test webhook CA", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := identity.NewServingCertificate(ca, []string{"sluice-injector.sluice.svc", "127.0.0.1"}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, kp.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, kp.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM)
	return certFile, keyFile, pool
}

// TestInjectorFlagErrors: bad flags fail before anything starts, with a
// message naming the flag and what is wrong with its value.
func TestInjectorFlagErrors(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, _ := writeServingCert(t, dir)
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A kubeconfig of an API server that is never reached: every case
	// fails before asking it anything.
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.crt")
	base := []string{"injector", "--kubeconfig", kubeconfig, "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"missing certificate", []string{"--tls-cert-file", missing, "--tls-key-file", keyFile},
			"--tls-cert-file " + missing + ": no such file or directory"},
		{"missing key", []string{"--tls-cert-file", certFile, "--tls-key-file", missing},
			"--tls-key-file " + missing + ": no such file or directory"},
		{"default paths absent", nil,
			"--tls-cert-file /var/run/sluice/webhook/tls.crt: no such file or directory"},
		{"directory", []string{"--tls-cert-file", dir, "--tls-key-file", keyFile},
			"--tls-cert-file " + dir + ": is a directory"},
		{"empty certificate flag", []string{"--tls-cert-file", "", "--tls-key-file", keyFile},
			"--tls-cert-file is required"},
		{"not a certificate", []string{"--tls-cert-file", garbage, "--tls-key-file", keyFile},
			"serving certificate " + garbage + " with key " + keyFile},
		{"pull policy", []string{"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--image-pull-policy", "Sometimes"},
			`--image-pull-policy "Sometimes": want Always, IfNotPresent or Never`},
		{"log level", []string{"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--log-level", "loud"},
			`--log-level "loud": want debug, info, warn or error`},
		{"proxy log level", []string{"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--proxy-log-level", "trace"},
			`--proxy-log-level "trace": want debug, info, warn or error`},
		{"inbound policy", []string{"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--default-inbound-policy", "allow"},
			`--default-inbound-policy "allow": want one of all-unauthenticated, `},
		{"empty namespace", []string{"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--controller-namespace", ""},
			"--controller-namespace must not be empty"},
		{"argument", []string{"--tls-cert-file", certFile, "--tls-key-file", keyFile, "extra"},
			`unknown command "extra"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := run(append(base, tc.args...), io.Discard, &stderr)
			if code == 0 {
				t.Fatal("exit code 0")
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr %q does not say %q", stderr.String(), tc.want)
			}
		})
	}
}

// TestInjectorCommand runs `sluice injector` against a real API server: it
// serves /healthz, /readyz and /metrics on --admin-addr, the webhook on
// --addr with the certificate of the files, injects a pod of an annotated
// namespace, and stops when its context ends.
func TestInjectorCommand(t *testing.T) {
	if cmd, _, err := newRootCmd(io.Discard, io.Discard).Find([]string{"injector"}); err != nil || cmd.Name() != "injector" {
		t.Fatalf("sluice has no injector command (%v)", err)
	}
	cfg, c := envtest.Start(t, envtest.WithoutCRDs())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute) // a failure guard
	defer cancel()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: "shop", Annotations: map[string]string{injector.AnnotationInject: injector.InjectEnabled},
	}}); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, pool := writeServingCert(t, t.TempDir())

	type addrs struct{ webhook, admin net.Addr }
	started := make(chan addrs, 1)
	cmd := newInjectorCmdWith(func(webhook, admin net.Addr) { started <- addrs{webhook, admin} })
	var logs bytes.Buffer
	cmd.SetErr(&logs)
	cmd.SetOut(io.Discard)
	cmd.SetArgs([]string{
		"--kubeconfig", envtest.Kubeconfig(t, cfg),
		"--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
		"--tls-cert-file", certFile, "--tls-key-file", keyFile,
		"--proxy-image", "registry.example/sluice-proxy", "--proxy-version", "v1.2.3",
		"--image-pull-policy", "Always", "--cluster-domain", "corp.example",
		"--proxy-log-level", "debug", "--default-inbound-policy", "all-authenticated",
	})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(runCtx) }()
	var a addrs
	select {
	case a = <-started:
	case err := <-done:
		t.Fatalf("sluice injector stopped: %v\n%s", err, logs.String())
	case <-ctx.Done():
		t.Fatal("sluice injector did not start listening")
	}
	stopped := false
	defer func() {
		if !stopped {
			stop()
			<-done
		}
	}()

	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	get := func(url string) (int, string) {
		resp, err := hc.Get(url)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	admin := "http://" + a.admin.String()
	if code, body := get(admin + "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d %s", code, body)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		code, body := get(admin + "/readyz")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz: %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// An AdmissionReview, as the API server sends it, over the webhook's TLS.
	pod := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
		Spec: corev1.PodSpec{ServiceAccountName: "web", Containers: []corev1.Container{{
			Name: "web", Image: "web:1", Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
		}}},
	}
	raw, _ := json.Marshal(pod)
	review, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: "1", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: "shop", Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw},
		},
	})
	resp, err := hc.Post("https://"+a.webhook.String()+injector.WebhookPath, "application/json", bytes.NewReader(review))
	if err != nil {
		t.Fatal(err)
	}
	var out admissionv1.AdmissionReview
	err = json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if err != nil || out.Response == nil {
		t.Fatalf("webhook answer: %v %+v", err, out)
	}
	patch := string(out.Response.Patch)
	for _, want := range []string{
		`"image":"registry.example/sluice-proxy:v1.2.3"`,
		`"imagePullPolicy":"Always"`,
		`"restartPolicy":"Always"`, // native sidecar: the API server is 1.29 or later
		`sluice-identity.sluice.svc.corp.example:8080`,
		`\"logLevel\": \"debug\"`,
		`\"defaultPolicy\": \"all-authenticated\"`,
	} {
		if !strings.Contains(patch, want) {
			t.Errorf("the patch has no %s:\n%s", want, patch)
		}
	}

	code, metrics := get(admin + "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{"sluice_injector_pods_admitted_total 1", "sluice_injector_pods_injected_total 1", "sluice_injector_pods_skipped_total 0", "go_goroutines"} {
		if !strings.Contains(metrics, want+"\n") && !strings.Contains(metrics, want+" ") {
			t.Errorf("/metrics has no %q", want)
		}
	}

	stop()
	stopped = true
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("sluice injector returned %v after cancellation", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("sluice injector did not stop after cancellation")
	}
	if !strings.Contains(logs.String(), `"msg":"sidecar injected"`) {
		t.Errorf("no JSON log line for the injection:\n%s", logs.String())
	}
}
