package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/crds/gatewayapi"
	"github.com/sluicehq/sluice/crds/manifests"
	"github.com/sluicehq/sluice/mesh/injector"
)

// Names of the installed control plane that `sluice check` looks at.
const (
	trustRootsConfigMap = "sluice-identity-trust-roots"
	trustRootsKey       = "ca.crt"
	issuerSecret        = "sluice-identity-issuer"
	injectorWebhook     = "sluice-injector"
	injectorTLSSecret   = "sluice-injector-tls"
	injectorService     = "sluice-injector"
)

// controlPlaneDeployments are the control plane's Deployments, in the order
// check reports them.
var controlPlaneDeployments = []string{"sluice-controller", "sluice-destination", "sluice-identity", "sluice-telemetry", "sluice-injector"}

// Hints of the checks.
const (
	hintInstall     = "control plane is not installed: run `sluice install | kubectl apply --server-side -f -`"
	hintInstallCRDs = "run `sluice install --crds | kubectl apply --server-side -f -`"
)

// certWarnWithin is how close to its NotAfter a certificate gets a ‼.
const certWarnWithin = 60 * 24 * time.Hour

// kubeChecker runs `sluice check` against a cluster.
type kubeChecker struct {
	k *kubeTarget
	// version is the CLI's version, which proxies should run.
	version string
	// pre checks whether Sluice can be installed, instead of the installed
	// Sluice; proxy also checks the data plane of proxyNamespace ("" for
	// every namespace).
	pre, proxy     bool
	proxyNamespace string
	// now is the clock of certificate checks; nil means time.Now.
	now func() time.Time
}

func (kc *kubeChecker) clock() time.Time {
	if kc.now != nil {
		return kc.now()
	}
	return time.Now()
}

// run runs every check that applies, by category.
func (kc *kubeChecker) run(ctx context.Context) []checkCategory {
	api, ok := kc.checkAPI(ctx)
	cats := []checkCategory{api}
	if !ok {
		return cats
	}
	if kc.pre {
		return append(cats, kc.checkPre(ctx))
	}
	cats = append(cats, kc.checkCRDs(ctx), kc.checkControlPlane(ctx), kc.checkIdentity(ctx), kc.checkWebhook(ctx))
	if kc.proxy {
		cats = append(cats, kc.checkProxies(ctx))
	}
	return cats
}

// checkAPI checks that the API server answers and runs a Kubernetes with
// native sidecars; ok is false when it cannot be reached.
func (kc *kubeChecker) checkAPI(ctx context.Context) (checkCategory, bool) {
	cat := checkCategory{Name: "kubernetes-api"}
	cat.Results = append(cat.Results, checkResult{Name: "can initialize the client", OK: true, Detail: kc.k.detail()})
	dc, err := discovery.NewDiscoveryClientForConfig(kc.k.cfg)
	if err != nil {
		cat.Results = append(cat.Results, checkResult{Name: "can query the Kubernetes API", Hints: []string{err.Error()}})
		return cat, false
	}
	v, err := dc.ServerVersion()
	if err != nil {
		cat.Results = append(cat.Results, checkResult{Name: "can query the Kubernetes API",
			Hints: []string{fmt.Sprintf("asking %s for its version: %v", kc.k.cfg.Host, err), "is the cluster running, and is the kubeconfig's context the right one (--kubeconfig, --context)?"}})
		return cat, false
	}
	cat.Results = append(cat.Results, checkResult{Name: "can query the Kubernetes API", OK: true})
	r := checkResult{Name: "is running the minimum Kubernetes API version", Detail: v.GitVersion}
	if injector.NativeSidecarsSupported(v.GitVersion) {
		r.OK = true
	} else {
		r.Warn = true
		r.Hints = []string{"Kubernetes 1.29 or later runs the proxy as a native sidecar; on " + v.GitVersion + " it runs as a classic sidecar, which holds Jobs open and starts after init containers"}
	}
	cat.Results = append(cat.Results, r)
	return cat, true
}

