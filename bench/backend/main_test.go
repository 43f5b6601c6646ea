package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestBackendAnswers64Bytes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln) }()

	tr := &http.Transport{}
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/", ""},
		{"GET", "/any/path?q=1", ""},
		{"POST", "/", strings.Repeat("x", 10_000)},
	} {
		req, _ := http.NewRequest(tc.method, "http://"+ln.Addr().String()+tc.path, strings.NewReader(tc.body))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || len(b) != 64 || resp.ContentLength != 64 {
			t.Errorf("%s %s: status %d, %d bytes (Content-Length %d), err %v; want 200 with 64 bytes",
				tc.method, tc.path, resp.StatusCode, len(b), resp.ContentLength, err)
		}
	}
	tr.CloseIdleConnections()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
}

func TestRunRejectsBadListen(t *testing.T) {
	if err := run(context.Background(), []string{"--listen", "127.0.0.1:notaport"}, io.Discard); err == nil {
		t.Error("run with a bad address succeeded")
	}
}
