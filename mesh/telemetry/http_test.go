package telemetry_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/mesh/telemetry"
)

// servedStore returns a store with a minute of traffic on shop/web, and its
// Handler served on 127.0.0.1.
func servedStore(t *testing.T) (*telemetry.Store, *httptest.Server) {
	t.Helper()
	ctx := context.Background()
	clk := newClock()
	p := newFakeProxy(t, `namespace="shop",deployment="web",pod="web-1"`)
	idle := newFakeProxy(t, `namespace="shop",deployment="idle",pod="idle-1"`)
	src := &targetList{}
	src.Set(telemetry.Target{URL: p.URL()}, telemetry.Target{URL: idle.URL()})
	s := newStore(t, src, clk, telemetry.Options{})
	s.ScrapeOnce(ctx)
	for range 12 {
		clk.Advance(5 * time.Second)
		p.Serve("inbound", 200, 9, true, 15)
		p.Serve("inbound", 500, 1, false, 15)
		s.ScrapeOnce(ctx)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return s, srv
}

func getJSON(t *testing.T, url string) (int, map[string]any, []any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET %s: Content-Type %q", url, ct)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading %s: %v", url, err)
	}
	var obj map[string]any
	var list []any
	if strings.HasPrefix(strings.TrimSpace(string(body)), "[") {
		err = json.Unmarshal(body, &list)
	} else {
		err = json.Unmarshal(body, &obj)
	}
	if err != nil {
		t.Fatalf("GET %s: decoding %q: %v", url, body, err)
	}
	return resp.StatusCode, obj, list
}

func TestHandlerWindow(t *testing.T) {
	_, srv := servedStore(t)
	defer http.DefaultClient.CloseIdleConnections()

	code, obj, _ := getJSON(t, srv.URL+"/api/v1/window?namespace=shop&workload=web&window=1m")
	if code != http.StatusOK {
		t.Fatalf("status %d: %v", code, obj)
	}
	// 120 requests, 12 failures, all in (10, 20] ms: pX = 10+10·X/100.
	want := map[string]float64{
		"requests": 120, "successes": 108, "failures": 12, "tls_requests": 108, "pods": 1,
		"duration_seconds": 60, "success_rate": 0.9, "rps": 2, "tls_share": 0.9,
		"p50": 15, "p95": 19.5, "p99": 19.9,
	}
	for k, v := range want {
		got, ok := obj[k].(float64)
		if !ok || !approx(got, v) {
			t.Errorf("%s = %v, want %v", k, obj[k], v)
		}
	}
	buckets, _ := obj["buckets"].([]any)
	if len(buckets) != 26 {
		t.Fatalf("buckets = %v, want 26", obj["buckets"])
	}
	last, _ := buckets[25].(map[string]any)
	if last["le"] != "+Inf" || last["count"] != 120.0 {
		t.Errorf("last bucket = %v, want le +Inf count 120", last)
	}

	tests := []struct {
		name, query string
		code        int
		errText     string
	}{
		{"no data", "namespace=shop&workload=idle", http.StatusNotFound, "no requests"},
		{"unknown workload", "namespace=shop&workload=nope", http.StatusNotFound, "no requests"},
		{"missing workload", "namespace=shop", http.StatusBadRequest, "workload is required"},
		{"bad direction", "namespace=shop&workload=web&direction=up", http.StatusBadRequest, "direction"},
		{"bad window", "namespace=shop&workload=web&window=soon", http.StatusBadRequest, "window"},
		{"negative window", "namespace=shop&workload=web&window=-1m", http.StatusBadRequest, "not positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, obj, _ := getJSON(t, srv.URL+"/api/v1/window?"+tt.query)
			if code != tt.code {
				t.Errorf("status %d, want %d", code, tt.code)
			}
			if msg, _ := obj["error"].(string); !strings.Contains(msg, tt.errText) {
				t.Errorf("error %q does not mention %q", msg, tt.errText)
			}
		})
	}
	if code, obj, _ := getJSON(t, srv.URL+"/api/v1/nothing"); code != http.StatusNotFound || obj["error"] == nil {
		t.Errorf("unknown path: %d %v, want 404 with an error", code, obj)
	}
}

