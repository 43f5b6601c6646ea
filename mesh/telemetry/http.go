package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Paths the Handler serves.
const (
	PathWindow    = "/api/v1/window"
	PathWorkloads = "/api/v1/workloads"
)

// DefaultQueryWindow is the window of an HTTP query that names none.
const DefaultQueryWindow = time.Minute

// WindowReport is the JSON body of GET /api/v1/window: the Window and what is
// computed from it. A computed value that is not a number (no requests, no
// histogram) is null.
type WindowReport struct {
	Window
	DurationSeconds float64  `json:"duration_seconds"`
	SuccessRate     *float64 `json:"success_rate"`
	RPS             *float64 `json:"rps"`
	TLSShare        *float64 `json:"tls_share"`
	P50             *float64 `json:"p50"`
	P95             *float64 `json:"p95"`
	P99             *float64 `json:"p99"`
}

// NewWindowReport computes the report of w.
func NewWindowReport(w Window) WindowReport {
	return WindowReport{
		Window:          w,
		DurationSeconds: w.Duration.Seconds(),
		SuccessRate:     number(w.SuccessRate()),
		RPS:             number(w.RPS()),
		TLSShare:        number(w.TLSShare()),
		P50:             number(w.Quantile(0.5)),
		P95:             number(w.Quantile(0.95)),
		P99:             number(w.Quantile(0.99)),
	}
}

// number returns &v, or nil when v is NaN or infinite (JSON cannot carry them).
func number(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// WorkloadReport is one element of GET /api/v1/workloads.
type WorkloadReport struct {
	Namespace string       `json:"namespace"`
	Workload  string       `json:"workload"`
	Pods      int          `json:"pods"`
	Meshed    int          `json:"meshed"`
	Window    WindowReport `json:"window"`
	Errors    []string     `json:"errors,omitempty"`
}

// errorBody is the JSON body of an error answer.
type errorBody struct {
	Error string `json:"error"`
}

// Handler serves the store to other processes (the CLI):
//
//	GET /api/v1/window?namespace=&workload=&revision=&pod=&direction=&window=1m -> WindowReport
//	GET /api/v1/workloads?window=1m -> []WorkloadReport
//
// window is a Go duration, 1m when absent. Errors are {"error": "..."}: 400
// for bad parameters, 404 when the window holds no requests.
func (s *Store) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathWindow, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		d, err := queryWindow(q)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{err.Error()})
			return
		}
		sel := Selector{
			Namespace: q.Get("namespace"),
			Workload:  q.Get("workload"),
			Revision:  q.Get("revision"),
			Pod:       q.Get("pod"),
			Direction: q.Get("direction"),
		}
		win, err := s.Query(sel, d)
		switch {
		case errors.Is(err, ErrNoData):
			writeJSON(w, http.StatusNotFound, errorBody{err.Error()})
		case err != nil:
			writeJSON(w, http.StatusBadRequest, errorBody{err.Error()})
		default:
			writeJSON(w, http.StatusOK, NewWindowReport(win))
		}
	})
	mux.HandleFunc("GET "+PathWorkloads, func(w http.ResponseWriter, r *http.Request) {
		d, err := queryWindow(r.URL.Query())
		if err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{err.Error()})
			return
		}
		sums := s.Workloads(d)
		out := make([]WorkloadReport, 0, len(sums))
		for _, ws := range sums {
			out = append(out, WorkloadReport{
				Namespace: ws.Namespace,
				Workload:  ws.Workload,
				Pods:      ws.Pods,
				Meshed:    ws.Meshed,
				Window:    NewWindowReport(ws.Window),
				Errors:    ws.Errors,
			})
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, errorBody{fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path)})
	})
	return mux
}

// queryWindow reads the window parameter.
func queryWindow(q url.Values) (time.Duration, error) {
	v := q.Get("window")
	if v == "" {
		return DefaultQueryWindow, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("window %q: %w", v, err)
	}
	if d <= 0 {
		return 0, fmt.Errorf("window %q is not positive", v)
	}
	return d, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(v); err != nil {
		status = http.StatusInternalServerError
		b.Reset()
		_ = json.NewEncoder(&b).Encode(errorBody{"encoding response: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// Client queries a Store's Handler from another process.
type Client struct {
	// BaseURL is where the Handler is served, such as http://127.0.0.1:9995.
	BaseURL string
	// HTTPClient does the requests; nil means http.DefaultClient.
	HTTPClient *http.Client
}

// Window asks for the window d of sel. It returns an error wrapping ErrNoData
// when the server has no requests for it.
func (c *Client) Window(ctx context.Context, sel Selector, d time.Duration) (Window, error) {
	q := url.Values{}
	for k, v := range map[string]string{
		"namespace": sel.Namespace, "workload": sel.Workload, "revision": sel.Revision,
		"pod": sel.Pod, "direction": sel.Direction,
	} {
		if v != "" {
			q.Set(k, v)
		}
	}
	q.Set("window", d.String())
	var rep WindowReport
	if err := c.get(ctx, PathWindow, q, &rep); err != nil {
		return Window{}, err
	}
	return rep.Window, nil
}

// Workloads asks for the workload summaries over d.
func (c *Client) Workloads(ctx context.Context, d time.Duration) ([]WorkloadSummary, error) {
	var reps []WorkloadReport
	if err := c.get(ctx, PathWorkloads, url.Values{"window": {d.String()}}, &reps); err != nil {
		return nil, err
	}
	out := make([]WorkloadSummary, 0, len(reps))
	for _, r := range reps {
		out = append(out, WorkloadSummary{
			Namespace: r.Namespace, Workload: r.Workload, Pods: r.Pods, Meshed: r.Meshed,
			Window: r.Window.Window, Errors: r.Errors,
		})
	}
	return out, nil
}

// maxResponseBytes bounds an answer the client reads.
const maxResponseBytes = 16 << 20

func (c *Client) get(ctx context.Context, path string, q url.Values, into any) error {
	u := strings.TrimRight(c.BaseURL, "/") + path + "?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("telemetry: querying %s: %w", u, err)
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("telemetry: querying %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return fmt.Errorf("telemetry: reading answer of %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &eb) == nil && eb.Error != "" {
			msg = eb.Error
		}
		if resp.StatusCode == http.StatusNotFound && path == PathWindow {
			return fmt.Errorf("telemetry: querying %s: %s: %w", u, msg, ErrNoData)
		}
		return fmt.Errorf("telemetry: querying %s: %s: %s", u, resp.Status, msg)
	}
	if err := json.Unmarshal(body, into); err != nil {
		return fmt.Errorf("telemetry: decoding answer of %s: %w", u, err)
	}
	return nil
}
