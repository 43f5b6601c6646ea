package oci

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

const testRef = "registry.example.test/sluicehq/hello:v1.2.3"

var (
	helloMu  sync.Mutex
	helloBin File
)

// buildHello builds the hello test program; unless fresh, it returns the
// result of an earlier build.
func buildHello(t *testing.T, fresh bool) File {
	t.Helper()
	helloMu.Lock()
	defer helloMu.Unlock()
	if helloBin.Data != nil && !fresh {
		return helloBin
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	bin, err := GoBinary{
		Package: "./testdata/hello",
		LDFlags: "-s -w -X main.greeting=built-by-test",
		Path:    "/usr/local/bin/hello",
	}.Build(ctx)
	if err != nil {
		t.Fatal(err)
	}
	helloBin = bin
	return bin
}

// testImage returns an Image of the hello test program with every kind of
// entry; fresh rebuilds the program.
func testImage(t *testing.T, fresh bool) Image {
	t.Helper()
	bin := buildHello(t, fresh)
	host := filepath.Join(t.TempDir(), "host.conf")
	if err := os.WriteFile(host, []byte("from the host\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	// A host file's mtime must not leak into the image.
	mtime := time.Unix(time.Now().UnixNano()%1e9, 0)
	if err := os.Chtimes(host, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	hf, err := HostFile(host, "/etc/hello/host.conf")
	if err != nil {
		t.Fatal(err)
	}
	files := []File{
		bin,
		hf,
		{Path: "/etc/hello/greeting", Mode: 0o600, Data: []byte("hi\n"), UID: 65532, GID: 65532},
		Symlink("/usr/bin/hello", "../local/bin/hello"),
		Dir("/tmp", 0o777|fs.ModeSticky),
		Dir("/var/lib/hello", 0o700),
		bin, // an exact duplicate is dropped
	}
	files = append(files, Accounts(Account{Name: "nonroot", UID: 65532})...)
	return Image{
		Files:      files,
		Entrypoint: []string{"/usr/local/bin/hello"},
		Cmd:        []string{"--flag"},
		User:       "65532:65532",
		Env:        []string{"HELLO=1"},
		Labels:     map[string]string{"org.opencontainers.image.source": "https://example.test/hello"},
		WorkingDir: "/var/lib/hello",
	}
}

type tarEntry struct {
	hdr  *tar.Header
	data []byte
}

// readTar returns the entries of an uncompressed tar stream in order.
func readTar(t *testing.T, r io.Reader) ([]string, map[string]tarEntry) {
	t.Helper()
	tr := tar.NewReader(r)
	var names []string
	m := map[string]tarEntry{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names, m
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
		m[hdr.Name] = tarEntry{hdr, data}
	}
}

func TestBuildWriteLayoutReadBack(t *testing.T) {
	img, err := testImage(t, false).Build(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "out", "hello")
	// A directory that is not a layout is not replaced.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "stale"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteLayout(dir, testRef, img); err == nil || !strings.Contains(err.Error(), "refusing to replace "+dir) {
		t.Fatalf("WriteLayout over a directory that is not a layout: %v", err)
	}
	// A stale file in an existing layout must not survive the rewrite.
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteLayout(dir, testRef, img); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "stale")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale file in the rewritten layout: %v", err)
	}

	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("index.json has %d manifests, want 1", len(im.Manifests))
	}
	desc := im.Manifests[0]
	wantAnn := map[string]string{AnnotationImageName: testRef, AnnotationRefName: "v1.2.3"}
	for k, v := range wantAnn {
		if desc.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, desc.Annotations[k], v)
		}
	}
	if desc.MediaType != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %s, want %s", desc.MediaType, types.OCIManifestSchema1)
	}
	got, err := idx.Image(desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(got); err != nil {
		t.Fatalf("the image read back is not valid: %v", err)
	}
	wantDigest, _ := img.Digest()
	if desc.Digest != wantDigest {
		t.Errorf("layout digest %s, built image %s", desc.Digest, wantDigest)
	}

	cf, err := got.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s, want linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
	}
	if !cf.Created.Time.Equal(epoch) {
		t.Errorf("created %v, want %v", cf.Created, epoch)
	}
	c := cf.Config
	if !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/hello"}) || !slices.Equal(c.Cmd, []string{"--flag"}) {
		t.Errorf("entrypoint %q cmd %q", c.Entrypoint, c.Cmd)
	}
	if c.User != "65532:65532" || c.WorkingDir != "/var/lib/hello" {
		t.Errorf("user %q working dir %q", c.User, c.WorkingDir)
	}
	if !slices.Equal(c.Env, []string{"HELLO=1", DefaultPath}) {
		t.Errorf("env %q", c.Env)
	}
	if c.Labels["org.opencontainers.image.source"] != "https://example.test/hello" {
		t.Errorf("labels %v", c.Labels)
	}

	layers, err := got.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers %d, %v; want 1", len(layers), err)
	}
	if mt, _ := layers[0].MediaType(); mt != types.OCILayer {
		t.Errorf("layer media type %s, want %s", mt, types.OCILayer)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	names, entries := readTar(t, rc)
	if !slices.IsSorted(names) {
		t.Errorf("layer entries are not sorted: %q", names)
	}
	tests := []struct {
		name     string
		typeflag byte
		mode     int64
		uid      int
		linkname string
		data     string
	}{
		{"etc/", tar.TypeDir, 0o755, 0, "", ""},
		{"etc/group", tar.TypeReg, 0o644, 0, "", "root:x:0:\nnonroot:x:65532:\n"},
		{"etc/hello/greeting", tar.TypeReg, 0o600, 65532, "", "hi\n"},
		{"etc/hello/host.conf", tar.TypeReg, 0o640, 0, "", "from the host\n"},
		{"etc/passwd", tar.TypeReg, 0o644, 0, "", "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"},
		{"tmp/", tar.TypeDir, 0o1777, 0, "", ""},
		{"usr/", tar.TypeDir, 0o755, 0, "", ""},
		{"usr/bin/hello", tar.TypeSymlink, 0o777, 0, "../local/bin/hello", ""},
		{"usr/local/bin/hello", tar.TypeReg, 0o755, 0, "", ""},
		{"var/lib/hello/", tar.TypeDir, 0o700, 0, "", ""},
	}
	for _, tt := range tests {
		e, ok := entries[tt.name]
		if !ok {
			t.Errorf("layer has no %s; it has %q", tt.name, names)
			continue
		}
		h := e.hdr
		if h.Typeflag != tt.typeflag || h.Mode != tt.mode || h.Uid != tt.uid || h.Linkname != tt.linkname {
			t.Errorf("%s: type %c mode %o uid %d link %q; want %c %o %d %q", tt.name, h.Typeflag, h.Mode, h.Uid, h.Linkname, tt.typeflag, tt.mode, tt.uid, tt.linkname)
		}
		if !h.ModTime.Equal(epoch) {
			t.Errorf("%s: mtime %v, want %v", tt.name, h.ModTime, epoch)
		}
		if tt.data != "" && string(e.data) != tt.data {
			t.Errorf("%s: content %q, want %q", tt.name, e.data, tt.data)
		}
	}
	wantNames := []string{"etc/", "etc/group", "etc/hello/", "etc/hello/greeting", "etc/hello/host.conf", "etc/passwd",
		"tmp/", "usr/", "usr/bin/", "usr/bin/hello", "usr/local/", "usr/local/bin/", "usr/local/bin/hello",
		"var/", "var/lib/", "var/lib/hello/"}
	if !slices.Equal(names, wantNames) {
		t.Errorf("layer entries %q, want %q", names, wantNames)
	}

	// The binary in the layer is the program, built with the ldflags.
	bin := filepath.Join(t.TempDir(), "hello")
	if err := os.WriteFile(bin, entries["usr/local/bin/hello"].data, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(t.Context(), bin).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "built-by-test" {
		t.Errorf("running the binary from the layer: %q, %v", out, err)
	}
}

func TestSameInputsSameDigest(t *testing.T) {
	dir := t.TempDir()
	var digests []v1.Hash
	var tars [][]byte
	for range 2 {
		// Each round builds the program and writes host files afresh, with
		// another mtime.
		img, err := testImage(t, true).Build(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d)
		p := filepath.Join(dir, "hello.tar")
		if err := WriteTar(p, testRef, img); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		tars = append(tars, b)
	}
	if digests[0] != digests[1] {
		t.Errorf("two builds of the same inputs: digests %s and %s", digests[0], digests[1])
	}
	if !bytes.Equal(tars[0], tars[1]) {
		t.Errorf("two tars of the same image differ")
	}

	// A change in any input changes the digest.
	changed := testImage(t, false)
	changed.Env = []string{"HELLO=2"}
	img, err := changed.Build(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := img.Digest(); d == digests[0] {
		t.Errorf("changing Env kept the digest %s", d)
	}
}

func TestWriteTarIsAnOCILayout(t *testing.T) {
	spec := testImage(t, false)
	spec.Ref = testRef
	p := filepath.Join(t.TempDir(), "images", "hello.tar")
	img, err := spec.Write(t.Context(), "", p)
	if err != nil {
		t.Fatal(err)
	}
	// The built image itself is consistent: digests and diffIDs match.
	if err := validate.Image(img); err != nil {
		t.Fatalf("the built image is not valid: %v", err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names, entries := readTar(t, f)
	if !slices.IsSorted(names) {
		t.Errorf("tar entries are not sorted: %q", names)
	}
	var layoutFile struct {
		Version string `json:"imageLayoutVersion"`
	}
	if err := json.Unmarshal(entries["oci-layout"].data, &layoutFile); err != nil || layoutFile.Version != "1.0.0" {
		t.Errorf("oci-layout %q: %v", entries["oci-layout"].data, err)
	}
	var index v1.IndexManifest
	if err := json.Unmarshal(entries["index.json"].data, &index); err != nil {
		t.Fatalf("index.json: %v", err)
	}
	if len(index.Manifests) != 1 || index.Manifests[0].Annotations[AnnotationImageName] != testRef ||
		index.Manifests[0].Annotations[AnnotationRefName] != "v1.2.3" {
		t.Fatalf("index.json manifests: %+v", index.Manifests)
	}
	blobs := 0
	for name, e := range entries {
		if !strings.HasPrefix(name, "blobs/sha256/") || e.hdr.Typeflag != tar.TypeReg {
			continue
		}
		blobs++
		sum := sha256.Sum256(e.data)
		if got := hex.EncodeToString(sum[:]); got != strings.TrimPrefix(name, "blobs/sha256/") {
			t.Errorf("blob %s has sha256 %s", name, got)
		}
		if !e.hdr.ModTime.Equal(epoch) || e.hdr.Uid != 0 || e.hdr.Mode != 0o644 {
			t.Errorf("blob %s: mtime %v uid %d mode %o", name, e.hdr.ModTime, e.hdr.Uid, e.hdr.Mode)
		}
	}
	// Every blob the manifest names is in the archive.
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	want := []v1.Hash{index.Manifests[0].Digest, m.Config.Digest}
	for _, l := range m.Layers {
		want = append(want, l.Digest)
	}
	for _, h := range want {
		if _, ok := entries["blobs/sha256/"+h.Hex]; !ok {
			t.Errorf("blob %s missing from the tar; entries %q", h, names)
		}
	}
	if blobs != len(want) {
		t.Errorf("%d blobs in the tar, want %d", blobs, len(want))
	}
}

func TestErrors(t *testing.T) {
	ok := File{Path: "/a", Mode: 0o644, Data: []byte("a")}
	tests := []struct {
		name  string
		image Image
		want  string
	}{
		{"no entrypoint", Image{Files: []File{ok}}, "neither Entrypoint nor Cmd"},
		{"relative path", Image{Entrypoint: []string{"/a"}, Files: []File{{Path: "a", Mode: 0o644}}}, `file "a": path must be absolute`},
		{"root entry", Image{Entrypoint: []string{"/a"}, Files: []File{Dir("/", 0o755)}}, "root directory"},
		{"conflicting duplicate", Image{Entrypoint: []string{"/a"}, Files: []File{ok, {Path: "/a", Mode: 0o644, Data: []byte("b")}}}, "/a is listed twice"},
		{"parent not a dir", Image{Entrypoint: []string{"/a"}, Files: []File{Symlink("/lib", "usr/lib"), {Path: "/lib/x.so", Mode: 0o644}}}, "parent /lib is not a directory"},
		{"symlink without target", Image{Entrypoint: []string{"/a"}, Files: []File{{Path: "/l", Mode: fs.ModeSymlink}}}, "Target is empty"},
		{"data and source", Image{Entrypoint: []string{"/a"}, Files: []File{{Path: "/a", Data: []byte("x"), Source: "/etc/hostname"}}}, "not both"},
		{"device", Image{Entrypoint: []string{"/a"}, Files: []File{{Path: "/dev/null", Mode: fs.ModeDevice}}}, "unsupported type"},
		{"missing source", Image{Entrypoint: []string{"/a"}, Files: []File{{Path: "/a", Source: "/nonexistent/file"}}}, "file /a: reading host file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.image.Build(t.Context())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Build error %v, want one containing %q", err, tt.want)
			}
		})
	}

	img, err := Image{Entrypoint: []string{"/a"}, Files: []File{ok}}.Build(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (Image{Ref: "no-tag.example.test/x", Entrypoint: []string{"/a"}}).Write(t.Context(), t.TempDir(), ""); err == nil || !strings.Contains(err.Error(), `image reference "no-tag.example.test/x"`) {
		t.Errorf("Write with a Ref without tag: %v", err)
	}
	if _, err := (Image{Ref: testRef}).Write(t.Context(), t.TempDir(), ""); err == nil || !strings.Contains(err.Error(), "image "+testRef+": image has neither Entrypoint nor Cmd") {
		t.Errorf("Write of an image without entrypoint: %v", err)
	}
	for _, ref := range []string{"hello", "hello:v1", "example.test/hello", "example.test/hello@sha256:" + strings.Repeat("0", 64), "Example.test/UPPER:v1"} {
		if err := WriteLayout(filepath.Join(t.TempDir(), "l"), ref, img); err == nil || !strings.Contains(err.Error(), "image reference") {
			t.Errorf("WriteLayout(ref %q) error %v, want an image reference error", ref, err)
		}
		if err := WriteTar(filepath.Join(t.TempDir(), "l.tar"), ref, img); err == nil || !strings.Contains(err.Error(), "image reference") {
			t.Errorf("WriteTar(ref %q) error %v, want an image reference error", ref, err)
		}
	}

	if _, err := HostFile("/nonexistent/file", "/x"); err == nil || !strings.Contains(err.Error(), "host file for /x") {
		t.Errorf("HostFile of a missing file: %v", err)
	}
	if _, err := HostFile(t.TempDir(), "/x"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("HostFile of a directory: %v", err)
	}
	_, err = GoBinary{Package: "./testdata/nonexistent", Path: "/bin/x"}.Build(t.Context())
	if err == nil || !strings.Contains(err.Error(), "go build ./testdata/nonexistent") {
		t.Errorf("GoBinary of a missing package: %v", err)
	}
	if _, err := (GoBinary{Package: "./testdata/hello"}).Build(t.Context()); err == nil || !strings.Contains(err.Error(), "Path must be set") {
		t.Errorf("GoBinary without Path: %v", err)
	}
}

// TestGoBinaryAtVersion builds a program from a module version (as the e2e
// harness does for coredns), offline from the module cache: h2spec, which
// hack/tools.sh installs.
func TestGoBinaryAtVersion(t *testing.T) {
	const pkg = "github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible"
	modcache, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	// The module cache's download directory is a file-based module proxy.
	t.Setenv("GOPROXY", "file://"+filepath.Join(strings.TrimSpace(string(modcache)), "cache", "download"))
	t.Setenv("GOSUMDB", "off")
	f, err := GoBinary{Package: pkg, LDFlags: "-s -w", Path: "/usr/local/bin/h2spec"}.Build(t.Context())
	if err != nil {
		if strings.Contains(err.Error(), "not found") || strings.Contains(err.Error(), "no such file") {
			t.Skipf("%s is not in the module cache: %v", pkg, err)
		}
		t.Fatal(err)
	}
	if f.Path != "/usr/local/bin/h2spec" || f.Mode != 0o755 || len(f.Data) < 1<<20 {
		t.Errorf("file %s mode %o, %d bytes", f.Path, f.Mode, len(f.Data))
	}
	// Static: an ELF without an interpreter (PT_INTERP) runs anywhere.
	bin := filepath.Join(t.TempDir(), "h2spec")
	if err := os.WriteFile(bin, f.Data, 0o755); err != nil {
		t.Fatal(err)
	}
	ef, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s is dynamically linked: CGO_ENABLED=0 was not applied", pkg)
		}
	}

	_, err = GoBinary{Package: "example.invalid/nothing@v1.0.0", Path: "/x"}.Build(t.Context())
	if err == nil || !strings.Contains(err.Error(), "go install example.invalid/nothing@v1.0.0 (for /x)") {
		t.Errorf("go install of a missing module: %v", err)
	}
}