// checkPre checks that the user can install Sluice: the permissions that
// `kubectl apply` of `sluice install` needs, and that no control plane
// namespace exists yet.
func (kc *kubeChecker) checkPre(ctx context.Context) checkCategory {
	cat := checkCategory{Name: "pre-kubernetes-setup"}
	var ns corev1.Namespace
	err := kc.k.client.Get(ctx, types.NamespacedName{Name: controlPlaneNamespace}, &ns)
	switch {
	case apierrors.IsNotFound(err):
		cat.Results = append(cat.Results, checkResult{Name: "control plane namespace does not already exist", OK: true})
	case err != nil:
		cat.Results = append(cat.Results, checkResult{Name: "control plane namespace does not already exist", Hints: []string{"reading namespace " + controlPlaneNamespace + ": " + err.Error()}})
	default:
		cat.Results = append(cat.Results, checkResult{Name: "control plane namespace does not already exist", Warn: true,
			Hints: []string{"namespace " + controlPlaneNamespace + " exists: Sluice may be installed already (run `sluice check`)"}})
	}
	for _, a := range []struct {
		what, group, resource, namespace string
	}{
		{"Namespaces", "", "namespaces", ""},
		{"CustomResourceDefinitions", "apiextensions.k8s.io", "customresourcedefinitions", ""},
		{"ClusterRoles", "rbac.authorization.k8s.io", "clusterroles", ""},
		{"ClusterRoleBindings", "rbac.authorization.k8s.io", "clusterrolebindings", ""},
		{"MutatingWebhookConfigurations", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", ""},
		{"ServiceAccounts", "", "serviceaccounts", controlPlaneNamespace},
		{"Deployments", "apps", "deployments", controlPlaneNamespace},
		{"Services", "", "services", controlPlaneNamespace},
		{"Secrets", "", "secrets", controlPlaneNamespace},
	} {
		cat.Results = append(cat.Results, kc.canCreate(ctx, a.what, a.group, a.resource, a.namespace))
	}
	return cat
}

// canCreate asks the API server whether the user may create resource.
func (kc *kubeChecker) canCreate(ctx context.Context, what, group, resource, namespace string) checkResult {
	r := checkResult{Name: "can create " + what}
	if namespace != "" {
		r.Name += " in namespace " + namespace
	}
	review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: "create", Group: group, Resource: resource, Namespace: namespace},
	}}
	if err := kc.k.client.Create(ctx, review); err != nil {
		r.Hints = []string{"asking whether you may create " + resource + ": " + err.Error()}
		return r
	}
	if r.OK = review.Status.Allowed; !r.OK {
		why := review.Status.Reason
		if why == "" {
			why = "no rule allows it"
		}
		r.Hints = []string{fmt.Sprintf("you may not create %s (%s): installing Sluice needs a cluster administrator", resource, why)}
	}
	return r
}

// crdSet is the CRDs of one source that `sluice install --crds` installs.
type crdSet struct {
	name string
	yaml []byte
}

