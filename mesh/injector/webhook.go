package injector

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// The webhook's names, as WebhookConfiguration writes them and `sluice
// install` must deploy them.
const (
	// WebhookConfigurationName is the MutatingWebhookConfiguration's name.
	WebhookConfigurationName = "sluice-injector"
	// WebhookName is the webhook's name inside it.
	WebhookName = "inject.sluice.dev"
	// WebhookServiceName is the Service in front of `sluice injector`, on
	// WebhookServicePort; the API server calls WebhookPath.
	WebhookServiceName = "sluice-injector"
	WebhookServicePort = 443
	WebhookPath        = "/inject"
	// HealthPath answers 200 on the webhook's server, for probes.
	HealthPath = "/healthz"
)

// maxReviewBytes bounds an AdmissionReview's body; a pod is well below
// etcd's 1.5 MiB object limit.
const maxReviewBytes = 8 << 20

// Handler is the mutating admission webhook: it answers admission/v1
// AdmissionReviews for pod creations with Inject's changes as a JSON Patch.
// It mounts on any path.
//
// It always allows the pod: when Inject fails (an invalid annotation), the
// pod is admitted unmodified and the error goes back as an admission warning
// (shown by kubectl) and into the log. The webhook configuration's
// failurePolicy Ignore does the same when the webhook cannot be reached.
type Handler struct {
	// Config is the injector's configuration.
	Config Config
	// Namespace returns a namespace by name, for its annotations (an
	// informer's lister in the injector). Nil, or an error, means the
	// pod's own annotations alone decide.
	Namespace func(ctx context.Context, name string) (*corev1.Namespace, error)
	// Log receives a line per decision; nil discards them.
	Log *slog.Logger
	// Metrics counts the pods reviewed and what was done to them; nil
	// counts nothing.
	Metrics *Metrics
	// Injected, when set, is called with the namespace of every pod the
	// sidecar is added to, except in dry runs (the injector publishes the
	// trust roots there). It must not block.
	Injected func(namespace string)
}

func (h *Handler) log() *slog.Logger {
	if h.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return h.Log
}

// ServeHTTP answers one AdmissionReview.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "an AdmissionReview is POSTed", http.StatusMethodNotAllowed)
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		http.Error(w, fmt.Sprintf("Content-Type %q: want application/json", r.Header.Get("Content-Type")), http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxReviewBytes))
	if err != nil {
		http.Error(w, fmt.Sprintf("reading the AdmissionReview: %v", err), http.StatusBadRequest)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		http.Error(w, fmt.Sprintf("decoding the AdmissionReview: %v", err), http.StatusBadRequest)
		return
	}
	if review.Request == nil {
		http.Error(w, "the AdmissionReview has no request", http.StatusBadRequest)
		return
	}
	out := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: admissionv1.SchemeGroupVersion.String(), Kind: "AdmissionReview"},
		Response: h.Admit(r.Context(), review.Request),
	}
	resp, err := json.Marshal(out)
	if err != nil {
		http.Error(w, fmt.Sprintf("encoding the AdmissionResponse: %v", err), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(resp)
}

// Admit decides one admission request. It always allows; for a pod to
// inject, the response carries the JSON Patch.
func (h *Handler) Admit(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" || req.SubResource != "" || req.Operation != admissionv1.Create {
		return resp
	}
	h.Metrics.admitted()
	log := h.log().With("namespace", req.Namespace)
	warn := func(msg string, err error) *admissionv1.AdmissionResponse {
		log.Warn(msg, "err", err)
		resp.Warnings = append(resp.Warnings, fmt.Sprintf("sluice: %s: %v", msg, err))
		return resp
	}
	failed := func(msg string, err error) *admissionv1.AdmissionResponse {
		h.Metrics.errored()
		return warn(msg, err)
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return failed("sidecar not injected, the pod could not be decoded", err)
	}
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace
	}
	var ns *corev1.Namespace
	if h.Namespace != nil {
		var err error
		if ns, err = h.Namespace(ctx, pod.Namespace); err != nil {
			ns = nil
			warn("namespace annotations ignored, the namespace could not be read", err)
		}
	}
	patched, report, err := Inject(&pod, ns, h.Config)
	log = log.With("workload", report.Workload)
	if err != nil {
		return failed("sidecar not injected", err)
	}
	if !report.Injected {
		h.Metrics.skipped()
		log.Debug("sidecar not injected", "reason", report.Skipped)
		return resp
	}
	ops, err := CreatePatch(&pod, patched)
	if err == nil {
		resp.Patch, err = json.Marshal(ops)
	}
	if err != nil {
		return failed("sidecar not injected", err)
	}
	h.Metrics.injected()
	dryRun := ptr.Deref(req.DryRun, false)
	if h.Injected != nil && !dryRun {
		h.Injected(pod.Namespace)
	}
	resp.PatchType = ptr.To(admissionv1.PatchTypeJSONPatch)
	for _, w := range report.Warnings {
		resp.Warnings = append(resp.Warnings, "sluice: "+w)
	}
	log.Info("sidecar injected", "native", report.Native, "warnings", len(report.Warnings), "dryRun", dryRun)
	return resp
}

