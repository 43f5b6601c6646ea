package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Canary is a progressive-delivery configuration for one workload: how a new
// revision of it is started beside the current one, how traffic moves to it,
// how each step is judged, and when it is promoted or rolled back.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:path=canaries,singular=canary,categories=all;sluice
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=".status.phase",description="Phase of the current or last run"
// +kubebuilder:printcolumn:name="Weight",type=integer,JSONPath=".status.canaryWeight",description="Traffic weight routed to the canary"
// +kubebuilder:printcolumn:name="FailedChecks",type=integer,JSONPath=".status.failedChecks",description="Failed checks of the current run"
// +kubebuilder:printcolumn:name="Suspended",type=boolean,JSONPath=".spec.suspend",priority=1
// +kubebuilder:printcolumn:name="Interval",type=string,JSONPath=".spec.analysis.interval",priority=1
// +kubebuilder:printcolumn:name="Mirror",type=boolean,JSONPath=".spec.analysis.mirror",priority=1
// +kubebuilder:printcolumn:name="StepWeight",type=integer,JSONPath=".spec.analysis.stepWeight",priority=1
// +kubebuilder:printcolumn:name="StepWeights",type=string,JSONPath=".spec.analysis.stepWeights",priority=1
// +kubebuilder:printcolumn:name="MaxWeight",type=integer,JSONPath=".spec.analysis.maxWeight",priority=1
// +kubebuilder:printcolumn:name="Revision",type=string,JSONPath=".status.observedRevision",priority=1,description="Revision of the target last observed"
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=".status.message",priority=1
// +kubebuilder:printcolumn:name="LastTransitionTime",type=string,JSONPath=".status.lastTransitionTime"
type Canary struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the desired behaviour of the canary.
	Spec CanarySpec `json:"spec"`
	// Status is the state of the current or last run, written by Sluice.
	// +optional
	Status CanaryStatus `json:"status,omitempty"`
}

// CanaryList is a list of Canaries.
//
// +kubebuilder:object:root=true
type CanaryList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`

	// Items are the canaries.
	Items []Canary `json:"items"`
}

// Provider names the traffic-management provider of a canary, as Flagger's
// -mesh-provider does. Sluice always shifts traffic through a Gateway API
// HTTPRoute served by its own proxies; the other values are accepted so that
// Flagger manifests apply unchanged.
//
// +kubebuilder:validation:Enum=sluice;apisix;appmesh;"appmesh:v1beta2";contour;"gatewayapi:v1";"gatewayapi:v1beta1";gloo;istio;knative;kubernetes;kuma;linkerd;nginx;osm;skipper;"smi:v1alpha1";"smi:v1alpha2";"smi:v1alpha3";traefik
type Provider string

// ProviderSluice is Sluice's own provider: Gateway API HTTPRoutes served by
// sluice-proxy.
const ProviderSluice Provider = "sluice"

// CanarySpec is the desired behaviour of a Canary.
//
// +kubebuilder:validation:XValidation:rule="!has(self.service) || has(self.service.name) || !has(self.targetRef) || !has(self.targetRef.name) || (size(self.targetRef.name) <= 55 && self.targetRef.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$'))",message="targetRef.name names the Services when service.name is unset, so it must be a DNS label of at most 55 characters; set service.name otherwise",fieldPath=".targetRef.name"
type CanarySpec struct {
	// Provider overrides the controller's traffic-management provider for this
	// canary. Sluice routes every canary through a Gateway API HTTPRoute; any
	// of Flagger's values is accepted.
	// +optional
	Provider Provider `json:"provider,omitempty"`

	// MetricsServer overrides the controller's Prometheus address for the
	// built-in metrics and for metric templates without an address.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	MetricsServer string `json:"metricsServer,omitempty"`

	// TargetRef is the workload whose new revisions are rolled out: a
	// Deployment, a DaemonSet, or a Knative Service (serving.knative.dev/v1).
	// +required
	// +kubebuilder:validation:XValidation:rule="!has(self.kind) || self.kind in ['Deployment', 'DaemonSet', 'Service']",message="targetRef.kind must be Deployment, DaemonSet or Service",fieldPath=".kind"
	TargetRef LocalObjectReference `json:"targetRef"`

	// AutoscalerRef is the autoscaler of the target (a HorizontalPodAutoscaler
	// or a KEDA ScaledObject); a "-primary" copy of it scales the primary.
	// +optional
	AutoscalerRef *AutoscalerReference `json:"autoscalerRef,omitempty"`

	// IngressRef is the Ingress of the NGINX and Skipper providers (Flagger);
	// Sluice does not use it.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.kind) || self.kind == 'Ingress'",message="ingressRef.kind must be Ingress",fieldPath=".kind"
	IngressRef *LocalObjectReference `json:"ingressRef,omitempty"`

	// RouteRef is the ApisixRoute of the APISIX provider (Flagger); Sluice
	// does not use it.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.kind) || self.kind == 'ApisixRoute'",message="routeRef.kind must be ApisixRoute",fieldPath=".kind"
	RouteRef *LocalObjectReference `json:"routeRef,omitempty"`

	// UpstreamRef is the Gloo Upstream whose settings the Gloo provider copies
	// (Flagger); Sluice does not use it.
	// +optional
	// +kubebuilder:validation:XValidation:rule="has(self.apiVersion) && has(self.kind) && self.kind == 'Upstream'",message="upstreamRef needs apiVersion and kind Upstream"
	UpstreamRef *CrossNamespaceObjectReference `json:"upstreamRef,omitempty"`

	// Service describes the Services Sluice generates for the target: the
	// apex "<name>", "<name>-primary" and "<name>-canary", and the route
	// that splits traffic between them.
	// +required
	Service CanaryService `json:"service"`

	// Analysis is how each step of a run is judged and how traffic moves.
	// +required
	Analysis *CanaryAnalysis `json:"analysis,omitempty"`

	// ProgressDeadlineSeconds is how long the primary or canary may take to
	// become ready before the run fails. Default 600.
	// +optional
	// +kubebuilder:validation:Minimum=1
	ProgressDeadlineSeconds *int32 `json:"progressDeadlineSeconds,omitempty"`

	// SkipAnalysis promotes a new revision without analysing it.
	// +optional
	SkipAnalysis bool `json:"skipAnalysis,omitempty"`

	// RevertOnDeletion, when the Canary is deleted, gives the target its
	// replicas and the apex Service its selector back, as they were before
	// Sluice took over.
	// +optional
	RevertOnDeletion bool `json:"revertOnDeletion,omitempty"`

	// Suspend stops new runs from starting and pauses a run in progress until
	// it is set back to false.
	// +optional
	Suspend bool `json:"suspend,omitempty"`
}

// LocalObjectReference names an object in the Canary's namespace.
type LocalObjectReference struct {
	// APIVersion of the referent, e.g. apps/v1.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	APIVersion string `json:"apiVersion"`

	// Kind of the referent, e.g. Deployment.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Kind string `json:"kind"`

	// Name of the referent.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// IsKnativeService reports whether r refers to a Knative Service.
func (r LocalObjectReference) IsKnativeService() bool {
	return r.Kind == "Service" && r.APIVersion == "serving.knative.dev/v1"
}

// CrossNamespaceObjectReference names an object, by default in the
// referrer's namespace.
type CrossNamespaceObjectReference struct {
	// APIVersion of the referent.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	APIVersion string `json:"apiVersion,omitempty"`

	// Kind of the referent.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Kind string `json:"kind,omitempty"`

	// Name of the referent.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// Namespace of the referent; the referrer's namespace when empty.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace,omitempty"`
}

