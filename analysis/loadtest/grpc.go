package loadtest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/emptypb"

	// The interop TestService (grpc.testing.TestService/UnaryCall, which the
	// demo app serves) is always callable, even without server reflection.
	_ "google.golang.org/grpc/interop/grpc_testing"
)

// grpcHitter calls a Spec's unary gRPC method.
type grpcHitter struct {
	spec   Spec
	conn   *grpc.ClientConn
	method string        // "/package.Service/Method"
	req    proto.Message // read-only, shared by the workers
	md     metadata.MD
}

// newGRPCHitter connects to the target and resolves the method: from the
// descriptors linked into this binary, else through the server's reflection
// service (grpc.reflection.v1). It builds the request from the body.
func newGRPCHitter(ctx context.Context, s Spec) (*grpcHitter, error) {
	creds := insecure.NewCredentials()
	if s.TLS {
		creds = credentials.NewTLS(&tls.Config{InsecureSkipVerify: s.Insecure}) //nolint:gosec // asked for
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if s.Host != "" {
		opts = append(opts, grpc.WithAuthority(s.Host))
	}
	conn, err := grpc.NewClient(s.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("grpc target %q: %w", s.URL, err)
	}
	md, err := resolveMethod(ctx, conn, s.Method)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	if md.IsStreamingClient() || md.IsStreamingServer() {
		_ = conn.Close()
		return nil, fmt.Errorf("grpc method %s is streaming; only unary methods can be loaded", s.Method)
	}
	req := dynamicpb.NewMessage(md.Input())
	if strings.TrimSpace(s.Body) != "" {
		if err := protojson.Unmarshal([]byte(s.Body), req); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("%w: body is not a %s in JSON: %w", ErrInvalid, md.Input().FullName(), err)
		}
	}
	h := &grpcHitter{spec: s, conn: conn, method: "/" + s.Method, req: req}
	if len(s.Headers) > 0 {
		h.md = metadata.MD{}
		for k, v := range s.Headers {
			h.md.Append(strings.ToLower(k), v)
		}
	}
	return h, nil
}

// hit makes one call; any status but OK is a failure.
func (h *grpcHitter) hit(ctx context.Context) (string, bool, string) {
	ctx, cancel := context.WithTimeout(ctx, h.spec.Timeout)
	defer cancel()
	if h.md != nil {
		ctx = metadata.NewOutgoingContext(ctx, h.md)
	}
	// The reply is read into an Empty, which keeps any message as unknown
	// fields: the load does not need its content.
	err := h.conn.Invoke(ctx, h.method, h.req, &emptypb.Empty{})
	st := status.Convert(err)
	if st.Code() == codes.OK {
		return codes.OK.String(), false, ""
	}
	return st.Code().String(), true, st.Code().String() + ": " + st.Message()
}

func (h *grpcHitter) close() { _ = h.conn.Close() }

// resolveMethod finds the descriptor of method "package.Service/Method".
func resolveMethod(ctx context.Context, conn *grpc.ClientConn, method string) (protoreflect.MethodDescriptor, error) {
	svcName, methName, _ := strings.Cut(method, "/")
	find := func(files interface {
		FindDescriptorByName(protoreflect.FullName) (protoreflect.Descriptor, error)
	}) (protoreflect.MethodDescriptor, error) {
		d, err := files.FindDescriptorByName(protoreflect.FullName(svcName))
		if err != nil {
			return nil, err
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			return nil, fmt.Errorf("%s is a %T, not a service", svcName, d)
		}
		md := sd.Methods().ByName(protoreflect.Name(methName))
		if md == nil {
			var names []string
			for i := range sd.Methods().Len() {
				names = append(names, string(sd.Methods().Get(i).Name()))
			}
			return nil, fmt.Errorf("service %s has no method %s (it has %s)", svcName, methName, strings.Join(names, ", "))
		}
		return md, nil
	}
	if md, err := find(protoregistry.GlobalFiles); err == nil {
		return md, nil
	} else if !errors.Is(err, protoregistry.NotFound) {
		return nil, fmt.Errorf("grpc method %s: %w", method, err)
	}
	files, err := reflectFiles(ctx, conn, svcName)
	if err != nil {
		return nil, fmt.Errorf("grpc method %s: resolving it through server reflection: %w", method, err)
	}
	md, err := find(files)
	if err != nil {
		return nil, fmt.Errorf("grpc method %s: %w", method, err)
	}
	return md, nil
}

