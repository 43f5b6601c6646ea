package config

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Tuning for Watch; tests shorten them.
var (
	// pollInterval is how often the file is checked without an event.
	pollInterval = 2 * time.Second
	// settle is how long events must stop before the file is read, so that a
	// write in several steps is read once, whole.
	settle = 100 * time.Millisecond
	// useFSNotify turns event watching off to test the polling fallback.
	useFSNotify = true
	// racyWindow is how recent a file's modification time must be for its
	// metadata not to be trusted: a rewrite of the same size within the file
	// system's timestamp granularity (a jiffy on many kernels, seconds on
	// some file systems) leaves it unchanged.
	racyWindow = 3 * time.Second
)

// Watch calls onChange with each new valid configuration whenever the file at
// path changes, until ctx is done; then it returns nil. It returns an error at
// once only for bad arguments.
//
// It watches the file's directory for events (so that replacing the file by an
// atomic rename, or Kubernetes' symlink swap of a mounted ConfigMap, is seen)
// and, as a fallback, checks the file's metadata every 2 s. Either way it reads
// the file once changes have settled for 100 ms, so that a file written in
// place is rarely caught half-written (replace it by renaming to be sure). A file that cannot be read or
// does not parse is reported through onError (which may be nil), naming the
// path and the reason, once per distinct content; the caller keeps its last
// good configuration, since onChange is not called.
//
// "New" is relative to the last configuration the caller got: if Load read the
// file before, Watch starts from that content, and a change made between Load
// and Watch is delivered at once; otherwise the file's current content is
// delivered first. onChange and onError are called from Watch's goroutine, one
// at a time.
func Watch(ctx context.Context, path string, onChange func(*Config), onError func(error)) error {
	if path == "" {
		return errors.New("config watch: empty path")
	}
	if onChange == nil {
		return errors.New("config watch: onChange is nil")
	}
	if onError == nil {
		onError = func(error) {}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("config watch %s: %w", path, err)
	}

	w := &watcher{path: path, onChange: onChange, onError: onError}
	if sum, ok := loaded.Load(abs); ok {
		w.lastSum, w.haveSum = sum.([sha256.Size]byte), true
	}

	var events <-chan fsnotify.Event
	var eventErrs <-chan error
	if useFSNotify {
		fw, err := fsnotify.NewWatcher()
		if err == nil {
			if err = fw.Add(filepath.Dir(abs)); err != nil {
				fw.Close()
			}
		}
		if err != nil {
			slog.Warn("config watch: no file events, polling only", "path", path, "every", pollInterval, "err", err)
		} else {
			defer fw.Close()
			events, eventErrs = fw.Events, fw.Errors
		}
	}

	poll := time.NewTicker(pollInterval)
	defer poll.Stop()
	settled := time.NewTimer(settle)
	settled.Stop()
	defer settled.Stop()

	armed := false // settled is running
	w.check()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			settled.Reset(settle) // each event restarts the wait
			armed = true
		case err, ok := <-eventErrs:
			if !ok {
				eventErrs = nil
				continue
			}
			// An overflow or similar: events may have been lost, so look.
			slog.Debug("config watch: event error", "path", path, "err", err)
			settled.Reset(settle)
			armed = true
		case <-settled.C:
			armed = false
			w.check()
		case <-poll.C:
			if !armed && w.moved() {
				settled.Reset(settle)
				armed = true
			}
		}
	}
}

// watcher is Watch's state between checks.
type watcher struct {
	path     string
	onChange func(*Config)
	onError  func(error)

	lastSum  [sha256.Size]byte // content last delivered or reported
	haveSum  bool
	lastStat fs.FileInfo // for the cheap polling check
	lastErr  string      // read error last reported
}

// moved reports whether the file's metadata changed since the last check (or
// the last check failed, or found the file modified too recently to trust its
// metadata), which is when polling should read it again.
func (w *watcher) moved() bool {
	st, err := os.Stat(w.path)
	if err != nil {
		return w.lastErr == "" // a new failure to report
	}
	return w.lastStat == nil || !sameFile(st, w.lastStat)
}

// check reads the file and reports it if its content changed.
func (w *watcher) check() {
	st, err := os.Stat(w.path)
	var data []byte
	if err == nil {
		data, err = os.ReadFile(w.path)
	}
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		if msg := err.Error(); msg != w.lastErr {
			w.lastErr = msg
			w.lastStat = nil
			w.onError(fmt.Errorf("%s: %w", w.path, err))
		}
		return
	}
	w.lastErr = ""
	w.lastStat = st
	if time.Since(st.ModTime()) < racyWindow {
		w.lastStat = nil // read again at the next poll: see racyWindow
	}
	sum := sha256.Sum256(data)
	if w.haveSum && sum == w.lastSum {
		return
	}
	w.lastSum, w.haveSum = sum, true
	c, err := Parse(data)
	if err != nil {
		w.onError(fmt.Errorf("%s: %w", w.path, err))
		return
	}
	w.onChange(c)
}

// sameFile reports whether two stats describe the same, unchanged file.
func sameFile(a, b fs.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime()) && a.Mode() == b.Mode()
}
