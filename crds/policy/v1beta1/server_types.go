package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// ProxyProtocol is how the proxy handles traffic to a Server's port.
//
// +kubebuilder:validation:Enum=unknown;HTTP/1;HTTP/2;gRPC;opaque;TLS
type ProxyProtocol string

const (
	// ProxyProtocolUnknown detects the protocol of each connection (the default).
	ProxyProtocolUnknown ProxyProtocol = "unknown"
	// ProxyProtocolHTTP1 handles connections as HTTP/1.x without detection.
	ProxyProtocolHTTP1 ProxyProtocol = "HTTP/1"
	// ProxyProtocolHTTP2 handles connections as HTTP/2 without detection.
	ProxyProtocolHTTP2 ProxyProtocol = "HTTP/2"
	// ProxyProtocolGRPC handles connections as HTTP/2 carrying gRPC.
	ProxyProtocolGRPC ProxyProtocol = "gRPC"
	// ProxyProtocolOpaque forwards bytes without looking at them.
	ProxyProtocolOpaque ProxyProtocol = "opaque"
	// ProxyProtocolTLS is application TLS the proxy forwards without terminating.
	ProxyProtocolTLS ProxyProtocol = "TLS"
)

// AccessPolicy names a default policy: the authorization a Server's
// accessPolicy adds, or what a port no Server selects gets.
//
// +kubebuilder:validation:Enum=all-unauthenticated;all-authenticated;cluster-unauthenticated;cluster-authenticated;deny;audit
type AccessPolicy string

const (
	// AllUnauthenticated allows every client, from any network, with or without TLS.
	AllUnauthenticated AccessPolicy = "all-unauthenticated"
	// AllAuthenticated allows clients with any mesh TLS identity, from any network.
	AllAuthenticated AccessPolicy = "all-authenticated"
	// ClusterUnauthenticated allows every client from the cluster networks.
	ClusterUnauthenticated AccessPolicy = "cluster-unauthenticated"
	// ClusterAuthenticated allows clients with any mesh TLS identity from the cluster networks.
	ClusterAuthenticated AccessPolicy = "cluster-authenticated"
	// Deny allows nobody (on a Server: nobody but what AuthorizationPolicies allow).
	Deny AccessPolicy = "deny"
	// Audit allows everyone, and flags what nothing else authorized in logs and metrics.
	Audit AccessPolicy = "audit"
)

// AccessPolicies lists every default policy name, in the order above.
var AccessPolicies = []AccessPolicy{AllUnauthenticated, AllAuthenticated, ClusterUnauthenticated, ClusterAuthenticated, Deny, Audit}

// Valid reports whether p names a default policy.
func (p AccessPolicy) Valid() bool {
	for _, q := range AccessPolicies {
		if p == q {
			return true
		}
	}
	return false
}

// ServerSpec selects a port of some pods and says how the proxy handles it.
type ServerSpec struct {
	// PodSelector selects the pods, in the Server's namespace, whose port this
	// is. An empty selector selects every pod of the namespace.
	// +required
	PodSelector metav1.LabelSelector `json:"podSelector"`

	// Port is the pod's port: a number (1-65535) or the name of a container port.
	// +required
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? (self >= 1 && self <= 65535) : (size(self) >= 1 && size(self) <= 15 && self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))",message="port must be a number from 1 to 65535 or a container port name (at most 15 lowercase letters, digits and '-')"
	Port intstr.IntOrString `json:"port"`

	// ProxyProtocol is how the proxy handles connections to the port:
	// "unknown" (detect; the default), "HTTP/1", "HTTP/2", "gRPC", "opaque" or "TLS".
	// +optional
	// +kubebuilder:default=unknown
	ProxyProtocol ProxyProtocol `json:"proxyProtocol,omitempty"`

	// AccessPolicy is the default policy whose authorization is added to the
	// ones AuthorizationPolicies give this Server. The default, "deny", adds
	// none: only what an AuthorizationPolicy allows gets through.
	// +optional
	// +kubebuilder:default=deny
	AccessPolicy AccessPolicy `json:"accessPolicy,omitempty"`
}

// Server is a port of a set of pods that authorization policies can target.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=srv,categories=sluice;policy
// +kubebuilder:printcolumn:name="Port",type=string,JSONPath=`.spec.port`
// +kubebuilder:printcolumn:name="Protocol",type=string,JSONPath=`.spec.proxyProtocol`
// +kubebuilder:printcolumn:name="Access",type=string,JSONPath=`.spec.accessPolicy`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Server struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec selects the port and says how it is handled.
	Spec ServerSpec `json:"spec"`
}

// ServerList is a list of Servers.
//
// +kubebuilder:object:root=true
type ServerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the Servers.
	Items []Server `json:"items"`
}
