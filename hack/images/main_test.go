package main

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"golang.org/x/sys/unix"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/sluicehq/sluice/hack/images/oci"
)

func TestParseLDD(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    []string
		wantErr string
	}{
		{
			name: "one file",
			out: "\tlinux-vdso.so.1 (0x00007ffd)\n" +
				"\tlibxtables.so.12 => /lib/x86_64-linux-gnu/libxtables.so.12 (0x00007f)\n" +
				"\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n" +
				"\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n",
			want: []string{"/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libxtables.so.12", "/lib64/ld-linux-x86-64.so.2"},
		},
		{
			name: "several files with headers and duplicates",
			out: "/usr/sbin/a:\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n" +
				"/usr/sbin/b:\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n\tlibm.so.6 => /lib/libm.so.6 (0x2)\n" +
				"/usr/sbin/static:\n\tnot a dynamic executable\n",
			want: []string{"/lib/libc.so.6", "/lib/libm.so.6"},
		},
		{
			name:    "missing library",
			out:     "\tlibnftnl.so.11 => not found\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n",
			wantErr: "shared libraries not found on the host: libnftnl.so.11",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseLDD(tt.out)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("parseLDD = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestHostTreeKeepsLinks(t *testing.T) {
	root := t.TempDir()
	mustWrite := func(p, data string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mustLink := func(target, p string) {
		t.Helper()
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	// A merged-/usr layout: lib -> usr/lib, a versioned library, a command
	// linked through an absolute alternatives link.
	mustWrite(filepath.Join(root, "usr/lib/libx.so.1.0"), "lib")
	mustLink("usr/lib", filepath.Join(root, "lib"))
	mustLink("libx.so.1.0", filepath.Join(root, "usr/lib/libx.so.1"))
	mustWrite(filepath.Join(root, "usr/sbin/multi"), "bin")
	mustLink("multi", filepath.Join(root, "usr/sbin/cmd-nft"))
	if err := os.MkdirAll(filepath.Join(root, "etc/alternatives"), 0o755); err != nil {
		t.Fatal(err)
	}
	mustLink(filepath.Join(root, "usr/sbin/cmd-nft"), filepath.Join(root, "etc/alternatives/cmd"))
	mustLink(filepath.Join(root, "etc/alternatives/cmd"), filepath.Join(root, "usr/sbin/cmd"))
	mustLink("loop2", filepath.Join(root, "loop1"))
	mustLink("loop1", filepath.Join(root, "loop2"))

	tree := newHostTree()
	for _, p := range []string{"lib/libx.so.1", "usr/sbin/cmd", "usr/sbin/multi"} {
		if err := tree.add(filepath.Join(root, p)); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]string{}
	for _, f := range tree.list() {
		rel := strings.TrimPrefix(f.Path, root+"/")
		switch f.Mode.Type() {
		case fs.ModeSymlink:
			got[rel] = "-> " + strings.TrimPrefix(f.Target, root+"/")
		case 0:
			got[rel] = "file " + f.Source
		}
	}
	want := map[string]string{
		"lib":                  "-> usr/lib",
		"usr/lib/libx.so.1":    "-> libx.so.1.0",
		"usr/lib/libx.so.1.0":  "file " + filepath.Join(root, "usr/lib/libx.so.1.0"),
		"usr/sbin/cmd":         "-> etc/alternatives/cmd",
		"etc/alternatives/cmd": "-> usr/sbin/cmd-nft",
		"usr/sbin/cmd-nft":     "-> multi",
		"usr/sbin/multi":       "file " + filepath.Join(root, "usr/sbin/multi"),
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("collected %v, want %v", got, want)
	}

	for _, tt := range []struct{ path, want string }{
		{filepath.Join(root, "loop1"), "too many levels of symbolic links"},
		{filepath.Join(root, "usr"), "is a directory"},
		{filepath.Join(root, "missing"), "no such file"},
		{filepath.Join(root, "usr/sbin/multi/x"), "is not a directory"},
		{"relative/path", "not an absolute path"},
	} {
		if err := newHostTree().add(tt.path); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("add(%s) error %v, want %q", tt.path, err, tt.want)
		}
	}
}

func TestMissingIptablesSaysHowToInstall(t *testing.T) {
	saved := sbinDirs
	sbinDirs = []string{t.TempDir()}
	defer func() { sbinDirs = saved }()
	_, err := iptablesFiles(t.Context())
	if err == nil || !strings.Contains(err.Error(), "apt-get install iptables") || !strings.Contains(err.Error(), "iptables-legacy") {
		t.Errorf("error %v, want one naming the missing commands and apt-get install iptables", err)
	}
}

func TestBadArguments(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown image", []string{"-out", t.TempDir(), "nginx"}, 2, `unknown image "nginx": want one of sluice, sluice-proxy, sluice-demo-app, pause`},
		{"empty registry", []string{"-out", t.TempDir(), "-registry", "", "pause"}, 2, "-registry is empty"},
		{"bad registry", []string{"-out", t.TempDir(), "-registry", "Bad Registry", "-version", "v1", "sluice"}, 1, `image reference "Bad Registry/sluice:v1"`},
		{"bad version", []string{"-out", t.TempDir(), "-version", "v1+x", "sluice-demo-app"}, 1, "check -registry and -version"},
		{"unknown flag", []string{"-bogus"}, 2, "flag provided but not defined: -bogus"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr strings.Builder
			code := run(t.Context(), tt.args, &stdout, &stderr)
			if code != tt.code || !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr.String(), tt.code, tt.want)
			}
		})
	}
}