// AutoscalerReference names the autoscaler of a canary's target.
//
// +kubebuilder:validation:XValidation:rule="!has(self.kind) || self.kind in ['HorizontalPodAutoscaler', 'ScaledObject']",message="autoscalerRef.kind must be HorizontalPodAutoscaler or ScaledObject",fieldPath=".kind"
type AutoscalerReference struct {
	// APIVersion of the autoscaler, e.g. autoscaling/v2 or keda.sh/v1alpha1.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	APIVersion string `json:"apiVersion"`

	// Kind of the autoscaler: HorizontalPodAutoscaler or ScaledObject.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Kind string `json:"kind"`

	// Name of the autoscaler.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// PrimaryScalerQueries maps a trigger name to the query the primary's
	// scaler uses instead of the target's, for scalers driven by queries.
	// +optional
	PrimaryScalerQueries map[string]string `json:"primaryScalerQueries,omitempty"`

	// PrimaryScalerReplicas overrides the replica bounds of the primary's
	// autoscaler.
	// +optional
	PrimaryScalerReplicas *ScalerReplicas `json:"primaryScalerReplicas,omitempty"`
}

// ScalerReplicas overrides the replica bounds of an autoscaler.
//
// +kubebuilder:validation:XValidation:rule="!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",message="primaryScalerReplicas.minReplicas must not be greater than maxReplicas",fieldPath=".minReplicas"
type ScalerReplicas struct {
	// MinReplicas is the lower bound.
	// +optional
	// +kubebuilder:validation:Minimum=1
	MinReplicas *int32 `json:"minReplicas,omitempty"`

	// MaxReplicas is the upper bound.
	// +optional
	// +kubebuilder:validation:Minimum=1
	MaxReplicas *int32 `json:"maxReplicas,omitempty"`
}

// TrafficDistribution is the traffic distribution preference of the
// generated Services.
//
// +kubebuilder:validation:Enum=PreferClose;PreferSameZone;PreferSameNode
type TrafficDistribution string

