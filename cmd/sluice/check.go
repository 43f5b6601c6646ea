package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sluicehq/sluice/local/up"
	"github.com/sluicehq/sluice/mesh/api/certs"
	"github.com/sluicehq/sluice/mesh/telemetry"
	"github.com/sluicehq/sluice/proxy/controlplane"
)

type checkOptions struct {
	wait  time.Duration
	pre   bool
	proxy bool
}

func newCheckCmd(g *globalOptions) *cobra.Command {
	o := &checkOptions{}
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check that Sluice is healthy: a running sluice up, or a cluster's installation",
		Long: `Check that Sluice is healthy. Each check prints ✓, ‼ (a warning) or ×; the
command exits 1 if any check fails (×). With --wait it checks again until
none fails or the time is up.

In local mode, connect to the running ` + "`sluice up`" + ` and check its control plane,
its identity service, and every replica and proxy.

On a cluster (see sluice --help for which one), check the Kubernetes API,
Sluice's CRDs, the control plane's Deployments, the identity's trust anchors
and issuer certificate, and the injector's webhook; with --proxy also every
meshed pod's proxy (of -n NAMESPACE, or of every namespace). With --pre,
check instead that Sluice can be installed.`,
		Example: `  sluice check
  sluice check --pre --context kind-kind
  sluice check --proxy -n shop`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			t, err := g.resolveTarget(ctx)
			if err == nil && t.kube != nil {
				return runKubeCheck(ctx, cmd.OutOrStdout(), g, t.kube, o)
			}
			if g.kubeconfig != "" || g.kubeContext != "" {
				// The cluster's configuration is wrong.
				renderCategories(cmd.OutOrStdout(), []checkCategory{{Name: "kubernetes-api", Results: []checkResult{
					{Name: "can initialize the client", Hints: []string{err.Error()}},
				}}})
				return errSilent
			}
			if o.pre || o.proxy {
				return errors.New("--pre and --proxy check a cluster; local mode has neither (give --kubeconfig or --context)")
			}
			deadline := time.Now().Add(o.wait)
			for {
				results := runChecks(ctx, g.stateDir)
				if allPassed(results) || time.Now().After(deadline) {
					renderCheck(cmd.OutOrStdout(), results)
					if !allPassed(results) {
						return errSilent
					}
					return nil
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(time.Second):
				}
			}
		},
	}
	cmd.Flags().DurationVar(&o.wait, "wait", 0, "check again until every check passes, for at most this long")
	cmd.Flags().BoolVar(&o.pre, "pre", false, "on a cluster: check that Sluice can be installed, instead of the installed Sluice")
	cmd.Flags().BoolVar(&o.proxy, "proxy", false, "on a cluster: also check the proxies of the meshed pods (of -n, or of every namespace)")
	return cmd
}

