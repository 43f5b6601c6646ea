package destination

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/sluicehq/sluice/mesh/api/meshv1"
	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/mesh/localstore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// guard bounds every wait: it only turns a hang into a failure, it asserts no
// timing.
const guard = 30 * time.Second

// harness is a destination server over a local store, on a 127.0.0.1 port,
// with a client connected to it.
type harness struct {
	store  *localstore.Store
	srv    *Server
	grpc   *grpc.Server
	client meshv1.DestinationClient
	served chan struct{}
}

func start(t *testing.T) *harness {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{
		store:  localstore.New(),
		grpc:   grpc.NewServer(),
		served: make(chan struct{}),
	}
	h.srv = NewServer(h.store, slog.New(slog.DiscardHandler))
	meshv1.RegisterDestinationServer(h.grpc, h.srv)
	go func() {
		defer close(h.served)
		_ = h.grpc.Serve(lis)
	}()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	h.client = meshv1.NewDestinationClient(conn)
	t.Cleanup(func() {
		conn.Close()
		h.srv.Close()
		h.grpc.Stop()
		<-h.served
	})
	return h
}

func (h *harness) endpoints(t *testing.T, ctx context.Context, target, clientNS string) grpc.ServerStreamingClient[meshv1.EndpointUpdate] {
	t.Helper()
	st, err := h.client.GetEndpoints(ctx, &meshv1.GetDestination{Service: target, ClientNamespace: clientNS})
	if err != nil {
		t.Fatalf("GetEndpoints(%q): %v", target, err)
	}
	return st
}

func (h *harness) routes(t *testing.T, ctx context.Context, target, clientNS string) grpc.ServerStreamingClient[meshv1.ServiceRoutes] {
	t.Helper()
	st, err := h.client.GetRoutes(ctx, &meshv1.GetDestination{Service: target, ClientNamespace: clientNS})
	if err != nil {
		t.Fatalf("GetRoutes(%q): %v", target, err)
	}
	return st
}

// guarded returns a context bounded by guard and ended with the test.
func guarded(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), guard)
	t.Cleanup(cancel)
	return ctx
}

// recv receives one message or fails the test.
func recv[T any](t *testing.T, st grpc.ServerStreamingClient[T]) *T {
	t.Helper()
	m, err := st.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	return m
}

// expect receives as many endpoint updates as want has and compares them.
func expect(t *testing.T, st grpc.ServerStreamingClient[meshv1.EndpointUpdate], want ...string) {
	t.Helper()
	var got []*meshv1.EndpointUpdate
	for range want {
		got = append(got, recv(t, st))
	}
	if d := describe(got); !slices.Equal(d, want) {
		t.Fatalf("updates = %q, want %q", d, want)
	}
}

func webService(selector map[string]string, clusterIP string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
		Spec: corev1.ServiceSpec{
			Selector:  selector,
			ClusterIP: clusterIP,
			Ports:     []corev1.ServicePort{{Name: "http", Port: 80, AppProtocol: ptr("http")}},
		},
	}
}

func namedService(name string) *corev1.Service {
	svc := webService(map[string]string{"app": name}, "")
	svc.Name = name
	return svc
}

func replica(pod, addr string, ready bool) localstore.Replica {
	return localstore.Replica{
		Namespace: "shop", Workload: "web", Pod: pod, Revision: "r1",
		Labels:   map[string]string{"app": "web"},
		Address:  addr,
		Identity: "web.shop.serviceaccount.identity.sluice.cluster.local",
		Ready:    ready,
		Protocol: routetable.ProtocolHTTP2,
	}
}

func ptr[T any](v T) *T { return &v }

