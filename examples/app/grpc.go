package main

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// newGRPCServer returns the app's gRPC server: the grpc-go interop
// TestService, health and server reflection (so that tools such as ghz can
// call grpc.testing.TestService/UnaryCall without a proto file). The app's
// error rate and latency apply to UnaryCall.
func newGRPCServer(a *app) (*grpc.Server, *health.Server) {
	s := grpc.NewServer(grpc.UnaryInterceptor(a.unaryFaults))
	testgrpc.RegisterTestServiceServer(s, interop.NewTestServer())
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("grpc.testing.TestService", healthpb.HealthCheckResponse_SERVING)
	healthgrpc.RegisterHealthServer(s, hs)
	reflection.Register(s)
	return s, hs
}

// unaryFaults injects the configured delay and failures into UnaryCall;
// failures are codes.Internal so that they count as errors.
func (a *app) unaryFaults(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	if info.FullMethod != testgrpc.TestService_UnaryCall_FullMethodName {
		return next(ctx, req)
	}
	delay, fail := a.faults.decide()
	if err := a.sleep(ctx, delay); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	if fail {
		return nil, status.Errorf(codes.Internal, "injected failure (%s %s)", a.cfg.Name, a.cfg.Version)
	}
	return next(ctx, req)
}
