package policy

import (
	"slices"

	"github.com/sluicehq/sluice/mesh/api/meshv1"
	proxypolicy "github.com/sluicehq/sluice/proxy/policy"
)

// Label keys of meshv1.InboundServer.labels and meshv1.Authorization.labels.
const (
	labelServerName  = "srv_name"
	labelServerKind  = "srv_kind"
	labelServerGroup = "srv_group"
	labelAuthzName   = "authz_name"
	labelAuthzKind   = "authz_kind"
	labelAuthzGroup  = "authz_group"
	// labelWorkloadUnknown marks the default policy sent for a workload the
	// source does not know. It is not a metric label.
	labelWorkloadUnknown = "workload_unknown"
)

// ServerToProto converts a compiled port policy to its inbound-policy-stream
// form, so that a proxy converting it back evaluates exactly what s says:
//
//   - Name and Kind become the srv_name and srv_kind labels, plus srv_group
//     for KindServer; a KindDefault Server's name is also its default_policy.
//   - Each Authorization keeps its order and becomes one with the same
//     networks (CIDR strings; none means every address), unauthenticated or
//     mesh_tls with the same identities and suffixes (same wildcard meanings),
//     and authz_name, authz_kind labels, plus authz_group for
//     KindAuthorizationPolicy.
//   - Audit becomes one more, last, authorization with audit set that
//     allows every client, named "audit" of kind "default": a client no other
//     authorization allows is allowed as an audit decision, Linkerd's meaning.
//
// An unknown protocol is encoded so that the receiver rejects it.
func ServerToProto(s *proxypolicy.Server) *meshv1.InboundServer {
	if s == nil {
		return nil
	}
	out := &meshv1.InboundServer{
		Protocol: meshv1.ProtocolToProto(s.Protocol),
		Labels:   map[string]string{labelServerName: s.Name, labelServerKind: s.Kind},
	}
	switch s.Kind {
	case proxypolicy.KindServer:
		out.Labels[labelServerGroup] = proxypolicy.Group
	case proxypolicy.KindDefault:
		out.DefaultPolicy = s.Name
	}
	out.Authorizations = make([]*meshv1.Authorization, 0, len(s.Authorizations)+1)
	for i := range s.Authorizations {
		out.Authorizations = append(out.Authorizations, authorizationToProto(&s.Authorizations[i]))
	}
	if s.Audit {
		out.Authorizations = append(out.Authorizations, &meshv1.Authorization{
			Authentication: &meshv1.Authorization_Unauthenticated{Unauthenticated: &meshv1.Unauthenticated{}},
			Labels:         map[string]string{labelAuthzName: proxypolicy.Audit, labelAuthzKind: proxypolicy.KindDefault},
			Audit:          true,
		})
	}
	return out
}

// authorizationToProto converts one authorization.
func authorizationToProto(az *proxypolicy.Authorization) *meshv1.Authorization {
	out := &meshv1.Authorization{
		Labels: map[string]string{labelAuthzName: az.Name, labelAuthzKind: az.Kind},
	}
	if az.Kind == proxypolicy.KindAuthorizationPolicy {
		out.Labels[labelAuthzGroup] = proxypolicy.Group
	}
	for _, n := range az.Networks {
		pn := &meshv1.Network{Cidr: n.CIDR.String()}
		for _, x := range n.Except {
			pn.Except = append(pn.Except, x.String())
		}
		out.Networks = append(out.Networks, pn)
	}
	if az.Auth.Unauthenticated {
		out.Authentication = &meshv1.Authorization_Unauthenticated{Unauthenticated: &meshv1.Unauthenticated{}}
	} else {
		// Empty lists allow nobody, as the zero Authentication does.
		out.Authentication = &meshv1.Authorization_MeshTls{MeshTls: &meshv1.MeshTLS{
			Identities: slices.Clone(az.Auth.Identities),
			Suffixes:   slices.Clone(az.Auth.Suffixes),
		}}
	}
	return out
}
