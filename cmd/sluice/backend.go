package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/sluicehq/sluice/canary"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
	"github.com/sluicehq/sluice/local/up"
)

// canaryBackend is where the canary commands read and change canaries: a
// running `sluice up` (localBackend) or a Kubernetes cluster (kubeBackend).
// The commands hold every rule of their output and exit codes; a backend
// only fetches and sends.
type canaryBackend interface {
	// NameNamespace is the namespace of a canary NAME given without -n.
	NameNamespace() string
	// ListNamespace is the namespace `get canaries` lists without -n or -A;
	// "" for every namespace.
	ListNamespace() string
	// List returns the canaries of namespace ("" for every namespace).
	List(ctx context.Context, namespace string) ([]v1beta1.Canary, error)
	// Get returns one canary and, when the backend knows it, its target's
	// current revision. A canary that does not exist is a bad-input error.
	Get(ctx context.Context, namespace, name string) (*canaryState, error)
	// Watch calls changed once when it starts watching the canaries of
	// namespace ("" for every namespace; name "" for every canary), and
	// again whenever they may have changed, until ctx ends (nil), changed
	// says stop (nil) or returns an error (that error).
	Watch(ctx context.Context, namespace, name string, changed func() (stop bool, err error)) error
	// SetAction asks for a manual action on a canary and says what was done.
	SetAction(ctx context.Context, namespace, name string, kind canary.ManualKind) (string, error)
	// Apply sends the manifest file (named file) and says what it applied;
	// objects without a namespace go to namespace.
	Apply(ctx context.Context, file string, data []byte, namespace string) (string, error)
}

// localNamespace is the namespace of a NAME without -n in local mode.
const localNamespace = "default"

// localBackend is a running `sluice up`, through its API.
type localBackend struct {
	c *up.Client
}

func (localBackend) NameNamespace() string { return localNamespace }

// ListNamespace is every namespace: local mode runs a handful of canaries.
func (localBackend) ListNamespace() string { return "" }

func (b localBackend) List(ctx context.Context, namespace string) ([]v1beta1.Canary, error) {
	list, err := b.c.Canaries(ctx)
	if err != nil {
		return nil, err
	}
	if namespace == "" {
		return list, nil
	}
	out := list[:0]
	for _, c := range list {
		if c.Namespace == namespace {
			out = append(out, c)
		}
	}
	return out, nil
}

func (b localBackend) Get(ctx context.Context, namespace, name string) (*canaryState, error) {
	list, err := b.c.Canaries(ctx)
	if err != nil {
		return nil, err
	}
	for _, cn := range list {
		if cn.Namespace != namespace || cn.Name != name {
			continue
		}
		st := &canaryState{c: cn}
		if s, err := b.c.Status(ctx); err == nil {
			for _, w := range s.Workloads {
				if w.Namespace == namespace && w.Name == cn.Spec.TargetRef.Name {
					st.revision = w.Revision
				}
			}
		}
		return st, nil
	}
	return nil, noCanary(namespace, name)
}

// localPollInterval is how often localBackend.Watch asks again: the local
// API has no watch.
const localPollInterval = time.Second

func (b localBackend) Watch(ctx context.Context, _, _ string, changed func() (bool, error)) error {
	for {
		stop, err := changed()
		if err != nil || stop {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(localPollInterval):
		}
	}
}

func (b localBackend) SetAction(ctx context.Context, namespace, name string, kind canary.ManualKind) (string, error) {
	return b.c.RequestAction(ctx, namespace, name, kind)
}

func (b localBackend) Apply(ctx context.Context, file string, data []byte, _ string) (string, error) {
	if _, err := up.CheckManifest(file, data); err != nil {
		return "", badInput("%w", err)
	}
	return b.c.Apply(ctx, filepath.Base(file), data)
}

// noCanary is the error for a canary that does not exist.
func noCanary(namespace, name string) error {
	return badInput("no canary %s/%s (see `sluice get canaries -n %s`)", namespace, name, namespace)
}

// target is where a command acts: exactly one of local and kube is set.
type target struct {
	local *up.Client
	kube  *kubeTarget
}

// localProbeTimeout bounds the question whether a local API answers.
const localProbeTimeout = 2 * time.Second

// resolveTarget chooses where commands act:
//
//   - --kubeconfig or --context given: that cluster;
//   - --state-dir (or $SLUICE_STATE_DIR) given: that sluice up;
//   - otherwise the sluice up of the default state directory when its API
//     answers, else the cluster of the usual Kubernetes configuration
//     (in-cluster, $KUBECONFIG, ~/.kube/config).
func (g *globalOptions) resolveTarget(ctx context.Context) (*target, error) {
	if g.kubeconfig != "" || g.kubeContext != "" {
		kt, err := newKubeTarget(g)
		if err != nil {
			return nil, err
		}
		return &target{kube: kt}, nil
	}
	c, localErr := up.Discover(g.stateDir)
	if localErr == nil {
		if g.stateDirGiven() {
			return &target{local: c}, nil
		}
		pctx, cancel := context.WithTimeout(ctx, localProbeTimeout)
		_, localErr = c.Status(pctx)
		cancel()
		if localErr == nil {
			return &target{local: c}, nil
		}
	}
	if g.stateDirGiven() {
		return nil, localErr
	}
	kt, err := newKubeTarget(g)
	if errors.Is(err, errNoKubeconfig) {
		return nil, fmt.Errorf("%w; and no Kubernetes cluster is configured (in-cluster, $KUBECONFIG, ~/.kube/config, or --kubeconfig/--context)", localErr)
	}
	if err != nil {
		return nil, err
	}
	return &target{kube: kt}, nil
}

// canaryBackend returns the backend of the chosen target; failing that,
// exit 3.
func (g *globalOptions) canaryBackend(ctx context.Context) (canaryBackend, error) {
	t, err := g.resolveTarget(ctx)
	if err != nil {
		return nil, &exitError{code: exitUnreachable, err: err}
	}
	if t.kube != nil {
		return t.kube.canaries(), nil
	}
	return localBackend{c: t.local}, nil
}
