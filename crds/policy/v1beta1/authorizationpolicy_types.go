package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Kinds and groups an AuthorizationPolicy and a MeshTLSAuthentication refer to.
const (
	// KindServer is the Server kind (group policy.sluice.dev).
	KindServer = "Server"
	// KindNamespace is the core Namespace kind.
	KindNamespace = "Namespace"
	// KindHTTPRoute is the HTTPRoute kind (group gateway.networking.k8s.io).
	KindHTTPRoute = "HTTPRoute"
	// KindMeshTLSAuthentication is the MeshTLSAuthentication kind (group policy.sluice.dev).
	KindMeshTLSAuthentication = "MeshTLSAuthentication"
	// KindNetworkAuthentication is the NetworkAuthentication kind (group policy.sluice.dev).
	KindNetworkAuthentication = "NetworkAuthentication"
	// KindServiceAccount is the core ServiceAccount kind.
	KindServiceAccount = "ServiceAccount"

	// GatewayGroupName is the Gateway API group, whose HTTPRoutes a policy may target.
	GatewayGroupName = "gateway.networking.k8s.io"
)

// PolicyTargetRef names the object, in the policy's own namespace, that an
// AuthorizationPolicy applies to.
//
// +kubebuilder:validation:XValidation:rule="self.kind == 'Server' ? (has(self.group) && self.group == 'policy.sluice.dev') : self.kind == 'Namespace' ? (!has(self.group) || size(self.group) == 0 || self.group == 'core') : (has(self.group) && (self.group == 'gateway.networking.k8s.io' || self.group == 'policy.sluice.dev'))",message="group must be policy.sluice.dev for a Server, empty (core) for a Namespace, and gateway.networking.k8s.io or policy.sluice.dev for an HTTPRoute"
type PolicyTargetRef struct {
	// Group is the referent's API group; empty (or "core") means the core group.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Group string `json:"group,omitempty"`
	// Kind is Server (every client of that Server's port), Namespace (every
	// Server of the policy's namespace, which must be the name) or HTTPRoute.
	// +required
	// +kubebuilder:validation:Enum=Server;Namespace;HTTPRoute
	Kind string `json:"kind"`
	// Name is the referent's name.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// AuthenticationRef names an authentication a client must satisfy.
//
// +kubebuilder:validation:XValidation:rule="self.kind == 'ServiceAccount' ? (!has(self.group) || size(self.group) == 0 || self.group == 'core') : (has(self.group) && self.group == 'policy.sluice.dev')",message="group must be policy.sluice.dev for a MeshTLSAuthentication or NetworkAuthentication, and empty (core) for a ServiceAccount"
type AuthenticationRef struct {
	// Group is the referent's API group; empty (or "core") means the core group.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Group string `json:"group,omitempty"`
	// Kind is MeshTLSAuthentication, NetworkAuthentication or ServiceAccount
	// (the client must present that service account's mesh identity).
	// +required
	// +kubebuilder:validation:Enum=MeshTLSAuthentication;NetworkAuthentication;ServiceAccount
	Kind string `json:"kind"`
	// Name is the referent's name.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Namespace is the referent's namespace; empty means the policy's own.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace,omitempty"`
}

// AuthorizationPolicySpec says whom a policy authorizes, and where.
type AuthorizationPolicySpec struct {
	// TargetRef is what the policy authorizes clients on.
	// +required
	TargetRef PolicyTargetRef `json:"targetRef"`

	// RequiredAuthenticationRefs are the authentications a client must ALL
	// satisfy: at most one MeshTLSAuthentication or ServiceAccount (the client's
	// identity) and at most one NetworkAuthentication (the client's address).
	// Without an identity requirement the client need not use TLS; without a
	// network requirement it may connect from anywhere. If a referenced object
	// does not exist the policy authorizes nobody.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=2
	// +kubebuilder:validation:XValidation:rule="self.filter(r, r.kind == 'MeshTLSAuthentication' || r.kind == 'ServiceAccount').size() <= 1",message="at most one MeshTLSAuthentication or ServiceAccount may be required"
	// +kubebuilder:validation:XValidation:rule="self.filter(r, r.kind == 'NetworkAuthentication').size() <= 1",message="at most one NetworkAuthentication may be required"
	RequiredAuthenticationRefs []AuthenticationRef `json:"requiredAuthenticationRefs"`
}

// AuthorizationPolicy authorizes clients that satisfy some authentications on a
// Server, on every Server of a namespace, or on an HTTPRoute.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=authzpolicy,categories=sluice;policy
// +kubebuilder:printcolumn:name="Target Kind",type=string,JSONPath=`.spec.targetRef.kind`
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec.targetRef.name`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AuthorizationPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the target and the required authentications.
	Spec AuthorizationPolicySpec `json:"spec"`
}

// AuthorizationPolicyList is a list of AuthorizationPolicies.
//
// +kubebuilder:object:root=true
type AuthorizationPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the AuthorizationPolicies.
	Items []AuthorizationPolicy `json:"items"`
}