// checkCRDs checks that every CRD `sluice install --crds` prints is
// installed, established and current: it serves the same versions with the
// same schemas (‼ when not, which is an older or newer install).
func (kc *kubeChecker) checkCRDs(ctx context.Context) checkCategory {
	cat := checkCategory{Name: "sluice-crds"}
	for _, set := range []crdSet{
		{"Sluice", manifests.All()},
		{"Gateway API (" + gatewayapi.Channel + " " + gatewayapi.BundleVersion + ")", gatewayapi.All()},
	} {
		want, err := decodeCRDs(set.yaml)
		if err != nil {
			cat.Results = append(cat.Results, checkResult{Name: set.name + " CRDs are installed", Hints: []string{"this CLI's embedded CRDs: " + err.Error()}})
			continue
		}
		installed := checkResult{Name: set.name + " CRDs are installed"}
		current := checkResult{Name: set.name + " CRDs are current", Warn: true}
		n := 0
		for _, w := range want {
			var got apiextensionsv1.CustomResourceDefinition
			err := kc.k.client.Get(ctx, types.NamespacedName{Name: w.Name}, &got)
			switch {
			case apierrors.IsNotFound(err):
				installed.Hints = append(installed.Hints, "CRD "+w.Name+" is not installed")
				continue
			case err != nil:
				installed.Hints = append(installed.Hints, "reading CRD "+w.Name+": "+err.Error())
				continue
			case !crdEstablished(&got):
				installed.Hints = append(installed.Hints, "CRD "+w.Name+" is not established (see kubectl describe crd "+w.Name+")")
				continue
			}
			n++
			if diff := crdDiff(w, &got); diff != "" {
				current.Hints = append(current.Hints, "CRD "+w.Name+": "+diff)
			}
		}
		installed.OK = len(installed.Hints) == 0
		installed.Detail = fmt.Sprintf("%d/%d", n, len(want))
		if n == 0 {
			installed.Hints = []string{fmt.Sprintf("none of its %d CRDs is installed", len(want))}
		}
		if !installed.OK {
			installed.Hints = append(installed.Hints, hintInstallCRDs)
		}
		cat.Results = append(cat.Results, installed)
		if n == 0 {
			continue // nothing to compare
		}
		current.OK = len(current.Hints) == 0
		if !current.OK {
			current.Hints = append(current.Hints, "this CLI is "+kc.version+": "+hintInstallCRDs+" to install its CRDs")
		}
		cat.Results = append(cat.Results, current)
	}
	return cat
}

// crdEstablished reports whether the API server serves the CRD.
func crdEstablished(crd *apiextensionsv1.CustomResourceDefinition) bool {
	for _, c := range crd.Status.Conditions {
		if c.Type == apiextensionsv1.Established {
			return c.Status == apiextensionsv1.ConditionTrue
		}
	}
	return false
}

// crdDiff says how the installed CRD got differs from the CLI's want: the
// versions served, and each version's schema; "" when they agree.
func crdDiff(want, got *apiextensionsv1.CustomResourceDefinition) string {
	served := func(crd *apiextensionsv1.CustomResourceDefinition) []string {
		var vs []string
		for _, v := range crd.Spec.Versions {
			if v.Served {
				vs = append(vs, v.Name)
			}
		}
		return vs
	}
	if w, g := served(want), served(got); !slices.Equal(w, g) {
		return fmt.Sprintf("serves versions %s, this CLI's serves %s", strings.Join(g, ", "), strings.Join(w, ", "))
	}
	for _, wv := range want.Spec.Versions {
		for _, gv := range got.Spec.Versions {
			if gv.Name != wv.Name {
				continue
			}
			if !equality.Semantic.DeepEqual(wv.Schema, gv.Schema) {
				return "the schema of version " + wv.Name + " differs from this CLI's (an older or newer install)"
			}
		}
	}
	return ""
}

// decodeCRDs decodes a multi-document YAML stream of CRDs.
func decodeCRDs(stream []byte) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	var crds []*apiextensionsv1.CustomResourceDefinition
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return crds, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading YAML document %d: %w", i, err)
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.Unmarshal(doc, crd); err != nil {
			return nil, fmt.Errorf("decoding YAML document %d: %w", i, err)
		}
		if crd.Name != "" {
			crds = append(crds, crd)
		}
	}
}

// checkControlPlane checks the control plane's namespace and Deployments.
func (kc *kubeChecker) checkControlPlane(ctx context.Context) checkCategory {
	cat := checkCategory{Name: "control-plane"}
	var ns corev1.Namespace
	r := checkResult{Name: "control plane namespace exists", Detail: controlPlaneNamespace}
	err := kc.k.client.Get(ctx, types.NamespacedName{Name: controlPlaneNamespace}, &ns)
	switch {
	case apierrors.IsNotFound(err):
		r.Hints = []string{"namespace " + controlPlaneNamespace + " does not exist: " + hintInstall}
	case err != nil:
		r.Hints = []string{"reading namespace " + controlPlaneNamespace + ": " + err.Error()}
	default:
		r.OK = true
	}
	cat.Results = append(cat.Results, r)
	for _, name := range controlPlaneDeployments {
		cat.Results = append(cat.Results, kc.checkDeployment(ctx, name))
	}
	return cat
}

