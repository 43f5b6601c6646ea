package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/analysis/gate"
)

// gateAction is one subcommand of `sluice gate` or `sluice rollback`.
type gateAction struct {
	use, short string
	do         func(c *gate.Client, ctx context.Context, ns, name string) (gate.State, error)
}

// newGateCmd is `sluice gate open|close|status NAME`: the manual gate a
// Canary's confirm-* webhooks ask at <API>/gate/check.
func newGateCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gate",
		Short: "Open or close a canary's manual gate (its confirm-* webhooks at <API>/gate/check)",
		Long: `A Canary's confirm-rollout, confirm-traffic-increase and confirm-promotion
webhooks pointed at the running sluice up's /gate/check wait while the gate is
closed (the default) and proceed once it is open. The gates are kept under
the state directory and survive a restart of sluice up.`,
		Example: `  # in a Canary: webhooks: [{name: approve, type: confirm-promotion, url: http://127.0.0.1:<API port>/gate/check}]
  sluice gate open backend
  sluice gate close backend -n shop`,
	}
	cmd.AddCommand(
		gateSubCmd(g, gateAction{"open NAME", "Open the gate: waiting steps proceed", (*gate.Client).OpenGate}),
		gateSubCmd(g, gateAction{"close NAME", "Close the gate: gated steps wait", (*gate.Client).CloseGate}),
		gateSubCmd(g, gateAction{"status NAME", "Show a canary's gate and rollback switch", (*gate.Client).Status}),
	)
	return cmd
}

// newRollbackCmd is `sluice rollback open|close NAME`: the switch a
// Canary's rollback webhook asks at <API>/rollback/check.
func newRollbackCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollback",
		Short: "Request or withdraw a canary's rollback (its rollback webhook at <API>/rollback/check)",
		Long: `A Canary's rollback webhook pointed at the running sluice up's
/rollback/check rolls the canary back while the switch is open. The switch is
kept under the state directory and survives a restart of sluice up.`,
		Example: `  sluice rollback open backend
  sluice rollback close backend`,
	}
	cmd.AddCommand(
		gateSubCmd(g, gateAction{"open NAME", "Request a rollback", (*gate.Client).OpenRollback}),
		gateSubCmd(g, gateAction{"close NAME", "Withdraw a rollback request", (*gate.Client).CloseRollback}),
	)
	return cmd
}

func gateSubCmd(g *globalOptions, a gateAction) *cobra.Command {
	var ns string
	cmd := &cobra.Command{
		Use:   a.use,
		Short: a.short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, name, err := splitName(args[0], ns)
			if err != nil {
				return err
			}
			c, err := canaryClient(g)
			if err != nil {
				return err
			}
			st, err := a.do(&gate.Client{BaseURL: c.BaseURL, HTTPClient: c.HTTPClient, By: "sluice CLI"}, cmd.Context(), ns, name)
			if err != nil {
				return &exitError{code: exitUnreachable, err: err}
			}
			printGate(cmd.OutOrStdout(), ns, name, st)
			return nil
		},
	}
	cmd.Flags().StringVarP(&ns, "namespace", "n", "default", "namespace of the canary")
	return cmd
}

func printGate(w io.Writer, ns, name string, st gate.State) {
	fmt.Fprintf(w, "canary %s/%s: gate %s, rollback %s", ns, name, st.Gate, st.Rollback)
	if !st.UpdatedAt.IsZero() {
		fmt.Fprintf(w, " (set %s", st.UpdatedAt.Local().Format("2006-01-02 15:04:05"))
		if st.By != "" {
			fmt.Fprintf(w, " by %s", st.By)
		}
		fmt.Fprint(w, ")")
	}
	fmt.Fprintln(w)
}