// CanaryService describes the Services generated for a canary and the route
// between them.
type CanaryService struct {
	// Name of the apex Service; the primary and canary Services are
	// "<name>-primary" and "<name>-canary". Defaults to targetRef.name. It
	// must be a DNS label of at most 55 characters, so that the names it
	// makes are valid Service names.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="size(self) <= 55 && self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="service.name must be a DNS label (lower-case letters, digits, '-') of at most 55 characters, so that <name>-primary and <name>-canary are valid Service names"
	Name string `json:"name,omitempty"`

	// Port of the generated Services, and of the route's backends.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`

	// PortName is the name of the Services' port. Default "http".
	// +optional
	// +kubebuilder:validation:MaxLength=63
	PortName string `json:"portName,omitempty"`

	// TargetPort is the container port, by number or name. Defaults to port.
	// +optional
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? (self >= 1 && self <= 65535) : (size(self) >= 1 && size(self) <= 15)",message="service.targetPort must be a port number from 1 to 65535 or a port name of at most 15 characters"
	TargetPort *intstr.IntOrString `json:"targetPort,omitempty"`

	// AppProtocol is set on the Services' port (e.g. http, kubernetes.io/h2c).
	// +optional
	// +kubebuilder:validation:MaxLength=253
	AppProtocol string `json:"appProtocol,omitempty"`

	// TrafficDistribution is set on the generated Services.
	// +optional
	TrafficDistribution TrafficDistribution `json:"trafficDistribution,omitempty"`

	// PortDiscovery adds every container port of the target to the generated
	// Services, besides port.
	// +optional
	PortDiscovery bool `json:"portDiscovery,omitempty"`

	// Headless generates headless Services (clusterIP: None).
	// +optional
	Headless bool `json:"headless,omitempty"`

	// Timeout is the whole-request timeout of the route (HTTPRoute
	// timeouts.request), e.g. "30s".
	// +optional
	// +kubebuilder:validation:Pattern=`^([0-9]{1,5}(h|m|s|ms)){1,4}$`
	Timeout string `json:"timeout,omitempty"`

	// BackendTimeout is the timeout of each request to a backend, retries
	// included separately (HTTPRoute timeouts.backendRequest).
	// +optional
	// +kubebuilder:validation:Pattern=`^([0-9]{1,5}(h|m|s|ms)){1,4}$`
	BackendTimeout string `json:"backendTimeout,omitempty"`

	// Gateways are the Istio gateways of the generated VirtualService
	// (Flagger's Istio provider); Sluice does not use them.
	// +optional
	Gateways []string `json:"gateways,omitempty"`

	// GatewayRefs are the parents the generated HTTPRoute attaches to. Empty
	// means the apex Service itself (GAMMA, east-west traffic).
	// +optional
	// +kubebuilder:validation:MaxItems=32
	GatewayRefs []ParentReference `json:"gatewayRefs,omitempty"`

	// HTTPRouteRef names an HTTPRoute the user owns, in the Canary's namespace.
	// Sluice then changes only the backendRefs of the rules that point at the
	// target's services and leaves every other rule alone. Empty means Sluice
	// owns a route named after the apex Service.
	// +optional
	HTTPRouteRef *LocalRouteReference `json:"httpRouteRef,omitempty"`

	// Hosts are the hostnames of the generated route.
	// +optional
	Hosts []string `json:"hosts,omitempty"`

	// Delegation generates Istio delegate VirtualServices (Flagger's Istio
	// provider); Sluice does not use it.
	// +optional
	Delegation bool `json:"delegation,omitempty"`

	// TrafficPolicy is an Istio DestinationRule traffic policy (Flagger's
	// Istio provider). Sluice keeps it as written and does not use it.
	// +optional
	TrafficPolicy *runtime.RawExtension `json:"trafficPolicy,omitempty"`

	// Match are the request matches of the generated route; default every
	// request (path prefix "/").
	// +optional
	// +kubebuilder:validation:MaxItems=32
	Match []HTTPMatchRequest `json:"match,omitempty"`

	// Rewrite rewrites the path and authority of requests on the route.
	// +optional
	Rewrite *HTTPRewrite `json:"rewrite,omitempty"`

	// Retries is the retry policy of the route.
	// +optional
	Retries *HTTPRetry `json:"retries,omitempty"`

	// Headers adds, sets and removes request and response headers on the
	// route.
	// +optional
	Headers *Headers `json:"headers,omitempty"`

	// Mirror copies requests to other backends; their responses are dropped.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	Mirror []HTTPRequestMirrorFilter `json:"mirror,omitempty"`

	// CorsPolicy is the Cross-Origin Resource Sharing policy of the route.
	// +optional
	CorsPolicy *CorsPolicy `json:"corsPolicy,omitempty"`

	// MeshName is the App Mesh mesh (Flagger's App Mesh provider); Sluice
	// does not use it.
	// +optional
	MeshName string `json:"meshName,omitempty"`

	// Backends are App Mesh virtual-node backends (Flagger's App Mesh
	// provider); Sluice does not use them.
	// +optional
	Backends []string `json:"backends,omitempty"`

	// Apex is metadata for the apex Service, also set on the generated route.
	// +optional
	Apex *CustomMetadata `json:"apex,omitempty"`

	// Primary is metadata for the primary Service.
	// +optional
	Primary *CustomMetadata `json:"primary,omitempty"`

	// Canary is metadata for the canary Service.
	// +optional
	Canary *CustomMetadata `json:"canary,omitempty"`

	// UnmanagedMetadata lists label and annotation keys on the generated
	// Services that Sluice neither sets nor removes.
	// +optional
	UnmanagedMetadata *UnmanagedMetadata `json:"unmanagedMetadata,omitempty"`
}

