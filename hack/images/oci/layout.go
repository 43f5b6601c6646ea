package oci

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// Annotations on the manifest descriptor in index.json, naming the image.
const (
	// AnnotationImageName is the full reference containerd imports the image as.
	AnnotationImageName = "io.containerd.image.name"
	// AnnotationRefName is the OCI reference name: the tag.
	AnnotationRefName = "org.opencontainers.image.ref.name"
)

// RefAnnotations validates ref, a full reference with registry and tag such
// as "ghcr.io/sluicehq/sluice:v1", and returns the index.json annotations
// that name the image ref.
func RefAnnotations(ref string) (map[string]string, error) {
	tag, err := name.NewTag(ref, name.StrictValidation)
	if err != nil {
		return nil, fmt.Errorf("image reference %q: %w (want registry/repository:tag)", ref, err)
	}
	return map[string]string{
		AnnotationImageName: ref,
		AnnotationRefName:   tag.TagStr(),
	}, nil
}

// WriteLayout writes img as the only image of an OCI image layout at dir
// (oci-layout, index.json, blobs/sha256/...), named ref by the annotations
// of its index.json descriptor. An existing layout at dir is replaced, so no
// stale blobs remain; an existing dir that is neither empty nor a layout is an
// error, so that a wrong path does not delete anything.
func WriteLayout(dir, ref string, img v1.Image) error {
	ann, err := RefAnnotations(ref)
	if err != nil {
		return err
	}
	dir = filepath.Clean(dir)
	if err := replaceable(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("output directory for %s: %w", ref, err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return fmt.Errorf("output directory for %s: %w", ref, err)
	}
	defer os.RemoveAll(tmp)
	if err := writeLayout(tmp, img, ann); err != nil {
		return fmt.Errorf("writing the layout of %s: %w", ref, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("replacing %s: %w", dir, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("writing the layout of %s: %w", ref, err)
	}
	return nil
}

// replaceable returns nil if dir is missing, empty, or an OCI image layout.
func replaceable(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) || err == nil && len(entries) == 0 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("output directory %s: %w", dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
		return fmt.Errorf("refusing to replace %s: it exists and is not an OCI image layout (no oci-layout file)", dir)
	}
	return nil
}

func writeLayout(dir string, img v1.Image, ann map[string]string) error {
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	return p.AppendImage(img, layout.WithAnnotations(ann))
}

// WriteTar writes img as a tar archive of its OCI image layout (see
// WriteLayout) to path, for `ctr -n k8s.io images import path`. The
// archive's entries are sorted and carry fixed times, owners and modes.
func WriteTar(path, ref string, img v1.Image) error {
	ann, err := RefAnnotations(ref)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "oci-layout-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := writeLayout(tmp, img, ann); err != nil {
		return fmt.Errorf("writing the layout of %s: %w", ref, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("output directory for %s: %w", ref, err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return fmt.Errorf("output file for %s: %w", ref, err)
	}
	defer os.Remove(f.Name())
	if err := tarDir(f, tmp); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// tarDir writes the tree under root to w in lexical order, with relative
// names, root ownership, modes 0755/0644 and epoch times.
func tarDir(w io.Writer, root string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		hdr := &tar.Header{Name: filepath.ToSlash(rel), ModTime: epoch, Format: tar.FormatPAX}
		switch {
		case d.IsDir():
			hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, hdr.Name+"/", 0o755
			return tw.WriteHeader(hdr)
		case d.Type().IsRegular():
		default:
			return fmt.Errorf("%s: unexpected file type %s in an image layout", p, d.Type())
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, 0o644, fi.Size()
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
