package controlplane

import (
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/mesh/api/meshv1"
	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/proxy/policy"
)

func TestServerFromProto(t *testing.T) {
	meshTLS := func(ids, suffixes []string) *meshv1.Authorization_MeshTls {
		return &meshv1.Authorization_MeshTls{MeshTls: &meshv1.MeshTLS{Identities: ids, Suffixes: suffixes}}
	}
	unauth := &meshv1.Authorization_Unauthenticated{Unauthenticated: &meshv1.Unauthenticated{}}
	tests := []struct {
		name    string
		in      *meshv1.InboundServer
		want    policy.Server
		wantErr string
	}{
		{
			name: "a default policy with no Server",
			in:   &meshv1.InboundServer{DefaultPolicy: "deny"},
			want: policy.Server{Name: "deny", Kind: policy.KindDefault},
		},
		{
			name: "a Server with its labels and authorizations",
			in: &meshv1.InboundServer{
				Protocol: meshv1.Protocol_PROTOCOL_OPAQUE,
				Labels:   map[string]string{"srv_name": "db", "srv_kind": "server"},
				Authorizations: []*meshv1.Authorization{
					{
						Networks:       []*meshv1.Network{{Cidr: "10.0.0.0/8", Except: []string{"10.1.0.0/16", "10.2.3.4"}}},
						Authentication: meshTLS([]string{"web.shop.serviceaccount.identity.sluice.cluster.local"}, []string{".ops.serviceaccount.identity.sluice.cluster.local"}),
						Labels:         map[string]string{"authz_name": "web-to-db", "authz_kind": "authorizationpolicy"},
					},
					{Networks: []*meshv1.Network{{Cidr: "192.0.2.1"}, {Cidr: "::ffff:198.51.100.1"}, {Cidr: "::ffff:203.0.113.0/120"}}, Authentication: unauth, Labels: map[string]string{"authz_name": "probes", "authz_kind": "default"}},
				},
			},
			want: policy.Server{
				Name: "db", Kind: "server", Protocol: routetable.ProtocolOpaque,
				Authorizations: []policy.Authorization{
					{
						Name: "web-to-db", Kind: "authorizationpolicy",
						Networks: []policy.Network{{CIDR: netip.MustParsePrefix("10.0.0.0/8"), Except: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("10.2.3.4/32")}}},
						Auth:     policy.Authentication{Identities: []string{"web.shop.serviceaccount.identity.sluice.cluster.local"}, Suffixes: []string{".ops.serviceaccount.identity.sluice.cluster.local"}},
					},
					{
						Name: "probes", Kind: "default",
						Networks: []policy.Network{{CIDR: netip.MustParsePrefix("192.0.2.1/32")}, {CIDR: netip.MustParsePrefix("198.51.100.1/32")}, {CIDR: netip.MustParsePrefix("203.0.113.0/24")}},
						Auth:     policy.Authentication{Unauthenticated: true},
					},
				},
			},
		},
		{
			name: "an audit authorization makes the Server audit",
			in: &meshv1.InboundServer{
				Labels: map[string]string{"srv_name": "web"},
				Authorizations: []*meshv1.Authorization{
					{Authentication: meshTLS([]string{"a.id"}, nil), Labels: map[string]string{"authz_name": "a"}},
					{Authentication: unauth, Audit: true, Labels: map[string]string{"authz_name": "audit", "authz_kind": "default"}},
				},
			},
			want: policy.Server{Name: "web", Kind: policy.KindServer, Audit: true, Authorizations: []policy.Authorization{{Name: "a", Auth: policy.Authentication{Identities: []string{"a.id"}}}}},
		},
		{
			name:    "an invalid network",
			in:      &meshv1.InboundServer{Labels: map[string]string{"srv_name": "web"}, Authorizations: []*meshv1.Authorization{{Networks: []*meshv1.Network{{Cidr: "10.0.0.0/33"}}}}},
			wantErr: `inbound policy web: authorizations[0].networks[0]: "10.0.0.0/33" is neither a CIDR nor an IP address`,
		},
		{
			name:    "an invalid protocol",
			in:      &meshv1.InboundServer{Protocol: 42},
			wantErr: "inbound policy",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ServerFromProto(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}

	// An authorization without authentication allows nobody.
	s, err := ServerFromProto(&meshv1.InboundServer{Authorizations: []*meshv1.Authorization{{}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", "web.shop.serviceaccount.identity.sluice.cluster.local"} {
		if d := s.Authorize(netip.MustParseAddr("127.0.0.1"), id); d.Allowed {
			t.Errorf("an authorization with no authentication allowed %q", id)
		}
	}
}

// scriptedPolicies is an InboundPolicies server sending what the test sets.
type scriptedPolicies struct {
	meshv1.UnimplementedInboundPoliciesServer
	mu      sync.Mutex
	cur     *meshv1.InboundServer
	changed chan struct{}
}

func (s *scriptedPolicies) set(p *meshv1.InboundServer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur = p
	if s.changed != nil {
		close(s.changed)
	}
	s.changed = make(chan struct{})
}

func (s *scriptedPolicies) WatchPort(_ *meshv1.PortSpec, stream grpc.ServerStreamingServer[meshv1.InboundServer]) error {
	for {
		s.mu.Lock()
		cur, changed := s.cur, s.changed
		s.mu.Unlock()
		if err := stream.Send(cur); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		}
	}
}

// policyRecorder keeps the policies a PolicyWatch delivered.
type policyRecorder struct {
	mu  sync.Mutex
	got []string
}

func (r *policyRecorder) record(s policy.Server) {
	r.mu.Lock()
	r.got = append(r.got, s.Name)
	r.mu.Unlock()
}

func (r *policyRecorder) names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

// TestPolicyWatch: policies are delivered as they change; while the server
// is gone nothing changes; a restarted server's first message is delivered.
func TestPolicyWatch(t *testing.T) {
	srv := &scriptedPolicies{}
	srv.set(&meshv1.InboundServer{DefaultPolicy: "all-authenticated"})
	start := func(addr string) (string, func()) {
		gs := grpc.NewServer()
		meshv1.RegisterInboundPoliciesServer(gs, srv)
		return serve(t, gs, addr)
	}
	addr, stop := start("127.0.0.1:0")
	rec := &policyRecorder{}
	logs := &logRecorder{}
	w, err := NewPolicyWatch(PolicyOptions{Conn: dial(t, addr), Workload: "shop/web-0", Port: 8080, OnUpdate: rec.record, Logger: logs.logger(), MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if w.Synced() {
		t.Fatal("synced before running")
	}
	runInBackground(t, w.Run)
	eventually(t, "the first policy", func() bool { return len(rec.names()) == 1 })
	if !w.Synced() {
		t.Error("not synced after the first policy")
	}
	srv.set(&meshv1.InboundServer{Labels: map[string]string{"srv_name": "web-http"}})
	eventually(t, "the second policy", func() bool { return len(rec.names()) == 2 })

	stop()
	eventually(t, "the stream to fail", func() bool { return logs.count("policy stream failed") >= 1 })
	srv.set(&meshv1.InboundServer{DefaultPolicy: "deny"})
	start(addr)
	eventually(t, "the policy after the restart", func() bool { return len(rec.names()) == 3 })
	if got, want := rec.names(), []string{"all-authenticated", "web-http", "deny"}; !reflect.DeepEqual(got, want) {
		t.Errorf("policies delivered %v, want %v", got, want)
	}
}

// TestPolicyWatchUnimplemented: a control plane without the policy API is
// logged once and retried; no policy is delivered.
func TestPolicyWatchUnimplemented(t *testing.T) {
	var calls atomic.Int32
	addr, _ := serve(t, grpc.NewServer(grpc.UnknownServiceHandler(func(any, grpc.ServerStream) error {
		calls.Add(1)
		return status.Error(codes.Unimplemented, "unknown service")
	})), "127.0.0.1:0")
	logs := &logRecorder{}
	rec := &policyRecorder{}
	w, err := NewPolicyWatch(PolicyOptions{Conn: dial(t, addr), Workload: "shop/web-0", Port: 8080, OnUpdate: rec.record, Logger: logs.logger(), MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runInBackground(t, w.Run)
	eventually(t, "three attempts", func() bool { return calls.Load() >= 3 })
	if n := logs.count("serves no inbound policy API"); n != 1 {
		t.Errorf("the missing API was logged %d times, want once", n)
	}
	if w.Synced() || len(rec.names()) != 0 {
		t.Errorf("a policy was delivered by a server without the API")
	}

	if _, err := NewPolicyWatch(PolicyOptions{Conn: dial(t, addr), Port: 0}); err == nil {
		t.Error("NewPolicyWatch accepted port 0")
	}
}
