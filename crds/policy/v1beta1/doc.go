// Package v1beta1 holds the inbound authorization policy API of the mesh, group
// policy.sluice.dev, version v1beta1: Server, AuthorizationPolicy,
// MeshTLSAuthentication and NetworkAuthentication.
//
// The kinds keep Linkerd's field names and meanings (policy.linkerd.io Server
// v1beta3 and AuthorizationPolicy, MeshTLSAuthentication, NetworkAuthentication
// v1alpha1), so a Linkerd manifest works after changing its apiVersion group:
//
//   - A Server selects a port of the pods its podSelector matches, in its own
//     namespace, and names how traffic to it is handled (proxyProtocol) and which
//     default policy adds to its authorizations (accessPolicy, default "deny").
//   - An AuthorizationPolicy authorizes clients on a Server, on every Server of
//     its namespace, or on an HTTPRoute; a client must satisfy ALL of its
//     requiredAuthenticationRefs.
//   - A MeshTLSAuthentication is satisfied by a client presenting one of its mesh
//     TLS identities; a NetworkAuthentication by a client connecting from one of
//     its networks.
//
// Schema rules the API server enforces are kubebuilder markers (CEL where a
// rule spans fields); the rules it cannot (a Namespace target naming the
// policy's own namespace, except ranges inside their network) are in the
// Validate methods, which the control plane applies before compiling.
//
// +kubebuilder:object:generate=true
// +groupName=policy.sluice.dev
package v1beta1
