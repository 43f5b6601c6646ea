package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group of the policy kinds.
const GroupName = "policy.sluice.dev"

// GroupVersion is policy.sluice.dev/v1beta1.
var GroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1beta1"}

var (
	// SchemeBuilder registers the policy kinds with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds the policy kinds (and their lists) to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// Resource qualifies a resource name ("servers") with the policy group.
func Resource(resource string) schema.GroupResource {
	return GroupVersion.WithResource(resource).GroupResource()
}

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&Server{}, &ServerList{},
		&AuthorizationPolicy{}, &AuthorizationPolicyList{},
		&MeshTLSAuthentication{}, &MeshTLSAuthenticationList{},
		&NetworkAuthentication{}, &NetworkAuthenticationList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
