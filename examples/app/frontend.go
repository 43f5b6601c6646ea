package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

const maxBackendBody = 1 << 20

// frontendReply is what a frontend's GET / answers: its own identity and the
// backend's answer.
type frontendReply struct {
	identity
	// Backend is the backend's JSON answer (or a JSON string when it was not JSON).
	Backend json.RawMessage `json:"backend,omitempty"`
	// BackendStatus is the backend's HTTP status, 0 when it could not be reached.
	BackendStatus int    `json:"backend_status,omitempty"`
	Error         string `json:"error,omitempty"`
}

// callBackend answers GET / for a frontend: it calls the backend's GET / and
// returns both identities, or 502 with the backend's status when the backend
// fails.
func (a *app) callBackend(w http.ResponseWriter, r *http.Request) {
	reply := frontendReply{identity: a.identity()}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, a.cfg.Backend+"/", nil)
	if err != nil {
		reply.Error = fmt.Sprintf("building backend request: %v", err)
		writeJSON(w, http.StatusBadGateway, reply)
		return
	}
	copyPropagatedHeaders(req.Header, r.Header)
	resp, err := a.backend.Do(req)
	if err != nil {
		if r.Context().Err() != nil {
			return // client gone
		}
		reply.Error = fmt.Sprintf("calling backend %s: %v", a.cfg.Backend, err)
		writeJSON(w, http.StatusBadGateway, reply)
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBackendBody))
	reply.BackendStatus = resp.StatusCode
	if err != nil {
		reply.Error = fmt.Sprintf("reading backend %s response: %v", a.cfg.Backend, err)
		writeJSON(w, http.StatusBadGateway, reply)
		return
	}
	if json.Valid(body) {
		reply.Backend = json.RawMessage(body)
	} else if len(body) > 0 {
		reply.Backend, _ = json.Marshal(string(body))
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		reply.Error = fmt.Sprintf("backend %s answered %d", a.cfg.Backend, resp.StatusCode)
		writeJSON(w, http.StatusBadGateway, reply)
		return
	}
	writeJSON(w, http.StatusOK, reply)
}

// copyPropagatedHeaders copies the headers a request passes on to the next
// hop: application headers (X-*, except X-Forwarded-*) and trace context, so
// that header-matched canary routes apply along the whole call chain.
func copyPropagatedHeaders(dst, src http.Header) {
	for k, vs := range src {
		switch {
		case strings.HasPrefix(k, "X-Forwarded-"):
		case strings.HasPrefix(k, "X-"), k == "Traceparent", k == "Tracestate", k == "Baggage":
			dst[k] = append([]string(nil), vs...)
		}
	}
}
