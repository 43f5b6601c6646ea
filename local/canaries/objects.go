package canaries

import (
	"context"
	"fmt"
	"sync"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/sluicehq/sluice/analysis/notify"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// supporting holds the sluice.dev objects canaries refer to: AlertProviders
// (by analysis.alerts) and MetricTemplates (by analysis.metrics). It has a
// lock of its own, as the driver reads them while the controller's lock is
// held by a tick.
type supporting struct {
	mu        sync.RWMutex
	providers map[string]*v1beta1.AlertProvider  // by "ns/name"
	templates map[string]*v1beta1.MetricTemplate // by "ns/name"
}

// set replaces the objects with those among objs; an object that cannot be
// decoded is logged and skipped.
func (c *Controller) setSupporting(objs []*unstructured.Unstructured) {
	providers := map[string]*v1beta1.AlertProvider{}
	templates := map[string]*v1beta1.MetricTemplate{}
	for _, o := range objs {
		if o.GroupVersionKind().Group != v1beta1.GroupName {
			continue
		}
		ns := o.GetNamespace()
		if ns == "" {
			ns = "default"
		}
		key := ns + "/" + o.GetName()
		switch o.GetKind() {
		case "AlertProvider":
			var p v1beta1.AlertProvider
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &p); err != nil {
				c.log.Warn("skipping an AlertProvider that cannot be decoded", "provider", key, "error", err)
				c.say(fmt.Sprintf("AlertProvider %s cannot be decoded: %v", key, err))
				continue
			}
			p.Namespace = ns
			providers[key] = &p
		case "MetricTemplate":
			var t v1beta1.MetricTemplate
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &t); err != nil {
				c.log.Warn("skipping a MetricTemplate that cannot be decoded", "template", key, "error", err)
				c.say(fmt.Sprintf("MetricTemplate %s cannot be decoded: %v", key, err))
				continue
			}
			t.Namespace = ns
			templates[key] = &t
		}
	}
	c.sup.mu.Lock()
	c.sup.providers, c.sup.templates = providers, templates
	c.sup.mu.Unlock()
}

// AlertTarget returns the notification target of one of a canary's alerts:
// the AlertProvider it names (in the canary's namespace unless it names
// one), with the alert's severity. It is the resolver of
// canary.NotifierFromDispatcher.
func (c *Controller) AlertTarget(cn *v1beta1.Canary, alert v1beta1.CanaryAlert) (notify.Target, error) {
	ns := alert.ProviderRef.Namespace
	if ns == "" {
		ns = cn.Namespace
	}
	c.sup.mu.RLock()
	p := c.sup.providers[ns+"/"+alert.ProviderRef.Name]
	c.sup.mu.RUnlock()
	if p == nil {
		return notify.Target{}, fmt.Errorf("no AlertProvider %s/%s in the manifests", ns, alert.ProviderRef.Name)
	}
	return notify.NewTarget(alert, p.DeepCopy()), nil
}

// MetricTemplate returns the MetricTemplate namespace/name of the
// manifests; it makes the controller a template.Getter.
func (c *Controller) MetricTemplate(_ context.Context, namespace, name string) (*v1beta1.MetricTemplate, error) {
	c.sup.mu.RLock()
	t := c.sup.templates[namespace+"/"+name]
	c.sup.mu.RUnlock()
	if t == nil {
		return nil, fmt.Errorf("no MetricTemplate %s/%s in the manifests", namespace, name)
	}
	return t.DeepCopy(), nil
}
