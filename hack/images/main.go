// Command images builds Sluice's container images without Docker, as OCI
// image layouts and as tarballs of them that `ctr -n k8s.io images import`
// accepts:
//
//	go run ./hack/images [-out DIR] [-registry R] [-version V] [names...]
//
// The names are sluice (R/sluice:V, the control plane), sluice-proxy
// (R/sluice-proxy:V, with the host's iptables for `sluice-proxy init`),
// sluice-demo-app (R/sluice-demo-app:V) and pause (registry.k8s.io/pause:3.10);
// no names builds them all. Each image goes to DIR/<name>/ (the layout) and
// DIR/<name>.tar. The same sources give the same image digests.
//
// It runs from anywhere inside the sluice module. `make images` runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/sluicehq/sluice/hack/images/oci"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run is the command; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", defaultOut(), "directory the image layouts and tars are written to")
	registry := fs.String("registry", "ghcr.io/sluicehq", "registry and path prefix of the sluice images")
	version := fs.String("version", "", "image tag and main.version; default: git describe --always --dirty, or dev")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: go run ./hack/images [flags] [%s]\n\n"+
			"Builds Sluice's container images as OCI layouts (OUT/<name>/) and ctr-importable tars (OUT/<name>.tar).\n\n",
			strings.Join(names(), " "))
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	defs, err := selectDefinitions(fs.Args())
	if err != nil {
		fmt.Fprintf(stderr, "images: %v\n", err)
		return 2
	}
	if *out == "" {
		fmt.Fprintln(stderr, "images: -out is empty and neither SLUICE_CACHE nor HOME is set")
		return 2
	}
	*registry = strings.TrimSuffix(*registry, "/")
	if *registry == "" {
		fmt.Fprintln(stderr, "images: -registry is empty")
		return 2
	}
	moduleDir, err := findModule()
	if err != nil {
		fmt.Fprintf(stderr, "images: %v\n", err)
		return 1
	}
	if *version == "" {
		*version = gitVersion(ctx, moduleDir)
	}
	cfg := buildConfig{moduleDir: moduleDir, registry: *registry, version: *version}
	for _, d := range defs {
		if err := buildOne(ctx, cfg, d, *out, stdout); err != nil {
			fmt.Fprintf(stderr, "images: %s: %v\n", d.name, err)
			return 1
		}
	}
	return 0
}

// buildOne builds one image, writes its layout and tar, and reports them.
func buildOne(ctx context.Context, cfg buildConfig, d definition, out string, stdout io.Writer) error {
	ref := d.ref(cfg)
	if _, err := oci.RefAnnotations(ref); err != nil {
		return fmt.Errorf("%w (check -registry and -version)", err)
	}
	spec, err := d.image(ctx, cfg)
	if err != nil {
		return err
	}
	spec.Ref = ref
	layoutDir := filepath.Join(out, d.name)
	tarPath := filepath.Join(out, d.name+".tar")
	img, err := spec.Write(ctx, layoutDir, tarPath)
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	size, err := imageSize(img)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s\n  digest: %s\n  size:   %s\n  layout: %s\n  tar:    %s\n",
		ref, digest, humanSize(size), layoutDir, tarPath)
	return nil
}

// names lists the image names the command accepts.
func names() []string {
	var out []string
	for _, d := range definitions {
		out = append(out, d.name)
	}
	return out
}

// selectDefinitions returns the images named, in build order; none means all.
func selectDefinitions(args []string) ([]definition, error) {
	if len(args) == 0 {
		return definitions, nil
	}
	for _, a := range args {
		if !slices.Contains(names(), a) {
			return nil, fmt.Errorf("unknown image %q: want one of %s", a, strings.Join(names(), ", "))
		}
	}
	var out []definition
	for _, d := range definitions {
		if slices.Contains(args, d.name) {
			out = append(out, d)
		}
	}
	return out, nil
}

// defaultOut is $SLUICE_CACHE/images, else ~/.cache/sluice/images.
func defaultOut() string {
	if c := os.Getenv("SLUICE_CACHE"); c != "" {
		return filepath.Join(c, "images")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".cache", "sluice", "images")
	}
	return ""
}

// findModule returns the directory of the sluice module's go.mod, searching
// from the working directory upwards.
func findModule() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(data), "module github.com/sluicehq/sluice\n") {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("run inside the sluice repository: no go.mod of github.com/sluicehq/sluice in %s or above", wd)
		}
	}
}

// gitVersion is `git describe --always --dirty` in dir, or "dev".
func gitVersion(ctx context.Context, dir string) string {
	cmd := exec.CommandContext(ctx, "git", "describe", "--always", "--dirty")
	cmd.Dir = dir
	out, err := cmd.Output()
	if v := strings.TrimSpace(string(out)); err == nil && v != "" {
		return v
	}
	return "dev"
}

// imageSize is the size of the image's blobs: manifest, config and layers.
func imageSize(img v1.Image) (int64, error) {
	m, err := img.Manifest()
	if err != nil {
		return 0, err
	}
	size, err := img.Size()
	if err != nil {
		return 0, err
	}
	size += m.Config.Size
	for _, l := range m.Layers {
		size += l.Size
	}
	return size, nil
}

// humanSize formats a byte count as "12.3 MiB".
func humanSize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
