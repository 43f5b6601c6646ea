package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/sluicehq/sluice/hack/images/oci"
)

// pausePackage is the pause program (the images branch's), relative to
// the module root.
const pausePackage = "./hack/images/pause"

// ModuleRoot returns the directory of the go.mod that the current
// directory belongs to (the Sluice repository when run from it).
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("the current directory is not inside the Sluice module; run from the repository")
	}
	return filepath.Dir(mod), nil
}

// BuildGoImage builds an image whose only file is the Go program pkg
// (relative to the module root, e.g. "./test/e2e/cluster/testdata/echo") at
// /PROGRAM, run as its entrypoint, and writes it as an OCI archive at tar,
// named ref, for ImportImages.
func BuildGoImage(ctx context.Context, pkg, ref, tar string) error {
	root, err := ModuleRoot(ctx)
	if err != nil {
		return err
	}
	path := "/" + filepath.Base(pkg)
	bin, err := oci.GoBinary{Package: pkg, Dir: root, Path: path, LDFlags: "-s -w"}.Build(ctx)
	if err != nil {
		return err
	}
	return writeImage(ctx, oci.Image{Files: []oci.File{bin}, Entrypoint: []string{path}}, ref, tar)
}

func writeImage(ctx context.Context, img oci.Image, ref, tar string) error {
	v1img, err := img.Build(ctx)
	if err != nil {
		return fmt.Errorf("building image %s: %w", ref, err)
	}
	if err := os.MkdirAll(filepath.Dir(tar), 0o755); err != nil {
		return err
	}
	if err := oci.WriteTar(tar, ref, v1img); err != nil {
		return fmt.Errorf("writing image %s to %s: %w", ref, tar, err)
	}
	return nil
}

// imageDir is where the harness keeps the images it builds, beside the
// work directory (which Up empties).
func (c Config) imageDir() string { return c.WorkDir + "-images" }

// systemImages builds the pause image and the CoreDNS image (from
// BinDir/coredns) and returns their archives. The CoreDNS archive is
// rebuilt only when the binary is newer.
func systemImages(ctx context.Context, c Config) ([]string, error) {
	root, err := ModuleRoot(ctx)
	if err != nil {
		return nil, err
	}
	pause := filepath.Join(c.imageDir(), "pause.tar")
	bin, err := oci.GoBinary{Package: pausePackage, Dir: root, Path: "/pause", LDFlags: "-s -w"}.Build(ctx)
	if err != nil {
		return nil, err
	}
	// As upstream's pause image: an unprivileged user.
	if err := writeImage(ctx, oci.Image{Files: []oci.File{bin}, Entrypoint: []string{"/pause"}, User: "65535:65535"}, pauseImage, pause); err != nil {
		return nil, err
	}
	coredns := filepath.Join(c.imageDir(), "coredns.tar")
	corednsBin := filepath.Join(c.BinDir, "coredns")
	bi, err := os.Stat(corednsBin)
	if err != nil {
		return nil, fmt.Errorf("%s is missing: build it with hack/kube-node.sh: %w", corednsBin, err)
	}
	if ti, err := os.Stat(coredns); err != nil || ti.ModTime().Before(bi.ModTime()) {
		f, err := oci.HostFile(corednsBin, "/coredns")
		if err != nil {
			return nil, err
		}
		if err := writeImage(ctx, oci.Image{Files: []oci.File{f}, Entrypoint: []string{"/coredns"}}, CoreDNSImage, coredns); err != nil {
			return nil, err
		}
	}
	return []string{pause, coredns}, nil
}
