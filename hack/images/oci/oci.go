// Package oci builds small container images from files, without Docker.
//
// An Image is a list of Files (static Go binaries, host files, directories,
// symlinks) and a runtime config (entrypoint, user, environment, labels,
// working directory). Build turns it into a single-layer OCI image for
// linux/GOARCH; WriteLayout stores it as an OCI image layout directory and
// WriteTar as a tarball of that layout, which `ctr -n k8s.io images import`
// accepts.
//
// Output is deterministic: every timestamp is the Unix epoch, layer entries
// are sorted by path and owned by the File's UID/GID (root by default), and
// the layer is compressed by this package, so the same inputs give the same
// image digest.
//
// A typical use:
//
//	bin, err := oci.GoBinary{Package: "./cmd/sluice", Path: "/usr/local/bin/sluice"}.Build(ctx)
//	img := oci.Image{
//		Ref:        "ghcr.io/sluicehq/sluice:dev",
//		Files:      []oci.File{bin},
//		Entrypoint: []string{"/usr/local/bin/sluice"},
//		User:       "65532",
//	}
//	built, err := img.Write(ctx, dir+"/sluice", dir+"/sluice.tar")
//
// Build, WriteLayout and WriteTar do the same in steps. GoBinary also builds
// a module version ("github.com/coredns/coredns@v1.12.0"), HostFile copies a
// host file, and Accounts writes /etc/passwd and /etc/group.
package oci

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// epoch is the creation time written into every image and the modification
// time of every layer entry, so that builds are reproducible.
var epoch = time.Unix(0, 0).UTC()

// DefaultPath is the PATH that Build adds to an image whose Env sets none.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Image describes a container image to build: its name, files and runtime
// config.
type Image struct {
	// Ref is the image's full reference with registry and tag, e.g.
	// "ghcr.io/sluicehq/sluice:v1"; Write names the image by it. Build
	// ignores it.
	Ref string
	// Files are the contents of the image's single layer. Parent directories
	// that are not listed are added (mode 0755, owned by root).
	Files []File
	// Entrypoint is the command the container runs, e.g. ["/usr/local/bin/sluice"].
	Entrypoint []string
	// Cmd holds default arguments appended to Entrypoint.
	Cmd []string
	// User is the user (and optionally ":group") the container runs as,
	// numeric ("65532" or "65532:65532") or a name from the image's /etc/passwd.
	User string
	// Env is the environment as KEY=value pairs. DefaultPath is added when
	// no entry sets PATH.
	Env []string
	// Labels are the image config's labels.
	Labels map[string]string
	// WorkingDir is the container's working directory; empty means "/".
	WorkingDir string
}

// Write builds the image and writes it as an OCI layout at layoutDir and as
// a tarball of that layout at tarPath (see WriteLayout and WriteTar), named
// Ref; an empty layoutDir or tarPath skips that output. It returns the image,
// whose Digest is the manifest digest containerd will show.
func (i Image) Write(ctx context.Context, layoutDir, tarPath string) (v1.Image, error) {
	if _, err := RefAnnotations(i.Ref); err != nil {
		return nil, err
	}
	img, err := i.Build(ctx)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", i.Ref, err)
	}
	if layoutDir != "" {
		if err := WriteLayout(layoutDir, i.Ref, img); err != nil {
			return nil, err
		}
	}
	if tarPath != "" {
		if err := WriteTar(tarPath, i.Ref, img); err != nil {
			return nil, err
		}
	}
	return img, nil
}

// Build assembles the image: one gzip layer holding Files and an OCI config
// for linux/runtime.GOARCH. Host files (File.Source) are read now.
func (i Image) Build(ctx context.Context) (v1.Image, error) {
	if len(i.Entrypoint) == 0 && len(i.Cmd) == 0 {
		return nil, fmt.Errorf("image has neither Entrypoint nor Cmd: a container would have nothing to run")
	}
	layer, err := buildLayer(ctx, i.Files)
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: epoch},
			CreatedBy: "sluice hack/images/oci",
			Comment:   fmt.Sprintf("%d files", len(i.Files)),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("adding the layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading the base config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture = runtime.GOARCH
	cf.OS = "linux"
	cf.Created = v1.Time{Time: epoch}
	env := slices.Clone(i.Env)
	if !slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, "PATH=") }) {
		env = append(env, DefaultPath)
	}
	cf.Config = v1.Config{
		Entrypoint: slices.Clone(i.Entrypoint),
		Cmd:        slices.Clone(i.Cmd),
		User:       i.User,
		Env:        env,
		Labels:     i.Labels,
		WorkingDir: i.WorkingDir,
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("writing the image config: %w", err)
	}
	return img, nil
}