// runKubeCheck runs the cluster's checks (again until none fails, for at
// most o.wait) and prints them.
func runKubeCheck(ctx context.Context, w io.Writer, g *globalOptions, k *kubeTarget, o *checkOptions) error {
	kc := &kubeChecker{k: k, version: version, pre: o.pre, proxy: o.proxy, proxyNamespace: g.namespace}
	deadline := time.Now().Add(o.wait)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		cats := kc.run(cctx)
		cancel()
		if categoriesPassed(cats) || time.Now().After(deadline) {
			renderCategories(w, cats)
			if !categoriesPassed(cats) {
				return errSilent
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// checkResult is one ✓, ‼ or × line, with details under a ‼ or ×.
type checkResult struct {
	Name string
	OK   bool
	// Warn makes a check that is not OK a warning (‼), which does not fail
	// the command.
	Warn    bool
	Detail  string   // after the name, in parentheses
	Hints   []string // lines under a failed check
	Skipped bool     // not run because an earlier check failed
}

// mark is the result's ✓, ‼ or ×.
func (r checkResult) mark() string {
	switch {
	case r.OK:
		return "✓"
	case r.Warn:
		return "‼"
	}
	return "×"
}

// failed reports whether r fails the command (×).
func (r checkResult) failed() bool { return !r.OK && !r.Warn }

func allPassed(rs []checkResult) bool {
	for _, r := range rs {
		if r.failed() {
			return false
		}
	}
	return true
}

// checkCategory is a titled group of checks, as `linkerd check` prints
// them.
type checkCategory struct {
	Name    string
	Results []checkResult
}

// runChecks runs the checks in order; those that need the API are skipped
// when it cannot be reached.
func runChecks(ctx context.Context, stateDir string) []checkResult {
	var out []checkResult
	client, err := up.Discover(stateDir)
	if err != nil {
		return []checkResult{{Name: "can reach the running sluice up", Hints: []string{err.Error()}}}
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	st, err := client.Status(ctx)
	if err != nil {
		return []checkResult{{Name: "can reach the running sluice up", Hints: []string{err.Error()}}}
	}
	out = append(out, checkResult{Name: "can reach the running sluice up", OK: true, Detail: fmt.Sprintf("%s, pid %d", st.API, st.PID)})
	out = append(out, checkControlPlane(ctx, st))
	out = append(out, checkIdentity(ctx, client))
	sums, err := client.Telemetry().Workloads(ctx, time.Minute)
	out = append(out, checkReplicas(st)...)
	out = append(out, checkMeshed(st, sums, err))
	return out
}

// checkControlPlane checks that the control plane answers gRPC health
// checks over TLS, with a certificate for its mesh identity that chains to
// the trust anchors, as a proxy checks it.
func checkControlPlane(ctx context.Context, st *up.Status) checkResult {
	addr := st.ControlPlane
	r := checkResult{Name: "control plane is reachable", Detail: addr}
	anchors, err := os.ReadFile(st.TrustAnchors)
	if err != nil {
		r.Hints = []string{fmt.Sprintf("reading the trust anchors: %v", err)}
		return r
	}
	roots, err := certs.ParseRoots(anchors)
	if err != nil {
		r.Hints = []string{fmt.Sprintf("the trust anchors %s: %v", st.TrustAnchors, err)}
		return r
	}
	creds, err := controlplane.TransportCredentials(controlplane.TLSOptions{
		Service: "control plane", Address: addr, ServerName: st.ControlPlaneName, Roots: roots,
	})
	if err != nil {
		r.Hints = []string{err.Error()}
		return r
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		r.Hints = []string{err.Error()}
		return r
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	switch {
	case err != nil:
		r.Hints = []string{fmt.Sprintf("gRPC health check of %s: %v", addr, err)}
	case resp.GetStatus() != healthpb.HealthCheckResponse_SERVING:
		r.Hints = []string{fmt.Sprintf("%s reports %s", addr, resp.GetStatus())}
	default:
		r.OK = true
	}
	return r
}

func checkIdentity(ctx context.Context, client *up.Client) checkResult {
	r := checkResult{Name: "identity issues certificates"}
	res, err := client.CheckIdentity(ctx)
	switch {
	case err != nil:
		r.Hints = []string{err.Error()}
	case !res.OK:
		r.Hints = []string{res.Message}
	default:
		r.OK = true
	}
	return r
}

// checkReplicas checks that every replica and the ingress proxy are ready.
func checkReplicas(st *up.Status) []checkResult {
	ready, total := 0, 0
	var hints []string
	for _, rep := range st.Replicas {
		if rep.Stopping {
			continue
		}
		total++
		if rep.Ready {
			ready++
			continue
		}
		hints = append(hints, fmt.Sprintf("%s/%s: %s", rep.Namespace, rep.Pod, rep.Problem))
		logs := []string{rep.App.Log, rep.Proxy.Log}
		switch {
		case !rep.ProxyReady && rep.App.Running() && rep.App.Restarts == 0:
			logs = logs[1:] // the sidecar's fault
		case rep.ProxyReady && rep.Proxy.Restarts == 0:
			logs = logs[:1] // the application's
		}
		for _, l := range logs {
			if l != "" {
				hints = append(hints, "  see "+relPath(l))
			}
		}
	}
	for _, w := range st.Workloads {
		if w.Current < w.Replicas {
			hints = append(hints, fmt.Sprintf("%s/%s: %d of %d replicas exist", w.Namespace, w.Name, w.Current, w.Replicas))
		}
	}
	out := []checkResult{{
		Name:   "every replica is ready",
		OK:     ready == total && len(hints) == 0,
		Detail: fmt.Sprintf("%d/%d", ready, total),
		Hints:  hints,
	}}
	if len(st.Ingress) > 0 {
		r := checkResult{Name: "ingress proxy is ready", OK: st.IngressReady, Detail: fmt.Sprintf("%d %s published", len(st.Ingress), plural(len(st.Ingress), "port", "ports"))}
		if !r.OK {
			r.Hints = []string{"see " + relPath(st.IngressProxy.Log)}
			if st.IngressProxy.LastExit != "" {
				r.Hints = append([]string{"last exit: " + st.IngressProxy.LastExit}, r.Hints...)
			}
		}
		out = append(out, r)
	}
	if len(st.Problems) > 0 {
		out = append(out, checkResult{Name: "manifests are valid", Hints: st.Problems, Detail: fmt.Sprintf("%d %s", len(st.Problems), plural(len(st.Problems), "problem", "problems"))})
	} else {
		out = append(out, checkResult{Name: "manifests are valid", OK: true})
	}
	return out
}

// checkMeshed checks that every replica's proxy holds a certificate (is
// ready as a mesh member) and answers telemetry's scrapes.
func checkMeshed(st *up.Status, sums []telemetry.WorkloadSummary, telErr error) checkResult {
	r := checkResult{Name: "every proxy is meshed"}
	meshed, total := 0, 0
	scraped := map[string]bool{} // workloads whose proxies all answered
	for _, s := range sums {
		if s.Pods > 0 && s.Meshed == s.Pods {
			scraped[s.Namespace+"/"+s.Workload] = true
		}
		for _, e := range s.Errors {
			r.Hints = append(r.Hints, fmt.Sprintf("%s/%s: metrics not scraped: %s", s.Namespace, s.Workload, e))
		}
	}
	if telErr != nil {
		r.Hints = append(r.Hints, "telemetry: "+telErr.Error())
	}
	for _, rep := range st.Replicas {
		if rep.Stopping {
			continue
		}
		total++
		if !rep.ProxyReady {
			r.Hints = append(r.Hints, fmt.Sprintf("%s/%s: sidecar not ready (no certificate yet?); see %s", rep.Namespace, rep.Pod, relPath(rep.Proxy.Log)))
			continue
		}
		meshed++
	}
	r.Detail = fmt.Sprintf("%d/%d", meshed, total)
	r.OK = meshed == total && len(r.Hints) == 0
	return r
}

// renderCheck writes local mode's results as `linkerd check` does.
func renderCheck(w io.Writer, rs []checkResult) {
	renderCategories(w, []checkCategory{{Name: "sluice-local", Results: rs}})
}

// renderCategories writes each category's title, underlined, and its
// results, one line each with the hints of a ‼ or × indented below; then
// the summary, × when any check failed.
func renderCategories(w io.Writer, cats []checkCategory) {
	ok := true
	for i, c := range cats {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w, c.Name)
		fmt.Fprintln(w, strings.Repeat("-", len([]rune(c.Name))))
		for _, r := range c.Results {
			line := r.mark() + " " + r.Name
			if r.Detail != "" {
				line += " (" + r.Detail + ")"
			}
			fmt.Fprintln(w, line)
			if !r.OK {
				for _, h := range r.Hints {
					fmt.Fprintln(w, "    "+strings.TrimRight(h, "\n"))
				}
			}
			ok = ok && !r.failed()
		}
	}
	fmt.Fprintln(w)
	if ok {
		fmt.Fprintln(w, "Status check results are ✓")
	} else {
		fmt.Fprintln(w, "Status check results are ×")
	}
}

// categoriesPassed reports whether no check of cats failed (×).
func categoriesPassed(cats []checkCategory) bool {
	for _, c := range cats {
		if !allPassed(c.Results) {
			return false
		}
	}
	return true
}