// splitRoute is a producer route on web.shop:80 splitting between
// web-primary and web-canary.
func splitRoute(primary, canary int32) *gatewayv1.HTTPRoute {
	ref := func(name string, w int32) gatewayv1.HTTPBackendRef {
		return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{
			BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name), Port: ptr(gatewayv1.PortNumber(80))},
			Weight:                 ptr(w),
		}}
	}
	return &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{
				Group: ptr(gatewayv1.Group("core")), Kind: ptr(gatewayv1.Kind("Service")),
				Name: "web", Port: ptr(gatewayv1.PortNumber(80)),
			}}},
			Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{
				ref("web-primary", primary), ref("web-canary", canary),
			}}},
		},
	}
}

func setWeights(primary, canary int32) func(*gatewayv1.HTTPRoute) error {
	return func(r *gatewayv1.HTTPRoute) error {
		refs := r.Spec.Rules[0].BackendRefs
		refs[0].Weight, refs[1].Weight = &primary, &canary
		return nil
	}
}

// weights returns the backend weights of the first rule ("none" without rules).
func weights(sr *meshv1.ServiceRoutes) string {
	if len(sr.GetRules()) == 0 {
		return "none"
	}
	var out []string
	for _, b := range sr.GetRules()[0].GetBackends() {
		w := uint32(1)
		if b.Weight != nil {
			w = b.GetWeight()
		}
		out = append(out, fmt.Sprintf("%s=%d", b.GetService(), w))
	}
	return fmt.Sprint(out)
}

func TestFirstMessage(t *testing.T) {
	h := start(t)
	h.store.ApplyService(webService(map[string]string{"app": "web"}, "10.96.0.10"))
	h.store.ApplyService(namedService("empty"))
	h.store.SetReplica(replica("web-1", "127.0.0.1:5001", true))
	h.store.SetReplica(replica("web-2", "127.0.0.1:5002", false))

	tests := []struct {
		target     string
		endpoints  string
		routesName string // "" means exists = false
	}{
		{"web.shop:80", "add(127.0.0.1:5001,127.0.0.1:5002!)", "web"},
		{"web.shop.svc.cluster.local:80", "add(127.0.0.1:5001,127.0.0.1:5002!)", "web"},
		{"10.96.0.10:80", "add(127.0.0.1:5001,127.0.0.1:5002!)", "web"},
		{"empty.shop:80", "none(exists)", "empty"},
		{"nope.shop:80", "none(missing)", ""},
		{"10.96.0.99:80", "none(missing)", ""},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			ctx := guarded(t)
			expect(t, h.endpoints(t, ctx, tt.target, ""), tt.endpoints)
			sr := recv(t, h.routes(t, ctx, tt.target, ""))
			if tt.routesName == "" {
				if sr.Exists == nil || sr.GetExists() {
					t.Errorf("routes exists = %v, want false", sr.Exists)
				}
				return
			}
			if sr.Exists != nil && !sr.GetExists() {
				t.Errorf("routes exists = false, want true")
			}
			if sr.GetName() != tt.routesName || sr.GetNamespace() != "shop" || sr.GetPort() != 80 ||
				sr.GetProtocol() != meshv1.Protocol_PROTOCOL_HTTP1 {
				t.Errorf("routes = %v", sr)
			}
		})
	}

	// The endpoints carry what a proxy needs.
	ctx := guarded(t)
	add := recv(t, h.endpoints(t, ctx, "web.shop:80", "")).GetAdd()
	e := add.GetEndpoints()[0]
	if e.GetIdentity() != "web.shop.serviceaccount.identity.sluice.cluster.local" ||
		e.GetProtocolHint() != meshv1.Protocol_PROTOCOL_HTTP2 ||
		e.GetLabels()["pod"] != "web-1" || e.GetLabels()["deployment"] != "web" ||
		e.GetLabels()["namespace"] != "shop" || e.GetLabels()["revision"] != "r1" {
		t.Errorf("endpoint = %v", e)
	}
	sr := recv(t, h.routes(t, ctx, "web.shop:80", ""))
	if !slices.Equal(sr.GetAddresses(), []string{"10.96.0.10:80"}) {
		t.Errorf("routes addresses = %v", sr.GetAddresses())
	}
}

