package http2

import (
	"context"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

// startInteropServer runs grpc-go's interop TestService on loopback.
func startInteropServer(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, interop.NewTestServer())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(ln)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
	return ln.Addr().String()
}

// dialProxy opens one gRPC client connection to addr.
func dialProxy(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc client: %v", err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// runInterop runs one interop case in its own goroutine: the case reports a
// failure through grpclog's Fatal, which our logger turns into the end of that
// goroutine and a recorded message.
func runInterop(t *testing.T, fn func(ctx context.Context)) {
	t.Helper()
	takeFatal()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(ctx)
	}()
	<-done
	if msgs := takeFatal(); len(msgs) > 0 {
		t.Fatalf("interop case failed: %s", strings.Join(msgs, "; "))
	}
}

// TestGRPCInterop runs grpc-go's interop client cases against the interop
// server through the proxy.
func TestGRPCInterop(t *testing.T) {
	backend := startInteropServer(t)
	p := startProxy(t, []routetable.Service{service("interop", []string{backend})})
	cc := dialProxy(t, p.addr)
	tc := testgrpc.NewTestServiceClient(cc)

	cases := []struct {
		name string
		run  func(ctx context.Context, tc testgrpc.TestServiceClient, args ...grpc.CallOption)
	}{
		{"empty_unary", interop.DoEmptyUnaryCall},
		{"large_unary", interop.DoLargeUnaryCall},
		{"client_streaming", interop.DoClientStreaming},
		{"server_streaming", interop.DoServerStreaming},
		{"ping_pong", interop.DoPingPong},
		{"empty_stream", interop.DoEmptyStream},
		{"timeout_on_sleeping_server", interop.DoTimeoutOnSleepingServer},
		{"cancel_after_begin", interop.DoCancelAfterBegin},
		{"cancel_after_first_response", interop.DoCancelAfterFirstResponse},
		{"custom_metadata", interop.DoCustomMetadata},
		{"status_code_and_message", interop.DoStatusCodeAndMessage},
		{"special_status_message", interop.DoSpecialStatusMessage},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			runInterop(t, func(ctx context.Context) { c.run(ctx, tc) })
		})
	}
}
