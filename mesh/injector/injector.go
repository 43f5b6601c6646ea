// Package injector adds Sluice's sidecar to pods: the sluice-proxy container,
// the `sluice-proxy init` container that writes the pod's iptables rules, the
// projected service-account token the proxy proves its identity with, and the
// trust anchors it verifies peers against.
//
// Inject is the pure mutation, shared by the mutating admission webhook
// (Handler, which answers with a JSON Patch made by CreatePatch) and by
// `sluice inject`, which applies the same patch to manifests offline.
//
// # When a pod is injected
//
// A pod is injected when its annotation sluice.dev/inject is "enabled", or
// when it has none and its namespace's is "enabled". A pod annotated
// "disabled" is never injected, whatever its namespace says. Pods that already
// have a sluice-proxy container, and pods on the host network, are left alone.
// Every decision is explained in the Report.
//
// # Configuration annotations
//
// Annotations config.sluice.dev/* on the pod, or else on its namespace, tune
// the proxy: skip-inbound-ports, skip-outbound-ports, skip-subnets,
// opaque-ports, proxy-cpu-request, proxy-cpu-limit, proxy-memory-request,
// proxy-memory-limit, proxy-log-level, default-inbound-policy, proxy-image and
// proxy-version. An invalid value is an error naming the annotation and the
// value; the webhook then admits the pod unmodified, with that error as a
// warning (it fails open: a typo must not stop a workload from running).
//
// # Sidecar modes
//
// With Config.NativeSidecars (Kubernetes 1.29 and later, see
// NativeSidecarsSupported) the proxy is an init container with restartPolicy
// Always, right after sluice-init, with a startup probe on /ready: the
// application's containers start only once the proxy is ready, and Jobs
// complete because the kubelet stops the sidecar after the main containers
// exit. Without it, the proxy is the first container, with a postStart hook
// (`sluice-proxy await`) that holds the next containers until it is ready; a
// Job's pod then never completes, which the Report warns about.
//
// # The proxy's configuration
//
// The proxy gets its configuration file's content in the environment variable
// SLUICE_PROXY_CONFIG_YAML (rendered as JSON, which is YAML too), with
// $(POD_NAME), $(POD_NAMESPACE) and $(POD_SERVICE_ACCOUNT) references that the
// kubelet expands from the downward-API variables defined before it. The
// proxy reaches the destination service at controlPlane.address and the
// identity service at controlPlane.identityAddress. Its inbound side runs
// with originalDst: each redirected connection goes to the port its client
// dialled, so every TCP port of the pod is served, declared or not (but
// those in skip-inbound-ports); inbound.app, the first declared TCP port, is
// only the fallback for connections that were not redirected.
package injector

import (
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/sluicehq/sluice/mesh/identity"
)

