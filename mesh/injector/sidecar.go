package injector

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	"github.com/sluicehq/sluice/mesh/identity"
)

// Downward-API variables of the proxy container, referenced as $(NAME) in
// its configuration.
const (
	envPodName        = "POD_NAME"
	envPodNamespace   = "POD_NAMESPACE"
	envServiceAccount = "POD_SERVICE_ACCOUNT"
)

func ref(name string) string { return "$(" + name + ")" }

// mutate adds the sidecar to pod (a copy that Inject owns).
func mutate(pod *corev1.Pod, w workload, o options, cfg Config, rep *Report) {
	image := imageRef(o.image, o.version)
	app, warnings := inboundApp(&pod.Spec)
	rep.Warnings = append(rep.Warnings, warnings...)

	init := initContainer(image, cfg, o)
	proxy := proxyContainer(image, cfg, o, w, app, appProbes(&pod.Spec, o.skipInbound))
	if cfg.NativeSidecars {
		proxy.RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
		proxy.StartupProbe = httpProbe("/ready", 0, 1, startupProbeThreshold)
		// sluice-init first, so that the proxy and every later init
		// container run with the rules in place.
		pod.Spec.InitContainers = slices.Insert(pod.Spec.InitContainers, 0, init, proxy)
	} else {
		proxy.Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{
			Command: []string{cfg.ProxyPath, "await", "--admin-port=" + strconv.Itoa(AdminPort), "--timeout=" + defaultAwaitTimeout},
		}}}
		// sluice-init last, so that earlier init containers keep a working
		// network without a proxy to redirect to.
		pod.Spec.InitContainers = append(pod.Spec.InitContainers, init)
		if len(pod.Spec.Containers) > 0 {
			setDefault(&pod.Annotations, AnnotationDefaultContainer, pod.Spec.Containers[0].Name)
		}
		pod.Spec.Containers = slices.Insert(pod.Spec.Containers, 0, proxy)
		if w.kind == "job" || w.kind == "cronjob" {
			rep.Warnings = append(rep.Warnings, "the proxy is a regular container, so the Job's pod never completes; native sidecars (Kubernetes 1.29 and later) fix that")
		}
	}
	pod.Spec.Volumes = append(pod.Spec.Volumes,
		corev1.Volume{Name: TokenVolumeName, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience: TokenAudience, ExpirationSeconds: ptr.To[int64](TokenExpirationSeconds), Path: "token",
			}}},
		}}},
		corev1.Volume{Name: TrustRootsVolumeName, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: TrustRootsConfigMap},
			Items:                []corev1.KeyToPath{{Key: TrustRootsKey, Path: TrustRootsKey}},
		}}},
		corev1.Volume{Name: XtablesVolumeName, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	)

	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	pod.Labels[LabelControlPlaneNamespace] = cfg.ControlPlaneNamespace
	if pod.Namespace != "" {
		pod.Labels[LabelWorkloadNamespace] = pod.Namespace
	}
	if w.kind != "pod" {
		if errs := validation.IsValidLabelValue(w.name); len(errs) == 0 {
			pod.Labels[LabelWorkloadPrefix+w.kind] = w.name
		} else {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("no %s label: %q is not a valid label value", LabelWorkloadPrefix+w.kind, w.name))
		}
	}
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[AnnotationCreatedBy] = cfg.CreatedBy
	pod.Annotations[AnnotationInjectedVersion] = o.version
}

func setDefault(m *map[string]string, key, value string) {
	if *m == nil {
		*m = map[string]string{}
	}
	if _, ok := (*m)[key]; !ok {
		(*m)[key] = value
	}
}

// inboundApp picks the fallback application address of the proxy's inbound
// side: the first TCP port of the first container that declares one, or ""
// when none does. The proxy forwards each redirected connection to the port
// its client dialled (originalDst), so every port is served, declared or
// not; app is only where a connection that was not redirected goes.
func inboundApp(spec *corev1.PodSpec) (app string, warnings []string) {
	for _, c := range spec.Containers {
		for _, p := range c.Ports {
			port := int(p.ContainerPort)
			if port == InboundPort || port == OutboundPort || port == AdminPort {
				warnings = append(warnings, fmt.Sprintf("container %s port %d is one of the proxy's ports (%d, %d, %d)", c.Name, port, InboundPort, OutboundPort, AdminPort))
			}
			switch {
			case p.Protocol != "" && p.Protocol != corev1.ProtocolTCP:
				warnings = append(warnings, fmt.Sprintf("container %s port %d/%s is not proxied (only TCP is)", c.Name, port, p.Protocol))
			case app == "":
				app = "127.0.0.1:" + strconv.Itoa(port)
			}
		}
	}
	return app, warnings
}

