package main

import (
	"bytes"
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
	"k8s.io/apimachinery/pkg/util/validation"

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
	proxyLogLevel        string
	defaultInboundPolicy string
	trustAnchorsFile     string
	issuerCertFile       string
	issuerKeyFile        string
	// now is the clock that generated certificates start at and given ones
	// are checked against.
	now func() time.Time
}

func newInstallCmd() *cobra.Command {
	o := &installOptions{now: time.Now}
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Print the Kubernetes manifests that install Sluice",
		Long: `Print the manifests that install Sluice's control plane on a Kubernetes
cluster, in namespace ` + installNamespace + `, for kubectl to apply: the controller, destination,
identity, telemetry and injector Deployments, their Services, ServiceAccounts
and RBAC, the identity's trust anchors and issuer, and the injector's
webhook configuration and certificate. They are the Helm chart charts/sluice,
embedded in this binary, rendered with values from the flags.

The certificates are generated on every run: a trust anchor (ECDSA P-256,
valid a year) and an issuer it signs, and a CA and serving certificate for
the webhook. Give your own trust anchors and issuer with --` + flagTrustAnchorsFile + `,
--` + flagIssuerCertFile + ` and --` + flagIssuerKeyFile + ` (all three), so that
re-running install keeps the mesh's identities valid.

With --crds, only the CustomResourceDefinitions: Sluice's (sluice.dev,
policy.sluice.dev) and the Gateway API's, experimental channel
` + gatewayapi.BundleVersion + ` (HTTPRoute retry and session persistence are only there).
Install them first.

Apply both server-side: the Gateway API's HTTPRoute CRD is too large for the
annotation that client-side kubectl apply writes.`,
		Example: `  sluice install --crds | kubectl apply --server-side -f -
  sluice install | kubectl apply --server-side -f -
  sluice install --registry registry.example.com/sluice --version v0.3.0 | kubectl apply --server-side -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.crds {
				return writeCRDs(cmd.OutOrStdout())
			}
			out, err := o.render()
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
	f.StringVar(&o.proxyLogLevel, "proxy-log-level", injector.DefaultLogLevel, "default log level of injected proxies: "+strings.Join(proxyLogLevels, ", "))
	f.StringVar(&o.defaultInboundPolicy, "default-inbound-policy", "", "default inbound policy of injected proxies, one of "+strings.Join(injector.DefaultInboundPolicies, ", ")+"; empty leaves the proxy's default")
	f.StringVar(&o.trustAnchorsFile, flagTrustAnchorsFile, "", "PEM file of the trust anchors (instead of generating one)")
	f.StringVar(&o.issuerCertFile, flagIssuerCertFile, "", "PEM file of the issuer certificate, signed by a trust anchor")
	f.StringVar(&o.issuerKeyFile, flagIssuerKeyFile, "", "PEM file of the issuer's ECDSA key")
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
func (o *installOptions) render() ([]byte, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	vals, err := o.values()
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
	if !slices.Contains(proxyLogLevels, o.proxyLogLevel) {
		errs = append(errs, fmt.Errorf("--proxy-log-level %q: want one of %s", o.proxyLogLevel, strings.Join(proxyLogLevels, ", ")))
	}
	if o.defaultInboundPolicy != "" && !slices.Contains(injector.DefaultInboundPolicies, o.defaultInboundPolicy) {
		errs = append(errs, fmt.Errorf("--default-inbound-policy %q: want one of %s", o.defaultInboundPolicy, strings.Join(injector.DefaultInboundPolicies, ", ")))
	}
	return errors.Join(errs...)
}

// values builds the chart's values from the flags and the certificates.
func (o *installOptions) values() (map[string]any, error) {
	anchors, issuer, err := o.identityCertificates()
	if err != nil {
		return nil, err
	}
	now := o.now()
	webhookCA, err := identity.NewRootCA("webhook.sluice.dev", now, installCertLifetime)
	if err != nil {
		return nil, fmt.Errorf("generating the webhook's CA: %w", err)
	}
	service := injector.WebhookServiceName + "." + installNamespace + ".svc"
	serving, err := identity.NewServingCertificate(webhookCA, []string{service, service + "." + o.clusterDomain}, now, installCertLifetime)
	if err != nil {
		return nil, fmt.Errorf("generating the webhook's serving certificate: %w", err)
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
			"caBundle": string(webhookCA.CertPEM),
			"crtPEM":   string(serving.CertPEM),
			"keyPEM":   string(serving.KeyPEM),
		},
		"controller": map[string]any{
			"replicas": o.controllerReplicas,
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
