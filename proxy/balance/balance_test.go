package balance

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock is a Clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// seeded is a deterministic Rand for single-goroutine tests.
func seeded(seed uint64) func() uint64 {
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)).Uint64
}

// constRand always returns v.
func constRand(v uint64) func() uint64 { return func() uint64 { return v } }

// pairValue is a random value that makes pair(r, n) return (i, j).
func pairValue(i, j, n uint32) uint64 {
	jj := j
	if j > i {
		jj--
	}
	lo := (uint64(i)<<32 + 1<<31) / uint64(n)
	hi := (uint64(jj)<<32 + 1<<31) / uint64(n-1)
	return hi<<32 | lo
}

func eps(addrs ...string) []routetable.Endpoint {
	out := make([]routetable.Endpoint, len(addrs))
	for i, a := range addrs {
		out[i] = routetable.Endpoint{Address: a}
	}
	return out
}

func unready(addr string) routetable.Endpoint {
	f := false
	return routetable.Endpoint{Address: addr, Ready: &f}
}

func byAddr(t *testing.T, b *Balancer, addr string) *Endpoint {
	t.Helper()
	for _, e := range b.Endpoints() {
		if e.Addr() == addr {
			return e
		}
	}
	t.Fatalf("endpoint %s not in the set", addr)
	return nil
}

func approx(got, want float64) bool {
	return math.Abs(got-want) <= 1e-9*math.Max(math.Abs(want), 1)
}

func TestPair(t *testing.T) {
	for n := uint32(2); n <= 7; n++ {
		for i := range n {
			for j := range n {
				if i == j {
					continue
				}
				gi, gj := pair(pairValue(i, j, n), n)
				if gi != i || gj != j {
					t.Fatalf("pair(pairValue(%d,%d,%d)) = %d,%d", i, j, n, gi, gj)
				}
			}
		}
	}
	r := seeded(1)
	for range 10000 {
		n := uint32(2 + r()%50)
		i, j := pair(r(), n)
		if i == j || i >= n || j >= n {
			t.Fatalf("pair over %d gave %d,%d", n, i, j)
		}
	}
}

func TestPickErrors(t *testing.T) {
	clk := newFakeClock()
	b := New(Config{Clock: clk, Rand: constRand(0)})
	if _, err := b.Pick(); !errors.Is(err, ErrNoEndpoints) {
		t.Fatalf("empty balancer: got %v, want ErrNoEndpoints", err)
	}

	b.Update([]routetable.Endpoint{unready("a:1"), unready("b:1")})
	if _, err := b.Pick(); !errors.Is(err, ErrNoReadyEndpoints) {
		t.Fatalf("all unready: got %v, want ErrNoReadyEndpoints", err)
	}
	if n := b.ReadyCount(); n != 0 {
		t.Fatalf("ReadyCount = %d, want 0", n)
	}

	// All ready by spec but every breaker shut.
	b.Update(eps("a:1", "b:1", "c:1"))
	for _, e := range b.Endpoints() {
		for range DefaultMaxFailures {
			e.Start().Done(true)
		}
	}
	// Panic: every ready endpoint ejected, so Pick uses them anyway.
	if n := b.ReadyCount(); n != 0 {
		t.Fatalf("all ejected: ReadyCount = %d, want 0", n)
	}
	if e, err := b.Pick(); err != nil || e.State() != "ejected" {
		t.Fatalf("all ejected: got %v, %v; want an ejected endpoint (panic)", e, err)
	}
	if p := b.Panics(); p != 1 {
		t.Fatalf("Panics = %d, want 1", p)
	}

	b.Update(nil)
	if _, err := b.Pick(); !errors.Is(err, ErrNoEndpoints) {
		t.Fatalf("emptied: got %v, want ErrNoEndpoints", err)
	}
}

func TestPickSingle(t *testing.T) {
	b := New(Config{Clock: newFakeClock(), Rand: seeded(2)})
	b.Update(eps("only:1"))
	e := byAddr(t, b, "only:1")
	for i := range 20 {
		e.Start() // growing load must not matter with one endpoint
		got, err := b.Pick()
		if err != nil || got != e {
			t.Fatalf("pick %d: got %v, %v; want only:1", i, got, err)
		}
	}
	// One endpoint, ejected: it is still picked (panic) rather than failing
	// every request.
	b.Update(eps("other:1"))
	o := byAddr(t, b, "other:1")
	for range DefaultMaxFailures {
		o.Start().Done(true)
	}
	if got, err := b.Pick(); err != nil || got != o {
		t.Fatalf("single ejected endpoint: got %v, %v; want other:1 (panic)", got, err)
	}
	if b.Panics() != 1 || b.ReadyCount() != 0 {
		t.Fatalf("Panics = %d, ReadyCount = %d; want 1, 0", b.Panics(), b.ReadyCount())
	}
}

