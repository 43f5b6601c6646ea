package http2

import (
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
)

// TestPool: requests to one address share one multiplexed connection; a
// refused connect is a ConnectError; Close ends every connection.
func TestPool(t *testing.T) {
	release := make(chan struct{})
	var arrived sync.WaitGroup
	const n = 20
	arrived.Add(n)
	backend, _ := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Done()
		<-release
		_, _ = io.WriteString(w, "ok")
	}))
	p := &Pool{}
	defer p.Close()
	req := func(addr string) (*http.Response, error) {
		r, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		r.Host = "svc.example"
		return p.RoundTrip(r)
	}

	errs := make(chan error, n)
	for range n {
		go func() {
			resp, err := req(backend)
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			errs <- err
		}()
	}
	arrived.Wait() // all n streams are open at once
	if got := p.openConns(); got != 1 {
		t.Errorf("%d connections for %d concurrent requests to one address, want 1", got, n)
	}
	close(release)
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("request: %v", err)
		}
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	_, err = req(closed)
	var ce *ConnectError
	if !errors.As(err, &ce) || ce.Addr != closed {
		t.Fatalf("request to a closed port: %v, want a ConnectError for %s", err, closed)
	}

	p.Close()
	if got := p.openConns(); got != 0 {
		t.Errorf("%d connections open after Close", got)
	}
	if _, err := req(backend); !errors.Is(err, ErrPoolClosed) {
		t.Errorf("request after Close: %v, want ErrPoolClosed", err)
	}
}
