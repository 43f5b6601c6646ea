package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/apimachinery/pkg/watch"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/canary"
	kcanary "github.com/sluicehq/sluice/canary/kubernetes"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// errNoKubeconfig is the error of newKubeTarget when no Kubernetes
// configuration exists at all.
var errNoKubeconfig = errors.New("no Kubernetes configuration")

// fieldManager is the field manager of what the CLI applies server-side.
const fieldManager = "sluice"

// kubeTarget is a Kubernetes cluster, as the kubeconfig describes it.
type kubeTarget struct {
	cfg *rest.Config
	// namespace is -n, else the kubeconfig context's namespace.
	namespace string
	// context names the kubeconfig context (empty in-cluster).
	context string
	client  client.WithWatch
}

// kubeScheme holds the kinds the CLI reads and writes on a cluster.
func kubeScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(apiextensionsv1.AddToScheme(s))
	utilruntime.Must(v1beta1.AddToScheme(s))
	return s
}

// quietControllerRuntime gives controller-runtime's client, which logs
// the API server's warnings, a logger that drops them, once: without one it
// prints a stack trace of its own after 30 s (a long status --wait).
var quietControllerRuntime = sync.OnceFunc(func() {
	ctrllog.SetLogger(logr.Discard())
})

// newKubeTarget loads the Kubernetes configuration: --kubeconfig, else
// in-cluster, $KUBECONFIG or ~/.kube/config; --context, else the current
// context. The error wraps errNoKubeconfig when there is none.
func newKubeTarget(g *globalOptions) (*kubeTarget, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if g.kubeconfig != "" {
		rules.ExplicitPath = g.kubeconfig
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: g.kubeContext})
	cfg, err := cc.ClientConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			return nil, fmt.Errorf("%w: %v", errNoKubeconfig, err)
		}
		return nil, fmt.Errorf("loading the Kubernetes configuration (--kubeconfig %q, --context %q): %w", g.kubeconfig, g.kubeContext, err)
	}
	ns := g.namespace
	if ns == "" {
		if ns, _, err = cc.Namespace(); err != nil || ns == "" {
			ns = "default"
		}
	}
	kctx := g.kubeContext
	if raw, err := cc.RawConfig(); kctx == "" && err == nil {
		kctx = raw.CurrentContext
	}
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "sluice/" + version
	cfg.QPS, cfg.Burst = 50, 100 // check asks many small questions at once
	quietControllerRuntime()
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: kubeScheme()})
	if err != nil {
		return nil, fmt.Errorf("connecting to the Kubernetes API server at %s: %w", cfg.Host, err)
	}
	return &kubeTarget{cfg: cfg, namespace: ns, context: kctx, client: c}, nil
}

// String names the cluster for messages.
func (k *kubeTarget) String() string {
	if k.context != "" {
		return fmt.Sprintf("%s (context %s)", k.cfg.Host, k.context)
	}
	return k.cfg.Host
}

// detail names the cluster for check's first line.
func (k *kubeTarget) detail() string {
	if k.context != "" {
		return k.cfg.Host + ", context " + k.context
	}
	return k.cfg.Host + ", in-cluster"
}

// canaries returns the canary backend of the cluster.
func (k *kubeTarget) canaries() *kubeBackend { return &kubeBackend{k: k} }

// kubeBackend reads and changes Canaries through the API server.
type kubeBackend struct {
	k *kubeTarget
	// now is the time of action-at annotations; nil means time.Now.
	now func() time.Time
}

func (b *kubeBackend) NameNamespace() string { return b.k.namespace }
func (b *kubeBackend) ListNamespace() string { return b.k.namespace }

// apiError says what a failed request about kind means for a user.
func (b *kubeBackend) apiError(err error, what string) error {
	if meta.IsNoMatchError(err) {
		return fmt.Errorf("%s: the cluster %s has no Sluice CRDs: run `sluice install --crds | kubectl apply --server-side -f -`", what, b.k)
	}
	return fmt.Errorf("%s on %s: %w", what, b.k, err)
}

func (b *kubeBackend) List(ctx context.Context, namespace string) ([]v1beta1.Canary, error) {
	var list v1beta1.CanaryList
	if err := b.k.client.List(ctx, &list, client.InNamespace(namespace)); err != nil {
		return nil, b.apiError(err, "listing canaries")
	}
	slices.SortFunc(list.Items, func(a, b v1beta1.Canary) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	for i := range list.Items {
		// As kubectl -o yaml prints items: with their kind, without
		// managedFields.
		list.Items[i].APIVersion, list.Items[i].Kind = v1beta1.GroupVersion.String(), "Canary"
		list.Items[i].ManagedFields = nil
	}
	return list.Items, nil
}

func (b *kubeBackend) Get(ctx context.Context, namespace, name string) (*canaryState, error) {
	var c v1beta1.Canary
	err := b.k.client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, &c)
	if apierrors.IsNotFound(err) {
		return nil, noCanary(namespace, name)
	}
	if err != nil {
		return nil, b.apiError(err, fmt.Sprintf("reading canary %s/%s", namespace, name))
	}
	// The target's revision is the controller's to compute: the verdict
	// goes by the canary's observedRevision.
	return &canaryState{c: c}, nil
}