// appProbes lists the HTTP probes the kubelet sends the pod's containers
// (liveness, readiness and startup; port by number or by the container's
// port name; path "/" when empty, without its query), each once, in the
// order of the containers. The kubelet has no mesh identity, so the proxy
// must let them through whatever the inbound policy. Probes on skipped
// inbound ports never reach the proxy, and HTTPS probes or probes of
// another host are not the proxy's to allow: they are left out.
func appProbes(spec *corev1.PodSpec, skip []portRange) []proxyProbe {
	var out []proxyProbe
	for _, c := range spec.Containers {
		for _, pr := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
			if pr == nil || pr.HTTPGet == nil {
				continue
			}
			get := pr.HTTPGet
			if get.Host != "" || (get.Scheme != "" && get.Scheme != corev1.URISchemeHTTP) {
				continue
			}
			port := probePort(c, get.Port)
			if port < 1 || port > 65535 || slices.ContainsFunc(skip, func(r portRange) bool { return r.first <= port && port <= r.last }) {
				continue
			}
			path, _, _ := strings.Cut(get.Path, "?")
			path, _, _ = strings.Cut(path, "#")
			if !strings.HasPrefix(path, "/") {
				path = "/" + path
			}
			if p := (proxyProbe{Port: port, Path: path}); !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// probePort is the number of a probe's port: the number itself, or the
// container's port of that name (as the kubelet resolves it); 0 when there
// is none.
func probePort(c corev1.Container, port intstr.IntOrString) int {
	if port.Type == intstr.Int {
		return port.IntValue()
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort)
		}
	}
	if n, err := strconv.Atoi(port.StrVal); err == nil {
		return n
	}
	return 0
}

// initContainer is `sluice-proxy init`, which writes the pod's iptables rules.
func initContainer(image string, cfg Config, o options) corev1.Container {
	args := []string{"init",
		"--proxy-uid=" + strconv.Itoa(ProxyUID),
		"--inbound-port=" + strconv.Itoa(InboundPort),
		"--outbound-port=" + strconv.Itoa(OutboundPort),
		"--admin-port=" + strconv.Itoa(AdminPort),
	}
	if len(o.skipInbound) > 0 {
		args = append(args, "--inbound-ports-to-ignore="+joinRanges(o.skipInbound))
	}
	if len(o.skipOutbound) > 0 {
		args = append(args, "--outbound-ports-to-ignore="+joinRanges(o.skipOutbound))
	}
	if len(o.skipSubnets) > 0 {
		args = append(args, "--subnets-to-ignore="+joinPrefixes(o.skipSubnets))
	}
	return corev1.Container{
		Name:            InitContainerName,
		Image:           image,
		ImagePullPolicy: cfg.ImagePullPolicy,
		Args:            args,
		// The same resources as the proxy, so that a LimitRange that
		// requires them is satisfied and the pod's requests do not grow.
		Resources:                *o.resources.DeepCopy(),
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext: &corev1.SecurityContext{
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW"},
				Drop: []corev1.Capability{"ALL"},
			},
			Privileged:               ptr.To(false),
			RunAsUser:                ptr.To[int64](0),
			RunAsNonRoot:             ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		VolumeMounts: []corev1.VolumeMount{{Name: XtablesVolumeName, MountPath: "/run"}},
	}
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// proxyContainer is the sluice-proxy container, without what differs between
// native and classic sidecars.
func proxyContainer(image string, cfg Config, o options, w workload, app string, probes []proxyProbe) corev1.Container {
	env := []corev1.EnvVar{
		fieldEnv(envPodName, "metadata.name"),
		fieldEnv(envPodNamespace, "metadata.namespace"),
		fieldEnv(envServiceAccount, "spec.serviceAccountName"),
		{Name: LogLevelEnv, Value: o.logLevel},
	}
	if lim, ok := o.resources.Limits[corev1.ResourceMemory]; ok {
		// The Go runtime's soft limit, under the container's hard one.
		env = append(env, corev1.EnvVar{Name: "GOMEMLIMIT", Value: strconv.FormatInt(lim.Value()/10*9, 10)})
	}
	env = append(env, corev1.EnvVar{Name: ConfigEnv, Value: renderConfig(cfg, o, w, app, probes)})
	return corev1.Container{
		Name:            ProxyContainerName,
		Image:           image,
		ImagePullPolicy: cfg.ImagePullPolicy,
		Env:             env,
		Ports: []corev1.ContainerPort{
			{Name: InboundPortName, ContainerPort: InboundPort, Protocol: corev1.ProtocolTCP},
			{Name: AdminPortName, ContainerPort: AdminPort, Protocol: corev1.ProtocolTCP},
		},
		Resources:                *o.resources.DeepCopy(),
		ReadinessProbe:           httpProbe("/ready", 0, 0, 0),
		LivenessProbe:            httpProbe("/live", 10, 0, 0),
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext: &corev1.SecurityContext{
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			RunAsUser:                ptr.To[int64](ProxyUID),
			RunAsNonRoot:             ptr.To(true),
			ReadOnlyRootFilesystem:   ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: TokenVolumeName, MountPath: TokenDir, ReadOnly: true},
			{Name: TrustRootsVolumeName, MountPath: TrustRootsDir, ReadOnly: true},
		},
	}
}

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
}

