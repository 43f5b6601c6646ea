package kubernetes

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// serviceRole is which of a canary's three Services one is.
type serviceRole int

const (
	roleApex serviceRole = iota
	rolePrimary
	roleCanary
)

// desiredService is a generated Service as the spec asks for it.
type desiredService struct {
	role     serviceRole
	name     string
	selector map[string]string
	ports    []corev1.ServicePort
	meta     *v1beta1.CustomMetadata
}

// desiredServices returns the apex, primary and canary Services of c, whose
// target selects its pods by l.
func desiredServices(c *v1beta1.Canary, target *appsv1.Deployment, l podLabel) []desiredService {
	apex, primary, canarySvc := c.GetServiceNames()
	ports := servicePorts(c, target)
	s := &c.Spec.Service
	return []desiredService{
		{roleApex, apex, map[string]string{l.key: l.primaryValue()}, ports, s.Apex},
		{rolePrimary, primary, map[string]string{l.key: l.primaryValue()}, ports, s.Primary},
		{roleCanary, canarySvc, map[string]string{l.key: l.value}, ports, s.Canary},
	}
}

// servicePorts are the ports of c's Services: service.port, and with
// portDiscovery every other TCP container port of the target.
func servicePorts(c *v1beta1.Canary, target *appsv1.Deployment) []corev1.ServicePort {
	s := &c.Spec.Service
	name := s.PortName
	if name == "" {
		name = v1beta1.DefaultPortName
	}
	targetPort := intstr.FromInt32(s.Port)
	if s.TargetPort != nil {
		targetPort = *s.TargetPort
	}
	main := corev1.ServicePort{Name: name, Port: s.Port, TargetPort: targetPort, Protocol: corev1.ProtocolTCP}
	if s.AppProtocol != "" {
		main.AppProtocol = new(s.AppProtocol)
	}
	ports := []corev1.ServicePort{main}
	if !s.PortDiscovery {
		return ports
	}
	used := map[int32]bool{s.Port: true}
	names := map[string]bool{name: true}
	if targetPort.Type == intstr.Int {
		used[targetPort.IntVal] = true
	}
	for _, ctr := range target.Spec.Template.Spec.Containers {
		for _, p := range ctr.Ports {
			if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
				continue
			}
			if used[p.ContainerPort] || (targetPort.Type == intstr.String && p.Name == targetPort.StrVal) {
				continue
			}
			used[p.ContainerPort] = true
			pn := "tcp-" + strconv.Itoa(int(p.ContainerPort))
			if p.Name != "" && !names[p.Name] {
				pn = p.Name
			}
			names[pn] = true
			ports = append(ports, corev1.ServicePort{
				Name: pn, Port: p.ContainerPort, TargetPort: intstr.FromInt32(p.ContainerPort), Protocol: corev1.ProtocolTCP,
			})
		}
	}
	return ports
}

