package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
)

const (
	maxEchoBody    = 10 << 20
	maxDelay       = 10 * time.Minute
	maxStreamLines = 100_000
	maxStreamGap   = 10 * time.Second
)

// app is the demo service: one handler serving HTTP/1.1, h2c and gRPC.
type app struct {
	cfg    config
	log    *slog.Logger
	faults *faults
	sleep  sleepFunc

	backend *http.Client // nil unless cfg.Backend is set

	grpc    *grpc.Server
	health  *health.Server
	handler http.Handler
}

// newApp builds the app's HTTP and gRPC handlers from cfg.
func newApp(cfg config, log *slog.Logger) *app {
	a := &app{
		cfg:    cfg,
		log:    log,
		faults: newFaults(cfg.ErrorRate, cfg.Latency, cfg.LatencyJitter, cfg.Seed),
		sleep:  sleepCtx,
	}
	if cfg.Backend != "" {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 256
		a.backend = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	}
	a.grpc, a.health = newGRPCServer(a)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.handleRoot)
	mux.HandleFunc("GET /healthz", a.handleHealthz)
	mux.HandleFunc("/echo", a.handleEcho)
	mux.HandleFunc("GET /status/{code}", a.handleStatus)
	mux.HandleFunc("GET /delay/{duration}", a.handleDelay)
	mux.Handle("GET /ws", websocket.Server{Handler: wsEcho})
	mux.HandleFunc("GET /stream", a.handleStream)
	a.handler = mux
	return a
}

// ServeHTTP sends gRPC requests to the gRPC server and everything else to
// the HTTP mux; every response carries x-version.
func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Version", a.cfg.Version)
	if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		a.grpc.ServeHTTP(w, r)
		return
	}
	a.handler.ServeHTTP(w, r)
}

// serve answers on ln until ctx is done, then drains in-flight requests for
// at most the configured shutdown timeout.
func (a *app) serve(ctx context.Context, ln net.Listener) error {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:           a,
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	a.log.Info("serving", "addr", ln.Addr().String(), "backend", a.cfg.Backend, "error_rate", a.cfg.ErrorRate, "latency", a.cfg.Latency)

	select {
	case err := <-errc:
		a.close()
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	a.log.Info("shutting down", "timeout", a.cfg.ShutdownTimeout)
	a.health.Shutdown()
	sctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		err = fmt.Errorf("draining requests: %w", err)
		srv.Close()
	}
	a.close()
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		return fmt.Errorf("serving on %s: %w", ln.Addr(), serr)
	}
	return err
}

func (a *app) close() {
	a.grpc.Stop()
	if a.backend != nil {
		a.backend.CloseIdleConnections()
	}
}

// identity is what GET / answers with.
type identity struct {
	Service string `json:"service"`
	Version string `json:"version"`
	Pod     string `json:"pod"`
}

func (a *app) identity() identity {
	return identity{Service: a.cfg.Name, Version: a.cfg.Version, Pod: a.cfg.Pod}
}

// injectFaults applies the configured delay and error rate. It reports
// whether the handler should go on; when not, the response has been written.
func (a *app) injectFaults(w http.ResponseWriter, r *http.Request) bool {
	delay, fail := a.faults.decide()
	if err := a.sleep(r.Context(), delay); err != nil {
		return false // client gone
	}
	if fail {
		writeJSON(w, http.StatusInternalServerError, struct {
			identity
			Error string `json:"error"`
		}{a.identity(), "injected failure"})
		return false
	}
	return true
}

func (a *app) handleRoot(w http.ResponseWriter, r *http.Request) {
	if !a.injectFaults(w, r) {
		return
	}
	if a.backend != nil {
		a.callBackend(w, r)
		return
	}
	writeJSON(w, http.StatusOK, a.identity())
}

func (a *app) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ok\n")
}

// echoReply describes a request back to its sender.
type echoReply struct {
	Method  string      `json:"method"`
	Path    string      `json:"path"`
	Query   string      `json:"query,omitempty"`
	Proto   string      `json:"proto"`
	Host    string      `json:"host"`
	Remote  string      `json:"remote"`
	Headers http.Header `json:"headers"`
	Body    string      `json:"body"`
	Version string      `json:"version"`
	Pod     string      `json:"pod"`
}