// CustomMetadata is labels and annotations set on a generated object.
type CustomMetadata struct {
	// Labels to set.
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// Annotations to set.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// UnmanagedMetadata lists metadata keys that Sluice leaves alone.
type UnmanagedMetadata struct {
	// Annotations are annotation keys.
	// +optional
	Annotations []string `json:"annotations,omitempty"`
	// Labels are label keys.
	// +optional
	Labels []string `json:"labels,omitempty"`
}

// ParentReference is a parent a generated HTTPRoute attaches to, with the
// fields and defaults of a Gateway API parentRef.
type ParentReference struct {
	// Group of the parent. Default gateway.networking.k8s.io; "" (or "core")
	// with kind Service for a GAMMA parent.
	// +optional
	// +kubebuilder:default=gateway.networking.k8s.io
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Group *string `json:"group,omitempty"`

	// Kind of the parent. Default Gateway.
	// +optional
	// +kubebuilder:default=Gateway
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$`
	Kind *string `json:"kind,omitempty"`

	// Namespace of the parent; the Canary's namespace when unset.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespace *string `json:"namespace,omitempty"`

	// Name of the parent.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// SectionName is a listener (Gateway) or port name (Service) of the
	// parent.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	SectionName *string `json:"sectionName,omitempty"`

	// Port of the parent to attach to.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port *int32 `json:"port,omitempty"`
}

// HTTPRequestMirrorFilter mirrors requests to a backend.
type HTTPRequestMirrorFilter struct {
	// BackendRef is where requests are mirrored.
	// +required
	BackendRef BackendObjectReference `json:"backendRef"`
}

// BackendObjectReference is a route backend, with the fields and defaults of
// a Gateway API backendRef.
//
// +kubebuilder:validation:XValidation:rule="((!has(self.group) || size(self.group) == 0) && (!has(self.kind) || self.kind == 'Service')) ? has(self.port) : true",message="backendRef.port is required for a Service backend",fieldPath=".port"
type BackendObjectReference struct {
	// Group of the backend; "" (the core group) by default.
	// +optional
	// +kubebuilder:default=""
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Group *string `json:"group,omitempty"`

	// Kind of the backend; Service by default.
	// +optional
	// +kubebuilder:default=Service
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$`
	Kind *string `json:"kind,omitempty"`

	// Name of the backend.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// Namespace of the backend; the Canary's namespace when unset.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespace *string `json:"namespace,omitempty"`

	// Port of the backend; required for a Service.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port *int32 `json:"port,omitempty"`
}

// StringMatch matches a string by at most one of exact value, prefix,
// suffix or RE2 regular expression (Istio's StringMatch).
//
// +kubebuilder:validation:XValidation:rule="(has(self.exact) ? 1 : 0) + (has(self.prefix) ? 1 : 0) + (has(self.suffix) ? 1 : 0) + (has(self.regex) ? 1 : 0) <= 1",message="a string match takes only one of exact, prefix, suffix or regex"
type StringMatch struct {
	// Exact matches the whole string.
	// +optional
	Exact string `json:"exact,omitempty"`
	// Prefix matches the start of the string.
	// +optional
	Prefix string `json:"prefix,omitempty"`
	// Suffix matches the end of the string.
	// +optional
	Suffix string `json:"suffix,omitempty"`
	// Regex is an RE2 regular expression the whole string must match.
	// +optional
	Regex string `json:"regex,omitempty"`
}

// HTTPMatchRequest is a set of conditions a request must all meet (Istio's
// HTTPMatchRequest). Sluice uses uri, method, headers and queryParams; the
// others are accepted for Flagger compatibility.
type HTTPMatchRequest struct {
	// Name of the match, for logs.
	// +optional
	Name string `json:"name,omitempty"`
	// URI matches the request path.
	// +optional
	URI *StringMatch `json:"uri,omitempty"`
	// Scheme matches the request scheme.
	// +optional
	Scheme *StringMatch `json:"scheme,omitempty"`
	// Method matches the request method.
	// +optional
	Method *StringMatch `json:"method,omitempty"`
	// Authority matches the request authority (Host).
	// +optional
	Authority *StringMatch `json:"authority,omitempty"`
	// Headers match request headers by name (lower case); an A/B test
	// commonly matches a header or a cookie.
	// +optional
	Headers map[string]StringMatch `json:"headers,omitempty"`
	// Port matches the destination port.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port,omitempty"`
	// SourceLabels match the labels of the calling workload.
	// +optional
	SourceLabels map[string]string `json:"sourceLabels,omitempty"`
	// Gateways restrict the match to these Istio gateways.
	// +optional
	Gateways []string `json:"gateways,omitempty"`
	// QueryParams match query parameters by name.
	// +optional
	QueryParams map[string]StringMatch `json:"queryParams,omitempty"`
	// IgnoreURICase makes the uri match case-insensitive.
	// +optional
	IgnoreURICase bool `json:"ignoreUriCase,omitempty"`
	// WithoutHeaders match requests that do not have these headers.
	// +optional
	WithoutHeaders map[string]StringMatch `json:"withoutHeaders,omitempty"`
	// SourceNamespace matches the namespace of the calling workload.
	// +optional
	SourceNamespace string `json:"sourceNamespace,omitempty"`
}

// RewriteType is how a rewrite replaces the path.
//
// +kubebuilder:validation:Enum=ReplaceFullPath;ReplacePrefixMatch
type RewriteType string

const (
	// RewriteFullPath replaces the whole path (the default).
	RewriteFullPath RewriteType = "ReplaceFullPath"
	// RewritePrefixMatch replaces the prefix the route matched.
	RewritePrefixMatch RewriteType = "ReplacePrefixMatch"
)

// HTTPRewrite rewrites a request's path and authority before it is
// forwarded.
type HTTPRewrite struct {
	// URI replaces the path, or the matched prefix with type
	// ReplacePrefixMatch.
	// +optional
	URI string `json:"uri,omitempty"`
	// Authority replaces the Host header.
	// +optional
	Authority string `json:"authority,omitempty"`
	// Type is ReplaceFullPath (default) or ReplacePrefixMatch.
	// +optional
	Type RewriteType `json:"type,omitempty"`
}

// GetType returns the rewrite type, ReplaceFullPath when unset.
func (r *HTTPRewrite) GetType() RewriteType {
	if r.Type == RewritePrefixMatch {
		return RewritePrefixMatch
	}
	return RewriteFullPath
}

// HTTPRetry is the retry policy of a route.
type HTTPRetry struct {
	// Attempts is the number of retries of a request.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Attempts int `json:"attempts,omitempty"`
	// PerTryTimeout is the timeout of each attempt, e.g. "2s".
	// +optional
	PerTryTimeout string `json:"perTryTimeout,omitempty"`
	// RetryOn lists the conditions that cause a retry, comma-separated
	// (e.g. "gateway-error,connect-failure").
	// +optional
	RetryOn string `json:"retryOn,omitempty"`
}

// Headers are header operations on requests and responses.
type Headers struct {
	// Request operations apply before the request is forwarded.
	// +optional
	Request *HeaderOperations `json:"request,omitempty"`
	// Response operations apply before the response is returned.
	// +optional
	Response *HeaderOperations `json:"response,omitempty"`
}

// HeaderOperations set, add and remove headers.
type HeaderOperations struct {
	// Set overwrites these headers.
	// +optional
	Set map[string]string `json:"set,omitempty"`
	// Add appends these headers.
	// +optional
	Add map[string]string `json:"add,omitempty"`
	// Remove deletes these headers.
	// +optional
	Remove []string `json:"remove,omitempty"`
}

// CorsPolicy is a Cross-Origin Resource Sharing policy.
type CorsPolicy struct {
	// AllowOrigin lists the origins allowed to make CORS requests.
	// +optional
	AllowOrigin []string `json:"allowOrigin,omitempty"`
	// AllowOrigins matches the origins allowed to make CORS requests. Kept for
	// Flagger compatibility; use allowOrigin, which routes support.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	AllowOrigins []StringMatch `json:"allowOrigins,omitempty"`
	// AllowMethods lists the methods allowed (Access-Control-Allow-Methods).
	// +optional
	AllowMethods []string `json:"allowMethods,omitempty"`
	// AllowHeaders lists the request headers allowed
	// (Access-Control-Allow-Headers).
	// +optional
	AllowHeaders []string `json:"allowHeaders,omitempty"`
	// ExposeHeaders lists the response headers browsers may read
	// (Access-Control-Expose-Headers).
	// +optional
	ExposeHeaders []string `json:"exposeHeaders,omitempty"`
	// MaxAge is how long a preflight response may be cached, e.g. "24h".
	// +optional
	MaxAge string `json:"maxAge,omitempty"`
	// AllowCredentials allows requests with credentials
	// (Access-Control-Allow-Credentials).
	// +optional
	AllowCredentials bool `json:"allowCredentials,omitempty"`
}

// NoDataPolicy is what a check without data counts as.
//
// +kubebuilder:validation:Enum=hold;fail
type NoDataPolicy string

const (
	// NoDataHold holds the run where it is, neither advancing nor counting a
	// failed check, until data arrives or the progress deadline passes. The
	// default: no traffic is not evidence of failure.
	NoDataHold NoDataPolicy = "hold"
	// NoDataFail counts a check without data as failed, as Flagger does.
	NoDataFail NoDataPolicy = "fail"
)

// WindowPolicy is what a run does when its analysis window closes.
//
// +kubebuilder:validation:Enum=finish;hold
type WindowPolicy string

const (
	// WindowFinish lets a run that started inside a window go on to
	// promotion or rollback after the window closes (the default).
	WindowFinish WindowPolicy = "finish"
	// WindowHold stops a run from advancing outside the windows: traffic stays
	// at its current weight, checks keep running, and it advances again when
	// the next window opens.
	WindowHold WindowPolicy = "hold"
)

// CanaryAnalysis is how each step of a run is judged and how traffic moves.
//
// Exactly one of stepWeight, stepWeights (a canary release) or iterations
// (A/B testing with match, blue/green without) sets the strategy.
//
// +kubebuilder:validation:XValidation:rule="has(self.stepWeight) || has(self.stepWeights) || has(self.iterations)",message="analysis needs one of stepWeight or stepWeights (canary release) or iterations (A/B testing with match, blue/green without)"
// +kubebuilder:validation:XValidation:rule="(has(self.stepWeight) ? 1 : 0) + (has(self.stepWeights) ? 1 : 0) + (has(self.iterations) ? 1 : 0) <= 1",message="analysis.stepWeight, analysis.stepWeights and analysis.iterations exclude one another: set exactly one"
// +kubebuilder:validation:XValidation:rule="!has(self.stepWeight) || !has(self.maxWeight) || self.maxWeight == 0 || self.stepWeight <= self.maxWeight",message="analysis.stepWeight must not be greater than analysis.maxWeight",fieldPath=".stepWeight"
type CanaryAnalysis struct {
	// Interval is the time between two steps of a run, a duration of at least
	// 10s, e.g. "30s" or "1m".
	// +required
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('10s')",message="analysis.interval must be a duration of at least 10s, such as 30s or 1m"
	Interval string `json:"interval"`

	// Threshold is how many failed checks a run may accumulate before it is
	// rolled back; the count is over the whole run, not consecutive.
	// Default 1.
	// +required
	// +kubebuilder:validation:Minimum=0
	Threshold int `json:"threshold"`

	// Iterations is the number of intervals an A/B test (with match) or a
	// blue/green run (without) is analysed for before promotion.
	// +optional
	// +kubebuilder:validation:Minimum=1
	Iterations int `json:"iterations,omitempty"`

	// Mirror copies traffic to the canary: for blue/green during every
	// iteration, for a canary release for one interval before the first
	// weighted step.
	// +optional
	Mirror bool `json:"mirror,omitempty"`

	// MirrorWeight is the percentage of traffic mirrored (0-100).
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	MirrorWeight int `json:"mirrorWeight,omitempty"`

	// MaxWeight is the weight at which the canary is promoted, with
	// stepWeight. Default 100. With stepWeights the last step is the maximum
	// instead.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	MaxWeight int `json:"maxWeight,omitempty"`

	// StepWeight is the weight added to the canary at each step.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	StepWeight int `json:"stepWeight,omitempty"`

	// StepWeights are the canary's weights, step by step, strictly increasing,
	// e.g. [1, 5, 10, 25, 50].
	// +optional
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=100
	// +kubebuilder:validation:XValidation:rule="self.all(w, self.exists_one(v, v == w)) && self.isSorted()",message="analysis.stepWeights must be strictly increasing"
	StepWeights []int `json:"stepWeights,omitempty"`

	// StepWeightPromotion is the weight moved back to the primary at each step
	// of the promotion; 0 moves all of it at once.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	StepWeightPromotion int `json:"stepWeightPromotion,omitempty"`

	// PrimaryReadyThreshold is the percentage of the primary's pods that must
	// be available for it to count as ready. Default 100.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	PrimaryReadyThreshold *int `json:"primaryReadyThreshold,omitempty"`

	// CanaryReadyThreshold is the percentage of the canary's pods that must be
	// available for it to count as ready. Default 100.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	CanaryReadyThreshold *int `json:"canaryReadyThreshold,omitempty"`

	// Alerts are the notifications sent about this canary's runs; they
	// replace the controller's global notifier.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	Alerts []CanaryAlert `json:"alerts,omitempty"`

	// Metrics are the checks run at every step.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	Metrics []CanaryMetric `json:"metrics,omitempty"`

	// Webhooks are called at points of a run: gates, load tests, checks and
	// event sinks.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	Webhooks []CanaryWebhook `json:"webhooks,omitempty"`

	// Match are the request matches routed to the canary in an A/B test
	// (with iterations).
	// +optional
	// +kubebuilder:validation:MaxItems=32
	Match []HTTPMatchRequest `json:"match,omitempty"`

	// SessionAffinity keeps a client that reached the canary on the canary for
	// the rest of the run, by cookie.
	// +optional
	SessionAffinity *SessionAffinity `json:"sessionAffinity,omitempty"`

	// NoDataPolicy is what a check that finds no data counts as: "hold"
	// (default) waits for data without counting a failure, until the
	// progress deadline; "fail" counts a failed check, as Flagger does.
	// +optional
	NoDataPolicy NoDataPolicy `json:"noDataPolicy,omitempty"`

	// Windows are the times a run may advance in, e.g. working hours. Empty
	// means always. A new revision seen outside every window waits for the
	// next one.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	Windows []AnalysisWindow `json:"windows,omitempty"`

	// WindowPolicy is what a run does when its window closes: "finish"
	// (default) goes on to the end, "hold" stays at its weight until the next
	// window opens.
	// +optional
	WindowPolicy WindowPolicy `json:"windowPolicy,omitempty"`
}

// AnalysisWindow is a recurring time span: it opens at each time of its cron
// schedule and stays open for its duration.
type AnalysisWindow struct {
	// Schedule is a cron expression (minute hour day-of-month month
	// day-of-week, or a descriptor such as @daily) for when the window opens,
	// e.g. "0 9 * * 1-5" for 09:00 on working days.
	// +required
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:XValidation:rule="self.matches('^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[^ ]+( +[^ ]+){4})$')",message="windows[].schedule must be a cron expression of five fields (minute hour day-of-month month day-of-week) or a descriptor such as @daily"
	Schedule string `json:"schedule"`

	// Duration is how long the window stays open, e.g. "8h".
	// +required
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) > duration('0s')",message="windows[].duration must be a positive duration, such as 8h"
	Duration string `json:"duration"`

	// TimeZone is the IANA time zone of the schedule, e.g. "Europe/Paris".
	// Default UTC.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$`
	TimeZone string `json:"timezone,omitempty"`
}

