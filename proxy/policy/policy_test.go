package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	webID      = "web.shop.serviceaccount.identity.sluice.cluster.local"
	frontendID = "frontend.shop.serviceaccount.identity.sluice.cluster.local"
	otherNSID  = "web.other.serviceaccount.identity.sluice.cluster.local"
)

var (
	inCluster   = netip.MustParseAddr("10.1.2.3")
	inCluster6  = netip.MustParseAddr("fd00::1")
	mapped      = netip.MustParseAddr("::ffff:10.1.2.3")
	loopback    = netip.MustParseAddr("127.0.0.1")
	loopback6   = netip.MustParseAddr("::1")
	outside     = netip.MustParseAddr("203.0.113.7")
	outside6    = netip.MustParseAddr("2001:db8::7")
	customNet   = netip.MustParseAddr("198.51.100.9")
	customNets  = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	zonedInside = netip.MustParseAddr("fd00::1%eth0")
)

func TestDefaultPolicies(t *testing.T) {
	type client struct {
		addr netip.Addr
		id   string
	}
	plainIn := client{inCluster, ""}
	tlsIn := client{inCluster, webID}
	plainOut := client{outside, ""}
	tlsOut := client{outside, webID}
	plainLoop := client{loopback, ""}
	tlsLoop6 := client{loopback6, webID}
	plainIn6 := client{inCluster6, ""}
	tlsOut6 := client{outside6, frontendID}
	plainMapped := client{mapped, ""}
	plainZoned := client{zonedInside, ""}

	tests := []struct {
		policy string
		nets   []netip.Prefix
		allow  []client
		deny   []client
		audit  bool
	}{
		{policy: AllUnauthenticated,
			allow: []client{plainIn, tlsIn, plainOut, tlsOut, plainLoop, tlsLoop6, plainIn6, tlsOut6, plainMapped}},
		{policy: AllAuthenticated,
			allow: []client{tlsIn, tlsOut, tlsLoop6, tlsOut6},
			deny:  []client{plainIn, plainOut, plainLoop, plainIn6, plainMapped}},
		{policy: ClusterUnauthenticated,
			allow: []client{plainIn, tlsIn, plainLoop, tlsLoop6, plainIn6, plainMapped, plainZoned},
			deny:  []client{plainOut, tlsOut, tlsOut6}},
		{policy: ClusterAuthenticated,
			allow: []client{tlsIn, tlsLoop6},
			deny:  []client{plainIn, plainOut, tlsOut, plainLoop, plainIn6, tlsOut6, plainMapped}},
		{policy: ClusterUnauthenticated, nets: customNets,
			allow: []client{{customNet, ""}, plainLoop, tlsLoop6},
			deny:  []client{plainIn, tlsIn, plainOut, plainIn6}},
		{policy: ClusterAuthenticated, nets: customNets,
			allow: []client{{customNet, webID}, tlsLoop6},
			deny:  []client{{customNet, ""}, tlsIn, tlsOut}},
		{policy: Deny,
			deny: []client{plainIn, tlsIn, plainOut, tlsOut, plainLoop, tlsLoop6, plainIn6, tlsOut6}},
		{policy: Audit, audit: true,
			allow: []client{plainIn, tlsIn, plainOut, tlsOut, plainLoop, tlsLoop6, plainIn6, tlsOut6}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/%v", tc.policy, tc.nets), func(t *testing.T) {
			s, err := Default(tc.policy, tc.nets)
			if err != nil {
				t.Fatalf("Default(%q): %v", tc.policy, err)
			}
			if s.Name != tc.policy || s.Kind != KindDefault || s.Protocol != "" || s.Audit != tc.audit {
				t.Fatalf("Default(%q) = name %q kind %q protocol %q audit %v", tc.policy, s.Name, s.Kind, s.Protocol, s.Audit)
			}
			for _, c := range tc.allow {
				d := s.Authorize(c.addr, c.id)
				if !d.Allowed {
					t.Errorf("%s denied %s (identity %q): %s", tc.policy, c.addr, c.id, d.Reason)
					continue
				}
				if d.Audit != tc.audit {
					t.Errorf("%s allowed %s (identity %q) with audit %v, want %v", tc.policy, c.addr, c.id, d.Audit, tc.audit)
				}
				wantAuthz := tc.policy
				if tc.audit {
					wantAuthz = Audit
				}
				if d.Authorization != wantAuthz || d.AuthorizationKind != KindDefault || d.Server != tc.policy || d.ServerKind != KindDefault {
					t.Errorf("%s allowed %s with labels authz %s/%s srv %s/%s", tc.policy, c.addr, d.AuthorizationKind, d.Authorization, d.ServerKind, d.Server)
				}
			}
			for _, c := range tc.deny {
				d := s.Authorize(c.addr, c.id)
				if d.Allowed {
					t.Errorf("%s allowed %s (identity %q) by %q", tc.policy, c.addr, c.id, d.Authorization)
					continue
				}
				if d.Reason == "" || !strings.Contains(d.Reason, tc.policy) || d.Authorization != "" {
					t.Errorf("%s denied %s with reason %q, authorization %q", tc.policy, c.addr, d.Reason, d.Authorization)
				}
			}
		})
	}
}