// handleEcho answers POST with the request body itself and any other method
// with a JSON description of the request.
func (a *app) handleEcho(w http.ResponseWriter, r *http.Request) {
	if !a.injectFaults(w, r) {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxEchoBody))
	if err != nil {
		http.Error(w, fmt.Sprintf("reading body: %v", err), http.StatusRequestEntityTooLarge)
		return
	}
	if r.Method == http.MethodPost {
		if ct := r.Header.Get("Content-Type"); ct != "" {
			w.Header().Set("Content-Type", ct)
		} else {
			w.Header().Set("Content-Type", "application/octet-stream")
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
		return
	}
	writeJSON(w, http.StatusOK, echoReply{
		Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Proto: r.Proto,
		Host: r.Host, Remote: r.RemoteAddr, Headers: r.Header, Body: string(body),
		Version: a.cfg.Version, Pod: a.cfg.Pod,
	})
}

func (a *app) handleStatus(w http.ResponseWriter, r *http.Request) {
	code, err := strconv.Atoi(r.PathValue("code"))
	if err != nil || code < 200 || code > 599 {
		http.Error(w, fmt.Sprintf("status %q: want an integer in 200..599", r.PathValue("code")), http.StatusBadRequest)
		return
	}
	if code == http.StatusNoContent || code == http.StatusNotModified {
		w.WriteHeader(code)
		return
	}
	writeJSON(w, code, struct {
		Status  int    `json:"status"`
		Version string `json:"version"`
	}{code, a.cfg.Version})
}

// handleDelay waits for the duration in the path ("250ms", "2s"; a bare
// number is seconds) and then answers 200.
func (a *app) handleDelay(w http.ResponseWriter, r *http.Request) {
	raw := r.PathValue("duration")
	d, err := time.ParseDuration(raw)
	if err != nil {
		secs, ferr := strconv.ParseFloat(raw, 64)
		if ferr != nil {
			http.Error(w, fmt.Sprintf("delay %q: want a duration such as 250ms or a number of seconds", raw), http.StatusBadRequest)
			return
		}
		d = time.Duration(secs * float64(time.Second))
	}
	if d < 0 || d > maxDelay {
		http.Error(w, fmt.Sprintf("delay %v: want 0..%v", d, maxDelay), http.StatusBadRequest)
		return
	}
	if err := a.sleep(r.Context(), d); err != nil {
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Delay   string `json:"delay"`
		Version string `json:"version"`
	}{d.String(), a.cfg.Version})
}

// handleStream writes n JSON lines (default 10), flushing after each one,
// optionally waiting interval between them.
func (a *app) handleStream(w http.ResponseWriter, r *http.Request) {
	n, gap := 10, time.Duration(0)
	q := r.URL.Query()
	if s := q.Get("n"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 || v > maxStreamLines {
			http.Error(w, fmt.Sprintf("n %q: want an integer in 0..%d", s, maxStreamLines), http.StatusBadRequest)
			return
		}
		n = v
	}
	if s := q.Get("interval"); s != "" {
		v, err := time.ParseDuration(s)
		if err != nil || v < 0 || v > maxStreamGap {
			http.Error(w, fmt.Sprintf("interval %q: want a duration in 0..%v", s, maxStreamGap), http.StatusBadRequest)
			return
		}
		gap = v
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	for i := range n {
		if i > 0 && gap > 0 {
			if err := a.sleep(r.Context(), gap); err != nil {
				return
			}
		}
		if err := enc.Encode(struct {
			Line    int    `json:"line"`
			Version string `json:"version"`
		}{i, a.cfg.Version}); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// wsEcho sends every WebSocket message back with its frame type.
func wsEcho(ws *websocket.Conn) {
	defer ws.Close()
	for {
		var m wsMessage
		if err := wsCodec.Receive(ws, &m); err != nil {
			return
		}
		if err := wsCodec.Send(ws, m); err != nil {
			return
		}
	}
}

// wsMessage is one WebSocket message and its frame type.
type wsMessage struct {
	data        []byte
	payloadType byte
}

// wsCodec keeps a message's frame type (text or binary) across an echo.
var wsCodec = websocket.Codec{
	Marshal: func(v any) ([]byte, byte, error) {
		m := v.(wsMessage)
		return m.data, m.payloadType, nil
	},
	Unmarshal: func(data []byte, payloadType byte, v any) error {
		m := v.(*wsMessage)
		m.data, m.payloadType = data, payloadType
		return nil
	},
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, fmt.Sprintf("encoding response: %v", err), http.StatusInternalServerError)
		return
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	w.Write(b)
}
