// Command sluice-proxy is Sluice's sidecar proxy. It forwards the traffic of one
// workload: inbound to the application, outbound to other services, with
// weighted splits, balancing, retries, timeouts and golden metrics.
//
//	sluice-proxy --config /etc/sluice/proxy.yaml
//
// With a controlPlane section in its configuration the proxy is a mesh member:
// it gets its certificate from the identity service (reporting /ready only
// once certified and once the services it watches are discovered), its
// services and routes from the destination service and its inbound policy
// from the policy service, and speaks mutual TLS to every meshed peer. It
// keeps serving with what it last received while the control plane is away.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/sluicehq/sluice/proxy"
	"github.com/sluicehq/sluice/proxy/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "await" {
		os.Exit(runAwait(context.Background(), os.Args[2:], os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == "init" {
		os.Exit(runInit(os.Args[2:], os.Getenv, os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("sluice-proxy", flag.ContinueOnError)
	cfgPath := fs.String("config", os.Getenv("SLUICE_PROXY_CONFIG"), "path of the configuration file (YAML or JSON); reloaded when it changes")
	logLevel := fs.String("log-level", envOr("SLUICE_PROXY_LOG_LEVEL", "info"), "log level: debug, info, warn, error")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Println(version)
		return 0
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "sluice-proxy: --log-level %q: want debug, info, warn or error\n", *logLevel)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	inline := os.Getenv(configYAMLEnv)
	if *cfgPath == "" && inline == "" {
		fmt.Fprintln(os.Stderr, "sluice-proxy: --config is required (or SLUICE_PROXY_CONFIG, or "+configYAMLEnv+" holding the configuration itself)")
		return 2
	}
	cfg, err := loadConfig(*cfgPath, inline)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice-proxy: %v\n", err)
		return 1
	}
	p, err := proxy.New(cfg, log)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice-proxy: %v\n", err)
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		_ = config.Watch(ctx, *cfgPath, func(c *config.Config) {
			if err := p.Reload(c); err != nil {
				log.Error("configuration rejected, keeping the previous one", "path", *cfgPath, "err", err)
				return
			}
			log.Info("configuration reloaded", "path", *cfgPath)
		}, func(err error) {
			log.Error("configuration file is invalid, keeping the previous one", "err", err)
		})
	}()
	if err := p.Run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "sluice-proxy: %v\n", err)
		return 1
	}
	return 0
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// configYAMLEnv holds the configuration itself (YAML or JSON) when --config
// is empty: the sidecar injector passes it so on Kubernetes, with the pod's
// name and namespace expanded by the kubelet. It is not reloaded.
const configYAMLEnv = "SLUICE_PROXY_CONFIG_YAML"

// loadConfig reads the configuration file at path or, when path is empty,
// parses inline (the content of configYAMLEnv).
func loadConfig(path, inline string) (*config.Config, error) {
	if path != "" {
		return config.Load(path)
	}
	cfg, err := config.Parse([]byte(inline))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", configYAMLEnv, err)
	}
	return cfg, nil
}