func TestDefaultUnknown(t *testing.T) {
	for _, name := range []string{"", "allow", "All-Unauthenticated", "deny "} {
		if _, err := Default(name, nil); err == nil {
			t.Errorf("Default(%q) succeeded", name)
		}
	}
}

func TestDefaultDoesNotShareState(t *testing.T) {
	a, _ := Default(AllUnauthenticated, nil)
	a.Authorizations[0].Networks[0].CIDR = netip.MustParsePrefix("10.0.0.0/8")
	b, _ := Default(AllUnauthenticated, nil)
	if d := b.Authorize(outside, ""); !d.Allowed {
		t.Fatalf("modifying one default policy changed another: %s", d.Reason)
	}
}

func TestAuthentication(t *testing.T) {
	tests := []struct {
		name  string
		auth  Authentication
		allow []string
		deny  []string
	}{
		{name: "unauthenticated", auth: Authentication{Unauthenticated: true},
			allow: []string{"", webID}},
		{name: "exact", auth: Authentication{Identities: []string{webID}},
			allow: []string{webID},
			deny:  []string{"", frontendID, otherNSID, "x" + webID, webID + ".evil"}},
		{name: "any", auth: Authentication{Identities: []string{"*"}},
			allow: []string{webID, otherNSID, "a"},
			deny:  []string{""}},
		{name: "wildcard identity", auth: Authentication{Identities: []string{"*.shop.serviceaccount.identity.sluice.cluster.local"}},
			allow: []string{webID, frontendID},
			deny:  []string{"", otherNSID, "shop.serviceaccount.identity.sluice.cluster.local", "xshop.serviceaccount.identity.sluice.cluster.local"}},
		{name: "suffix with dot", auth: Authentication{Suffixes: []string{".shop.serviceaccount.identity.sluice.cluster.local"}},
			allow: []string{webID, frontendID},
			deny:  []string{"", otherNSID, "evilshop.serviceaccount.identity.sluice.cluster.local"}},
		{name: "suffix without dot", auth: Authentication{Suffixes: []string{"shop.serviceaccount.identity.sluice.cluster.local"}},
			allow: []string{webID, frontendID, "shop.serviceaccount.identity.sluice.cluster.local"},
			deny:  []string{"", otherNSID, "evilshop.serviceaccount.identity.sluice.cluster.local"}},
		{name: "empty suffix", auth: Authentication{Suffixes: []string{""}},
			allow: []string{webID, otherNSID},
			deny:  []string{""}},
		{name: "star suffix", auth: Authentication{Suffixes: []string{"*"}},
			allow: []string{webID},
			deny:  []string{""}},
		{name: "exact or suffix", auth: Authentication{Identities: []string{otherNSID}, Suffixes: []string{".shop.serviceaccount.identity.sluice.cluster.local"}},
			allow: []string{webID, otherNSID},
			deny:  []string{"", "db.other.serviceaccount.identity.sluice.cluster.local"}},
		{name: "nothing", auth: Authentication{},
			deny: []string{"", webID}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, id := range tc.allow {
				if !tc.auth.Matches(id) {
					t.Errorf("%+v does not match %q", tc.auth, id)
				}
			}
			for _, id := range tc.deny {
				if tc.auth.Matches(id) {
					t.Errorf("%+v matches %q", tc.auth, id)
				}
			}
		})
	}
}

