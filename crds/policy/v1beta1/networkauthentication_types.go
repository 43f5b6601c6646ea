package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Network is a range of client addresses, minus some sub-ranges.
//
// +kubebuilder:validation:XValidation:rule="!has(self.except) || self.except.all(e, isCIDR(self.cidr) && (isCIDR(e) ? (cidr(self.cidr).containsCIDR(e) && cidr(e).prefixLength() > cidr(self.cidr).prefixLength()) : (isIP(e) && cidr(self.cidr).containsIP(e))))",message="every except range must lie inside cidr and be smaller than it"
type Network struct {
	// CIDR is the range ("10.0.0.0/8", "fd00::/8"); a bare IP address means
	// that address alone.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self) || isIP(self)",message="cidr must be a CIDR (10.0.0.0/8) or an IP address"
	CIDR string `json:"cidr"`
	// Except are ranges (or addresses) inside CIDR that are not part of it.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="self.all(e, isCIDR(e) || isIP(e))",message="except entries must be CIDRs or IP addresses"
	Except []string `json:"except,omitempty"`
}

// NetworkAuthenticationSpec lists the networks that authenticate.
type NetworkAuthenticationSpec struct {
	// Networks are the client address ranges that authenticate.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	Networks []Network `json:"networks"`
}

// NetworkAuthentication is satisfied by a client connecting from one of its
// networks.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=netauthn,categories=sluice;policy
// +kubebuilder:printcolumn:name="Networks",type=string,JSONPath=`.spec.networks[*].cidr`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type NetworkAuthentication struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec lists the networks.
	Spec NetworkAuthenticationSpec `json:"spec"`
}

// NetworkAuthenticationList is a list of NetworkAuthentications.
//
// +kubebuilder:object:root=true
type NetworkAuthenticationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the NetworkAuthentications.
	Items []NetworkAuthentication `json:"items"`
}
