// Command backend is the benchmarks' upstream: a minimal net/http server that
// answers every request with the same 64-byte body, so that what a benchmark
// measures is the proxy in front of it. Run it with GOMAXPROCS=1 on its own CPU.
//
//	backend --listen 127.0.0.1:8080
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// body is the 64-byte response body.
var body = []byte("sluice bench backend: 64 byte body, the same for each request..\n")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "backend: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("backend", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "address to serve on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", *listen, err)
	}
	fmt.Fprintf(stderr, "backend: serving on %s\n", ln.Addr())
	return serve(ctx, ln)
}

// handler answers every request with body.
func handler(w http.ResponseWriter, r *http.Request) {
	// Drain a request body so the connection can be reused.
	io.Copy(io.Discard, r.Body)
	h := w.Header()
	h["Content-Type"] = contentType
	h["Content-Length"] = contentLength
	w.Write(body)
}

var (
	contentType   = []string{"text/plain; charset=utf-8"}
	contentLength = []string{strconv.Itoa(len(body))}
)

// serve answers on ln until ctx is done.
func serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: http.HandlerFunc(handler), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	}
	return nil
}
