package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	meshk8s "github.com/sluicehq/sluice/mesh/kubernetes"
	"github.com/sluicehq/sluice/mesh/telemetry"
)

// telemetryOptions are the flags of `sluice telemetry`.
type telemetryOptions struct {
	roleOptions
	addr           string
	scrapeInterval time.Duration
	retention      time.Duration
	scrapeTimeout  time.Duration
	namespace      string
	metricsPort    int
}

func newTelemetryCmd() *cobra.Command {
	o := &telemetryOptions{}
	cmd := &cobra.Command{
		Use:   "telemetry",
		Short: "Run the mesh's telemetry on a Kubernetes cluster",
		Long: `Run Sluice's telemetry: it finds the meshed pods (those running a
sluice-proxy container) through the API server, scrapes their proxies'
/metrics (port 4191) every --scrape-interval, keeps short windows of golden
metrics labelled with each pod's namespace, workload and revision
(annotation sluice.dev/revision), and answers the controller's and
sluice stat's queries over HTTP on --addr. /healthz, /readyz (the pods are
listed) and /metrics are on --admin-addr.`,
		Example: `  sluice telemetry --scrape-interval 10s`,
		Args:    cobra.NoArgs,
	}
	cmd.RunE = roleCommand("telemetry", &o.roleOptions, o.validate, func(ctx context.Context, logger *slog.Logger) error {
		return runTelemetry(ctx, o, logger)
	})
	f := cmd.Flags()
	o.addFlags(f)
	f.StringVar(&o.addr, "addr", ":9995", "address of the telemetry HTTP API")
	f.DurationVar(&o.scrapeInterval, "scrape-interval", 10*time.Second, "time between two scrapes of every proxy")
	f.DurationVar(&o.retention, "retention", telemetry.DefaultRetention, "how long scraped data is kept")
	f.DurationVar(&o.scrapeTimeout, "scrape-timeout", telemetry.DefaultTimeout, "time limit of one scrape")
	f.StringVar(&o.namespace, "namespace", "", "scrape the pods of this namespace only; all namespaces when empty")
	f.IntVar(&o.metricsPort, "proxy-metrics-port", meshk8s.DefaultProxyAdminPort, "port of the proxies' /metrics")
	return cmd
}

// validate checks the flags.
func (o *telemetryOptions) validate() error {
	var errs []error
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"scrape-interval", o.scrapeInterval}, {"retention", o.retention}, {"scrape-timeout", o.scrapeTimeout}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("--%s %s: want a positive duration, such as 10s", d.flag, d.v))
		}
	}
	if o.scrapeInterval > 0 && o.retention > 0 && o.retention < o.scrapeInterval {
		errs = append(errs, fmt.Errorf("--retention %s is shorter than --scrape-interval %s: nothing would be kept", o.retention, o.scrapeInterval))
	}
	if o.metricsPort < 1 || o.metricsPort > 65535 {
		errs = append(errs, fmt.Errorf("--proxy-metrics-port %d is not a port number", o.metricsPort))
	}
	if o.namespace != "" {
		errs = append(errs, checkDNSLabel("namespace", o.namespace))
	}
	return errors.Join(append(errs,
		checkListenAddr("addr", o.addr),
		checkListenAddr("admin-addr", o.adminAddr),
	)...)
}

// runTelemetry runs the telemetry until ctx ends.
func runTelemetry(ctx context.Context, o *telemetryOptions, logger *slog.Logger) error {
	if err := o.validate(); err != nil {
		return err
	}
	cfg, kube, err := roleClient(o.kubeconfig, o.kubeContext)
	if err != nil {
		return err
	}
	targets, err := meshk8s.NewTelemetryTargets(kube, meshk8s.TelemetryTargetsOptions{
		Namespace:   o.namespace,
		MetricsPort: o.metricsPort,
		Log:         logger,
	})
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	store := telemetry.New(targets, telemetry.Options{
		Interval:  o.scrapeInterval,
		Retention: o.retention,
		Timeout:   o.scrapeTimeout,
		Logger:    logger,
	})
	r := &role{
		name:     "telemetry",
		opts:     &o.roleOptions,
		addr:     o.addr,
		log:      logger,
		registry: newRoleRegistry(),
		http:     store.Handler(),
		ready: []readyCheck{func() error {
			select {
			case <-targets.Synced():
				return nil
			default:
				return errors.New("the pods are not listed yet")
			}
		}},
		tasks: []func(context.Context) error{
			targets.Run,
			func(ctx context.Context) error {
				// Scrape once the pods are listed: an earlier round would
				// find no target.
				select {
				case <-targets.Synced():
				case <-ctx.Done():
					return nil
				}
				return store.Run(ctx)
			},
		},
	}
	logger.InfoContext(ctx, "starting the telemetry", "apiserver", cfg.Host, "scrapeInterval", o.scrapeInterval,
		"namespace", o.namespace, "proxyMetricsPort", o.metricsPort)
	return r.serve(ctx)
}
