package up

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/sluicehq/sluice/local/supervisor"
	"github.com/sluicehq/sluice/mesh/telemetry"
)

// Paths of the HTTP API a running `sluice up` serves on 127.0.0.1 (besides
// telemetry's PathWindow and PathWorkloads).
const (
	PathStatus        = "/api/v1/status"
	PathObjects       = "/api/v1/objects"
	PathCheckIdentity = "/api/v1/check/identity"
)

// APIFile is the file in the state directory that holds the API's base URL.
const APIFile = "api"

// tailLines is how many log lines Status includes for a replica that is not
// ready.
const tailLines = 10

// Status is what GET /api/v1/status answers: everything `sluice stat` and
// `sluice check` need to know about a running `sluice up`.
type Status struct {
	Version string `json:"version"`
	PID     int    `json:"pid"`
	// StateDir and ManifestDir are absolute paths.
	StateDir    string    `json:"stateDir"`
	ManifestDir string    `json:"manifestDir"`
	Started     time.Time `json:"started"`
	// ControlPlane is the gRPC address of destination, identity (and policy).
	ControlPlane string `json:"controlPlane"`
	// ControlPlaneName is the mesh identity the control plane's TLS
	// certificate names, and TrustAnchors the PEM file it chains to: what a
	// client of the control plane verifies.
	ControlPlaneName string `json:"controlPlaneName"`
	TrustAnchors     string `json:"trustAnchors"`
	// PolicyServed says whether the inbound policy API is served.
	PolicyServed bool `json:"policyServed"`
	// API is the base URL of this API.
	API string `json:"api"`
	// Ingress lists the Service ports published on the host.
	Ingress []IngressPort `json:"ingress"`
	// IngressProxy is the ingress proxy process; IngressReady whether its
	// /ready answers 200.
	IngressProxy supervisor.ProcessStatus `json:"ingressProxy"`
	IngressReady bool                     `json:"ingressReady"`
	// Workloads and Replicas are what the supervisor runs.
	Workloads []supervisor.WorkloadStatus `json:"workloads"`
	Replicas  []Replica                   `json:"replicas"`
	// Problems are the current problems of the manifests, one per line
	// ("file:line: object: field: message"), and of the HTTPRoutes.
	Problems []string `json:"problems,omitempty"`
}

// Replica is a replica's state, with the end of its logs when it is not
// ready.
type Replica struct {
	supervisor.ReplicaStatus
	// LogTail maps "app" and "proxy" to the last lines of their logs, for a
	// replica that is not ready.
	LogTail map[string][]string `json:"logTail,omitempty"`
}

// CheckResult is what GET /api/v1/check/identity answers.
type CheckResult struct {
	OK      bool   `json:"ok"`
	Message string `json:"message"`
}

type errorBody struct {
	Error string `json:"error"`
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

// handler serves the API.
func (u *instance) handler() http.Handler {
	mux := http.NewServeMux()
	tel := u.tel.Handler()
	mux.Handle("GET "+telemetry.PathWindow, tel)
	mux.Handle("GET "+telemetry.PathWorkloads, tel)
	mux.HandleFunc("GET "+PathStatus, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, u.status(r.Context()))
	})
	mux.HandleFunc("GET "+PathObjects, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, u.genericObjects())
	})
	mux.HandleFunc("GET "+PathCheckIdentity, func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		msg, err := u.checkIdentity(ctx)
		if err != nil {
			writeJSON(w, http.StatusOK, CheckResult{Message: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, CheckResult{OK: true, Message: msg})
	})
	u.canaryRoutes(mux)
	u.integ.routes(mux, u.log)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, errorBody{fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path)})
	})
	return mux
}

// ErrNotRunning is returned (wrapped) by Discover when no `sluice up` is
// running with the state directory.
var ErrNotRunning = errors.New("no sluice up is running")

// Client talks to a running `sluice up`.
type Client struct {
	// BaseURL is the API's base URL, such as http://127.0.0.1:40123.
	BaseURL string
	// HTTPClient does the requests; nil means a client with a 30 s timeout.
	HTTPClient *http.Client
}

// Discover returns a client for the `sluice up` whose state is in stateDir,
// from the address it wrote in stateDir/api. The error wraps ErrNotRunning
// when there is none.
func Discover(stateDir string) (*Client, error) {
	data, err := os.ReadFile(filepath.Join(stateDir, APIFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w with state directory %s (%s does not exist); start one with `sluice up -f DIR`", ErrNotRunning, stateDir, filepath.Join(stateDir, APIFile))
	}
	if err != nil {
		return nil, fmt.Errorf("reading the address of sluice up: %w", err)
	}
	base := strings.TrimSpace(string(data))
	if !strings.HasPrefix(base, "http://") {
		return nil, fmt.Errorf("%s holds %q, not an http:// URL", filepath.Join(stateDir, APIFile), base)
	}
	return &Client{BaseURL: base}, nil
}

func (c *Client) http() *http.Client {
	if c.HTTPClient != nil {
		return c.HTTPClient
	}
	return &http.Client{Timeout: 30 * time.Second}
}

// get fetches a path and decodes its JSON answer into v.
func (c *Client) get(ctx context.Context, path string, v any) error {
	u := strings.TrimRight(c.BaseURL, "/") + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return fmt.Errorf("%w at %s (it may have stopped): %v", ErrNotRunning, c.BaseURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("reading %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		if json.Unmarshal(body, &eb) == nil && eb.Error != "" {
			return fmt.Errorf("%s: %s: %s", u, resp.Status, eb.Error)
		}
		return fmt.Errorf("%s: %s", u, resp.Status)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("decoding %s: %w", u, err)
	}
	return nil
}

// Status returns the running instance's state.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var st Status
	if err := c.get(ctx, PathStatus, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Objects returns the objects of the sluice.dev kinds read from the manifests.
func (c *Client) Objects(ctx context.Context) ([]unstructured.Unstructured, error) {
	var out []unstructured.Unstructured
	if err := c.get(ctx, PathObjects, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// CheckIdentity has the running instance certify a throwaway identity
// through its own identity service.
func (c *Client) CheckIdentity(ctx context.Context) (CheckResult, error) {
	var r CheckResult
	err := c.get(ctx, PathCheckIdentity, &r)
	return r, err
}

// Telemetry returns a client of the instance's telemetry.
func (c *Client) Telemetry() *telemetry.Client {
	return &telemetry.Client{BaseURL: c.BaseURL, HTTPClient: c.http()}
}