// rewatchPause is the pause before watching again after a watch ended.
const rewatchPause = time.Second

func (b *kubeBackend) Watch(ctx context.Context, namespace, name string, changed func() (bool, error)) error {
	opts := []client.ListOption{client.InNamespace(namespace)}
	if name != "" {
		opts = append(opts, client.MatchingFields{"metadata.name": name})
	}
	for {
		w, err := b.k.client.Watch(ctx, &v1beta1.CanaryList{}, opts...)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return b.apiError(err, "watching canaries")
		}
		stop, err := b.follow(ctx, w, changed)
		w.Stop()
		if err != nil || stop || ctx.Err() != nil {
			return err
		}
		// The server ended the watch (its timeout, or an error event):
		// watch again, after a pause so that a failing watch does not spin.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(rewatchPause):
		}
	}
}

// follow calls changed once, then for every event of w, until w ends.
func (b *kubeBackend) follow(ctx context.Context, w watch.Interface, changed func() (bool, error)) (bool, error) {
	if stop, err := changed(); err != nil || stop {
		return stop, err
	}
	for {
		select {
		case <-ctx.Done():
			return false, nil
		case ev, ok := <-w.ResultChan():
			if !ok || ev.Type == watch.Error {
				return false, nil
			}
			if stop, err := changed(); err != nil || stop {
				return stop, err
			}
		}
	}
}

func (b *kubeBackend) SetAction(ctx context.Context, namespace, name string, kind canary.ManualKind) (string, error) {
	now := time.Now
	if b.now != nil {
		now = b.now
	}
	at := now().UTC().Format(time.RFC3339Nano)
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		kcanary.ActionAnnotation:   string(kind),
		kcanary.ActionAtAnnotation: at,
	}}})
	if err != nil {
		return "", err
	}
	c := &v1beta1.Canary{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	if err := b.k.client.Patch(ctx, c, client.RawPatch(types.MergePatchType, patch)); err != nil {
		if apierrors.IsNotFound(err) {
			return "", noCanary(namespace, name)
		}
		return "", b.apiError(err, fmt.Sprintf("annotating canary %s/%s", namespace, name))
	}
	return fmt.Sprintf("%s requested (%s=%s); the controller acts on it at its next reconcile", kind, kcanary.ActionAtAnnotation, at), nil
}

// applyKinds are the kinds `sluice apply` sends to a cluster.
var applyKinds = []string{"Canary", "MetricTemplate", "AlertProvider"}

// decodeApply reads the objects of a manifest for a cluster: every document
// must be a sluice.dev/v1beta1 Canary, MetricTemplate or AlertProvider;
// those without a namespace get namespace.
func decodeApply(file string, data []byte, namespace string) ([]*unstructured.Unstructured, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []*unstructured.Unstructured
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, badInput("%s: reading YAML document %d: %w", file, i, err)
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			return nil, badInput("%s: YAML document %d: %w", file, i, err)
		}
		if len(u.Object) == 0 {
			continue // empty or only comments
		}
		gvk := u.GroupVersionKind()
		if gvk.GroupVersion() != v1beta1.GroupVersion || !slices.Contains(applyKinds, gvk.Kind) {
			return nil, badInput("%s: document %d is a %s %q (apiVersion %q): sluice apply sends only %s of %s to a cluster; apply other kinds with kubectl",
				file, i, dash(gvk.Kind), u.GetName(), u.GetAPIVersion(), strings.Join(applyKinds, ", "), v1beta1.GroupVersion)
		}
		if u.GetName() == "" {
			return nil, badInput("%s: document %d, a %s, has no metadata.name", file, i, gvk.Kind)
		}
		if u.GetNamespace() == "" {
			u.SetNamespace(namespace)
		}
		objs = append(objs, u)
	}
	if len(objs) == 0 {
		return nil, badInput("%s holds no object", file)
	}
	return objs, nil
}

func (b *kubeBackend) Apply(ctx context.Context, file string, data []byte, namespace string) (string, error) {
	objs, err := decodeApply(file, data, namespace)
	if err != nil {
		return "", err
	}
	var msgs []string
	for _, u := range objs {
		ref := fmt.Sprintf("%s %s/%s", u.GetKind(), u.GetNamespace(), u.GetName())
		err := b.k.client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(fieldManager), client.ForceOwnership)
		if err != nil {
			if apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) {
				return "", badInput("%s: %s: %w", file, ref, err)
			}
			return "", b.apiError(err, "applying "+ref)
		}
		msgs = append(msgs, ref+" applied (server-side, field manager "+fieldManager+")")
	}
	return strings.Join(msgs, "\n"), nil
}
