package kubernetes

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/sluicehq/sluice/crds/policy/v1beta1"
	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/mesh/identity"
	"github.com/sluicehq/sluice/test/envtest"
)

// apiServer is a real API server with a Source and a StatusWriter on it.
type apiServer struct {
	kube clientset.Interface
	gw   gatewayclient.Interface
	c    client.Client
	src  *Source
}

// TestOnAPIServer runs everything against a real kube-apiserver (envtest),
// started once for all of its cases: starting it is what takes time.
func TestOnAPIServer(t *testing.T) {
	cfg, c := envtest.Start(t)
	kube, err := clientset.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gatewayclient.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	src, err := NewSourceForConfig(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	runSource(t, src)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewStatusWriter(src, gw, nil).Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("StatusWriter.Run: %v", err)
		}
	})
	s := &apiServer{kube: kube, gw: gw, c: c, src: src}

	t.Run("Discovery", s.testDiscovery)
	t.Run("PodAddresses", s.testPodAddresses)
	t.Run("RouteStatus", s.testRouteStatus)
	t.Run("Policy", s.testPolicy)
	t.Run("TokenReview", s.testTokenReview)
	t.Run("CA", s.testCA)
}

// create creates obj, failing the test if the API server refuses it.
func (s *apiServer) create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := s.c.Create(context.Background(), obj); err != nil {
		t.Fatalf("create %T %s/%s: %v", obj, obj.GetNamespace(), obj.GetName(), err)
	}
}

// namespace creates a namespace.
func (s *apiServer) namespace(t *testing.T, name string) {
	t.Helper()
	s.create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
}

// runningPod creates a pod of a Deployment, meshed or not, and sets its
// status as a kubelet would: running, with ip.
func (s *apiServer) runningPod(t *testing.T, ns, deployment, hash, sa, ip string, meshed bool) *corev1.Pod {
	t.Helper()
	ctrl := true
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: deployment + "-" + hash + "-x",
			Labels: map[string]string{"app": deployment, "pod-template-hash": hash},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "ReplicaSet", Name: deployment + "-" + hash, UID: "rs-uid", Controller: &ctrl,
			}},
		},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			Containers: []corev1.Container{{
				Name: "app", Image: "app",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
			}},
		},
	}
	if meshed {
		always := corev1.ContainerRestartPolicyAlways
		pod.Spec.InitContainers = []corev1.Container{{Name: ProxyContainerName, Image: "sluice-proxy", RestartPolicy: &always}}
	}
	s.create(t, pod)
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
	if err := s.c.Status().Update(context.Background(), pod); err != nil {
		t.Fatalf("set the status of pod %s/%s: %v", ns, pod.Name, err)
	}
	return pod
}

// service creates a ClusterIP Service with port 80 (named http) to 8080.
func (s *apiServer) service(t *testing.T, ns, name string) *corev1.Service {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80}},
		},
	}
	svc.Spec.Ports[0].TargetPort.IntVal = 8080
	s.create(t, svc)
	return svc
}

// endpoints creates the EndpointSlice of a Service, as the endpoint slice
// controller would, with a ready endpoint per pod.
func (s *apiServer) endpoints(t *testing.T, svc string, pods ...*corev1.Pod) {
	t.Helper()
	var eps []discoveryv1.Endpoint
	for _, p := range pods {
		eps = append(eps, discoveryv1.Endpoint{
			Addresses:  []string{p.Status.PodIP},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name, UID: p.UID},
		})
	}
	s.create(t, slice(pods[0].Namespace, svc+"-abcde", svc, "http", 8080, eps...))
}

