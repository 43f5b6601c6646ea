package policy_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/sluicehq/sluice/crds/policy/v1beta1"
	"github.com/sluicehq/sluice/mesh/api/meshv1"
	"github.com/sluicehq/sluice/mesh/localstore"
	"github.com/sluicehq/sluice/mesh/policy"
	proxypolicy "github.com/sluicehq/sluice/proxy/policy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The local store is a policy source.
var _ policy.PolicySource = (*localstore.Store)(nil)

// guard bounds every wait: it only turns a hang into a failure, it asserts no
// timing.
const guard = 30 * time.Second

func identityOf(sa, ns string) string {
	return fmt.Sprintf("%s.%s.serviceaccount.identity.sluice.cluster.local", sa, ns)
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// harness is an inbound policy server over a local store, on a 127.0.0.1
// port, with a client connected to it.
type harness struct {
	store  *localstore.Store
	srv    *policy.Server
	client meshv1.InboundPoliciesClient
	logs   *syncBuffer
}

func start(t *testing.T, defaultPolicy string) *harness {
	t.Helper()
	return startWith(t, defaultPolicy, identityOf)
}

func startWith(t *testing.T, defaultPolicy string, idOf func(sa, ns string) string) *harness {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{store: localstore.New(), logs: &syncBuffer{}}
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	h.srv = policy.NewServer(h.store, defaultPolicy, nil, idOf, log)
	gs := grpc.NewServer()
	meshv1.RegisterInboundPoliciesServer(gs, h.srv)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = gs.Serve(lis)
	}()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	h.client = meshv1.NewInboundPoliciesClient(conn)
	t.Cleanup(func() {
		conn.Close()
		h.srv.Close()
		gs.Stop()
		<-served
	})
	return h
}

// watch opens a WatchPort stream that ends with the test (or the guard).
func (h *harness) watch(t *testing.T, workload string, port uint32) grpc.ServerStreamingClient[meshv1.InboundServer] {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	t.Cleanup(cancel)
	st, err := h.client.WatchPort(ctx, &meshv1.PortSpec{Workload: workload, Port: port})
	if err != nil {
		t.Fatalf("WatchPort(%s, %d): %v", workload, port, err)
	}
	return st
}

func recv(t *testing.T, st grpc.ServerStreamingClient[meshv1.InboundServer]) *meshv1.InboundServer {
	t.Helper()
	m, err := st.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	return m
}

func replica(ns, pod string, labels map[string]string) localstore.Replica {
	return localstore.Replica{Namespace: ns, Workload: "web", Pod: pod, Labels: labels, Address: "127.0.0.1:4143", Ready: true}
}

var webLabels = map[string]string{"app": "web"}

func serverObj(name string, port intstr.IntOrString, access v1beta1.AccessPolicy, protocol v1beta1.ProxyProtocol) *v1beta1.Server {
	return &v1beta1.Server{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"},
		Spec: v1beta1.ServerSpec{
			PodSelector:   metav1.LabelSelector{MatchLabels: webLabels},
			Port:          port,
			AccessPolicy:  access,
			ProxyProtocol: protocol,
		},
	}
}

func authzPolicy(name, server string, refs ...v1beta1.AuthenticationRef) *v1beta1.AuthorizationPolicy {
	return &v1beta1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"},
		Spec: v1beta1.AuthorizationPolicySpec{
			TargetRef:                  v1beta1.PolicyTargetRef{Group: v1beta1.GroupName, Kind: v1beta1.KindServer, Name: server},
			RequiredAuthenticationRefs: refs,
		},
	}
}

func meshRef(name string) v1beta1.AuthenticationRef {
	return v1beta1.AuthenticationRef{Group: v1beta1.GroupName, Kind: v1beta1.KindMeshTLSAuthentication, Name: name}
}

func meshTLSObj(name string, ids ...string) *v1beta1.MeshTLSAuthentication {
	return &v1beta1.MeshTLSAuthentication{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"},
		Spec:       v1beta1.MeshTLSAuthenticationSpec{Identities: ids},
	}
}

func defaultProto(t *testing.T, name string) *meshv1.InboundServer {
	t.Helper()
	s, err := proxypolicy.Default(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	return policy.ServerToProto(&s)
}

func wantEqual(t *testing.T, got, want *meshv1.InboundServer) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Errorf("got  %s\nwant %s", prototext.Format(got), prototext.Format(want))
	}
}

