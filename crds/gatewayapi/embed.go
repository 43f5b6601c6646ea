// Package gatewayapi holds the Gateway API CustomResourceDefinitions that
// Sluice installs: the experimental channel of the sigs.k8s.io/gateway-api
// version in go.mod (HTTPRoute's retry and sessionPersistence are only
// there), one YAML file per CRD, copied unchanged from the module by
// hack/gatewayapi-crds.sh and embedded so that `sluice install --crds` can
// print them.
package gatewayapi

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
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
	b, err := join(FS)
	if err != nil {
		// The files are embedded at build time; reading them cannot fail.
		panic(err)
	}
	return b
}

// join concatenates the *.yaml files of fsys, in name order, as a
// multi-document YAML stream.
func join(fsys fs.FS) ([]byte, error) {
	names, err := fs.Glob(fsys, "*.yaml")
	if err != nil {
		return nil, fmt.Errorf("listing CRD files: %w", err)
	}
	var out bytes.Buffer
	for _, name := range names {
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("reading CRD file %s: %w", name, err)
		}
		b = bytes.TrimSpace(b)
		if !bytes.HasPrefix(b, []byte("---")) {
			out.WriteString("---\n")
		}
		out.Write(b)
		out.WriteByte('\n')
	}
	return out.Bytes(), nil
}
