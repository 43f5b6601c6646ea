package route

import (
	"fmt"
	"testing"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

// realisticService is a service with a canary split behind header, query, regex
// and method rules, in precedence order, the way the compiler emits them.
func realisticService() *routetable.Service {
	w := func(v uint32) *uint32 { return &v }
	split := []routetable.Backend{
		{Service: "web-primary.shop:80", Weight: w(90)},
		{Service: "web-canary.shop:80", Weight: w(10)},
	}
	canary := []routetable.Backend{{Service: "web-canary.shop:80"}}
	var rules []routetable.Rule
	for i, p := range []string{"/healthz", "/readyz", "/metrics"} {
		rules = append(rules, routetable.Rule{Route: "shop/web", RuleIndex: i,
			Match:    routetable.Match{PathType: routetable.PathExact, Path: p},
			Backends: split})
	}
	rules = append(rules,
		routetable.Rule{Route: "shop/web", RuleIndex: 3, Match: routetable.Match{PathType: routetable.PathPrefix, Path: "/api/v2",
			Headers: []routetable.ValueMatch{{Name: "x-canary", Value: "always"}}}, Backends: canary},
		routetable.Rule{Route: "shop/web", RuleIndex: 4, Match: routetable.Match{PathType: routetable.PathPrefix, Path: "/api",
			Method: "POST", QueryParams: []routetable.ValueMatch{{Type: routetable.ValueRegex, Name: "tenant", Value: "t-[0-9]+"}}}, Backends: canary},
		routetable.Rule{Route: "shop/web", RuleIndex: 5, Match: routetable.Match{PathType: routetable.PathPrefix, Path: "/api",
			Headers: []routetable.ValueMatch{{Type: routetable.ValueRegex, Name: "cookie", Value: ".*canary=1.*"}}}, Backends: canary},
		routetable.Rule{Route: "shop/web", RuleIndex: 6, Match: routetable.Match{PathType: routetable.PathPrefix, Path: "/api"}, Backends: split},
		routetable.Rule{Route: "shop/web", RuleIndex: 7, Match: routetable.Match{PathType: routetable.PathPrefix, Path: "/"}, Backends: split},
	)
	return &routetable.Service{Name: "web", Namespace: "shop", Port: 80, Rules: rules}
}

var benchRequests = []*fakeRequest{
	req("GET /healthz"),
	req("GET /api/v2/items?page=2", "X-Canary: always"),
	req("POST /api/orders?tenant=t-42"),
	req("GET /api/orders", "Cookie: session=abc; canary=1"),
	req("GET /api/orders?page=3", "Accept: application/json"),
	req("GET /static/app.js"),
}

func TestMatchAndPickDoNotAllocate(t *testing.T) {
	tb := mustTable(t, realisticService())
	rnd := seeded(1)
	ready := func(k string) bool { return k != "nothing" }
	for _, r := range benchRequests {
		if tb.Match(r) == nil {
			t.Fatalf("%s %s did not match", r.method, r.path)
		}
		if n := testing.AllocsPerRun(1000, func() { tb.Match(r) }); n != 0 {
			t.Errorf("Match(%s %s?%s) allocates %v times", r.method, r.path, r.query, n)
		}
	}
	rule := tb.Match(req("GET /"))
	for _, rd := range []func(string) bool{nil, ready} {
		if n := testing.AllocsPerRun(1000, func() { rule.PickBackend(rd, rnd) }); n != 0 {
			t.Errorf("PickBackend(ready=%v) allocates %v times", rd != nil, n)
		}
	}
	// Sixteen backends with a ready func still fit the stack buffer.
	bs := make([]routetable.Backend, 16)
	for i := range bs {
		bs[i] = backend(fmt.Sprintf("b%d", i), uint32(i*1000))
	}
	r16 := ruleWith(t, bs...)
	if n := testing.AllocsPerRun(1000, func() { r16.PickBackend(ready, rnd) }); n != 0 {
		t.Errorf("PickBackend over 16 backends allocates %v times", n)
	}
}

func BenchmarkMatch(b *testing.B) {
	tb := mustTable(b, realisticService())
	for _, r := range benchRequests {
		b.Run(fmt.Sprintf("%s_%s", r.method, r.path), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if tb.Match(r) == nil {
					b.Fatal("no match")
				}
			}
		})
	}
}

func BenchmarkPickBackend(b *testing.B) {
	for _, n := range []int{1, 2, 16} {
		bs := make([]routetable.Backend, n)
		for i := range bs {
			bs[i] = backend(fmt.Sprintf("b%d.shop:80", i), uint32(10*(i+1)))
		}
		r := ruleWith(b, bs...)
		rnd := seeded(1)
		ready := func(string) bool { return true }
		b.Run(fmt.Sprintf("backends=%d/ready=nil", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r.PickBackend(nil, rnd)
			}
		})
		b.Run(fmt.Sprintf("backends=%d/ready=func", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r.PickBackend(ready, rnd)
			}
		})
	}
}

func BenchmarkMirrors(b *testing.B) {
	tb := mustTable(b, svcWith(routetable.Rule{Filters: routetable.Filters{Mirrors: []routetable.Mirror{
		{Backend: "m.shop:80", Numerator: 10, Denominator: 100},
	}}}))
	r := &tb.Rules()[0]
	rnd := seeded(1)
	b.ReportAllocs()
	for b.Loop() {
		r.Mirrors(rnd)
	}
}