// Annotations and labels read or written by the injector.
const (
	// AnnotationInject, on a namespace or a pod, is "enabled" or "disabled".
	AnnotationInject = "sluice.dev/inject"
	// InjectEnabled and InjectDisabled are AnnotationInject's values.
	InjectEnabled  = "enabled"
	InjectDisabled = "disabled"

	// ConfigAnnotationPrefix starts every configuration annotation.
	ConfigAnnotationPrefix = "config.sluice.dev/"

	AnnotationSkipInboundPorts     = ConfigAnnotationPrefix + "skip-inbound-ports"
	AnnotationSkipOutboundPorts    = ConfigAnnotationPrefix + "skip-outbound-ports"
	AnnotationSkipSubnets          = ConfigAnnotationPrefix + "skip-subnets"
	AnnotationOpaquePorts          = ConfigAnnotationPrefix + "opaque-ports"
	AnnotationProxyCPURequest      = ConfigAnnotationPrefix + "proxy-cpu-request"
	AnnotationProxyMemoryRequest   = ConfigAnnotationPrefix + "proxy-memory-request"
	AnnotationProxyCPULimit        = ConfigAnnotationPrefix + "proxy-cpu-limit"
	AnnotationProxyMemoryLimit     = ConfigAnnotationPrefix + "proxy-memory-limit"
	AnnotationProxyLogLevel        = ConfigAnnotationPrefix + "proxy-log-level"
	AnnotationDefaultInboundPolicy = ConfigAnnotationPrefix + "default-inbound-policy"
	AnnotationProxyImage           = ConfigAnnotationPrefix + "proxy-image"
	AnnotationProxyVersion         = ConfigAnnotationPrefix + "proxy-version"

	// AnnotationCreatedBy and AnnotationInjectedVersion are written on
	// injected pods: who injected them, and the proxy version injected.
	AnnotationCreatedBy       = "sluice.dev/created-by"
	AnnotationInjectedVersion = "sluice.dev/proxy-version"
	// AnnotationDefaultContainer is kubectl's default container for logs and
	// exec; set to the first application container when the proxy goes first.
	AnnotationDefaultContainer = "kubectl.kubernetes.io/default-container"

	// LabelControlPlaneNamespace names the control plane an injected pod uses.
	LabelControlPlaneNamespace = "sluice.dev/control-plane-ns"
	// LabelWorkloadNamespace is the injected pod's namespace.
	LabelWorkloadNamespace = "sluice.dev/workload-ns"
	// LabelWorkloadPrefix + a kind ("deployment", "job", ...) names the pod's
	// workload, as Linkerd's linkerd.io/proxy-<kind> does.
	LabelWorkloadPrefix = "sluice.dev/proxy-"
	// LabelControlPlaneComponent marks the control plane's own pods, which
	// the webhook never sees.
	LabelControlPlaneComponent = "sluice.dev/control-plane-component"
)

// Names, paths and ports of what the injector adds.
const (
	ProxyContainerName = "sluice-proxy"
	InitContainerName  = "sluice-init"

	// TokenVolumeName is the projected service-account token's volume.
	TokenVolumeName = "sluice-identity-token"
	// TokenAudience is the audience of that token; the identity service
	// checks it with a TokenReview.
	TokenAudience = "identity.sluice.dev"
	// TokenExpirationSeconds is the token's lifetime; the kubelet renews it.
	TokenExpirationSeconds = 86400
	// TokenDir holds the token, TokenPath is the token file.
	TokenDir  = "/var/run/sluice/identity"
	TokenPath = TokenDir + "/token"

	// TrustRootsConfigMap is the ConfigMap, in the pod's namespace, whose key
	// TrustRootsKey holds the mesh's trust anchors (PEM). A pod cannot mount
	// a ConfigMap of another namespace, so the control plane publishes it in
	// every meshed namespace.
	TrustRootsConfigMap = "sluice-identity-trust-roots"
	TrustRootsKey       = "ca.crt"
	// TrustRootsVolumeName is its volume, mounted at TrustRootsDir.
	TrustRootsVolumeName = "sluice-identity-trust-roots"
	TrustRootsDir        = "/var/run/sluice/trust-roots"
	TrustRootsPath       = TrustRootsDir + "/" + TrustRootsKey

	// XtablesVolumeName is an emptyDir at /run for the iptables lock file,
	// since the init container's root filesystem is read-only.
	XtablesVolumeName = "sluice-init-xtables-lock"

	// ConfigEnv carries the proxy's configuration (YAML or JSON).
	ConfigEnv = "SLUICE_PROXY_CONFIG_YAML"
	// LogLevelEnv is the proxy's --log-level default.
	LogLevelEnv = "SLUICE_PROXY_LOG_LEVEL"

	ProxyUID        = 2102
	InboundPort     = 4143
	OutboundPort    = 4140
	AdminPort       = 4191
	DestinationPort = 8086
	IdentityPort    = 8080

	// InboundPortName and AdminPortName name the proxy's container ports.
	InboundPortName = "sluice-proxy"
	AdminPortName   = "sluice-admin"
)

