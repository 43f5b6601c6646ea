package main

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	reflectiongrpc "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
)

func dialGRPC(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func TestGRPCUnaryCallSharesPortWithHTTP(t *testing.T) {
	srv := startApp(t, testConfig("web", "v4"), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// HTTP/1.1 on the same port still works.
	if r := do(t, newClient(t), "GET", srv.url+"/healthz", nil, nil); r.status != http.StatusOK {
		t.Fatalf("GET /healthz: %d", r.status)
	}

	cc := dialGRPC(t, srv.addr)
	var hdr metadata.MD
	resp, err := testgrpc.NewTestServiceClient(cc).UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 64}, grpc.Header(&hdr))
	if err != nil {
		t.Fatalf("UnaryCall: %v", err)
	}
	if n := len(resp.GetPayload().GetBody()); n != 64 {
		t.Errorf("payload %d bytes, want 64", n)
	}
	if v := hdr.Get("x-version"); !slices.Equal(v, []string{"v4"}) {
		t.Errorf("x-version metadata = %v, want [v4]", v)
	}

	// A requested status passes through the interop server unchanged.
	_, err = testgrpc.NewTestServiceClient(cc).UnaryCall(ctx, &testpb.SimpleRequest{
		ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "asked"},
	})
	if status.Code(err) != codes.NotFound {
		t.Errorf("UnaryCall with response status: %v, want NotFound", err)
	}

	h, err := healthgrpc.NewHealthClient(cc).Check(ctx, &healthgrpc.HealthCheckRequest{Service: "grpc.testing.TestService"})
	if err != nil || h.GetStatus() != healthgrpc.HealthCheckResponse_SERVING {
		t.Errorf("health = %v, %v; want SERVING", h, err)
	}
}

func TestGRPCReflectionListsTestService(t *testing.T) {
	srv := startApp(t, testConfig("web", "v1"), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := reflectiongrpc.NewServerReflectionClient(dialGRPC(t, srv.addr)).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	stream.CloseSend()
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"grpc.testing.TestService", "grpc.health.v1.Health"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}
}

func TestGRPCErrorRate(t *testing.T) {
	tests := []struct {
		rate     float64
		min, max int
	}{
		{0, 0, 0},
		{0.3, 40, 80}, // 200 calls: mean 60, sd 6.5
		{1, 200, 200},
	}
	for _, tc := range tests {
		cfg := testConfig("web", "v1")
		cfg.ErrorRate = tc.rate
		srv := startApp(t, cfg, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		client := testgrpc.NewTestServiceClient(dialGRPC(t, srv.addr))
		failed := 0
		for range 200 {
			_, err := client.UnaryCall(ctx, &testpb.SimpleRequest{})
			switch status.Code(err) {
			case codes.OK:
			case codes.Internal:
				failed++
			default:
				t.Fatalf("UnaryCall: %v", err)
			}
		}
		// Faults apply to UnaryCall only.
		if _, err := client.EmptyCall(ctx, &testpb.Empty{}); err != nil {
			t.Errorf("EmptyCall with error rate %v: %v", tc.rate, err)
		}
		cancel()
		if failed < tc.min || failed > tc.max {
			t.Errorf("error rate %v: %d of 200 calls failed, want %d..%d", tc.rate, failed, tc.min, tc.max)
		}
	}
}
