package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/signal"
	"regexp"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/analysis/loadtest"
)

type loadtestOptions struct {
	listen         string
	namespaces     string
	maxDuration    time.Duration
	maxConcurrency int
}

// newLoadTestCmd is `sluice loadtest --listen ADDR`: the built-in load
// tester as a process of its own (a target of rollout webhooks, compatible
// with flagger-loadtester's API). `sluice up` serves the same tester at
// <API>/loadtest/.
func newLoadTestCmd() *cobra.Command {
	o := &loadtestOptions{}
	cmd := &cobra.Command{
		Use:   "loadtest --listen ADDR",
		Short: "Run the built-in load tester: rollout webhooks start HTTP or gRPC load per canary",
		Long: `Serve the built-in load tester, a webhook target compatible with
flagger-loadtester: POST / with a Canary webhook payload whose metadata holds a
hey or ghz "cmd" (parsed, never executed) or a typed load ("kind": http or
grpc, with url, rate, concurrency, duration, headers, body...). Loads are
deduplicated per canary and stopped when a payload's phase is neither
Progressing nor WaitingPromotion. GET /status reports every load, POST /stop
stops one. sluice up serves the same API at <API>/loadtest/.`,
		Example: `  sluice loadtest --listen 127.0.0.1:8086
  # in a Canary: webhooks: [{name: load, type: rollout, url: http://127.0.0.1:8086/,
  #   metadata: {cmd: "hey -z 1m -q 10 -c 2 http://127.0.0.1:8080/"}}]`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return runLoadTest(ctx, o, func(addr string) {
				fmt.Fprintf(cmd.OutOrStdout(), "Load tester listening on http://%s/ (Ctrl-C stops it).\n", addr)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", "127.0.0.1:8086", "address to serve the load tester's API on")
	f.StringVar(&o.namespaces, "namespace-regexp", "", "serve only canaries whose namespace matches this regular expression (others get 403)")
	f.DurationVar(&o.maxDuration, "max-duration", loadtest.DefaultMaxDuration, "longest a load may run")
	f.IntVar(&o.maxConcurrency, "max-concurrency", loadtest.DefaultMaxConcurrency, "most workers a load may ask for")
	return cmd
}

// runLoadTest serves the load tester until ctx ends; listening is called
// with the address once it listens.
func runLoadTest(ctx context.Context, o *loadtestOptions, listening func(addr string)) error {
	var hopts loadtest.HandlerOptions
	if o.namespaces != "" {
		re, err := regexp.Compile(o.namespaces)
		if err != nil {
			return badInput("--namespace-regexp %q: %v", o.namespaces, err)
		}
		hopts.Namespaces = re
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("the load tester cannot listen on %s: %w", o.listen, err)
	}
	tester := loadtest.New(loadtest.Options{MaxDuration: o.maxDuration, MaxConcurrency: o.maxConcurrency})
	defer tester.Close()
	srv := &http.Server{Handler: tester.Handler(hopts), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if listening != nil {
		listening(ln.Addr().String())
	}
	select {
	case err := <-served:
		return fmt.Errorf("load tester: %w", err)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutCtx)
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("load tester: %w", err)
	}
	return nil
}