// Defaults of Config's fields.
const (
	DefaultProxyImage     = "ghcr.io/sluicehq/sluice-proxy"
	DefaultProxyVersion   = "dev"
	DefaultProxyPath      = "/usr/local/bin/sluice-proxy"
	DefaultClusterDomain  = "cluster.local"
	DefaultLogLevel       = "info"
	DefaultCreatedBy      = "sluice"
	DestinationService    = "sluice-destination"
	IdentityService       = "sluice-identity"
	defaultPullPolicy     = corev1.PullIfNotPresent
	defaultAwaitTimeout   = "2m"
	startupProbeThreshold = 120
)

// Config is what the injector needs to know besides the pod: the control
// plane's coordinates and the proxy's defaults. Empty fields take their
// defaults; NativeSidecars has none (false is classic sidecars), so start
// from DefaultConfig.
type Config struct {
	// ControlPlaneNamespace is where the control plane runs; default "sluice".
	ControlPlaneNamespace string
	// TrustDomain ends every identity; default "cluster.local".
	TrustDomain string
	// ClusterDomain ends service DNS names; default "cluster.local".
	ClusterDomain string
	// ProxyImage and ProxyVersion make the image, ProxyImage:ProxyVersion,
	// of both the proxy and the init container.
	ProxyImage   string
	ProxyVersion string
	// ProxyPath is the sluice-proxy binary inside the image, for the
	// classic sidecar's postStart hook. The image's entrypoint must be it too.
	ProxyPath string
	// ImagePullPolicy of the added containers; default IfNotPresent.
	ImagePullPolicy corev1.PullPolicy
	// NativeSidecars makes the proxy a native sidecar; the caller decides
	// from the API server's version (NativeSidecarsSupported).
	NativeSidecars bool
	// LogLevel is the proxy's default log level; default "info".
	LogLevel string
	// DefaultInboundPolicy is the default inbound policy; empty leaves the
	// proxy's own default (all-unauthenticated).
	DefaultInboundPolicy string
	// Resources are the proxy's default requests and limits.
	Resources corev1.ResourceRequirements
	// CreatedBy is written in the sluice.dev/created-by annotation.
	CreatedBy string
}

// DefaultConfig returns the defaults, with native sidecars.
func DefaultConfig() Config {
	return Config{NativeSidecars: true}.withDefaults()
}

func (c Config) withDefaults() Config {
	set := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	set(&c.ControlPlaneNamespace, identity.DefaultControlNamespace)
	set(&c.TrustDomain, identity.DefaultTrustDomain)
	set(&c.ClusterDomain, DefaultClusterDomain)
	set(&c.ProxyImage, DefaultProxyImage)
	set(&c.ProxyVersion, DefaultProxyVersion)
	set(&c.ProxyPath, DefaultProxyPath)
	set(&c.LogLevel, DefaultLogLevel)
	set(&c.CreatedBy, DefaultCreatedBy)
	if c.ImagePullPolicy == "" {
		c.ImagePullPolicy = defaultPullPolicy
	}
	return c
}

// Report says what Inject did to a pod, or why it did nothing.
type Report struct {
	// Injected is true when the sidecar was added.
	Injected bool
	// Skipped is why it was not (empty when Injected).
	Skipped string
	// Native is true when the proxy was added as a native sidecar.
	Native bool
	// Workload is "<kind>/<name>" of the pod's workload ("deployment/web"),
	// or "pod/<name>" for a bare pod.
	Workload string
	// Warnings are things the user should know about an injected pod:
	// ports the proxy cannot serve, a Job that will not complete, ...
	Warnings []string
}

// String is a one-line summary: "injected (native sidecar)" or
// "skipped: <reason>", followed by the warnings.
func (r Report) String() string {
	var b strings.Builder
	switch {
	case r.Injected && r.Native:
		b.WriteString("injected (native sidecar)")
	case r.Injected:
		b.WriteString("injected (sidecar container)")
	default:
		b.WriteString("skipped: " + r.Skipped)
	}
	for _, w := range r.Warnings {
		b.WriteString("; warning: " + w)
	}
	return b.String()
}

