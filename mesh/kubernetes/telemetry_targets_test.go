package kubernetes

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8sfake "k8s.io/client-go/kubernetes/fake"

	sluicev1beta1 "github.com/sluicehq/sluice/crds/sluice/v1beta1"
	"github.com/sluicehq/sluice/mesh/telemetry"
)

// targetPod is a pod for the telemetry target tests: of Deployment web
// (ReplicaSet web-abc), its proxy a native sidecar unless changed.
func targetPod(ns, name, ip string, phase corev1.PodPhase, change func(*corev1.Pod)) *corev1.Pod {
	always := corev1.ContainerRestartPolicyAlways
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name,
			Labels: map[string]string{"pod-template-hash": "abc"},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-abc", Controller: ptr(true),
			}},
		},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: ProxyContainerName, RestartPolicy: &always}},
			Containers:     []corev1.Container{{Name: "app"}},
		},
		Status: corev1.PodStatus{Phase: phase, PodIP: ip},
	}
	if change != nil {
		change(pod)
	}
	return pod
}

// TestTelemetryTargets: every running meshed pod with an IP is a target,
// at its proxy's metrics port, labelled with its namespace, pod, workload
// and revision.
func TestTelemetryTargets(t *testing.T) {
	tests := []struct {
		name string
		pod  *corev1.Pod
		port int
		want []telemetry.Target
	}{
		{
			name: "native sidecar with a revision",
			pod: targetPod("shop", "web-abc-1", "10.0.0.1", corev1.PodRunning, func(p *corev1.Pod) {
				p.Annotations = map[string]string{sluicev1beta1.RevisionAnnotation: "7d9f"}
			}),
			want: []telemetry.Target{{URL: "http://10.0.0.1:4191/metrics", Labels: map[string]string{
				"namespace": "shop", "pod": "web-abc-1", "deployment": "web", "revision": "7d9f",
			}}},
		},
		{
			name: "proxy container, another metrics port, no revision",
			port: 9191,
			pod: targetPod("shop", "web-abc-2", "10.0.0.2", corev1.PodRunning, func(p *corev1.Pod) {
				p.Spec.InitContainers = nil
				p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: ProxyContainerName})
			}),
			want: []telemetry.Target{{URL: "http://10.0.0.2:9191/metrics", Labels: map[string]string{
				"namespace": "shop", "pod": "web-abc-2", "deployment": "web",
			}}},
		},
		{
			name: "IPv6, a StatefulSet",
			pod: targetPod("shop", "db-0", "fd00::1", corev1.PodRunning, func(p *corev1.Pod) {
				p.OwnerReferences[0].Kind, p.OwnerReferences[0].Name = "StatefulSet", "db"
			}),
			want: []telemetry.Target{{URL: "http://[fd00::1]:4191/metrics", Labels: map[string]string{
				"namespace": "shop", "pod": "db-0", "statefulset": "db",
			}}},
		},
		{
			name: "a Job's pod",
			pod: targetPod("shop", "migrate-x", "10.0.0.3", corev1.PodRunning, func(p *corev1.Pod) {
				p.OwnerReferences[0].Kind, p.OwnerReferences[0].Name = "Job", "migrate"
			}),
			want: []telemetry.Target{{URL: "http://10.0.0.3:4191/metrics", Labels: map[string]string{
				"namespace": "shop", "pod": "migrate-x", "k8s_job": "migrate",
			}}},
		},
		{
			name: "not meshed",
			pod: targetPod("shop", "plain", "10.0.0.4", corev1.PodRunning, func(p *corev1.Pod) {
				p.Spec.InitContainers = nil
			}),
		},
		{name: "pending", pod: targetPod("shop", "pending", "10.0.0.5", corev1.PodPending, nil)},
		{name: "succeeded", pod: targetPod("shop", "done", "10.0.0.6", corev1.PodSucceeded, nil)},
		{name: "running without an IP yet", pod: targetPod("shop", "noip", "", corev1.PodRunning, nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := runTargets(t, TelemetryTargetsOptions{MetricsPort: tt.port}, tt.pod)
			if got := src.Targets(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Targets() = %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// TestTelemetryTargetsFollowPods: targets come and go with pods, sorted by
// URL, and a namespace option limits them.
func TestTelemetryTargetsFollowPods(t *testing.T) {
	a := targetPod("shop", "web-abc-1", "10.0.0.2", corev1.PodRunning, nil)
	b := targetPod("shop", "web-abc-2", "10.0.0.1", corev1.PodRunning, nil)
	other := targetPod("other", "web-abc-3", "10.0.0.3", corev1.PodRunning, nil)
	kube := k8sfake.NewClientset(a, other)
	src := runTargetsOn(t, kube, TelemetryTargetsOptions{Namespace: "shop"})
	urls := func() string {
		var out []string
		for _, tg := range src.Targets() {
			out = append(out, tg.URL)
		}
		return strings.Join(out, " ")
	}
	if got := urls(); got != "http://10.0.0.2:4191/metrics" {
		t.Fatalf("targets of namespace shop = %q", got)
	}
	ctx := context.Background()
	if _, err := kube.CoreV1().Pods("shop").Create(ctx, b, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "the new pod to be a target", func() (bool, string) {
		got := urls()
		return got == "http://10.0.0.1:4191/metrics http://10.0.0.2:4191/metrics", got
	})
	if err := kube.CoreV1().Pods("shop").Delete(ctx, a.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "the deleted pod to be gone", func() (bool, string) {
		got := urls()
		return got == "http://10.0.0.1:4191/metrics", got
	})
}

func TestTelemetryTargetsBadPort(t *testing.T) {
	for _, port := range []int{-1, 65536} {
		_, err := NewTelemetryTargets(k8sfake.NewClientset(), TelemetryTargetsOptions{MetricsPort: port})
		if want := fmt.Sprintf("metrics port %d is not a port number", port); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("port %d: error %v, want %q", port, err, want)
		}
	}
}

// runTargets runs TelemetryTargets over a fake clientset holding objs until
// the test ends, and waits for it to sync.
func runTargets(t *testing.T, opts TelemetryTargetsOptions, objs ...runtime.Object) *TelemetryTargets {
	t.Helper()
	return runTargetsOn(t, k8sfake.NewClientset(objs...), opts)
}

func runTargetsOn(t *testing.T, kube *k8sfake.Clientset, opts TelemetryTargetsOptions) *TelemetryTargets {
	t.Helper()
	src, err := NewTelemetryTargets(kube, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	poll(t, "the pods to be listed", func() (bool, string) {
		select {
		case <-src.Synced():
			return true, ""
		default:
			return false, "not synced"
		}
	})
	return src
}
