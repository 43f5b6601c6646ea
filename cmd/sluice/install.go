package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"helm.sh/helm/v3/pkg/chart"
	chartloader "helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/releaseutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/sluicehq/sluice/charts"
	"github.com/sluicehq/sluice/crds/gatewayapi"
	"github.com/sluicehq/sluice/crds/manifests"
	"github.com/sluicehq/sluice/mesh/identity"
	"github.com/sluicehq/sluice/mesh/injector"
)

// The control plane's namespace and the lifetime of the certificates
// `sluice install` generates.
const (
	installNamespace    = identity.DefaultControlNamespace
	installCertLifetime = 365 * 24 * time.Hour
	installReleaseName  = "sluice"
)

// The flags that give the identity certificates instead of generating them.
const (
	flagTrustAnchorsFile = "identity-trust-anchors-file"
	flagIssuerCertFile   = "identity-issuer-certificate-file"
	flagIssuerKeyFile    = "identity-issuer-key-file"
	flagIgnoreCluster    = "ignore-cluster"
)

// proxyLogLevels are the proxy's log levels, as the injector accepts them.
var proxyLogLevels = []string{"debug", "info", "warn", "error"}

type installOptions struct {
	crds                 bool
	registry             string
	version              string
	pullPolicy           string
	trustDomain          string
	clusterDomain        string
	controllerReplicas   int
	destinationReplicas  int
	proxyLogLevel        string
	defaultInboundPolicy string
	trustAnchorsFile     string
	issuerCertFile       string
	issuerKeyFile        string
	// ignoreCluster: never read the cluster's certificates.
	ignoreCluster bool
	// global chooses the cluster whose certificates are reused.
	global *globalOptions
	// notes receives what install tells its user besides the manifests
	// (stderr, so that stdout stays YAML).
	notes io.Writer
	// now is the clock that generated certificates start at and given ones
	// are checked against.
	now func() time.Time
}

