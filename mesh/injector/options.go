package injector

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// DefaultInboundPolicies are the values of default-inbound-policy, as the
// proxy's inbound.defaultPolicy takes them.
var DefaultInboundPolicies = []string{
	"all-unauthenticated", "all-authenticated", "cluster-unauthenticated",
	"cluster-authenticated", "deny", "audit",
}

// logLevels are the values of proxy-log-level.
var logLevels = []string{"debug", "info", "warn", "error"}

// maxOpaquePorts bounds the ports opaque-ports may expand to: the list goes
// into the proxy's configuration, one number per port.
const maxOpaquePorts = 1024

// options are the pod's effective settings: Config's defaults overridden by
// the namespace's annotations, overridden by the pod's.
type options struct {
	skipInbound  []portRange
	skipOutbound []portRange
	skipSubnets  []netip.Prefix
	opaquePorts  *[]int // nil: the proxy's default list
	resources    corev1.ResourceRequirements
	logLevel     string
	policy       string
	image        string
	version      string
}

// portRange is an inclusive range of ports; a single port has first == last.
type portRange struct{ first, last int }

func (r portRange) String() string {
	if r.first == r.last {
		return strconv.Itoa(r.first)
	}
	return fmt.Sprintf("%d-%d", r.first, r.last)
}

func joinRanges(rs []portRange) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = r.String()
	}
	return strings.Join(s, ",")
}

// annotations looks configuration annotations up on the pod, then the namespace.
type annotations struct {
	pod *corev1.Pod
	ns  *corev1.Namespace
}

// get returns the annotation's value and where it was found ("" when absent).
func (a annotations) get(key string) (value, where string) {
	if v, ok := a.pod.Annotations[key]; ok {
		return v, "pod annotation"
	}
	if a.ns != nil {
		if v, ok := a.ns.Annotations[key]; ok {
			return v, "namespace " + a.ns.Name + " annotation"
		}
	}
	return "", ""
}

// optionErrors collects the problems with a pod's annotations.
type optionErrors []string

func (e *optionErrors) add(where, key, value, format string, args ...any) {
	*e = append(*e, fmt.Sprintf("%s %s=%q: %s", where, key, value, fmt.Sprintf(format, args...)))
}

func (e optionErrors) err() error {
	if len(e) == 0 {
		return nil
	}
	return fmt.Errorf("%s", strings.Join(e, "; "))
}