func httpProbe(path string, initialDelay, period, failureThreshold int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(AdminPort)}},
		InitialDelaySeconds: initialDelay,
		PeriodSeconds:       period,
		FailureThreshold:    failureThreshold,
	}
}

// proxyConfig is the subset of the proxy's configuration file
// (proxy/config.Config) the injector writes; the field names are that file's.
type proxyConfig struct {
	Admin        string             `json:"admin"`
	Inbound      proxyInbound       `json:"inbound"`
	Outbound     proxyOutbound      `json:"outbound"`
	OpaquePorts  *[]int             `json:"opaquePorts,omitempty"`
	Labels       map[string]string  `json:"labels,omitempty"`
	LogLevel     string             `json:"logLevel,omitempty"`
	ControlPlane *proxyControlPlane `json:"controlPlane"`
}

type proxyInbound struct {
	Listen        string       `json:"listen"`
	App           string       `json:"app,omitempty"`
	OriginalDst   bool         `json:"originalDst"`
	DefaultPolicy string       `json:"defaultPolicy,omitempty"`
	Probes        []proxyProbe `json:"probes,omitempty"`
}

// proxyProbe is one HTTP probe endpoint of the application (the proxy's
// inbound.probes), which the proxy lets through whatever the inbound policy.
type proxyProbe struct {
	Port int    `json:"port"`
	Path string `json:"path"`
}

type proxyOutbound struct {
	Listen string `json:"listen"`
}

type proxyControlPlane struct {
	Address         string `json:"address"`
	IdentityAddress string `json:"identityAddress"`
	DestinationName string `json:"destinationName"`
	IdentityName    string `json:"identityName"`
	Identity        string `json:"identity"`
	TokenFile       string `json:"tokenFile"`
	TrustAnchors    string `json:"trustAnchors"`
	Namespace       string `json:"namespace"`
	Workload        string `json:"workload"`
}

// serviceAddress is the host:port of a control-plane Service.
func serviceAddress(service string, port int, cfg Config) string {
	return fmt.Sprintf("%s.%s.svc.%s:%d", service, cfg.ControlPlaneNamespace, cfg.ClusterDomain, port)
}

// renderConfig writes the proxy's configuration as indented JSON (which is
// YAML too): every string quoted, so that a $(VAR) the kubelet expands to
// digits stays a string.
func renderConfig(cfg Config, o options, w workload, app string, probes []proxyProbe) string {
	pc := proxyConfig{
		Admin:       fmt.Sprintf("0.0.0.0:%d", AdminPort),
		Inbound:     proxyInbound{Listen: fmt.Sprintf("0.0.0.0:%d", InboundPort), App: app, OriginalDst: true, DefaultPolicy: o.policy, Probes: probes},
		Outbound:    proxyOutbound{Listen: fmt.Sprintf("127.0.0.1:%d", OutboundPort)},
		OpaquePorts: o.opaquePorts,
		Labels:      map[string]string{"namespace": ref(envPodNamespace), "pod": ref(envPodName)},
		LogLevel:    o.logLevel,
		ControlPlane: &proxyControlPlane{
			Address:         serviceAddress(DestinationService, DestinationPort, cfg),
			IdentityAddress: serviceAddress(IdentityService, IdentityPort, cfg),
			DestinationName: identity.ControlPlaneName(identity.DestinationServiceAccount, cfg.ControlPlaneNamespace, cfg.TrustDomain),
			IdentityName:    identity.ControlPlaneName(identity.IdentityServiceAccount, cfg.ControlPlaneNamespace, cfg.TrustDomain),
			Identity:        identity.Name(ref(envServiceAccount), ref(envPodNamespace), cfg.ControlPlaneNamespace, cfg.TrustDomain),
			TokenFile:       TokenPath,
			TrustAnchors:    TrustRootsPath,
			Namespace:       ref(envPodNamespace),
			Workload:        ref(envPodNamespace) + "/" + ref(envPodName),
		},
	}
	if l := w.metricLabel(); l != "" {
		pc.Labels[l] = w.name
	}
	b, err := json.MarshalIndent(pc, "", "  ")
	if err != nil {
		panic(fmt.Sprintf("injector: rendering the proxy configuration: %v", err)) // plain structs of strings and ints
	}
	return string(b) + "\n"
}
