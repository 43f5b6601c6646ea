package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/mesh/api/meshv1"
	"github.com/sluicehq/sluice/proxy/policy"
)

// PolicyOptions configure a PolicyWatch.
type PolicyOptions struct {
	// Conn reaches the control plane's inbound policy service.
	Conn grpc.ClientConnInterface
	// Workload ("namespace/pod") and Port name the workload port watched.
	Workload string
	Port     int
	// OnUpdate is called from Run with every valid policy received; the
	// caller enforces it (policy.Evaluator.Store).
	OnUpdate func(policy.Server)
	// Logger receives stream errors and invalid policies (nil: slog.Default).
	Logger *slog.Logger
	// MinBackoff and MaxBackoff bound the jittered exponential wait before a
	// lost stream is reopened (defaults DefaultMinBackoff, DefaultMaxBackoff).
	MinBackoff, MaxBackoff time.Duration
}

// PolicyWatch keeps the inbound policy of one workload port current from the
// InboundPolicies API. Every message is a complete policy that replaces the
// previous one. When the stream fails, or the control plane does not serve
// the API, the last policy stays in force (the proxy's configured default
// until a first message) and the stream is reopened with backoff.
type PolicyWatch struct {
	opts   PolicyOptions
	client meshv1.InboundPoliciesClient
	log    *slog.Logger

	running atomic.Bool
	synced  atomic.Bool

	mu          sync.Mutex
	unsupported bool // the server answered Unimplemented; logged once
}

// NewPolicyWatch returns a PolicyWatch; call Run to start its stream.
func NewPolicyWatch(opts PolicyOptions) (*PolicyWatch, error) {
	if opts.Conn == nil {
		return nil, errors.New("policy watch: no connection to the control plane (PolicyOptions.Conn)")
	}
	if opts.Port < 1 || opts.Port > 65535 {
		return nil, fmt.Errorf("policy watch for %q: port %d is not within 1-65535", opts.Workload, opts.Port)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.MinBackoff)
	}
	return &PolicyWatch{
		opts:   opts,
		client: meshv1.NewInboundPoliciesClient(opts.Conn),
		log:    opts.Logger.With("component", "policy", "workload", opts.Workload, "port", opts.Port),
	}, nil
}

// Synced reports whether a policy has been received from the control plane.
func (w *PolicyWatch) Synced() bool { return w.synced.Load() }

// Run keeps the stream open until ctx ends, then returns nil. It calls
// OnUpdate. It may be called only once.
func (w *PolicyWatch) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("policy watch: Run called more than once")
	}
	bo := backoff{min: w.opts.MinBackoff, max: w.opts.MaxBackoff}
	for {
		got, err := w.recv(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if got {
			bo.reset()
		}
		wait := bo.next()
		switch {
		case status.Code(err) == codes.Unimplemented:
			wait = w.opts.MaxBackoff
			w.mu.Lock()
			first := !w.unsupported
			w.unsupported = true
			w.mu.Unlock()
			if first {
				w.log.Info("the control plane serves no inbound policy API; keeping the configured default policy", "retry_in", wait)
			}
		case errors.Is(err, io.EOF):
			w.log.Info("policy stream closed by the server; reopening", "retry_in", wait)
		default:
			w.log.Warn("policy stream failed; keeping the last policy and reopening", "error", err, "retry_in", wait)
		}
		if !sleep(ctx, wait) {
			return nil
		}
	}
}

// recv runs one stream to its end; got says whether a message arrived.
func (w *PolicyWatch) recv(ctx context.Context) (got bool, err error) {
	s, err := w.client.WatchPort(ctx, &meshv1.PortSpec{Workload: w.opts.Workload, Port: uint32(w.opts.Port)})
	if err != nil {
		return false, fmt.Errorf("open policy stream: %w", err)
	}
	for {
		msg, err := s.Recv()
		if err != nil {
			return got, err
		}
		got = true
		srv, err := ServerFromProto(msg)
		if err != nil {
			w.log.Error("invalid inbound policy from the control plane; keeping the previous one", "error", err)
			continue
		}
		w.synced.Store(true)
		if w.opts.OnUpdate != nil {
			w.opts.OnUpdate(srv)
		}
	}
}

// Metric label keys of InboundServer.labels and Authorization.labels.
const (
	labelServerName = "srv_name"
	labelServerKind = "srv_kind"
	labelAuthzName  = "authz_name"
	labelAuthzKind  = "authz_kind"
)

// ServerFromProto converts an inbound policy message into the policy the
// proxy enforces: srv_name and srv_kind (or default_policy) name it, each
// authorization keeps its order, networks, authentication and authz_name and
// authz_kind labels. An authorization in audit mode is not one: it makes the
// Server audit (what no authorization allows is allowed and flagged), as the
// control plane encodes it. The error names the first invalid network.
func ServerFromProto(p *meshv1.InboundServer) (policy.Server, error) {
	proto, err := meshv1.ProtocolFromProto(p.GetProtocol())
	if err != nil {
		return policy.Server{}, fmt.Errorf("inbound policy: %w", err)
	}
	s := policy.Server{
		Name:     p.GetLabels()[labelServerName],
		Kind:     p.GetLabels()[labelServerKind],
		Protocol: proto,
	}
	if s.Name == "" && p.GetDefaultPolicy() != "" {
		s.Name, s.Kind = p.GetDefaultPolicy(), policy.KindDefault
	}
	if s.Kind == "" {
		s.Kind = policy.KindServer
		if p.GetDefaultPolicy() != "" {
			s.Kind = policy.KindDefault
		}
	}
	for i, a := range p.GetAuthorizations() {
		if a.GetAudit() {
			// The audit authorization: what no other allows is allowed and
			// flagged, which is what Server.Audit means.
			s.Audit = true
			continue
		}
		az := policy.Authorization{
			Name: a.GetLabels()[labelAuthzName],
			Kind: a.GetLabels()[labelAuthzKind],
		}
		for j, n := range a.GetNetworks() {
			net, err := networkFromProto(n)
			if err != nil {
				return policy.Server{}, fmt.Errorf("inbound policy %s: authorizations[%d].networks[%d]: %w", s.Name, i, j, err)
			}
			az.Networks = append(az.Networks, net)
		}
		switch auth := a.GetAuthentication().(type) {
		case *meshv1.Authorization_Unauthenticated:
			az.Auth.Unauthenticated = true
		case *meshv1.Authorization_MeshTls:
			az.Auth.Identities = append([]string(nil), auth.MeshTls.GetIdentities()...)
			az.Auth.Suffixes = append([]string(nil), auth.MeshTls.GetSuffixes()...)
		}
		s.Authorizations = append(s.Authorizations, az)
	}
	return s, nil
}

// networkFromProto parses a CIDR (or a bare address) and its exceptions.
func networkFromProto(n *meshv1.Network) (policy.Network, error) {
	cidr, err := parsePrefix(n.GetCidr())
	if err != nil {
		return policy.Network{}, err
	}
	out := policy.Network{CIDR: cidr}
	for _, e := range n.GetExcept() {
		p, err := parsePrefix(e)
		if err != nil {
			return policy.Network{}, fmt.Errorf("except: %w", err)
		}
		out.Except = append(out.Except, p)
	}
	return out, nil
}

// parsePrefix parses a CIDR or a bare address (a single-address prefix).
// IPv4-mapped IPv6 prefixes are turned into IPv4 ones, as client addresses
// are checked unmapped.
func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither a CIDR nor an IP address", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}
