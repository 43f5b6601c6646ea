package injector

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/mesh/identity"
)

// namespaces is a fake namespace lookup.
func namespaces(nss ...*corev1.Namespace) func(context.Context, string) (*corev1.Namespace, error) {
	return func(_ context.Context, name string) (*corev1.Namespace, error) {
		for _, ns := range nss {
			if ns.Name == name {
				return ns, nil
			}
		}
		return nil, errors.New(`namespaces "` + name + `" not found`)
	}
}

// review builds the AdmissionReview the API server sends for a pod creation.
func review(t *testing.T, uid string, pod *corev1.Pod, ns string) []byte {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	r := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       types.UID("uid-" + uid),
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: ns,
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: raw},
			DryRun:    new(bool),
		},
	}
	out, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// post sends body to url and decodes the AdmissionReview answered.
func post(t *testing.T, c *http.Client, url string, body []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	resp, err := c.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %s: %s", resp.Status, data)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("%v: %s", err, data)
	}
	if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" || out.Response == nil {
		t.Fatalf("not an AdmissionReview response: %s", data)
	}
	return out.Response
}

func TestHandlerRoundTrip(t *testing.T) {
	h := &Handler{
		Config:    DefaultConfig(),
		Namespace: namespaces(namespace("shop", AnnotationInject, InjectEnabled), namespace("plain")),
	}
	srv := httptest.NewTLSServer(h)
	defer srv.Close()
	client := srv.Client()

	tests := []struct {
		name       string
		input      string
		ns         string
		clearNS    bool // the object has no namespace: it comes from the request
		annotate   map[string]string
		wantPatch  bool
		wantWarn   []string
		compareCfg bool
	}{
		{name: "deployment pod", input: "deployment.input.yaml", ns: "shop", wantPatch: true},
		{name: "namespace from the request", input: "deployment.input.yaml", ns: "shop", clearNS: true, wantPatch: true},
		{name: "job pod", input: "job.input.yaml", ns: "shop", wantPatch: true},
		{name: "udp pod", input: "udp.input.yaml", ns: "shop", wantPatch: true,
			wantWarn: []string{"sluice: container cache port 53/UDP is not proxied"}},
		{name: "annotations", input: "annotations.input.yaml", ns: "shop", wantPatch: true},
		{name: "disabled", input: "disabled.input.yaml", ns: "shop"},
		{name: "namespace not enabled", input: "deployment.input.yaml", ns: "plain"},
		{name: "invalid annotation fails open", input: "deployment.input.yaml", ns: "shop",
			annotate: map[string]string{AnnotationSkipOutboundPorts: "all"},
			wantWarn: []string{`sluice: sidecar not injected: pod annotation config.sluice.dev/skip-outbound-ports="all"`}},
		{name: "unknown namespace, pod enabled", input: "deployment.input.yaml", ns: "gone",
			annotate: map[string]string{AnnotationInject: InjectEnabled}, wantPatch: true,
			wantWarn: []string{`sluice: namespace annotations ignored, the namespace could not be read: namespaces "gone" not found`}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pod := readPod(t, tc.input)
			pod.Namespace = tc.ns
			for k, v := range tc.annotate {
				if pod.Annotations == nil {
					pod.Annotations = map[string]string{}
				}
				pod.Annotations[k] = v
			}
			sent := pod.DeepCopy()
			if tc.clearNS {
				sent.Namespace = ""
			}
			uid := string(rune('a' + i))
			resp := post(t, client, srv.URL+WebhookPath, review(t, uid, sent, tc.ns))
			if string(resp.UID) != "uid-"+uid || !resp.Allowed {
				t.Fatalf("uid %q allowed %v", resp.UID, resp.Allowed)
			}
			for _, w := range tc.wantWarn {
				if !slicesContainsPrefix(resp.Warnings, w) {
					t.Errorf("warnings %q lack %q", resp.Warnings, w)
				}
			}
			if !tc.wantPatch {
				if resp.Patch != nil || resp.PatchType != nil {
					t.Fatalf("unexpected patch %s", resp.Patch)
				}
				return
			}
			if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
				t.Fatalf("patchType = %v", resp.PatchType)
			}
			// Apply the patch as the API server does, to the object it sent.
			p, err := jsonpatch.DecodePatch(resp.Patch)
			if err != nil {
				t.Fatal(err)
			}
			sentJSON, _ := json.Marshal(sent)
			patchedJSON, err := p.Apply(sentJSON)
			if err != nil {
				t.Fatalf("applying the patch: %v\n%s", err, resp.Patch)
			}
			var got corev1.Pod
			if err := json.Unmarshal(patchedJSON, &got); err != nil {
				t.Fatal(err)
			}
			if tc.clearNS {
				if got.Namespace != "" {
					t.Error("the patch set the namespace")
				}
				got.Namespace = tc.ns
			}
			var ns *corev1.Namespace
			if tc.ns == "shop" {
				ns = namespace("shop", AnnotationInject, InjectEnabled)
			}
			want, _, err := Inject(pod, ns, h.Config)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(&got, want) {
				a, _ := yaml.Marshal(&got)
				b, _ := yaml.Marshal(want)
				t.Errorf("patched pod differs from Inject's\n--- patched\n%s\n--- Inject\n%s", a, b)
			}
		})
	}
}

func slicesContainsPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

// TestHandlerLiteralReview sends the JSON an API server sends, written out.
func TestHandlerLiteralReview(t *testing.T) {
	srv := httptest.NewTLSServer(&Handler{Config: DefaultConfig(), Namespace: namespaces(namespace("default", AnnotationInject, InjectEnabled))})
	defer srv.Close()
	const body = `{
  "kind": "AdmissionReview",
  "apiVersion": "admission.k8s.io/v1",
  "request": {
    "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
    "kind": {"group": "", "version": "v1", "kind": "Pod"},
    "resource": {"group": "", "version": "v1", "resource": "pods"},
    "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
    "requestResource": {"group": "", "version": "v1", "resource": "pods"},
    "namespace": "default",
    "operation": "CREATE",
    "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "groups": ["system:serviceaccounts"]},
    "object": {
      "apiVersion": "v1",
      "kind": "Pod",
      "metadata": {"generateName": "hello-6d4b9c8f7-", "namespace": "default",
        "labels": {"app": "hello", "pod-template-hash": "6d4b9c8f7"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "hello-6d4b9c8f7", "uid": "1", "controller": true}]},
      "spec": {"containers": [{"name": "hello", "image": "hello:1", "ports": [{"containerPort": 8080}], "futureField": {"kept": true}}],
        "serviceAccountName": "default"}
    },
    "oldObject": null,
    "dryRun": false,
    "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
  }
}`
	resp := post(t, srv.Client(), srv.URL+"/anywhere", []byte(body))
	if resp.UID != "705ab4f5-6393-11e8-b7cc-42010a800002" || !resp.Allowed || resp.PatchType == nil {
		t.Fatalf("response %+v", resp)
	}
	p, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatal(err)
	}
	// The patch applies to the object as sent, and keeps what this
	// program's types do not know.
	var req struct {
		Request struct {
			Object json.RawMessage `json:"object"`
		} `json:"request"`
	}
	if err := json.Unmarshal([]byte(body), &req); err != nil {
		t.Fatal(err)
	}
	out, err := p.Apply(req.Request.Object)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
		Spec struct {
			InitContainers []map[string]any `json:"initContainers"`
			Containers     []map[string]any `json:"containers"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if got.Metadata.Labels[LabelWorkloadPrefix+"deployment"] != "hello" {
		t.Errorf("labels = %v", got.Metadata.Labels)
	}
	if len(got.Spec.InitContainers) != 2 || got.Spec.InitContainers[0]["name"] != InitContainerName || got.Spec.InitContainers[1]["name"] != ProxyContainerName {
		t.Errorf("initContainers = %v", got.Spec.InitContainers)
	}
	if len(got.Spec.Containers) != 1 || got.Spec.Containers[0]["futureField"] == nil {
		t.Errorf("containers = %v: the unknown field was lost", got.Spec.Containers)
	}
}

func TestHandlerRejects(t *testing.T) {
	srv := httptest.NewTLSServer(&Handler{Config: DefaultConfig()})
	defer srv.Close()
	c := srv.Client()
	for _, tc := range []struct {
		name, method, ctype, body string
		want                      int
	}{
		{"GET", http.MethodGet, "", "", http.StatusMethodNotAllowed},
		{"not JSON content", http.MethodPost, "text/plain", "{}", http.StatusUnsupportedMediaType},
		{"bad JSON", http.MethodPost, "application/json", "{", http.StatusBadRequest},
		{"no request", http.MethodPost, "application/json; charset=utf-8", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, srv.URL+WebhookPath, strings.NewReader(tc.body))
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}

func TestAdmitOtherRequests(t *testing.T) {
	h := &Handler{Config: DefaultConfig(), Namespace: namespaces(namespace("shop", AnnotationInject, InjectEnabled))}
	pod, _ := json.Marshal(readPod(t, "deployment.input.yaml"))
	for _, tc := range []struct {
		name string
		req  admissionv1.AdmissionRequest
	}{
		{"update", admissionv1.AdmissionRequest{Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Operation: admissionv1.Update}},
		{"subresource", admissionv1.AdmissionRequest{Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Operation: admissionv1.Create, SubResource: "binding"}},
		{"deployment", admissionv1.AdmissionRequest{Kind: metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, Operation: admissionv1.Create}},
		{"undecodable pod", admissionv1.AdmissionRequest{Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: []byte(`{"spec":"x"}`)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.UID = "u"
			tc.req.Namespace = "shop"
			if tc.req.Object.Raw == nil {
				tc.req.Object.Raw = pod
			}
			resp := h.Admit(context.Background(), &tc.req)
			if !resp.Allowed || resp.UID != "u" || resp.Patch != nil {
				t.Errorf("response %+v", resp)
			}
		})
	}
}

// selfSigned returns a serving certificate for the injector's Service name
// and 127.0.0.1 with its key, PEM, from a new CA, and a pool of that CA.
func selfSigned(t *testing.T) (certPEM, keyPEM []byte, pool *x509.CertPool) {
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
	pool = x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM)
	return kp.CertPEM, kp.KeyPEM, pool
}

func TestServe(t *testing.T) {
	certPEM, keyPEM, pool := selfSigned(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &Handler{Config: DefaultConfig(), Namespace: namespaces(namespace("shop", AnnotationInject, InjectEnabled))}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.ServeListener(ctx, ln, certPEM, keyPEM) }()

	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	base := "https://" + ln.Addr().String()

	resp, err := client.Get(base + HealthPath)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Errorf("healthz: %s %q", resp.Status, body)
	}
	pod := readPod(t, "deployment.input.yaml")
	ar := post(t, client, base+WebhookPath, review(t, "s", pod, "shop"))
	if !ar.Allowed || ar.PatchType == nil || len(ar.Patch) == 0 {
		t.Errorf("review over the TLS server: %+v", ar)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeListener returned %v after cancellation", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ServeListener did not return after cancellation")
	}
	tr.CloseIdleConnections()
	if _, err := client.Get(base + HealthPath); err == nil {
		t.Error("the server still answers after cancellation")
	}
}

func TestServeErrors(t *testing.T) {
	h := &Handler{}
	ctx := context.Background()
	if err := h.Serve(ctx, "127.0.0.1:0", []byte("not a cert"), []byte("nor a key")); err == nil || !strings.Contains(err.Error(), "serving certificate") {
		t.Errorf("bad certificate: %v", err)
	}
	certPEM, keyPEM, _ := selfSigned(t)
	if err := h.Serve(ctx, "127.0.0.1:-1", certPEM, keyPEM); err == nil {
		t.Error("bad address: no error")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.ServeListener(ctx, ln, nil, nil); err == nil {
		t.Error("no certificate: no error")
	}
	if _, err := ln.Accept(); err == nil {
		t.Error("ServeListener left the listener open")
	}
}

func TestWebhookConfiguration(t *testing.T) {
	wc := WebhookConfiguration([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), "sluice-system")
	out, err := yaml.Marshal(wc)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "webhook_configuration.golden.yaml", out)

	wh := wc.Webhooks[0]
	nsSel, err := metav1.LabelSelectorAsSelector(wh.NamespaceSelector)
	if err != nil {
		t.Fatal(err)
	}
	objSel, err := metav1.LabelSelectorAsSelector(wh.ObjectSelector)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		ns   labels.Set
		obj  labels.Set
		want bool
	}{
		{"plain namespace", labels.Set{corev1.LabelMetadataName: "shop"}, labels.Set{"app": "web"}, true},
		{"control plane namespace", labels.Set{corev1.LabelMetadataName: "sluice-system"}, nil, false},
		{"kube-system", labels.Set{corev1.LabelMetadataName: "kube-system"}, nil, false},
		{"namespace labelled disabled", labels.Set{corev1.LabelMetadataName: "shop", AnnotationInject: InjectDisabled}, nil, false},
		{"namespace labelled enabled", labels.Set{corev1.LabelMetadataName: "shop", AnnotationInject: InjectEnabled}, nil, true},
		{"pod labelled disabled", labels.Set{corev1.LabelMetadataName: "shop"}, labels.Set{AnnotationInject: InjectDisabled}, false},
		{"control plane pod", labels.Set{corev1.LabelMetadataName: "shop"}, labels.Set{LabelControlPlaneComponent: "destination"}, false},
	} {
		if got := nsSel.Matches(tc.ns) && objSel.Matches(tc.obj); got != tc.want {
			t.Errorf("%s: webhook called %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestAdmitCountsAndPublishes: every reviewed pod is counted once as
// admitted and once by outcome, and Injected is called for injected pods
// only, never for dry runs.
func TestAdmitCountsAndPublishes(t *testing.T) {
	enabled := readPod(t, "deployment.input.yaml")
	disabled := enabled.DeepCopy()
	disabled.Annotations = map[string]string{AnnotationInject: InjectDisabled}
	invalid := enabled.DeepCopy()
	invalid.Annotations = map[string]string{AnnotationProxyLogLevel: "loud"}
	tests := []struct {
		name                               string
		pod                                *corev1.Pod
		dryRun                             bool
		injected, skipped, errored, called float64
	}{
		{"injected", enabled, false, 1, 0, 0, 1},
		{"injected in a dry run", enabled, true, 1, 0, 0, 0},
		{"skipped", disabled, false, 0, 1, 0, 0},
		{"invalid annotation", invalid, false, 0, 0, 1, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var published []string
			m := NewMetrics(prometheus.NewRegistry())
			h := &Handler{
				Config: DefaultConfig(), Namespace: namespaces(namespace("shop", AnnotationInject, InjectEnabled)),
				Metrics: m, Injected: func(ns string) { published = append(published, ns) },
			}
			raw, err := json.Marshal(tc.pod)
			if err != nil {
				t.Fatal(err)
			}
			resp := h.Admit(context.Background(), &admissionv1.AdmissionRequest{
				UID: "1", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Namespace: "shop",
				Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw}, DryRun: &tc.dryRun,
			})
			if !resp.Allowed {
				t.Error("not allowed")
			}
			got := []float64{testutil.ToFloat64(m.Admitted), testutil.ToFloat64(m.Injected), testutil.ToFloat64(m.Skipped), testutil.ToFloat64(m.Errored), float64(len(published))}
			want := []float64{1, tc.injected, tc.skipped, tc.errored, tc.called}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("admitted, injected, skipped, errored, published = %v, want %v", got, want)
			}
			if tc.called > 0 && published[0] != "shop" {
				t.Errorf("published %v, want shop", published)
			}
		})
	}
	// A nil *Metrics counts nothing, and does not panic.
	(&Handler{Config: DefaultConfig()}).Admit(context.Background(), &admissionv1.AdmissionRequest{
		Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: []byte("{")},
	})
}
