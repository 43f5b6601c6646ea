package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group of the progressive-delivery kinds.
const GroupName = "sluice.dev"

// GroupVersion is sluice.dev/v1beta1.
var GroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1beta1"}

// Kind names, as they appear in manifests.
const (
	// CanaryKind is the kind of Canary.
	CanaryKind = "Canary"
	// MetricTemplateKind is the kind of MetricTemplate.
	MetricTemplateKind = "MetricTemplate"
	// AlertProviderKind is the kind of AlertProvider.
	AlertProviderKind = "AlertProvider"
)

var (
	// SchemeBuilder registers the kinds of this package with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds Canary, MetricTemplate and AlertProvider (and their
	// lists) to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// Resource qualifies a resource name ("canaries") with the sluice.dev group.
func Resource(resource string) schema.GroupResource {
	return GroupVersion.WithResource(resource).GroupResource()
}

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&Canary{}, &CanaryList{},
		&MetricTemplate{}, &MetricTemplateList{},
		&AlertProvider{}, &AlertProviderList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
