package gate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"
)

// maxRequestBody bounds a request body; a webhook payload is small.
const maxRequestBody = 1 << 20

// Request is the body of a POST to the gate endpoints: a webhook payload
// (Flagger's {name, namespace, phase, checksum, metadata}; only name and
// namespace are read) or what the Client sends, which may say who it is.
type Request struct {
	// Name of the Canary.
	Name string `json:"name"`
	// Namespace of the Canary.
	Namespace string `json:"namespace"`
	// By says who opens or closes a switch, for the record; the client's
	// address when empty.
	By string `json:"by,omitempty"`
}

// Status is the JSON answer of open, close and status: a canary and its
// gates.
type Status struct {
	// Namespace of the Canary.
	Namespace string `json:"namespace"`
	// Name of the Canary.
	Name string `json:"name"`
	State
}

// Server serves the gates of a Store over HTTP, at the paths of Flagger's
// load tester:
//
//	POST /gate/check       200 if the gate is open, 403 if closed
//	POST /gate/open        opens the gate; 202 and the Status
//	POST /gate/close       closes the gate; 202 and the Status
//	POST /rollback/check   200 if a rollback is requested, else 403
//	POST /rollback/open    requests a rollback; 202 and the Status
//	POST /rollback/close   withdraws the request; 202 and the Status
//	POST /gate/approve     always 200; POST /gate/halt always 403
//	GET  /gate/status?namespace=NS&name=NAME   200 and the Status
//
// POST bodies are a webhook payload, or a Request. A body that is not JSON,
// or lacks name or namespace, is answered 400 with the reason. A store that
// fails is answered 500, which a gate webhook treats as closed.
//
// Mount it at the root of a mux, or under a prefix with http.StripPrefix.
type Server struct {
	// Store keeps the gates.
	Store Store
	// Now returns the time recorded in UpdatedAt; time.Now when nil.
	Now func() time.Time
	// Logger records changes; slog.Default() when nil.
	Logger *slog.Logger
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/gate/status":
		if !allow(w, r, http.MethodGet) {
			return
		}
		s.status(w, r)
	case "/gate/check":
		s.check(w, r, func(st State) bool { return st.Gate == Opened }, "gate %s is open", "gate %s is closed")
	case "/rollback/check":
		s.check(w, r, func(st State) bool { return st.Rollback == Opened }, "rollback of %s requested", "no rollback requested for %s")
	case "/gate/open":
		s.set(w, r, "gate", func(st *State) { st.Gate = Opened })
	case "/gate/close":
		s.set(w, r, "gate", func(st *State) { st.Gate = Closed })
	case "/rollback/open":
		s.set(w, r, "rollback", func(st *State) { st.Rollback = Opened })
	case "/rollback/close":
		s.set(w, r, "rollback", func(st *State) { st.Rollback = Closed })
	case "/gate/approve":
		if allow(w, r, http.MethodPost) {
			text(w, http.StatusOK, "Approved")
		}
	case "/gate/halt":
		if allow(w, r, http.MethodPost) {
			text(w, http.StatusForbidden, "Forbidden")
		}
	default:
		http.NotFound(w, r)
	}
}

func (s *Server) check(w http.ResponseWriter, r *http.Request, open func(State) bool, yes, no string) {
	if !allow(w, r, http.MethodPost) {
		return
	}
	req, ok := decode(w, r)
	if !ok {
		return
	}
	key := Key{Namespace: req.Namespace, Name: req.Name}
	st, err := s.Store.Get(r.Context(), key)
	if err != nil {
		s.logger().Error("reading gate", "canary", key.String(), "error", err)
		text(w, http.StatusInternalServerError, fmt.Sprintf("reading the gates of %s: %v", key, err))
		return
	}
	if open(st) {
		text(w, http.StatusOK, fmt.Sprintf(yes, key))
		return
	}
	text(w, http.StatusForbidden, fmt.Sprintf(no, key))
}

func (s *Server) set(w http.ResponseWriter, r *http.Request, which string, fn func(*State)) {
	if !allow(w, r, http.MethodPost) {
		return
	}
	req, ok := decode(w, r)
	if !ok {
		return
	}
	by := req.By
	if by == "" {
		by = clientAddr(r)
	}
	now := s.now()
	key := Key{Namespace: req.Namespace, Name: req.Name}
	st, err := s.Store.Update(r.Context(), key, func(st *State) {
		fn(st)
		st.UpdatedAt = now
		st.By = by
	})
	if err != nil {
		s.logger().Error("setting gate", "canary", key.String(), "switch", which, "error", err)
		text(w, http.StatusInternalServerError, fmt.Sprintf("setting the %s of %s: %v", which, key, err))
		return
	}
	s.logger().Info("gate set", "canary", key.String(), "gate", st.Gate, "rollback", st.Rollback, "by", by)
	writeJSON(w, http.StatusAccepted, Status{Namespace: key.Namespace, Name: key.Name, State: st})
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	key := Key{Namespace: q.Get("namespace"), Name: q.Get("name")}
	if err := key.Validate(); err != nil {
		text(w, http.StatusBadRequest, "query: "+err.Error())
		return
	}
	st, err := s.Store.Get(r.Context(), key)
	if err != nil {
		s.logger().Error("reading gate", "canary", key.String(), "error", err)
		text(w, http.StatusInternalServerError, fmt.Sprintf("reading the gates of %s: %v", key, err))
		return
	}
	writeJSON(w, http.StatusOK, Status{Namespace: key.Namespace, Name: key.Name, State: st})
}

// decode reads a Request, answering 400 (or 413) with the reason when the
// body is not one.
func decode(w http.ResponseWriter, r *http.Request) (Request, bool) {
	var req Request
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			text(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", maxRequestBody))
			return req, false
		}
		text(w, http.StatusBadRequest, "reading request body: "+err.Error())
		return req, false
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		text(w, http.StatusBadRequest, `request body is empty: want a JSON object with "name" and "namespace"`)
		return req, false
	}
	if err := json.Unmarshal(b, &req); err != nil {
		text(w, http.StatusBadRequest, "request body is not a webhook payload: "+err.Error())
		return req, false
	}
	if err := (Key{Namespace: req.Namespace, Name: req.Name}).Validate(); err != nil {
		text(w, http.StatusBadRequest, "request body: "+err.Error())
		return req, false
	}
	return req, true
}

func allow(w http.ResponseWriter, r *http.Request, method string) bool {
	if r.Method == method {
		return true
	}
	w.Header().Set("Allow", method)
	text(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: use %s", r.Method, r.URL.Path, method))
	return false
}

func text(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg+"\n")
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		text(w, http.StatusInternalServerError, "encoding answer: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}
