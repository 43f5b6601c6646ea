package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/canary"
	kcanary "github.com/sluicehq/sluice/canary/kubernetes"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
	"github.com/sluicehq/sluice/local/up"
)

// Exit codes of `sluice status NAME --wait` (and of the other canary
// commands for bad input and an unreachable control plane).
const (
	exitPromoted    = 0
	exitFailed      = 1
	exitTimeout     = 2
	exitUnreachable = 3
)

// exitError is an error with the exit code the CLI returns for it.
type exitError struct {
	code int
	err  error // nil: nothing more to print
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

// exitCodeOf maps an error of a command to the CLI's exit code, and says
// whether its message is still to be printed.
func exitCodeOf(err error) (int, bool) {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code, ee.err != nil && !errors.Is(ee.err, errSilent)
	}
	return 1, !errors.Is(err, errSilent)
}

func badInput(format string, args ...any) error {
	return &exitError{code: exitUnreachable, err: fmt.Errorf(format, args...)}
}

// canaryClient discovers the running `sluice up`; failing that, exit 3.
func canaryClient(g *globalOptions) (*up.Client, error) {
	c, err := up.Discover(g.stateDir)
	if err != nil {
		return nil, &exitError{code: exitUnreachable, err: err}
	}
	return c, nil
}

// canaryCommands are the canary commands of the CLI.
func canaryCommands(g *globalOptions) []*cobra.Command {
	cmds := []*cobra.Command{newGetCmd(g), newStatusCmd(g), newApplyCmd(g)}
	for _, a := range []struct {
		kind  canary.ManualKind
		short string
	}{
		{canary.ManualPromote, "Promote a canary's revision now, skipping the rest of its analysis"},
		{canary.ManualAbort, "Roll a canary's run back now"},
		{canary.ManualRetry, "Run a failed revision's analysis again, without editing the workload"},
		{canary.ManualPause, "Hold a canary where it is: weights kept, no checks, no deadline"},
		{canary.ManualResume, "Resume a paused canary"},
	} {
		cmds = append(cmds, newManualCmd(g, a.kind, a.short))
	}
	return cmds
}

// splitName reads NAME or NAMESPACE/NAME.
func splitName(arg, ns string) (string, string, error) {
	if a, b, ok := strings.Cut(arg, "/"); ok {
		ns, arg = a, b
	}
	if arg == "" || ns == "" || strings.Contains(arg, "/") {
		return "", "", badInput("%q is not a canary name (NAME or NAMESPACE/NAME)", arg)
	}
	return ns, arg, nil
}

func newManualCmd(g *globalOptions, kind canary.ManualKind, short string) *cobra.Command {
	return &cobra.Command{
		Use:   string(kind) + " NAME",
		Short: short,
		Long: short + `.

On a cluster this sets the Canary's annotations ` + kcanary.ActionAnnotation + `=` + string(kind) + ` and
` + kcanary.ActionAtAnnotation + ` (now), which the controller acts on once.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, ns, name, err := g.canaryTarget(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			msg, err := b.SetAction(cmd.Context(), ns, name, kind)
			if err != nil {
				return asExit(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "canary %s/%s: %s\n", ns, name, msg)
			return nil
		},
	}
}

// canaryTarget reads a NAME or NAMESPACE/NAME argument, then chooses the
// backend: the canary's namespace is the argument's, else -n, else the
// backend's default.
func (g *globalOptions) canaryTarget(ctx context.Context, arg string) (canaryBackend, string, string, error) {
	if _, _, err := splitName(arg, "any"); err != nil {
		return nil, "", "", err // bad input, whatever the backend
	}
	b, err := g.canaryBackend(ctx)
	if err != nil {
		return nil, "", "", err
	}
	ns, name, err := splitName(arg, g.nameNamespace(b))
	return b, ns, name, err
}

// nameNamespace is the namespace of a canary NAME: -n, else the backend's.
func (g *globalOptions) nameNamespace(b canaryBackend) string {
	if g.namespace != "" {
		return g.namespace
	}
	return b.NameNamespace()
}

// asExit gives err exit code 3 unless it has one.
func asExit(err error) error {
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	return &exitError{code: exitUnreachable, err: err}
}

func newApplyCmd(g *globalOptions) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Apply a manifest: to a local sluice up (a changed Deployment starts a rollout), or to a cluster",
		Long: `Apply a manifest. A local sluice up takes every kind it runs (a changed
Deployment starts a rollout). A cluster takes Canary, MetricTemplate and
AlertProvider objects, applied server-side with field manager ` + fieldManager + `;
apply other kinds with kubectl.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			data, err := os.ReadFile(file)
			if err != nil {
				return badInput("reading %s: %w", file, err)
			}
			b, err := g.canaryBackend(cmd.Context())
			if err != nil {
				return err
			}
			msg, err := b.Apply(cmd.Context(), file, data, g.nameNamespace(b))
			if err != nil {
				return asExit(err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), msg)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "the manifest to apply")
	_ = cmd.MarkFlagRequired("filename")
	return cmd
}