// SameSite is the SameSite attribute of a cookie.
//
// +kubebuilder:validation:Enum=Strict;Lax;None
type SameSite string

// SessionAffinity keeps a client on the canary, by cookie, once it got
// there.
//
// +kubebuilder:validation:XValidation:rule="!has(self.primaryCookieName) || !has(self.cookieName) || self.primaryCookieName != self.cookieName",message="sessionAffinity.primaryCookieName must differ from sessionAffinity.cookieName",fieldPath=".primaryCookieName"
type SessionAffinity struct {
	// CookieName is the name of the cookie that sticks a client to the
	// canary.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	CookieName string `json:"cookieName"`

	// PrimaryCookieName, when set, is the name of a cookie that sticks a
	// client that reached the primary to the primary for one interval.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	PrimaryCookieName string `json:"primaryCookieName,omitempty"`

	// Domain is the cookie's Domain attribute.
	// +optional
	Domain string `json:"domain,omitempty"`

	// HTTPOnly sets the cookie's HttpOnly attribute.
	// +optional
	HTTPOnly bool `json:"httpOnly,omitempty"`

	// MaxAge is the cookie's lifetime in seconds. Default 86400 (a day).
	// +optional
	// +kubebuilder:default=86400
	// +kubebuilder:validation:Minimum=0
	MaxAge int `json:"maxAge,omitempty"`

	// Partitioned sets the cookie's Partitioned attribute.
	// +optional
	Partitioned bool `json:"partitioned,omitempty"`

	// Path is the cookie's Path attribute.
	// +optional
	Path string `json:"path,omitempty"`

	// SameSite is the cookie's SameSite attribute: Strict, Lax or None.
	// +optional
	SameSite SameSite `json:"sameSite,omitempty"`

	// Secure sets the cookie's Secure attribute.
	// +optional
	Secure bool `json:"secure,omitempty"`
}

