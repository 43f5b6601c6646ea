// Package envtest starts a real Kubernetes API server for tests: a
// kube-apiserver and an etcd, run by controller-runtime's envtest, with
// Sluice's CRDs and the Gateway API's experimental-channel CRDs installed
// (the same CRDs `sluice install --crds` prints).
//
// The binaries come from KUBEBUILDER_ASSETS, which hack/envtest.sh builds
// and `make test` exports:
//
//	make envtest
//	export KUBEBUILDER_ASSETS=$(bash hack/envtest.sh --print-dir)
//	go test ./test/envtest/
//
// Without KUBEBUILDER_ASSETS, Start skips the test, unless
// SLUICE_REQUIRE_ENVTEST=1 (as CI sets it): then it fails, saying how to
// build the binaries.
package envtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crenvtest "sigs.k8s.io/controller-runtime/pkg/envtest"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/crds/gatewayapi"
	"github.com/sluicehq/sluice/crds/manifests"
	policyv1beta1 "github.com/sluicehq/sluice/crds/policy/v1beta1"
	sluicev1beta1 "github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// Environment variables that Start reads.
const (
	// AssetsEnv names the directory holding kube-apiserver, etcd and kubectl.
	AssetsEnv = "KUBEBUILDER_ASSETS"
	// RequireEnv set to 1 makes Start fail instead of skipping when
	// KUBEBUILDER_ASSETS is not set.
	RequireEnv = "SLUICE_REQUIRE_ENVTEST"
)

// howToBuild tells a developer how to get the binaries.
const howToBuild = "run `make envtest` (hack/envtest.sh builds kube-apiserver, etcd and kubectl from the Go module proxy, " +
	"once, into ~/.cache/sluice/envtest) and export KUBEBUILDER_ASSETS=$(bash hack/envtest.sh --print-dir); `make test` does both"

// Option changes how Start starts the API server.
type Option func(*options)

type options struct {
	crds bool
}

// WithoutCRDs starts the API server with no CustomResourceDefinition
// installed, for tests that install CRDs themselves.
func WithoutCRDs() Option {
	return func(o *options) { o.crds = false }
}

// Scheme returns a new scheme with the kinds a test talks to the API server
// about: Kubernetes' built-in kinds, CustomResourceDefinitions, Sluice's
// kinds (sluice.dev and policy.sluice.dev) and the Gateway API's v1 and
// v1beta1 kinds.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(apiextensionsv1.AddToScheme(s))
	utilruntime.Must(sluicev1beta1.AddToScheme(s))
	utilruntime.Must(policyv1beta1.AddToScheme(s))
	utilruntime.Must(gwv1.Install(s))
	utilruntime.Must(gwv1beta1.Install(s))
	return s
}

// CRDs returns the CRDs that Start installs: Sluice's (crds/manifests) and
// the Gateway API's experimental channel (crds/gatewayapi), decoded from
// the manifests embedded in the sluice binary.
func CRDs() ([]*apiextensionsv1.CustomResourceDefinition, error) {
	var all []*apiextensionsv1.CustomResourceDefinition
	for _, src := range []struct {
		name string
		yaml []byte
	}{
		{"crds/manifests", manifests.All()},
		{"crds/gatewayapi", gatewayapi.All()},
	} {
		crds, err := DecodeCRDs(src.yaml)
		if err != nil {
			return nil, fmt.Errorf("decoding the CRDs of %s: %w", src.name, err)
		}
		all = append(all, crds...)
	}
	return all, nil
}

// DecodeCRDs decodes a multi-document YAML stream of
// CustomResourceDefinitions. Empty documents are skipped; a document of
// any other kind is an error.
func DecodeCRDs(stream []byte) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	var crds []*apiextensionsv1.CustomResourceDefinition
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return crds, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading YAML document %d: %w", i, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.Unmarshal(doc, crd); err != nil {
			return nil, fmt.Errorf("decoding YAML document %d: %w", i, err)
		}
		if crd.Kind == "" && crd.Name == "" {
			continue // only comments
		}
		if crd.APIVersion != apiextensionsv1.SchemeGroupVersion.String() || crd.Kind != "CustomResourceDefinition" {
			return nil, fmt.Errorf("YAML document %d (%q) is a %s %s, not an apiextensions.k8s.io/v1 CustomResourceDefinition",
				i, crd.Name, crd.APIVersion, crd.Kind)
		}
		crds = append(crds, crd)
	}
}