// testDiscovery checks the Source against objects of a real API server:
// Services, Pods, EndpointSlices and an HTTPRoute splitting traffic.
func (s *apiServer) testDiscovery(t *testing.T) {
	ctx := context.Background()
	s.namespace(t, "shop")
	for _, sa := range []string{"web", "legacy"} {
		s.create(t, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: sa}})
	}
	web := s.service(t, "shop", "web")
	s.service(t, "shop", "web-primary")
	s.service(t, "shop", "web-canary")
	primary := s.runningPod(t, "shop", "web-primary", "5d8f", "web", "10.1.0.1", true)
	canary := s.runningPod(t, "shop", "web-canary", "7c9f", "web", "10.1.0.2", true)
	legacy := s.runningPod(t, "shop", "web-legacy", "1a2b", "legacy", "10.1.0.3", false)
	s.endpoints(t, "web", primary, canary, legacy)
	s.endpoints(t, "web-primary", primary)
	s.endpoints(t, "web-canary", canary)
	route := decode[gatewayv1.HTTPRoute](t, splitRoute)
	s.create(t, route)

	const webID = "web.shop.serviceaccount.identity.sluice.cluster.local"
	yes := ptr(true)
	wantPrimary := routetable.Service{
		Name: "web-primary", Namespace: "shop", Port: 80,
		Endpoints: []routetable.Endpoint{{
			Address: "10.1.0.1:8080", Ready: yes, Identity: webID, Protocol: routetable.ProtocolHTTP2,
			Labels: map[string]string{
				"namespace": "shop", "pod": primary.Name, "deployment": "web-primary", "workload_kind": "deployment",
				"revision": "5d8f", "serviceaccount": "web",
			},
		}},
	}
	eventually(t, s.src, "web-primary's endpoints", func() (bool, string) {
		got, ok := s.src.Service("web-primary.shop:80", "")
		got.Addresses = nil // assigned by the API server
		return ok && reflect.DeepEqual(got, wantPrimary), dump(got)
	})

	// The apex Service: its virtual address resolves to it, its endpoints
	// are every pod (the unmeshed one without identity), its rules split.
	clusterIP := web.Spec.ClusterIP
	if clusterIP == "" || clusterIP == "None" {
		t.Fatalf("the API server gave Service web no cluster IP: %q", clusterIP)
	}
	if key, ok := s.src.Resolve(clusterIP + ":80"); !ok || key != "web.shop:80" {
		t.Errorf("Resolve(%s:80) = %q, %v; want web.shop:80", clusterIP, key, ok)
	}
	split := func(w1, w2 int) [][]string {
		return [][]string{{fmt.Sprintf("web-primary.shop:80:%d", w1), fmt.Sprintf("web-canary.shop:80:%d", w2)}}
	}
	eventually(t, s.src, "web's rules and endpoints", func() (bool, string) {
		got, ok := s.src.Service("web.shop:80", "")
		var ids []string
		for _, e := range got.Endpoints {
			ids = append(ids, e.Address+"="+e.Identity)
		}
		want := []string{"10.1.0.1:8080=" + webID, "10.1.0.2:8080=" + webID, "10.1.0.3:8080="}
		return ok && reflect.DeepEqual(backends(got.Rules), split(90, 10)) && reflect.DeepEqual(ids, want) &&
				reflect.DeepEqual(got.Addresses, []string{clusterIP + ":80"}),
			fmt.Sprintf("rules %q endpoints %q addresses %q", backends(got.Rules), ids, got.Addresses)
	})

	// A weight change reaches Changed and the compiled rules.
	changed := s.src.Changed()
	s.updateRoute(t, "shop", route.Name, func(rt *gatewayv1.HTTPRoute) {
		rt.Spec.Rules[0].BackendRefs[0].Weight = ptr(int32(60))
		rt.Spec.Rules[0].BackendRefs[1].Weight = ptr(int32(40))
	})
	select {
	case <-changed:
	case <-ctxTimeout(t):
		t.Fatal("Changed did not fire after the weights changed")
	}
	eventually(t, s.src, "the new weights", func() (bool, string) {
		got, _ := s.src.Service("web.shop:80", "")
		return reflect.DeepEqual(backends(got.Rules), split(60, 40)), fmt.Sprint(backends(got.Rules))
	})

	// The canary pod stops being ready.
	es, err := s.kube.DiscoveryV1().EndpointSlices("shop").Get(ctx, "web-canary-abcde", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	es.Endpoints[0].Conditions.Ready = ptr(false)
	if _, err := s.kube.DiscoveryV1().EndpointSlices("shop").Update(ctx, es, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, s.src, "the canary endpoint to be unready", func() (bool, string) {
		got, _ := s.src.Service("web-canary.shop:80", "")
		return len(got.Endpoints) == 1 && !got.Endpoints[0].IsReady(), dump(got.Endpoints)
	})
}