func TestNetworkExcept(t *testing.T) {
	s := Server{Name: "web", Kind: KindServer, Authorizations: []Authorization{{
		Name: "pods", Kind: KindAuthorizationPolicy,
		Networks: []Network{
			{CIDR: netip.MustParsePrefix("10.0.0.0/8"), Except: []netip.Prefix{
				netip.MustParsePrefix("10.1.0.0/16"),
				netip.MustParsePrefix("10.2.3.4/32"),
			}},
			{CIDR: netip.MustParsePrefix("fd00::/8"), Except: []netip.Prefix{netip.MustParsePrefix("fd00:bad::/32")}},
			// A second network covering an excepted range allows it again.
			{CIDR: netip.MustParsePrefix("10.1.1.0/24")},
		},
		Auth: Authentication{Unauthenticated: true},
	}}}
	tests := []struct {
		addr  string
		allow bool
	}{
		{"10.0.0.1", true},
		{"10.2.3.5", true},
		{"10.255.255.255", true},
		{"::ffff:10.9.9.9", true},
		{"fd00::1", true},
		{"10.1.0.1", false},
		{"10.1.255.1", false},
		{"10.2.3.4", false},
		{"::ffff:10.2.3.4", false},
		{"fd00:bad::1", false},
		{"11.0.0.1", false},
		{"10.1.1.7", true},
		{"fe80::1%eth0", false},
	}
	for _, tc := range tests {
		d := s.Authorize(netip.MustParseAddr(tc.addr), "")
		if d.Allowed != tc.allow {
			t.Errorf("client %s: allowed %v, want %v (%s)", tc.addr, d.Allowed, tc.allow, d.Reason)
		}
		if d.Allowed && (d.Authorization != "pods" || d.AuthorizationKind != KindAuthorizationPolicy || d.Server != "web" || d.ServerKind != KindServer) {
			t.Errorf("client %s: labels %+v", tc.addr, d)
		}
	}
}

func TestNetworksAndIdentityBothRequired(t *testing.T) {
	s := Server{Name: "web", Kind: KindServer, Authorizations: []Authorization{{
		Name: "frontend-from-pods", Kind: KindAuthorizationPolicy,
		Networks: []Network{{CIDR: netip.MustParsePrefix("10.0.0.0/8")}},
		Auth:     Authentication{Identities: []string{frontendID}},
	}}}
	tests := []struct {
		addr  netip.Addr
		id    string
		allow bool
	}{
		{inCluster, frontendID, true},
		{inCluster, webID, false},
		{inCluster, "", false},
		{outside, frontendID, false},
		{loopback, frontendID, false}, // loopback is only implicit in the cluster-* defaults
	}
	for _, tc := range tests {
		if d := s.Authorize(tc.addr, tc.id); d.Allowed != tc.allow {
			t.Errorf("client %s identity %q: allowed %v, want %v", tc.addr, tc.id, d.Allowed, tc.allow)
		}
	}
}

func TestFirstMatchingAuthorizationNamesTheDecision(t *testing.T) {
	def, _ := Default(AllUnauthenticated, nil)
	s := Server{Name: "web", Kind: KindServer, Authorizations: append([]Authorization{{
		Name: "frontend", Kind: KindAuthorizationPolicy,
		Auth: Authentication{Identities: []string{frontendID}},
	}}, def.Authorizations...)}
	if d := s.Authorize(outside, frontendID); d.Authorization != "frontend" || d.AuthorizationKind != KindAuthorizationPolicy {
		t.Errorf("frontend matched %s/%s, want authorizationpolicy/frontend", d.AuthorizationKind, d.Authorization)
	}
	if d := s.Authorize(outside, ""); d.Authorization != AllUnauthenticated || d.AuthorizationKind != KindDefault {
		t.Errorf("plain client matched %s/%s, want default/all-unauthenticated", d.AuthorizationKind, d.Authorization)
	}
}