// checkDeployment checks that a control-plane Deployment exists and is
// available.
func (kc *kubeChecker) checkDeployment(ctx context.Context, name string) checkResult {
	r := checkResult{Name: name + " is available"}
	var d appsv1.Deployment
	err := kc.k.client.Get(ctx, types.NamespacedName{Namespace: controlPlaneNamespace, Name: name}, &d)
	switch {
	case apierrors.IsNotFound(err):
		r.Hints = []string{"deployment " + controlPlaneNamespace + "/" + name + " does not exist: " + hintInstall}
		return r
	case err != nil:
		r.Hints = []string{"reading deployment " + controlPlaneNamespace + "/" + name + ": " + err.Error()}
		return r
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	r.Detail = fmt.Sprintf("%d/%d ready", d.Status.ReadyReplicas, want)
	available := false
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentAvailable {
			available = c.Status == corev1.ConditionTrue
			if !available && c.Message != "" {
				r.Hints = append(r.Hints, c.Message)
			}
		}
	}
	r.OK = available && d.Status.AvailableReplicas >= min(want, 1)
	if !r.OK {
		r.Hints = append(r.Hints, fmt.Sprintf("see kubectl -n %s describe deployment %s, and the logs of its pods", controlPlaneNamespace, name))
	}
	return r
}

// checkIdentity checks the trust anchors and the issuer: they parse, the
// issuer chains to an anchor, and each certificate is valid now (‼ within
// 60 days of its NotAfter).
func (kc *kubeChecker) checkIdentity(ctx context.Context) checkCategory {
	cat := checkCategory{Name: "identity"}
	now := kc.clock()

	anchorsRes := checkResult{Name: "trust anchors are readable", Detail: "configmap " + controlPlaneNamespace + "/" + trustRootsConfigMap}
	var anchors []*x509.Certificate
	var cm corev1.ConfigMap
	err := kc.k.client.Get(ctx, types.NamespacedName{Namespace: controlPlaneNamespace, Name: trustRootsConfigMap}, &cm)
	switch {
	case apierrors.IsNotFound(err):
		anchorsRes.Hints = []string{"configmap " + controlPlaneNamespace + "/" + trustRootsConfigMap + " does not exist: " + hintInstall}
	case err != nil:
		anchorsRes.Hints = []string{"reading configmap " + controlPlaneNamespace + "/" + trustRootsConfigMap + ": " + err.Error()}
	default:
		anchors, err = parseCertificates([]byte(cm.Data[trustRootsKey]))
		if err != nil {
			anchorsRes.Hints = []string{fmt.Sprintf("key %s of configmap %s/%s: %v", trustRootsKey, controlPlaneNamespace, trustRootsConfigMap, err)}
		} else {
			anchorsRes.OK = true
			anchorsRes.Detail = fmt.Sprintf("%d %s", len(anchors), plural(len(anchors), "certificate", "certificates"))
		}
	}
	cat.Results = append(cat.Results, anchorsRes)

	issuerRes := checkResult{Name: "issuer credentials are readable", Detail: "secret " + controlPlaneNamespace + "/" + issuerSecret}
	var chain []*x509.Certificate
	var sec corev1.Secret
	err = kc.k.client.Get(ctx, types.NamespacedName{Namespace: controlPlaneNamespace, Name: issuerSecret}, &sec)
	switch {
	case apierrors.IsNotFound(err):
		issuerRes.Hints = []string{"secret " + controlPlaneNamespace + "/" + issuerSecret + " does not exist: " + hintInstall}
	case err != nil:
		issuerRes.Hints = []string{"reading secret " + controlPlaneNamespace + "/" + issuerSecret + ": " + err.Error()}
	default:
		chain, err = parseKeyPair(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey])
		if err != nil {
			issuerRes.Hints = []string{fmt.Sprintf("secret %s/%s: %v", controlPlaneNamespace, issuerSecret, err)}
		} else {
			issuerRes.OK = true
		}
	}
	cat.Results = append(cat.Results, issuerRes)

	if len(chain) > 0 && len(anchors) > 0 {
		r := checkResult{Name: "issuer certificate chains to a trust anchor"}
		if err := chainsTo(chain, anchors); err != nil {
			r.Hints = []string{err.Error(), "the proxies trust only the anchors: reissue the issuer from an anchor, or add its root to " + trustRootsConfigMap}
		} else {
			r.OK = true
		}
		cat.Results = append(cat.Results, r)
	}
	for _, c := range anchors {
		cat.Results = append(cat.Results, certValidity("trust anchor", c, now))
	}
	for i, c := range chain {
		what := "issuer certificate"
		if i > 0 {
			what = "issuer chain certificate"
		}
		cat.Results = append(cat.Results, certValidity(what, c, now))
	}
	return cat
}

