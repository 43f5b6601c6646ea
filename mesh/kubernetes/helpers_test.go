package kubernetes

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/crds/policy/v1beta1"
)

// waitTimeout bounds every wait for something to happen; it is a failure
// guard, not a timing assertion.
const waitTimeout = 30 * time.Second

// fakeCluster is a Source running over fake clientsets.
type fakeCluster struct {
	kube *k8sfake.Clientset
	gw   *gatewayfake.Clientset
	dyn  *dynamicfake.FakeDynamicClient
	src  *Source
}

// policyScheme knows the policy kinds, for the fake dynamic client.
func policyScheme(t testing.TB) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	if err := v1beta1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

// startFake starts a Source over fake clientsets holding objs (Kubernetes
// kinds, Gateway API kinds and policy kinds), waits for it to sync, and
// stops it (waiting for its goroutines) when the test ends.
func startFake(t *testing.T, objs ...runtime.Object) *fakeCluster {
	t.Helper()
	var kube, gw, pol []runtime.Object
	for _, o := range objs {
		switch o.(type) {
		case *gatewayv1.HTTPRoute, *gatewayv1.ReferenceGrant:
			gw = append(gw, o)
		case *v1beta1.Server, *v1beta1.AuthorizationPolicy, *v1beta1.MeshTLSAuthentication, *v1beta1.NetworkAuthentication:
			pol = append(pol, o)
		default:
			kube = append(kube, o)
		}
	}
	fc := &fakeCluster{
		kube: k8sfake.NewClientset(kube...),
		gw:   gatewayfake.NewClientset(gw...),
		dyn: dynamicfake.NewSimpleDynamicClientWithCustomListKinds(policyScheme(t), map[schema.GroupVersionResource]string{
			serversResource:       "ServerList",
			authzPoliciesResource: "AuthorizationPolicyList",
			meshTLSResource:       "MeshTLSAuthenticationList",
			networkAuthnResource:  "NetworkAuthenticationList",
		}, pol...),
	}
	src, err := NewSource(fc.kube, fc.gw, fc.dyn, Options{Debounce: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	fc.src = src
	runSource(t, src)
	return fc
}

// runSource runs src until the test ends, and waits for it to sync.
func runSource(t *testing.T, src *Source) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	wctx, wcancel := context.WithTimeout(ctx, waitTimeout)
	defer wcancel()
	if err := src.WaitForSync(wctx); err != nil {
		t.Fatal(err)
	}
}

// eventually waits until cond holds, checking at every change of src. It
// fails the test with cond's last description of what it saw.
func eventually(t testing.TB, src *Source, what string, cond func() (ok bool, saw string)) {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		changed := src.Changed()
		ok, saw := cond()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s; last saw: %s", what, saw)
		}
	}
}

// poll waits until cond holds, checking every few milliseconds, for what
// no Source change announces (an object's status written by the test's
// subject). It fails the test with cond's last description of what it saw.
func poll(t testing.TB, what string, cond func() (ok bool, saw string)) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last saw: %s", what, saw)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// decode reads one object from YAML, strictly.
func decode[T any](t testing.TB, doc string) *T {
	t.Helper()
	out := new(T)
	if err := yaml.UnmarshalStrict([]byte(strings.TrimSpace(doc)), out); err != nil {
		t.Fatalf("decode %T: %v\n%s", out, err, doc)
	}
	return out
}

// ptr returns a pointer to v.
func ptr[T any](v T) *T { return &v }

// slice builds an EndpointSlice of service svc in ns with one named port.
func slice(ns, name, svc, portName string, port int32, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr(portName), Port: ptr(port)}},
		Endpoints:   eps,
	}
}

// podEndpoint is an endpoint of a pod.
func podEndpoint(ip, pod string, ready *bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{
		Addresses:  []string{ip},
		Conditions: discoveryv1.EndpointConditions{Ready: ready},
		TargetRef:  &corev1.ObjectReference{Kind: "Pod", Name: pod},
	}
}
