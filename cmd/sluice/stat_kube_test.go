package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/sluicehq/sluice/local/up"
	"github.com/sluicehq/sluice/mesh/telemetry"
)

// TestTelemetryThroughServiceProxy checks that stat asks the telemetry API
// through the API server's service proxy, with the kubeconfig's
// credentials; a stand-in API server answers.
func TestTelemetryThroughServiceProxy(t *testing.T) {
	const path = "/api/v1/namespaces/sluice/services/sluice-telemetry:http/proxy/api/v1/workloads"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != path || r.URL.Query().Get("window") != "5m0s" || r.Header.Get("Authorization") != "Bearer s3cret" {
			http.Error(w, "unexpected request "+r.URL.String(), http.StatusBadRequest)
			return
		}
		win := window(600, 6, 600, time.Minute)
		_ = json.NewEncoder(w).Encode([]telemetry.WorkloadReport{{
			Namespace: "shop", Workload: "web", Pods: 2, Meshed: 2, Window: telemetry.NewWindowReport(win),
		}})
	}))
	defer srv.Close()
	k := &kubeTarget{cfg: &rest.Config{Host: srv.URL, BearerToken: "s3cret"}}
	tc, err := k.telemetryClient()
	if err != nil {
		t.Fatal(err)
	}
	sums, err := tc.Workloads(t.Context(), 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(sums) != 1 || sums[0].Workload != "web" || sums[0].Window.Requests != 600 {
		t.Fatalf("summaries %+v", sums)
	}
	rows := statRows(&up.Status{}, sums, "shop", "")
	if len(rows) != 1 || rows[0].Success == nil || *rows[0].Success != 0.99 {
		t.Errorf("rows %+v", rows)
	}
}