// Inject returns a copy of pod with Sluice's sidecar added, when pod's or
// ns's annotations ask for it (ns may be nil: only the pod's annotations
// count then). The Report says what was done or why nothing was. An error
// means an annotation is invalid; it names the annotation and its value, and
// patched is then nil.
//
// pod.Namespace should be set (the webhook takes it from the request); it
// names the workload namespace label.
func Inject(pod *corev1.Pod, ns *corev1.Namespace, cfg Config) (patched *corev1.Pod, report Report, err error) {
	if pod == nil {
		return nil, Report{}, errors.New("inject: no pod")
	}
	cfg = cfg.withDefaults()
	w := workloadOf(pod)
	report.Workload = w.String()

	enabled, reason, err := decide(pod, ns)
	if err != nil {
		return nil, report, err
	}
	if !enabled {
		report.Skipped = reason
		return pod.DeepCopy(), report, nil
	}
	if what := alreadyInjected(&pod.Spec); what != "" {
		report.Skipped = "already injected (it has " + what + ")"
		return pod.DeepCopy(), report, nil
	}
	if pod.Spec.HostNetwork {
		report.Skipped = "the pod uses the host network (its iptables rules would be the node's)"
		return pod.DeepCopy(), report, nil
	}

	opts, err := parseOptions(pod, ns, cfg)
	if err != nil {
		return nil, report, err
	}
	out := pod.DeepCopy()
	mutate(out, w, opts, cfg, &report)
	report.Injected = true
	report.Native = cfg.NativeSidecars
	return out, report, nil
}

// decide applies the sluice.dev/inject rules.
func decide(pod *corev1.Pod, ns *corev1.Namespace) (enabled bool, reason string, err error) {
	podValue, podSet := pod.Annotations[AnnotationInject]
	switch podValue {
	case InjectDisabled:
		return false, fmt.Sprintf("pod annotation %s is %s", AnnotationInject, InjectDisabled), nil
	case InjectEnabled:
		return true, "", nil
	case "":
	default:
		return false, "", fmt.Errorf("pod annotation %s=%q: want %s or %s", AnnotationInject, podValue, InjectEnabled, InjectDisabled)
	}
	if ns == nil {
		return false, fmt.Sprintf("no %s annotation on the pod", AnnotationInject), nil
	}
	nsValue := ns.Annotations[AnnotationInject]
	switch nsValue {
	case InjectEnabled:
		return true, "", nil
	case InjectDisabled:
		return false, fmt.Sprintf("namespace %s annotation %s is %s", ns.Name, AnnotationInject, InjectDisabled), nil
	case "":
		if podSet {
			return false, fmt.Sprintf("pod annotation %s is empty and namespace %s has none", AnnotationInject, ns.Name), nil
		}
		return false, fmt.Sprintf("neither the pod nor namespace %s has the %s annotation", ns.Name, AnnotationInject), nil
	default:
		return false, "", fmt.Errorf("namespace %s annotation %s=%q: want %s or %s", ns.Name, AnnotationInject, nsValue, InjectEnabled, InjectDisabled)
	}
}

// alreadyInjected describes a container or volume the injector adds, if
// spec already has one: injecting again would duplicate it.
func alreadyInjected(spec *corev1.PodSpec) string {
	for _, list := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for _, c := range list {
			if c.Name == ProxyContainerName || c.Name == InitContainerName {
				return "a " + c.Name + " container"
			}
		}
	}
	for _, v := range spec.Volumes {
		switch v.Name {
		case TokenVolumeName, TrustRootsVolumeName, XtablesVolumeName:
			return "a " + v.Name + " volume"
		}
	}
	return ""
}
