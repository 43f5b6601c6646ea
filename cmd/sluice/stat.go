package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/local/up"
	"github.com/sluicehq/sluice/mesh/telemetry"
)

type statOptions struct {
	allNamespaces bool
	output        string
	window        time.Duration
}

func newStatCmd(g *globalOptions) *cobra.Command {
	o := &statOptions{}
	cmd := &cobra.Command{
		Use:   "stat [deploy[/NAME] | deploy NAME]",
		Short: "Golden metrics per workload: meshed replicas, success rate, RPS, latency, TLS",
		Long: `Show, for every Deployment, how many replicas are meshed, and the success
rate, requests per second, latency percentiles and share of mutual TLS of
the requests its replicas served over the time window — as
` + "`linkerd viz stat deploy`" + ` shows them. Replicas that are not ready are listed
below the table with the end of their logs.

On a cluster, the metrics come from the telemetry API of the control plane
(Service ` + telemetryService + ` in namespace ` + controlPlaneNamespace + `), through the API server's
service proxy.`,
		Example: `  sluice stat
  sluice stat deploy/frontend -t 5m
  sluice stat -A -o json`,
		Args: cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := parseResource(args)
			if err != nil {
				return err
			}
			switch o.output {
			case "", "table", "json":
			default:
				return fmt.Errorf("-o %q: want table or json", o.output)
			}
			if o.window <= 0 {
				return fmt.Errorf("--time-window %v must be positive", o.window)
			}
			return runStat(cmd.Context(), cmd.OutOrStdout(), g, o, name)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "workloads of every namespace")
	f.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	f.DurationVarP(&o.window, "time-window", "t", time.Minute, "the window the metrics are computed over")
	return cmd
}

// parseResource reads "deploy", "deploy/NAME" or "deploy NAME"; it returns
// the name ("" for all).
func parseResource(args []string) (string, error) {
	if len(args) == 0 {
		return "", nil
	}
	kind, name, _ := strings.Cut(args[0], "/")
	switch strings.ToLower(kind) {
	case "deploy", "deployment", "deployments", "deploys":
	default:
		return "", fmt.Errorf("resource %q: local mode has Deployments only (deploy, deploy/NAME)", args[0])
	}
	if len(args) == 2 {
		if name != "" {
			return "", fmt.Errorf("give the name once: %q or %q", args[0], args[1])
		}
		name = args[1]
	}
	return name, nil
}

func runStat(ctx context.Context, w io.Writer, g *globalOptions, o *statOptions, name string) error {
	t, err := g.resolveTarget(ctx)
	if err != nil {
		return err
	}
	ns := cmp.Or(g.namespace, localNamespace)
	if t.kube != nil {
		ns = t.kube.namespace // -n, else the kubeconfig context's
	}
	if o.allNamespaces {
		ns = ""
	}
	var st *up.Status
	var sums []telemetry.WorkloadSummary
	if t.kube != nil {
		st, sums, err = kubeStat(ctx, t.kube, ns, o.window)
	} else {
		st, sums, err = localStat(ctx, t.local, o.window)
	}
	if err != nil {
		return err
	}
	rows := statRows(st, sums, ns, name)
	if o.output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	renderStat(w, rows, o.allNamespaces)
	return nil
}

// localStat reads what `sluice stat` shows from a running sluice up.
func localStat(ctx context.Context, c *up.Client, window time.Duration) (*up.Status, []telemetry.WorkloadSummary, error) {
	st, err := c.Status(ctx)
	if err != nil {
		return nil, nil, err
	}
	sums, err := c.Telemetry().Workloads(ctx, window)
	if err != nil {
		return nil, nil, err
	}
	return st, sums, nil
}

// statRow is one workload's line of `sluice stat` (and its -o json element).
type statRow struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Kind      string `json:"kind"`
	// Meshed is "meshed/total": replicas whose sidecar is a ready mesh
	// member, of the replicas running.
	Meshed     string `json:"meshed"`
	MeshedPods int    `json:"meshedPods"`
	TotalPods  int    `json:"totalPods"`
	// Success (0..1), RPS, latency percentiles (ms) and TLS share (0..1)
	// of the requests served in the window; null when there were none.
	Success    *float64 `json:"success"`
	RPS        *float64 `json:"rps"`
	LatencyP50 *float64 `json:"latency_ms_p50"`
	LatencyP95 *float64 `json:"latency_ms_p95"`
	LatencyP99 *float64 `json:"latency_ms_p99"`
	TLS        *float64 `json:"tls"`
	Requests   float64  `json:"requests"`
	// Problems are the replicas that are not ready, with why and their logs.
	Problems []replicaProblem `json:"problems,omitempty"`
	// ScrapeErrors are the telemetry's latest failures to scrape a sidecar.
	ScrapeErrors []string `json:"scrapeErrors,omitempty"`
}

// replicaProblem is a replica that is not ready.
type replicaProblem struct {
	Pod      string              `json:"pod"`
	Problem  string              `json:"problem"`
	Restarts int                 `json:"restarts"`
	LastExit string              `json:"lastExit,omitempty"`
	Logs     map[string]string   `json:"logs,omitempty"`
	LogTail  map[string][]string `json:"logTail,omitempty"`
}

