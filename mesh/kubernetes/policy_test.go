package kubernetes

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/sluicehq/sluice/crds/policy/v1beta1"
)

// names returns "namespace/name" of every object.
func names[T any, P interface {
	*T
	metav1.Object
}](objs []T) []string {
	var out []string
	for i := range objs {
		p := P(&objs[i])
		out = append(out, p.GetNamespace()+"/"+p.GetName())
	}
	slices.Sort(out)
	return out
}

func TestPolicyInputs(t *testing.T) {
	pod := decode[corev1.Pod](t, fmt.Sprintf(meshedPod, "web-5d8f-a", `config.sluice.dev/default-inbound-policy: cluster-authenticated`, "10.1.0.1"))
	pod.Spec.InitContainers[0].Ports = []corev1.ContainerPort{{Name: "admin", ContainerPort: 4191}}
	objs := []runtime.Object{
		pod,
		decode[v1beta1.Server](t, `
metadata: {name: web-http, namespace: shop}
spec: {podSelector: {matchLabels: {app: web}}, port: http}
`),
		decode[v1beta1.Server](t, `
metadata: {name: elsewhere, namespace: other}
spec: {podSelector: {}, port: 8080}
`),
		decode[v1beta1.AuthorizationPolicy](t, `
metadata: {name: web-authz, namespace: shop}
spec:
  targetRef: {group: policy.sluice.dev, kind: Server, name: web-http}
  requiredAuthenticationRefs: [{group: policy.sluice.dev, kind: MeshTLSAuthentication, name: clients, namespace: other}]
`),
		decode[v1beta1.AuthorizationPolicy](t, `
metadata: {name: other-authz, namespace: other}
spec:
  targetRef: {group: policy.sluice.dev, kind: Server, name: elsewhere}
  requiredAuthenticationRefs: [{group: policy.sluice.dev, kind: NetworkAuthentication, name: nets}]
`),
		decode[v1beta1.MeshTLSAuthentication](t, `
metadata: {name: clients, namespace: other}
spec: {identities: ["*"]}
`),
		decode[v1beta1.MeshTLSAuthentication](t, `
metadata: {name: local, namespace: shop}
spec: {identityRefs: [{kind: ServiceAccount, name: api}]}
`),
		decode[v1beta1.NetworkAuthentication](t, `
metadata: {name: nets, namespace: other}
spec: {networks: [{cidr: 10.0.0.0/8}]}
`),
	}
	fc := startFake(t, objs...)

	in, ok := fc.src.PolicyInputs("shop/web-5d8f-a", 8080)
	if !ok {
		t.Fatal("PolicyInputs: pod not found")
	}
	if in.PodNamespace != "shop" || in.Port != 8080 || in.PortName != "http" || in.DefaultPolicy != "cluster-authenticated" {
		t.Errorf("PolicyInputs = ns %q port %d name %q default %q; want shop 8080 http cluster-authenticated",
			in.PodNamespace, in.Port, in.PortName, in.DefaultPolicy)
	}
	if !reflect.DeepEqual(in.PodLabels, pod.Labels) {
		t.Errorf("labels = %v, want %v", in.PodLabels, pod.Labels)
	}
	for _, c := range []struct {
		what      string
		got, want []string
	}{
		{"servers (pod's namespace)", names(in.Servers), []string{"shop/web-http"}},
		{"authorization policies (pod's namespace)", names(in.AuthorizationPolicies), []string{"shop/web-authz"}},
		{"mesh TLS authentications (all)", names(in.MeshTLSAuthentications), []string{"other/clients", "shop/local"}},
		{"network authentications (all)", names(in.NetworkAuthentications), []string{"other/nets"}},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
		}
	}
	if got := in.Servers[0].Spec.Port.StrVal; got != "http" {
		t.Errorf("the Server's port was not converted: %q", got)
	}
	// The result is the caller's.
	in.Servers[0].Name = "changed"
	in.PodLabels["app"] = "changed"
	if again, _ := fc.src.PolicyInputs("shop/web-5d8f-a", 8080); again.Servers[0].Name != "web-http" || again.PodLabels["app"] != "web" {
		t.Error("changing a result changed the source")
	}
	// The proxy's own ports are not the app's.
	if in, _ := fc.src.PolicyInputs("shop/web-5d8f-a", 4191); in.PortName != "" {
		t.Errorf("port 4191 is named %q after the proxy's port", in.PortName)
	}

	for _, bad := range []struct {
		workload string
		port     int
	}{
		{"shop/nope", 8080}, {"shop", 8080}, {"shop/web-5d8f-a/x", 8080}, {"/web-5d8f-a", 8080},
		{"shop/web-5d8f-a", 0}, {"shop/web-5d8f-a", 65536},
	} {
		if _, ok := fc.src.PolicyInputs(bad.workload, bad.port); ok {
			t.Errorf("PolicyInputs(%q, %d) found something", bad.workload, bad.port)
		}
	}

	// A new Server reaches the inputs.
	srv := decode[v1beta1.Server](t, `
metadata: {name: web-grpc, namespace: shop}
spec: {podSelector: {}, port: grpc}
`)
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(srv)
	if err != nil {
		t.Fatal(err)
	}
	obj := &unstructured.Unstructured{Object: u}
	obj.SetAPIVersion(v1beta1.GroupVersion.String())
	obj.SetKind("Server")
	if _, err := fc.dyn.Resource(serversResource).Namespace("shop").Create(context.Background(), obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, fc.src, "the new Server", func() (bool, string) {
		in, _ := fc.src.PolicyInputs("shop/web-5d8f-a", 9090)
		got := names(in.Servers)
		return reflect.DeepEqual(got, []string{"shop/web-grpc", "shop/web-http"}), fmt.Sprint(got)
	})
}
