package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IdentityRef names a ServiceAccount (its mesh identity) or a Namespace (the
// identity of every service account in it).
//
// +kubebuilder:validation:XValidation:rule="!has(self.group) || size(self.group) == 0 || self.group == 'core'",message="group must be empty (core)"
// +kubebuilder:validation:XValidation:rule="self.kind == 'ServiceAccount' || !has(self.namespace)",message="a Namespace is cluster-scoped: namespace must not be set"
type IdentityRef struct {
	// Group is the referent's API group: empty (or "core").
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Group string `json:"group,omitempty"`
	// Kind is ServiceAccount or Namespace.
	// +required
	// +kubebuilder:validation:Enum=ServiceAccount;Namespace
	Kind string `json:"kind"`
	// Name is the referent's name.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Namespace is a ServiceAccount's namespace; empty means the
	// MeshTLSAuthentication's own.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace,omitempty"`
}

// MeshTLSAuthenticationSpec lists the mesh identities that authenticate.
//
// +kubebuilder:validation:XValidation:rule="(has(self.identities) && size(self.identities) > 0) != (has(self.identityRefs) && size(self.identityRefs) > 0)",message="exactly one of identities and identityRefs must be set"
type MeshTLSAuthenticationSpec struct {
	// Identities are mesh TLS identities: an exact name
	// ("web.shop.serviceaccount.identity.sluice.cluster.local"), "*" for any
	// authenticated client, or "*." and a suffix
	// ("*.shop.serviceaccount.identity.sluice.cluster.local") for every identity
	// that ends in it.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^(\*|(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)$`
	Identities []string `json:"identities,omitempty"`

	// IdentityRefs name ServiceAccounts and Namespaces whose identities authenticate.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=256
	IdentityRefs []IdentityRef `json:"identityRefs,omitempty"`
}

// MeshTLSAuthentication is satisfied by a client that presents one of its mesh
// TLS identities.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=meshtlsauthn,categories=sluice;policy
// +kubebuilder:printcolumn:name="Identities",type=string,JSONPath=`.spec.identities`
// +kubebuilder:printcolumn:name="Identity Refs",type=string,JSONPath=`.spec.identityRefs[*].name`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MeshTLSAuthentication struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec lists the identities.
	Spec MeshTLSAuthenticationSpec `json:"spec"`
}

// MeshTLSAuthenticationList is a list of MeshTLSAuthentications.
//
// +kubebuilder:object:root=true
type MeshTLSAuthenticationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the MeshTLSAuthentications.
	Items []MeshTLSAuthentication `json:"items"`
}
