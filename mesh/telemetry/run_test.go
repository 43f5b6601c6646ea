package telemetry_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/mesh/telemetry"
)

// TestRunConcurrent runs the scrape loop on the real clock while proxies
// serve, targets come and go, and readers query the store and its Handler.
// Under -race it proves the locking; goleak (TestMain) proves Run stops.
func TestRunConcurrent(t *testing.T) {
	const (
		proxies = 4
		rounds  = 200 // per writer and reader: the bound on every loop
	)
	ps := make([]*fakeProxy, proxies)
	all := make([]telemetry.Target, proxies)
	for i := range ps {
		ps[i] = newFakeProxy(t, fmt.Sprintf(`namespace="shop",deployment="web",pod="web-%d"`, i))
		all[i] = telemetry.Target{URL: ps[i].URL()}
	}
	src := &targetList{}
	src.Set(all...)
	s := newStore(t, src, nil, telemetry.Options{Interval: 2 * time.Millisecond, MaxConcurrent: 2})
	hsrv := httptest.NewServer(s.Handler())
	t.Cleanup(hsrv.Close)
	hc := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(hc.CloseIdleConnections)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() {
			for i := range rounds {
				p.Serve("inbound", 200+300*(i%2), 1, i%3 == 0, float64(i%50))
			}
		})
	}
	wg.Go(func() { // targets come and go
		for i := range rounds {
			src.Set(all[:1+i%proxies]...)
		}
		src.Set(all...)
	})
	wg.Go(func() {
		for range rounds {
			w, _ := s.Query(web, time.Minute)
			_ = w.Quantile(0.99)
			_ = s.Workloads(time.Minute)
		}
	})
	wg.Go(func() {
		for range rounds / 10 {
			resp, err := hc.Get(hsrv.URL + "/api/v1/workloads")
			if err != nil {
				t.Errorf("GET workloads: %v", err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
	wg.Go(func() { // concurrent rounds are serialized, not lost
		for range rounds / 10 {
			s.ScrapeOnce(ctx)
		}
	})
	wg.Wait()

	// Two more rounds after a known amount of traffic: it must show.
	s.ScrapeOnce(ctx)
	for _, p := range ps {
		p.Serve("inbound", 200, 10, true, 1)
	}
	s.ScrapeOnce(ctx)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run returned %v", err)
		}
	case <-time.After(30 * time.Second): // failure guard only
		t.Fatal("Run did not return after cancellation")
	}

	w, err := s.Query(web, time.Hour)
	if err != nil {
		t.Fatalf("Query: %v", err)
	}
	served := float64(proxies * (rounds + 10))
	if w.Requests < proxies*10 || w.Requests > served {
		t.Errorf("requests %v, want between %d and %v", w.Requests, proxies*10, served)
	}
	if w.Pods != proxies {
		t.Errorf("pods %d, want %d", w.Pods, proxies)
	}
	if inf := w.Buckets[len(w.Buckets)-1].Count; inf != w.Requests {
		t.Errorf("+Inf bucket %v != requests %v", inf, w.Requests)
	}
}

// TestRunStopsMidScrape cancels Run while a scrape hangs: it must return, and
// the cancellation must not be recorded as the target's failure.
func TestRunStopsMidScrape(t *testing.T) {
	p := newFakeProxy(t, `namespace="shop",deployment="web",pod="web-1"`)
	p.Hang(t)
	src := &targetList{}
	src.Set(telemetry.Target{URL: p.URL()})
	s := newStore(t, src, nil, telemetry.Options{Timeout: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	// Wait until the scrape is in flight: the target is then listed.
	deadline := time.Now().Add(30 * time.Second)
	for len(s.Workloads(time.Minute)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("target never listed")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second): // failure guard only
		t.Fatal("Run did not return after cancellation")
	}
	if ws := s.Workloads(time.Minute); len(ws) != 1 || len(ws[0].Errors) != 0 {
		t.Errorf("Workloads = %+v, want no errors", ws)
	}
}
