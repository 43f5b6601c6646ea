package oci

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// GoBinary is a Go program to build for an image: statically (CGO_ENABLED=0),
// for linux/runtime.GOARCH, with -trimpath.
type GoBinary struct {
	// Package is what `go build` is given, e.g. "./cmd/sluice", or a
	// package at a module version, e.g. "github.com/coredns/coredns@v1.12.0",
	// which is built with `go install` outside any module, as its own go.mod
	// says.
	Package string
	// Dir is the directory go build runs in (inside the module); empty means
	// the current directory. It does not matter for Package@version.
	Dir string
	// LDFlags are passed as -ldflags, e.g. "-s -w -X main.version=v1".
	LDFlags string
	// Tags are build tags.
	Tags []string
	// Path is where the binary goes in the image, e.g. "/usr/local/bin/sluice".
	Path string
}

// Build compiles the program and returns it as an executable File (mode
// 0755, owned by root). Go's build cache makes repeated builds cheap.
func (b GoBinary) Build(ctx context.Context) (File, error) {
	if b.Package == "" || b.Path == "" {
		return File{}, fmt.Errorf("go binary %q for %q: both Package and Path must be set", b.Package, b.Path)
	}
	tmp, err := os.MkdirTemp("", "oci-gobuild-")
	if err != nil {
		return File{}, err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, filepath.Base(b.Path))
	args := []string{"build", "-trimpath", "-buildvcs=false", "-o", out}
	install := strings.Contains(b.Package, "@")
	if install {
		args = []string{"install", "-trimpath"}
	}
	if b.LDFlags != "" {
		args = append(args, "-ldflags", b.LDFlags)
	}
	if len(b.Tags) > 0 {
		args = append(args, "-tags", strings.Join(b.Tags, ","))
	}
	args = append(args, b.Package)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = b.Dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if install {
		bin := filepath.Join(tmp, "bin")
		cmd.Dir = tmp // outside any module
		cmd.Env = append(cmd.Env, "GOBIN="+bin, "GOFLAGS=")
		if msg, err := cmd.CombinedOutput(); err != nil {
			return File{}, fmt.Errorf("go install %s (for %s): %w\n%s", b.Package, b.Path, err, strings.TrimSpace(string(msg)))
		}
		entries, err := os.ReadDir(bin)
		if err != nil || len(entries) != 1 {
			return File{}, fmt.Errorf("go install %s (for %s) did not produce one binary in %s: %v", b.Package, b.Path, bin, err)
		}
		out = filepath.Join(bin, entries[0].Name())
	} else if msg, err := cmd.CombinedOutput(); err != nil {
		return File{}, fmt.Errorf("go build %s (for %s): %w\n%s", b.Package, b.Path, err, strings.TrimSpace(string(msg)))
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return File{}, err
	}
	return File{Path: b.Path, Mode: 0o755, Data: data}, nil
}
