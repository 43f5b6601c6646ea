// Command sluice-demo-app is Sluice's demo service: a small HTTP and gRPC
// server whose version, error rate and latency are set by flags or the
// environment, used by the demo, the end-to-end tests and the benchmarks.
//
// HTTP/1.1, unencrypted HTTP/2 (h2c, prior knowledge) and gRPC share one
// port. HTTP endpoints:
//
//	GET  /                 {"service","version","pod"}; a frontend (--backend)
//	                       also calls the backend's GET / and adds its answer
//	GET  /healthz          200 ok
//	GET  /echo             the request (method, headers, body) as JSON
//	POST /echo             the request body
//	GET  /status/NNN       answers status NNN
//	GET  /delay/DURATION   answers after DURATION (250ms, 2s, or seconds)
//	GET  /ws               WebSocket echo
//	GET  /stream?n=N       N JSON lines, flushed one by one (&interval=10ms)
//
// gRPC: grpc.testing.TestService (the grpc-go interop implementation),
// grpc.health.v1.Health and server reflection. The error rate (500, or gRPC
// INTERNAL) and latency apply to GET /, /echo and UnaryCall. Every response
// carries the header x-version.
//
// Environment variables set a value whose flag was not given: SERVICE_NAME,
// VERSION, ERROR_RATE, LATENCY, LATENCY_JITTER, PORT, BACKEND_SERVICE_HOST and
// BACKEND_SERVICE_PORT, POD_NAME.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "sluice-demo-app: %v\n", err)
		os.Exit(1)
	}
}

// run serves until ctx is done; logs go to stderr.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := parseConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("service", cfg.Name, "version", cfg.Version)
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.Listen, err)
	}
	return newApp(cfg, log).serve(ctx, ln)
}
