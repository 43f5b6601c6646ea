package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/local/up"
)

type upOptions struct {
	dir             string
	proxy           string
	ingressBasePort int
	controlPlane    string
	api             string
	scrapeInterval  time.Duration
	logLevel        string
	proxyLogLevel   string
	stopGrace       time.Duration
	defaultPolicy   string
}

func newUpCmd(g *globalOptions) *cobra.Command {
	o := &upOptions{}
	cmd := &cobra.Command{
		Use:   "up -f DIR",
		Short: "Run the control plane and DIR's workloads, meshed, on this machine",
		Long: `Run local mode: the control plane (identity, destination, telemetry) in this
process, and every replica of DIR's Deployments as a local process with its
own sluice-proxy sidecar. DIR holds Kubernetes-style YAML: Deployments
(apps/v1; containers[0].command is run, with its port in PORT), Services,
HTTPRoutes (gateway.networking.k8s.io/v1) and the policy.sluice.dev kinds.
DIR is watched: changes are applied as they are saved.

An application reaches a Service of its namespace through its sidecar, at
$<NAME>_SERVICE_HOST:$<NAME>_SERVICE_PORT. Every Service is also published on
a host port (from --ingress-base-port up), printed at start.

Ctrl-C stops everything. State (certificates, logs per replica, generated
configurations) stays in --state-dir.`,
		Example: `  sluice up -f examples/mesh
  sluice up -f deploy/ --ingress-base-port 9000 --state-dir /tmp/sluice`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runUp(cmd, g, o) },
	}
	f := cmd.Flags()
	f.StringVarP(&o.dir, "filename", "f", "", "directory of the manifests to run (required)")
	f.StringVar(&o.proxy, "proxy", "", "sluice-proxy binary (default: the one beside sluice, or on PATH)")
	f.IntVar(&o.ingressBasePort, "ingress-base-port", up.DefaultIngressBasePort, "first host port Services are published on, counting up (0: any free ports)")
	f.StringVar(&o.controlPlane, "control-plane-addr", "127.0.0.1:0", "address of the control plane's gRPC API")
	f.StringVar(&o.api, "api-addr", "127.0.0.1:0", "address of the HTTP API `sluice stat` and `sluice check` use")
	f.DurationVar(&o.scrapeInterval, "scrape-interval", 5*time.Second, "how often the proxies' metrics are scraped")
	f.StringVar(&o.logLevel, "log-level", "info", "level of the control plane's log (written to STATE/logs/sluice-up.log): debug, info, warn, error")
	f.StringVar(&o.proxyLogLevel, "proxy-log-level", "info", "log level of the proxies")
	f.DurationVar(&o.stopGrace, "stop-grace", 10*time.Second, "how long a process has to stop after SIGTERM before it is killed")
	f.StringVar(&o.defaultPolicy, "default-inbound-policy", "all-unauthenticated", "what a port no Server selects allows: all-unauthenticated, all-authenticated, cluster-unauthenticated, cluster-authenticated, deny or audit")
	_ = cmd.MarkFlagRequired("filename")
	return cmd
}

func runUp(cmd *cobra.Command, g *globalOptions, o *upOptions) error {
	out := cmd.OutOrStdout()
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	self, _ := os.Executable()
	selfDir := ""
	if self != "" {
		if resolved, err := filepath.EvalSymlinks(self); err == nil {
			self = resolved
		}
		selfDir = filepath.Dir(self)
	}
	proxy, err := findProxy(o.proxy, selfDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(g.stateDir, "logs"), 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	logPath := filepath.Join(g.stateDir, "logs", "sluice-up.log")
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	defer logFile.Close()
	logger := slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: level}))
	// Components that log to the default logger log to the file too, not
	// over what people read.
	prev := slog.Default()
	slog.SetDefault(logger)
	defer slog.SetDefault(prev)

	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// A second Ctrl-C while stopping exits at once; the kernel then kills
	// the processes left (they die with their parent).
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-ctx.Done():
		case <-finished:
			return
		}
		again := make(chan os.Signal, 1)
		signal.Notify(again, syscall.SIGINT, syscall.SIGTERM)
		defer signal.Stop(again)
		select {
		case <-again:
			fmt.Fprintln(cmd.ErrOrStderr(), "sluice: interrupted again, exiting now")
			os.Exit(130)
		case <-finished:
		}
	}()

	var extraPath []string
	if selfDir != "" {
		extraPath = []string{selfDir}
	}
	err = up.Run(ctx, up.Options{
		ManifestDir:          o.dir,
		StateDir:             g.stateDir,
		ProxyBinary:          proxy,
		ControlPlaneAddr:     o.controlPlane,
		APIAddr:              o.api,
		IngressBasePort:      o.ingressBasePort,
		ScrapeInterval:       o.scrapeInterval,
		ExtraPath:            extraPath,
		StopGrace:            o.stopGrace,
		ProxyLogLevel:        o.proxyLogLevel,
		DefaultInboundPolicy: o.defaultPolicy,
		Out:                  out,
		Logger:               logger,
		Version:              version,
	})
	if err != nil {
		return err
	}
	return nil
}

// findProxy returns the sluice-proxy to run: the flag's, the one beside this
// binary, or the one on PATH.
func findProxy(flag, selfDir string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if selfDir != "" {
		p := filepath.Join(selfDir, "sluice-proxy")
		if info, err := os.Stat(p); err == nil && !info.IsDir() {
			return p, nil
		}
	}
	if p, err := exec.LookPath("sluice-proxy"); err == nil {
		return p, nil
	} else if !errors.Is(err, exec.ErrNotFound) {
		return "", err
	}
	return "", fmt.Errorf("sluice-proxy not found beside sluice (%s) nor on PATH: build it with `make build`, or pass --proxy", selfDir)
}
