package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sluicehq/sluice/hack/images/oci"
)

// iptablesCommands are the commands `sluice-proxy init` runs, in its three
// modes (see proxy/iptables: plain, nft, legacy); all are required.
var iptablesCommands = []string{
	"iptables", "ip6tables",
	"iptables-nft", "ip6tables-nft",
	"iptables-legacy", "ip6tables-legacy",
}

// iptablesExtras are companions copied when the host has them, for debugging
// inside the image (iptables-save shows what init wrote).
var iptablesExtras = []string{
	"iptables-save", "iptables-restore", "ip6tables-save", "ip6tables-restore",
	"iptables-nft-save", "iptables-nft-restore", "ip6tables-nft-save", "ip6tables-nft-restore",
	"iptables-legacy-save", "iptables-legacy-restore", "ip6tables-legacy-save", "ip6tables-legacy-restore",
}

// sbinDirs are where Debian installs the iptables commands.
var sbinDirs = []string{"/usr/sbin", "/sbin", "/usr/local/sbin"}

// iptablesHint tells the user how to get the commands onto the host.
const iptablesHint = "install iptables: apt-get install iptables (or: bash hack/tools.sh test)"

// hostTree collects host paths into image Files at the same paths, keeping
// symbolic links (of the path itself and of its parent directories, such as
// Debian's /lib -> usr/lib) as links, so that the dynamic loader and the
// binaries find each other inside the image as they do on the host.
type hostTree struct {
	files map[string]oci.File
	// regular are the regular files added, by their resolved path.
	regular []string
}

func newHostTree() *hostTree { return &hostTree{files: map[string]oci.File{}} }

// add copies the host path p (and every link on the way to it).
func (t *hostTree) add(p string) error {
	return t.addDepth(p, 0)
}

func (t *hostTree) addDepth(p string, depth int) error {
	if depth > 40 {
		return fmt.Errorf("%s: too many levels of symbolic links", p)
	}
	if !path.IsAbs(p) {
		return fmt.Errorf("%s: not an absolute path", p)
	}
	parts := strings.Split(strings.TrimPrefix(path.Clean(p), "/"), "/")
	cur := "/"
	for i, part := range parts {
		next := path.Join(cur, part)
		fi, err := os.Lstat(next)
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(next)
			if err != nil {
				return err
			}
			t.files[next] = oci.Symlink(next, target)
			if !path.IsAbs(target) {
				target = path.Join(cur, target)
			}
			return t.addDepth(path.Join(append([]string{target}, parts[i+1:]...)...), depth+1)
		case fi.IsDir():
			if i == len(parts)-1 {
				return fmt.Errorf("%s is a directory", next)
			}
			cur = next
		case fi.Mode().IsRegular():
			if i != len(parts)-1 {
				return fmt.Errorf("%s: %s is not a directory", p, next)
			}
			if _, ok := t.files[next]; ok {
				return nil
			}
			f, err := oci.HostFile(next, next)
			if err != nil {
				return err
			}
			t.files[next] = f
			t.regular = append(t.regular, next)
			return nil
		default:
			return fmt.Errorf("%s: unsupported file type %s", next, fi.Mode().Type())
		}
	}
	return nil
}

// list returns the collected Files sorted by path.
func (t *hostTree) list() []oci.File {
	out := make([]oci.File, 0, len(t.files))
	for _, f := range t.files {
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b oci.File) int { return strings.Compare(a.Path, b.Path) })
	return out
}

