package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/sluicehq/sluice/mesh/api/certs"
	"github.com/sluicehq/sluice/mesh/api/meshv1"
	"github.com/sluicehq/sluice/mesh/identity"
)

// countingIdentity is the real identity server, counting calls. The server
// can be swapped for one issuing another lifetime.
type countingIdentity struct {
	meshv1.UnimplementedIdentityServer
	cur       atomic.Pointer[identity.Server]
	calls, ok atomic.Int64
}

func (c *countingIdentity) Certify(ctx context.Context, req *meshv1.CertifyRequest) (*meshv1.CertifyResponse, error) {
	c.calls.Add(1)
	resp, err := c.cur.Load().Certify(ctx, req)
	if err == nil {
		c.ok.Add(1)
	}
	return resp, err
}

// identityEnv is a real CA and identity server on loopback.
type identityEnv struct {
	ca     *identity.CA
	tokens *identity.StaticTokens
	srv    *countingIdentity
	conn   *grpc.ClientConn
}

func newIdentityEnv(t *testing.T, lifetime time.Duration) *identityEnv {
	t.Helper()
	ca, err := identity.LoadOrCreate(t.TempDir(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	env := &identityEnv{ca: ca, tokens: &identity.StaticTokens{}}
	env.srv = &countingIdentity{}
	env.setLifetime(lifetime)
	gs := grpc.NewServer()
	meshv1.RegisterIdentityServer(gs, env.srv)
	addr, _ := serve(t, gs, "127.0.0.1:0")
	env.conn = dial(t, addr)
	return env
}

// setLifetime makes the server issue leaves valid for lifetime from now on.
func (env *identityEnv) setLifetime(lifetime time.Duration) {
	env.srv.cur.Store(identity.NewServer(env.ca, env.tokens, lifetime))
}

// client makes an Identity for sa.shop with a token source reading *token.
func (env *identityEnv) client(t *testing.T, sa string, token *atomic.Pointer[[]byte], tune func(*IdentityOptions)) *Identity {
	t.Helper()
	opts := IdentityOptions{
		Conn: env.conn,
		Name: identity.Name(sa, "shop", "", ""),
		Token: func() ([]byte, error) {
			if tok := token.Load(); tok != nil {
				return *tok, nil
			}
			return nil, errors.New("token file is missing")
		},
		TrustAnchorsPEM: env.ca.TrustAnchorPEM(),
		Logger:          (&logRecorder{}).logger(),
	}
	if tune != nil {
		tune(&opts)
	}
	id, err := NewIdentity(opts)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (env *identityEnv) issue(t *testing.T, sa string) *atomic.Pointer[[]byte] {
	t.Helper()
	tok, err := env.tokens.Issue(identity.Name(sa, "shop", "", ""))
	if err != nil {
		t.Fatal(err)
	}
	var p atomic.Pointer[[]byte]
	p.Store(&tok)
	return &p
}

func TestIdentityCertified(t *testing.T) {
	env := newIdentityEnv(t, 0)
	var notAfters []time.Time
	var mu sync.Mutex
	web := env.client(t, "web", env.issue(t, "web"), func(o *IdentityOptions) {
		o.OnCertified = func(na time.Time) {
			mu.Lock()
			notAfters = append(notAfters, na)
			mu.Unlock()
		}
	})
	api := env.client(t, "api", env.issue(t, "api"), nil)

	if ok, reason := web.Ready(); ok || reason != "not certified yet" {
		t.Fatalf("Ready before Run = %v, %q; want false, \"not certified yet\"", ok, reason)
	}
	if c, err := web.GetCertificate(nil); c != nil || err == nil {
		t.Fatalf("GetCertificate before Run = %v, %v; want an error", c, err)
	}
	runInBackground(t, web.Run)
	runInBackground(t, api.Run)
	for _, id := range []*Identity{web, api} {
		eventually(t, id.Name()+" to be ready", func() bool { ok, _ := id.Ready(); return ok })
	}

	c := web.Certificate()
	if got := c.Leaf.DNSNames; len(got) != 1 || got[0] != web.Name() {
		t.Errorf("leaf names %q, want %q", got, web.Name())
	}
	if d := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore); d < 23*time.Hour || d > 25*time.Hour {
		t.Errorf("leaf lifetime %s, want the default 24 h", d)
	}
	mu.Lock()
	if len(notAfters) != 1 || !notAfters[0].Equal(c.Leaf.NotAfter) {
		t.Errorf("OnCertified got %v, want [%v]", notAfters, c.Leaf.NotAfter)
	}
	mu.Unlock()
	if env.srv.calls.Load() != 2 {
		t.Errorf("Certify called %d times for two proxies, want 2 (no refresh due for 16 h)", env.srv.calls.Load())
	}

	// The certificates work for mesh TLS both ways: web calls api.
	clientConn, serverConn := net.Pipe()
	defer clientConn.Close()
	defer serverConn.Close()
	srv := tls.Server(serverConn, certs.ServerConfig(api.Roots(), api.GetCertificate))
	cli := tls.Client(clientConn, certs.ClientConfig(web.Roots(), api.Name(), web.GetClientCertificate))
	errs := make(chan error, 1)
	go func() { errs <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errs; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	if got := certs.PeerIdentity(srv.ConnectionState()); got != web.Name() {
		t.Errorf("server saw client identity %q, want %q", got, web.Name())
	}
	if got := certs.PeerIdentity(cli.ConnectionState()); got != api.Name() {
		t.Errorf("client saw server identity %q, want %q", got, api.Name())
	}
}

func TestIdentityWrongToken(t *testing.T) {
	env := newIdentityEnv(t, 0)
	env.issue(t, "web")
	wrong := []byte("not-the-token")
	var tok atomic.Pointer[[]byte]
	tok.Store(&wrong)
	id := env.client(t, "web", &tok, nil)
	runInBackground(t, id.Run)
	var reason string
	eventually(t, "the refusal to be reported", func() bool {
		var ok bool
		ok, reason = id.Ready()
		if ok {
			t.Fatal("ready with a wrong token")
		}
		return reason != "not certified yet"
	})
	for _, want := range []string{"not certified yet", "Unauthenticated", "not the bootstrap token"} {
		if !strings.Contains(reason, want) {
			t.Errorf("reason %q does not contain %q", reason, want)
		}
	}
	if id.Certificate() != nil {
		t.Error("a certificate was installed despite the refusal")
	}
}

func TestNewIdentityValidates(t *testing.T) {
	env := newIdentityEnv(t, 0)
	token := func() ([]byte, error) { return []byte("x"), nil }
	anchors := env.ca.TrustAnchorPEM()
	tests := []struct {
		name string
		opts IdentityOptions
		want string
	}{
		{"no conn", IdentityOptions{Name: "a.b", Token: token, TrustAnchorsPEM: anchors}, "Conn"},
		{"no name", IdentityOptions{Conn: env.conn, Token: token, TrustAnchorsPEM: anchors}, "Name"},
		{"no token", IdentityOptions{Conn: env.conn, Name: "a.b", TrustAnchorsPEM: anchors}, "Token"},
		{"bad refresh", IdentityOptions{Conn: env.conn, Name: "a.b", Token: token, TrustAnchorsPEM: anchors, Refresh: 1.5}, "refresh"},
		{"bad anchors", IdentityOptions{Conn: env.conn, Name: "a.b", Token: token, TrustAnchorsPEM: []byte("junk")}, "trust anchors"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewIdentity(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewIdentity = %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

// fakeClock is a time line that moves only when the test says so.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, fakeWaiter{at: c.now.Add(d), ch: ch})
	return ch
}

// Set moves the clock to t and fires the waits that ran out.
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at.After(t) {
			kept = append(kept, w)
			continue
		}
		w.ch <- t
	}
	c.waiters = kept
}

// waiting returns the pending wait deadlines.
func (c *fakeClock) waiting() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []time.Time
	for _, w := range c.waiters {
		out = append(out, w.at)
	}
	return out
}

// nextWait waits until exactly one wait is pending and returns its deadline.
func (c *fakeClock) nextWait(t *testing.T) time.Time {
	t.Helper()
	var at time.Time
	eventually(t, "Run to wait on the clock", func() bool {
		w := c.waiting()
		if len(w) > 1 {
			t.Fatalf("%d waits pending, want 1", len(w))
		}
		if len(w) == 1 {
			at = w[0]
			return true
		}
		return false
	})
	return at
}

func TestIdentityRefreshAt70Percent(t *testing.T) {
	// One-hour leaves first; the CA and certificate verification use the
	// real time, so the fake clock must not pass a leaf's expiry before the
	// test means it to.
	env := newIdentityEnv(t, time.Hour)
	tok := env.issue(t, "web")
	// The clock starts now: the CA and certificate verification use the real
	// time, the proxy's schedule uses this one.
	clock := &fakeClock{now: time.Now()}
	id := env.client(t, "web", tok, func(o *IdentityOptions) {
		o.Clock = clock.Now
		o.After = clock.After
	})
	runInBackground(t, id.Run)

	// First certificate; the renewal is scheduled at 70 % of its lifetime.
	at := clock.nextWait(t)
	first := id.Certificate()
	if first == nil {
		t.Fatal("waiting for a renewal without a certificate")
	}
	received := clock.Now()
	lifetime := first.Leaf.NotAfter.Sub(received)
	if want := received.Add(time.Duration(float64(lifetime) * 0.7)); !at.Equal(want) {
		t.Fatalf("renewal scheduled at %s after receipt, want %s (70%% of %s)", at.Sub(received), want.Sub(received), lifetime)
	}
	clock.Set(at.Add(-time.Second))
	if n := env.srv.calls.Load(); n != 1 {
		t.Fatalf("Certify called %d times before the renewal was due", n)
	}

	// The renewal brings a new certificate with a new key.
	clock.Set(at)
	eventually(t, "the renewal", func() bool { return id.Certificate() != first })
	second := id.Certificate()
	if second.PrivateKey == first.PrivateKey || second.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
		t.Error("the renewal reused the key or the certificate")
	}
	if ok, reason := id.Ready(); !ok {
		t.Fatalf("not ready after renewal: %s", reason)
	}

	// The token is revoked: the next renewal fails, and is retried with
	// backoff while the current certificate stays in use.
	at = clock.nextWait(t)
	env.tokens.Remove(id.Name())
	clock.Set(at)
	retry := clock.nextWait(t)
	if d := retry.Sub(at); d < MinRetryBackoff/2 || d > MinRetryBackoff {
		t.Errorf("first retry after %s, want within [%s, %s]", d, MinRetryBackoff/2, MinRetryBackoff)
	}
	if id.Certificate() != second {
		t.Fatal("a failed renewal replaced the certificate")
	}
	if ok, reason := id.Ready(); !ok {
		t.Fatalf("not ready while the current certificate is valid: %s", reason)
	}

	// The certificate expires before a renewal succeeds: not ready, and why.
	clock.Set(second.Leaf.NotAfter)
	ok, reason := id.Ready()
	if ok || !strings.Contains(reason, "expired") || !strings.Contains(reason, "Unauthenticated") {
		t.Fatalf("Ready after expiry = %v, %q; want false naming the expiry and the refusal", ok, reason)
	}

	// A rotated token is read on the next attempt, which succeeds (with a
	// longer leaf, valid at the fake clock's time).
	env.setLifetime(24 * time.Hour)
	fresh, err := env.tokens.Issue(id.Name())
	if err != nil {
		t.Fatal(err)
	}
	tok.Store(&fresh)
	clock.Set(clock.nextWait(t))
	eventually(t, "recovery", func() bool { ok, _ := id.Ready(); return ok })
	if id.Certificate() == second {
		t.Error("ready again without a new certificate")
	}
}

func TestIdentityShortLifetimeRotates(t *testing.T) {
	env := newIdentityEnv(t, 3*time.Second)
	id := env.client(t, "web", env.issue(t, "web"), nil)
	runInBackground(t, id.Run)
	eventually(t, "the first certificate", func() bool { return id.Certificate() != nil })
	seen := map[string]bool{}
	eventually(t, "two renewals", func() bool {
		if c := id.Certificate(); c != nil {
			seen[c.Leaf.SerialNumber.String()] = true
		}
		return len(seen) >= 3
	})
	if ok, reason := id.Ready(); !ok {
		t.Errorf("not ready after renewals: %s", reason)
	}
	if n := env.srv.ok.Load(); n < 3 {
		t.Errorf("%d certificates issued, want at least 3", n)
	}
}