// parseCertificates reads every CERTIFICATE block of PEM data.
func parseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return certs, nil
}

// parseKeyPair reads a certificate chain and its private key, and checks
// that they belong together.
func parseKeyPair(certPEM, keyPEM []byte) ([]*x509.Certificate, error) {
	if len(certPEM) == 0 || len(keyPEM) == 0 {
		return nil, fmt.Errorf("keys %s and %s must both be set", corev1.TLSCertKey, corev1.TLSPrivateKeyKey)
	}
	chain, err := parseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", corev1.TLSCertKey, err)
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return nil, fmt.Errorf("%s and %s: %w", corev1.TLSCertKey, corev1.TLSPrivateKeyKey, err)
	}
	return chain, nil
}

// chainsTo checks that each certificate of chain is signed by the next, and
// the last by (or is) one of anchors. Validity periods are checked apart.
func chainsTo(chain, anchors []*x509.Certificate) error {
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			return fmt.Errorf("%s is not signed by the next certificate of the chain, %s: %v", certName(chain[i]), certName(chain[i+1]), err)
		}
	}
	last := chain[len(chain)-1]
	for _, a := range anchors {
		if last.Equal(a) || last.CheckSignatureFrom(a) == nil {
			return nil
		}
	}
	return fmt.Errorf("%s (issued by %q) is signed by none of the %d trust anchors", certName(last), last.Issuer.String(), len(anchors))
}

// certName names a certificate by its subject.
func certName(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return fmt.Sprintf("%q", c.Subject.CommonName)
	}
	return fmt.Sprintf("%q", c.Subject.String())
}

// certValidity checks that c is valid at now: × outside its validity, ‼
// within certWarnWithin of its NotAfter.
func certValidity(what string, c *x509.Certificate, now time.Time) checkResult {
	r := checkResult{Name: fmt.Sprintf("%s %s is valid", what, certName(c)), Detail: "NotAfter " + c.NotAfter.UTC().Format(time.RFC3339)}
	switch left := c.NotAfter.Sub(now); {
	case now.Before(c.NotBefore):
		r.Hints = []string{fmt.Sprintf("not valid before %s: is this machine's or the issuer's clock wrong?", c.NotBefore.UTC().Format(time.RFC3339))}
	case left <= 0:
		r.Hints = []string{fmt.Sprintf("expired %s ago: proxies cannot get certificates; rotate it", roundDays(-left))}
	case left < certWarnWithin:
		r.Warn = true
		r.Hints = []string{fmt.Sprintf("expires in %s: rotate it before then", roundDays(left))}
	default:
		r.OK = true
	}
	return r
}

// roundDays writes d in days, or hours below two days.
func roundDays(d time.Duration) string {
	if d < 48*time.Hour {
		return d.Round(time.Minute).String()
	}
	return fmt.Sprintf("%d days", int(d.Hours()/24))
}