func TestAuditServer(t *testing.T) {
	// A Server with accessPolicy audit: its AuthorizationPolicies decide
	// normally, everything else is allowed and flagged.
	s := Server{Name: "web", Kind: KindServer, Audit: true, Authorizations: []Authorization{{
		Name: "frontend", Kind: KindAuthorizationPolicy,
		Auth: Authentication{Identities: []string{frontendID}},
	}}}
	d := s.Authorize(inCluster, frontendID)
	if !d.Allowed || d.Audit || d.Authorization != "frontend" || d.Reason != "" {
		t.Errorf("authorized client: %+v", d)
	}
	d = s.Authorize(outside, "")
	if !d.Allowed || !d.Audit || d.Authorization != Audit || d.AuthorizationKind != KindDefault {
		t.Errorf("unauthorized client under audit: %+v", d)
	}
	if !strings.HasPrefix(d.Reason, "audit: unauthorized: server/web") || !strings.Contains(d.Reason, outside.String()) {
		t.Errorf("audit reason %q", d.Reason)
	}
	s.Audit = false
	if d := s.Authorize(outside, ""); d.Allowed || d.Audit {
		t.Errorf("without audit the client is allowed: %+v", d)
	}
}

func TestDenyReason(t *testing.T) {
	s := Server{Name: "web", Kind: KindServer}
	d := s.Authorize(mapped, webID)
	want := "unauthorized: server/web allows no client at 10.1.2.3 with identity " + webID
	if d.Allowed || d.Reason != want {
		t.Errorf("got %+v, want reason %q", d, want)
	}
	d = s.Authorize(outside, "")
	if !strings.HasSuffix(d.Reason, "with no identity") {
		t.Errorf("plain-text reason %q", d.Reason)
	}
}

func TestEvaluator(t *testing.T) {
	var zero Evaluator
	if d := zero.Authorize(loopback, ""); d.Allowed || d.Reason == "" {
		t.Errorf("zero Evaluator: %+v", d)
	}
	if zero.Server() != nil {
		t.Error("zero Evaluator has a server")
	}

	allow, _ := Default(AllUnauthenticated, nil)
	deny, _ := Default(Deny, nil)
	e := NewEvaluator(allow)
	if d := e.Authorize(outside, ""); !d.Allowed {
		t.Fatalf("all-unauthenticated denied: %s", d.Reason)
	}
	e.Store(deny)
	if d := e.Authorize(outside, ""); d.Allowed || d.Server != Deny {
		t.Fatalf("after Store(deny): %+v", d)
	}
	if got := e.Server().Name; got != Deny {
		t.Errorf("Server() = %q", got)
	}
}

// TestEvaluatorConcurrentSwap checks under -race that checks racing with
// policy swaps see one whole policy or the other.
func TestEvaluatorConcurrentSwap(t *testing.T) {
	allow, _ := Default(AllUnauthenticated, nil)
	deny, _ := Default(Deny, nil)
	e := NewEvaluator(allow)
	const n = 2000
	var wg sync.WaitGroup
	errs := make(chan string, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				d := e.Authorize(outside, "")
				if d.Allowed != (d.Server == AllUnauthenticated) {
					errs <- fmt.Sprintf("mixed decision %+v", d)
					return
				}
			}
		}()
	}
	for i := range n {
		if i%2 == 0 {
			e.Store(deny)
		} else {
			e.Store(allow)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestAuthorizeAllowDoesNotAllocate(t *testing.T) {
	s, _ := Default(ClusterAuthenticated, nil)
	e := NewEvaluator(s)
	allocs := testing.AllocsPerRun(100, func() {
		if d := e.Authorize(loopback6, webID); !d.Allowed {
			t.Fatal("denied")
		}
	})
	if allocs != 0 {
		t.Errorf("an allowed check allocates %v times", allocs)
	}
}

func BenchmarkAuthorize(b *testing.B) {
	s := Server{Name: "web", Kind: KindServer, Authorizations: []Authorization{
		{Name: "a", Kind: KindAuthorizationPolicy, Networks: ClusterNetworks(nil), Auth: Authentication{Identities: []string{otherNSID, frontendID}}},
		{Name: "b", Kind: KindAuthorizationPolicy, Auth: Authentication{Suffixes: []string{".shop.serviceaccount.identity.sluice.cluster.local"}}},
	}}
	e := NewEvaluator(s)
	b.ReportAllocs()
	for b.Loop() {
		if !e.Authorize(inCluster, webID).Allowed {
			b.Fatal("denied")
		}
	}
}
