// Package cptls secures the control plane's gRPC servers: TLS 1.3 with a
// mesh certificate (the identity service issues its own, the destination
// service obtains one from identity as a proxy does), and mutual TLS for the
// APIs that only meshed proxies may call (Destination, InboundPolicies).
//
// One server may carry both kinds of API (`sluice up` serves every mesh API
// on one port): the TLS layer verifies a client certificate when one is
// presented, and RequireClientCertificate refuses calls to the named
// services from clients that presented none. Identity must stay open to
// clients without a certificate: that is how a proxy gets its first one.
package cptls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/mesh/api/certs"
	"github.com/sluicehq/sluice/mesh/api/meshv1"
)

// MeshOnlyServices are the gRPC services only meshed proxies may call: the
// routes, endpoints and policies they stream must not reach anyone else, and
// a proxy must not be fed them by anyone but the control plane.
var MeshOnlyServices = []string{
	meshv1.Destination_ServiceDesc.ServiceName,
	meshv1.InboundPolicies_ServiceDesc.ServiceName,
}

// ServerTLSConfig is a control-plane server's TLS configuration: mesh TLS's
// settings (TLS 1.3, post-quantum key exchange preferred), the server's
// certificate from getCertificate on every handshake (so a renewed one is
// used at once), and a client certificate verified against roots when the
// client presents one.
func ServerTLSConfig(roots *x509.CertPool, getCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	cfg := certs.ServerConfig(roots, getCertificate)
	cfg.NextProtos = []string{"h2"}
	return cfg
}

// ServerOptions are the options of a control-plane gRPC server: TLS per
// ServerTLSConfig, and RequireClientCertificate for services.
func ServerOptions(roots *x509.CertPool, getCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error), services ...string) []grpc.ServerOption {
	opts := []grpc.ServerOption{grpc.Creds(credentials.NewTLS(ServerTLSConfig(roots, getCertificate)))}
	return append(opts, RequireClientCertificate(services...)...)
}

// RequireClientCertificate returns interceptors that refuse calls to the
// named services (full names, "sluice.mesh.v1.Destination") with
// Unauthenticated unless the client presented a certificate that verified
// against the server's trust anchors. Calls to other services pass.
func RequireClientCertificate(services ...string) []grpc.ServerOption {
	guarded := make(map[string]bool, len(services))
	for _, s := range services {
		guarded[s] = true
	}
	check := func(ctx context.Context, fullMethod string) error {
		svc, _, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
		if !guarded[svc] {
			return nil
		}
		if ClientIdentity(ctx) == "" {
			return status.Errorf(codes.Unauthenticated,
				"%s requires mutual TLS: present a mesh certificate signed by the trust anchors (a meshed proxy's); none was presented", svc)
		}
		return nil
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := check(ctx, info.FullMethod); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := check(ss.Context(), info.FullMethod); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	}
}

// ClientIdentity is the mesh identity of the client of a call, from a
// client certificate the TLS layer verified, or "" when there is none.
func ClientIdentity(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 {
		return ""
	}
	return certs.PeerIdentity(ti.State)
}
