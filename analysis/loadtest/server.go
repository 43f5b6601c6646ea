package loadtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// maxPayload bounds a request body of the API.
const maxPayload = 1 << 20

// Payload is the JSON a Canary's webhook posts (Flagger's
// CanaryWebhookPayload).
type Payload struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Phase     string `json:"phase,omitempty"`
	Checksum  string `json:"checksum,omitempty"`
	// Metadata is the webhook's metadata. A Canary's metadata values are
	// strings; a typed load posted directly may use JSON numbers, booleans
	// and an object of headers.
	Metadata map[string]json.RawMessage `json:"metadata"`
}

// TaskReply is the JSON answer of POST /.
type TaskReply struct {
	// Key is the canary, "namespace/name".
	Key string `json:"key"`
	// Outcome is started, running or replaced, or stopped and not-running
	// for a payload whose phase ended the load.
	Outcome string `json:"outcome"`
	// Spec is the load, when one was asked for.
	Spec *Spec `json:"spec,omitempty"`
}

// loadPhases are the canary phases in which a load runs: a payload in any
// other phase stops its canary's load.
var loadPhases = []string{"", "Progressing", "WaitingPromotion"}

// HandlerOptions restrict the HTTP API.
type HandlerOptions struct {
	// Namespaces, when set, is what a payload's namespace must match (as
	// flagger-loadtester's -namespace-regexp); others get 403.
	Namespaces *regexp.Regexp
}

// Handler serves the tester's HTTP API:
//
//	POST /        flagger-loadtester's task endpoint (below)
//	POST /stop    {"name", "namespace"}: stop that canary's load
//	GET  /status  every load's Status as a JSON array; ?namespace=&name=
//	              for one canary's (404 when it has none)
//	GET  /healthz 200 "ok"
//
// POST / takes a webhook payload {name, namespace, phase, metadata}; without
// metadata it answers 400, as flagger-loadtester does. The load's key is
// "namespace/name". When the phase is set and is neither Progressing nor
// WaitingPromotion, the canary has left its analysis: its load is stopped
// and the answer is 200 {"outcome": "stopped"} (or "not-running").
// Otherwise the metadata says the load:
//
//   - type "cmd" (the default) with a "cmd": a hey or ghz command line, see
//     ParseCommand. logCmdOutput is accepted; every load's start and summary
//     are logged anyway.
//   - "kind" http or grpc: a typed load, with the keys url, method, rate,
//     concurrency, duration, requests, timeout, headers (a JSON object, or
//     "Name: value" lines), body, host, tls, insecure, http2,
//     disableKeepAlives, disableCompression and disableRedirects, as Spec
//     describes them. Values may be strings, as a Canary's metadata is.
//
// Any other type (bash, helm, kubectl, concord, ngrinder) is refused with
// 400: the built-in tester runs load, not commands. A load that starts, is
// already running, or replaces another answers 202 with a TaskReply. A load
// that cannot run answers 400 (bad spec) or 502 (a gRPC target that cannot
// be resolved), naming why.
func (t *Tester) Handler(opts HandlerOptions) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /{$}", func(w http.ResponseWriter, r *http.Request) { t.serveTask(w, r, opts) })
	mux.HandleFunc("POST /stop", func(w http.ResponseWriter, r *http.Request) { t.serveStop(w, r, opts) })
	mux.HandleFunc("GET /status", t.serveStatus)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	return mux
}

// readPayload decodes a payload and checks its name and namespace.
func readPayload(w http.ResponseWriter, r *http.Request, opts HandlerOptions) (Payload, bool) {
	var p Payload
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxPayload))
	if err := dec.Decode(&p); err != nil {
		http.Error(w, "bad payload: "+err.Error(), http.StatusBadRequest)
		return p, false
	}
	if p.Name == "" || p.Namespace == "" {
		http.Error(w, "bad payload: name and namespace are required", http.StatusBadRequest)
		return p, false
	}
	if opts.Namespaces != nil && !opts.Namespaces.MatchString(p.Namespace) {
		http.Error(w, fmt.Sprintf("namespace %q is not allowed", p.Namespace), http.StatusForbidden)
		return p, false
	}
	return p, true
}

