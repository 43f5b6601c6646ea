package balance

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

// simulate drives a balancer with a fake clock: every tick perRequest new
// requests arrive, and each completes after its endpoint's latency. It returns
// how many requests each endpoint served.
func simulate(t *testing.T, latency map[string]time.Duration, requests int) map[string]int {
	t.Helper()
	clk := newFakeClock()
	b := New(Config{Clock: clk, Rand: seeded(42)})
	var addrs []string
	for a := range latency {
		addrs = append(addrs, a)
	}
	slices.Sort(addrs) // a deterministic order, so a deterministic run
	b.Update(eps(addrs...))

	type inflight struct {
		a   *Attempt
		end time.Time
	}
	const tick, perTick = 500 * time.Microsecond, 2 // 4000 requests per second
	var open []inflight
	counts := map[string]int{}
	for sent := 0; sent < requests; {
		clk.Advance(tick)
		now := clk.Now()
		kept := open[:0]
		for _, f := range open {
			if now.Before(f.end) {
				kept = append(kept, f)
				continue
			}
			f.a.FirstByte()
			f.a.Done(false)
		}
		open = kept
		for range perTick {
			e, err := b.Pick()
			if err != nil {
				t.Fatal(err)
			}
			counts[e.Addr()]++
			open = append(open, inflight{e.Start(), now.Add(latency[e.Addr()])})
			sent++
		}
	}
	return counts
}

func TestSlowEndpointGetsLessTraffic(t *testing.T) {
	const requests = 20000
	counts := simulate(t, map[string]time.Duration{
		"fast-1:80": 2 * time.Millisecond,
		"fast-2:80": 2 * time.Millisecond,
		"fast-3:80": 3 * time.Millisecond,
		"slow:80":   50 * time.Millisecond,
	}, requests)
	t.Logf("requests served: %v", counts)
	// Uniform spreading would give the slow endpoint 25%.
	if share := float64(counts["slow:80"]) / requests; share > 0.05 {
		t.Fatalf("slow endpoint served %.1f%% of requests, want under 5%%", 100*share)
	}
	for _, a := range []string{"fast-1:80", "fast-2:80", "fast-3:80"} {
		if share := float64(counts[a]) / requests; share < 0.2 {
			t.Fatalf("%s served only %.1f%%", a, 100*share)
		}
	}
}

func TestEqualEndpointsShareEvenly(t *testing.T) {
	const requests = 20000
	lat := map[string]time.Duration{}
	for i := range 4 {
		lat[fmt.Sprintf("e-%d:80", i)] = 5 * time.Millisecond
	}
	counts := simulate(t, lat, requests)
	t.Logf("requests served: %v", counts)
	for a, n := range counts {
		if share := float64(n) / requests; share < 0.18 || share > 0.32 {
			t.Fatalf("%s served %.1f%%, want about 25%%", a, 100*share)
		}
	}
}

func benchBalancer(b *testing.B, n int) *Balancer {
	b.Helper()
	bal := New(Config{})
	var list []routetable.Endpoint
	for i := range n {
		list = append(list, routetable.Endpoint{Address: fmt.Sprintf("10.0.%d.%d:80", i/256, i%256)})
	}
	bal.Update(list)
	return bal
}

func BenchmarkPick(b *testing.B) {
	for _, n := range []int{2, 10, 100} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			bal := benchBalancer(b, n)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bal.Pick(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkPickParallel(b *testing.B) {
	bal := benchBalancer(b, 10)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := bal.Pick(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRequest is the balancer's whole per-request cost: Pick, Start,
// FirstByte and Done.
func BenchmarkRequest(b *testing.B) {
	bal := benchBalancer(b, 10)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			e, err := bal.Pick()
			if err != nil {
				b.Fatal(err)
			}
			a := e.Start()
			a.FirstByte()
			a.Done(false)
		}
	})
}
