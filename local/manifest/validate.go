package manifest

import (
	"fmt"
	"regexp"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// fieldRefPath matches the downward-API fields local mode can fill in an
// environment variable (env[].valueFrom.fieldRef.fieldPath).
var fieldRefPath = regexp.MustCompile(`^(metadata\.name|metadata\.namespace|metadata\.uid|spec\.serviceAccountName|spec\.nodeName|status\.podIP|status\.podIPs|status\.hostIP|status\.hostIPs|metadata\.(labels|annotations)\['[^']+'\])$`)

// SupportedFieldPath reports whether local mode can fill an environment
// variable from this downward-API field path.
func SupportedFieldPath(path string) bool { return fieldRefPath.MatchString(path) }

func validateDeployment(d *appsv1.Deployment) []fieldProblem {
	var out []fieldProblem
	add := func(sev Severity, field, format string, args ...any) {
		out = append(out, fieldProblem{field: field, msg: fmt.Sprintf(format, args...), severity: sev})
	}
	if d.Spec.Replicas != nil && *d.Spec.Replicas < 0 {
		add(Invalid, "spec.replicas", "%d must not be negative", *d.Spec.Replicas)
	}
	tpl := &d.Spec.Template
	if d.Spec.Selector == nil {
		add(Invalid, "spec.selector", "required (matchLabels that select spec.template.metadata.labels)")
	} else if sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err != nil {
		add(Invalid, "spec.selector", "%v", err)
	} else if sel.Empty() {
		add(Invalid, "spec.selector", "must not be empty")
	} else if !sel.Matches(labels.Set(tpl.Labels)) {
		add(Invalid, "spec.template.metadata.labels", "%v do not match spec.selector %q", tpl.Labels, sel.String())
	}
	for k, v := range tpl.Labels {
		for _, e := range validation.IsQualifiedName(k) {
			add(Invalid, "spec.template.metadata.labels", "key %q: %s", k, e)
		}
		for _, e := range validation.IsValidLabelValue(v) {
			add(Invalid, "spec.template.metadata.labels", "value %q of %q: %s", v, k, e)
		}
	}
	ps := &tpl.Spec
	if sa := ps.ServiceAccountName; sa != "" {
		if errs := validation.IsDNS1123Label(sa); len(errs) > 0 {
			add(Invalid, "spec.template.spec.serviceAccountName", "%q: %s (it is part of the mesh identity)", sa, strings.Join(errs, "; "))
		}
	}
	if len(ps.Containers) == 0 {
		add(Invalid, "spec.template.spec.containers", "at least one container is required")
		return out
	}
	c := &ps.Containers[0]
	cp := "spec.template.spec.containers[0]"
	if len(c.Command) == 0 || c.Command[0] == "" {
		add(Invalid, cp+".command", "required in local mode: the program to run (a container image cannot be run locally)")
	}
	seen := map[string]bool{}
	for i, e := range c.Env {
		ep := fmt.Sprintf("%s.env[%d]", cp, i)
		if e.Name == "" {
			add(Invalid, ep+".name", "required")
			continue
		}
		if strings.ContainsAny(e.Name, "=\x00") {
			add(Invalid, ep+".name", "%q must not contain '=' or NUL", e.Name)
		}
		seen[e.Name] = true
		vf := e.ValueFrom
		if vf == nil {
			continue
		}
		switch {
		case vf.FieldRef != nil:
			if !SupportedFieldPath(vf.FieldRef.FieldPath) {
				add(Invalid, ep+".valueFrom.fieldRef.fieldPath", "%q is not supported in local mode (metadata.name, metadata.namespace, metadata.uid, metadata.labels['k'], metadata.annotations['k'], spec.serviceAccountName, spec.nodeName, status.podIP and status.hostIP are)", vf.FieldRef.FieldPath)
			}
		case vf.ConfigMapKeyRef != nil, vf.SecretKeyRef != nil:
			add(Invalid, ep+".valueFrom", "configMapKeyRef and secretKeyRef are not supported in local mode; set value instead")
		case vf.ResourceFieldRef != nil:
			add(Invalid, ep+".valueFrom.resourceFieldRef", "not supported in local mode")
		default:
			add(Invalid, ep+".valueFrom", "not supported in local mode")
		}
	}
	if len(c.EnvFrom) > 0 {
		add(Invalid, cp+".envFrom", "not supported in local mode; list the variables in env")
	}
	if seen["PORT"] {
		add(Warning, cp+".env", "PORT is set by local mode (the port the replica must listen on); the value given here is ignored")
	}
	if len(c.Ports) > 1 {
		add(Warning, cp+".ports", "local mode gives the application one port, in PORT; every Service port of the workload reaches that port")
	}
	for i := 1; i < len(ps.Containers); i++ {
		add(Warning, fmt.Sprintf("spec.template.spec.containers[%d]", i), "only containers[0] runs in local mode; container %q is ignored", ps.Containers[i].Name)
	}
	if len(ps.InitContainers) > 0 {
		add(Warning, "spec.template.spec.initContainers", "init containers are not run in local mode")
	}
	return out
}

func validateService(s *corev1.Service) []fieldProblem {
	var out []fieldProblem
	add := func(sev Severity, field, format string, args ...any) {
		out = append(out, fieldProblem{field: field, msg: fmt.Sprintf(format, args...), severity: sev})
	}
	if errs := validation.IsDNS1035Label(s.Name); s.Name != "" && len(errs) > 0 {
		add(Invalid, "metadata.name", "%q: %s (a Service name is a DNS label starting with a letter)", s.Name, strings.Join(errs, "; "))
	}
	if s.Spec.Type == corev1.ServiceTypeExternalName {
		add(Invalid, "spec.type", "ExternalName Services are not supported in local mode")
		return out
	}
	if len(s.Spec.Ports) == 0 {
		add(Invalid, "spec.ports", "at least one port is required")
	}
	names := map[string]int{}
	nums := map[int32]int{}
	for i, p := range s.Spec.Ports {
		pp := fmt.Sprintf("spec.ports[%d]", i)
		if p.Port < 1 || p.Port > 65535 {
			add(Invalid, pp+".port", "%d is not within 1-65535", p.Port)
		}
		if j, dup := nums[p.Port]; dup && p.Protocol == s.Spec.Ports[j].Protocol {
			add(Invalid, pp+".port", "%d is also spec.ports[%d]", p.Port, j)
		}
		nums[p.Port] = i
		if len(s.Spec.Ports) > 1 && p.Name == "" {
			add(Invalid, pp+".name", "required when a Service has more than one port")
		}
		if p.Name != "" {
			if errs := validation.IsDNS1123Label(p.Name); len(errs) > 0 {
				add(Invalid, pp+".name", "%q: %s", p.Name, strings.Join(errs, "; "))
			}
			if j, dup := names[p.Name]; dup {
				add(Invalid, pp+".name", "%q is also spec.ports[%d]", p.Name, j)
			}
			names[p.Name] = i
		}
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			add(Warning, pp+".protocol", "%s is not carried by the mesh; only TCP ports are published", p.Protocol)
		}
	}
	return out
}

func validateHTTPRoute(r *gatewayv1.HTTPRoute) []fieldProblem {
	if len(r.Spec.ParentRefs) == 0 {
		return []fieldProblem{{field: "spec.parentRefs", msg: "attaches to nothing: local mode routes HTTPRoutes whose parentRef is a Service (group \"\" or core, kind Service)", severity: Warning}}
	}
	return nil
}