// Names of the built-in metrics, which need no template.
const (
	// MetricRequestSuccessRate is the percentage (0-100) of requests to the
	// canary that did not fail; its threshold is a minimum.
	MetricRequestSuccessRate = "request-success-rate"
	// MetricRequestDuration is the 99th percentile of the canary's request
	// latency in milliseconds; its threshold is a maximum.
	MetricRequestDuration = "request-duration"
)

// CanaryMetric is a check run at every step of a run: a built-in metric by
// name, or a query from a MetricTemplate, and the range its value must stay
// in.
type CanaryMetric struct {
	// Name of the check; a built-in metric (request-success-rate,
	// request-duration) when it has neither templateRef nor query.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// Interval is the window the metric is computed over, e.g. "1m".
	// Default 1m.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) > duration('0s')",message="metrics[].interval must be a positive duration, such as 1m"
	Interval string `json:"interval,omitempty"`

	// Threshold is the deprecated single bound: a minimum for
	// request-success-rate, a maximum otherwise. Use thresholdRange.
	// +optional
	Threshold Number `json:"threshold,omitempty"`

	// ThresholdRange is the range the value must stay in; a bound left out is
	// unbounded.
	// +optional
	ThresholdRange *CanaryThresholdRange `json:"thresholdRange,omitempty"`

	// Query is a deprecated inline Prometheus query run against the
	// canary's metricsServer. Use templateRef.
	// +optional
	Query string `json:"query,omitempty"`

	// TemplateRef names the MetricTemplate whose query this check runs, in
	// the Canary's namespace unless namespace is set.
	// +optional
	TemplateRef *CrossNamespaceObjectReference `json:"templateRef,omitempty"`

	// TemplateVariables are values the template reads as
	// {{ variables.<key> }}.
	// +optional
	TemplateVariables map[string]string `json:"templateVariables,omitempty"`
}

