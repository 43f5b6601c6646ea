package canaries

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/canary"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
	"github.com/sluicehq/sluice/mesh/localstore"
)

const supportingYAML = `
apiVersion: sluice.dev/v1beta1
kind: AlertProvider
metadata: {name: on-call}
spec: {type: generic, address: "http://127.0.0.1:1/hook"}
---
apiVersion: sluice.dev/v1beta1
kind: AlertProvider
metadata: {name: chat, namespace: ops}
spec: {type: slack, channel: deploys, address: "http://127.0.0.1:1/slack"}
---
apiVersion: sluice.dev/v1beta1
kind: MetricTemplate
metadata: {name: error-rate, namespace: shop}
spec:
  provider: {type: sluice}
  query: 'error_rate{workload="{{ target }}"}'
`

func objects(t *testing.T, docs string) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, d := range strings.Split(docs, "\n---\n") {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(d), &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
	return out
}

func TestSupportingObjects(t *testing.T) {
	h := newHarness(t, t.TempDir())
	h.ctrl.SetObjects(append(objects(t, supportingYAML), canaryObject(t)))
	cn := &v1beta1.Canary{}
	cn.Namespace = "default"
	alerts := []struct {
		name      string
		alert     v1beta1.CanaryAlert
		wantAddr  string
		wantSev   v1beta1.AlertSeverity
		wantError string
	}{
		{name: "same namespace", alert: v1beta1.CanaryAlert{Name: "a", ProviderRef: v1beta1.CrossNamespaceObjectReference{Name: "on-call"}},
			wantAddr: "http://127.0.0.1:1/hook", wantSev: v1beta1.SeverityInfo},
		{name: "other namespace", alert: v1beta1.CanaryAlert{Name: "b", Severity: v1beta1.SeverityError, ProviderRef: v1beta1.CrossNamespaceObjectReference{Name: "chat", Namespace: "ops"}},
			wantAddr: "http://127.0.0.1:1/slack", wantSev: v1beta1.SeverityError},
		{name: "missing", alert: v1beta1.CanaryAlert{Name: "c", ProviderRef: v1beta1.CrossNamespaceObjectReference{Name: "chat"}},
			wantError: "no AlertProvider default/chat"},
	}
	for _, tt := range alerts {
		t.Run(tt.name, func(t *testing.T) {
			got, err := h.ctrl.AlertTarget(cn, tt.alert)
			if tt.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantError) {
					t.Fatalf("err %v, want %q", err, tt.wantError)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Spec.Address != tt.wantAddr || got.Severity != tt.wantSev {
				t.Errorf("target %+v, want address %s severity %s", got, tt.wantAddr, tt.wantSev)
			}
		})
	}
	mt, err := h.ctrl.MetricTemplate(context.Background(), "shop", "error-rate")
	if err != nil || mt.Spec.Provider.Type != v1beta1.MetricProviderSluice {
		t.Errorf("MetricTemplate shop/error-rate: %+v, %v", mt, err)
	}
	if _, err := h.ctrl.MetricTemplate(context.Background(), "default", "error-rate"); err == nil {
		t.Error("a MetricTemplate of another namespace was found")
	}
	// Removed from the manifests: gone.
	h.ctrl.SetObjects([]*unstructured.Unstructured{canaryObject(t)})
	if _, err := h.ctrl.AlertTarget(cn, alerts[0].alert); err == nil {
		t.Error("a removed AlertProvider is still found")
	}
}

// recorder is a Notifier and Hooks that records what it is given.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) Notify(c *v1beta1.Canary, n canary.Notification) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, n.Event)
	return nil
}

func (r *recorder) seen(event string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if e == event {
			return true
		}
	}
	return false
}

func TestOptionsReachTheDriver(t *testing.T) {
	rec := &recorder{}
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	ctrl, err := New(Options{StateDir: t.TempDir(), Supervisor: &fakeSupervisor{}, Store: localstore.New(),
		Analyzer: &fakeAnalyzer{rate: 100}, Notifier: rec, Metrics: canary.NewMetrics(nil),
		Clock: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ctrl.SetObjects([]*unstructured.Unstructured{canaryObject(t)})
	ctrl.ApplyWorkload(backend("v1"))
	for range 5 {
		now = now.Add(10 * time.Second)
		ctrl.mu.Lock()
		for _, e := range ctrl.entries {
			ctrl.tickLocked(context.Background(), e)
		}
		ctrl.mu.Unlock()
	}
	if !rec.seen(canary.EventInitialized) {
		t.Errorf("the notifier got %v, want %s among them", rec.events, canary.EventInitialized)
	}
}
