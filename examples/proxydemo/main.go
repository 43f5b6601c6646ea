// Command proxydemo shows sluice-proxy splitting traffic: it starts two versions
// of the demo app, puts sluice-proxy in front with a 90/10 HTTPRoute-style split,
// sends requests through it, and prints how many each version served and the
// proxy's golden metrics. `make demo` runs it.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

const requests = 2000

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	bin := os.Getenv("SLUICE_BIN")
	if bin == "" {
		bin = "bin"
	}
	dir, err := os.MkdirTemp("", "sluice-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGTERM)
			_ = p.Wait()
		}
	}()
	start := func(name string, args ...string) error {
		cmd := exec.CommandContext(ctx, filepath.Join(bin, name), args...)
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d.log", name, len(procs))))
		if err != nil {
			return err
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start %s: %w (run `make build` first)", name, err)
		}
		procs = append(procs, cmd)
		return nil
	}

	v1, err := freePort()
	if err != nil {
		return err
	}
	v2, _ := freePort()
	listen, _ := freePort()
	adminAddr, _ := freePort()
	if err := start("sluice-demo-app", "--listen", v1, "--version", "v1", "--name", "backend"); err != nil {
		return err
	}
	if err := start("sluice-demo-app", "--listen", v2, "--version", "v2", "--name", "backend"); err != nil {
		return err
	}
	cfg := fmt.Sprintf(`admin: %s
inbound: {listen: "off"}
outbound: {listen: "off"}
listeners:
  - {listen: %s, service: backend.demo:80}
table:
  services:
    - name: backend
      namespace: demo
      port: 80
      rules:
        - match: {pathType: PathPrefix, path: /}
          backends:
            - {service: backend-primary.demo:80, weight: 90}
            - {service: backend-canary.demo:80, weight: 10}
          retry: {codes: [503], attempts: 1}
    - name: backend-primary
      namespace: demo
      port: 80
      endpoints: [{address: %s, labels: {deployment: backend-primary, revision: v1}}]
    - name: backend-canary
      namespace: demo
      port: 80
      endpoints: [{address: %s, labels: {deployment: backend, revision: v2}}]
`, adminAddr, listen, v1, v2)
	cfgPath := filepath.Join(dir, "proxy.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	if err := start("sluice-proxy", "--config", cfgPath); err != nil {
		return err
	}
	fmt.Printf("demo: backend v1 on %s, v2 on %s; sluice-proxy on %s splits 90/10 (admin %s)\n", v1, v2, listen, adminAddr)
	for _, u := range []string{"http://" + v1 + "/healthz", "http://" + v2 + "/healthz", "http://" + adminAddr + "/ready"} {
		if err := waitHTTP(ctx, u); err != nil {
			return err
		}
	}

	client := &http.Client{Timeout: 5 * time.Second}
	counts := map[string]int{}
	failed := 0
	for i := 0; i < requests; i++ {
		resp, err := client.Get("http://" + listen + "/")
		if err != nil {
			failed++
			continue
		}
		var body struct {
			Version string `json:"version"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			failed++
			continue
		}
		counts[body.Version]++
	}
	fmt.Printf("\ndemo: %d requests through sluice-proxy\n", requests)
	for _, v := range []string{"v1", "v2"} {
		fmt.Printf("  %s served %5d  (%.1f%%)\n", v, counts[v], 100*float64(counts[v])/requests)
	}
	fmt.Printf("  failed     %5d\n", failed)

	resp, err := client.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		return fmt.Errorf("scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	fmt.Println("\ndemo: the proxy's golden metrics (response_total, latency count):")
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "response_total{") || strings.HasPrefix(l, "response_latency_ms_count{") {
			lines = append(lines, l)
		}
	}
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Println("  " + l)
	}
	_, _ = io.Copy(io.Discard, resp.Body)

	share := float64(counts["v2"]) / requests
	if failed > 0 || share < 0.05 || share > 0.15 {
		return fmt.Errorf("split not as configured: v2 share %.3f, %d failed", share, failed)
	}
	fmt.Println("\ndemo: split OK (v2 within 10% ± 5 points, no failed requests)")
	return nil
}

// waitHTTP polls u until it answers 200.
func waitHTTP(ctx context.Context, u string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(u)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after 20s (last error: %v)", u, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