// checkWebhook checks the injector's webhook: its configuration exists, its
// caBundle verifies the injector's serving certificate, and the API server
// really calls it (a dry-run pod comes back injected).
func (kc *kubeChecker) checkWebhook(ctx context.Context) checkCategory {
	cat := checkCategory{Name: "webhook"}
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	r := checkResult{Name: "webhook configuration exists", Detail: "mutatingwebhookconfiguration " + injectorWebhook}
	err := kc.k.client.Get(ctx, types.NamespacedName{Name: injectorWebhook}, &mwc)
	switch {
	case apierrors.IsNotFound(err):
		r.Hints = []string{"mutatingwebhookconfiguration " + injectorWebhook + " does not exist: " + hintInstall}
	case err != nil:
		r.Hints = []string{"reading mutatingwebhookconfiguration " + injectorWebhook + ": " + err.Error()}
	case len(mwc.Webhooks) == 0:
		r.Hints = []string{"mutatingwebhookconfiguration " + injectorWebhook + " has no webhook: " + hintInstall}
	default:
		r.OK = true
	}
	cat.Results = append(cat.Results, r)
	if !r.OK {
		return cat
	}
	cat.Results = append(cat.Results, kc.checkWebhookCert(ctx, &mwc), kc.checkInjection(ctx))
	return cat
}

// checkWebhookCert checks that the webhook's caBundle verifies the
// certificate the injector serves, for the injector Service's name.
func (kc *kubeChecker) checkWebhookCert(ctx context.Context, mwc *admissionregistrationv1.MutatingWebhookConfiguration) checkResult {
	r := checkResult{Name: "webhook caBundle verifies the injector's certificate", Detail: "secret " + controlPlaneNamespace + "/" + injectorTLSSecret}
	var sec corev1.Secret
	if err := kc.k.client.Get(ctx, types.NamespacedName{Namespace: controlPlaneNamespace, Name: injectorTLSSecret}, &sec); err != nil {
		r.Hints = []string{"reading secret " + controlPlaneNamespace + "/" + injectorTLSSecret + ": " + err.Error()}
		return r
	}
	chain, err := parseKeyPair(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		r.Hints = []string{"secret " + controlPlaneNamespace + "/" + injectorTLSSecret + ": " + err.Error()}
		return r
	}
	dnsName := injectorService + "." + controlPlaneNamespace + ".svc"
	for _, wh := range mwc.Webhooks {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(wh.ClientConfig.CABundle) {
			r.Hints = append(r.Hints, "webhook "+wh.Name+": caBundle holds no PEM certificate")
			continue
		}
		inter := x509.NewCertPool()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		opts := x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: kc.clock(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		switch {
		case wh.ClientConfig.Service != nil:
			opts.DNSName = dnsName
		case wh.ClientConfig.URL != nil:
			if u, err := url.Parse(*wh.ClientConfig.URL); err == nil {
				opts.DNSName = u.Hostname()
			}
		}
		if _, err := chain[0].Verify(opts); err != nil {
			r.Hints = append(r.Hints, fmt.Sprintf("webhook %s: the caBundle does not verify %s: %v", wh.Name, certName(chain[0]), err))
		}
	}
	r.OK = len(r.Hints) == 0
	if !r.OK {
		r.Hints = append(r.Hints, "the API server cannot call the injector: reinstall with `sluice install | kubectl apply --server-side -f -`")
	}
	return r
}

// checkInjection creates a pod in namespace default as a server-side dry
// run, annotated for injection: it comes back with the proxy only if the
// API server called the webhook.
func (kc *kubeChecker) checkInjection(ctx context.Context) checkResult {
	r := checkResult{Name: "the API server calls the injector", Detail: "dry-run pod in namespace default"}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "sluice-check-",
			Namespace:    "default",
			Annotations:  map[string]string{injector.AnnotationInject: "enabled"},
		},
		Spec: corev1.PodSpec{
			ServiceAccountName: "default", // as the ServiceAccount admission plugin would set it
			Containers:         []corev1.Container{{Name: "check", Image: "registry.k8s.io/pause:3.10"}},
		},
	}
	if err := kc.k.client.Create(ctx, pod, client.DryRunAll); err != nil {
		r.Hints = []string{"dry-run create of an annotated pod: " + err.Error(), "see kubectl -n " + controlPlaneNamespace + " logs deploy/" + injectorService}
		return r
	}
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		if c.Name == injector.ProxyContainerName {
			r.OK = true
			return r
		}
	}
	r.Hints = []string{"the dry-run pod came back without " + injector.ProxyContainerName + ": the API server did not call the injector, or the injector skipped the pod",
		"see kubectl -n " + controlPlaneNamespace + " logs deploy/" + injectorService}
	return r
}