func TestP2CPicksLessLoaded(t *testing.T) {
	tests := []struct {
		name    string
		i, j    uint32 // the random pair
		pending [3]int
		want    int
	}{
		{"first less loaded", 0, 1, [3]int{0, 2, 0}, 0},
		{"second less loaded", 0, 1, [3]int{3, 1, 0}, 1},
		{"reversed pair, second less loaded", 2, 0, [3]int{1, 0, 4}, 0},
		{"tie goes to the first", 1, 0, [3]int{2, 2, 0}, 1},
		{"tie goes to the first, other order", 0, 1, [3]int{2, 2, 0}, 0},
		{"third ignored though idle", 0, 1, [3]int{1, 5, 0}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := New(Config{Clock: newFakeClock(), Rand: constRand(pairValue(tc.i, tc.j, 3))})
			b.Update(eps("a:1", "b:1", "c:1"))
			all := b.Endpoints()
			for k, n := range tc.pending {
				for range n {
					all[k].Start()
				}
			}
			got, err := b.Pick()
			if err != nil {
				t.Fatal(err)
			}
			if got != all[tc.want] {
				t.Fatalf("picked %s, want %s", got.Addr(), all[tc.want].Addr())
			}
		})
	}

	// With two endpoints the pair is always both: the loaded one never wins.
	b := New(Config{Clock: newFakeClock(), Rand: seeded(3)})
	b.Update(eps("busy:1", "idle:1"))
	busy := byAddr(t, b, "busy:1")
	busy.Start()
	for range 1000 {
		if got, _ := b.Pick(); got == busy {
			t.Fatal("picked the loaded endpoint of two")
		}
	}
}

func TestUnreadySpecNeverPicked(t *testing.T) {
	b := New(Config{Clock: newFakeClock(), Rand: seeded(4)})
	b.Update([]routetable.Endpoint{{Address: "a:1"}, unready("b:1"), {Address: "c:1"}})
	counts := map[string]int{}
	for range 3000 {
		e, err := b.Pick()
		if err != nil {
			t.Fatal(err)
		}
		counts[e.Addr()]++
	}
	if counts["b:1"] != 0 {
		t.Fatalf("unready endpoint picked %d times", counts["b:1"])
	}
	if counts["a:1"] == 0 || counts["c:1"] == 0 {
		t.Fatalf("ready endpoints not both picked: %v", counts)
	}
	if n := b.ReadyCount(); n != 2 {
		t.Fatalf("ReadyCount = %d, want 2", n)
	}
	if n := len(b.Endpoints()); n != 3 {
		t.Fatalf("Endpoints has %d, want 3 (unready included)", n)
	}
	u := byAddr(t, b, "b:1")
	if u.Ready() || u.State() != "pending" {
		t.Fatalf("unready endpoint: Ready=%v State=%q, want false, pending", u.Ready(), u.State())
	}
}