func newInstallCmd(g *globalOptions) *cobra.Command {
	o := &installOptions{now: time.Now, global: g}
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Print the Kubernetes manifests that install Sluice",
		Long: `Print the manifests that install Sluice's control plane on a Kubernetes
cluster, in namespace ` + installNamespace + `, for kubectl to apply: the controller, destination,
identity, telemetry and injector Deployments, their Services, ServiceAccounts
and RBAC, the identity's trust anchors and issuer, and the injector's
webhook configuration and certificate. They are the Helm chart charts/sluice,
embedded in this binary, rendered with values from the flags.

When the cluster (--kubeconfig/--context, else the usual Kubernetes
configuration, if its API server answers within ` + clusterProbeTimeout.String() + `) already runs Sluice,
install reuses its certificates, so that re-running it upgrades the control
plane without breaking the running proxies' mutual TLS: the trust anchors
(ConfigMap ` + installNamespace + `/` + trustRootsConfigMap + `), the issuer (Secret ` + installNamespace + `/` + issuerSecret + `)
and the webhook's certificate (Secret ` + installNamespace + `/` + injectorTLSSecret + `). It checks them first and
fails, saying what to do, when they are no longer valid. Otherwise it
generates them: a trust anchor (ECDSA P-256, valid a year) and an issuer it
signs, and a CA and serving certificate for the webhook. Standard error says
which it did.

--` + flagTrustAnchorsFile + `, --` + flagIssuerCertFile + ` and --` + flagIssuerKeyFile + `
(all three) give the trust anchors and issuer instead; they win over the
cluster's. --` + flagIgnoreCluster + ` never reads a cluster and always generates
(offline rendering, CI).

With --crds, only the CustomResourceDefinitions: Sluice's (sluice.dev,
policy.sluice.dev) and the Gateway API's, experimental channel
` + gatewayapi.BundleVersion + ` (HTTPRoute retry and session persistence are only there).
Install them first.

Apply both server-side: the Gateway API's HTTPRoute CRD is too large for the
annotation that client-side kubectl apply writes.`,
		Example: `  sluice install --crds | kubectl apply --server-side -f -
  sluice install | kubectl apply --server-side -f -
  sluice install --context prod | kubectl --context prod apply --server-side -f -   # upgrade, keeping the certificates
  sluice install --registry registry.example.com/sluice --version v0.3.0 | kubectl apply --server-side -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.crds {
				return writeCRDs(cmd.OutOrStdout())
			}
			o.notes = cmd.ErrOrStderr()
			out, err := o.render(cmd.Context())
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.crds, "crds", false, "print only the CustomResourceDefinitions (Sluice's and the Gateway API's)")
	f.StringVar(&o.registry, "registry", "ghcr.io/sluicehq", "registry of the images: <registry>/sluice runs the control plane, <registry>/sluice-proxy is the sidecar")
	f.StringVar(&o.version, "version", version, "tag of the sluice and sluice-proxy images")
	f.StringVar(&o.pullPolicy, "image-pull-policy", "IfNotPresent", "pull policy of the control plane's and the proxies' images: Always, IfNotPresent or Never")
	f.StringVar(&o.trustDomain, "trust-domain", identity.DefaultTrustDomain, "trust domain that ends every mesh identity")
	f.StringVar(&o.clusterDomain, "cluster-domain", injector.DefaultClusterDomain, "DNS domain of the cluster's Services")
	f.IntVar(&o.controllerReplicas, "controller-replicas", 1, "replicas of the canary controller (one is active at a time, by leader election)")
	f.IntVar(&o.destinationReplicas, "destination-replicas", 1, "replicas of the destination service (all serve the proxies; one writes HTTPRoute status, by leader election)")
	f.StringVar(&o.proxyLogLevel, "proxy-log-level", injector.DefaultLogLevel, "default log level of injected proxies: "+strings.Join(proxyLogLevels, ", "))
	f.StringVar(&o.defaultInboundPolicy, "default-inbound-policy", "", "default inbound policy of injected proxies, one of "+strings.Join(injector.DefaultInboundPolicies, ", ")+"; empty leaves the proxy's default")
	f.StringVar(&o.trustAnchorsFile, flagTrustAnchorsFile, "", "PEM file of the trust anchors (instead of generating one)")
	f.StringVar(&o.issuerCertFile, flagIssuerCertFile, "", "PEM file of the issuer certificate, signed by a trust anchor")
	f.StringVar(&o.issuerKeyFile, flagIssuerKeyFile, "", "PEM file of the issuer's ECDSA key")
	f.BoolVar(&o.ignoreCluster, flagIgnoreCluster, false, "never read a cluster's certificates: always generate new ones (offline rendering, CI)")
	return cmd
}

// writeCRDs writes every CRD Sluice installs as one YAML stream: Sluice's,
// then the Gateway API's.
func writeCRDs(w io.Writer) error {
	for _, part := range []struct {
		name string
		yaml []byte
	}{
		{"Sluice CRDs", manifests.All()},
		{"Gateway API CRDs", gatewayapi.All()},
	} {
		if _, err := w.Write(part.yaml); err != nil {
			return fmt.Errorf("writing the %s: %w", part.name, err)
		}
	}
	return nil
}

// render validates the flags, gets the certificates and renders the chart.
func (o *installOptions) render(ctx context.Context) ([]byte, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	existing, err := o.clusterCertificates(ctx)
	if err != nil {
		return nil, err
	}
	vals, err := o.values(existing)
	if err != nil {
		return nil, err
	}
	ch, err := loadChart()
	if err != nil {
		return nil, err
	}
	return renderChart(ch, vals, installNamespace)
}

// validate checks the flags that are not certificates.
func (o *installOptions) validate() error {
	var errs []error
	if o.registry == "" {
		errs = append(errs, errors.New("--registry is empty"))
	}
	if msgs := validation.IsDNS1123Subdomain(o.trustDomain); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--trust-domain %q: %s", o.trustDomain, strings.Join(msgs, "; ")))
	}
	if msgs := validation.IsDNS1123Subdomain(o.clusterDomain); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--cluster-domain %q: %s", o.clusterDomain, strings.Join(msgs, "; ")))
	}
	if o.version == "" {
		errs = append(errs, errors.New("--version is empty"))
	} else if msgs := validation.IsValidLabelValue(o.version); len(msgs) > 0 || strings.ContainsAny(o.version, "/:@") {
		errs = append(errs, fmt.Errorf("--version %q is not an image tag", o.version))
	}
	if !slices.Contains([]string{"Always", "IfNotPresent", "Never"}, o.pullPolicy) {
		errs = append(errs, fmt.Errorf("--image-pull-policy %q: want Always, IfNotPresent or Never", o.pullPolicy))
	}
	if o.controllerReplicas < 1 {
		errs = append(errs, fmt.Errorf("--controller-replicas %d: want at least 1", o.controllerReplicas))
	}
	if o.destinationReplicas < 1 {
		errs = append(errs, fmt.Errorf("--destination-replicas %d: want at least 1", o.destinationReplicas))
	}
	if !slices.Contains(proxyLogLevels, o.proxyLogLevel) {
		errs = append(errs, fmt.Errorf("--proxy-log-level %q: want one of %s", o.proxyLogLevel, strings.Join(proxyLogLevels, ", ")))
	}
	if o.defaultInboundPolicy != "" && !slices.Contains(injector.DefaultInboundPolicies, o.defaultInboundPolicy) {
		errs = append(errs, fmt.Errorf("--default-inbound-policy %q: want one of %s", o.defaultInboundPolicy, strings.Join(injector.DefaultInboundPolicies, ", ")))
	}
	return errors.Join(errs...)
}

// values builds the chart's values from the flags and the certificates:
// the files the flags name, else those existing holds (the cluster's, nil
// for none), else new ones.
func (o *installOptions) values(existing *clusterCerts) (map[string]any, error) {
	var anchors []byte
	var issuer identity.KeyPair
	var err error
	if existing != nil && existing.issuer != nil && !o.issuerFilesGiven() {
		anchors, issuer = existing.anchorsPEM, *existing.issuer
	} else if anchors, issuer, err = o.identityCertificates(); err != nil {
		return nil, err
	}
	var webhookCA []byte
	var serving identity.KeyPair
	if existing != nil && existing.webhook != nil {
		webhookCA, serving = existing.webhookCA, *existing.webhook
	} else {
		now := o.now()
		ca, err := identity.NewRootCA("webhook.sluice.dev", now, installCertLifetime)
		if err != nil {
			return nil, fmt.Errorf("generating the webhook's CA: %w", err)
		}
		service := webhookServiceDNSName()
		if serving, err = identity.NewServingCertificate(ca, []string{service, service + "." + o.clusterDomain}, now, installCertLifetime); err != nil {
			return nil, fmt.Errorf("generating the webhook's serving certificate: %w", err)
		}
		webhookCA = ca.CertPEM
	}
	return map[string]any{
		"image": map[string]any{
			"registry":   o.registry,
			"tag":        o.version,
			"pullPolicy": o.pullPolicy,
		},
		"trustDomain":   o.trustDomain,
		"clusterDomain": o.clusterDomain,
		"proxy": map[string]any{
			"logLevel":             o.proxyLogLevel,
			"defaultInboundPolicy": o.defaultInboundPolicy,
		},
		"identity": map[string]any{
			"trustAnchorsPEM": string(anchors),
			"issuer": map[string]any{
				"crtPEM": string(issuer.CertPEM),
				"keyPEM": string(issuer.KeyPEM),
			},
		},
		"webhook": map[string]any{
			"caBundle": string(webhookCA),
			"crtPEM":   string(serving.CertPEM),
			"keyPEM":   string(serving.KeyPEM),
		},
		"controller": map[string]any{
			"replicas": o.controllerReplicas,
		},
		"destination": map[string]any{
			"replicas": o.destinationReplicas,
		},
	}, nil
}

// identityCertificates reads and checks the trust anchors and issuer the
// flags name, or generates them when none is given.
func (o *installOptions) identityCertificates() (anchorPEM []byte, issuer identity.KeyPair, err error) {
	files := map[identity.IssuerInput]struct{ flag, path string }{
		identity.TrustAnchorsInput:      {flagTrustAnchorsFile, o.trustAnchorsFile},
		identity.IssuerCertificateInput: {flagIssuerCertFile, o.issuerCertFile},
		identity.IssuerKeyInput:         {flagIssuerKeyFile, o.issuerKeyFile},
	}
	var given, missing []string
	for _, in := range []identity.IssuerInput{identity.TrustAnchorsInput, identity.IssuerCertificateInput, identity.IssuerKeyInput} {
		if files[in].path != "" {
			given = append(given, "--"+files[in].flag)
		} else {
			missing = append(missing, "--"+files[in].flag)
		}
	}
	now := o.now()
	if len(given) == 0 {
		anchor, err := identity.NewRootCA("root."+identity.IssuerCommonName(installNamespace, o.trustDomain), now, installCertLifetime)
		if err != nil {
			return nil, identity.KeyPair{}, fmt.Errorf("generating the trust anchor: %w", err)
		}
		issuer, err := identity.NewIntermediateCA(anchor, identity.IssuerCommonName(installNamespace, o.trustDomain), now, installCertLifetime)
		if err != nil {
			return nil, identity.KeyPair{}, fmt.Errorf("generating the issuer: %w", err)
		}
		return anchor.CertPEM, issuer, nil
	}
	if len(missing) > 0 {
		return nil, identity.KeyPair{}, fmt.Errorf("%s given without %s: give the trust anchors, the issuer certificate and its key together, or none to generate them",
			strings.Join(given, " and "), strings.Join(missing, " and "))
	}
	read := func(in identity.IssuerInput) ([]byte, error) {
		data, err := os.ReadFile(files[in].path)
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", files[in].flag, err)
		}
		return data, nil
	}
	if anchorPEM, err = read(identity.TrustAnchorsInput); err != nil {
		return nil, identity.KeyPair{}, err
	}
	if issuer.CertPEM, err = read(identity.IssuerCertificateInput); err != nil {
		return nil, identity.KeyPair{}, err
	}
	if issuer.KeyPEM, err = read(identity.IssuerKeyInput); err != nil {
		return nil, identity.KeyPair{}, err
	}
	if err := identity.CheckIssuer(anchorPEM, issuer.CertPEM, issuer.KeyPEM, now); err != nil {
		var ie *identity.IssuerError
		if errors.As(err, &ie) {
			f := files[ie.Input]
			return nil, identity.KeyPair{}, fmt.Errorf("--%s %s: the %s: %w", f.flag, f.path, ie.Input, ie.Err)
		}
		return nil, identity.KeyPair{}, err
	}
	return anchorPEM, issuer, nil
}

// issuerFilesGiven reports whether any --identity-* file flag is given.
func (o *installOptions) issuerFilesGiven() bool {
	return o.trustAnchorsFile != "" || o.issuerCertFile != "" || o.issuerKeyFile != ""
}

// webhookServiceDNSName is the name the API server calls the injector by,
// which its serving certificate must be valid for.
func webhookServiceDNSName() string {
	return injector.WebhookServiceName + "." + installNamespace + ".svc"
}

// clusterProbeTimeout bounds how long install waits for the API server of
// the cluster whose certificates it would reuse.
const clusterProbeTimeout = 5 * time.Second

// clusterCerts are the certificates a cluster already holds, checked.
type clusterCerts struct {
	// cluster names the cluster, for messages.
	cluster string
	// anchorsPEM and issuer are the identity's; issuer is nil when the
	// cluster has none (or the --identity-* files win).
	anchorsPEM []byte
	issuer     *identity.KeyPair
	// webhookCA and webhook are the injector's CA and serving
	// certificate; webhook is nil when the cluster has none.
	webhookCA []byte
	webhook   *identity.KeyPair
}

// clusterCertificates reads the certificates of the cluster install would
// upgrade, and notes to the user what it reuses or why it generates. It
// returns nil when there is no cluster to read: --ignore-cluster, or no
// explicit --kubeconfig/--context and the usual configuration is missing or
// its API server does not answer. An explicit cluster that does not answer
// is an error, as are certificates the cluster holds that are invalid.
func (o *installOptions) clusterCertificates(ctx context.Context) (*clusterCerts, error) {
	if o.ignoreCluster {
		return nil, nil
	}
	if ctx == nil {
		ctx = context.Background()
	}
	g := o.global
	if g == nil {
		g = &globalOptions{}
	}
	explicit := g.kubeconfig != "" || g.kubeContext != ""
	kt, err := newKubeTarget(g)
	if err != nil {
		if explicit {
			return nil, fmt.Errorf("%w (to render without reading a cluster, pass --%s)", err, flagIgnoreCluster)
		}
		if errors.Is(err, errNoKubeconfig) {
			o.note("no Kubernetes cluster configured: generating new certificates")
		} else {
			o.note("no usable Kubernetes cluster (%v): generating new certificates", err)
		}
		return nil, nil
	}
	cfg := rest.CopyConfig(kt.cfg)
	cfg.Timeout = clusterProbeTimeout
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to the Kubernetes API server at %s: %w", cfg.Host, err)
	}
	ctx, cancel := context.WithTimeout(ctx, clusterProbeTimeout)
	defer cancel()
	certs, err := readClusterCertificates(ctx, cs, kt.String(), !o.issuerFilesGiven(), o.now())
	var unreachable *unreachableError
	if errors.As(err, &unreachable) {
		if explicit {
			return nil, fmt.Errorf("the Kubernetes cluster %s did not answer, so install cannot reuse its certificates: %w (to render without reading a cluster, pass --%s)", kt, unreachable.err, flagIgnoreCluster)
		}
		o.note("the Kubernetes cluster %s did not answer (%v): generating new certificates", kt, unreachable.err)
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var reused []string
	if certs.issuer != nil {
		reused = append(reused,
			fmt.Sprintf("the trust anchors (ConfigMap %s/%s)", installNamespace, trustRootsConfigMap),
			fmt.Sprintf("the issuer (Secret %s/%s)", installNamespace, issuerSecret))
	}
	if certs.webhook != nil {
		reused = append(reused, fmt.Sprintf("the webhook certificate (Secret %s/%s)", installNamespace, injectorTLSSecret))
	}
	switch {
	case len(reused) == 0:
		o.note("the Kubernetes cluster %s holds no Sluice certificates in namespace %s: generating new ones", kt, installNamespace)
	case certs.issuer == nil && o.issuerFilesGiven():
		o.note("reused %s from the Kubernetes cluster %s; the identity's from the --identity-* files", reused[0], kt)
	case certs.issuer == nil:
		o.note("reused %s from the Kubernetes cluster %s; generated a new trust anchor and issuer (the cluster has none)", reused[0], kt)
	case certs.webhook == nil:
		o.note("reused %s from the Kubernetes cluster %s; generated a new webhook certificate (the cluster has none)", strings.Join(reused, " and "), kt)
	default:
		o.note("reused %s and %s from the Kubernetes cluster %s", strings.Join(reused[:len(reused)-1], ", "), reused[len(reused)-1], kt)
	}
	return certs, nil
}

// note tells the user something on standard error.
func (o *installOptions) note(format string, args ...any) {
	if o.notes != nil {
		fmt.Fprintf(o.notes, "sluice install: "+format+"\n", args...)
	}
}

// unreachableError is a request that got no answer from the API server.
type unreachableError struct{ err error }

func (e *unreachableError) Error() string { return e.err.Error() }
func (e *unreachableError) Unwrap() error { return e.err }

// readClusterCertificates reads and checks the trust anchors, issuer (when
// withIdentity) and webhook certificate in the control plane's namespace of
// the cluster cs talks to, named cluster. Objects that do not exist are
// nil fields; an error that is no API server's answer is an
// *unreachableError.
func readClusterCertificates(ctx context.Context, cs kubernetes.Interface, cluster string, withIdentity bool, now time.Time) (*clusterCerts, error) {
	certs := &clusterCerts{cluster: cluster}
	// get reads one object; ok is false when it does not exist.
	get := func(what string, read func() error) (ok bool, err error) {
		err = read()
		var status apierrors.APIStatus
		switch {
		case err == nil:
			return true, nil
		case apierrors.IsNotFound(err):
			return false, nil
		case errors.As(err, &status):
			return false, fmt.Errorf("reading %s on the Kubernetes cluster %s: %w (to render without reading a cluster, pass --%s)", what, cluster, err, flagIgnoreCluster)
		default:
			return false, &unreachableError{fmt.Errorf("reading %s on %s: %w", what, cluster, err)}
		}
	}
	if withIdentity {
		cmName := fmt.Sprintf("ConfigMap %s/%s", installNamespace, trustRootsConfigMap)
		var cm *corev1.ConfigMap
		ok, err := get(cmName, func() (err error) {
			cm, err = cs.CoreV1().ConfigMaps(installNamespace).Get(ctx, trustRootsConfigMap, metav1.GetOptions{})
			return err
		})
		if err != nil {
			return nil, err
		}
		secName := fmt.Sprintf("Secret %s/%s", installNamespace, issuerSecret)
		var sec *corev1.Secret
		secOK, err := get(secName, func() (err error) {
			sec, err = cs.CoreV1().Secrets(installNamespace).Get(ctx, issuerSecret, metav1.GetOptions{})
			return err
		})
		if err != nil {
			return nil, err
		}
		switch {
		case ok && secOK:
			issuer := identity.KeyPair{CertPEM: sec.Data[corev1.TLSCertKey], KeyPEM: sec.Data[corev1.TLSPrivateKeyKey]}
			anchors := []byte(cm.Data[trustRootsKey])
			if err := checkClusterIssuer(anchors, issuer, cmName, secName, cluster, now); err != nil {
				return nil, err
			}
			certs.anchorsPEM, certs.issuer = anchors, &issuer
		case ok != secOK:
			has, lacks := cmName, secName
			if secOK {
				has, lacks = secName, cmName
			}
			return nil, fmt.Errorf("the Kubernetes cluster %s holds %s but not %s, so its mesh identity cannot be reused: give the trust anchors and issuer with --%s, --%s and --%s, or pass --%s to generate new ones (running meshed pods then need a restart)",
				cluster, has, lacks, flagTrustAnchorsFile, flagIssuerCertFile, flagIssuerKeyFile, flagIgnoreCluster)
		}
	}
	whName := fmt.Sprintf("Secret %s/%s", installNamespace, injectorTLSSecret)
	var wh *corev1.Secret
	ok, err := get(whName, func() (err error) {
		wh, err = cs.CoreV1().Secrets(installNamespace).Get(ctx, injectorTLSSecret, metav1.GetOptions{})
		return err
	})
	if err != nil {
		return nil, err
	}
	if ok {
		serving := identity.KeyPair{CertPEM: wh.Data[corev1.TLSCertKey], KeyPEM: wh.Data[corev1.TLSPrivateKeyKey]}
		ca := wh.Data["ca.crt"]
		if err := checkWebhookCertificate(ca, serving, now); err != nil {
			return nil, fmt.Errorf("the webhook certificate in %s on the Kubernetes cluster %s: %w: delete the Secret (kubectl -n %s delete secret %s) and run install again to generate a new one, or pass --%s to generate every certificate anew",
				whName, cluster, err, installNamespace, injectorTLSSecret, flagIgnoreCluster)
		}
		certs.webhookCA, certs.webhook = ca, &serving
	}
	return certs, nil
}

// checkClusterIssuer checks the trust anchors and issuer read from the
// objects cmName and secName, naming the object at fault and how to
// proceed.
func checkClusterIssuer(anchorsPEM []byte, issuer identity.KeyPair, cmName, secName, cluster string, now time.Time) error {
	err := identity.CheckIssuer(anchorsPEM, issuer.CertPEM, issuer.KeyPEM, now)
	if err == nil {
		return nil
	}
	where := secName
	var ie *identity.IssuerError
	if errors.As(err, &ie) && ie.Input == identity.TrustAnchorsInput {
		where = cmName
	}
	return fmt.Errorf("the Kubernetes cluster %s holds Sluice's identity certificates, but they are not valid: %s: %w: give a trust anchor and an issuer it signs with --%s, --%s and --%s (the same anchors keep the running proxies' identities valid), or pass --%s to generate new ones (running meshed pods then need a restart)",
		cluster, where, err, flagTrustAnchorsFile, flagIssuerCertFile, flagIssuerKeyFile, flagIgnoreCluster)
}

// checkWebhookCertificate checks that serving is a key pair valid at now
// for the injector's Service and that caPEM verifies it.
func checkWebhookCertificate(caPEM []byte, serving identity.KeyPair, now time.Time) error {
	pair, err := tls.X509KeyPair(serving.CertPEM, serving.KeyPEM)
	if err != nil {
		return fmt.Errorf("tls.crt and tls.key: %w", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return fmt.Errorf("tls.crt: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return errors.New("ca.crt holds no PEM certificate")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		DNSName:     webhookServiceDNSName(),
		Roots:       roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return fmt.Errorf("tls.crt is not valid for %s: %w", webhookServiceDNSName(), err)
	}
	return nil
}

// loadChart loads the chart embedded in the binary.
func loadChart() (*chart.Chart, error) {
	var files []*chartloader.BufferedFile
	err := fs.WalkDir(charts.FS, charts.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(charts.FS, p)
		if err != nil {
			return err
		}
		files = append(files, &chartloader.BufferedFile{Name: strings.TrimPrefix(p, charts.Dir+"/"), Data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the embedded chart: %w", err)
	}
	ch, err := chartloader.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("loading the embedded chart: %w", err)
	}
	return ch, nil
}

// renderChart renders a chart as `helm template --namespace namespace`
// does: its values merged with vals (validated by the chart's schema), the
// manifests in Helm's install order, each headed by its template's name.
func renderChart(ch *chart.Chart, vals map[string]any, namespace string) ([]byte, error) {
	opts := chartutil.ReleaseOptions{Name: installReleaseName, Namespace: namespace, Revision: 1, IsInstall: true}
	rv, err := chartutil.ToRenderValues(ch, vals, opts, chartutil.DefaultCapabilities.Copy())
	if err != nil {
		return nil, fmt.Errorf("values of chart %s: %w", ch.Name(), err)
	}
	files, err := engine.Render(ch, rv)
	if err != nil {
		return nil, fmt.Errorf("rendering chart %s: %w", ch.Name(), err)
	}
	for name := range files {
		if path.Base(name) == "NOTES.txt" {
			delete(files, name)
		}
	}
	hooks, docs, err := releaseutil.SortManifests(files, nil, releaseutil.InstallOrder)
	if err != nil {
		return nil, fmt.Errorf("chart %s rendered invalid YAML: %w", ch.Name(), err)
	}
	if len(hooks) > 0 {
		return nil, fmt.Errorf("chart %s has hooks (%s), which kubectl apply would not run", ch.Name(), hooks[0].Path)
	}
	var b bytes.Buffer
	for _, d := range docs {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", d.Name, strings.TrimSpace(d.Content))
	}
	return b.Bytes(), nil
}
