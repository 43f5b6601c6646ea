package kubernetes

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

// hostNetworkPod is a meshed pod on the node's network: its IP is the node's.
const hostNetworkPod = `
metadata: {name: agent-x, namespace: kube-system}
spec:
  hostNetwork: true
  serviceAccountName: agent
  initContainers:
  - {name: sluice-proxy, image: proxy, restartPolicy: Always}
  containers:
  - {name: agent, image: agent}
status:
  phase: Running
  podIP: 192.168.0.10
  podIPs: [{ip: 192.168.0.10}]
`

// finishedPod is a meshed Job pod that has succeeded: its IP is free.
const finishedPod = `
metadata: {name: job-x, namespace: shop}
spec:
  serviceAccountName: job
  initContainers:
  - {name: sluice-proxy, image: proxy, restartPolicy: Always}
  containers:
  - {name: job, image: job}
status:
  phase: Succeeded
  podIP: 10.1.0.20
`

func TestPodAddresses(t *testing.T) {
	objs := append(shopObjects(t), decode[corev1.Pod](t, hostNetworkPod), decode[corev1.Pod](t, finishedPod))
	fc := startFake(t, objs...)

	const webID = "web.shop.serviceaccount.identity.sluice.cluster.local"
	webLabels := func(pod string) map[string]string {
		return map[string]string{
			"namespace": "shop", "pod": pod, "deployment": "web", "workload_kind": "deployment",
			"revision": "5d8f", "serviceaccount": "web",
		}
	}
	yes := ptr(true)
	podService := func(name string, port int, protocol routetable.Protocol, ep routetable.Endpoint) *routetable.Service {
		return &routetable.Service{
			Name: name, Namespace: "shop.pod", Port: port,
			Addresses: []string{ep.Address},
			Protocol:  protocol,
			Exists:    yes,
			Endpoints: []routetable.Endpoint{ep},
		}
	}
	tests := []struct {
		target, key string
		want        *routetable.Service // nil: no such address
	}{
		{
			// A meshed pod: its identity, on any port it has.
			target: "10.1.0.1:8080", key: "10-1-0-1.shop.pod:8080",
			want: podService("10-1-0-1", 8080, routetable.ProtocolDetect, routetable.Endpoint{
				Address: "10.1.0.1:8080", Ready: yes, Labels: webLabels("web-5d8f-a"), Identity: webID, Protocol: routetable.ProtocolHTTP2,
			}),
		},
		{
			target: "[::ffff:10.1.0.1]:7000", key: "10-1-0-1.shop.pod:7000",
			want: podService("10-1-0-1", 7000, routetable.ProtocolDetect, routetable.Endpoint{
				Address: "10.1.0.1:7000", Ready: yes, Labels: webLabels("web-5d8f-a"), Identity: webID, Protocol: routetable.ProtocolHTTP2,
			}),
		},
		{
			// Its opaque-ports annotation lists 9090.
			target: "10.1.0.1:9090", key: "10-1-0-1.shop.pod:9090",
			want: podService("10-1-0-1", 9090, routetable.ProtocolOpaque, routetable.Endpoint{
				Address: "10.1.0.1:9090", Ready: yes, Labels: webLabels("web-5d8f-a"), Identity: webID, Protocol: routetable.ProtocolOpaque,
			}),
		},
		{
			// Its skip-inbound-ports annotation lists 8080: no identity.
			target: "10.1.0.2:8080", key: "10-1-0-2.shop.pod:8080",
			want: podService("10-1-0-2", 8080, routetable.ProtocolDetect, routetable.Endpoint{
				Address: "10.1.0.2:8080", Ready: yes, Labels: webLabels("web-5d8f-b"),
			}),
		},
		{
			// An unmeshed pod: no identity, so the client stays in plain text.
			target: "10.1.0.3:8080", key: "10-1-0-3.shop.pod:8080",
			want: podService("10-1-0-3", 8080, routetable.ProtocolDetect, routetable.Endpoint{
				Address: "10.1.0.3:8080", Ready: yes, Labels: map[string]string{
					"namespace": "shop", "pod": "legacy-0", "statefulset": "legacy", "workload_kind": "statefulset",
					"serviceaccount": "default",
				},
			}),
		},
		// A pod on the host's network shares the node's IP: never an identity.
		{target: "192.168.0.10:10250"},
		// A finished pod's IP is free.
		{target: "10.1.0.20:8080"},
		// An address of no pod, nor Service.
		{target: "10.1.0.99:8080"},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			key, ok := fc.src.Resolve(tt.target)
			if tt.want == nil {
				if ok {
					svc, _ := fc.src.Service(key, "")
					t.Fatalf("Resolve(%q) = %q (%s), want no match", tt.target, key, dump(svc))
				}
				return
			}
			if !ok || key != tt.key {
				t.Fatalf("Resolve(%q) = %q, %v; want %q", tt.target, key, ok, tt.key)
			}
			got, ok := fc.src.Service(key, "client")
			if !ok {
				t.Fatalf("Service(%s) not found", key)
			}
			if !reflect.DeepEqual(got, *tt.want) {
				t.Errorf("Service(%s) =\n%s\nwant\n%s", key, dump(got), dump(*tt.want))
			}
			if got.Key() != key {
				t.Errorf("Service(%s) is keyed %s", key, got.Key())
			}
		})
	}

	// A cluster IP is still its Service's, and a key of a pod address in
	// another namespace than the pod's is nobody's.
	if key, ok := fc.src.Resolve("10.96.0.10:80"); !ok || key != "web.shop:80" {
		t.Errorf("Resolve(cluster IP) = %q, %v; want web.shop:80", key, ok)
	}
	for _, key := range []string{"10-1-0-1.other.pod:8080", "10-1-0-99.shop.pod:8080", "192-168-0-10.kube-system.pod:10250"} {
		if svc, ok := fc.src.Service(key, ""); ok {
			t.Errorf("Service(%s) = %s, want not found", key, dump(svc))
		}
	}
}