func TestHandlerWorkloads(t *testing.T) {
	_, srv := servedStore(t)
	defer http.DefaultClient.CloseIdleConnections()

	code, _, list := getJSON(t, srv.URL+"/api/v1/workloads?window=30s")
	if code != http.StatusOK || len(list) != 2 {
		t.Fatalf("status %d, list %v; want 200 and two workloads", code, list)
	}
	idle, _ := list[0].(map[string]any)
	web, _ := list[1].(map[string]any)
	if idle["workload"] != "idle" || web["workload"] != "web" {
		t.Fatalf("workloads %v, want idle then web", list)
	}
	if web["namespace"] != "shop" || web["pods"] != 1.0 || web["meshed"] != 1.0 {
		t.Errorf("web = %v", web)
	}
	ww, _ := web["window"].(map[string]any)
	if ww["requests"] != 60.0 || ww["rps"] != 2.0 || ww["success_rate"] != 0.9 {
		t.Errorf("web window = %v, want 60 requests at 2 rps, 0.9", ww)
	}
	iw, _ := idle["window"].(map[string]any)
	if iw["requests"] != 0.0 || iw["success_rate"] != nil || iw["p99"] != nil {
		t.Errorf("idle window = %v, want 0 requests and null rates", iw)
	}
	if code, obj, _ := getJSON(t, srv.URL+"/api/v1/workloads?window=x"); code != http.StatusBadRequest || obj["error"] == nil {
		t.Errorf("bad window: %d %v, want 400 with an error", code, obj)
	}
}

// TestClient checks that the client gets from the Handler what Query and
// Workloads return in process.
func TestClient(t *testing.T) {
	s, srv := servedStore(t)
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	c := &telemetry.Client{BaseURL: srv.URL + "/", HTTPClient: hc}
	ctx := context.Background()

	for _, sel := range []telemetry.Selector{web, {Namespace: "shop", Workload: "web", Pod: "web-1", Direction: "inbound"}} {
		want, err := s.Query(sel, 45*time.Second)
		if err != nil {
			t.Fatalf("Query: %v", err)
		}
		got, err := c.Window(ctx, sel, 45*time.Second)
		if err != nil {
			t.Fatalf("Client.Window: %v", err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Client.Window = %+v, want %+v", got, want)
		}
		if q := got.Quantile(0.99); math.IsNaN(q) {
			t.Errorf("p99 over the client's buckets is NaN")
		}
	}
	if _, err := c.Window(ctx, telemetry.Selector{Namespace: "shop", Workload: "idle"}, time.Minute); !errors.Is(err, telemetry.ErrNoData) {
		t.Errorf("idle workload: %v, want ErrNoData", err)
	}
	if _, err := c.Window(ctx, telemetry.Selector{Namespace: "shop"}, time.Minute); err == nil || errors.Is(err, telemetry.ErrNoData) || !strings.Contains(err.Error(), "workload is required") {
		t.Errorf("bad selector: %v, want a 400 naming the problem", err)
	}
	got, err := c.Workloads(ctx, time.Minute)
	if err != nil {
		t.Fatalf("Client.Workloads: %v", err)
	}
	if want := s.Workloads(time.Minute); !reflect.DeepEqual(got, want) {
		t.Errorf("Client.Workloads = %+v, want %+v", got, want)
	}
}

func TestBucketJSON(t *testing.T) {
	in := []telemetry.Bucket{{LE: 2.5, Count: 1}, {LE: math.Inf(1), Count: 3}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := `[{"le":"2.5","count":1},{"le":"+Inf","count":3}]`; string(b) != want {
		t.Errorf("Marshal = %s, want %s", b, want)
	}
	var out []telemetry.Bucket
	if err := json.Unmarshal(b, &out); err != nil || !reflect.DeepEqual(out, in) {
		t.Errorf("Unmarshal = %v, %v; want %v", out, err, in)
	}
	if err := json.Unmarshal([]byte(`[{"le":"ten","count":1}]`), &out); err == nil {
		t.Errorf("Unmarshal accepted a bad bound")
	}
}