// buildCLI compiles the command without the race detector, so that image
// builds (gzip, sha256 of megabytes) stay quick in `go test -race`.
func buildCLI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "images")
	if out, err := exec.CommandContext(t.Context(), "go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// readImage opens the only image of the layout at dir.
func readImage(t *testing.T, dir string) (v1.Descriptor, v1.Image) {
	t.Helper()
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) != 1 {
		t.Fatalf("index of %s: %v, %+v", dir, err, im)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return im.Manifests[0], img
}

// unpack extracts the image's layer into dir and returns the entries' modes.
func unpack(t *testing.T, img v1.Image, dir string) map[string]*tar.Header {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	hdrs := map[string]*tar.Header{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return hdrs
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(hdr.Name, "/")
		hdrs["/"+name] = hdr
		p := filepath.Join(dir, name)
		switch hdr.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, fs.FileMode(hdr.Mode).Perm())
		case tar.TypeSymlink:
			err = os.Symlink(hdr.Linkname, p)
		case tar.TypeReg:
			var f *os.File
			if f, err = os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_EXCL, fs.FileMode(hdr.Mode).Perm()); err == nil {
				_, err = io.Copy(f, tr)
				f.Close()
			}
		default:
			t.Fatalf("unexpected entry type %c for %s", hdr.Typeflag, hdr.Name)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestBuildProxyAndPauseImages(t *testing.T) {
	// Without the host's iptables only pause is built; the proxy checks skip.
	names := []string{"sluice-proxy", "pause"}
	_, noIptables := iptablesFiles(t.Context())
	if noIptables != nil {
		if os.Getenv("SLUICE_REQUIRE_NETNS") == "1" {
			t.Fatalf("SLUICE_REQUIRE_NETNS=1: %v", noIptables)
		}
		names = []string{"pause"}
	}
	bin := buildCLI(t)
	out := t.TempDir()
	cmd := exec.CommandContext(t.Context(), bin, append([]string{"-out", out, "-registry", "registry.example.test/sluicehq", "-version", "test1"}, names...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("images: %v\n%s", err, stderr.String())
	}
	wantOut := []string{
		"registry.k8s.io/pause:3.10\n  digest: sha256:",
		"  layout: " + filepath.Join(out, "pause") + "\n",
		"  tar:    " + filepath.Join(out, "pause.tar") + "\n",
	}
	wantFiles := []string{"pause.tar", "pause/oci-layout", "pause/index.json"}
	if noIptables == nil {
		wantOut = append(wantOut, "registry.example.test/sluicehq/sluice-proxy:test1\n  digest: sha256:",
			"  layout: "+filepath.Join(out, "sluice-proxy")+"\n", "  tar:    "+filepath.Join(out, "sluice-proxy.tar")+"\n")
		wantFiles = append(wantFiles, "sluice-proxy.tar", "sluice-proxy/oci-layout", "sluice-proxy/index.json")
	}
	for _, want := range wantOut {
		if !strings.Contains(string(stdout), want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	for _, p := range wantFiles {
		if _, err := os.Stat(filepath.Join(out, p)); err != nil {
			t.Errorf("output %s: %v", p, err)
		}
	}

	t.Run("pause", func(t *testing.T) {
		desc, img := readImage(t, filepath.Join(out, "pause"))
		if desc.Annotations[oci.AnnotationImageName] != PauseRef || desc.Annotations[oci.AnnotationRefName] != "3.10" {
			t.Errorf("annotations %v", desc.Annotations)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(cf.Config.Entrypoint, []string{"/pause"}) || cf.Config.User != "65535:65535" {
			t.Errorf("entrypoint %q user %q", cf.Config.Entrypoint, cf.Config.User)
		}
		hdrs := unpack(t, img, t.TempDir())
		if h := hdrs["/pause"]; h == nil || h.Mode != 0o755 || h.Size == 0 {
			t.Errorf("/pause entry %+v", h)
		}

		// The same sources build the same image again.
		again := t.TempDir()
		if msg, err := exec.CommandContext(t.Context(), bin, "-out", again, "-version", "test1", "pause").CombinedOutput(); err != nil {
			t.Fatalf("second build: %v\n%s", err, msg)
		}
		desc2, _ := readImage(t, filepath.Join(again, "pause"))
		if desc2.Digest != desc.Digest {
			t.Errorf("rebuilt pause: digest %s, first %s", desc2.Digest, desc.Digest)
		}
	})

	t.Run("sluice-proxy", func(t *testing.T) {
		if noIptables != nil {
			t.Skipf("cannot build the proxy image here: %v", noIptables)
		}
		desc, img := readImage(t, filepath.Join(out, "sluice-proxy"))
		if desc.Annotations[oci.AnnotationImageName] != "registry.example.test/sluicehq/sluice-proxy:test1" || desc.Annotations[oci.AnnotationRefName] != "test1" {
			t.Errorf("annotations %v", desc.Annotations)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(cf.Config.Entrypoint, []string{"/usr/local/bin/sluice-proxy"}) || cf.Config.User != "2102:2102" {
			t.Errorf("entrypoint %q user %q", cf.Config.Entrypoint, cf.Config.User)
		}
		if cf.Config.Labels["org.opencontainers.image.version"] != "test1" {
			t.Errorf("labels %v", cf.Config.Labels)
		}
		root := t.TempDir()
		hdrs := unpack(t, img, root)
		if h := hdrs["/usr/local/bin/sluice-proxy"]; h == nil || h.Mode != 0o755 {
			t.Errorf("sluice-proxy entry %+v", h)
		}
		if h := hdrs["/etc/passwd"]; h == nil || !strings.Contains(readFile(t, root, "/etc/passwd"), "sluice-proxy:x:2102:2102:") {
			t.Errorf("/etc/passwd lacks the sluice-proxy user")
		}
		if h := hdrs["/run"]; h == nil || h.Typeflag != tar.TypeDir {
			t.Errorf("/run (for the xtables lock) entry %+v", h)
		}
		// Every command init may run resolves, inside the image, to a file.
		for _, c := range iptablesCommands {
			p := filepath.Join("/usr/sbin", c)
			if _, ok := hdrs[p]; !ok {
				t.Errorf("%s is not in the image", p)
				continue
			}
			if h := resolveIn(hdrs, p); h == nil || h.Typeflag != tar.TypeReg || h.Mode&0o111 == 0 {
				t.Errorf("%s does not resolve to an executable in the image: %+v", p, h)
			}
		}
		var libs, modules []string
		for p, h := range hdrs {
			if strings.Contains(p, "/xtables/") && resolveIn(hdrs, p) != nil {
				modules = append(modules, filepath.Base(p))
			}
			if h.Typeflag != tar.TypeReg {
				continue
			}
			switch {
			case strings.Contains(p, "/xtables/"):
			case strings.Contains(filepath.Base(p), ".so"):
				libs = append(libs, filepath.Base(p))
			}
		}
		for _, want := range []string{"ld-linux", "libc.so", "libxtables.so", "libip4tc.so", "libnftnl.so", "libmnl.so"} {
			if !slices.ContainsFunc(libs, func(l string) bool { return strings.HasPrefix(l, want) }) {
				t.Errorf("no %s* library in the image; libraries: %q", want, libs)
			}
		}
		// The matches and targets of proxy/iptables' rules.
		for _, want := range []string{"libxt_REDIRECT.so", "libxt_comment.so", "libxt_owner.so", "libxt_multiport.so", "libxt_tcp.so"} {
			if !slices.Contains(modules, want) {
				t.Errorf("xtables module %s missing; modules: %d", want, len(modules))
			}
		}

		if os.Geteuid() != 0 {
			if os.Getenv("SLUICE_REQUIRE_NETNS") == "1" {
				t.Fatal("SLUICE_REQUIRE_NETNS=1 but not root: cannot chroot into the image")
			}
			t.Skip("running the image's iptables needs root (chroot)")
		}
		// A container runtime provides /dev/null; os/exec in init needs it.
		if err := os.MkdirAll(filepath.Join(root, "dev"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mknod(filepath.Join(root, "dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
			t.Fatal(err)
		}
		for _, c := range []string{"iptables-legacy", "iptables-nft", "ip6tables-legacy", "ip6tables-nft"} {
			out, err := exec.CommandContext(t.Context(), "chroot", root, "/usr/sbin/"+c, "--version").CombinedOutput()
			if err != nil || !strings.HasPrefix(string(out), "ip") {
				t.Errorf("chroot %s --version: %v\n%s", c, err, out)
			}
		}
		if _, err := exec.LookPath("unshare"); err != nil {
			t.Skip("unshare (util-linux) is not installed: cannot run init in a new network namespace")
		}
		// sluice-proxy init itself, in a network namespace of its own, with
		// the image's iptables in both modes.
		for _, mode := range []struct{ flag, list string }{
			{"legacy", "iptables-legacy"},
			{"nft", "iptables-nft"},
		} {
			script := `chroot "$1" /usr/local/bin/sluice-proxy init --iptables-mode "$2" --ipv6 && chroot "$1" /usr/sbin/"$3" -w -t nat -S`
			out, err := exec.CommandContext(t.Context(), "unshare", "--net", "--", "sh", "-c", script, "sh", root, mode.flag, mode.list).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "-A PREROUTING -p tcp -m comment --comment \"sluice-proxy/inbound\" -j SLUICE_PROXY_INBOUND") {
				t.Errorf("sluice-proxy init --iptables-mode %s inside the image: %v\n%s", mode.flag, err, out)
			}
		}
	})

	t.Run("ctr import and run", func(t *testing.T) {
		if noIptables != nil {
			t.Skipf("cannot build the proxy image here: %v", noIptables)
		}
		ctr := privateContainerd(t)
		for _, tarball := range []string{"pause.tar", "sluice-proxy.tar"} {
			if out, err := ctr("images", "import", "--snapshotter", "native", filepath.Join(out, tarball)); err != nil {
				t.Fatalf("ctr images import %s: %v\n%s", tarball, err, out)
			}
		}
		list, err := ctr("images", "ls", "-q")
		if err != nil {
			t.Fatal(err)
		}
		for _, ref := range []string{PauseRef, "registry.example.test/sluicehq/sluice-proxy:test1"} {
			if !strings.Contains(list, ref+"\n") {
				t.Errorf("ctr images ls lacks %s:\n%s", ref, list)
			}
		}
		// The image runs as a container, as its own user: the proxy and the
		// dynamically linked iptables start.
		for i, argv := range [][]string{
			{"/usr/local/bin/sluice-proxy", "-version"},
			{"/usr/sbin/iptables-legacy", "--version"},
			{"/usr/sbin/ip6tables-nft", "--version"},
		} {
			args := append([]string{"run", "--rm", "--snapshotter", "native", "registry.example.test/sluicehq/sluice-proxy:test1", fmt.Sprintf("images-test-%d", i)}, argv...)
			out, err := ctr(args...)
			if err != nil || !strings.Contains(out, "test1") && !strings.Contains(out, "v1.") {
				t.Errorf("ctr run %s: %v\n%s", strings.Join(argv, " "), err, out)
			}
		}
	})
}

// privateContainerd starts a containerd of the test's own (its own root,
// state and socket, without the CRI plugin) and returns a function running
// ctr against it in namespace k8s.io. It skips unless root and containerd,
// ctr and runc are installed.
func privateContainerd(t *testing.T) func(args ...string) (string, error) {
	t.Helper()
	for _, tool := range []string{"containerd", "ctr", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("containerd needs root")
	}
	dir, err := os.MkdirTemp("", "ctrd-") // short: socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "c.sock")
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = ""
[metrics]
  address = ""
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc")
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("containerd", "-c", filepath.Join(dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logf.Name()); err == nil {
				t.Logf("containerd log (tail):\n%s", tail(string(b), 20))
			}
		}
		_ = os.RemoveAll(dir)
	})
	ctr := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "ctr", append([]string{"--address", sock, "-n", "k8s.io"}, args...)...).CombinedOutput()
		return string(out), err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := ctr("version"); err == nil {
			return ctr
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not answer on %s within 30s", sock)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// resolveIn follows symlinks among the layer's entries from p (an absolute
// path whose parent directories are not links) to a non-link entry.
func resolveIn(hdrs map[string]*tar.Header, p string) *tar.Header {
	for range 40 {
		h := hdrs[p]
		if h == nil || h.Typeflag != tar.TypeSymlink {
			return h
		}
		if filepath.IsAbs(h.Linkname) {
			p = filepath.Clean(h.Linkname)
		} else {
			p = filepath.Join(filepath.Dir(p), h.Linkname)
		}
	}
	return nil
}

func readFile(t *testing.T, root, p string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, p))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
