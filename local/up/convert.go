package up

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/sluicehq/sluice/local/manifest"
	"github.com/sluicehq/sluice/local/supervisor"
)

// Revision is the hash that identifies a pod template (10 hex characters):
// two Deployments with the same template have the same revision, and any
// change to the template makes a new one.
func Revision(tpl *corev1.PodTemplateSpec) string {
	data, err := json.Marshal(tpl)
	if err != nil {
		data = fmt.Appendf(nil, "%#v", tpl)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:5])
}

// DefaultInboundPolicyAnnotation on a Deployment or its pod template sets
// the default inbound policy of its replicas' ports that no Server selects.
const DefaultInboundPolicyAnnotation = "config.sluice.dev/default-inbound-policy"

var labelRef = regexp.MustCompile(`^metadata\.(labels|annotations)\['([^']+)'\]$`)

// workloadOf turns a Deployment read from a manifest into what the
// supervisor runs. Downward-API fields known before a replica exists
// (namespace, labels, annotations, service account) are filled in here.
func workloadOf(obj *manifest.Object) (supervisor.Workload, error) {
	d, ok := obj.Object.(*appsv1.Deployment)
	if !ok {
		return supervisor.Workload{}, fmt.Errorf("%s is not a Deployment", obj.Ref())
	}
	tpl := &d.Spec.Template
	c := &tpl.Spec.Containers[0]
	replicas := 1
	if d.Spec.Replicas != nil {
		replicas = int(*d.Spec.Replicas)
	}
	sa := tpl.Spec.ServiceAccountName
	if sa == "" {
		sa = tpl.Spec.DeprecatedServiceAccount
	}
	if sa == "" {
		sa = "default"
	}
	dir := filepath.Dir(obj.File)
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	if c.WorkingDir != "" {
		if filepath.IsAbs(c.WorkingDir) {
			dir = c.WorkingDir
		} else {
			dir = filepath.Join(dir, c.WorkingDir)
		}
	}
	w := supervisor.Workload{
		Namespace:      d.Namespace,
		Name:           d.Name,
		Replicas:       replicas,
		Revision:       Revision(tpl),
		Labels:         tpl.Labels,
		ServiceAccount: sa,
		Command:        slices.Clone(c.Command),
		Args:           slices.Clone(c.Args),
		Dir:            dir,
		NoServiceLinks: tpl.Spec.EnableServiceLinks != nil && !*tpl.Spec.EnableServiceLinks,
	}
	if len(c.Ports) > 0 {
		w.PortName = c.Ports[0].Name
		w.ContainerPort = int(c.Ports[0].ContainerPort)
	}
	w.DefaultInboundPolicy = tpl.Annotations[DefaultInboundPolicyAnnotation]
	if w.DefaultInboundPolicy == "" {
		w.DefaultInboundPolicy = d.Annotations[DefaultInboundPolicyAnnotation]
	}
	for _, e := range c.Env {
		v := supervisor.EnvVar{Name: e.Name, Value: e.Value}
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			path := e.ValueFrom.FieldRef.FieldPath
			switch m := labelRef.FindStringSubmatch(path); {
			case path == "metadata.namespace":
				v.Value = d.Namespace
			case path == "spec.serviceAccountName":
				v.Value = sa
			case m != nil && m[1] == "labels":
				v.Value = tpl.Labels[m[2]]
			case m != nil:
				v.Value = tpl.Annotations[m[2]]
			default:
				v.FieldPath = path
			}
		}
		w.Env = append(w.Env, v)
	}
	return w, nil
}

// servicePorts lists the TCP ports of a Service for the supervisor.
func servicePorts(s *corev1.Service) []supervisor.ServicePort {
	var out []supervisor.ServicePort
	for i, p := range s.Spec.Ports {
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			continue
		}
		out = append(out, supervisor.ServicePort{
			Namespace: s.Namespace, Name: s.Name, PortName: strings.ToLower(p.Name), Port: int(p.Port), Index: i,
		})
	}
	return out
}