func TestEndpointUpdates(t *testing.T) {
	h := start(t)
	h.store.ApplyService(webService(map[string]string{"app": "web"}, ""))
	h.store.ApplyService(namedService("other"))
	ctx := guarded(t)
	st := h.endpoints(t, ctx, "web.shop:80", "")
	expect(t, st, "none(exists)")

	r1, r2 := replica("web-1", "127.0.0.1:5001", true), replica("web-2", "127.0.0.1:5002", true)
	steps := []struct {
		name   string
		mutate func()
		want   []string // nil: nothing is sent; checked by the next step's message
	}{
		{"first replica", func() { h.store.SetReplica(r1) }, []string{"add(127.0.0.1:5001)"}},
		{"same report", func() { h.store.SetReplica(r1) }, nil},
		{"unrelated service's replica", func() {
			r := replica("other-1", "127.0.0.1:6001", true)
			r.Labels = map[string]string{"app": "other"}
			h.store.SetReplica(r)
		}, nil},
		{"second replica", func() { h.store.SetReplica(r2) }, []string{"add(127.0.0.1:5002)"}},
		{"ready flips off", func() { r1.Ready = false; h.store.SetReplica(r1) }, []string{"add(127.0.0.1:5001!)"}},
		{"ready flips on", func() { r1.Ready = true; h.store.SetReplica(r1) }, []string{"add(127.0.0.1:5001)"}},
		{"replica moves", func() { r2.Address = "127.0.0.1:5003"; h.store.SetReplica(r2) }, []string{"add(127.0.0.1:5003)", "remove(127.0.0.1:5002)"}},
		{"replica removed", func() { h.store.RemoveReplica("shop", "web-1") }, []string{"remove(127.0.0.1:5001)"}},
		{"selector stops matching", func() { h.store.ApplyService(webService(map[string]string{"app": "new"}, "")) }, []string{"none(exists)"}},
		{"selector matches again", func() { h.store.ApplyService(webService(map[string]string{"app": "web"}, "")) }, []string{"add(127.0.0.1:5003)"}},
		{"last replica removed", func() { h.store.RemoveReplica("shop", "web-2") }, []string{"none(exists)"}},
		{"service deleted", func() { h.store.DeleteService("shop", "web") }, []string{"none(missing)"}},
		{"service back with a replica", func() {
			h.store.SetReplica(r1)
			h.store.ApplyService(webService(map[string]string{"app": "web"}, ""))
		}, []string{"add(127.0.0.1:5001)"}},
	}
	for _, s := range steps {
		s.mutate()
		if s.want != nil {
			t.Logf("step %q", s.name)
			expect(t, st, s.want...)
		}
	}
}

