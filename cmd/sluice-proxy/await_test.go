package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

func TestAwaitReturnsOnceReady(t *testing.T) {
	var asked atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Not ready for the first two questions.
		if asked.Add(1) <= 2 {
			http.Error(w, "not ready: not certified yet", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})}
	go srv.Serve(ln)
	defer srv.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	var stderr bytes.Buffer
	if code := runAwait(context.Background(), []string{"--admin-port", port, "--interval", "10ms", "--timeout", "30s"}, &stderr); code != 0 {
		t.Fatalf("await exit %d, want 0: %s", code, stderr.String())
	}
	if asked.Load() < 3 {
		t.Fatalf("await returned after %d questions, before the proxy was ready", asked.Load())
	}
}

func TestAwaitTimesOutNamingTheLastAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not ready: not certified yet", http.StatusServiceUnavailable)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	var stderr bytes.Buffer
	if code := runAwait(context.Background(), []string{"--admin-port", port, "--interval", "10ms", "--timeout", "200ms"}, &stderr); code != 1 {
		t.Fatalf("await exit %d, want 1", code)
	}
	if !strings.Contains(stderr.String(), "not certified yet") {
		t.Fatalf("timeout message does not say why: %q", stderr.String())
	}
}

func TestAwaitBadFlags(t *testing.T) {
	var stderr bytes.Buffer
	if code := runAwait(context.Background(), []string{"--admin-port", "70000"}, &stderr); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	if !strings.Contains(stderr.String(), "--admin-port 70000") {
		t.Fatalf("message does not name the flag: %q", stderr.String())
	}
}
