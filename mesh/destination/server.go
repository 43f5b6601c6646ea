// Package destination is the control plane's destination service: it streams
// to every proxy that asks the endpoints and the compiled route table of a
// service port (meshv1.Destination), from a discovery Source (the local
// store in local mode, Kubernetes informers on a cluster).
//
// Every stream sends a complete first message at once, then waits on the
// source's change broadcast and sends what changed: endpoint diffs on
// GetEndpoints, a new snapshot on GetRoutes. A stream never polls; it
// recomputes its answer when anything in the source changes and sends only if
// its answer differs, so a slow reader coalesces bursts of changes into the
// latest state. Endpoint diffs add before they remove, so that a proxy never
// sees an empty set while one set of endpoints replaces another.
package destination

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/mesh/api/meshv1"
	"github.com/sluicehq/sluice/mesh/api/routetable"
)

// Source is where discovery state comes from (the local store, or Kubernetes
// informers).
type Source interface {
	// Resolve maps what a proxy asked for (a key "name.ns:port", an authority
	// "name.ns.svc.cluster.local:port" / "name.ns:port" / "name.ns.svc:port",
	// or an address "ip:port": a Service's virtual address, or a pod's, which
	// resolves to the pod's own service of package podaddress) to a service
	// key; ok is false if nothing matches.
	Resolve(target string) (key string, ok bool)
	// Service returns the compiled service port named by key (rules for
	// clients in clientNamespace, addresses, protocol, and Endpoints filled),
	// and whether it exists. The result is the caller's: the source keeps no
	// reference to it.
	Service(key, clientNamespace string) (routetable.Service, bool)
	// Changed returns a channel that is closed at the next change of
	// anything (a broadcast; call again after it fires).
	Changed() <-chan struct{}
}

// Server implements meshv1.DestinationServer over a Source. Register it with
// meshv1.RegisterDestinationServer.
type Server struct {
	meshv1.UnimplementedDestinationServer

	src Source
	log *slog.Logger

	closeOnce sync.Once
	done      chan struct{}
}

// NewServer returns a destination server answering from src. A nil log
// means slog.Default().
func NewServer(src Source, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{src: src, log: log.With("component", "destination"), done: make(chan struct{})}
}

// Close ends every open stream with codes.Unavailable (proxies reconnect,
// keeping what they had) and makes new streams fail the same way. Call it
// before grpc.Server.GracefulStop, which otherwise waits for streams that
// never end on their own. Close is idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.done) })
}

// closed reports whether Close was called.
func (s *Server) closed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// errClosed is what streams end with after Close.
var errClosed = status.Error(codes.Unavailable, "destination server is shutting down")

// GetEndpoints streams the endpoints of a service port: first the complete
// set (an Add of every endpoint, or NoEndpoints saying whether the service
// exists), then the changes as they happen. A target that resolves to no
// service gets NoEndpoints{exists: false}, and is resolved again at every
// change, so a service that appears later is picked up.
func (s *Server) GetEndpoints(req *meshv1.GetDestination, stream grpc.ServerStreamingServer[meshv1.EndpointUpdate]) error {
	target, clientNS := req.GetService(), req.GetClientNamespace()
	if strings.TrimSpace(target) == "" {
		return status.Error(codes.InvalidArgument, "service is required: a key name.namespace:port, an authority or a virtual ip:port")
	}
	if s.closed() {
		return errClosed
	}
	ctx := stream.Context()
	log := s.log.With("rpc", "GetEndpoints", "service", target, "client_namespace", clientNS, "client_identity", req.GetClientIdentity())
	log.DebugContext(ctx, "stream opened")
	var view endpointView
	for {
		changed := s.src.Changed() // before reading, so no change is missed
		exists, endpoints := s.endpoints(target, clientNS)
		for _, u := range view.update(exists, endpoints) {
			if err := stream.Send(u); err != nil {
				log.DebugContext(ctx, "stream send failed", "error", err)
				return err
			}
		}
		if err := s.wait(ctx, changed); err != nil {
			log.DebugContext(ctx, "stream closed", "reason", err)
			return err
		}
	}
}

// GetRoutes streams the compiled route table of a service port: a complete
// ServiceRoutes at once (exists = false for a target that resolves to no
// service), then a new one whenever it changes.
func (s *Server) GetRoutes(req *meshv1.GetDestination, stream grpc.ServerStreamingServer[meshv1.ServiceRoutes]) error {
	target, clientNS := req.GetService(), req.GetClientNamespace()
	if strings.TrimSpace(target) == "" {
		return status.Error(codes.InvalidArgument, "service is required: a key name.namespace:port, an authority or a virtual ip:port")
	}
	if s.closed() {
		return errClosed
	}
	ctx := stream.Context()
	log := s.log.With("rpc", "GetRoutes", "service", target, "client_namespace", clientNS, "client_identity", req.GetClientIdentity())
	log.DebugContext(ctx, "stream opened")
	var last *meshv1.ServiceRoutes
	for {
		changed := s.src.Changed()
		cur := s.routes(target, clientNS)
		if last == nil || !proto.Equal(last, cur) {
			if err := stream.Send(cur); err != nil {
				log.DebugContext(ctx, "stream send failed", "error", err)
				return err
			}
			last = cur
		}
		if err := s.wait(ctx, changed); err != nil {
			log.DebugContext(ctx, "stream closed", "reason", err)
			return err
		}
	}
}

// wait blocks until changed fires (nil), the stream's context ends or the
// server closes (the error to end the stream with).
func (s *Server) wait(ctx context.Context, changed <-chan struct{}) error {
	select {
	case <-changed:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-s.done:
		return errClosed
	}
}

// endpoints returns whether the target's service exists, and its endpoints.
func (s *Server) endpoints(target, clientNS string) (bool, []*meshv1.Endpoint) {
	key, ok := s.src.Resolve(target)
	if !ok {
		return false, nil
	}
	svc, ok := s.src.Service(key, clientNS)
	if !ok {
		return false, nil
	}
	out := make([]*meshv1.Endpoint, 0, len(svc.Endpoints))
	for i := range svc.Endpoints {
		out = append(out, meshv1.EndpointToProto(&svc.Endpoints[i]))
	}
	return true, out
}

// routes returns the target's compiled route table, or an exists = false
// answer naming what was asked as well as it can.
func (s *Server) routes(target, clientNS string) *meshv1.ServiceRoutes {
	if key, ok := s.src.Resolve(target); ok {
		if svc, ok := s.src.Service(key, clientNS); ok {
			svc.Endpoints = nil
			return meshv1.ServiceToProto(&svc)
		}
	}
	return unknownRoutes(target)
}

// unknownRoutes is the answer for a target no service matches: exists =
// false, with the name, namespace and port when the target is a key or an
// authority, or the address when it is a virtual address.
func unknownRoutes(target string) *meshv1.ServiceRoutes {
	out := &meshv1.ServiceRoutes{Exists: proto.Bool(false)}
	host, portStr, err := net.SplitHostPort(strings.TrimSpace(target))
	if err != nil {
		return out
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return out
	}
	if _, err := netip.ParseAddr(host); err == nil {
		out.Addresses = []string{target}
		return out
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	host = strings.TrimSuffix(host, ".svc.cluster.local")
	host = strings.TrimSuffix(host, ".svc")
	if name, ns, ok := strings.Cut(host, "."); ok && !strings.Contains(ns, ".") {
		out.Name, out.Namespace, out.Port = name, ns, uint32(port)
	}
	return out
}
