package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadConfigFromEnv(t *testing.T) {
	const inline = `{"admin": "127.0.0.1:0", "inbound": {"listen": "127.0.0.1:0", "app": "127.0.0.1:8080"}, "outbound": {"listen": "off"}}`
	cfg, err := loadConfig("", inline)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Inbound.App != "127.0.0.1:8080" || cfg.Outbound.Enabled() {
		t.Errorf("config = %+v", cfg)
	}

	if _, err := loadConfig("", `{"inbound": {"listen": "0.0.0.0:4143"}}`); err == nil || !strings.HasPrefix(err.Error(), configYAMLEnv+": ") {
		t.Errorf("invalid inline configuration: err = %v, want it to name %s", err, configYAMLEnv)
	}

	// A file wins over the variable.
	path := filepath.Join(t.TempDir(), "proxy.yaml")
	if err := os.WriteFile(path, []byte("inbound: {app: 127.0.0.1:9090}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err = loadConfig(path, inline)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Inbound.App != "127.0.0.1:9090" {
		t.Errorf("file config ignored: app %q", cfg.Inbound.App)
	}
}
