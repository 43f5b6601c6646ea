// Command sluice is Sluice's CLI. In local mode:
//
//	sluice up -f DIR      run the control plane and DIR's workloads, meshed, on this machine
//	sluice stat           golden metrics per workload, as `linkerd viz stat deploy` shows them
//	sluice check          check that the running `sluice up` and its mesh are healthy
//
// `sluice stat` and `sluice check` talk to the `sluice up` whose state
// directory (--state-dir, default .sluice) they are given.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/local/up"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// errSilent is a failure whose message was already printed (check's ×).
var errSilent = errors.New("failed")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the CLI and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		code, show := exitCodeOf(err) // canary.go
		if show {
			fmt.Fprintf(stderr, "sluice: %v\n", err)
		}
		return code
	}
	return 0
}

// globalOptions are the flags every command has.
type globalOptions struct {
	stateDir string
	// stateDirSet: --state-dir or $SLUICE_STATE_DIR was given.
	stateDirSet func() bool
	// kubeconfig and kubeContext choose a cluster; namespace is -n.
	kubeconfig  string
	kubeContext string
	namespace   string
}

// stateDirGiven reports whether the user named a state directory.
func (g *globalOptions) stateDirGiven() bool {
	return os.Getenv("SLUICE_STATE_DIR") != "" || (g.stateDirSet != nil && g.stateDirSet())
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	g := &globalOptions{}
	root := &cobra.Command{
		Use:   "sluice",
		Short: "Progressive delivery with its own service mesh",
		Long: `Sluice runs your workloads meshed — mutual TLS, golden metrics, traffic
splits — and, soon, rolls out new versions step by step, judged by those metrics.

Local mode runs everything on this machine from Kubernetes-style YAML:

  sluice up -f examples/mesh     # start the control plane and the workloads
  sluice stat                    # golden metrics per workload
  sluice check                   # is the mesh healthy?

On a Kubernetes cluster, the same commands work through the usual kubeconfig:

  sluice install --crds | kubectl apply --server-side -f -
  sluice check --pre             # can Sluice be installed here?
  sluice get canaries -A
  sluice status podinfo --wait --timeout 10m

Where a command acts:
  --kubeconfig or --context given      that cluster
  --state-dir or $SLUICE_STATE_DIR     that sluice up
  otherwise                            the sluice up of .sluice when it runs,
                                       else the cluster of the usual Kubernetes
                                       configuration (in-cluster, $KUBECONFIG,
                                       ~/.kube/config)`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	defState := os.Getenv("SLUICE_STATE_DIR")
	if defState == "" {
		defState = up.DefaultStateDir
	}
	root.PersistentFlags().StringVar(&g.stateDir, "state-dir", defState, "directory of local mode's state: certificates, logs, generated configurations, the API address (env SLUICE_STATE_DIR)")
	pf := root.PersistentFlags()
	g.stateDirSet = func() bool { return pf.Changed("state-dir") }
	pf.StringVar(&g.kubeconfig, "kubeconfig", "", "kubeconfig file: act on its cluster rather than on a local sluice up")
	pf.StringVar(&g.kubeContext, "context", "", "kubeconfig context: act on its cluster rather than on a local sluice up")
	pf.StringVarP(&g.namespace, "namespace", "n", "", "namespace (default: the kubeconfig context's on a cluster, default in local mode)")
	root.AddCommand(newUpCmd(g), newStatCmd(g), newCheckCmd(g), newInstallCmd(g))
	root.AddCommand(newInjectCmd())
	root.AddCommand(canaryCommands(g)...)
	root.AddCommand(newControllerCmd())
	root.AddCommand(newDestinationCmd(), newIdentityCmd(), newTelemetryCmd(), newInjectorCmd())
	root.AddCommand(newGateCmd(g), newRollbackCmd(g), newLoadTestCmd())
	return root
}
