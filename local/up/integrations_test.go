package up

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/analysis/gate"
	"github.com/sluicehq/sluice/analysis/notify"
	promprovider "github.com/sluicehq/sluice/analysis/prometheus"
)

// runEmpty runs local mode on an empty manifest directory with state dir
// state, and returns its API's base URL and the function that stops it.
func runEmpty(t *testing.T, state string) (string, func()) {
	t.Helper()
	dir := t.TempDir()
	var out lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *Status, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			ManifestDir: dir,
			StateDir:    state,
			ProxyBinary: proxyBin,
			Out:         &out,
			Ready:       func(st *Status) { ready <- st },
		})
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	select {
	case st := <-ready:
		if !strings.Contains(out.String(), st.API+"/gate/check") {
			t.Errorf("the banner does not give the gate address %s/gate/check:\n%s", st.API, out.String())
		}
		return st.API, stop
	case err := <-done:
		t.Fatalf("Run returned early: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("not started within 60s")
	}
	return "", stop
}

// post sends a JSON body and returns the status code.
func post(t *testing.T, url, body string) int {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func TestGatesSurviveRestart(t *testing.T) {
	state := t.TempDir()
	ctx := context.Background()
	payload := `{"name":"backend","namespace":"default","phase":"Progressing","checksum":"x"}`

	api, stop := runEmpty(t, state)
	for _, c := range []struct {
		path string
		want int
	}{
		{"/gate/check", http.StatusForbidden},
		{"/rollback/check", http.StatusForbidden},
		{"/gate/approve", http.StatusOK},
		{"/gate/halt", http.StatusForbidden},
	} {
		if got := post(t, api+c.path, payload); got != c.want {
			t.Errorf("before opening: %s answered %d, want %d", c.path, got, c.want)
		}
	}
	if err := gate.Open(ctx, api, "default", "backend"); err != nil {
		t.Fatal(err)
	}
	if err := gate.RequestRollback(ctx, api, "default", "other"); err != nil {
		t.Fatal(err)
	}
	if got := post(t, api+"/gate/check", payload); got != http.StatusOK {
		t.Errorf("after opening: /gate/check answered %d, want 200", got)
	}
	stop()

	// A new instance over the same state directory: still as they were.
	api, stop = runEmpty(t, state)
	defer stop()
	if got := post(t, api+"/gate/check", payload); got != http.StatusOK {
		t.Errorf("after a restart: /gate/check answered %d, want 200", got)
	}
	st, err := (&gate.Client{BaseURL: api}).Status(ctx, "default", "other")
	if err != nil {
		t.Fatal(err)
	}
	if st.Rollback != gate.Opened || st.Gate != gate.Closed {
		t.Errorf("after a restart: default/other is %+v, want rollback open, gate closed", st)
	}
	if err := gate.Close(ctx, api, "default", "backend"); err != nil {
		t.Fatal(err)
	}
	if got := post(t, api+"/gate/check", payload); got != http.StatusForbidden {
		t.Errorf("after closing: /gate/check answered %d, want 403", got)
	}

	// The load tester and the metrics are served too.
	for _, path := range []string{"/loadtest/healthz", "/metrics"} {
		resp, err := http.Get(api + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
		}
		if path == "/metrics" && !bytes.Contains(body, []byte("go_goroutines")) {
			t.Errorf("GET /metrics is not Prometheus' text format:\n%s", body)
		}
	}
}

func TestSecretChain(t *testing.T) {
	chain := secretChain{
		notify.MapSecrets{"ns/a": {"token": "from-a"}},
		notify.MapSecrets{"ns/a": {"user": "from-b"}, "ns/b": {"token": "b"}},
	}
	tests := []struct {
		name, secret, key, want string
		notFound                bool
	}{
		{name: "first wins", secret: "a", key: "token", want: "from-a"},
		{name: "falls through", secret: "a", key: "user", want: "from-b"},
		{name: "second only", secret: "b", key: "token", want: "b"},
		{name: "nowhere", secret: "c", key: "token", notFound: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := chain.Get("ns", tt.secret, tt.key)
			if tt.notFound {
				if !errors.Is(err, notify.ErrSecretNotFound) {
					t.Fatalf("err %v, want one wrapping ErrSecretNotFound", err)
				}
				if _, err := (promSecrets{chain}).Get("ns", tt.secret, tt.key); !errors.Is(err, promprovider.ErrNotFound) {
					t.Fatalf("prometheus reader: err %v, want one wrapping its ErrNotFound", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