func (t *Tester) serveTask(w http.ResponseWriter, r *http.Request, opts HandlerOptions) {
	p, ok := readPayload(w, r, opts)
	if !ok {
		return
	}
	if p.Metadata == nil {
		http.Error(w, "metadata not found in payload", http.StatusBadRequest)
		return
	}
	key := p.Namespace + "/" + p.Name
	if !slices.Contains(loadPhases, p.Phase) {
		outcome := "not-running"
		if t.Stop(key) {
			outcome = "stopped"
		}
		writeJSON(w, http.StatusOK, TaskReply{Key: key, Outcome: outcome})
		return
	}
	spec, err := specFromMetadata(p.Metadata)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	outcome, err := t.Start(r.Context(), key, spec)
	switch {
	case errors.Is(err, ErrInvalid):
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	case errors.Is(err, ErrClosed):
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	norm, _ := t.Normalize(spec)
	writeJSON(w, http.StatusAccepted, TaskReply{Key: key, Outcome: string(outcome), Spec: &norm})
}

func (t *Tester) serveStop(w http.ResponseWriter, r *http.Request, opts HandlerOptions) {
	p, ok := readPayload(w, r, opts)
	if !ok {
		return
	}
	key := p.Namespace + "/" + p.Name
	outcome := "not-running"
	if t.Stop(key) {
		outcome = "stopped"
	}
	writeJSON(w, http.StatusOK, TaskReply{Key: key, Outcome: outcome})
}

func (t *Tester) serveStatus(w http.ResponseWriter, r *http.Request) {
	ns, name := r.URL.Query().Get("namespace"), r.URL.Query().Get("name")
	if ns == "" && name == "" {
		writeJSON(w, http.StatusOK, t.Statuses())
		return
	}
	st, ok := t.Status(ns + "/" + name)
	if !ok {
		http.Error(w, fmt.Sprintf("no load for %s/%s", ns, name), http.StatusNotFound)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

// metaString reads a metadata value as a string: a JSON string's content,
// or any other JSON value's text.
func metaString(raw json.RawMessage) string {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s
	}
	return string(bytes.TrimSpace(raw))
}

// specFromMetadata reads the load a payload's metadata asks for.
func specFromMetadata(md map[string]json.RawMessage) (Spec, error) {
	get := func(k string) (string, bool) {
		raw, ok := md[k]
		if !ok {
			return "", false
		}
		return metaString(raw), true
	}
	typ, _ := get("type")
	kind, hasKind := get("kind")
	if !hasKind && (typ == "http" || typ == "grpc") {
		kind, hasKind = typ, true
	}
	if hasKind {
		return typedSpec(kind, md)
	}
	switch typ {
	case "", "cmd":
	default:
		return Spec{}, fmt.Errorf("task type %q is not supported by the built-in load tester: use type cmd with a hey or ghz command, or kind http or grpc", typ)
	}
	cmd, ok := get("cmd")
	if !ok || strings.TrimSpace(cmd) == "" {
		return Spec{}, errors.New("cmd not found in metadata")
	}
	return ParseCommand(cmd)
}

// typedSpec reads a typed load from metadata.
func typedSpec(kind string, md map[string]json.RawMessage) (Spec, error) {
	spec := Spec{Kind: Kind(kind)}
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(md)) {
		raw := md[k]
		v := metaString(raw)
		var err error
		switch k {
		case "type", "kind", "logCmdOutput":
		case "url":
			spec.URL = v
		case "method":
			spec.Method = v
		case "body":
			spec.Body = v
		case "host":
			spec.Host = v
		case "rate":
			spec.Rate, err = strconv.ParseFloat(v, 64)
		case "concurrency":
			spec.Concurrency, err = strconv.Atoi(v)
		case "requests":
			spec.Requests, err = strconv.Atoi(v)
		case "duration":
			spec.Duration, err = time.ParseDuration(v)
		case "timeout":
			spec.Timeout, err = time.ParseDuration(v)
		case "headers":
			spec.Headers, err = parseHeaders(raw)
		case "tls":
			spec.TLS, err = strconv.ParseBool(v)
		case "insecure":
			spec.Insecure, err = strconv.ParseBool(v)
		case "http2":
			spec.HTTP2, err = strconv.ParseBool(v)
		case "disableKeepAlives":
			spec.DisableKeepAlives, err = strconv.ParseBool(v)
		case "disableCompression":
			spec.DisableCompression, err = strconv.ParseBool(v)
		case "disableRedirects":
			spec.DisableRedirects, err = strconv.ParseBool(v)
		default:
			err = errors.New("unknown key")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("metadata %s %q: %w", k, v, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Spec{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return spec, nil
}

// parseHeaders reads headers: a JSON object of strings (or a string holding
// one), or "Name: value" lines.
func parseHeaders(raw json.RawMessage) (map[string]string, error) {
	var obj map[string]string
	if err := json.Unmarshal(raw, &obj); err == nil {
		return obj, nil
	}
	s := metaString(raw)
	if strings.HasPrefix(strings.TrimSpace(s), "{") {
		if err := json.Unmarshal([]byte(s), &obj); err != nil {
			return nil, fmt.Errorf("not a JSON object of strings: %w", err)
		}
		return obj, nil
	}
	out := map[string]string{}
	for line := range strings.Lines(s) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf(`line %q is not "Name: value"`, line)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out, nil
}
