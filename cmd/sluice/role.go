package main

// What every control-plane role (controller, destination, identity,
// telemetry) shares: how it finds the API server, how it logs, and — for
// the roles that are not controller-runtime managers — the admin server
// (/healthz, /readyz, /metrics) and the serve-until-stopped loop.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/util/validation"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

// Defaults shared by the roles.
const (
	// defaultAdminAddr serves /healthz, /readyz and /metrics.
	defaultAdminAddr = ":9990"
	// roleStopGrace bounds a graceful stop: streams and requests still
	// open after it are cut.
	roleStopGrace = 10 * time.Second
)

// roleOptions are the flags every role that is not the controller has.
type roleOptions struct {
	kubeconfig  string
	kubeContext string
	adminAddr   string
	logLevel    string

	// listening, when set (by tests), is called with the role's main and
	// admin addresses once both listen.
	listening func(addr, admin net.Addr)
}

// addFlags adds the common flags to f.
func (o *roleOptions) addFlags(f *pflag.FlagSet) {
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; in-cluster configuration, then $KUBECONFIG and ~/.kube/config when empty")
	f.StringVar(&o.kubeContext, "context", "", "kubeconfig context to use")
	f.StringVar(&o.adminAddr, "admin-addr", defaultAdminAddr, "address of /healthz, /readyz and /metrics")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
}

// roleCommand returns the RunE of a role: it checks the flags with
// validate, builds the role's logger, makes client-go and slog's default
// log through it, and runs run until SIGINT or SIGTERM.
func roleCommand(component string, o *roleOptions, validate func() error, run func(ctx context.Context, logger *slog.Logger) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		logger, err := roleLogger(component, o.logLevel, cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		if err := validate(); err != nil {
			return err
		}
		// Process-wide: set once, before anything logs.
		klog.SetSlogLogger(logger)
		slog.SetDefault(logger)
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return run(ctx, logger)
	}
}

// roleLogger is a role's JSON logger at level (debug, info, warn or
// error), writing to w, its records tagged with component.
func roleLogger(component, level string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})).With("component", component), nil
}

// roleRESTConfig is the API server configuration: the given kubeconfig
// and context, or in-cluster when neither is given, or the usual kubeconfig
// files.
func roleRESTConfig(kubeconfig, kubeContext string) (*rest.Config, error) {
	if kubeconfig == "" && kubeContext == "" {
		if cfg, err := rest.InClusterConfig(); err == nil {
			return cfg, nil
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{CurrentContext: kubeContext}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("loading the Kubernetes configuration (--kubeconfig %q, --context %q): %w", kubeconfig, kubeContext, err)
	}
	return cfg, nil
}

// roleClient is roleRESTConfig and a clientset for it.
func roleClient(kubeconfig, kubeContext string) (*rest.Config, *clientset.Clientset, error) {
	cfg, err := roleRESTConfig(kubeconfig, kubeContext)
	if err != nil {
		return nil, nil, err
	}
	kube, err := clientset.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("creating a Kubernetes client for %s: %w", cfg.Host, err)
	}
	return cfg, kube, nil
}

// checkListenAddr checks that the flag's value is a host:port to listen on.
func checkListenAddr(flag, addr string) error {
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		return fmt.Errorf("--%s %q: want host:port (such as :8086 or 127.0.0.1:8086)", flag, addr)
	}
	return nil
}

// checkDNSLabel checks that the flag's value is a DNS label (a namespace).
func checkDNSLabel(flag, v string) error {
	if errs := validation.IsDNS1123Label(v); len(errs) > 0 {
		return fmt.Errorf("--%s %q is not a DNS label: %s", flag, v, strings.Join(errs, "; "))
	}
	return nil
}

// checkDNSName checks that the flag's value is a DNS name (a domain).
func checkDNSName(flag, v string) error {
	if errs := validation.IsDNS1123Subdomain(v); len(errs) > 0 {
		return fmt.Errorf("--%s %q is not a DNS name: %s", flag, v, strings.Join(errs, "; "))
	}
	return nil
}

// newRoleRegistry returns a Prometheus registry with the Go runtime and
// process collectors.
func newRoleRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// readyCheck is one condition of a role's readiness: nil when met, or
// what it waits for.
type readyCheck func() error

// adminHandler serves /healthz (the process answers), /readyz (every check
// passes; else 503 and the reasons) and /metrics (reg).
func adminHandler(reg *prometheus.Registry, checks ...readyCheck) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		var why []string
		for _, c := range checks {
			if err := c(); err != nil {
				why = append(why, err.Error())
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if len(why) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "not ready: "+strings.Join(why, "; ")+"\n")
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return mux
}

