// Package admin is the proxy's admin HTTP server (port 4191 by default): the
// Prometheus endpoint /metrics, the readiness probe /ready and the liveness
// probe /live, as Linkerd's proxy serves them.
package admin

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/proxy/metrics"
)

// DefaultAddr is the admin listener's address when Server.Addr is empty: every
// interface, so that the kubelet's probes and scrapers reach it.
const DefaultAddr = ":4191"

// ContentType is the media type of /metrics: the Prometheus text format 0.0.4.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// shutdownTimeout bounds how long a cancelled Serve waits for in-flight requests.
const shutdownTimeout = 5 * time.Second

// Readiness reports whether the proxy is ready to take traffic (for example,
// whether its identity is certified) and, if not, why.
type Readiness interface {
	Ready() (ready bool, why string)
}

// Server is the admin HTTP server. Set its fields before calling Serve; they
// must not change afterwards.
type Server struct {
	// Addr is where ListenAndServe listens; empty means DefaultAddr.
	Addr string
	// Metrics is written by /metrics, and receives the process metrics while
	// Serve runs. Nil means an empty registry of the server's own.
	Metrics *metrics.Registry
	// Readiness answers /ready; nil means always ready.
	Readiness Readiness
	// Logger receives the server's errors; nil means slog.Default().
	Logger *slog.Logger
	// Version is the proxy_build_info version label; empty means the main
	// module's version from the binary's build information.
	Version string
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// Handler returns the admin endpoints: GET /metrics, /ready and /live (HEAD is
// answered too). It does not register the process metrics; Serve does.
func (s *Server) Handler() http.Handler {
	reg := s.Metrics
	if reg == nil {
		reg = metrics.NewRegistry(nil)
	}
	return s.handler(reg)
}

func (s *Server) handler(reg *metrics.Registry) http.Handler {
	log := s.logger()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		serveMetrics(w, r, reg, log)
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		ready, why := true, ""
		if s.Readiness != nil {
			ready, why = s.Readiness.Ready()
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if ready {
			_, _ = io.WriteString(w, "ready\n")
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		if why == "" {
			_, _ = io.WriteString(w, "not ready\n")
			return
		}
		_, _ = io.WriteString(w, "not ready: "+why+"\n")
	})
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "live\n")
	})
	return mux
}

// serveMetrics writes the registry, gzip-compressed when the scraper accepts it.
func serveMetrics(w http.ResponseWriter, r *http.Request, reg *metrics.Registry, log *slog.Logger) {
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("Cache-Control", "no-store")
	h.Add("Vary", "Accept-Encoding")
	if r.Method == http.MethodHead {
		return
	}
	var out io.Writer = w
	var gz *gzip.Writer
	if acceptsGzip(r) {
		h.Set("Content-Encoding", "gzip")
		gz, _ = gzip.NewWriterLevel(w, gzip.BestSpeed) // a valid level cannot fail
		out = gz
	}
	err := reg.WriteText(out)
	if gz != nil {
		err = errors.Join(err, gz.Close())
	}
	if err != nil {
		// The scraper went away mid-response; there is nobody left to tell.
		log.Debug("admin: writing /metrics", "remote", r.RemoteAddr, "error", err)
	}
}

// acceptsGzip reports whether the request's Accept-Encoding allows gzip (with
// a quality above zero).
func acceptsGzip(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for part := range strings.SplitSeq(v, ",") {
			coding, params, _ := strings.Cut(part, ";")
			if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
				continue
			}
			q := 1.0
			for param := range strings.SplitSeq(params, ";") {
				if k, v, ok := strings.Cut(strings.TrimSpace(param), "="); ok && strings.EqualFold(k, "q") {
					if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
						q = f
					}
				}
			}
			return q > 0
		}
	}
	return false
}

// ListenAndServe listens on s.Addr (DefaultAddr if empty) and calls Serve.
func (s *Server) ListenAndServe(ctx context.Context) error {
	addr := s.Addr
	if addr == "" {
		addr = DefaultAddr
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("admin: listening on %s: %w", addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve answers admin requests on ln until ctx is cancelled, then shuts down
// gracefully (in-flight requests get a few seconds to finish) and returns nil.
// It closes ln. While it runs, the process metrics (process_*, go_goroutines,
// proxy_build_info) are registered on s.Metrics. It returns an error only if
// serving fails before ctx is cancelled.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	reg := s.Metrics
	if reg == nil {
		reg = metrics.NewRegistry(nil)
	}
	unregister := RegisterProcessMetrics(reg, s.Version)
	defer unregister()

	log := s.logger()
	srv := &http.Server{
		Handler:           s.handler(reg),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	log.Info("admin server listening", "addr", ln.Addr().String())

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		// Serve only returns early on a listener failure.
		_ = srv.Close()
		return fmt.Errorf("admin: serving on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}

	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("admin server: graceful shutdown incomplete, closing connections", "error", err)
		_ = srv.Close()
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin: serving on %s: %w", ln.Addr(), err)
	}
	return nil
}
