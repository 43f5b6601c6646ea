package up

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicehq/sluice/analysis"
	"github.com/sluicehq/sluice/analysis/gate"
	"github.com/sluicehq/sluice/analysis/loadtest"
	"github.com/sluicehq/sluice/analysis/notify"
	promprovider "github.com/sluicehq/sluice/analysis/prometheus"
	"github.com/sluicehq/sluice/analysis/template"
	"github.com/sluicehq/sluice/analysis/webhook"
	"github.com/sluicehq/sluice/canary"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// Paths of the integrations the API serves besides its /api/v1 paths.
const (
	// PathGate is the prefix of the gate endpoints (analysis/gate.Server):
	// POST /gate/check|open|close|approve|halt, GET /gate/status, and
	// POST /rollback/check|open|close. A Canary's confirm-* webhook points
	// at <API>/gate/check, its rollback webhook at <API>/rollback/check.
	PathGate     = "/gate/"
	PathRollback = "/rollback/"
	// PathLoadTest is where the built-in load tester (analysis/loadtest)
	// is mounted: a Canary's rollout webhook points at <API>/loadtest/.
	PathLoadTest = "/loadtest/"
	// PathMetrics serves the canary controller's metrics (sluice_canary_*)
	// in Prometheus' text format.
	PathMetrics = "/metrics"
)

// Directories of the state directory used by the integrations.
const (
	// GatesDir holds the gates (gates.json), kept across restarts.
	GatesDir = "gates"
	// SecretsDir holds the Secrets AlertProviders and MetricTemplates name,
	// as files <namespace>/<name>/<key> (see notify.DirSecrets);
	// variables SLUICE_SECRET_<NS>_<NAME>_<KEY> are read too.
	SecretsDir = "secrets"
)

// integrations are what canaries are wired into in local mode: durable
// gates, the load tester, notifications, metric templates and metrics.
type integrations struct {
	gates    *gate.FileStore
	tester   *loadtest.Tester
	registry *prometheus.Registry
	metrics  *canary.Metrics
	secrets  secretChain
}

// openIntegrations opens the gates under the state directory and creates
// the load tester and metrics.
func openIntegrations(stateDir string, log *slog.Logger) (*integrations, error) {
	gates, err := gate.OpenFileStore(filepath.Join(stateDir, GatesDir))
	if err != nil {
		return nil, fmt.Errorf("gates: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &integrations{
		gates:    gates,
		tester:   loadtest.New(loadtest.Options{Logger: log}),
		registry: reg,
		metrics:  canary.NewMetrics(reg),
		secrets:  secretChain{notify.DirSecrets{Dir: filepath.Join(stateDir, SecretsDir)}, notify.EnvSecrets{}},
	}, nil
}

// close stops every load.
func (in *integrations) close() {
	if in != nil {
		_ = in.tester.Close()
	}
}

// routes adds the gates, the load tester and the metrics to mux.
func (in *integrations) routes(mux *http.ServeMux, log *slog.Logger) {
	if in == nil {
		return
	}
	gs := &gate.Server{Store: in.gates, Logger: log}
	mux.Handle(PathGate, gs)
	mux.Handle(PathRollback, gs)
	mux.Handle(PathLoadTest, http.StripPrefix(strings.TrimSuffix(PathLoadTest, "/"), in.tester.Handler(loadtest.HandlerOptions{})))
	mux.Handle("GET "+PathMetrics, promhttp.HandlerFor(in.registry, promhttp.HandlerOpts{}))
}

// secretChain reads a Secret from the first reader that has it.
type secretChain []notify.SecretReader

// Get returns the value of key in the Secret namespace/name.
func (s secretChain) Get(namespace, name, key string) (string, error) {
	var errs []error
	for _, r := range s {
		v, err := r.Get(namespace, name, key)
		if err == nil {
			return v, nil
		}
		errs = append(errs, err)
	}
	return "", errors.Join(errs...)
}

// canaryWiring is what the canary controller is given: its analyzer, hooks
// and notifier. The metric templates and the alert providers are the
// controller's (MetricTemplate, AlertTarget), read once it exists.
type canaryWiring struct {
	analyzer   *canary.ProviderAnalyzer
	runner     *template.Runner
	notifier   *canary.DispatchNotifier
	dispatcher *notify.Dispatcher
	hooks      canary.Hooks
}

// wireCanaries builds the analyzer (the built-in checks and metric
// templates of type prometheus and sluice), the webhook caller and the
// notification dispatcher, which runs until ctx ends. The template getter
// and the alert resolver are set by the caller.
func (u *instance) wireCanaries(ctx context.Context, in *integrations) *canaryWiring {
	src := analysis.StoreSource(u.tel)
	var secrets notify.SecretReader = notify.EnvSecrets{}
	if in != nil {
		secrets = in.secrets
	}
	w := &canaryWiring{analyzer: canary.AnalyzerFromProvider(nil)}
	// The template getter is filled in once the controller exists.
	w.runner = template.NewRunner(template.Options{
		Templates: template.GetterFunc(func(ctx context.Context, namespace, name string) (*v1beta1.MetricTemplate, error) {
			if u.canaries == nil {
				return nil, fmt.Errorf("metric template %s/%s: the canary controller is not running", namespace, name)
			}
			return u.canaries.MetricTemplate(ctx, namespace, name)
		}),
		Providers: map[v1beta1.MetricProviderType]template.Factory{
			v1beta1.MetricProviderPrometheus: promprovider.Factory(promSecrets{secrets}, promprovider.Options{}),
			v1beta1.MetricProviderSluice:     template.SluiceFactory(src),
		},
		Vars:   w.analyzer.TemplateVars,
		Logger: u.log,
	})
	w.analyzer.Provider = analysis.Mux{Builtin: analysis.NewBuiltin(src), Templates: w.runner}
	w.hooks = canary.HooksFromCaller(&webhook.Caller{})
	sender := notify.NewSender(notify.Options{Secrets: secrets, Cluster: "local", Logger: u.log})
	w.dispatcher = notify.NewDispatcher(ctx, sender, notify.DispatcherOptions{Logger: u.log})
	w.notifier = canary.NotifierFromDispatcher(w.dispatcher, nil)
	return w
}

// promSecrets gives the prometheus provider the notify readers: a key that
// does not exist is reported as its ErrNotFound.
type promSecrets struct{ r notify.SecretReader }

// Get returns the value of key in the Secret namespace/name.
func (p promSecrets) Get(namespace, name, key string) (string, error) {
	v, err := p.r.Get(namespace, name, key)
	if errors.Is(err, notify.ErrSecretNotFound) {
		return "", fmt.Errorf("%w (%w)", err, promprovider.ErrNotFound)
	}
	return v, err
}
