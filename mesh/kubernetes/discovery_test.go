package kubernetes

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

const webService = `
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10, "fd00::10"]
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: grpc, port: 9090, targetPort: 9090, appProtocol: grpc}
  - {name: dns, port: 53, protocol: UDP}
`

// meshedPod is a pod of Deployment web with the proxy as a native sidecar.
const meshedPod = `
metadata:
  name: %s
  namespace: shop
  labels: {app: web, pod-template-hash: 5d8f}
  annotations: {%s}
  ownerReferences:
  - {apiVersion: apps/v1, kind: ReplicaSet, name: web-5d8f, uid: u1, controller: true}
spec:
  serviceAccountName: web
  initContainers:
  - {name: sluice-proxy, image: proxy, restartPolicy: Always}
  containers:
  - name: app
    image: web
    ports:
    - {name: http, containerPort: 8080}
    - {name: grpc, containerPort: 9090}
status:
  podIP: %s
`

const legacyPod = `
metadata:
  name: legacy-0
  namespace: shop
  labels: {app: web}
  ownerReferences:
  - {apiVersion: apps/v1, kind: StatefulSet, name: legacy, uid: u2, controller: true}
spec:
  containers:
  - {name: app, image: legacy}
status:
  podIP: 10.1.0.3
`

// shopObjects is a Service with meshed and unmeshed pods behind it.
func shopObjects(t *testing.T) []runtime.Object {
	podA := decode[corev1.Pod](t, fmt.Sprintf(meshedPod, "web-5d8f-a", `config.sluice.dev/opaque-ports: "9090"`, "10.1.0.1"))
	podB := decode[corev1.Pod](t, fmt.Sprintf(meshedPod, "web-5d8f-b", `config.sluice.dev/skip-inbound-ports: "25,8000-8080"`, "10.1.0.2"))
	legacy := decode[corev1.Pod](t, legacyPod)

	notReady, ready := ptr(false), ptr(true)
	abc := slice("shop", "web-abc", "web", "http", 8080,
		podEndpoint("10.1.0.1", "web-5d8f-a", ready),
		podEndpoint("10.1.0.2", "web-5d8f-b", nil),
		podEndpoint("10.1.0.3", "legacy-0", notReady),
	)
	def := slice("shop", "web-def", "web", "http", 8080,
		podEndpoint("10.1.0.3", "legacy-0", ready), // also in web-abc, not ready there
		discoveryv1.Endpoint{Addresses: []string{"10.1.0.9"}},
	)
	grpc := slice("shop", "web-grpc", "web", "grpc", 9090, podEndpoint("10.1.0.1", "web-5d8f-a", ready))
	fqdn := slice("shop", "web-fqdn", "web", "http", 8080, discoveryv1.Endpoint{Addresses: []string{"web.example.com"}})
	fqdn.AddressType = discoveryv1.AddressTypeFQDN
	other := slice("shop", "other-abc", "other", "http", 8080, podEndpoint("10.1.0.7", "x", ready))
	udp := slice("shop", "web-udp", "web", "http", 8080, podEndpoint("10.1.0.8", "x", ready))
	udp.Ports[0].Protocol = ptr(corev1.ProtocolUDP)

	ext := decode[corev1.Service](t, `
metadata: {name: ext, namespace: shop}
spec: {type: ExternalName, externalName: example.com, ports: [{port: 80}]}
`)
	return []runtime.Object{
		decode[corev1.Service](t, webService), ext,
		podA, podB, legacy,
		abc, def, grpc, fqdn, other, udp,
	}
}

