package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// File is one entry of an image's layer: a regular file, a directory or a
// symbolic link.
type File struct {
	// Path is the absolute path inside the image, e.g. "/usr/local/bin/sluice".
	Path string
	// Mode holds the permission bits (and setuid/setgid/sticky) and the type:
	// no type bits for a regular file, fs.ModeDir or fs.ModeSymlink.
	Mode fs.FileMode
	// Data is a regular file's content, used when Source is empty.
	Data []byte
	// Source is a host file whose content Build copies (following symlinks).
	Source string
	// Target is a symlink's target, e.g. "xtables-nft-multi" or "/usr/lib".
	Target string
	// UID and GID own the entry; zero is root.
	UID, GID int
}

// HostFile returns a File at imagePath with the content and permissions of the
// host file src (symlinks followed). The content is read when the image is
// built.
func HostFile(src, imagePath string) (File, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return File{}, fmt.Errorf("host file for %s: %w", imagePath, err)
	}
	if !fi.Mode().IsRegular() {
		return File{}, fmt.Errorf("host file %s for %s is not a regular file (%s)", src, imagePath, fi.Mode().Type())
	}
	return File{Path: imagePath, Mode: fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky), Source: src}, nil
}

// Dir returns a directory entry.
func Dir(imagePath string, perm fs.FileMode) File {
	return File{Path: imagePath, Mode: fs.ModeDir | perm}
}

// Symlink returns a symbolic link at imagePath pointing to target.
func Symlink(imagePath, target string) File {
	return File{Path: imagePath, Mode: fs.ModeSymlink | 0o777, Target: target}
}

// Account is a user of an image, written to /etc/passwd and /etc/group by
// Accounts.
type Account struct {
	// Name is the user and group name, e.g. "nonroot".
	Name string
	// UID and GID are the numeric ids; GID zero means the same as UID.
	UID, GID int
	// Home is the home directory; empty means "/home/<Name>".
	Home string
}

// Accounts returns /etc/passwd and /etc/group files declaring root and the
// given accounts (each with a group of its own name), so that tools and
// libraries that look the running user up find it. Their shells are
// /sbin/nologin.
func Accounts(accounts ...Account) []File {
	var passwd, group strings.Builder
	passwd.WriteString("root:x:0:0:root:/root:/sbin/nologin\n")
	group.WriteString("root:x:0:\n")
	for _, a := range accounts {
		gid, home := a.GID, a.Home
		if gid == 0 {
			gid = a.UID
		}
		if home == "" {
			home = "/home/" + a.Name
		}
		fmt.Fprintf(&passwd, "%s:x:%d:%d:%s:%s:/sbin/nologin\n", a.Name, a.UID, gid, a.Name, home)
		fmt.Fprintf(&group, "%s:x:%d:\n", a.Name, gid)
	}
	return []File{
		{Path: "/etc/passwd", Mode: 0o644, Data: []byte(passwd.String())},
		{Path: "/etc/group", Mode: 0o644, Data: []byte(group.String())},
	}
}

// entry is a File with its cleaned, relative tar name.
type entry struct {
	name string // "usr/local/bin/sluice"
	File
}

// equal reports whether two Files describe the same entry.
func (f File) equal(g File) bool {
	return f.Path == g.Path && f.Mode == g.Mode && f.Source == g.Source && f.Target == g.Target &&
		f.UID == g.UID && f.GID == g.GID && bytes.Equal(f.Data, g.Data)
}

