package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	sluicev1beta1 "github.com/sluicehq/sluice/crds/sluice/v1beta1"
	"github.com/sluicehq/sluice/mesh/telemetry"
)

// DefaultProxyAdminPort is the port of the proxy's admin server, which
// serves /metrics.
const DefaultProxyAdminPort = 4191

// TelemetryTargetsOptions configure TelemetryTargets.
type TelemetryTargetsOptions struct {
	// Namespace limits the pods watched to one namespace (empty: all).
	Namespace string
	// MetricsPort is the port of the proxies' /metrics (0:
	// DefaultProxyAdminPort).
	MetricsPort int
	// Log receives informer errors and progress (nil: slog.Default()).
	Log *slog.Logger
}

// TelemetryTargets lists the meshed pods' proxies for the mesh telemetry
// (it is a telemetry.TargetSource), from a Pod informer: every Running pod
// with an IP that runs the proxy (a container or native-sidecar init
// container named sluice-proxy) is scraped at http://<podIP>:4191/metrics,
// its metrics labelled with the pod's namespace and name, its workload (the
// Deployment, or the kind and name of its controller) and its revision (the
// pod annotation sluice.dev/revision). Create it with NewTelemetryTargets,
// start it with Run; until it has synced it lists what it has seen so far.
type TelemetryTargets struct {
	opts    TelemetryTargetsOptions
	log     *slog.Logger
	factory informers.SharedInformerFactory
	pods    cache.SharedIndexInformer
	synced  chan struct{}
	running atomic.Bool
}

var _ telemetry.TargetSource = (*TelemetryTargets)(nil)

// NewTelemetryTargets returns the telemetry targets of the pods client
// lists. Nothing is watched until Run.
func NewTelemetryTargets(client clientset.Interface, opts TelemetryTargetsOptions) (*TelemetryTargets, error) {
	if opts.MetricsPort == 0 {
		opts.MetricsPort = DefaultProxyAdminPort
	}
	if opts.MetricsPort < 1 || opts.MetricsPort > 65535 {
		return nil, fmt.Errorf("telemetry targets: metrics port %d is not a port number", opts.MetricsPort)
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	t := &TelemetryTargets{
		opts:   opts,
		log:    log.With("component", "telemetry-targets"),
		synced: make(chan struct{}),
	}
	factoryOpts := []informers.SharedInformerOption{informers.WithTransform(trimObject)}
	if opts.Namespace != "" {
		factoryOpts = append(factoryOpts, informers.WithNamespace(opts.Namespace))
	}
	t.factory = informers.NewSharedInformerFactoryWithOptions(client, 0, factoryOpts...)
	t.pods = t.factory.Core().V1().Pods().Informer()
	if err := t.pods.SetWatchErrorHandlerWithContext(func(ctx context.Context, _ *cache.Reflector, err error) {
		if !errors.Is(err, context.Canceled) {
			t.log.WarnContext(ctx, "watch failed; retrying", "resource", "pods", "error", err)
		}
	}); err != nil {
		return nil, fmt.Errorf("telemetry targets: set up the pod informer: %w", err)
	}
	return t, nil
}

// Run watches pods until ctx is done, then stops the informer and returns
// once it has stopped. It may be called once.
func (t *TelemetryTargets) Run(ctx context.Context) error {
	if !t.running.CompareAndSwap(false, true) {
		return errors.New("telemetry targets: Run called twice")
	}
	t.factory.Start(ctx.Done())
	defer t.factory.Shutdown()
	start := time.Now()
	if !cache.WaitForCacheSync(ctx.Done(), t.pods.HasSynced) {
		return nil // ctx done first
	}
	t.log.InfoContext(ctx, "pods synced", "after", time.Since(start).Round(time.Millisecond))
	close(t.synced)
	<-ctx.Done()
	return nil
}

// Synced returns a channel closed once the informer has listed the pods.
func (t *TelemetryTargets) Synced() <-chan struct{} { return t.synced }

// Targets returns the proxies to scrape, sorted by URL.
func (t *TelemetryTargets) Targets() []telemetry.Target {
	var out []telemetry.Target
	for _, obj := range t.pods.GetStore().List() {
		pod, ok := obj.(*corev1.Pod)
		if !ok || pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP == "" || !isMeshed(pod) {
			continue
		}
		labels := map[string]string{"namespace": pod.Namespace, "pod": pod.Name}
		if kind, name := workloadOf(pod); name != "" {
			labels[workloadLabel(kind)] = name
		}
		if rev := pod.Annotations[sluicev1beta1.RevisionAnnotation]; rev != "" {
			labels["revision"] = rev
		}
		out = append(out, telemetry.Target{
			URL:    "http://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(t.opts.MetricsPort)) + "/metrics",
			Labels: labels,
		})
	}
	slices.SortFunc(out, func(a, b telemetry.Target) int { return strings.Compare(a.URL, b.URL) })
	return out
}

// workloadLabel is the label naming a workload of kind (as workloadOf
// returns it) on telemetry targets: the kind, as Linkerd's scrape
// configuration names it, or "workload" for kinds it does not name.
func workloadLabel(kind string) string {
	switch kind {
	case "deployment", "statefulset", "daemonset", "replicaset", "cronjob", "replicationcontroller":
		return kind
	case "job":
		return "k8s_job"
	}
	return "workload"
}