func TestWatchPortDefaultPolicy(t *testing.T) {
	tests := []struct {
		name           string
		serverDefault  string
		workloadPolicy string // Replica.DefaultInboundPolicy
		want           string
	}{
		{name: "server default", serverDefault: "all-unauthenticated", want: "all-unauthenticated"},
		{name: "empty server default", serverDefault: "", want: "all-unauthenticated"},
		{name: "server default deny", serverDefault: "deny", want: "deny"},
		{name: "server default audit", serverDefault: "audit", want: "audit"},
		{name: "workload default", serverDefault: "all-unauthenticated", workloadPolicy: "cluster-authenticated", want: "cluster-authenticated"},
		{name: "invalid workload default", serverDefault: "all-authenticated", workloadPolicy: "allow-everyone", want: "all-authenticated"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, tc.serverDefault)
			r := replica("shop", "web-1", webLabels)
			r.DefaultInboundPolicy = tc.workloadPolicy
			h.store.SetReplica(r)
			// A Server for another port, which must not apply.
			h.store.ApplyServer(serverObj("admin", intstr.FromInt32(9090), v1beta1.Deny, ""))

			got := recv(t, h.watch(t, "shop/web-1", 8080))
			wantEqual(t, got, defaultProto(t, tc.want))
			if got.GetDefaultPolicy() != tc.want || got.GetLabels()["srv_kind"] != "default" {
				t.Errorf("default_policy %q, labels %v; want %s of kind default", got.GetDefaultPolicy(), got.GetLabels(), tc.want)
			}
			if _, ok := got.GetLabels()["workload_unknown"]; ok {
				t.Errorf("a known workload is labelled unknown: %v", got.GetLabels())
			}
		})
	}
}

func TestWatchPortUnknownWorkload(t *testing.T) {
	h := start(t, "cluster-unauthenticated")
	h.store.ApplyServer(serverObj("web", intstr.FromInt32(8080), v1beta1.Deny, v1beta1.ProxyProtocolHTTP1))
	st := h.watch(t, "shop/web-1", 8080)

	got := recv(t, st)
	want := defaultProto(t, "cluster-unauthenticated")
	want.Labels["workload_unknown"] = "true"
	wantEqual(t, got, want)

	// The replica appears: the Server selects it.
	h.store.SetReplica(replica("shop", "web-1", webLabels))
	got = recv(t, st)
	wantEqual(t, got, &meshv1.InboundServer{
		Protocol: meshv1.Protocol_PROTOCOL_HTTP1,
		Labels:   map[string]string{"srv_name": "web", "srv_kind": "server", "srv_group": "policy.sluice.dev"},
	})

	// And goes: back to the default, marked unknown.
	h.store.RemoveReplica("shop", "web-1")
	wantEqual(t, recv(t, st), want)
}

func TestWatchPortServer(t *testing.T) {
	tests := []struct {
		name     string
		port     intstr.IntOrString
		access   v1beta1.AccessPolicy
		protocol v1beta1.ProxyProtocol
		want     *meshv1.InboundServer
	}{
		{
			name: "deny by number", port: intstr.FromInt32(8080), access: v1beta1.Deny, protocol: v1beta1.ProxyProtocolHTTP2,
			want: &meshv1.InboundServer{
				Protocol: meshv1.Protocol_PROTOCOL_HTTP2,
				Labels:   map[string]string{"srv_name": "web", "srv_kind": "server", "srv_group": "policy.sluice.dev"},
			},
		},
		{
			name: "default access is deny, by port name", port: intstr.FromString("http"),
			want: &meshv1.InboundServer{
				Labels: map[string]string{"srv_name": "web", "srv_kind": "server", "srv_group": "policy.sluice.dev"},
			},
		},
		{
			name: "all-authenticated access", port: intstr.FromInt32(8080), access: v1beta1.AllAuthenticated, protocol: v1beta1.ProxyProtocolOpaque,
			want: &meshv1.InboundServer{
				Protocol: meshv1.Protocol_PROTOCOL_OPAQUE,
				Labels:   map[string]string{"srv_name": "web", "srv_kind": "server", "srv_group": "policy.sluice.dev"},
				Authorizations: []*meshv1.Authorization{{
					Networks:       []*meshv1.Network{{Cidr: "0.0.0.0/0"}, {Cidr: "::/0"}},
					Authentication: &meshv1.Authorization_MeshTls{MeshTls: &meshv1.MeshTLS{Identities: []string{"*"}}},
					Labels:         map[string]string{"authz_name": "all-authenticated", "authz_kind": "default"},
				}},
			},
		},
		{
			name: "audit access", port: intstr.FromInt32(8080), access: v1beta1.Audit,
			want: &meshv1.InboundServer{
				Labels: map[string]string{"srv_name": "web", "srv_kind": "server", "srv_group": "policy.sluice.dev"},
				Authorizations: []*meshv1.Authorization{{
					Authentication: &meshv1.Authorization_Unauthenticated{Unauthenticated: &meshv1.Unauthenticated{}},
					Labels:         map[string]string{"authz_name": "audit", "authz_kind": "default"},
					Audit:          true,
				}},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, "all-unauthenticated")
			r := replica("shop", "web-1", webLabels)
			r.PortNames = map[int]string{8080: "http"}
			h.store.SetReplica(r)
			h.store.ApplyServer(serverObj("web", tc.port, tc.access, tc.protocol))
			wantEqual(t, recv(t, h.watch(t, "shop/web-1", 8080)), tc.want)
		})
	}
}

