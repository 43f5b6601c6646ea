package policy

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	protobuf "google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/mesh/api/meshv1"
	proxypolicy "github.com/sluicehq/sluice/proxy/policy"
)

// PolicySource is where the policy objects and workloads come from (the
// local store in local mode, Kubernetes informers on a cluster).
type PolicySource interface {
	// PolicyInputs returns what Compile needs for a port of a workload
	// ("namespace/name"), and whether the source knows the workload. An
	// Input whose DefaultPolicy is empty gets the server's. The result is
	// the caller's: the source keeps no reference to it.
	PolicyInputs(workload string, port int) (Input, bool)
	// Changed returns a channel that is closed at the next change of
	// anything (a broadcast; call again after it fires).
	Changed() <-chan struct{}
}

// Server implements meshv1.InboundPoliciesServer over a PolicySource.
// Register it with meshv1.RegisterInboundPoliciesServer.
//
// Every WatchPort stream sends the port's compiled policy at once, then
// waits on the source's change broadcast, compiles again and sends only when
// the result differs, so a slow reader coalesces bursts of changes into the
// latest state. A workload the source does not know gets the server's
// default policy, marked with the label workload_unknown = "true", and its
// real policy as soon as the source learns about it.
type Server struct {
	meshv1.UnimplementedInboundPoliciesServer

	src             PolicySource
	defaultPolicy   string
	clusterNetworks []netip.Prefix
	identityOf      func(sa, ns string) string
	log             *slog.Logger
	// configErr is what is wrong with the arguments of NewServer; streams
	// fail with it.
	configErr error

	closeOnce sync.Once
	done      chan struct{}
}

// NewServer returns an inbound policy server answering from src.
// defaultPolicy is what a port no Server selects gets when its workload names
// no default of its own ("" means all-unauthenticated), clusterNetworks are
// what the cluster-* policies allow (empty: proxy/policy's defaults; loopback
// always), identityOf names the mesh identity of a service account, and a nil
// log means slog.Default(). An unknown defaultPolicy or a nil identityOf is
// logged, and makes every stream fail with codes.FailedPrecondition naming
// the problem: proxies then keep what they had, or their own default.
func NewServer(src PolicySource, defaultPolicy string, clusterNetworks []netip.Prefix,
	identityOf func(sa, ns string) string, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	if defaultPolicy == "" {
		defaultPolicy = proxypolicy.AllUnauthenticated
	}
	s := &Server{
		src:             src,
		defaultPolicy:   defaultPolicy,
		clusterNetworks: slices.Clone(clusterNetworks),
		identityOf:      identityOf,
		log:             log.With("component", "policy"),
		done:            make(chan struct{}),
	}
	if _, err := proxypolicy.Default(defaultPolicy, clusterNetworks); err != nil {
		s.configErr = fmt.Errorf("inbound policy server: default policy: %w", err)
	} else if identityOf == nil {
		s.configErr = errors.New("inbound policy server: no identityOf function")
	}
	if s.configErr != nil {
		s.log.Error("inbound policy server misconfigured; every WatchPort fails", "error", s.configErr)
	}
	return s
}

// Close ends every open stream with codes.Unavailable (proxies reconnect,
// keeping what they had) and makes new streams fail the same way. Call it
// before grpc.Server.GracefulStop, which otherwise waits for streams that
// never end on their own. Close is idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.done) })
}

// errClosed is what streams end with after Close.
var errClosed = status.Error(codes.Unavailable, "inbound policy server is shutting down")

// WatchPort streams the policy of a workload port: the complete policy at
// once, then a new one whenever it changes. It ends when the client goes
// away or the server closes.
func (s *Server) WatchPort(req *meshv1.PortSpec, stream grpc.ServerStreamingServer[meshv1.InboundServer]) error {
	workload, port := req.GetWorkload(), req.GetPort()
	if ns, pod, ok := strings.Cut(workload, "/"); !ok || ns == "" || pod == "" || strings.Contains(pod, "/") {
		return status.Errorf(codes.InvalidArgument, "workload %q is not namespace/name", workload)
	}
	if port < 1 || port > 65535 {
		return status.Errorf(codes.InvalidArgument, "port %d of workload %s is not 1-65535", port, workload)
	}
	if s.configErr != nil {
		return status.Error(codes.FailedPrecondition, s.configErr.Error())
	}
	select {
	case <-s.done:
		return errClosed
	default:
	}
	ctx := stream.Context()
	log := s.log.With("rpc", "WatchPort", "workload", workload, "port", port)
	log.DebugContext(ctx, "stream opened")
	var (
		last        *meshv1.InboundServer
		lastIgnored []string
	)
	for {
		changed := s.src.Changed() // before reading, so no change is missed
		cur, ignored, err := s.compile(workload, int(port))
		if err != nil {
			log.ErrorContext(ctx, "cannot compile inbound policy", "error", err)
			return status.Error(codes.Internal, err.Error())
		}
		if !slices.Equal(ignored, lastIgnored) {
			for _, msg := range ignored {
				log.WarnContext(ctx, "policy object left out", "problem", msg)
			}
			lastIgnored = ignored
		}
		if last == nil || !protobuf.Equal(last, cur) {
			if err := stream.Send(cur); err != nil {
				log.DebugContext(ctx, "stream send failed", "error", err)
				return err
			}
			log.DebugContext(ctx, "policy sent", "server", cur.GetLabels()[labelServerName],
				"kind", cur.GetLabels()[labelServerKind], "authorizations", len(cur.GetAuthorizations()))
			last = cur
		}
		select {
		case <-changed:
		case <-ctx.Done():
			log.DebugContext(ctx, "stream closed", "reason", ctx.Err())
			return status.FromContextError(ctx.Err()).Err()
		case <-s.done:
			return errClosed
		}
	}
}

// compile returns the current policy of a workload port, and what the
// compiler left out (sorted messages, for logs).
func (s *Server) compile(workload string, port int) (*meshv1.InboundServer, []string, error) {
	in, known := s.src.PolicyInputs(workload, port)
	if !known {
		def, err := proxypolicy.Default(s.defaultPolicy, s.clusterNetworks)
		if err != nil { // NewServer checked it
			return nil, nil, err
		}
		out := ServerToProto(&def)
		out.Labels[labelWorkloadUnknown] = "true"
		return out, nil, nil
	}
	var ignored []string
	c := Compiler{
		IdentityOf:      s.identityOf,
		ClusterNetworks: s.clusterNetworks,
		Ignored: func(kind, namespace, name string, err error) {
			ignored = append(ignored, fmt.Sprintf("%s %s/%s: %v", kind, namespace, name, err))
		},
	}
	if in.DefaultPolicy == "" {
		in.DefaultPolicy = s.defaultPolicy
	}
	srv, err := c.Compile(in)
	if err != nil && in.DefaultPolicy != s.defaultPolicy {
		// The workload's own default policy is not one: use the server's.
		ignored = append(ignored, fmt.Sprintf("default inbound policy of workload %s: %v; using %s", workload, err, s.defaultPolicy))
		in.DefaultPolicy = s.defaultPolicy
		srv, err = c.Compile(in)
	}
	if err != nil {
		return nil, nil, err
	}
	slices.Sort(ignored)
	ignored = slices.Compact(ignored)
	return ServerToProto(&srv), ignored, nil
}