// updateRoute changes a route's spec, reading it again after a conflict (the
// StatusWriter writes its status meanwhile).
func (s *apiServer) updateRoute(t *testing.T, ns, name string, change func(*gatewayv1.HTTPRoute)) {
	t.Helper()
	ctx := context.Background()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		rt, err := s.gw.GatewayV1().HTTPRoutes(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		change(rt)
		_, err = s.gw.GatewayV1().HTTPRoutes(ns).Update(ctx, rt, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("update httproute %s/%s: %v", ns, name, err)
	}
}

// routeStatus reads a route's parent statuses as "name Accepted ResolvedRefs"
// ("Status/Reason" each), with their observedGeneration checked against the
// route's generation.
func (s *apiServer) routeStatus(t *testing.T, ns, name string) string {
	t.Helper()
	rt, err := s.gw.GatewayV1().HTTPRoutes(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range rt.Status.Parents {
		if p.ControllerName != ControllerName {
			continue
		}
		line := fmt.Sprintf("%s %s %s", p.ParentRef.Name, condition(p.Conditions, "Accepted"), condition(p.Conditions, "ResolvedRefs"))
		for _, typ := range []string{"Accepted", "ResolvedRefs"} {
			if c := meta.FindStatusCondition(p.Conditions, typ); c != nil && c.ObservedGeneration != rt.Generation {
				line += fmt.Sprintf(" (%s of generation %d, not %d)", typ, c.ObservedGeneration, rt.Generation)
			}
		}
		out = append(out, line)
	}
	return strings.Join(out, "; ")
}

// testRouteStatus checks the parent status written for Service parents.
func (s *apiServer) testRouteStatus(t *testing.T) {
	s.namespace(t, "status")
	s.service(t, "status", "web")
	s.service(t, "status", "web-primary")
	route := decode[gatewayv1.HTTPRoute](t, `
metadata: {name: web, namespace: status}
spec:
  parentRefs:
  - {group: "", kind: Service, name: web, port: 80}
  - {group: "", kind: Service, name: missing, port: 80}
  rules:
  - backendRefs:
    - {name: web-primary, port: 80, weight: 100}
`)
	s.create(t, route)
	want := "web True/Accepted True/ResolvedRefs; missing False/NoMatchingParent True/ResolvedRefs"
	poll(t, "the route's parent status", func() (bool, string) {
		got := s.routeStatus(t, "status", "web")
		return got == want, got
	})

	// A backend that does not exist; the new generation is observed.
	s.updateRoute(t, "status", "web", func(rt *gatewayv1.HTTPRoute) {
		rt.Spec.Rules[0].BackendRefs = append(rt.Spec.Rules[0].BackendRefs, gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{
			BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web-canary", Port: ptr(gatewayv1.PortNumber(80))},
		}})
	})
	want = "web True/Accepted False/BackendNotFound; missing False/NoMatchingParent False/BackendNotFound"
	poll(t, "ResolvedRefs to report the missing backend", func() (bool, string) {
		got := s.routeStatus(t, "status", "web")
		return got == want, got
	})

	// The missing pieces appear.
	s.service(t, "status", "missing")
	s.service(t, "status", "web-canary")
	want = "web True/Accepted True/ResolvedRefs; missing True/Accepted True/ResolvedRefs"
	poll(t, "the route to be accepted everywhere", func() (bool, string) {
		got := s.routeStatus(t, "status", "web")
		return got == want, got
	})
}

// testPolicy checks that policy objects of the real API reach PolicyInputs.
func (s *apiServer) testPolicy(t *testing.T) {
	s.namespace(t, "pol")
	s.create(t, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "pol", Name: "web"}})
	s.runningPod(t, "pol", "web", "5d8f", "web", "10.2.0.1", true)
	srv := decode[v1beta1.Server](t, `
metadata: {name: web-http, namespace: pol}
spec: {podSelector: {matchLabels: {app: web}}, port: http, proxyProtocol: HTTP/1}
`)
	s.create(t, srv)
	s.create(t, decode[v1beta1.MeshTLSAuthentication](t, `
metadata: {name: clients, namespace: pol}
spec: {identityRefs: [{kind: ServiceAccount, name: api}]}
`))
	s.create(t, decode[v1beta1.AuthorizationPolicy](t, `
metadata: {name: web-authz, namespace: pol}
spec:
  targetRef: {group: policy.sluice.dev, kind: Server, name: web-http}
  requiredAuthenticationRefs: [{group: policy.sluice.dev, kind: MeshTLSAuthentication, name: clients}]
`))
	eventually(t, s.src, "the policy objects", func() (bool, string) {
		in, ok := s.src.PolicyInputs("pol/web-5d8f-x", 8080)
		if !ok || len(in.Servers) != 1 || len(in.AuthorizationPolicies) != 1 {
			return false, dump(in)
		}
		return in.PortName == "http" && in.Servers[0].Spec.ProxyProtocol == v1beta1.ProxyProtocol("HTTP/1") &&
			in.AuthorizationPolicies[0].Spec.TargetRef.Name == "web-http" &&
			len(in.MeshTLSAuthentications) == 1 && in.MeshTLSAuthentications[0].Name == "clients", dump(in)
	})
}

