// Package gatewayapi holds the Gateway API CustomResourceDefinitions that
// Sluice installs: the experimental channel of the sigs.k8s.io/gateway-api
// version in go.mod (HTTPRoute's retry and sessionPersistence are only
// there), one YAML file per CRD, copied unchanged from the module by
// hack/gatewayapi-crds.sh and embedded so that `sluice install --crds` can
// print them.
package gatewayapi

import (
	"embed"

	"github.com/sluicehq/sluice/crds/manifests"
)

// BundleVersion is the Gateway API release the CRDs come from (their
// gateway.networking.k8s.io/bundle-version annotation), the version of
// sigs.k8s.io/gateway-api in go.mod.
const BundleVersion = "v1.6.3"

// Channel is the Gateway API release channel of the CRDs (their
// gateway.networking.k8s.io/channel annotation).
const Channel = "experimental"

// FS holds the CRD files, named <group>_<plural>.yaml as upstream names them.
//
//go:embed *.yaml
var FS embed.FS

// All returns every CRD as one YAML stream: the files in name order, each
// a document that starts with "---" and ends with a newline.
func All() []byte {
	b, err := manifests.Join(FS)
	if err != nil {
		// The files are embedded at build time; reading them cannot fail.
		panic(err)
	}
	return b
}
