package gate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"sync"
)

// FileName is the file a FileStore keeps its gates in, under its directory.
const FileName = "gates.json"

// fileFormat is the document on disk.
type fileFormat struct {
	Version int              `json:"version"`
	Gates   map[string]State `json:"gates"`
}

// FileStore keeps gates in one JSON file, <dir>/gates.json, for local mode.
// It loads the file when opened and rewrites it on every change, atomically
// (a temporary file, fsync, rename, fsync of the directory), so a crash
// leaves either the old or the new state. It is safe for concurrent use
// within one process; two processes must not share a directory.
type FileStore struct {
	path string

	mu    sync.Mutex
	gates map[Key]State
}

// OpenFileStore opens the store in dir (e.g. ".sluice"), creating the
// directory if needed and loading the file if it exists. A file that
// cannot be read or parsed is an error naming it: gates are never silently
// reset.
func OpenFileStore(dir string) (*FileStore, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("gate store: creating directory %s: %w", dir, err)
	}
	s := &FileStore{path: filepath.Join(dir, FileName), gates: map[Key]State{}}
	b, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("gate store: reading %s: %w", s.path, err)
	}
	var doc fileFormat
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("gate store: %s is not a gates file: %w", s.path, err)
	}
	if doc.Version != 1 {
		return nil, fmt.Errorf("gate store: %s has version %d, this Sluice reads version 1", s.path, doc.Version)
	}
	for k, st := range doc.Gates {
		key, err := parseKey(k)
		if err != nil {
			return nil, fmt.Errorf("gate store: %s: %w", s.path, err)
		}
		s.gates[key] = st.Normalize()
	}
	return s, nil
}

func parseKey(s string) (Key, error) {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			k := Key{Namespace: s[:i], Name: s[i+1:]}
			if err := k.Validate(); err != nil {
				return Key{}, fmt.Errorf("key %q: %w", s, err)
			}
			return k, nil
		}
	}
	return Key{}, fmt.Errorf("key %q is not namespace/name", s)
}

// Path returns the file the store writes.
func (s *FileStore) Path() string { return s.path }

// Get returns the state of key; both switches Closed if never set.
func (s *FileStore) Get(_ context.Context, key Key) (State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gates[key].Normalize(), nil
}

// Update applies fn to key's state and writes the file. If the write fails
// the state in memory is unchanged and the error names the file.
func (s *FileStore) Update(_ context.Context, key Key, fn func(*State)) (State, error) {
	if err := key.Validate(); err != nil {
		return State{}, fmt.Errorf("gate store: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.gates[key].Normalize()
	fn(&st)
	st = st.Normalize()
	next := maps.Clone(s.gates)
	next[key] = st
	if err := s.write(next); err != nil {
		return State{}, err
	}
	s.gates = next
	return st, nil
}

// write replaces the file with gates. Called with s.mu held.
func (s *FileStore) write(gates map[Key]State) error {
	doc := fileFormat{Version: 1, Gates: make(map[string]State, len(gates))}
	for k, st := range gates {
		doc.Gates[k.String()] = st
	}
	b, err := json.MarshalIndent(doc, "", "  ") // keys sorted: a stable file
	if err != nil {
		return fmt.Errorf("gate store: encoding: %w", err)
	}
	b = append(b, '\n')

	dir := filepath.Dir(s.path)
	tmp, err := os.CreateTemp(dir, FileName+".tmp-*")
	if err != nil {
		return fmt.Errorf("gate store: writing %s: %w", s.path, err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) // a no-op once renamed
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("gate store: writing %s: %w", tmpName, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("gate store: syncing %s: %w", tmpName, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("gate store: closing %s: %w", tmpName, err)
	}
	if err := os.Rename(tmpName, s.path); err != nil {
		return fmt.Errorf("gate store: replacing %s: %w", s.path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("gate store: syncing directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("gate store: syncing directory %s: %w", dir, err)
	}
	return nil
}

// MemoryStore keeps gates in memory only: for tests, and for a control
// plane that is told not to persist them. It is safe for concurrent use.
type MemoryStore struct {
	mu    sync.Mutex
	gates map[Key]State
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore { return &MemoryStore{gates: map[Key]State{}} }

// Get returns the state of key; both switches Closed if never set.
func (s *MemoryStore) Get(_ context.Context, key Key) (State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gates[key].Normalize(), nil
}

// Update applies fn to key's state.
func (s *MemoryStore) Update(_ context.Context, key Key, fn func(*State)) (State, error) {
	if err := key.Validate(); err != nil {
		return State{}, fmt.Errorf("gate store: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.gates[key].Normalize()
	fn(&st)
	st = st.Normalize()
	s.gates[key] = st
	return st, nil
}