func TestPickPartlyEjected(t *testing.T) {
	// Most endpoints ejected: Pick's counting path must still find the ready
	// ones, and only them.
	b := New(Config{Clock: newFakeClock(), Rand: seeded(5)})
	var addrs []string
	for i := range 20 {
		addrs = append(addrs, fmt.Sprintf("10.0.0.%d:80", i))
	}
	b.Update(eps(addrs...))
	live := map[string]bool{"10.0.0.3:80": true, "10.0.0.17:80": true}
	for _, e := range b.Endpoints() {
		if !live[e.Addr()] {
			for range DefaultMaxFailures {
				e.Start().Done(true)
			}
		}
	}
	if n := b.ReadyCount(); n != 2 {
		t.Fatalf("ReadyCount = %d, want 2", n)
	}
	seen := map[string]int{}
	for range 2000 {
		e, err := b.Pick()
		if err != nil {
			t.Fatal(err)
		}
		if !live[e.Addr()] {
			t.Fatalf("picked ejected %s", e.Addr())
		}
		seen[e.Addr()]++
	}
	if len(seen) != 2 {
		t.Fatalf("picks = %v, want both live endpoints", seen)
	}
	// Load one of them: with two ready, P2C compares both every time.
	byAddr(t, b, "10.0.0.3:80").Start()
	for range 200 {
		if e, _ := b.Pick(); e.Addr() != "10.0.0.17:80" {
			t.Fatalf("picked loaded %s", e.Addr())
		}
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	b := New(Config{Rand: seeded(6)})
	var addrs []string
	for i := range 10 {
		addrs = append(addrs, fmt.Sprintf("10.0.0.%d:80", i))
	}
	b.Update(eps(addrs...))
	if n := testing.AllocsPerRun(1000, func() { _, _ = b.Pick() }); n != 0 {
		t.Fatalf("Pick allocates %v times per call", n)
	}
	// The counting path too: eject all but two.
	for _, e := range b.Endpoints()[2:] {
		for range DefaultMaxFailures {
			e.Start().Done(true)
		}
	}
	if n := testing.AllocsPerRun(1000, func() { _, _ = b.Pick() }); n != 0 {
		t.Fatalf("Pick (mostly ejected) allocates %v times per call", n)
	}
}

func TestUpdateKeepsState(t *testing.T) {
	clk := newFakeClock()
	b := New(Config{Clock: clk, Rand: seeded(7)})
	b.Update(eps("a:1", "b:1"))
	a := byAddr(t, b, "a:1")
	inflight := a.Start()
	for range 3 {
		a.Start().Done(true)
	}

	labels := map[string]string{"pod": "a-2"}
	b.Update([]routetable.Endpoint{{Address: "a:1", Labels: labels}, {Address: "c:1"}, {Address: "a:1", Weight: 9}})
	labels["pod"] = "mutated by the caller"
	if got := len(b.Endpoints()); got != 3-1 {
		t.Fatalf("set has %d endpoints, want 2 (duplicate dropped)", got)
	}
	if byAddr(t, b, "a:1") != a {
		t.Fatal("surviving address got a new *Endpoint")
	}
	if a.Pending() != 1 {
		t.Fatalf("pending = %d, want 1 kept across Update", a.Pending())
	}
	if s := a.Spec(); s.Labels["pod"] != "a-2" || s.Weight != 0 {
		t.Fatalf("Spec = %+v, want the first a:1 with its labels as given", s)
	}
	// Failures accrued before the Update still count: 3 + 4 = 7 ejects.
	for range 4 {
		a.Start().Done(true)
	}
	if a.State() != "ejected" {
		t.Fatalf("state = %q, want ejected (failure count kept)", a.State())
	}

	// Remove a; its in-flight attempt completes normally.
	b.Update(eps("c:1"))
	inflight.FirstByte()
	inflight.Done(false)
	inflight.Done(true) // idempotent
	if a.Pending() != 0 {
		t.Fatalf("pending on removed endpoint = %d, want 0", a.Pending())
	}
	for range 100 {
		if e, err := b.Pick(); err != nil || e.Addr() != "c:1" {
			t.Fatalf("Pick = %v, %v; want c:1", e, err)
		}
	}

	// Re-adding a is a fresh endpoint.
	b.Update(eps("c:1", "a:1"))
	if a2 := byAddr(t, b, "a:1"); a2 == a || a2.State() != "ready" {
		t.Fatalf("re-added endpoint: same=%v state=%q; want fresh and ready", a2 == a, a2.State())
	}

	// Readiness follows the spec of a kept endpoint.
	c := byAddr(t, b, "c:1")
	b.Update([]routetable.Endpoint{unready("c:1")})
	if byAddr(t, b, "c:1") != c || c.Ready() || c.State() != "pending" {
		t.Fatalf("c after unready Update: Ready=%v State=%q", c.Ready(), c.State())
	}
	if _, err := b.Pick(); !errors.Is(err, ErrNoReadyEndpoints) {
		t.Fatalf("Pick = %v, want ErrNoReadyEndpoints", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	b := New(Config{Breaker: routetable.Breaker{MinPenalty: routetable.Duration(time.Millisecond), MaxPenalty: routetable.Duration(5 * time.Millisecond)}})
	sets := [][]routetable.Endpoint{
		eps("a:1", "b:1", "c:1"),
		eps("b:1", "c:1", "d:1", "e:1"),
		{{Address: "a:1"}, unready("c:1"), {Address: "e:1"}},
	}
	b.Update(sets[0])

	var (
		mu   sync.Mutex
		seen = map[*Endpoint]bool{}
	)
	record := func(e *Endpoint) {
		mu.Lock()
		seen[e] = true
		mu.Unlock()
	}

	const workers, iterations = 8, 3000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 99))
			for range iterations {
				e, err := b.Pick()
				if err != nil {
					if !errors.Is(err, ErrNoReadyEndpoints) {
						t.Errorf("Pick: %v", err)
						return
					}
					continue
				}
				record(e)
				a := e.Start()
				if r.IntN(2) == 0 {
					a.FirstByte()
				}
				// c:1 always fails, so its breaker trips, probes and re-ejects
				// while the others are busy.
				a.Done(e.Addr() == "c:1" || r.IntN(4) == 0)
				if r.IntN(3) == 0 {
					a.Done(false) // idempotent, even concurrently with others
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 300 {
			b.Update(sets[i%len(sets)])
			for _, e := range b.Endpoints() {
				_ = e.State()
				_ = e.Cost()
				_ = e.Ready()
			}
			_ = b.ReadyCount()
		}
	})
	wg.Wait()

	for e := range seen {
		if p := e.Pending(); p != 0 {
			t.Errorf("%s: pending = %d after all attempts done", e.Addr(), p)
		}
	}
}