// statRows merges what the supervisor runs with what telemetry measured,
// for namespace ns ("" for all) and workload name ("" for all), ordered by
// namespace and name.
func statRows(st *up.Status, sums []telemetry.WorkloadSummary, ns, name string) []statRow {
	type key struct{ ns, name string }
	rows := map[key]*statRow{}
	get := func(n, w string) *statRow {
		k := key{n, w}
		if r := rows[k]; r != nil {
			return r
		}
		r := &statRow{Namespace: n, Name: w, Kind: "deployment"}
		rows[k] = r
		return r
	}
	want := func(n, w string) bool { return (ns == "" || n == ns) && (name == "" || w == name) }
	for _, w := range st.Workloads {
		if want(w.Namespace, w.Name) {
			get(w.Namespace, w.Name)
		}
	}
	for _, r := range st.Replicas {
		if !want(r.Namespace, r.Workload) || r.Stopping {
			continue
		}
		row := get(r.Namespace, r.Workload)
		row.TotalPods++
		if r.ProxyReady {
			row.MeshedPods++
		}
		if !r.Ready {
			p := replicaProblem{Pod: r.Pod, Problem: r.Problem, Restarts: r.App.Restarts + r.Proxy.Restarts, LogTail: r.LogTail}
			switch {
			case r.App.LastExit != "":
				p.LastExit = "app: " + r.App.LastExit
			case r.Proxy.LastExit != "":
				p.LastExit = "proxy: " + r.Proxy.LastExit
			}
			p.Logs = map[string]string{"app": r.App.Log, "proxy": r.Proxy.Log}
			row.Problems = append(row.Problems, p)
		}
	}
	for _, s := range sums {
		if !want(s.Namespace, s.Workload) {
			continue
		}
		// Traffic of a workload that is gone still shows, 0/0 meshed.
		row := get(s.Namespace, s.Workload)
		row.ScrapeErrors = s.Errors
		win := s.Window
		if win.Requests <= 0 {
			continue
		}
		row.Requests = win.Requests
		row.Success = finite(win.SuccessRate(), 4)
		row.RPS = finite(win.RPS(), 3)
		row.LatencyP50 = finite(win.Quantile(0.5), 2)
		row.LatencyP95 = finite(win.Quantile(0.95), 2)
		row.LatencyP99 = finite(win.Quantile(0.99), 2)
		row.TLS = finite(win.TLSShare(), 4)
	}
	out := make([]statRow, 0, len(rows))
	for _, r := range rows {
		r.Meshed = fmt.Sprintf("%d/%d", r.MeshedPods, r.TotalPods)
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b statRow) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// finite returns v rounded to decimals places, or nil when v is not a
// number (JSON has no NaN).
func finite(v float64, decimals int) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	v, _ = strconv.ParseFloat(strconv.FormatFloat(v, 'f', decimals, 64), 64)
	return &v
}

// renderStat writes the table as `linkerd viz stat deploy` does: NAME (and
// NAMESPACE with -A) left-aligned, the numbers right-aligned, "-" where there
// was no traffic; then the replicas that are not ready, with their logs.
func renderStat(w io.Writer, rows []statRow, allNamespaces bool) {
	if len(rows) == 0 {
		fmt.Fprintln(w, "No workloads found.")
		return
	}
	header := []string{"NAME", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "TLS"}
	left := 1
	if allNamespaces {
		header = append([]string{"NAMESPACE"}, header...)
		left = 2
	}
	table := [][]string{header}
	for _, r := range rows {
		line := []string{
			r.Name, r.Meshed,
			format(r.Success, func(v float64) string { return fmt.Sprintf("%.2f%%", v*100) }),
			format(r.RPS, func(v float64) string { return fmt.Sprintf("%.1frps", v) }),
			format(r.LatencyP50, latency), format(r.LatencyP95, latency), format(r.LatencyP99, latency),
			format(r.TLS, func(v float64) string { return fmt.Sprintf("%.0f%%", v*100) }),
		}
		if allNamespaces {
			line = append([]string{r.Namespace}, line...)
		}
		table = append(table, line)
	}
	writeTable(w, table, left)

	for _, r := range rows {
		for _, p := range r.Problems {
			fmt.Fprintf(w, "\n%s/%s is not ready: %s", r.Namespace, p.Pod, p.Problem)
			if p.Restarts > 0 {
				fmt.Fprintf(w, "; restarted %d %s", p.Restarts, plural(p.Restarts, "time", "times"))
			}
			fmt.Fprintln(w)
			for _, c := range []string{"app", "proxy"} {
				lines := p.LogTail[c]
				if len(lines) == 0 {
					continue
				}
				fmt.Fprintf(w, "  last lines of %s:\n", relPath(p.Logs[c]))
				for _, l := range lines {
					fmt.Fprintf(w, "  | %s\n", l)
				}
			}
		}
		for _, e := range r.ScrapeErrors {
			fmt.Fprintf(w, "\n%s/%s: metrics not scraped: %s\n", r.Namespace, r.Name, e)
		}
	}
}

func format(v *float64, f func(float64) string) string {
	if v == nil {
		return "-"
	}
	return f(*v)
}

func latency(ms float64) string { return fmt.Sprintf("%dms", int64(math.Round(ms))) }

// writeTable writes rows with columns three spaces apart; the first left
// columns are left-aligned, the others right-aligned.
func writeTable(w io.Writer, rows [][]string, left int) {
	widths := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	for _, r := range rows {
		var b strings.Builder
		for i, c := range r {
			pad := strings.Repeat(" ", widths[i]-len([]rune(c)))
			if i > 0 {
				b.WriteString("   ")
			}
			if i < left {
				b.WriteString(c)
				if i < len(r)-1 {
					b.WriteString(pad)
				}
			} else {
				b.WriteString(pad)
				b.WriteString(c)
			}
		}
		fmt.Fprintln(w, b.String())
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// relPath shows path relative to the current directory when it is below it.
func relPath(path string) string {
	if !filepath.IsAbs(path) {
		return path
	}
	if wd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(wd, path); err == nil && !strings.HasPrefix(rel, "..") {
			return rel
		}
	}
	return path
}
