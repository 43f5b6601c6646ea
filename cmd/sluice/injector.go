package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	"github.com/sluicehq/sluice/mesh/identity"
	"github.com/sluicehq/sluice/mesh/injector"
)

// injectorOptions are the flags of `sluice injector`.
type injectorOptions struct {
	kubeconfig  string
	kubeContext string
	addr        string
	adminAddr   string
	certFile    string
	keyFile     string
	pullPolicy  string
	logLevel    string
	cfg         injector.Config
}

func newInjectorCmd() *cobra.Command { return newInjectorCmdWith(nil) }

// newInjectorCmdWith is newInjectorCmd whose run calls started with the
// listening addresses (see runInjector).
func newInjectorCmdWith(started func(webhook, admin net.Addr)) *cobra.Command {
	o := &injectorOptions{}
	cmd := &cobra.Command{
		Use:   "injector",
		Short: "Run the sidecar injector, the mutating admission webhook, on a Kubernetes cluster",
		Long: `Run Sluice's sidecar injector: the mutating admission webhook (path /inject,
over HTTPS on --addr) that adds the sluice-proxy sidecar to the pods of namespaces
and pods annotated sluice.dev/inject=enabled. The serving certificate is read from
--tls-cert-file and --tls-key-file, and read again when they change. The proxy is a
native sidecar when the API server runs Kubernetes 1.29 or later.

The injector also copies the trust anchors ConfigMap sluice-identity-trust-roots
from --controller-namespace into every namespace annotated sluice.dev/inject=enabled
and every namespace it injects a pod in, and keeps the copies up to date.

/healthz, /readyz and /metrics are served on --admin-addr.`,
		Example: `  sluice injector --proxy-version v0.1.0 \
    --tls-cert-file /var/run/sluice/webhook/tls.crt --tls-key-file /var/run/sluice/webhook/tls.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			logger, err := roleLogger("injector", o.logLevel, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			klog.SetSlogLogger(logger)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runInjector(ctx, o, logger, started)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; in-cluster configuration, then $KUBECONFIG and ~/.kube/config when empty")
	f.StringVar(&o.kubeContext, "context", "", "kubeconfig context to use")
	f.StringVar(&o.addr, "addr", ":8443", "address of the webhook's HTTPS server")
	f.StringVar(&o.adminAddr, "admin-addr", ":9990", "address of the /healthz, /readyz and /metrics endpoints")
	f.StringVar(&o.certFile, "tls-cert-file", "/var/run/sluice/webhook/tls.crt", "the webhook's serving certificate (PEM), reloaded when it changes")
	f.StringVar(&o.keyFile, "tls-key-file", "/var/run/sluice/webhook/tls.key", "the serving certificate's private key (PEM)")
	f.StringVar(&o.cfg.ProxyImage, "proxy-image", injector.DefaultProxyImage, "sluice-proxy image, without its tag")
	f.StringVar(&o.cfg.ProxyVersion, "proxy-version", version, "sluice-proxy image tag")
	f.StringVar(&o.cfg.ControlPlaneNamespace, "controller-namespace", identity.DefaultControlNamespace, "namespace of Sluice's control plane")
	f.StringVar(&o.cfg.TrustDomain, "trust-domain", identity.DefaultTrustDomain, "the mesh's trust domain")
	f.StringVar(&o.cfg.ClusterDomain, "cluster-domain", injector.DefaultClusterDomain, "the cluster's DNS domain")
	f.StringVar(&o.pullPolicy, "image-pull-policy", string(corev1.PullIfNotPresent), "image pull policy of the injected containers: Always, IfNotPresent or Never")
	f.StringVar(&o.cfg.LogLevel, "proxy-log-level", injector.DefaultLogLevel, "the injected proxies' log level (debug, info, warn or error); a config.sluice.dev/proxy-log-level annotation overrides it")
	f.StringVar(&o.cfg.DefaultInboundPolicy, "default-inbound-policy", "", "the injected proxies' default inbound policy ("+strings.Join(injector.DefaultInboundPolicies, ", ")+
		"); the proxy's own default (all-unauthenticated) when empty; a config.sluice.dev/default-inbound-policy annotation overrides it")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}

// validate checks the flags that can be checked before talking to the API
// server; its errors name the flag.
func (o *injectorOptions) validate() error {
	for _, file := range []struct{ flag, path string }{{"--tls-cert-file", o.certFile}, {"--tls-key-file", o.keyFile}} {
		if file.path == "" {
			return fmt.Errorf("%s is required", file.flag)
		}
		fi, err := os.Stat(file.path)
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err // "no such file or directory", the path is said already
			}
			return fmt.Errorf("%s %s: %w", file.flag, file.path, err)
		}
		if fi.IsDir() {
			return fmt.Errorf("%s %s: is a directory, want a PEM file", file.flag, file.path)
		}
	}
	policies := []corev1.PullPolicy{corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever}
	if !slices.Contains(policies, corev1.PullPolicy(o.pullPolicy)) {
		return fmt.Errorf("--image-pull-policy %q: want Always, IfNotPresent or Never", o.pullPolicy)
	}
	o.cfg.ImagePullPolicy = corev1.PullPolicy(o.pullPolicy)
	if levels := []string{"debug", "info", "warn", "error"}; !slices.Contains(levels, o.cfg.LogLevel) {
		return fmt.Errorf("--proxy-log-level %q: want debug, info, warn or error", o.cfg.LogLevel)
	}
	if p := o.cfg.DefaultInboundPolicy; p != "" && !slices.Contains(injector.DefaultInboundPolicies, p) {
		return fmt.Errorf("--default-inbound-policy %q: want one of %s", p, strings.Join(injector.DefaultInboundPolicies, ", "))
	}
	for _, s := range []struct{ flag, value string }{
		{"--proxy-image", o.cfg.ProxyImage}, {"--proxy-version", o.cfg.ProxyVersion},
		{"--controller-namespace", o.cfg.ControlPlaneNamespace}, {"--trust-domain", o.cfg.TrustDomain},
		{"--cluster-domain", o.cfg.ClusterDomain}, {"--addr", o.addr}, {"--admin-addr", o.adminAddr},
	} {
		if s.value == "" {
			return fmt.Errorf("%s must not be empty", s.flag)
		}
	}
	return nil
}

// runInjector runs the injector until ctx ends. started, when not nil,
// receives the webhook's and the admin server's listening addresses once
// both listen (tests use port 0).
func runInjector(ctx context.Context, o *injectorOptions, logger *slog.Logger, started func(webhook, admin net.Addr)) error {
	_, kube, err := roleClient(o.kubeconfig, o.kubeContext)
	if err != nil {
		return err
	}
	reg := newRoleRegistry()
	srv, err := injector.NewServer(injector.ServerOptions{
		Config:   o.cfg,
		Client:   kube,
		CertFile: o.certFile,
		KeyFile:  o.keyFile,
		Metrics:  injector.NewMetrics(reg),
		Log:      logger,
	})
	if err != nil {
		return err
	}
	webhookLn, err := net.Listen("tcp", o.addr)
	if err != nil {
		return fmt.Errorf("--addr %s: %w", o.addr, err)
	}
	adminLn, err := net.Listen("tcp", o.adminAddr)
	if err != nil {
		webhookLn.Close()
		return fmt.Errorf("--admin-addr %s: %w", o.adminAddr, err)
	}
	if started != nil {
		started(webhookLn.Addr(), adminLn.Addr())
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	adminErr := make(chan error, 1)
	go func() {
		adminErr <- serveInjectorAdmin(ctx, adminLn, srv.Ready, reg, logger)
		cancel() // the admin server failing stops the injector: its probes would lie
	}()
	err = srv.Serve(ctx, webhookLn)
	cancel()
	if aerr := <-adminErr; err == nil {
		err = aerr
	}
	return err
}

// serveInjectorAdmin serves /healthz (the process answers), /readyz (ready
// returns nil) and /metrics (reg) on ln until ctx ends.
func serveInjectorAdmin(ctx context.Context, ln net.Listener, ready readyCheck, reg *prometheus.Registry, logger *slog.Logger) error {
	srv := &http.Server{
		Handler:           adminHandler(reg, ready),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("admin server on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := srv.Shutdown(shutdown)
	<-errc
	if err != nil {
		return fmt.Errorf("admin server: shutting down: %w", err)
	}
	return nil
}
