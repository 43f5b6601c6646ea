// Command sluice-proxy is Sluice's sidecar proxy. It forwards the traffic of one
// workload: inbound to the application, outbound to other services, with
// weighted splits, balancing, retries, timeouts and golden metrics.
//
//	sluice-proxy --config /etc/sluice/proxy.yaml
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
	if *cfgPath == "" {
		fmt.Fprintln(os.Stderr, "sluice-proxy: --config is required (or SLUICE_PROXY_CONFIG)")
		return 2
	}
	cfg, err := config.Load(*cfgPath)
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
