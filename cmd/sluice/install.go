package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/crds/gatewayapi"
	"github.com/sluicehq/sluice/crds/manifests"
)

type installOptions struct {
	crds bool
}

func newInstallCmd() *cobra.Command {
	o := &installOptions{}
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Print the Kubernetes manifests that install Sluice",
		Long: `Print the manifests that install Sluice on a Kubernetes cluster, for
kubectl to apply. With --crds, only the CustomResourceDefinitions: Sluice's
(sluice.dev, policy.sluice.dev) and the Gateway API's, experimental channel
` + gatewayapi.BundleVersion + ` (HTTPRoute retry and session persistence are only there).

Apply them server-side: the Gateway API's HTTPRoute CRD is too large for the
annotation that client-side kubectl apply writes.`,
		Example: `  sluice install --crds | kubectl apply --server-side -f -`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !o.crds {
				return errors.New("the control plane's manifests are not available yet: run sluice install --crds for the CRDs")
			}
			return writeCRDs(cmd.OutOrStdout())
		},
	}
	cmd.Flags().BoolVar(&o.crds, "crds", false, "print only the CustomResourceDefinitions (Sluice's and the Gateway API's)")
	return cmd
}

// writeCRDs writes every CRD Sluice installs as one YAML stream: Sluice's,
// then the Gateway API's.
func writeCRDs(w io.Writer) error {
	for _, part := range []struct {
		name string
		yaml []byte
	}{
		{"Sluice CRDs", manifests.All()},
		{"Gateway API CRDs", gatewayapi.All()},
	} {
		if _, err := w.Write(part.yaml); err != nil {
			return fmt.Errorf("writing the %s: %w", part.name, err)
		}
	}
	return nil
}
