package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/analysis/gate"
	"github.com/sluicehq/sluice/local/up"
)

func TestGateCommands(t *testing.T) {
	store := gate.NewMemoryStore()
	srv := httptest.NewServer(&gate.Server{Store: store, Logger: slog.New(slog.DiscardHandler)})
	defer srv.Close()
	state := t.TempDir()
	if err := os.WriteFile(filepath.Join(state, up.APIFile), []byte(srv.URL+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args         []string
		key          gate.Key
		wantGate     gate.Position
		wantRollback gate.Position
		wantOut      string
	}{
		{[]string{"gate", "open", "backend"}, gate.Key{Namespace: "default", Name: "backend"}, gate.Opened, gate.Closed, "canary default/backend: gate open"},
		{[]string{"gate", "status", "backend"}, gate.Key{Namespace: "default", Name: "backend"}, gate.Opened, gate.Closed, "by sluice CLI"},
		{[]string{"gate", "close", "shop/web"}, gate.Key{Namespace: "shop", Name: "web"}, gate.Closed, gate.Closed, "canary shop/web: gate closed"},
		{[]string{"rollback", "open", "web", "-n", "shop"}, gate.Key{Namespace: "shop", Name: "web"}, gate.Closed, gate.Opened, "rollback open"},
		{[]string{"rollback", "close", "web", "-n", "shop"}, gate.Key{Namespace: "shop", Name: "web"}, gate.Closed, gate.Closed, "rollback closed"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(append(tt.args, "--state-dir", state), &out, &errOut); code != 0 {
				t.Fatalf("exit %d: %s%s", code, out.String(), errOut.String())
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("output %q does not contain %q", out.String(), tt.wantOut)
			}
			st, err := store.Get(context.Background(), tt.key)
			if err != nil {
				t.Fatal(err)
			}
			st = st.Normalize()
			if st.Gate != tt.wantGate || st.Rollback != tt.wantRollback {
				t.Errorf("store has %+v, want gate %s, rollback %s", st, tt.wantGate, tt.wantRollback)
			}
		})
	}

	// Without a running instance: exit 3; with a bad name: exit 1 or more.
	var out, errOut bytes.Buffer
	if code := run([]string{"gate", "open", "backend", "--state-dir", t.TempDir()}, &out, &errOut); code != exitUnreachable {
		t.Errorf("no instance: exit %d, want %d (%s)", code, exitUnreachable, errOut.String())
	}
	if code := run([]string{"gate", "open", "a/b/c", "--state-dir", state}, &out, &errOut); code == 0 {
		t.Error("a bad name was accepted")
	}
}

func TestRunLoadTest(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- runLoadTest(ctx, &loadtestOptions{listen: "127.0.0.1:0"}, func(a string) { addrs <- a })
	}()
	var addr string
	select {
	case addr = <-addrs:
	case err := <-done:
		t.Fatalf("runLoadTest returned early: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("not listening within 30s")
	}
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /healthz: %d %s", resp.StatusCode, body)
	}
	// A payload without metadata is refused, as flagger-loadtester does.
	resp, err = http.Post("http://"+addr+"/", "application/json", strings.NewReader(`{"name":"a","namespace":"b"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("POST / without metadata: %d, want 400", resp.StatusCode)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("runLoadTest: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("did not stop within 30s")
	}
	if err := runLoadTest(context.Background(), &loadtestOptions{listen: "127.0.0.1:0", namespaces: "("}, nil); err == nil {
		t.Error("a bad --namespace-regexp was accepted")
	}
}