// entries validates files, drops exact duplicates, adds missing parent
// directories and sorts the result by name.
func entries(files []File) ([]entry, error) {
	byName := make(map[string]entry, len(files))
	for _, f := range files {
		if !path.IsAbs(f.Path) {
			return nil, fmt.Errorf("file %q: path must be absolute", f.Path)
		}
		name := strings.TrimPrefix(path.Clean(f.Path), "/")
		if name == "" {
			return nil, fmt.Errorf("file %q: the root directory cannot be an entry", f.Path)
		}
		switch f.Mode.Type() {
		case 0:
			if f.Source != "" && f.Data != nil {
				return nil, fmt.Errorf("file %s: set Data or Source, not both", f.Path)
			}
		case fs.ModeDir:
		case fs.ModeSymlink:
			if f.Target == "" {
				return nil, fmt.Errorf("symlink %s: Target is empty", f.Path)
			}
		default:
			return nil, fmt.Errorf("file %s: unsupported type %s (want regular file, directory or symlink)", f.Path, f.Mode.Type())
		}
		if prev, ok := byName[name]; ok {
			if !prev.equal(f) {
				return nil, fmt.Errorf("file %s is listed twice with different contents", f.Path)
			}
			continue
		}
		byName[name] = entry{name: name, File: f}
	}
	for name := range byName {
		for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
			if parent, ok := byName[dir]; ok {
				if !parent.Mode.IsDir() {
					return nil, fmt.Errorf("file /%s: its parent /%s is not a directory (%s)", name, dir, parent.Mode.Type())
				}
				continue
			}
			byName[dir] = entry{name: dir, File: Dir("/"+dir, 0o755)}
		}
	}
	out := make([]entry, 0, len(byName))
	for _, e := range byName {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b entry) int { return strings.Compare(a.name, b.name) })
	return out, nil
}

// tarMode converts permission and special bits to the tar header's mode.
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

// writeLayerTar writes the entries as an uncompressed tar stream.
func writeLayerTar(ctx context.Context, w io.Writer, es []entry) error {
	tw := tar.NewWriter(w)
	for _, e := range es {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr := &tar.Header{
			Name:    e.name,
			Mode:    tarMode(e.Mode),
			Uid:     e.UID,
			Gid:     e.GID,
			ModTime: epoch,
			Format:  tar.FormatPAX,
		}
		var data []byte
		switch e.Mode.Type() {
		case fs.ModeDir:
			hdr.Typeflag, hdr.Name = tar.TypeDir, e.name+"/"
		case fs.ModeSymlink:
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, e.Target
		default:
			hdr.Typeflag, data = tar.TypeReg, e.Data
			if e.Source != "" {
				var err error
				if data, err = os.ReadFile(e.Source); err != nil {
					return fmt.Errorf("file %s: reading host file: %w", e.Path, err)
				}
			}
			hdr.Size = int64(len(data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("layer entry %s: %w", e.Path, err)
		}
		if _, err := tw.Write(data); err != nil {
			return fmt.Errorf("layer entry %s: %w", e.Path, err)
		}
	}
	return tw.Close()
}

// buildLayer returns a gzip-compressed OCI layer holding files. The gzip
// header carries no name or time, so equal files give an equal digest.
func buildLayer(ctx context.Context, files []File) (v1.Layer, error) {
	es, err := entries(files)
	if err != nil {
		return nil, err
	}
	var tarBuf, gzBuf bytes.Buffer
	diffID := sha256.New()
	if err := writeLayerTar(ctx, io.MultiWriter(&tarBuf, diffID), es); err != nil {
		return nil, err
	}
	zw, err := gzip.NewWriterLevel(&gzBuf, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(tarBuf.Bytes()); err != nil {
		return nil, fmt.Errorf("compressing the layer: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compressing the layer: %w", err)
	}
	digest := sha256.Sum256(gzBuf.Bytes())
	return &memLayer{
		tar:    tarBuf.Bytes(),
		gz:     gzBuf.Bytes(),
		digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(digest[:])},
		diffID: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(diffID.Sum(nil))},
	}, nil
}

// memLayer is a layer held in memory, compressed and not, with both hashes
// computed once.
type memLayer struct {
	tar, gz        []byte
	digest, diffID v1.Hash
}

var _ v1.Layer = (*memLayer)(nil)

func (l *memLayer) Digest() (v1.Hash, error) { return l.digest, nil }
func (l *memLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }
func (l *memLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.gz)), nil
}
func (l *memLayer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.tar)), nil
}
func (l *memLayer) Size() (int64, error)                { return int64(len(l.gz)), nil }
func (l *memLayer) MediaType() (types.MediaType, error) { return types.OCILayer, nil }
