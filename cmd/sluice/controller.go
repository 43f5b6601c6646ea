package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/sluicehq/sluice/analysis"
	"github.com/sluicehq/sluice/analysis/notify"
	"github.com/sluicehq/sluice/analysis/prometheus"
	"github.com/sluicehq/sluice/analysis/template"
	"github.com/sluicehq/sluice/analysis/webhook"
	"github.com/sluicehq/sluice/canary"
	ck "github.com/sluicehq/sluice/canary/kubernetes"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
	"github.com/sluicehq/sluice/mesh/telemetry"
)

// controllerOptions are the flags of `sluice controller`.
type controllerOptions struct {
	kubeconfig      string
	kubeContext     string
	namespace       string
	metricsAddr     string
	healthAddr      string
	leaderElect     bool
	leaderNamespace string
	leaderID        string
	telemetryAddr   string
	prometheusAddr  string
	controllerName  string
	cluster         string
	workers         int
	logLevel        string

	// skipNameValidation is for tests that run the controller twice in
	// one process.
	skipNameValidation bool
}

func newControllerCmd() *cobra.Command {
	o := &controllerOptions{}
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Run the canary controller on a Kubernetes cluster",
		Long: `Run Sluice's canary controller: it reconciles Canaries (sluice.dev/v1beta1),
creating each target's primary Deployment, Services and HTTPRoute, shifting
traffic step by step as the mesh's telemetry (or a MetricTemplate's provider)
judges each step, and promoting or rolling back. One replica at a time is
active (leader election); /healthz and /readyz are served on
--health-probe-bind-address, Prometheus metrics on --metrics-bind-address.`,
		Example: `  sluice controller --telemetry-addr http://sluice-telemetry.sluice:9995`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := roleLogger("controller", o.logLevel, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			// controller-runtime and client-go log through slog too. These
			// are process-wide: set once, before anything logs.
			ctrl.SetLogger(logr.FromSlogHandler(logger.Handler()))
			klog.SetSlogLogger(logger)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runController(ctx, o, logger)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; in-cluster configuration, then $KUBECONFIG and ~/.kube/config when empty")
	f.StringVar(&o.kubeContext, "context", "", "kubeconfig context to use")
	f.StringVar(&o.namespace, "watch-namespace", "", "reconcile the Canaries of this namespace only; all namespaces when empty")
	f.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", `address of the Prometheus metrics endpoint; "0" turns it off`)
	f.StringVar(&o.healthAddr, "health-probe-bind-address", ":8081", "address of the /healthz and /readyz endpoints")
	f.BoolVar(&o.leaderElect, "leader-elect", true, "run one active replica at a time, elected through a Lease")
	f.StringVar(&o.leaderNamespace, "leader-election-namespace", "", "namespace of the leader-election Lease; the controller's own namespace when empty")
	f.StringVar(&o.leaderID, "leader-election-id", "sluice-controller.sluice.dev", "name of the leader-election Lease")
	f.StringVar(&o.telemetryAddr, "telemetry-addr", "http://sluice-telemetry:9995", "base URL of the mesh telemetry (sluice telemetry), read by the built-in checks and the sluice metric provider")
	f.StringVar(&o.prometheusAddr, "metrics-server", "", "Prometheus address of MetricTemplates without one (Flagger's -metrics-server)")
	f.StringVar(&o.controllerName, "gateway-controller-name", ck.DefaultControllerName, "GAMMA controller whose HTTPRoute parent status means the mesh accepted a route")
	f.StringVar(&o.cluster, "cluster-name", "", "cluster name shown in alerts")
	f.IntVar(&o.workers, "concurrency", 4, "canaries reconciled at once")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}

// runController runs the controller until ctx ends.
func runController(ctx context.Context, o *controllerOptions, logger *slog.Logger) error {
	cfg, err := roleRESTConfig(o.kubeconfig, o.kubeContext)
	if err != nil {
		return err
	}
	opts := ctrl.Options{
		Scheme:                        controllerScheme(),
		Metrics:                       metricsserver.Options{BindAddress: o.metricsAddr},
		HealthProbeBindAddress:        o.healthAddr,
		LeaderElection:                o.leaderElect,
		LeaderElectionID:              o.leaderID,
		LeaderElectionNamespace:       o.leaderNamespace,
		LeaderElectionReleaseOnCancel: true,
		Logger:                        logr.FromSlogHandler(logger.Handler()),
		// ConfigMaps and Secrets are read one by one, not cached: caching
		// would hold every Secret of the cluster in memory.
		Client: client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.ConfigMap{}, &corev1.Secret{}}}},
	}
	if o.namespace != "" {
		opts.Cache = cache.Options{DefaultNamespaces: map[string]cache.Config{o.namespace: {}}}
	}
	mgr, err := ctrl.NewManager(cfg, opts)
	if err != nil {
		return fmt.Errorf("creating the controller manager for %s: %w", cfg.Host, err)
	}
	reader := mgr.GetAPIReader()

	// Analysis: the built-in checks on the mesh telemetry, and metric
	// templates on their providers.
	src := &telemetry.Client{BaseURL: strings.TrimSuffix(o.telemetryAddr, "/")}
	analyzer := canary.AnalyzerFromProvider(nil)
	runner := template.NewRunner(template.Options{
		Templates: template.GetterFunc(func(ctx context.Context, ns, name string) (*v1beta1.MetricTemplate, error) {
			t := &v1beta1.MetricTemplate{}
			if err := reader.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, t); err != nil {
				return nil, fmt.Errorf("metric template %s/%s: %w", ns, name, err)
			}
			return t, nil
		}),
		Providers: map[v1beta1.MetricProviderType]template.Factory{
			v1beta1.MetricProviderSluice:     template.SluiceFactory(src),
			v1beta1.MetricProviderPrometheus: prometheus.Factory(secretReader{reader, prometheus.ErrNotFound}, prometheus.Options{DefaultAddress: o.prometheusAddr}),
		},
		Vars:   analyzer.TemplateVars,
		Logger: logger,
	})
	defer runner.Close()
	analyzer.Provider = analysis.Mux{Builtin: analysis.NewBuiltin(src), Templates: runner}

	// Alerts, through the canaries' AlertProviders.
	sender := notify.NewSender(notify.Options{Secrets: secretReader{reader, notify.ErrSecretNotFound}, Cluster: o.cluster, Logger: logger})
	dispatcher := notify.NewDispatcher(ctx, sender, notify.DispatcherOptions{Logger: logger})
	defer dispatcher.Close()
	notifier := canary.NotifierFromDispatcher(dispatcher, func(c *v1beta1.Canary, a v1beta1.CanaryAlert) (notify.Target, error) {
		ns := a.ProviderRef.Namespace
		if ns == "" {
			ns = c.Namespace
		}
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		p := &v1beta1.AlertProvider{}
		if err := reader.Get(ctx, types.NamespacedName{Namespace: ns, Name: a.ProviderRef.Name}, p); err != nil {
			return notify.Target{}, err
		}
		return notify.NewTarget(a, p), nil
	})

	r := ck.NewReconciler(ck.Options{
		Client:                  mgr.GetClient(),
		APIReader:               reader,
		Analyzer:                analyzer,
		Hooks:                   canary.HooksFromCaller(&webhook.Caller{}),
		Notifier:                notifier,
		Recorder:                mgr.GetEventRecorder("sluice-controller"),
		Metrics:                 canary.NewMetrics(crmetrics.Registry),
		Logger:                  logger,
		ControllerName:          o.controllerName,
		MaxConcurrentReconciles: o.workers,
		SkipNameValidation:      o.skipNameValidation,
	})
	if err := r.SetupWithManager(ctx, mgr); err != nil {
		return fmt.Errorf("setting up the canary controller: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("adding the health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("informers", func(req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), time.Second)
		defer cancel()
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return errors.New("the informer caches are not synced yet")
		}
		return nil
	}); err != nil {
		return fmt.Errorf("adding the readiness check: %w", err)
	}
	logger.Info("starting the canary controller", "apiserver", cfg.Host, "leaderElection", o.leaderElect,
		"telemetry", src.BaseURL, "namespace", o.namespace)
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("running the canary controller: %w", err)
	}
	return nil
}

// controllerScheme knows the kinds the controller reads and writes.
func controllerScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(v1beta1.AddToScheme(s))
	utilruntime.Must(gatewayv1.Install(s))
	return s
}

// secretReader reads one key of a Secret from the API server, for the
// metric and alert providers' secretRefs; notFound is the error its caller
// expects for a missing Secret or key.
type secretReader struct {
	r        client.Reader
	notFound error
}

func (s secretReader) Get(namespace, name, key string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sec := &corev1.Secret{}
	if err := s.r.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, sec); err != nil {
		if apierrors.IsNotFound(err) {
			return "", fmt.Errorf("secret %s/%s: %w", namespace, name, s.notFound)
		}
		return "", fmt.Errorf("reading secret %s/%s: %w", namespace, name, err)
	}
	v, ok := sec.Data[key]
	if !ok {
		return "", fmt.Errorf("secret %s/%s has no key %q: %w", namespace, name, key, s.notFound)
	}
	return string(v), nil
}