// parseOptions reads the configuration annotations. Its error names every
// invalid annotation with its value.
func parseOptions(pod *corev1.Pod, ns *corev1.Namespace, cfg Config) (options, error) {
	a := annotations{pod: pod, ns: ns}
	var errs optionErrors
	o := options{
		resources: *cfg.Resources.DeepCopy(),
		logLevel:  cfg.LogLevel,
		policy:    cfg.DefaultInboundPolicy,
		image:     cfg.ProxyImage,
		version:   cfg.ProxyVersion,
	}
	names := containerPortNames(&pod.Spec)

	ports := func(key string, named map[string]int) []portRange {
		v, where := a.get(key)
		if where == "" {
			return nil
		}
		rs, err := parsePorts(v, named)
		if err != nil {
			errs.add(where, key, v, "%v", err)
		}
		return rs
	}
	o.skipInbound = ports(AnnotationSkipInboundPorts, names)
	o.skipOutbound = ports(AnnotationSkipOutboundPorts, nil)
	if v, where := a.get(AnnotationOpaquePorts); where != "" {
		rs, err := parsePorts(v, names)
		if err != nil {
			errs.add(where, AnnotationOpaquePorts, v, "%v", err)
		} else if list, err := expandPorts(rs); err != nil {
			errs.add(where, AnnotationOpaquePorts, v, "%v", err)
		} else {
			o.opaquePorts = &list
		}
	}
	if v, where := a.get(AnnotationSkipSubnets); where != "" {
		for item := range strings.SplitSeq(v, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			p, err := netip.ParsePrefix(item)
			if err != nil {
				errs.add(where, AnnotationSkipSubnets, v, "subnet %q is not a CIDR such as 10.0.0.0/8", item)
				continue
			}
			o.skipSubnets = append(o.skipSubnets, p.Masked())
		}
	}

	for _, r := range []struct {
		key  string
		list *corev1.ResourceList
		name corev1.ResourceName
	}{
		{AnnotationProxyCPURequest, &o.resources.Requests, corev1.ResourceCPU},
		{AnnotationProxyMemoryRequest, &o.resources.Requests, corev1.ResourceMemory},
		{AnnotationProxyCPULimit, &o.resources.Limits, corev1.ResourceCPU},
		{AnnotationProxyMemoryLimit, &o.resources.Limits, corev1.ResourceMemory},
	} {
		v, where := a.get(r.key)
		if where == "" {
			continue
		}
		q, err := resource.ParseQuantity(strings.TrimSpace(v))
		switch {
		case err != nil:
			errs.add(where, r.key, v, "not a quantity such as 100m or 64Mi")
			continue
		case q.Sign() <= 0:
			errs.add(where, r.key, v, "must be positive")
			continue
		}
		if *r.list == nil {
			*r.list = corev1.ResourceList{}
		}
		(*r.list)[r.name] = q
	}
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, hasReq := o.resources.Requests[name]
		lim, hasLim := o.resources.Limits[name]
		if hasReq && hasLim && req.Cmp(lim) > 0 {
			key := AnnotationProxyCPURequest
			if name == corev1.ResourceMemory {
				key = AnnotationProxyMemoryRequest
			}
			v, where := a.get(key)
			if where == "" {
				where, v = "default", req.String()
			}
			errs.add(where, key, v, "the request is above the %s limit %s", name, lim.String())
		}
	}

	if v, where := a.get(AnnotationProxyLogLevel); where != "" {
		if !slices.Contains(logLevels, v) {
			errs.add(where, AnnotationProxyLogLevel, v, "want one of %s", strings.Join(logLevels, ", "))
		} else {
			o.logLevel = v
		}
	}
	if v, where := a.get(AnnotationDefaultInboundPolicy); where != "" {
		if !slices.Contains(DefaultInboundPolicies, v) {
			errs.add(where, AnnotationDefaultInboundPolicy, v, "want one of %s", strings.Join(DefaultInboundPolicies, ", "))
		} else {
			o.policy = v
		}
	}
	if v, where := a.get(AnnotationProxyImage); where != "" {
		if v == "" || strings.ContainsAny(v, " \t\n\"'") {
			errs.add(where, AnnotationProxyImage, v, "not an image reference")
		} else {
			o.image = v
		}
	}
	if v, where := a.get(AnnotationProxyVersion); where != "" {
		if !imageTag.MatchString(v) {
			errs.add(where, AnnotationProxyVersion, v, "not an image tag (letters, digits, _ . -, at most 128)")
		} else {
			o.version = v
		}
	}
	return o, errs.err()
}

var imageTag = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// imageRef joins image and version, unless image already has a tag or a digest.
func imageRef(image, version string) string {
	last := image[strings.LastIndex(image, "/")+1:]
	if strings.Contains(last, ":") || strings.Contains(last, "@") {
		return image
	}
	return image + ":" + version
}

// parsePorts reads "80,8080,9000-9010" (and, with named, container port names).
func parsePorts(s string, named map[string]int) ([]portRange, error) {
	var out []portRange
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if p, ok := named[item]; ok {
			out = append(out, portRange{p, p})
			continue
		}
		lo, hi, isRange := strings.Cut(item, "-")
		first, err := parsePort(lo)
		if err != nil {
			return nil, fmt.Errorf("port %q: %w", item, portError(named))
		}
		last := first
		if isRange {
			if last, err = parsePort(hi); err != nil {
				return nil, fmt.Errorf("port range %q: %w", item, portError(nil))
			}
			if last < first {
				return nil, fmt.Errorf("port range %q: %d is below %d", item, last, first)
			}
		}
		out = append(out, portRange{first, last})
	}
	return out, nil
}

func portError(named map[string]int) error {
	if named != nil {
		return fmt.Errorf("want a number from 1 to 65535, a range such as 9000-9010, or a container port name")
	}
	return fmt.Errorf("want a number from 1 to 65535 or a range such as 9000-9010")
}

func parsePort(s string) (int, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return int(n), nil
}

// expandPorts lists every port of rs, sorted and without duplicates.
func expandPorts(rs []portRange) ([]int, error) {
	var out []int
	for _, r := range rs {
		if len(out)+r.last-r.first+1 > maxOpaquePorts {
			return nil, fmt.Errorf("more than %d ports", maxOpaquePorts)
		}
		for p := r.first; p <= r.last; p++ {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// containerPortNames maps the names of the pod's container ports to numbers.
func containerPortNames(spec *corev1.PodSpec) map[string]int {
	names := map[string]int{}
	for _, list := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for _, c := range list {
			for _, p := range c.Ports {
				if p.Name != "" {
					names[p.Name] = int(p.ContainerPort)
				}
			}
		}
	}
	return names
}
