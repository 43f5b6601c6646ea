package v1beta1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// MetricTemplate is a query that a Canary's metric check runs against a
// metric provider, by reference (analysis.metrics[].templateRef).
//
// The query is a Go text/template. It reads the canary through the
// functions name, namespace, target, service, ingress, route and interval,
// and the check's templateVariables through variables, e.g.
// {{ target }} or {{ variables.direction }}; a missing key is an error.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:path=metrictemplates,singular=metrictemplate,categories=all;sluice
// +kubebuilder:printcolumn:name="Provider",type=string,JSONPath=".spec.provider.type"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=".metadata.creationTimestamp"
type MetricTemplate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the provider and the query.
	Spec MetricTemplateSpec `json:"spec"`
	// Status is written by Sluice.
	// +optional
	Status MetricTemplateStatus `json:"status,omitempty"`
}

// MetricTemplateList is a list of MetricTemplates.
//
// +kubebuilder:object:root=true
type MetricTemplateList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`

	// Items are the templates.
	Items []MetricTemplate `json:"items"`
}

// MetricTemplateSpec is the provider and query of a MetricTemplate.
type MetricTemplateSpec struct {
	// Provider is where the query runs.
	// +required
	Provider MetricTemplateProvider `json:"provider"`

	// Query is the query, a Go text/template rendered for each check.
	// +required
	// +kubebuilder:validation:MinLength=1
	Query string `json:"query"`
}

// MetricProviderType is the kind of a metric provider.
//
// +kubebuilder:validation:Enum=sluice;prometheus;influxdb;datadog;externalmetrics;stackdriver;cloudwatch;newrelic;graphite;dynatrace;keptn;splunk
type MetricProviderType string

const (
	// MetricProviderSluice is Sluice's built-in mesh telemetry, queried in
	// the PromQL subset it serves; it needs no address.
	MetricProviderSluice MetricProviderType = "sluice"
	// MetricProviderPrometheus is a Prometheus server (or a compatible API)
	// at address.
	MetricProviderPrometheus MetricProviderType = "prometheus"
)

// MetricTemplateProvider is where a MetricTemplate's query runs. Sluice runs
// sluice and prometheus; the other types of Flagger are accepted so that its
// manifests apply.
type MetricTemplateProvider struct {
	// Type of the provider.
	// +required
	Type MetricProviderType `json:"type"`

	// Address of the provider's API, e.g. http://prometheus.monitoring:9090.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHost() != ''",message="spec.provider.address must be an absolute http or https URL"
	Address string `json:"address,omitempty"`

	// Headers are added to every request to the provider.
	// +optional
	Headers map[string][]string `json:"headers,omitempty"`

	// SecretRef names a Secret with the provider's credentials: "token" for a
	// bearer token, or "username" and "password" for basic authentication.
	// +optional
	SecretRef *SecretReference `json:"secretRef,omitempty"`

	// Region of the provider, for cloud providers.
	// +optional
	Region string `json:"region,omitempty"`

	// InsecureSkipVerify skips verification of the provider's certificate.
	// +optional
	InsecureSkipVerify bool `json:"insecureSkipVerify,omitempty"`
}

// SecretReference names a Secret in the referrer's namespace.
type SecretReference struct {
	// Name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// MetricTemplateStatus is the state of a MetricTemplate.
type MetricTemplateStatus struct {
	// Conditions describe the template, e.g. whether its provider answers.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}
