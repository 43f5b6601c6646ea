package notify

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// DirSecrets reads Secrets laid out as files, as a mounted Secret volume:
// <Dir>/<namespace>/<name>/<key>. Trailing newlines are trimmed.
type DirSecrets struct {
	// Dir is the root, e.g. ".sluice/secrets".
	Dir string
}

// Get returns the value of key in the Secret namespace/name.
func (d DirSecrets) Get(namespace, name, key string) (string, error) {
	for _, part := range []string{namespace, name, key} {
		if part == "" || part == "." || part == ".." || strings.ContainsAny(part, `/\`) {
			return "", fmt.Errorf("secret %s/%s key %q: invalid path element %q", namespace, name, key, part)
		}
	}
	path := filepath.Join(d.Dir, namespace, name, key)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("secret %s/%s key %q: %s: %w", namespace, name, key, path, ErrSecretNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("secret %s/%s key %q: %w", namespace, name, key, err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// EnvSecrets reads Secrets from environment variables named
// SLUICE_SECRET_<NAMESPACE>_<NAME>_<KEY>, upper-cased, with every character
// other than a letter or digit replaced by '_'; e.g. the key "address" of
// the Secret test/slack is SLUICE_SECRET_TEST_SLACK_ADDRESS.
type EnvSecrets struct {
	// Lookup reads a variable; os.LookupEnv when nil.
	Lookup func(string) (string, bool)
}

// Get returns the value of key in the Secret namespace/name.
func (e EnvSecrets) Get(namespace, name, key string) (string, error) {
	v := EnvSecretName(namespace, name, key)
	lookup := e.Lookup
	if lookup == nil {
		lookup = os.LookupEnv
	}
	if s, ok := lookup(v); ok {
		return s, nil
	}
	return "", fmt.Errorf("secret %s/%s key %q: $%s is not set: %w", namespace, name, key, v, ErrSecretNotFound)
}

// EnvSecretName returns the variable EnvSecrets reads for a key.
func EnvSecretName(namespace, name, key string) string {
	var b strings.Builder
	b.WriteString("SLUICE_SECRET")
	for _, part := range []string{namespace, name, key} {
		b.WriteByte('_')
		for _, r := range strings.ToUpper(part) {
			if r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
				b.WriteRune(r)
			} else {
				b.WriteByte('_')
			}
		}
	}
	return b.String()
}

// MapSecrets holds Secrets in memory: "namespace/name" to key to value.
type MapSecrets map[string]map[string]string

// Get returns the value of key in the Secret namespace/name.
func (m MapSecrets) Get(namespace, name, key string) (string, error) {
	data, ok := m[namespace+"/"+name]
	if !ok {
		return "", fmt.Errorf("secret %s/%s: %w", namespace, name, ErrSecretNotFound)
	}
	v, ok := data[key]
	if !ok {
		return "", fmt.Errorf("secret %s/%s has no key %q: %w", namespace, name, key, ErrSecretNotFound)
	}
	return v, nil
}