// TestWatchPortAuthorizationLifecycle adds and removes an AuthorizationPolicy
// with its MeshTLSAuthentication under a watching stream. Changes that leave
// the compiled policy as it was send nothing: each Recv below must return the
// message of the change just made.
func TestWatchPortAuthorizationLifecycle(t *testing.T) {
	h := start(t, "all-unauthenticated")
	h.store.SetReplica(replica("shop", "web-1", webLabels))
	h.store.ApplyServer(serverObj("web", intstr.FromInt32(8080), v1beta1.Deny, ""))
	st := h.watch(t, "shop/web-1", 8080)

	denyAll := &meshv1.InboundServer{Labels: map[string]string{"srv_name": "web", "srv_kind": "server", "srv_group": "policy.sluice.dev"}}
	wantEqual(t, recv(t, st), denyAll)

	// Irrelevant: another namespace's Server, another replica, and an
	// authentication nothing refers to yet.
	other := serverObj("web", intstr.FromInt32(8080), v1beta1.AllUnauthenticated, "")
	other.Namespace = "elsewhere"
	h.store.ApplyServer(other)
	h.store.SetReplica(replica("shop", "web-2", webLabels))
	frontend := identityOf("frontend", "shop")
	h.store.ApplyMeshTLSAuthentication(meshTLSObj("frontend", frontend))

	h.store.ApplyAuthorizationPolicy(authzPolicy("web-from-frontend", "web", meshRef("frontend")))
	withFrontend := &meshv1.InboundServer{
		Labels: denyAll.Labels,
		Authorizations: []*meshv1.Authorization{{
			Authentication: &meshv1.Authorization_MeshTls{MeshTls: &meshv1.MeshTLS{Identities: []string{frontend}}},
			Labels:         map[string]string{"authz_name": "web-from-frontend", "authz_kind": "authorizationpolicy", "authz_group": "policy.sluice.dev"},
		}},
	}
	wantEqual(t, recv(t, st), withFrontend)

	// Changing the MeshTLSAuthentication changes the identity.
	ops := identityOf("ops", "shop")
	h.store.ApplyMeshTLSAuthentication(meshTLSObj("frontend", ops))
	withOps := proto.Clone(withFrontend).(*meshv1.InboundServer)
	withOps.Authorizations[0].GetMeshTls().Identities = []string{ops}
	wantEqual(t, recv(t, st), withOps)

	h.store.DeleteAuthorizationPolicy("shop", "web-from-frontend")
	wantEqual(t, recv(t, st), denyAll)
}

