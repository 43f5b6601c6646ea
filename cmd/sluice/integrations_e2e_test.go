package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/analysis/loadtest"
	"github.com/sluicehq/sluice/analysis/notify"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// alertReceiver collects the generic alerts posted to it.
type alertReceiver struct {
	mu   sync.Mutex
	msgs []notify.GenericMessage
	bad  []string
}

func (a *alertReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	var m notify.GenericMessage
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := json.Unmarshal(body, &m); err != nil || r.URL.Path != "/alerts" {
		a.bad = append(a.bad, r.URL.Path+" "+string(body))
		http.Error(w, "not a generic alert", http.StatusBadRequest)
		return
	}
	a.msgs = append(a.msgs, m)
}

// got reports whether an alert of kind about default/backend arrived.
func (a *alertReceiver) got(kind notify.EventKind) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, m := range a.msgs {
		if m.Kind == kind && m.Canary == "backend" && m.Namespace == "default" {
			return true
		}
	}
	return false
}

func (a *alertReceiver) String() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	b, _ := json.MarshalIndent(a.msgs, "", "  ")
	return string(b) + "\nrefused: " + strings.Join(a.bad, "\n")
}

// getJSON fetches url into v and returns the status code.
func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: %v\n%s", url, err, body)
		}
	}
	return resp.StatusCode
}

// TestIntegrationsEndToEnd runs examples/integrations: a metric template,
// the built-in load tester as the only traffic, a confirm-promotion gate
// opened with `sluice gate open`, a generic alert receiver and an
// always-open window.
func TestIntegrationsEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end: builds binaries and runs local mode for minutes")
	}
	tmp := t.TempDir()
	e := &canaryE2E{t: t, bin: buildBinaries(t), dir: filepath.Join(tmp, "world"), state: filepath.Join(tmp, "state"), tmp: tmp}
	t.Cleanup(e.stop)
	if err := os.MkdirAll(e.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	example := filepath.Join("..", "..", "examples", "integrations")
	read := func(f string) string {
		data, err := os.ReadFile(filepath.Join(example, f))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	for _, f := range []string{"backend.yaml", "frontend.yaml", "services.yaml", "templates.yaml"} {
		if err := os.WriteFile(filepath.Join(e.dir, f), []byte(read(f)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	alerts := &alertReceiver{}
	receiver := httptest.NewServer(alerts)
	defer receiver.Close()

	e.start()
	defer func() {
		if t.Failed() {
			t.Logf("sluice up output:\n%s\nalerts:\n%s", e.out.String(), alerts)
		}
	}()
	c := e.client()
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	frontend := ""
	for _, in := range st.Ingress {
		if in.Service == "frontend" {
			frontend = in.URL
		}
	}
	if frontend == "" {
		t.Fatal("frontend not published")
	}
	if !strings.Contains(e.out.String(), st.API+"/gate/check") {
		t.Errorf("sluice up does not print the gate address %s/gate/check", st.API)
	}
	// The addresses of the example, replaced by this run's.
	api := strings.TrimRight(st.API, "/")
	alertYAML := strings.Replace(read("alerts.yaml"), "http://127.0.0.1:9999", receiver.URL, 1)
	canaryYAML := strings.ReplaceAll(read("canary.yaml"), "http://127.0.0.1:7474", api)
	canaryYAML = strings.ReplaceAll(canaryYAML, "http://127.0.0.1:8081/", strings.TrimRight(frontend, "/")+"/")
	if err := os.WriteFile(filepath.Join(e.dir, "alerts.yaml"), []byte(alertYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.dir, "canary.yaml"), []byte(canaryYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, "the canary initialized", 2*time.Minute, func() bool {
		return e.canary(c).Status.Phase == v1beta1.PhaseInitialized
	})
	pollUntil(t, "the initialized alert", time.Minute, func() bool { return alerts.got(notify.KindInitialized) })

	// v2: analysed under the load tester's traffic, then held at the gate.
	if code, out := e.sluice("apply", "-f", e.backendVersion("v2", "0")); code != 0 {
		t.Fatalf("apply v2: exit %d\n%s", code, out)
	}
	pollUntil(t, "v2 waiting for promotion", 3*time.Minute, func() bool {
		return e.canary(c).Status.Phase == v1beta1.PhaseWaitingPromotion
	})
	var load loadtest.Status
	if code := getJSON(t, api+"/loadtest/status?namespace=default&name=backend", &load); code != http.StatusOK || load.Requests == 0 {
		t.Errorf("the load tester's load of default/backend: %d %+v, want requests sent", code, load)
	}
	cn := e.canary(c)
	for _, chk := range []string{"request-success-rate", "error-rate"} {
		found := false
		for _, cs := range cn.Status.Checks {
			if cs.Name == chk {
				found = true
				if cs.Verdict != v1beta1.VerdictPass || cs.Value == nil {
					t.Errorf("check %s: verdict %s value %v, want pass with a value", chk, cs.Verdict, cs.Value)
				} else {
					t.Logf("check %s: %s = %v", chk, cs.Verdict, cs.Value.Float64())
				}
			}
		}
		if !found {
			t.Errorf("no check %s in the status: %+v", chk, cn.Status.Checks)
		}
	}
	pollUntil(t, "the waiting-approval alert", time.Minute, func() bool { return alerts.got(notify.KindWaitingApproval) })
	if code, out := e.sluice("gate", "status", "backend"); code != 0 || !strings.Contains(out, "gate closed") {
		t.Errorf("gate status: exit %d\n%s", code, out)
	}
	// Still held a while later: the gate decides.
	if code, out := e.sluice("status", "backend", "--wait", "--timeout", "15s"); code != exitTimeout {
		t.Errorf("status --wait while the gate is closed: exit %d, want %d\n%s", code, exitTimeout, out)
	}
	if p := e.canary(c).Status.Phase; p != v1beta1.PhaseWaitingPromotion {
		t.Errorf("phase %s with the gate closed, want WaitingPromotion", p)
	}

	if code, out := e.sluice("gate", "open", "backend"); code != 0 || !strings.Contains(out, "gate open") {
		t.Fatalf("gate open: exit %d\n%s", code, out)
	}
	if code, out := e.sluice("status", "backend", "--wait", "--timeout", "3m"); code != 0 {
		t.Fatalf("status --wait of v2 after opening the gate: exit %d, want 0\n%s", code, out)
	}
	if p := e.canary(c).Status.Phase; p != v1beta1.PhaseSucceeded {
		t.Errorf("phase %s after the gate opened, want Succeeded", p)
	}
	pollUntil(t, "the promoted alert", time.Minute, func() bool { return alerts.got(notify.KindPromoted) })
	// The post-rollout webhook stopped the load.
	pollUntil(t, "the load stopped", time.Minute, func() bool {
		var s loadtest.Status
		return getJSON(t, api+"/loadtest/status?namespace=default&name=backend", &s) == http.StatusOK && s.State != loadtest.Running
	})
	// The controller's metrics.
	resp, err := http.Get(api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `sluice_canary_status{name="backend",namespace="default"}`) {
		t.Errorf("/metrics has no sluice_canary_status of default/backend:\n%s", body)
	}
}
