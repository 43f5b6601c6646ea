package gate

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/analysis/webhook"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// controlPlane is a gate Server over a FileStore in dir, on a loopback port.
type controlPlane struct {
	srv    *httptest.Server
	client *http.Client
	store  *FileStore
}

func startControlPlane(t *testing.T, dir string) *controlPlane {
	t.Helper()
	store, err := OpenFileStore(dir)
	if err != nil {
		t.Fatalf("OpenFileStore: %v", err)
	}
	srv := httptest.NewServer(&Server{Store: store, Now: func() time.Time { return t0 }, Logger: quietLogger()})
	cp := &controlPlane{srv: srv, client: srv.Client(), store: store}
	t.Cleanup(cp.stop)
	return cp
}

func (cp *controlPlane) stop() {
	cp.client.CloseIdleConnections()
	cp.srv.Close()
}

// post sends body to path and returns the status and the answer.
func (cp *controlPlane) post(t *testing.T, path, body string) (int, string) {
	t.Helper()
	resp, err := cp.client.Post(cp.srv.URL+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func payload(ns, name string) string {
	// What a Canary webhook sends, extra fields included.
	return fmt.Sprintf(`{"name":%q,"namespace":%q,"phase":"Progressing","checksum":"abc","metadata":{"k":"v"}}`, name, ns)
}

func TestOpenCloseCheck(t *testing.T) {
	cp := startControlPlane(t, t.TempDir())
	a, b := payload("test", "podinfo"), payload("test", "other")
	steps := []struct {
		path string
		body string
		want int
	}{
		{"/gate/check", a, http.StatusForbidden}, // closed by default
		{"/rollback/check", a, http.StatusForbidden},
		{"/gate/open", a, http.StatusAccepted},
		{"/gate/check", a, http.StatusOK},
		{"/gate/check", b, http.StatusForbidden}, // keyed by canary
		{"/rollback/check", a, http.StatusForbidden},
		{"/rollback/open", a, http.StatusAccepted},
		{"/rollback/check", a, http.StatusOK},
		{"/gate/check", a, http.StatusOK}, // the switches are independent
		{"/gate/close", a, http.StatusAccepted},
		{"/gate/check", a, http.StatusForbidden},
		{"/rollback/check", a, http.StatusOK},
		{"/rollback/close", a, http.StatusAccepted},
		{"/rollback/check", a, http.StatusForbidden},
		{"/gate/close", b, http.StatusAccepted}, // closing a closed gate is fine
		{"/gate/approve", a, http.StatusOK},
		{"/gate/halt", a, http.StatusForbidden},
	}
	for i, s := range steps {
		if code, body := cp.post(t, s.path, s.body); code != s.want {
			t.Fatalf("step %d: POST %s = %d %q, want %d", i, s.path, code, body, s.want)
		}
	}

	code, body := cp.post(t, "/gate/open", `{"name":"podinfo","namespace":"test","by":"alice"}`)
	want := `{"namespace":"test","name":"podinfo","gate":"open","rollback":"closed","updatedAt":"2025-06-01T12:00:00Z","by":"alice"}` + "\n"
	if code != http.StatusAccepted || body != want {
		t.Errorf("open answered %d %s, want 202 %s", code, body, want)
	}
	resp, err := cp.client.Get(cp.srv.URL + "/gate/status?namespace=test&name=podinfo")
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b2) != want {
		t.Errorf("status answered %d %s, want 200 %s", resp.StatusCode, b2, want)
	}
}

func TestStateSurvivesRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), ".sluice")
	cp := startControlPlane(t, dir)
	cp.post(t, "/gate/open", payload("test", "podinfo"))
	cp.post(t, "/rollback/open", payload("test", "podinfo"))
	cp.post(t, "/gate/open", payload("prod", "api"))
	cp.post(t, "/gate/close", payload("prod", "api"))
	cp.post(t, "/rollback/open", payload("prod", "web"))
	cp.stop()

	// The file is readable JSON with the canaries as keys.
	raw, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	var doc fileFormat
	if err := json.Unmarshal(raw, &doc); err != nil || doc.Version != 1 || len(doc.Gates) != 3 {
		t.Fatalf("gates file: %v, %+v", err, doc)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only %s (no temporary files left)", len(ents), FileName)
	}

	cp2 := startControlPlane(t, dir)
	checks := []struct {
		path, body string
		want       int
	}{
		{"/gate/check", payload("test", "podinfo"), http.StatusOK},
		{"/rollback/check", payload("test", "podinfo"), http.StatusOK},
		{"/gate/check", payload("prod", "api"), http.StatusForbidden},
		{"/rollback/check", payload("prod", "api"), http.StatusForbidden},
		{"/gate/check", payload("prod", "web"), http.StatusForbidden},
		{"/rollback/check", payload("prod", "web"), http.StatusOK},
		{"/gate/check", payload("test", "never-set"), http.StatusForbidden},
	}
	for _, c := range checks {
		if code, body := cp2.post(t, c.path, c.body); code != c.want {
			t.Errorf("after restart: POST %s %s = %d %q, want %d", c.path, c.body, code, body, c.want)
		}
	}
	st, _ := cp2.store.Get(context.Background(), Key{"test", "podinfo"})
	if !st.UpdatedAt.Equal(t0) || st.By != "127.0.0.1" {
		t.Errorf("after restart: %+v, want updatedAt %s by 127.0.0.1", st, t0)
	}
}