func TestWatchPortManyWatchers(t *testing.T) {
	const watchers = 20
	h := start(t, "all-unauthenticated")
	h.store.SetReplica(replica("shop", "web-1", webLabels))
	h.store.ApplyServer(serverObj("web", intstr.FromInt32(8080), v1beta1.Deny, ""))
	h.store.ApplyMeshTLSAuthentication(meshTLSObj("frontend", identityOf("frontend", "shop")))

	streams := make([]grpc.ServerStreamingClient[meshv1.InboundServer], watchers)
	for i := range streams {
		streams[i] = h.watch(t, "shop/web-1", 8080)
	}
	// Every watcher has its first message before the change.
	for i, st := range streams {
		if m := recv(t, st); len(m.GetAuthorizations()) != 0 {
			t.Fatalf("watcher %d: first message has authorizations: %v", i, m)
		}
	}

	h.store.ApplyAuthorizationPolicy(authzPolicy("web-from-frontend", "web", meshRef("frontend")))
	var wg sync.WaitGroup
	errs := make(chan error, watchers)
	for i, st := range streams {
		wg.Go(func() {
			m, err := st.Recv()
			switch {
			case err != nil:
				errs <- fmt.Errorf("watcher %d: %w", i, err)
			case len(m.GetAuthorizations()) != 1 || m.GetAuthorizations()[0].GetLabels()["authz_name"] != "web-from-frontend":
				errs <- fmt.Errorf("watcher %d: got %v, want the web-from-frontend authorization", i, m)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestWatchPortInvalidArguments(t *testing.T) {
	h := start(t, "all-unauthenticated")
	h.store.SetReplica(replica("shop", "web-1", webLabels))
	tests := []struct {
		workload string
		port     uint32
	}{
		{"", 8080},
		{"web-1", 8080},
		{"/web-1", 8080},
		{"shop/", 8080},
		{"shop/web-1/x", 8080},
		{"shop/web-1", 0},
		{"shop/web-1", 65536},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s:%d", tc.workload, tc.port), func(t *testing.T) {
			_, err := h.watch(t, tc.workload, tc.port).Recv()
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("Recv: %v, want InvalidArgument", err)
			}
		})
	}
}

func TestWatchPortMisconfigured(t *testing.T) {
	tests := []struct {
		name, defaultPolicy string
		identityOf          func(sa, ns string) string
		wantMsg             string
	}{
		{"unknown default policy", "allow-everyone", identityOf, "allow-everyone"},
		{"no identityOf", "deny", nil, "identityOf"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := startWith(t, tc.defaultPolicy, tc.identityOf)
			_, err := h.watch(t, "shop/web-1", 8080).Recv()
			if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("Recv: %v, want FailedPrecondition naming %q", err, tc.wantMsg)
			}
			if !strings.Contains(h.logs.String(), tc.wantMsg) {
				t.Errorf("the problem is not logged; logs:\n%s", h.logs)
			}
		})
	}
}

func TestCloseEndsStreams(t *testing.T) {
	h := start(t, "all-unauthenticated")
	st := h.watch(t, "shop/web-1", 8080)
	recv(t, st)
	h.srv.Close()
	if _, err := st.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("Recv after Close: %v, want Unavailable", err)
	}
	if _, err := h.watch(t, "shop/web-1", 8080).Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("new stream after Close: %v, want Unavailable", err)
	}
	h.srv.Close() // idempotent
}

func TestCancelEndsStream(t *testing.T) {
	h := start(t, "all-unauthenticated")
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	st, err := h.client.WatchPort(ctx, &meshv1.PortSpec{Workload: "shop/web-1", Port: 8080})
	if err != nil {
		t.Fatal(err)
	}
	recv(t, st)
	cancel()
	if _, err := st.Recv(); status.Code(err) != codes.Canceled {
		t.Fatalf("Recv after cancel: %v, want Canceled", err)
	}
	// The server side ends too: goleak in TestMain checks no stream
	// goroutine is left behind.
}

// TestIgnoredObjectsLogged checks that an object the compiler leaves out is
// logged once per stream, not at every change of the store.
func TestIgnoredObjectsLogged(t *testing.T) {
	h := start(t, "all-unauthenticated")
	h.store.SetReplica(replica("shop", "web-1", webLabels))
	h.store.ApplyServer(serverObj("web", intstr.FromInt32(8080), v1beta1.Deny, ""))
	h.store.ApplyAuthorizationPolicy(authzPolicy("broken", "web", meshRef("missing")))
	st := h.watch(t, "shop/web-1", 8080)
	if m := recv(t, st); len(m.GetAuthorizations()) != 0 {
		t.Fatalf("a policy referring to a missing authentication authorizes: %v", m)
	}
	for i := range 5 {
		h.store.SetReplica(replica("shop", fmt.Sprintf("other-%d", i), webLabels))
	}
	// A change that sends a message: by then the ones before were seen.
	h.store.ApplyServer(serverObj("web", intstr.FromInt32(8080), v1beta1.Deny, v1beta1.ProxyProtocolOpaque))
	if m := recv(t, st); m.GetProtocol() != meshv1.Protocol_PROTOCOL_OPAQUE {
		t.Fatalf("got %v, want the opaque protocol", m)
	}
	logs := h.logs.String()
	if n := strings.Count(logs, "MeshTLSAuthentication shop/missing does not exist"); n != 1 {
		t.Errorf("the left-out policy is logged %d times, want once; logs:\n%s", n, logs)
	}
}
