package main

import (
	"context"
	"fmt"
	"os"

	"github.com/sluicehq/sluice/hack/images/oci"
)

// PauseRef is the sandbox image containerd runs by default; the pause image
// is built under this name so that clusters need not pull it.
const PauseRef = "registry.k8s.io/pause:3.10"

// caBundle is the host's CA bundle, copied into images that make TLS calls.
const caBundle = "/etc/ssl/certs/ca-certificates.crt"

// UIDs the images run as.
const (
	nonrootUID = 65532 // the control plane and the demo app
	proxyUID   = 2102  // sluice-proxy; proxy/iptables exempts its traffic
	pauseUID   = 65535 // as upstream's pause image
)

// buildConfig is what every image definition gets.
type buildConfig struct {
	moduleDir string // root of the sluice module, where go build runs
	registry  string
	version   string
}

// ldflags stamps the version into main.version and strips debug info.
func (c buildConfig) ldflags() string {
	return "-s -w -X main.version=" + c.version
}

// definition is one image the CLI can build.
type definition struct {
	// name is the CLI argument and the base name of the outputs.
	name string
	// ref returns the image reference for a registry and version.
	ref func(c buildConfig) string
	// image returns the image's content and config.
	image func(ctx context.Context, c buildConfig) (oci.Image, error)
}

// definitions are all images, in build order.
var definitions = []definition{
	{
		name: "sluice",
		ref:  func(c buildConfig) string { return c.registry + "/sluice:" + c.version },
		image: func(ctx context.Context, c buildConfig) (oci.Image, error) {
			return goImage(ctx, c, "sluice", "./cmd/sluice", nonrootUID, "nonroot", nil)
		},
	},
	{
		name: "sluice-proxy",
		ref:  func(c buildConfig) string { return c.registry + "/sluice-proxy:" + c.version },
		image: func(ctx context.Context, c buildConfig) (oci.Image, error) {
			ipt, err := iptablesFiles(ctx)
			if err != nil {
				return oci.Image{}, err
			}
			// /run holds the xtables lock that iptables -w takes.
			extra := append(ipt, oci.Dir("/run", 0o755))
			return goImage(ctx, c, "sluice-proxy", "./cmd/sluice-proxy", proxyUID, "sluice-proxy", extra)
		},
	},
	{
		name: "sluice-demo-app",
		ref:  func(c buildConfig) string { return c.registry + "/sluice-demo-app:" + c.version },
		image: func(ctx context.Context, c buildConfig) (oci.Image, error) {
			return goImage(ctx, c, "sluice-demo-app", "./examples/app", nonrootUID, "nonroot", nil)
		},
	},
	{
		name: "pause",
		ref:  func(buildConfig) string { return PauseRef },
		image: func(ctx context.Context, c buildConfig) (oci.Image, error) {
			bin, err := oci.GoBinary{Package: "./hack/images/pause", Dir: c.moduleDir, LDFlags: c.ldflags(), Path: "/pause"}.Build(ctx)
			if err != nil {
				return oci.Image{}, err
			}
			return oci.Image{
				Files:      []oci.File{bin},
				Entrypoint: []string{"/pause"},
				User:       fmt.Sprintf("%d:%d", pauseUID, pauseUID),
				Labels:     labels("pause", c.version),
			}, nil
		},
	},
}

// goImage is an image of one Go program at /usr/local/bin/<bin>, run as uid
// (with a passwd entry named user), with the host's CA bundle when it has
// one, a /tmp, and extra files.
func goImage(ctx context.Context, c buildConfig, bin, pkg string, uid int, user string, extra []oci.File) (oci.Image, error) {
	path := "/usr/local/bin/" + bin
	prog, err := oci.GoBinary{Package: pkg, Dir: c.moduleDir, LDFlags: c.ldflags(), Path: path}.Build(ctx)
	if err != nil {
		return oci.Image{}, err
	}
	files := []oci.File{prog, oci.Dir("/tmp", 0o777|os.ModeSticky)}
	files = append(files, oci.Accounts(oci.Account{Name: user, UID: uid})...)
	if _, err := os.Stat(caBundle); err == nil {
		ca, err := oci.HostFile(caBundle, caBundle)
		if err != nil {
			return oci.Image{}, err
		}
		files = append(files, ca)
	}
	files = append(files, extra...)
	return oci.Image{
		Files:      files,
		Entrypoint: []string{path},
		User:       fmt.Sprintf("%d:%d", uid, uid),
		Labels:     labels(bin, c.version),
	}, nil
}

// labels are the OCI annotations-as-labels every image carries.
func labels(title, version string) map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":   title,
		"org.opencontainers.image.version": version,
		"org.opencontainers.image.source":  "https://github.com/sluicehq/sluice",
	}
}