func newGetCmd(g *globalOptions) *cobra.Command {
	var output string
	var watch, all bool
	cmd := &cobra.Command{
		Use:       "get canaries",
		Short:     "List the canaries and their state",
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"canaries", "canary"},
		RunE: func(cmd *cobra.Command, args []string) error {
			switch args[0] {
			case "canaries", "canary", "canaries.sluice.dev":
			default:
				return badInput("unknown resource %q: only canaries", args[0])
			}
			switch output {
			case "", "wide", "json", "yaml":
			default:
				return badInput("unknown output format %q (json, yaml, wide)", output)
			}
			b, err := g.canaryBackend(cmd.Context())
			if err != nil {
				return err
			}
			ns := g.namespace
			switch {
			case all:
				ns = ""
			case ns == "":
				ns = b.ListNamespace()
			}
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			list, err := b.List(ctx, ns)
			if err != nil {
				return asExit(err)
			}
			if err := renderCanaries(out, list, output, true); err != nil {
				return err
			}
			if !watch {
				return nil
			}
			ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
			defer stop()
			last := rowsKey(list)
			err = b.Watch(ctx, ns, "", func() (bool, error) {
				list, err := b.List(ctx, ns)
				if err != nil {
					return ctx.Err() != nil, err
				}
				if k := rowsKey(list); k != last {
					last = k
					return false, renderCanaries(out, list, output, false)
				}
				return false, nil
			})
			if err != nil && ctx.Err() == nil {
				return asExit(err)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json, yaml or wide")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "print again whenever a canary changes")
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "canaries of every namespace")
	return cmd
}

func rowsKey(list []v1beta1.Canary) string {
	b, _ := json.Marshal(list)
	return string(b)
}

// canaryList is what -o json|yaml prints, as kubectl prints a list.
type canaryList struct {
	APIVersion string           `json:"apiVersion"`
	Kind       string           `json:"kind"`
	Items      []v1beta1.Canary `json:"items"`
}

// renderCanaries prints canaries as a table (with headers when header is
// set), or as JSON or YAML.
func renderCanaries(w io.Writer, list []v1beta1.Canary, output string, header bool) error {
	switch output {
	case "json", "yaml":
		l := canaryList{APIVersion: "v1", Kind: "List", Items: list}
		if l.Items == nil {
			l.Items = []v1beta1.Canary{}
		}
		data, err := json.MarshalIndent(l, "", "    ")
		if err != nil {
			return err
		}
		if output == "yaml" {
			if data, err = yaml.JSONToYAML(data); err != nil {
				return err
			}
			_, err = w.Write(data)
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", data)
		return err
	}
	if len(list) == 0 && header {
		_, err := fmt.Fprintln(w, "No canaries found.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	if header {
		if output == "wide" {
			fmt.Fprintln(tw, "NAMESPACE\tNAME\tSTATUS\tWEIGHT\tFAILEDCHECKS\tLASTTRANSITIONTIME\tOBSERVED\tPROMOTED\tMESSAGE")
		} else {
			fmt.Fprintln(tw, "NAMESPACE\tNAME\tSTATUS\tWEIGHT\tFAILEDCHECKS\tLASTTRANSITIONTIME")
		}
	}
	for _, c := range list {
		s := c.Status
		phase := string(s.Phase)
		if phase == "" {
			phase = "-"
		}
		lt := "-"
		if s.LastTransitionTime != nil {
			lt = s.LastTransitionTime.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s", c.Namespace, c.Name, phase, s.CanaryWeight, s.FailedChecks, lt)
		if output == "wide" {
			fmt.Fprintf(tw, "\t%s\t%s\t%s", dash(s.ObservedRevision), dash(s.LastPromotedRevision), dash(s.Message))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newStatusCmd(g *globalOptions) *cobra.Command {
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "status NAME",
		Short: "Show a canary's state; with --wait, follow its rollout to the end",
		Long: `Show a canary's state. With --wait, print each step as it happens and exit
when the rollout of the target's current revision ends:

  0  the current revision was promoted
  1  it failed, or was rolled back
  2  --timeout passed first
  3  bad input, an unknown canary, or no sluice up or cluster to ask

NAME is NAME or NAMESPACE/NAME; without a namespace, -n's, else the
kubeconfig context's on a cluster, else default. On a cluster the verdict
goes by the Canary's status.observedRevision and lastPromotedRevision:
wait until the controller has seen a new revision (status Progressing)
before waiting for its end.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout < 0 {
				return badInput("--timeout %v is negative", timeout)
			}
			b, ns, name, err := g.canaryTarget(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			return followCanary(ctx, b, cmd.OutOrStdout(), ns, name, wait, timeout)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for the rollout of the current revision to end, printing each step")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "with --wait, give up after this long (exit 2); 0 waits for ever")
	return cmd
}

// canaryState is one observation of a canary for `sluice status`.
type canaryState struct {
	c v1beta1.Canary
	// revision is the target's current revision (empty when unknown).
	revision string
}

// verdict says whether the rollout of the current revision ended: 0
// promoted, 1 failed; -1 still running.
func (s *canaryState) verdict() int {
	st := s.c.Status
	rev := s.revision
	if rev == "" {
		rev = st.ObservedRevision
	}
	switch {
	case st.Phase == v1beta1.PhaseSucceeded && st.LastPromotedRevision != "" && st.LastPromotedRevision == rev:
		return exitPromoted
	case st.Phase == v1beta1.PhaseInitialized && st.LastPromotedRevision == rev && st.ObservedRevision == rev:
		return exitPromoted
	case st.Phase == v1beta1.PhaseFailed && (st.ObservedRevision == rev || st.ObservedRevision == ""):
		return exitFailed
	}
	return -1
}

// stepLine is one line of `sluice status`: time, phase, weight, success
// rate, p99, verdict and message.
func stepLine(now time.Time, s *canaryState) string {
	st := s.c.Status
	sr, p99, verdict := "-", "-", "-"
	for _, ch := range st.Checks {
		v := "-"
		if ch.Value != nil {
			v = strings.TrimSpace(fmt.Sprintf("%.4g", ch.Value.Float64()))
		}
		switch ch.Name {
		case "request-success-rate":
			if v != "-" {
				v += "%"
			}
			sr = v
		case "request-duration":
			if v != "-" {
				v += "ms"
			}
			p99 = v
		}
		if verdict == "-" || ch.Verdict != v1beta1.VerdictPass {
			verdict = string(ch.Verdict)
		}
	}
	phase := string(st.Phase)
	if phase == "" {
		phase = "Pending"
	}
	return fmt.Sprintf("%s  %-16s weight %3d%%  success %-8s p99 %-8s %-8s %s",
		now.Format("15:04:05"), phase, st.CanaryWeight, sr, p99, verdict, st.Message)
}

// followCanary prints the canary's state, and with wait every change until
// the rollout of the current revision ends.
func followCanary(ctx context.Context, b canaryBackend, w io.Writer, ns, name string, wait bool, timeout time.Duration) error {
	s, err := b.Get(ctx, ns, name)
	if err != nil {
		return timeoutOr(ctx, err, timeout)
	}
	line := stepLine(time.Now(), s)
	fmt.Fprintln(w, line)
	last := line[len("15:04:05"):]
	if !wait {
		if s.verdict() == exitFailed {
			return &exitError{code: exitFailed}
		}
		return nil
	}
	var result error
	err = b.Watch(ctx, ns, name, func() (bool, error) {
		s, err := b.Get(ctx, ns, name)
		if err != nil {
			return false, err
		}
		line := stepLine(time.Now(), s)
		if l := line[len("15:04:05"):]; l != last {
			last = l
			fmt.Fprintln(w, line)
		}
		switch s.verdict() {
		case exitPromoted:
			fmt.Fprintf(w, "canary %s/%s: revision %s promoted\n", ns, name, s.c.Status.LastPromotedRevision)
			return true, nil
		case exitFailed:
			fmt.Fprintf(w, "canary %s/%s: revision %s failed: %s\n", ns, name, s.c.Status.ObservedRevision, s.c.Status.Message)
			result = &exitError{code: exitFailed}
			return true, nil
		}
		return false, nil
	})
	switch {
	case err != nil:
		return timeoutOr(ctx, err, timeout)
	case result != nil:
		return result
	case ctx.Err() != nil:
		return timeoutOr(ctx, ctx.Err(), timeout)
	}
	return nil
}

// timeoutOr is exit 2 when the timeout passed, err otherwise (exit 3 unless
// it says otherwise).
func timeoutOr(ctx context.Context, err error, timeout time.Duration) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &exitError{code: exitTimeout, err: fmt.Errorf("timed out after %v", timeout)}
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	return &exitError{code: exitUnreachable, err: err}
}