func TestServiceEndpoints(t *testing.T) {
	fc := startFake(t, shopObjects(t)...)

	const webID = "web.shop.serviceaccount.identity.sluice.cluster.local"
	labels := func(pod string) map[string]string {
		return map[string]string{
			"namespace": "shop", "pod": pod, "deployment": "web", "workload_kind": "deployment",
			"revision": "5d8f", "serviceaccount": "web",
		}
	}
	yes := ptr(true)
	tests := []struct {
		key  string
		want routetable.Service
	}{
		{
			key: "web.shop:80",
			want: routetable.Service{
				Name: "web", Namespace: "shop", Port: 80,
				Addresses: []string{"10.96.0.10:80", "[fd00::10]:80"},
				Endpoints: []routetable.Endpoint{
					{Address: "10.1.0.1:8080", Ready: yes, Labels: labels("web-5d8f-a"), Identity: webID, Protocol: routetable.ProtocolHTTP2},
					// Port 8080 is in its skip-inbound-ports: no identity.
					{Address: "10.1.0.2:8080", Ready: yes, Labels: labels("web-5d8f-b")},
					{Address: "10.1.0.3:8080", Ready: yes, Labels: map[string]string{
						"namespace": "shop", "pod": "legacy-0", "statefulset": "legacy", "workload_kind": "statefulset",
						"serviceaccount": "default",
					}},
					{Address: "10.1.0.9:8080", Ready: yes, Labels: map[string]string{"namespace": "shop"}},
				},
			},
		},
		{
			key: "web.shop:9090",
			want: routetable.Service{
				Name: "web", Namespace: "shop", Port: 9090, Protocol: routetable.ProtocolGRPC,
				Addresses: []string{"10.96.0.10:9090", "[fd00::10]:9090"},
				Endpoints: []routetable.Endpoint{
					// Port 9090 is in its opaque-ports.
					{Address: "10.1.0.1:9090", Ready: yes, Labels: labels("web-5d8f-a"), Identity: webID, Protocol: routetable.ProtocolOpaque},
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			got, ok := fc.src.Service(tt.key, "")
			if !ok {
				t.Fatalf("Service(%s) not found", tt.key)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Service(%s) =\n%s\nwant\n%s", tt.key, dump(got), dump(tt.want))
			}
		})
	}

	for _, key := range []string{"web.shop:53", "web.shop:81", "nope.shop:80", "ext.shop:80", "web:80", "web.shop", "web.shop.svc:80"} {
		if svc, ok := fc.src.Service(key, ""); ok {
			t.Errorf("Service(%s) = %+v, want not found", key, svc)
		}
	}
}

func TestEndpointsFollowChanges(t *testing.T) {
	fc := startFake(t, shopObjects(t)...)
	ctx := context.Background()

	// The pod becomes unmeshed (recreated without the proxy): its endpoint
	// loses its identity.
	pod, err := fc.kube.CoreV1().Pods("shop").Get(ctx, "web-5d8f-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Spec.InitContainers = nil
	if _, err := fc.kube.CoreV1().Pods("shop").Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	endpoint := func(addr string) (routetable.Endpoint, bool) {
		svc, _ := fc.src.Service("web.shop:80", "")
		for _, e := range svc.Endpoints {
			if e.Address == addr {
				return e, true
			}
		}
		return routetable.Endpoint{}, false
	}
	eventually(t, fc.src, "the unmeshed pod's endpoint to lose its identity", func() (bool, string) {
		e, ok := endpoint("10.1.0.1:8080")
		return ok && e.Identity == "" && e.Protocol == "", dump(e)
	})

	// The slice drops the endpoint.
	es, err := fc.kube.DiscoveryV1().EndpointSlices("shop").Get(ctx, "web-abc", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	es.Endpoints = es.Endpoints[1:]
	if _, err := fc.kube.DiscoveryV1().EndpointSlices("shop").Update(ctx, es, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, fc.src, "the endpoint to go", func() (bool, string) {
		e, ok := endpoint("10.1.0.1:8080")
		return !ok, dump(e)
	})

	// The Service goes.
	if err := fc.kube.CoreV1().Services("shop").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, fc.src, "the service to go", func() (bool, string) {
		_, ok := fc.src.Resolve("web.shop:80")
		_, ok2 := fc.src.Service("web.shop:80", "")
		return !ok && !ok2, fmt.Sprint(ok, ok2)
	})
}

func TestResolve(t *testing.T) {
	fc := startFake(t, shopObjects(t)...)
	tests := map[string]string{
		"web.shop:80":                    "web.shop:80",
		"web.shop:9090":                  "web.shop:9090",
		"web.shop.svc:80":                "web.shop:80",
		"web.shop.svc.cluster.local:80":  "web.shop:80",
		"Web.Shop.svc.cluster.local.:80": "web.shop:80",
		"web.shop.svc.cluster.local":     "web.shop:80",
		"web.shop":                       "web.shop:80",
		" web.shop:80 ":                  "web.shop:80",
		"10.96.0.10:80":                  "web.shop:80",
		"10.96.0.10:9090":                "web.shop:9090",
		"[fd00::10]:80":                  "web.shop:80",
		"[::ffff:10.96.0.10]:80":         "web.shop:80",
		"web.shop:53":                    "", // UDP
		"web.shop:81":                    "",
		"10.96.0.10:81":                  "",
		"10.96.0.11:80":                  "",
		"nope.shop:80":                   "",
		"ext.shop:80":                    "", // ExternalName
		"web:80":                         "",
		"web.shop.svc.example.org:80":    "",
		"web.shop:0":                     "",
		"web.shop:http":                  "",
		"":                               "",
	}
	for target, want := range tests {
		got, ok := fc.src.Resolve(target)
		if ok != (want != "") || got != want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", target, got, ok, want)
		}
	}
}

const splitRoute = `
metadata: {name: web-split, namespace: shop}
spec:
  parentRefs:
  - {group: "", kind: Service, name: web, port: 80}
  rules:
  - backendRefs:
    - {name: web-primary, port: 80, weight: 90}
    - {name: web-canary, port: 80, weight: 10}
`

// consumerRoute is a route of namespace client for Service shop/web.
const consumerRoute = `
metadata: {name: web-consumer, namespace: client}
spec:
  parentRefs:
  - {group: core, kind: Service, name: web, namespace: shop}
  rules:
  - matches:
    - path: {type: PathPrefix, value: /beta}
    backendRefs:
    - {name: web-canary, namespace: shop, port: 80}
  - filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {name: web-canary, namespace: shop, port: 80}
    backendRefs:
    - {name: web, namespace: shop, port: 80}
`

// backends lists "service:weight" of every rule's backends, "-" for an
// invalid backend and "mirror:service" for mirrors.
func backends(rules []routetable.Rule) [][]string {
	var out [][]string
	for _, r := range rules {
		var bs []string
		for _, b := range r.Backends {
			s := b.Service
			if s == "" {
				s = "-"
			}
			bs = append(bs, fmt.Sprintf("%s:%d", s, b.EffectiveWeight()))
		}
		for _, m := range r.Filters.Mirrors {
			bs = append(bs, "mirror:"+m.Backend)
		}
		out = append(out, bs)
	}
	return out
}

func TestRoutes(t *testing.T) {
	objs := append(shopObjects(t),
		decode[gatewayv1.HTTPRoute](t, splitRoute),
		decode[gatewayv1.HTTPRoute](t, consumerRoute),
	)
	fc := startFake(t, objs...)
	ctx := context.Background()

	rules := func(client string) [][]string {
		svc, ok := fc.src.Service("web.shop:80", client)
		if !ok {
			t.Fatal("web.shop:80 not found")
		}
		return backends(svc.Rules)
	}
	producer := [][]string{{"web-primary.shop:80:90", "web-canary.shop:80:10"}}
	if got := rules(""); !reflect.DeepEqual(got, producer) {
		t.Errorf("producer rules = %q, want %q", got, producer)
	}
	if got := rules("shop"); !reflect.DeepEqual(got, producer) {
		t.Errorf("rules for clients of shop = %q, want %q", got, producer)
	}
	// The consumer route's references to another namespace are not
	// permitted (no ReferenceGrant) except to its parent Service.
	consumerDenied := [][]string{{"-:1"}, {"web.shop:80:1"}}
	if got := rules("client"); !reflect.DeepEqual(got, consumerDenied) {
		t.Errorf("consumer rules = %q, want %q", got, consumerDenied)
	}
	// The route only applies to the port its parentRef names.
	if svc, _ := fc.src.Service("web.shop:9090", ""); len(svc.Rules) != 0 {
		t.Errorf("port 9090 has rules %q", backends(svc.Rules))
	}

	// A ReferenceGrant permits them.
	grant := decode[gatewayv1.ReferenceGrant](t, `
metadata: {name: from-client, namespace: shop}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: client}]
  to: [{group: "", kind: Service, name: web-canary}]
`)
	if _, err := fc.gw.GatewayV1().ReferenceGrants("shop").Create(ctx, grant, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	consumer := [][]string{{"web-canary.shop:80:1"}, {"web.shop:80:1", "mirror:web-canary.shop:80"}}
	eventually(t, fc.src, "the grant to permit the consumer route's backends", func() (bool, string) {
		got := rules("client")
		return reflect.DeepEqual(got, consumer), fmt.Sprint(got)
	})

	// A weight change reaches the compiled rules.
	rt, err := fc.gw.GatewayV1().HTTPRoutes("shop").Get(ctx, "web-split", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rt.Spec.Rules[0].BackendRefs[0].Weight = ptr(int32(50))
	rt.Spec.Rules[0].BackendRefs[1].Weight = ptr(int32(50))
	changed := fc.src.Changed()
	if _, err := fc.gw.GatewayV1().HTTPRoutes("shop").Update(ctx, rt, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-ctxTimeout(t):
		t.Fatal("Changed did not fire after a weight change")
	}
	want := [][]string{{"web-primary.shop:80:50", "web-canary.shop:80:50"}}
	eventually(t, fc.src, "the new weights", func() (bool, string) {
		got := rules("")
		return reflect.DeepEqual(got, want), fmt.Sprint(got)
	})
}

// ctxTimeout returns a channel that closes after waitTimeout.
func ctxTimeout(t *testing.T) <-chan struct{} {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx.Done()
}

func TestEventFilters(t *testing.T) {
	route := decode[gatewayv1.HTTPRoute](t, splitRoute)
	statusOnly := route.DeepCopy()
	statusOnly.ResourceVersion = "2"
	statusOnly.Status.Parents = []gatewayv1.RouteParentStatus{{ControllerName: ControllerName}}
	weight := route.DeepCopy()
	weight.Spec.Rules[0].BackendRefs[0].Weight = ptr(int32(1))
	annotated := route.DeepCopy()
	annotated.Annotations = map[string]string{"retry.sluice.dev/http": "5xx"}

	pod := decode[corev1.Pod](t, legacyPod)
	podStatus := pod.DeepCopy()
	podStatus.ResourceVersion = "7"
	podStatus.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	trimObject(pod)
	trimObject(podStatus)
	podIP := pod.DeepCopy()
	podIP.Status.PodIP = "10.1.0.4"

	svc := decode[corev1.Service](t, webService)
	svcLB := svc.DeepCopy()
	svcLB.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "1.2.3.4"}}

	tests := []struct {
		name     string
		filter   func(old, cur any) bool
		old, cur any
		want     bool
	}{
		{"route status only", routeChanged, route, statusOnly, false},
		{"route weight", routeChanged, route, weight, true},
		{"route annotation", routeChanged, route, annotated, true},
		{"pod readiness condition only", podChanged, pod, podStatus, false},
		{"pod IP", podChanged, pod, podIP, true},
		{"service status", serviceChanged, svc, svcLB, false},
		{"tombstone", serviceChanged, svc, "not a service", true},
	}
	for _, tt := range tests {
		if got := tt.filter(tt.old, tt.cur); got != tt.want {
			t.Errorf("%s: filter = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestWorkloadOfAndPortLists(t *testing.T) {
	ctrl := ptr(true)
	pod := func(hash string, owners ...metav1.OwnerReference) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: owners}}
		if hash != "" {
			p.Labels = map[string]string{"pod-template-hash": hash}
		}
		return p
	}
	tests := []struct {
		name        string
		pod         *corev1.Pod
		kind, name2 string
	}{
		{"deployment", pod("7c9f", metav1.OwnerReference{Kind: "ReplicaSet", Name: "api-v2-7c9f", Controller: ctrl}), "deployment", "api-v2"},
		{"bare replicaset", pod("", metav1.OwnerReference{Kind: "ReplicaSet", Name: "rs", Controller: ctrl}), "replicaset", "rs"},
		{"hash not a suffix", pod("zzz", metav1.OwnerReference{Kind: "ReplicaSet", Name: "rs-abc", Controller: ctrl}), "replicaset", "rs-abc"},
		{"daemonset", pod("", metav1.OwnerReference{Kind: "DaemonSet", Name: "agent", Controller: ctrl}), "daemonset", "agent"},
		{"not a controller", pod("", metav1.OwnerReference{Kind: "ReplicaSet", Name: "x"}), "", ""},
		{"no owner", pod(""), "", ""},
	}
	for _, tt := range tests {
		if kind, name := workloadOf(tt.pod); kind != tt.kind || name != tt.name2 {
			t.Errorf("%s: workloadOf = %q %q, want %q %q", tt.name, kind, name, tt.kind, tt.name2)
		}
	}

	lists := []struct {
		list string
		port int32
		want bool
	}{
		{"25,587", 587, true},
		{"25, 587 ", 587, true},
		{"3300-3310", 3305, true},
		{"3300-3310", 3311, false},
		{"bogus,80", 80, true},
		{"70000,80-x", 80, false},
		{"", 80, false},
	}
	for _, tt := range lists {
		if got := portListed(tt.list, tt.port); got != tt.want {
			t.Errorf("portListed(%q, %d) = %v, want %v", tt.list, tt.port, got, tt.want)
		}
	}
}

// dump formats a value for a failure message.
func dump(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%+v", v)
	}
	return string(b)
}

// TestEndpointRevision checks that endpoints carry the canary controller's
// revision (the pods' sluice.dev/revision annotation), as the telemetry does,
// and the pod-template-hash of pods without it.
func TestEndpointRevision(t *testing.T) {
	s := &Source{}
	for _, tt := range []struct {
		name        string
		annotations map[string]string
		want        string
	}{
		{"canary revision", map[string]string{"sluice.dev/revision": "7c9e1"}, "7c9e1"},
		{"pod-template-hash", nil, "5d8f"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
				Name: "web-5d8f-a", Namespace: "shop",
				Labels:      map[string]string{"pod-template-hash": "5d8f"},
				Annotations: tt.annotations,
			}}
			e := s.endpoint("10.1.0.1:8080", 8080, true, "shop", pod.Name, pod)
			if got := e.Labels["revision"]; got != tt.want {
				t.Errorf("revision label = %q, want %q", got, tt.want)
			}
		})
	}
}
