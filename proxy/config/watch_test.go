package config

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// guard bounds every wait so that a broken watcher fails instead of hanging.
const guard = 20 * time.Second

func configText(admin string) []byte {
	return fmt.Appendf(nil, "admin: %q\noutbound: {listen: \"off\"}\n", admin)
}

// watchRun runs Watch until the test ends and exposes its callbacks as channels.
type watchRun struct {
	changes chan *Config
	errs    chan error
	stop    context.CancelFunc
	done    chan struct{} // closed when Watch returned
	err     error         // what Watch returned, once done is closed
}

func startWatch(t *testing.T, path string) *watchRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watchRun{changes: make(chan *Config, 100), errs: make(chan error, 100), stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		w.err = Watch(ctx, path, func(c *Config) { w.changes <- c }, func(err error) { w.errs <- err })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-w.done:
		case <-time.After(guard):
			t.Error("Watch did not stop")
		}
	})
	return w
}

// next waits for onChange with the given admin address, skipping older ones.
func (w *watchRun) next(t *testing.T, admin string) {
	t.Helper()
	deadline := time.After(guard)
	for {
		select {
		case c := <-w.changes:
			if c.Admin == admin {
				return
			}
		case <-deadline:
			t.Fatalf("no onChange with admin %q", admin)
		}
	}
}

// nextErr waits for onError, skipping the transient "empty" state that an
// in-place write (truncate, then write) can expose.
func (w *watchRun) nextErr(t *testing.T) error {
	t.Helper()
	deadline := time.After(guard)
	for {
		select {
		case err := <-w.errs:
			if strings.HasSuffix(err.Error(), ": the configuration is empty") {
				continue
			}
			return err
		case <-deadline:
			t.Fatal("no onError")
			return nil
		}
	}
}

// noChange checks that no onChange was delivered, after a change that the
// watcher must have seen by now (the caller sequences one).
func (w *watchRun) noChange(t *testing.T) {
	t.Helper()
	select {
	case c := <-w.changes:
		t.Fatalf("unexpected onChange with admin %q", c.Admin)
	default:
	}
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func replace(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	write(t, tmp, data)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestWatch(t *testing.T) {
	for _, mode := range []string{"events", "polling"} {
		t.Run(mode, func(t *testing.T) {
			if mode == "polling" {
				defer setWatchTuning(20*time.Millisecond, false)()
			}
			path := filepath.Join(t.TempDir(), "proxy.yaml")
			write(t, path, configText("127.0.0.1:1001"))
			if _, err := Load(path); err != nil {
				t.Fatal(err)
			}
			w := startWatch(t, path)

			// In place.
			write(t, path, configText("127.0.0.1:1002"))
			w.next(t, "127.0.0.1:1002")

			// Atomic replace by rename.
			replace(t, path, configText("127.0.0.1:1003"))
			w.next(t, "127.0.0.1:1003")

			// Garbage: reported with the path; the last good config stays (no onChange).
			replace(t, path, []byte("table: [this is not: valid"))
			err := w.nextErr(t)
			if !strings.HasPrefix(err.Error(), path+": not valid YAML or JSON") {
				t.Errorf("onError(%v) does not start with the path and reason", err)
			}
			// A valid but wrong config is reported too, naming the field.
			replace(t, path, []byte("admin: 1"))
			if err := w.nextErr(t); err.Error() != path+": admin: must be a string, got number 1" {
				t.Errorf("onError(%v)", err)
			}
			w.noChange(t)

			// Deleted: reported; then restored.
			os.Remove(path)
			if err := w.nextErr(t); !strings.Contains(err.Error(), path+": no such file or directory") {
				t.Errorf("onError(%v)", err)
			}
			replace(t, path, configText("127.0.0.1:1004"))
			w.next(t, "127.0.0.1:1004")

			w.stop()
			select {
			case <-w.done:
				if w.err != nil {
					t.Errorf("Watch returned %v after cancel, want nil", w.err)
				}
			case <-time.After(guard):
				t.Fatal("Watch did not return after cancel")
			}
		})
	}
}

func setWatchTuning(poll time.Duration, events bool) (restore func()) {
	oldPoll, oldEvents := pollInterval, useFSNotify
	pollInterval, useFSNotify = poll, events
	return func() { pollInterval, useFSNotify = oldPoll, oldEvents }
}

// TestWatchStart: what Watch delivers when it starts.
func TestWatchStart(t *testing.T) {
	t.Run("after Load, unchanged: nothing", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "proxy.yaml")
		write(t, path, configText("127.0.0.1:2001"))
		if _, err := Load(path); err != nil {
			t.Fatal(err)
		}
		w := startWatch(t, path)
		// An invalid file is reported after the start check: anything the start
		// delivered would be in w.changes by then.
		replace(t, path, []byte("nope: 1"))
		w.nextErr(t)
		w.noChange(t)
	})
	t.Run("changed between Load and Watch: delivered", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "proxy.yaml")
		write(t, path, configText("127.0.0.1:2003"))
		if _, err := Load(path); err != nil {
			t.Fatal(err)
		}
		write(t, path, configText("127.0.0.1:2004"))
		w := startWatch(t, path)
		w.next(t, "127.0.0.1:2004")
	})
	t.Run("without Load: current content delivered", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "proxy.yaml")
		write(t, path, configText("127.0.0.1:2005"))
		w := startWatch(t, path)
		w.next(t, "127.0.0.1:2005")
	})
	t.Run("without Load, invalid: reported", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "proxy.yaml")
		write(t, path, []byte("nope: 1"))
		w := startWatch(t, path)
		if err := w.nextErr(t); err.Error() != path+": nope: unknown field" {
			t.Errorf("onError(%v)", err)
		}
	})
}