// testTokenReview checks TokenReviewAuthenticator with tokens the API server
// issued: a projected token of one service account proves its identity and
// no other.
func (s *apiServer) testTokenReview(t *testing.T) {
	ctx := context.Background()
	s.namespace(t, "tokens")
	for _, sa := range []string{"web", "api"} {
		s.create(t, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "tokens", Name: sa}})
	}
	token := func(sa string, audiences ...string) []byte {
		t.Helper()
		tr, err := s.kube.CoreV1().ServiceAccounts("tokens").CreateToken(ctx, sa, &authnv1.TokenRequest{
			Spec: authnv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: ptr(int64(3600))},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("request a token for service account tokens/%s: %v", sa, err)
		}
		return []byte(tr.Status.Token)
	}
	webToken := token("web", DefaultTokenAudience)
	apiToken := token("api", DefaultTokenAudience)
	otherAudience := token("web", "vault.example.com")

	webID := identity.Name("web", "tokens", "", "")
	apiID := identity.Name("api", "tokens", "", "")
	a := &TokenReviewAuthenticator{Client: s.kube}
	tests := []struct {
		name     string
		token    []byte
		identity string
		want     string // "" for accepted, else in the ErrInvalidToken
	}{
		{"web's token, web's identity", webToken, webID, ""},
		{"api's token, api's identity", apiToken, apiID, ""},
		{"web's token, api's identity", webToken, apiID, "whose identity is " + webID},
		{"web's token, web's name in another control plane", webToken, identity.Name("web", "tokens", "other", ""), "not web.tokens.serviceaccount.identity.other"},
		{"web's token for another audience", otherAudience, webID, "token"},
		{"not a token", []byte("garbage"), webID, "token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := a.Authenticate(ctx, tt.identity, tt.token)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Authenticate: %v", err)
				}
				return
			}
			if !errors.Is(err, identity.ErrInvalidToken) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Authenticate: got %v; want ErrInvalidToken saying %q", err, tt.want)
			}
		})
	}

	// The token of a service account deleted since proves nothing. (It was
	// never reviewed before: the API server caches successful reviews.)
	s.create(t, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "tokens", Name: "gone"}})
	goneToken := token("gone", DefaultTokenAudience)
	if err := s.kube.CoreV1().ServiceAccounts("tokens").Delete(ctx, "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := a.Authenticate(ctx, identity.Name("gone", "tokens", "", ""), goneToken); !errors.Is(err, identity.ErrInvalidToken) {
		t.Errorf("the token of a deleted service account: %v; want ErrInvalidToken", err)
	}
}