// checkProxies checks the proxies of the data plane: every pod with the
// sluice-proxy container has it ready, and runs this CLI's version.
func (kc *kubeChecker) checkProxies(ctx context.Context) checkCategory {
	cat := checkCategory{Name: "data-plane"}
	where := "every namespace"
	if kc.proxyNamespace != "" {
		where = "namespace " + kc.proxyNamespace
	}
	var pods corev1.PodList
	if err := kc.k.client.List(ctx, &pods, client.InNamespace(kc.proxyNamespace)); err != nil {
		cat.Results = append(cat.Results, checkResult{Name: "data plane proxies are ready", Hints: []string{"listing the pods of " + where + ": " + err.Error()}})
		return cat
	}
	ready := checkResult{Name: "data plane proxies are ready"}
	current := checkResult{Name: "data plane proxies run this CLI's version", Warn: true}
	n, nReady := 0, 0
	for _, p := range pods.Items {
		c, ok := proxyContainer(&p)
		if !ok {
			continue
		}
		n++
		if proxyReady(&p) {
			nReady++
		} else {
			ready.Hints = append(ready.Hints, fmt.Sprintf("pod %s/%s: %s is not ready (see kubectl -n %s logs %s -c %s)", p.Namespace, p.Name, injector.ProxyContainerName, p.Namespace, p.Name, injector.ProxyContainerName))
		}
		if tag := imageTag(c.Image); tag != kc.version {
			current.Hints = append(current.Hints, fmt.Sprintf("pod %s/%s runs %s", p.Namespace, p.Name, c.Image))
		}
	}
	ready.Detail = fmt.Sprintf("%d/%d in %s", nReady, n, where)
	ready.OK = len(ready.Hints) == 0
	current.Detail = kc.version
	current.OK = len(current.Hints) == 0
	if !current.OK {
		current.Hints = append(current.Hints, "restart those workloads (kubectl rollout restart) to inject the proxy of the installed control plane")
	}
	if n == 0 {
		ready.Warn = true
		ready.OK = false
		ready.Hints = []string{"no pod runs " + injector.ProxyContainerName + " in " + where + ": annotate a namespace or workload " + injector.AnnotationInject + "=enabled"}
	}
	cat.Results = append(cat.Results, ready, current)
	return cat
}

// proxyContainer returns the pod's sluice-proxy container, native sidecar
// or not.
func proxyContainer(p *corev1.Pod) (corev1.Container, bool) {
	for _, c := range slices.Concat(p.Spec.InitContainers, p.Spec.Containers) {
		if c.Name == injector.ProxyContainerName {
			return c, true
		}
	}
	return corev1.Container{}, false
}

// proxyReady reports whether the pod's sluice-proxy container is ready.
func proxyReady(p *corev1.Pod) bool {
	for _, cs := range slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses) {
		if cs.Name == injector.ProxyContainerName {
			return cs.Ready
		}
	}
	return false
}

// imageTag is the tag of an image reference ("" when it has none).
func imageTag(image string) string {
	image, _, _ = strings.Cut(image, "@")
	slash := strings.LastIndex(image, "/")
	if i := strings.LastIndex(image, ":"); i > slash {
		return image[i+1:]
	}
	return ""
}
