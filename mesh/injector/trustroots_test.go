package injector

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	k8sfake "k8s.io/client-go/kubernetes/fake"
)

// runPublisher runs a TrustRootsPublisher for control plane "sluice" over
// a fake clientset until the test ends.
func runPublisher(t *testing.T, kube *k8sfake.Clientset) *TrustRootsPublisher {
	t.Helper()
	factory := informers.NewSharedInformerFactory(kube, 0)
	p, err := NewTrustRootsPublisher(kube, "sluice",
		factory.Core().V1().Namespaces().Informer(), factory.Core().V1().ConfigMaps().Informer(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	factory.Start(ctx.Done())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, 1) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		factory.Shutdown()
	})
	// The fake clientset loses events between an informer's list and its
	// watch: start changing things once they have synced.
	deadline := time.Now().Add(30 * time.Second)
	for !p.HasSynced() {
		if time.Now().After(deadline) {
			t.Fatal("the informers do not sync")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return p
}

// TestTrustRootsSourceLate: namespaces waiting for trust roots get them
// when the control plane's ConfigMap appears; the control plane's own
// namespace and terminating namespaces never get a copy.
func TestTrustRootsSourceLate(t *testing.T) {
	ns := func(name string, annotated, terminating bool) *corev1.Namespace {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if annotated {
			n.Annotations = map[string]string{AnnotationInject: InjectEnabled}
		}
		if terminating {
			n.Status.Phase = corev1.NamespaceTerminating
		}
		return n
	}
	kube := k8sfake.NewClientset(
		ns("sluice", true, false), ns("annotated", true, false), ns("injected", false, false),
		ns("going", true, true), ns("other", false, false))
	p := runPublisher(t, kube)
	p.Publish("injected")
	p.Publish("sluice")

	ctx := context.Background()
	cms := kube.CoreV1().ConfigMaps
	if _, err := cms("sluice").Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: TrustRootsConfigMap, Namespace: "sluice"},
		Data:       map[string]string{TrustRootsKey: "roots"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"annotated", "injected"} {
		deadline := time.Now().Add(30 * time.Second)
		for {
			cm, err := cms(name).Get(ctx, TrustRootsConfigMap, metav1.GetOptions{})
			if err == nil && cm.Data[TrustRootsKey] == "roots" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("namespace %s: no trust roots (%v)", name, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// Whatever was queued with them has been handled: the queue is empty.
	deadline := time.Now().Add(30 * time.Second)
	for p.queue.Len() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the queue does not drain")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, name := range []string{"going", "other"} {
		if _, err := cms(name).Get(ctx, TrustRootsConfigMap, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("namespace %s: %v, want no copy", name, err)
		}
	}
	cm, err := cms("sluice").Get(ctx, TrustRootsConfigMap, metav1.GetOptions{})
	if err != nil || cm.Labels[LabelManagedBy] != "" {
		t.Errorf("the source was changed: %v, %v", cm, err)
	}
	if got := fmt.Sprint(p.targets()); got != "map[annotated:true going:true injected:true]" {
		t.Errorf("targets = %s", got)
	}
}