// Assets returns the directory of the envtest binaries (KUBEBUILDER_ASSETS).
// Without it, it skips the test, or fails it if SLUICE_REQUIRE_ENVTEST=1.
// A directory without kube-apiserver or etcd always fails the test.
func Assets(t testing.TB) string {
	t.Helper()
	dir := os.Getenv(AssetsEnv)
	if dir == "" {
		msg := AssetsEnv + " is not set, so there is no kube-apiserver or etcd to test against: " + howToBuild
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("%s (%s=1: this test must not be skipped)", msg, RequireEnv)
		}
		t.Skip(msg)
	}
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		p := filepath.Join(dir, bin)
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			t.Fatalf("%s=%s has no executable %s: %s", AssetsEnv, dir, bin, howToBuild)
		}
	}
	return dir
}

// Start starts a kube-apiserver and an etcd from KUBEBUILDER_ASSETS (see
// Assets for what happens without them), installs Sluice's and the Gateway
// API's CRDs unless WithoutCRDs is given, waits until they are served, and
// returns an admin's config and a client whose scheme is Scheme(). The
// processes are stopped, and their data removed, when the test ends.
func Start(t testing.TB, opts ...Option) (*rest.Config, client.Client) {
	t.Helper()
	o := options{crds: true}
	for _, opt := range opts {
		opt(&o)
	}
	assets := Assets(t)
	scheme := Scheme()

	env := &crenvtest.Environment{
		Scheme:                   scheme,
		BinaryAssetsDirectory:    assets,
		UseExistingCluster:       ptr(false),      // never a cluster from the environment
		ControlPlaneStartTimeout: 2 * time.Minute, // a failure guard on a busy 2-core machine
		ControlPlaneStopTimeout:  time.Minute,
	}
	if o.crds {
		crds, err := CRDs()
		if err != nil {
			t.Fatalf("loading the CRDs to install: %v", err)
		}
		env.CRDInstallOptions.CRDs = crds
		env.CRDInstallOptions.MaxTime = 2 * time.Minute
	}

	began := time.Now()
	cfg, err := env.Start()
	if err != nil {
		// Start can fail after launching a process: stop whatever runs.
		stopErr := env.Stop()
		t.Fatalf("starting the test API server (kube-apiserver and etcd from %s): %v (stopping: %v)", assets, err, stopErr)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping the test API server: %v", err)
		}
	})

	t.Logf("test API server at %s ready in %s, %d CRDs installed", cfg.Host,
		time.Since(began).Round(time.Millisecond), len(env.CRDInstallOptions.CRDs))

	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatalf("creating a client for the test API server at %s: %v", cfg.Host, err)
	}
	return cfg, c
}

// Kubeconfig writes a kubeconfig file for cfg (as Start returns it) into a
// directory of the test's own and returns its path, for commands such as
// kubectl and sluice that take --kubeconfig.
func Kubeconfig(t testing.TB, cfg *rest.Config) string {
	t.Helper()
	const name = "envtest"
	kc := clientcmdapi.NewConfig()
	kc.Clusters[name] = &clientcmdapi.Cluster{
		Server:                   cfg.Host,
		CertificateAuthorityData: cfg.CAData,
	}
	kc.AuthInfos[name] = &clientcmdapi.AuthInfo{
		ClientCertificateData: cfg.CertData,
		ClientKeyData:         cfg.KeyData,
		Token:                 cfg.BearerToken,
	}
	kc.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name, Namespace: "default"}
	kc.CurrentContext = name
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatalf("writing a kubeconfig for the test API server: %v", err)
	}
	return path
}

// Kubectl returns the path of the kubectl in KUBEBUILDER_ASSETS (which
// hack/envtest.sh builds with the API server), skipping or failing the test
// as Assets does when there are no assets, and failing it when the
// directory has no kubectl.
func Kubectl(t testing.TB) string {
	t.Helper()
	p := filepath.Join(Assets(t), "kubectl")
	if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		t.Fatalf("%s=%s has no executable kubectl: %s", AssetsEnv, os.Getenv(AssetsEnv), howToBuild)
	}
	return p
}

func ptr[T any](v T) *T { return &v }