func TestConcurrentRequests(t *testing.T) {
	dir := t.TempDir()
	cp := startControlPlane(t, dir)
	const canaries = 16
	var wg sync.WaitGroup
	errs := make(chan string, canaries*3)
	for i := range canaries {
		for _, path := range []string{"/gate/open", "/rollback/open", "/gate/check"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := cp.client.Post(cp.srv.URL+path, "application/json", strings.NewReader(payload("load", fmt.Sprintf("c%d", i))))
				if err != nil {
					errs <- err.Error()
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode >= 500 || resp.StatusCode == http.StatusBadRequest {
					errs <- fmt.Sprintf("%s c%d: %d", path, i, resp.StatusCode)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	cp.stop()

	// No update was lost, in memory or on disk.
	store, err := OpenFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range canaries {
		st, _ := store.Get(context.Background(), Key{"load", fmt.Sprintf("c%d", i)})
		if st.Gate != Opened || st.Rollback != Opened {
			t.Errorf("c%d after concurrent opens: %+v, want both open", i, st)
		}
	}
}

func TestMalformedRequests(t *testing.T) {
	cp := startControlPlane(t, t.TempDir())
	tests := []struct {
		name   string
		method string
		path   string
		body   string
		want   int
		reason string
	}{
		{"empty body", "POST", "/gate/check", "", 400, "request body is empty"},
		{"not JSON", "POST", "/gate/open", "name=podinfo", 400, "request body is not a webhook payload"},
		{"array", "POST", "/gate/open", `[]`, 400, "request body is not a webhook payload"},
		{"name not a string", "POST", "/gate/close", `{"name":1,"namespace":"test"}`, 400, "name"},
		{"missing name", "POST", "/rollback/check", `{"namespace":"test"}`, 400, `missing "name"`},
		{"missing namespace", "POST", "/rollback/open", `{"name":"podinfo"}`, 400, `missing "namespace"`},
		{"slash in name", "POST", "/gate/open", `{"name":"a/b","namespace":"test"}`, 400, `name "a/b": invalid character '/'`},
		{"upper case namespace", "POST", "/gate/open", `{"name":"a","namespace":"Test"}`, 400, `namespace "Test"`},
		{"too large", "POST", "/gate/open", `{"name":"` + strings.Repeat("a", maxRequestBody) + `"}`, 413, "larger than"},
		{"GET check", "GET", "/gate/check", "", 405, "use POST"},
		{"POST status", "POST", "/gate/status?namespace=a&name=b", "", 405, "use GET"},
		{"status without name", "GET", "/gate/status?namespace=test", "", 400, `missing "name"`},
		{"unknown path", "POST", "/gate/nope", payload("a", "b"), 404, "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, cp.srv.URL+tt.path, strings.NewReader(tt.body))
			resp, err := cp.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want || !strings.Contains(string(b), tt.reason) {
				t.Errorf("%s %s = %d %q, want %d naming %q", tt.method, tt.path, resp.StatusCode, b, tt.want, tt.reason)
			}
		})
	}
	// Nothing was stored by the bad requests.
	if st, _ := cp.store.Get(context.Background(), Key{"test", "a"}); st.Gate != Closed {
		t.Errorf("a malformed request changed a gate: %+v", st)
	}
}

func TestClient(t *testing.T) {
	cp := startControlPlane(t, t.TempDir())
	ctx := context.Background()
	c := &Client{BaseURL: cp.srv.URL + "/", HTTPClient: cp.client, By: "ci"}

	st, err := c.OpenGate(ctx, "test", "podinfo")
	if err != nil || st.Gate != Opened || st.Rollback != Closed || st.By != "ci" {
		t.Fatalf("OpenGate = %+v, %v", st, err)
	}
	if st, err = c.OpenRollback(ctx, "test", "podinfo"); err != nil || st.Rollback != Opened {
		t.Fatalf("OpenRollback = %+v, %v", st, err)
	}
	if st, err = c.CloseGate(ctx, "test", "podinfo"); err != nil || st.Gate != Closed || st.Rollback != Opened {
		t.Fatalf("CloseGate = %+v, %v", st, err)
	}
	if st, err = c.CloseRollback(ctx, "test", "podinfo"); err != nil || st.Rollback != Closed {
		t.Fatalf("CloseRollback = %+v, %v", st, err)
	}
	if st, err = c.Status(ctx, "test", "podinfo"); err != nil || st.Gate != Closed || !st.UpdatedAt.Equal(t0) {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	if _, err := c.OpenGate(ctx, "test", "Bad/Name"); err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "invalid character") {
		t.Errorf("OpenGate of a bad name: %v, want the server's 400 reason", err)
	}

	// The package-level helpers for the CLI.
	if err := Open(ctx, cp.srv.URL, "prod", "api"); err != nil {
		t.Fatal(err)
	}
	if st, _ := cp.store.Get(ctx, Key{"prod", "api"}); st.Gate != Opened {
		t.Errorf("Open: %+v", st)
	}
	if err := RequestRollback(ctx, cp.srv.URL, "prod", "api"); err != nil {
		t.Fatal(err)
	}
	if err := Close(ctx, cp.srv.URL, "prod", "api"); err != nil {
		t.Fatal(err)
	}
	if err := CancelRollback(ctx, cp.srv.URL, "prod", "api"); err != nil {
		t.Fatal(err)
	}
	if st, _ := cp.store.Get(ctx, Key{"prod", "api"}); st.Gate != Closed || st.Rollback != Closed {
		t.Errorf("after Close and CancelRollback: %+v", st)
	}
	http.DefaultClient.CloseIdleConnections()
}

// TestWebhookAgainstGate points a Canary's confirm-promotion and rollback
// webhooks at the gate server, as a user would.
func TestWebhookAgainstGate(t *testing.T) {
	cp := startControlPlane(t, t.TempDir())
	ctx := context.Background()
	caller := &webhook.Caller{HTTPClient: cp.client}
	p := webhook.Payload{Name: "podinfo", Namespace: "test", Phase: v1beta1.PhaseProgressing, Checksum: "abc"}
	promote := v1beta1.CanaryWebhook{Name: "approve", Type: v1beta1.ConfirmPromotionHook, URL: cp.srv.URL + "/gate/check"}
	rollback := v1beta1.CanaryWebhook{Name: "abort", Type: v1beta1.RollbackHook, URL: cp.srv.URL + "/rollback/check"}

	if o := caller.Call(ctx, promote, p); o.OK || o.Message != "confirm-promotion hook approve: 403 (gate closed), will ask again next interval" {
		t.Errorf("closed gate: OK=%v %q", o.OK, o.Message)
	}
	if o := caller.Call(ctx, rollback, p); o.OK {
		t.Errorf("rollback requested without asking: %q", o.Message)
	}
	c := &Client{BaseURL: cp.srv.URL, HTTPClient: cp.client}
	if _, err := c.OpenGate(ctx, "test", "podinfo"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.OpenRollback(ctx, "test", "podinfo"); err != nil {
		t.Fatal(err)
	}
	if o := caller.Call(ctx, promote, p); !o.OK {
		t.Errorf("open gate: %q", o.Message)
	}
	if o := caller.Call(ctx, rollback, p); !o.OK {
		t.Errorf("requested rollback not seen: %q", o.Message)
	}
}

func TestFileStoreErrors(t *testing.T) {
	ctx := context.Background()
	t.Run("corrupt file is not reset", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, FileName)
		os.WriteFile(path, []byte("{not json"), 0o600)
		if _, err := OpenFileStore(dir); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("OpenFileStore of a corrupt file: %v, want an error naming %s", err, path)
		}
	})
	t.Run("unknown version", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, FileName), []byte(`{"version":9,"gates":{}}`), 0o600)
		if _, err := OpenFileStore(dir); err == nil || !strings.Contains(err.Error(), "version 9") {
			t.Errorf("OpenFileStore: %v", err)
		}
	})
	t.Run("bad key", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, FileName), []byte(`{"version":1,"gates":{"nokey":{"gate":"open"}}}`), 0o600)
		if _, err := OpenFileStore(dir); err == nil || !strings.Contains(err.Error(), `"nokey"`) {
			t.Errorf("OpenFileStore: %v", err)
		}
	})
	t.Run("failed write leaves state unchanged", func(t *testing.T) {
		dir := t.TempDir()
		s, err := OpenFileStore(dir)
		if err != nil {
			t.Fatal(err)
		}
		// A directory where the file should be: the rename fails.
		if err := os.MkdirAll(filepath.Join(dir, FileName, "x"), 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Update(ctx, Key{"a", "b"}, func(st *State) { st.Gate = Opened }); err == nil || !strings.Contains(err.Error(), s.Path()) {
			t.Errorf("Update: %v, want an error naming %s", err, s.Path())
		}
		if st, _ := s.Get(ctx, Key{"a", "b"}); st.Gate != Closed {
			t.Errorf("state after a failed write: %+v, want closed", st)
		}
	})
	t.Run("invalid key", func(t *testing.T) {
		s := NewMemoryStore()
		if _, err := s.Update(ctx, Key{"a", ""}, func(*State) {}); err == nil {
			t.Error("MemoryStore accepted an empty name")
		}
	})
}

func TestKeyValidate(t *testing.T) {
	tests := []struct {
		key Key
		ok  bool
	}{
		{Key{"test", "podinfo"}, true},
		{Key{"test", "podinfo.v2-a"}, true},
		{Key{"te.st", "x"}, false},
		{Key{"-test", "x"}, false},
		{Key{"test", "x-"}, false},
		{Key{"test", "X"}, false},
		{Key{strings.Repeat("a", 64), "x"}, false},
		{Key{"test", strings.Repeat("a", 254)}, false},
	}
	for _, tt := range tests {
		if err := tt.key.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: %v, want ok=%v", tt.key, err, tt.ok)
		}
	}
}