func TestPodAddressFollowsPod(t *testing.T) {
	fc := startFake(t, shopObjects(t)...)
	ctx := context.Background()
	const target = "10.1.0.1:8080"
	identityAt := func() (string, bool) {
		key, ok := fc.src.Resolve(target)
		if !ok {
			return "", false
		}
		svc, ok := fc.src.Service(key, "")
		if !ok || len(svc.Endpoints) != 1 {
			return "", false
		}
		return svc.Endpoints[0].Identity, true
	}

	// The pod is deleted: its address is nobody's.
	if err := fc.kube.CoreV1().Pods("shop").Delete(ctx, "web-5d8f-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, fc.src, "the deleted pod's address to be unknown", func() (bool, string) {
		id, ok := identityAt()
		return !ok, fmt.Sprintf("identity %q, found %v", id, ok)
	})

	// A pod of another namespace and service account gets the IP.
	reused := decode[corev1.Pod](t, fmt.Sprintf(meshedPod, "db-0", "", "10.1.0.1"))
	reused.Namespace, reused.Spec.ServiceAccountName = "data", "db"
	if _, err := fc.kube.CoreV1().Pods("data").Create(ctx, reused, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	const dbID = "db.data.serviceaccount.identity.sluice.cluster.local"
	eventually(t, fc.src, "the address to carry the new pod's identity", func() (bool, string) {
		id, ok := identityAt()
		key, _ := fc.src.Resolve(target)
		return ok && id == dbID && key == "10-1-0-1.data.pod:8080", fmt.Sprintf("key %q identity %q", key, id)
	})

	// It moves to the host's network (recreated so): no identity any more.
	reused.Spec.HostNetwork = true
	if _, err := fc.kube.CoreV1().Pods("data").Update(ctx, reused, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, fc.src, "a host-network pod's address to be unknown", func() (bool, string) {
		id, ok := identityAt()
		return !ok, fmt.Sprintf("identity %q, found %v", id, ok)
	})
}

func TestPodIPIndex(t *testing.T) {
	pod := func(mutate func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{Status: corev1.PodStatus{
			Phase: corev1.PodRunning, PodIP: "10.1.0.1",
			PodIPs: []corev1.PodIP{{IP: "10.1.0.1"}, {IP: "fd00::1"}, {IP: "bogus"}},
		}}
		if mutate != nil {
			mutate(p)
		}
		return p
	}
	tests := []struct {
		name string
		pod  any
		want []string
	}{
		{"dual stack", pod(nil), []string{"10.1.0.1", "fd00::1"}},
		{"pending with an IP", pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }), []string{"10.1.0.1", "fd00::1"}},
		{"no IP yet", pod(func(p *corev1.Pod) { p.Status.PodIP, p.Status.PodIPs = "", nil }), nil},
		{"host network", pod(func(p *corev1.Pod) { p.Spec.HostNetwork = true }), nil},
		{"succeeded", pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }), nil},
		{"failed", pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }), nil},
		{"not a pod", &corev1.Service{}, nil},
	}
	for _, tt := range tests {
		got, err := podIPIndex(tt.pod)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: podIPIndex = %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
}

func TestPodByIPPrefersTheLivePod(t *testing.T) {
	at := func(sec int64) metav1.Time { return metav1.Unix(sec, 0) }
	running := func(name string, created int64, deleting bool) *corev1.Pod {
		p := decode[corev1.Pod](t, fmt.Sprintf(meshedPod, name, "", "10.1.0.1"))
		p.CreationTimestamp = at(created)
		if deleting {
			p.DeletionTimestamp = ptr(at(created + 100))
			p.Finalizers = []string{"test/keep"} // the fake keeps a pod being deleted only with one
		}
		return p
	}
	tests := []struct {
		name string
		pods []*corev1.Pod
		want string
	}{
		{"the one not being deleted", []*corev1.Pod{running("old", 1, false), running("leaving", 2, true)}, "old"},
		{"then the newer", []*corev1.Pod{running("old", 1, false), running("new", 2, false)}, "new"},
		{"then by name", []*corev1.Pod{running("b", 1, false), running("a", 1, false)}, "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var objs []runtime.Object
			for _, p := range tt.pods {
				objs = append(objs, p)
			}
			fc := startFake(t, objs...)
			want, other := tt.pods[0], tt.pods[1]
			if want.Name != tt.want {
				want, other = other, want
			}
			if !preferredPod(want, other) || preferredPod(other, want) {
				t.Errorf("preferredPod does not prefer %s to %s, and only it", want.Name, other.Name)
			}
			p := fc.src.podByIP(netip.MustParseAddr("10.1.0.1"))
			if p == nil || p.Name != tt.want {
				t.Errorf("podByIP = %v, want %s", p, tt.want)
			}
		})
	}
}
