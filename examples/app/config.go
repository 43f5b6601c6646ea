package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// config is the demo app's behaviour, read from flags and the environment.
type config struct {
	// Name is the service name served in responses.
	Name string
	// Version is served in responses and in the x-version header.
	Version string
	// Pod names this instance (POD_NAME, or the hostname).
	Pod string
	// ErrorRate is the fraction (0..1) of requests answered with a failure.
	ErrorRate float64
	// Latency is added to every request that faults apply to.
	Latency time.Duration
	// LatencyJitter adds a uniform random delay in [0, LatencyJitter).
	LatencyJitter time.Duration
	// Listen is the address HTTP/1.1, h2c and gRPC are served on.
	Listen string
	// Backend is the base URL ("http://host:port") of the backend this
	// frontend calls on GET /; empty when the app is not a frontend.
	Backend string
	// Seed seeds the fault RNG; 0 picks a random seed.
	Seed uint64
	// ShutdownTimeout bounds the graceful shutdown on SIGTERM/SIGINT.
	ShutdownTimeout time.Duration
}

// parseConfig reads the configuration from args and the environment. A flag
// given explicitly on the command line wins; otherwise its environment
// variable, if set, wins over the flag's default (the local-mode supervisor
// configures workloads through the environment).
func parseConfig(args []string, getenv func(string) string, usage io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("sluice-demo-app", flag.ContinueOnError)
	fs.SetOutput(usage)
	fs.StringVar(&cfg.Name, "name", "demo", "service name served in responses (env SERVICE_NAME)")
	fs.StringVar(&cfg.Version, "version", "v1", "version served in responses and the x-version header (env VERSION)")
	fs.Float64Var(&cfg.ErrorRate, "error-rate", 0, "fraction 0..1 of requests answered 500 / gRPC INTERNAL (env ERROR_RATE)")
	fs.DurationVar(&cfg.Latency, "latency", 0, "delay added to each request (env LATENCY)")
	fs.DurationVar(&cfg.LatencyJitter, "latency-jitter", 0, "random extra delay in [0, jitter) (env LATENCY_JITTER)")
	fs.StringVar(&cfg.Listen, "listen", ":8080", "address for HTTP/1.1, h2c and gRPC (env PORT: a port or host:port)")
	fs.StringVar(&cfg.Backend, "backend", "", "backend host:port or URL; makes this app a frontend (env BACKEND_SERVICE_HOST + BACKEND_SERVICE_PORT)")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "seed for the fault RNG; 0 picks a random one")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "how long to drain requests on SIGTERM")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	env := func(flagName, key string, apply func(string) error) error {
		v := strings.TrimSpace(getenv(key))
		if set[flagName] || v == "" {
			return nil
		}
		if err := apply(v); err != nil {
			return fmt.Errorf("env %s=%q: %w", key, v, err)
		}
		return nil
	}
	setDuration := func(d *time.Duration) func(string) error {
		return func(v string) error {
			p, err := time.ParseDuration(v)
			if err != nil {
				return err
			}
			*d = p
			return nil
		}
	}
	errs := []error{
		env("name", "SERVICE_NAME", func(v string) error { cfg.Name = v; return nil }),
		env("version", "VERSION", func(v string) error { cfg.Version = v; return nil }),
		env("error-rate", "ERROR_RATE", func(v string) error {
			f, err := strconv.ParseFloat(v, 64)
			cfg.ErrorRate = f
			return err
		}),
		env("latency", "LATENCY", setDuration(&cfg.Latency)),
		env("latency-jitter", "LATENCY_JITTER", setDuration(&cfg.LatencyJitter)),
		env("listen", "PORT", func(v string) error {
			if strings.Contains(v, ":") {
				cfg.Listen = v
				return nil
			}
			if _, err := strconv.ParseUint(v, 10, 16); err != nil {
				return fmt.Errorf("not a port: %w", err)
			}
			cfg.Listen = ":" + v
			return nil
		}),
	}
	if !set["backend"] {
		host, port := strings.TrimSpace(getenv("BACKEND_SERVICE_HOST")), strings.TrimSpace(getenv("BACKEND_SERVICE_PORT"))
		switch {
		case host != "" && port != "":
			cfg.Backend = net.JoinHostPort(host, port)
		case host != "" || port != "":
			errs = append(errs, fmt.Errorf("BACKEND_SERVICE_HOST=%q and BACKEND_SERVICE_PORT=%q: both must be set", host, port))
		}
	}
	for _, err := range errs {
		if err != nil {
			return config{}, err
		}
	}

	if cfg.ErrorRate < 0 || cfg.ErrorRate > 1 {
		return config{}, fmt.Errorf("error rate %v is outside 0..1", cfg.ErrorRate)
	}
	if cfg.Latency < 0 || cfg.LatencyJitter < 0 {
		return config{}, fmt.Errorf("latency %v and jitter %v must not be negative", cfg.Latency, cfg.LatencyJitter)
	}
	if cfg.ShutdownTimeout <= 0 {
		return config{}, fmt.Errorf("shutdown timeout %v must be positive", cfg.ShutdownTimeout)
	}
	if cfg.Backend != "" {
		u, err := backendURL(cfg.Backend)
		if err != nil {
			return config{}, err
		}
		cfg.Backend = u
	}
	cfg.Pod = getenv("POD_NAME")
	if cfg.Pod == "" {
		cfg.Pod, _ = os.Hostname()
	}
	return cfg, nil
}

// backendURL turns "host:port" or "http://host:port[/]" into a base URL
// without a trailing slash.
func backendURL(s string) (string, error) {
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("backend %q: %w", s, err)
	}
	if u.Scheme != "http" || u.Host == "" {
		return "", fmt.Errorf("backend %q: want host:port or http://host:port", s)
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}