// Serve serves the webhook over TLS on addr until ctx is cancelled: the
// Handler on every path but HealthPath. certPEM and keyPEM are the serving
// certificate (for the Service's DNS name) and its key.
func (h *Handler) Serve(ctx context.Context, addr string, certPEM, keyPEM []byte) error {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("injector: serving certificate: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("injector: %w", err)
	}
	return h.serve(ctx, ln, cert)
}

// ServeListener is Serve on a listener the caller opened (tests use
// 127.0.0.1:0); it closes ln.
func (h *Handler) ServeListener(ctx context.Context, ln net.Listener, certPEM, keyPEM []byte) error {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		ln.Close()
		return fmt.Errorf("injector: serving certificate: %w", err)
	}
	return h.serve(ctx, ln, cert)
}

// ServeTLS is ServeListener with the serving certificate from
// getCertificate, asked at every TLS handshake (CertificateFiles's
// GetCertificate, which follows changes of the certificate files); it
// closes ln.
func (h *Handler) ServeTLS(ctx context.Context, ln net.Listener, getCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)) error {
	return h.serveTLS(ctx, ln, &tls.Config{GetCertificate: getCertificate})
}

func (h *Handler) serve(ctx context.Context, ln net.Listener, cert tls.Certificate) error {
	return h.serveTLS(ctx, ln, &tls.Config{Certificates: []tls.Certificate{cert}})
}

func (h *Handler) serveTLS(ctx context.Context, ln net.Listener, tlsConfig *tls.Config) error {
	mux := http.NewServeMux()
	mux.HandleFunc(HealthPath, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.Handle("/", h)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       90 * time.Second,
		ErrorLog:          slog.NewLogLogger(h.log().Handler(), slog.LevelWarn),
	}
	tlsConfig.MinVersion = tls.VersionTLS12
	tlsConfig.NextProtos = []string{"h2", "http/1.1"}
	tlsLn := tls.NewListener(ln, tlsConfig)
	h.log().Info("injector webhook listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(tlsLn) }()
	select {
	case err := <-errc:
		return fmt.Errorf("injector: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := srv.Shutdown(shutdown)
	if serveErr := <-errc; !errors.Is(serveErr, http.ErrServerClosed) && err == nil {
		err = serveErr
	}
	if err != nil {
		return fmt.Errorf("injector: shutting down: %w", err)
	}
	return nil
}

// WebhookConfiguration is the MutatingWebhookConfiguration that sends pod
// creations to the injector running in namespace (the control plane's),
// whose serving certificate caBundle (PEM) verifies.
//
// The API server skips the webhook for the control plane's namespace and
// kube-system, for namespaces and pods labelled sluice.dev/inject=disabled,
// and for the control plane's own pods; everything else reaches Inject,
// which decides from the annotations (selectors cannot see those). It fails
// open (failurePolicy Ignore), has no side effects, and is called again
// when a later webhook changes the pod (reinvocationPolicy IfNeeded;
// Inject leaves an injected pod alone).
func WebhookConfiguration(caBundle []byte, namespace string) *admissionregistrationv1.MutatingWebhookConfiguration {
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		TypeMeta: metav1.TypeMeta{APIVersion: admissionregistrationv1.SchemeGroupVersion.String(), Kind: "MutatingWebhookConfiguration"},
		ObjectMeta: metav1.ObjectMeta{
			Name:   WebhookConfigurationName,
			Labels: map[string]string{LabelControlPlaneNamespace: namespace},
		},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: WebhookName,
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				Service: &admissionregistrationv1.ServiceReference{
					Namespace: namespace,
					Name:      WebhookServiceName,
					Path:      ptr.To(WebhookPath),
					Port:      ptr.To[int32](WebhookServicePort),
				},
				CABundle: caBundle,
			},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{
					APIGroups:   []string{""},
					APIVersions: []string{"v1"},
					Resources:   []string{"pods"},
					Scope:       ptr.To(admissionregistrationv1.NamespacedScope),
				},
			}},
			FailurePolicy: ptr.To(admissionregistrationv1.Ignore),
			MatchPolicy:   ptr.To(admissionregistrationv1.Equivalent),
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpNotIn, Values: []string{namespace, metav1.NamespaceSystem}},
				{Key: AnnotationInject, Operator: metav1.LabelSelectorOpNotIn, Values: []string{InjectDisabled}},
			}},
			ObjectSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: AnnotationInject, Operator: metav1.LabelSelectorOpNotIn, Values: []string{InjectDisabled}},
				{Key: LabelControlPlaneComponent, Operator: metav1.LabelSelectorOpDoesNotExist},
			}},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			TimeoutSeconds:          ptr.To[int32](10),
			AdmissionReviewVersions: []string{"v1"},
			ReinvocationPolicy:      ptr.To(admissionregistrationv1.IfNeededReinvocationPolicy),
		}},
	}
}
