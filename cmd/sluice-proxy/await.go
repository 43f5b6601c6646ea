package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"
)

// runAwait waits until the proxy on this host reports ready on its admin
// port, so that a classic (non-native) sidecar's postStart hook can hold the
// application back until the proxy serves:
//
//	sluice-proxy await --admin-port 4191 --timeout 2m
//
// It exits 0 once /ready answers 200, 1 when the timeout passes first, 2 on
// bad flags.
func runAwait(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("sluice-proxy await", flag.ContinueOnError)
	fs.SetOutput(stderr)
	port := fs.Int("admin-port", 4191, "the proxy's admin port on 127.0.0.1")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for /ready")
	interval := fs.Duration("interval", 200*time.Millisecond, "how often to ask")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *port < 1 || *port > 65535 {
		fmt.Fprintf(stderr, "sluice-proxy await: --admin-port %d is not within 1-65535\n", *port)
		return 2
	}
	if *timeout <= 0 || *interval <= 0 {
		fmt.Fprintln(stderr, "sluice-proxy await: --timeout and --interval must be positive")
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	url := fmt.Sprintf("http://127.0.0.1:%d/ready", *port)
	client := &http.Client{Timeout: time.Second}
	last := "no answer yet"
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return 0
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, body)
		} else if ctx.Err() == nil || last == "no answer yet" {
			// A request cut short by the overall deadline says nothing new:
			// keep the proxy's last real answer for the message.
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(stderr, "sluice-proxy await: %s not ready after %s (last: %s)\n", url, *timeout, last)
			return 1
		case <-time.After(*interval):
		}
	}
}
