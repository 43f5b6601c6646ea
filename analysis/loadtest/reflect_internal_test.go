package loadtest

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// TestReflectFiles builds the TestService's descriptors from server
// reflection alone (its file imports two others), not from the descriptors
// linked into the binary.
func TestReflectFiles(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(srv, interop.NewTestServer())
	reflection.Register(srv)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)

	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	files, err := reflectFiles(ctx, conn, "grpc.testing.TestService")
	if err != nil {
		t.Fatal(err)
	}
	d, err := files.FindDescriptorByName("grpc.testing.TestService")
	if err != nil {
		t.Fatal(err)
	}
	md := d.(protoreflect.ServiceDescriptor).Methods().ByName("UnaryCall")
	if md == nil || md.Input().FullName() != "grpc.testing.SimpleRequest" || md.Output().FullName() != "grpc.testing.SimpleResponse" {
		t.Fatalf("UnaryCall: %v", md)
	}
	if files.NumFiles() < 3 {
		t.Errorf("%d files, want the service's and its imports", files.NumFiles())
	}
	if _, err := reflectFiles(ctx, conn, "no.such.Service"); err == nil {
		t.Error("unknown symbol: no error")
	}
}