// serviceMatches reports whether svc selects and exposes what d asks for.
func serviceMatches(svc *corev1.Service, d desiredService) bool {
	if !maps.Equal(svc.Spec.Selector, d.selector) {
		return false
	}
	for _, want := range d.ports {
		found := false
		for _, p := range svc.Spec.Ports {
			if p.Name == want.Name && p.Port == want.Port && p.TargetPort == want.TargetPort &&
				protocolOf(p) == protocolOf(want) && ptrEqual(p.AppProtocol, want.AppProtocol) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func protocolOf(p corev1.ServicePort) corev1.Protocol {
	if p.Protocol == "" {
		return corev1.ProtocolTCP
	}
	return p.Protocol
}

func ptrEqual[T comparable](a, b *T) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}

// servicesReady reports whether c's three Services exist as the spec asks.
func (w *Workloads) servicesReady(ctx context.Context, c *v1beta1.Canary, target *appsv1.Deployment) (bool, error) {
	l, err := selectorLabelOf(target)
	if err != nil {
		return false, err
	}
	for _, d := range desiredServices(c, target, l) {
		svc := &corev1.Service{}
		err := w.Client.Get(ctx, types.NamespacedName{Namespace: c.Namespace, Name: d.name}, svc)
		switch {
		case apierrors.IsNotFound(err):
			return false, nil
		case err != nil:
			return false, fmt.Errorf("reading Service %s/%s: %w", c.Namespace, d.name, err)
		}
		if !serviceMatches(svc, d) {
			return false, nil
		}
	}
	return true, nil
}

// EnsureServices creates or updates the apex, "-primary" and "-canary"
// Services: the apex and primary Services select the primary's pods, the
// canary Service the target's. An apex Service that existed before is taken
// over: its selector is recorded in OriginalSelectorAnnotation first.
func (w *Workloads) EnsureServices(ctx context.Context, c *v1beta1.Canary) error {
	target, err := w.target(ctx, c)
	if err != nil {
		return err
	}
	l, err := selectorLabelOf(target)
	if err != nil {
		return err
	}
	for _, d := range desiredServices(c, target, l) {
		if err := w.ensureService(ctx, c, d); err != nil {
			return err
		}
	}
	return nil
}

func (w *Workloads) ensureService(ctx context.Context, c *v1beta1.Canary, d desiredService) error {
	key := types.NamespacedName{Namespace: c.Namespace, Name: d.name}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		svc := &corev1.Service{}
		err := w.Client.Get(ctx, key, svc)
		if apierrors.IsNotFound(err) {
			svc = &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
			applyService(svc, c, d)
			if c.Spec.Service.Headless {
				svc.Spec.ClusterIP = corev1.ClusterIPNone
			}
			if err := controllerutil.SetControllerReference(c, svc, w.Client.Scheme()); err != nil {
				return fmt.Errorf("owning Service %s by canary %s: %w", key, c.Name, err)
			}
			if err := w.Client.Create(ctx, svc); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("creating Service %s: %w", key, err)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading Service %s: %w", key, err)
		}
		before := svc.DeepCopy()
		if d.role == roleApex && !metav1.IsControlledBy(svc, c) {
			if _, ok := svc.Annotations[OriginalSelectorAnnotation]; !ok {
				orig, err := json.Marshal(svc.Spec.Selector)
				if err != nil {
					return fmt.Errorf("recording the selector of Service %s: %w", key, err)
				}
				if svc.Annotations == nil {
					svc.Annotations = map[string]string{}
				}
				svc.Annotations[OriginalSelectorAnnotation] = string(orig)
			}
		}
		applyService(svc, c, d)
		if equalService(before, svc) {
			return nil
		}
		if err := w.Client.Update(ctx, svc); err != nil {
			return fmt.Errorf("updating Service %s: %w", key, err)
		}
		return nil
	})
}

// applyService sets what Sluice manages of a Service: selector, ports (node
// ports kept), traffic distribution, and the spec's labels and annotations.
func applyService(svc *corev1.Service, c *v1beta1.Canary, d desiredService) {
	svc.Spec.Selector = maps.Clone(d.selector)
	ports := make([]corev1.ServicePort, len(d.ports))
	copy(ports, d.ports)
	for i := range ports {
		for _, old := range svc.Spec.Ports {
			if old.Port == ports[i].Port && protocolOf(old) == protocolOf(ports[i]) {
				ports[i].NodePort = old.NodePort
			}
		}
	}
	// Other ports of a Service Sluice took over stay.
	for _, old := range svc.Spec.Ports {
		clash := false
		for _, p := range d.ports {
			if old.Name == p.Name || old.Port == p.Port && protocolOf(old) == protocolOf(p) {
				clash = true
				break
			}
		}
		if !clash && old.Name != "" { // unnamed ports cannot be one of several
			ports = append(ports, old)
		}
	}
	svc.Spec.Ports = ports
	if td := c.Spec.Service.TrafficDistribution; td != "" {
		svc.Spec.TrafficDistribution = new(string(td))
	}
	if d.meta != nil {
		if len(d.meta.Labels) > 0 && svc.Labels == nil {
			svc.Labels = map[string]string{}
		}
		maps.Copy(svc.Labels, d.meta.Labels)
		if len(d.meta.Annotations) > 0 && svc.Annotations == nil {
			svc.Annotations = map[string]string{}
		}
		maps.Copy(svc.Annotations, d.meta.Annotations)
	}
}

func equalService(a, b *corev1.Service) bool {
	return maps.Equal(a.Labels, b.Labels) && maps.Equal(a.Annotations, b.Annotations) &&
		maps.Equal(a.Spec.Selector, b.Spec.Selector) && ptrEqual(a.Spec.TrafficDistribution, b.Spec.TrafficDistribution) &&
		portsEqual(a.Spec.Ports, b.Spec.Ports)
}

func portsEqual(a, b []corev1.ServicePort) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Name != y.Name || x.Port != y.Port || x.TargetPort != y.TargetPort || protocolOf(x) != protocolOf(y) ||
			x.NodePort != y.NodePort || !ptrEqual(x.AppProtocol, y.AppProtocol) {
			return false
		}
	}
	return true
}