// reflectFiles asks the server's reflection service for the file defining
// symbol and every file it imports, and builds them into a registry.
func reflectFiles(ctx context.Context, conn *grpc.ClientConn, symbol string) (*protoregistry.Files, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = stream.CloseSend() }()

	protos := map[string]*descriptorpb.FileDescriptorProto{}
	ask := func(req *reflectionpb.ServerReflectionRequest) error {
		if err := stream.Send(req); err != nil {
			return err
		}
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		if e := resp.GetErrorResponse(); e != nil {
			return status.Error(codes.Code(e.GetErrorCode()), e.GetErrorMessage())
		}
		fds := resp.GetFileDescriptorResponse()
		if fds == nil {
			return fmt.Errorf("unexpected reflection response %T", resp.GetMessageResponse())
		}
		for _, b := range fds.GetFileDescriptorProto() {
			fd := &descriptorpb.FileDescriptorProto{}
			if err := proto.Unmarshal(b, fd); err != nil {
				return fmt.Errorf("bad file descriptor: %w", err)
			}
			protos[fd.GetName()] = fd
		}
		return nil
	}
	if err := ask(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: symbol},
	}); err != nil {
		if status.Code(err) == codes.Unimplemented || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("the server has no reflection service (grpc.reflection.v1): %w", err)
		}
		return nil, err
	}
	// Fetch the imports the server did not send along, unless this binary
	// has them.
	for range 100 {
		var missing string
		for _, fd := range protos {
			for _, dep := range fd.GetDependency() {
				if _, ok := protos[dep]; ok {
					continue
				}
				if _, err := protoregistry.GlobalFiles.FindFileByPath(dep); err == nil {
					continue
				}
				missing = dep
			}
		}
		if missing == "" {
			break
		}
		if err := ask(&reflectionpb.ServerReflectionRequest{
			MessageRequest: &reflectionpb.ServerReflectionRequest_FileByFilename{FileByFilename: missing},
		}); err != nil {
			return nil, fmt.Errorf("fetching %s: %w", missing, err)
		}
		if _, ok := protos[missing]; !ok {
			return nil, fmt.Errorf("the server did not send %s", missing)
		}
	}
	return buildFiles(protos)
}

// buildFiles builds file descriptors into a registry, imports first; an
// import the set lacks is taken from this binary's registry.
func buildFiles(protos map[string]*descriptorpb.FileDescriptorProto) (*protoregistry.Files, error) {
	files := &protoregistry.Files{}
	var add func(name string, depth int) error
	add = func(name string, depth int) error {
		if depth > 64 {
			return fmt.Errorf("imports of %s are too deep (a cycle?)", name)
		}
		if _, err := files.FindFileByPath(name); err == nil {
			return nil
		}
		fdp, ok := protos[name]
		if !ok {
			fd, err := protoregistry.GlobalFiles.FindFileByPath(name)
			if err != nil {
				return fmt.Errorf("file %s: %w", name, err)
			}
			for i := range fd.Imports().Len() {
				if err := add(fd.Imports().Get(i).Path(), depth+1); err != nil {
					return err
				}
			}
			return files.RegisterFile(fd)
		}
		for _, dep := range fdp.GetDependency() {
			if err := add(dep, depth+1); err != nil {
				return err
			}
		}
		fd, err := protodesc.NewFile(fdp, files)
		if err != nil {
			return fmt.Errorf("file %s: %w", name, err)
		}
		return files.RegisterFile(fd)
	}
	for name := range protos {
		if err := add(name, 0); err != nil {
			return nil, err
		}
	}
	return files, nil
}