// testCA checks LoadCA and WatchCA against a real ConfigMap and Secret: an
// issuer rotation, a trust-anchor rotation to a bundle of two anchors
// (leaves issued meanwhile verify against it), a bundle the issuer does
// not chain to (unusable, saying so), and its fix.
func (s *apiServer) testCA(t *testing.T) {
	ctx := context.Background()
	s.namespace(t, "sluice")
	c, next, foreign := newTestCA(t), newTestCA(t), newTestCA(t)
	cm, sec := caObjects(c, c.issuer, c.issuerKey)
	s.create(t, cm)
	s.create(t, sec)
	ca, err := LoadCA(ctx, s.kube, "sluice", "", "")
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	r := newCAReports()
	watchCA(t, s.kube, ca, r)
	u := caUpdater{t, s.kube}

	crt, key := c.newIssuer(t, "issuer-2")
	u.secret(crt, key)
	r.until(t, "the rotated issuer", func(st CAState) bool { return st.Reloaded })
	if got := ca.Issuer().Subject.CommonName; got != "issuer-2" {
		t.Errorf("issuer after rotating the Secret = %q, want issuer-2", got)
	}

	// Two anchors: the issuer keeps issuing, leaves verify against both.
	u.anchors(c.anchor, next.anchor)
	if st := r.until(t, "the two-anchor bundle", func(st CAState) bool { return st.Reloaded || st.Unusable != nil }); st.Unusable != nil {
		t.Fatalf("the two-anchor bundle: %v", st.Unusable)
	}
	if err := verifyIssued(t, ca, c.anchor, next.anchor); err != nil {
		t.Errorf("a leaf issued with the two-anchor bundle: %v", err)
	}
	// Then the new issuer.
	u.secret(next.issuer, next.issuerKey)
	if st := r.until(t, "the new issuer", func(st CAState) bool { return st.Reloaded || st.IssuerRejected != nil }); st.IssuerRejected != nil {
		t.Fatalf("the issuer of the new anchor: %v", st.IssuerRejected)
	}
	if err := verifyIssued(t, ca, next.anchor); err != nil {
		t.Errorf("a leaf of the new issuer against the new anchor: %v", err)
	}

	// A bundle the issuer does not chain to, then the fix.
	u.anchors(foreign.anchor)
	st := r.until(t, "unusable anchors", func(st CAState) bool { return st.Unusable != nil })
	if want := "does not chain to any trust anchor of ConfigMap sluice/sluice-identity-trust-roots"; !strings.Contains(st.Unusable.Error(), want) {
		t.Errorf("Unusable = %v; want it to say %q", st.Unusable, want)
	}
	u.anchors(next.anchor)
	r.until(t, "usable anchors again", func(st CAState) bool { return st.Unusable == nil })
}

// verifyIssued has ca sign a leaf and verifies it, with the chain ca
// sends, against the anchors given (PEM).
func verifyIssued(t *testing.T, ca *identity.CA, anchors ...[]byte) error {
	t.Helper()
	id := identity.Name("web", "shop", "", "")
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{id}}, k)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	leafDER, chain, _, err := ca.Sign(csr, id, time.Hour)
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, a := range anchors {
		if !roots.AppendCertsFromPEM(a) {
			t.Fatal("no anchor in the PEM")
		}
	}
	for _, d := range chain {
		inter.AddCert(mustParse(t, d))
	}
	_, err = mustParse(t, leafDER).Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: id,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}