// TestWatchConfigMap follows Kubernetes' ConfigMap volume layout, where the file
// is a symlink through "..data", and an update swaps the "..data" symlink.
func TestWatchConfigMap(t *testing.T) {
	dir := t.TempDir()
	version := func(name string, data []byte) {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(dir, name, "proxy.yaml"), data)
	}
	version("..v1", configText("127.0.0.1:3001"))
	if err := os.Symlink("..v1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "proxy.yaml")
	if err := os.Symlink(filepath.Join("..data", "proxy.yaml"), path); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err != nil {
		t.Fatal(err)
	}
	w := startWatch(t, path)
	version("..v2", configText("127.0.0.1:3002"))
	if err := os.Symlink("..v2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	w.next(t, "127.0.0.1:3002")
}

func TestWatchArgs(t *testing.T) {
	ctx := context.Background()
	if err := Watch(ctx, "", func(*Config) {}, nil); err == nil {
		t.Error("Watch with an empty path succeeded")
	}
	if err := Watch(ctx, "x.yaml", nil, nil); err == nil {
		t.Error("Watch with a nil onChange succeeded")
	}
}

// TestWatchPollingSameStat: polling compares metadata, and a file rewritten
// in place with the same size within the file system's timestamp granularity
// (a jiffy on many kernels) keeps its modification time. A file whose
// modification time is that recent is read again at the next poll instead of
// trusted.
func TestWatchPollingSameStat(t *testing.T) {
	defer setWatchTuning(20*time.Millisecond, false)()
	path := filepath.Join(t.TempDir(), "proxy.yaml")
	mtime := time.Now().Truncate(time.Second)
	writeAt := func(admin string) {
		write(t, path, configText(admin))
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	writeAt("127.0.0.1:4001")
	w := startWatch(t, path)
	w.next(t, "127.0.0.1:4001") // the first check has recorded the metadata
	writeAt("127.0.0.1:4002")   // same size, same modification time
	w.next(t, "127.0.0.1:4002")
}