// TestChangeReachesEverySubscriber changes weights and endpoints under 50
// route and 50 endpoint subscribers, and checks that each of them receives
// the change.
func TestChangeReachesEverySubscriber(t *testing.T) {
	const subscribers = 50
	h := start(t)
	h.store.ApplyService(webService(map[string]string{"app": "web"}, ""))
	h.store.ApplyService(namedService("web-primary"))
	h.store.ApplyService(namedService("web-canary"))
	h.store.ApplyHTTPRoute(splitRoute(100, 0))
	h.store.SetReplica(replica("web-1", "127.0.0.1:5001", true))
	ctx := guarded(t)

	const before, after = "[web-primary.shop:80=100 web-canary.shop:80=0]", "[web-primary.shop:80=50 web-canary.shop:80=50]"
	var ready, done sync.WaitGroup
	var gotRoutes, gotEndpoints atomic.Int32
	errs := make(chan error, 2*subscribers)
	for i := range subscribers {
		target := "web.shop:80"
		if i%2 == 1 {
			target = "web.shop.svc.cluster.local:80"
		}
		ready.Add(2)
		done.Add(2)
		go func() {
			defer done.Done()
			st, err := h.client.GetRoutes(ctx, &meshv1.GetDestination{Service: target})
			if err != nil {
				errs <- err
				ready.Done()
				return
			}
			first, err := st.Recv()
			ready.Done()
			if err != nil {
				errs <- err
				return
			}
			if weights(first) != before {
				errs <- fmt.Errorf("first routes: weights %s, want %s", weights(first), before)
				return
			}
			next, err := st.Recv()
			if err != nil {
				errs <- err
				return
			}
			if weights(next) != after {
				errs <- fmt.Errorf("next routes: weights %s, want %s", weights(next), after)
				return
			}
			gotRoutes.Add(1)
		}()
		go func() {
			defer done.Done()
			st, err := h.client.GetEndpoints(ctx, &meshv1.GetDestination{Service: target})
			if err != nil {
				errs <- err
				ready.Done()
				return
			}
			first, err := st.Recv()
			ready.Done()
			if err != nil {
				errs <- err
				return
			}
			if d := describe([]*meshv1.EndpointUpdate{first}); d[0] != "add(127.0.0.1:5001)" {
				errs <- fmt.Errorf("first endpoints: %s", d)
				return
			}
			next, err := st.Recv()
			if err != nil {
				errs <- err
				return
			}
			if d := describe([]*meshv1.EndpointUpdate{next}); d[0] != "add(127.0.0.1:5002)" {
				errs <- fmt.Errorf("next endpoints: %s, want add(127.0.0.1:5002)", d)
				return
			}
			gotEndpoints.Add(1)
		}()
	}
	ready.Wait()
	if err := h.store.UpdateHTTPRoute("shop", "web", setWeights(50, 50)); err != nil {
		t.Fatal(err)
	}
	h.store.SetReplica(replica("web-2", "127.0.0.1:5002", true))
	done.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if gotRoutes.Load() != subscribers || gotEndpoints.Load() != subscribers {
		t.Errorf("received the change: routes %d/%d, endpoints %d/%d",
			gotRoutes.Load(), subscribers, gotEndpoints.Load(), subscribers)
	}
}

func TestUnknownServiceAppears(t *testing.T) {
	h := start(t)
	ctx := guarded(t)
	const target = "web.shop.svc.cluster.local:80"
	eps := h.endpoints(t, ctx, target, "")
	rts := h.routes(t, ctx, target, "")
	expect(t, eps, "none(missing)")
	if sr := recv(t, rts); sr.Exists == nil || sr.GetExists() || sr.GetName() != "web" || sr.GetNamespace() != "shop" {
		t.Fatalf("first routes = %v, want exists=false naming web.shop", sr)
	}

	h.store.ApplyService(webService(map[string]string{"app": "web"}, ""))
	expect(t, eps, "none(exists)")
	if sr := recv(t, rts); sr.Exists != nil || sr.GetName() != "web" {
		t.Fatalf("routes after the service appeared = %v", sr)
	}
	h.store.SetReplica(replica("web-1", "127.0.0.1:5001", true))
	expect(t, eps, "add(127.0.0.1:5001)")

	h.store.ApplyService(namedService("web-primary"))
	h.store.ApplyService(namedService("web-canary"))
	h.store.ApplyHTTPRoute(splitRoute(100, 0))
	if sr := recv(t, rts); weights(sr) != "[web-primary.shop:80=100 web-canary.shop:80=0]" {
		t.Fatalf("routes after the route appeared: %s", weights(sr))
	}
	h.store.DeleteHTTPRoute("shop", "web")
	if sr := recv(t, rts); weights(sr) != "none" {
		t.Fatalf("routes after the route went: %s", weights(sr))
	}

	h.store.DeleteService("shop", "web")
	expect(t, eps, "none(missing)")
	if sr := recv(t, rts); sr.Exists == nil || sr.GetExists() {
		t.Fatalf("routes after delete = %v, want exists=false", sr)
	}
}