// findCommand returns the host path of an sbin command, or "".
func findCommand(name string) string {
	for _, dir := range sbinDirs {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// iptablesFiles returns the host's iptables commands, the shared libraries
// they load, and the xtables extension modules with theirs, for the proxy
// image. A missing command is an error that says how to install it.
func iptablesFiles(ctx context.Context) ([]oci.File, error) {
	t := newHostTree()
	var missing []string
	for _, name := range iptablesCommands {
		p := findCommand(name)
		if p == "" {
			missing = append(missing, name)
			continue
		}
		if err := t.add(p); err != nil {
			return nil, fmt.Errorf("copying %s: %w", name, err)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("the proxy image needs %s, not found in %s: %s",
			strings.Join(missing, ", "), strings.Join(sbinDirs, ", "), iptablesHint)
	}
	for _, name := range iptablesExtras {
		if p := findCommand(name); p != "" {
			if err := t.add(p); err != nil {
				return nil, fmt.Errorf("copying %s: %w", name, err)
			}
		}
	}
	binaries := slices.Clone(t.regular)
	libs, err := sharedLibraries(ctx, binaries...)
	if err != nil {
		return nil, err
	}
	for _, lib := range libs {
		if err := t.add(lib); err != nil {
			return nil, fmt.Errorf("copying shared library %s: %w", lib, err)
		}
	}
	modDir, err := xtablesDir(t.regular)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(modDir)
	if err != nil {
		return nil, fmt.Errorf("xtables modules: %w", err)
	}
	var modules []string
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".so") {
			continue
		}
		p := filepath.Join(modDir, e.Name())
		if err := t.add(p); err != nil {
			return nil, fmt.Errorf("copying xtables module %s: %w", p, err)
		}
		if e.Type().IsRegular() {
			modules = append(modules, p)
		}
	}
	if len(modules) == 0 {
		return nil, fmt.Errorf("no xtables modules (*.so) in %s: %s", modDir, iptablesHint)
	}
	libs, err = sharedLibraries(ctx, modules...)
	if err != nil {
		return nil, err
	}
	for _, lib := range libs {
		if err := t.add(lib); err != nil {
			return nil, fmt.Errorf("copying shared library %s: %w", lib, err)
		}
	}
	return t.list(), nil
}

// xtablesDir finds the directory of xtables extension modules: next to
// libxtables (Debian: /usr/lib/<triplet>/xtables), or a usual place.
func xtablesDir(regular []string) (string, error) {
	var candidates []string
	for _, p := range regular {
		if strings.HasPrefix(filepath.Base(p), "libxtables.so") {
			candidates = append(candidates, filepath.Join(filepath.Dir(p), "xtables"))
		}
	}
	globbed, _ := filepath.Glob("/usr/lib/*/xtables")
	candidates = append(candidates, globbed...)
	candidates = append(candidates, "/usr/lib/xtables", "/usr/lib64/xtables", "/lib/xtables")
	for _, c := range candidates {
		if fi, err := os.Stat(c); err == nil && fi.IsDir() {
			return c, nil
		}
	}
	return "", fmt.Errorf("no xtables modules directory (looked in %s): %s", strings.Join(candidates, ", "), iptablesHint)
}

// sharedLibraries runs ldd on the ELF files and returns the absolute paths of
// the libraries (and dynamic loader) they load, sorted.
func sharedLibraries(ctx context.Context, files ...string) ([]string, error) {
	if len(files) == 0 {
		return nil, nil
	}
	ldd, err := exec.LookPath("ldd")
	if err != nil {
		return nil, fmt.Errorf("ldd is needed to find the libraries of %s: install libc-bin", strings.Join(files, ", "))
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, ldd, files...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || stdout.Len() == 0 {
			return nil, fmt.Errorf("ldd %s: %w: %s", strings.Join(files, " "), err, strings.TrimSpace(stderr.String()))
		}
		// ldd exits 1 when one of several files is not dynamic; what it
		// printed for the others is still right.
	}
	return parseLDD(stdout.String())
}

// parseLDD reads ldd's output: "libx.so.1 => /lib/.../libx.so.1 (0x...)",
// "/lib64/ld-linux-x86-64.so.2 (0x...)", "linux-vdso.so.1 (0x...)" and, with
// several files, "file:" headers.
func parseLDD(out string) ([]string, error) {
	seen := map[string]bool{}
	var notFound []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || !strings.HasPrefix(sc.Text(), "\t") {
			continue // a "file:" header
		}
		lib := line
		if _, after, ok := strings.Cut(line, "=>"); ok {
			lib = strings.TrimSpace(after)
			if strings.HasPrefix(lib, "not found") {
				name, _, _ := strings.Cut(line, " ")
				notFound = append(notFound, name)
				continue
			}
		}
		lib, _, _ = strings.Cut(lib, " (")
		if path.IsAbs(lib) {
			seen[lib] = true
		}
	}
	if len(notFound) > 0 {
		return nil, fmt.Errorf("shared libraries not found on the host: %s", strings.Join(notFound, ", "))
	}
	libs := make([]string, 0, len(seen))
	for l := range seen {
		libs = append(libs, l)
	}
	slices.Sort(libs)
	return libs, nil
}