// role is one role's process: a main server (gRPC or HTTP) on addr, the
// admin server, and background tasks, run by serve.
type role struct {
	name     string
	opts     *roleOptions
	addr     string
	log      *slog.Logger
	registry *prometheus.Registry
	ready    []readyCheck

	// Exactly one of grpc and http is the main server.
	grpc *grpc.Server
	http http.Handler

	// tasks run beside the servers until ctx ends; one that fails stops
	// the role with its error.
	tasks []func(ctx context.Context) error
	// beforeStop runs when the role stops, before the graceful stop of the
	// main server (to end streams that never end on their own).
	beforeStop func()
}

// serve listens on the role's addresses and runs its servers and tasks
// until ctx ends or a task fails; then it stops them, gracefully within
// roleStopGrace, and returns the task's error or nil.
func (r *role) serve(ctx context.Context) error {
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		return fmt.Errorf("%s cannot listen on --addr %s: %w", r.name, r.addr, err)
	}
	defer ln.Close()
	adminLn, err := net.Listen("tcp", r.opts.adminAddr)
	if err != nil {
		return fmt.Errorf("%s cannot listen on --admin-addr %s: %w", r.name, r.opts.adminAddr, err)
	}
	defer adminLn.Close()

	ctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(nil); wg.Wait() }()
	for _, task := range r.tasks {
		wg.Go(func() {
			if err := task(ctx); err != nil {
				cancel(err)
			}
		})
	}

	admin := &http.Server{Handler: adminHandler(r.registry, r.ready...), ReadHeaderTimeout: 10 * time.Second}
	var httpSrv *http.Server
	serveErr := make(chan error, 2)
	go func() { serveErr <- ignoreClosed(admin.Serve(adminLn)) }()
	if r.grpc != nil {
		go func() { serveErr <- r.grpc.Serve(ln) }()
	} else {
		httpSrv = &http.Server{Handler: r.http, ReadHeaderTimeout: 10 * time.Second}
		go func() { serveErr <- ignoreClosed(httpSrv.Serve(ln)) }()
	}
	r.log.InfoContext(ctx, r.name+" serving", "addr", ln.Addr().String(), "admin", adminLn.Addr().String())
	if r.opts.listening != nil {
		r.opts.listening(ln.Addr(), adminLn.Addr())
	}

	var failed error
	serving := 2 // servers whose Serve has not returned
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		serving--
		failed = fmt.Errorf("%s: server stopped: %w", r.name, err)
		cancel(failed)
	}
	r.log.InfoContext(ctx, r.name+" stopping")
	if r.beforeStop != nil {
		r.beforeStop()
	}
	stopCtx, stopped := context.WithTimeout(context.WithoutCancel(ctx), roleStopGrace)
	defer stopped()
	if r.grpc != nil {
		done := make(chan struct{})
		go func() { defer close(done); r.grpc.GracefulStop() }()
		select {
		case <-done:
		case <-stopCtx.Done():
			r.grpc.Stop()
			<-done
		}
	} else if err := httpSrv.Shutdown(stopCtx); err != nil {
		_ = httpSrv.Close()
	}
	if err := admin.Shutdown(stopCtx); err != nil {
		_ = admin.Close()
	}
	for ; serving > 0; serving-- {
		<-serveErr
	}
	if failed == nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			failed = cause
		}
	}
	return failed
}

// ignoreClosed maps the error of a server that was shut down to nil.
func ignoreClosed(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// grpcMetrics counts a gRPC server's calls, with the metric and label
// names of go-grpc-prometheus, so dashboards written for it work.
type grpcMetrics struct {
	started, handled *prometheus.CounterVec
}

// newGRPCMetrics registers the counters on reg.
func newGRPCMetrics(reg prometheus.Registerer) *grpcMetrics {
	labels := []string{"grpc_type", "grpc_service", "grpc_method"}
	m := &grpcMetrics{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_started_total", Help: "RPCs started on the server.",
		}, labels),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_handled_total", Help: "RPCs completed on the server, by status code.",
		}, append(labels, "grpc_code")),
	}
	reg.MustRegister(m.started, m.handled)
	return m
}

// serverOptions are the interceptors that count calls.
func (m *grpcMetrics) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			svc, method := splitMethod(info.FullMethod)
			m.started.WithLabelValues("unary", svc, method).Inc()
			resp, err := h(ctx, req)
			m.handled.WithLabelValues("unary", svc, method, status.Code(err).String()).Inc()
			return resp, err
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			svc, method := splitMethod(info.FullMethod)
			typ := "bidi_stream"
			switch {
			case info.IsServerStream && !info.IsClientStream:
				typ = "server_stream"
			case info.IsClientStream && !info.IsServerStream:
				typ = "client_stream"
			}
			m.started.WithLabelValues(typ, svc, method).Inc()
			err := h(srv, ss)
			m.handled.WithLabelValues(typ, svc, method, status.Code(err).String()).Inc()
			return err
		}),
	}
}

// splitMethod splits "/pkg.Service/Method".
func splitMethod(full string) (service, method string) {
	service, method, _ = strings.Cut(strings.TrimPrefix(full, "/"), "/")
	return service, method
}