func TestConsumerRoutes(t *testing.T) {
	h := start(t)
	h.store.ApplyService(webService(map[string]string{"app": "web"}, ""))
	h.store.ApplyService(namedService("web-primary"))
	h.store.ApplyService(namedService("web-canary"))
	h.store.ApplyHTTPRoute(splitRoute(100, 0))
	consumer := splitRoute(0, 1)
	consumer.Name, consumer.Namespace = "web-for-shell", "shell"
	consumer.Spec.ParentRefs[0].Namespace = ptr(gatewayv1.Namespace("shop"))
	for i := range consumer.Spec.Rules[0].BackendRefs {
		consumer.Spec.Rules[0].BackendRefs[i].Namespace = ptr(gatewayv1.Namespace("shop"))
	}
	h.store.ApplyHTTPRoute(consumer)

	tests := []struct {
		clientNS string
		want     string
	}{
		{"", "[web-primary.shop:80=100 web-canary.shop:80=0]"},
		{"shop", "[web-primary.shop:80=100 web-canary.shop:80=0]"},
		{"other", "[web-primary.shop:80=100 web-canary.shop:80=0]"},
		{"shell", "[web-primary.shop:80=0 web-canary.shop:80=1]"},
	}
	for _, tt := range tests {
		ctx := guarded(t)
		if got := weights(recv(t, h.routes(t, ctx, "web.shop:80", tt.clientNS))); got != tt.want {
			t.Errorf("client %q: %s, want %s", tt.clientNS, got, tt.want)
		}
	}
}

// TestStreamEndsOnCancel checks that a client's cancel ends both handlers:
// GracefulStop waits for running handlers, so it returns only if they did.
func TestStreamEndsOnCancel(t *testing.T) {
	h := start(t)
	h.store.ApplyService(webService(map[string]string{"app": "web"}, ""))
	ctx, cancel := context.WithCancel(guarded(t))
	eps := h.endpoints(t, ctx, "web.shop:80", "")
	rts := h.routes(t, ctx, "web.shop:80", "")
	recv(t, eps)
	recv(t, rts)
	cancel()
	if _, err := eps.Recv(); status.Code(err) != codes.Canceled {
		t.Errorf("endpoints Recv after cancel: %v, want Canceled", err)
	}
	if _, err := rts.Recv(); status.Code(err) != codes.Canceled {
		t.Errorf("routes Recv after cancel: %v, want Canceled", err)
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		h.grpc.GracefulStop()
	}()
	select {
	case <-stopped:
	case <-time.After(guard):
		h.grpc.Stop()
		<-stopped
		t.Fatal("handlers still running after the client cancelled")
	}
}

func TestClose(t *testing.T) {
	h := start(t)
	ctx := guarded(t)
	eps := h.endpoints(t, ctx, "web.shop:80", "")
	rts := h.routes(t, ctx, "web.shop:80", "")
	recv(t, eps)
	recv(t, rts)
	h.srv.Close()
	h.srv.Close() // idempotent
	if _, err := eps.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("endpoints Recv after Close: %v, want Unavailable", err)
	}
	if _, err := rts.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("routes Recv after Close: %v, want Unavailable", err)
	}
	if _, err := h.endpoints(t, ctx, "web.shop:80", "").Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("new stream after Close: %v, want Unavailable", err)
	}
}

func TestInvalidArgument(t *testing.T) {
	h := start(t)
	ctx := guarded(t)
	if _, err := h.endpoints(t, ctx, " ", "").Recv(); status.Code(err) != codes.InvalidArgument {
		t.Errorf("GetEndpoints with no service: %v, want InvalidArgument", err)
	}
	if _, err := h.routes(t, ctx, "", "").Recv(); status.Code(err) != codes.InvalidArgument {
		t.Errorf("GetRoutes with no service: %v, want InvalidArgument", err)
	}
}