// CanaryThresholdRange is the range a metric's value must stay in.
//
// +kubebuilder:validation:XValidation:rule="!has(self.min) || !has(self.max) || self.min <= self.max",message="thresholdRange.min must not be greater than thresholdRange.max",fieldPath=".min"
type CanaryThresholdRange struct {
	// Min is the smallest value that passes.
	// +optional
	Min *Number `json:"min,omitempty"`
	// Max is the largest value that passes.
	// +optional
	Max *Number `json:"max,omitempty"`
}

// AlertSeverity filters the alerts sent to a provider: info receives
// everything, warn receives warnings and errors, error only errors.
//
// +kubebuilder:validation:Enum="";info;warn;error
type AlertSeverity string

const (
	// SeverityInfo receives every alert (the default).
	SeverityInfo AlertSeverity = "info"
	// SeverityWarn receives warnings and errors.
	SeverityWarn AlertSeverity = "warn"
	// SeverityError receives errors only.
	SeverityError AlertSeverity = "error"
)

// CanaryAlert sends a canary's alerts to an AlertProvider.
type CanaryAlert struct {
	// Name of the alert.
	// +required
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`

	// Severity is the least severe alert sent: info (default), warn or error.
	// +optional
	Severity AlertSeverity `json:"severity,omitempty"`

	// ProviderRef names the AlertProvider, in the Canary's namespace unless
	// namespace is set.
	// +required
	ProviderRef CrossNamespaceObjectReference `json:"providerRef"`

	// WeightSteps also sends an info alert at every traffic step.
	// +optional
	WeightSteps bool `json:"weightSteps,omitempty"`
}

// HookType is when a webhook is called and what its answer means.
//
// +kubebuilder:validation:Enum="";confirm-rollout;pre-rollout;rollout;confirm-traffic-increase;confirm-promotion;post-rollout;rollback;event
type HookType string

const (
	// ConfirmRolloutHook gates the start of a run: until it answers with
	// success the canary is Waiting.
	ConfirmRolloutHook HookType = "confirm-rollout"
	// PreRolloutHook runs before any traffic reaches the canary; a failure
	// counts as a failed check.
	PreRolloutHook HookType = "pre-rollout"
	// RolloutHook runs at every step before the metrics, as a check; a
	// failure counts as a failed check. An empty type means rollout.
	RolloutHook HookType = "rollout"
	// ConfirmTrafficIncreaseHook gates each increase of the canary's weight.
	ConfirmTrafficIncreaseHook HookType = "confirm-traffic-increase"
	// ConfirmPromotionHook gates promotion: until it answers with success the
	// canary is WaitingPromotion and its checks keep running.
	ConfirmPromotionHook HookType = "confirm-promotion"
	// PostRolloutHook is called after promotion or rollback; its answer is
	// only recorded.
	PostRolloutHook HookType = "post-rollout"
	// RollbackHook is asked at every step; success rolls the run back.
	RollbackHook HookType = "rollback"
	// EventHook receives every event of the canary.
	EventHook HookType = "event"
)

// HookTypes lists every webhook type, in the order of a run.
var HookTypes = []HookType{ConfirmRolloutHook, PreRolloutHook, RolloutHook, ConfirmTrafficIncreaseHook, ConfirmPromotionHook, PostRolloutHook, RollbackHook, EventHook}

// CanaryWebhook is an HTTP endpoint called at a point of a run. The call is
// a JSON POST of the canary's name, namespace, phase, checksum and the
// webhook's metadata; any 2xx status is success (Flagger's 200-202 limit is not kept).
type CanaryWebhook struct {
	// Type is when the webhook is called: confirm-rollout, pre-rollout,
	// rollout (default), confirm-traffic-increase, confirm-promotion,
	// post-rollout, rollback or event.
	// +optional
	Type HookType `json:"type,omitempty"`

	// Name of the webhook.
	// +required
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`

	// URL of the webhook, http or https.
	// +required
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHost() != ''",message="webhooks[].url must be an absolute http or https URL"
	URL string `json:"url"`

	// MuteAlert stops the alerts this webhook's answers would raise.
	// +optional
	MuteAlert bool `json:"muteAlert,omitempty"`

	// Timeout of a call, e.g. "30s". Default 10s.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) > duration('0s')",message="webhooks[].timeout must be a positive duration, such as 30s"
	Timeout string `json:"timeout,omitempty"`

	// Metadata is sent with each call; a load tester reads its command here.
	// +optional
	Metadata map[string]string `json:"metadata,omitempty"`

	// Retries is how many times a failed call is retried.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Retries int `json:"retries,omitempty"`

	// DisableTLS skips verification of the webhook's certificate.
	// +optional
	DisableTLS bool `json:"disableTLS,omitempty"`
}

// LocalRouteReference names an HTTPRoute in the Canary's namespace.
type LocalRouteReference struct {
	// Name of the HTTPRoute.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
}
