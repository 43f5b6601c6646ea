package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientset "k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	sluicev1beta1 "github.com/sluicehq/sluice/crds/sluice/v1beta1"
	"github.com/sluicehq/sluice/mesh/api/meshv1"
	"github.com/sluicehq/sluice/mesh/identity"
	meshk8s "github.com/sluicehq/sluice/mesh/kubernetes"
	"github.com/sluicehq/sluice/mesh/telemetry"
	"github.com/sluicehq/sluice/proxy/controlplane"
	"github.com/sluicehq/sluice/test/envtest"
)

// roleWait bounds every wait in the role tests: a failure guard, not a
// timing assertion.
const roleWait = time.Minute

// roleCluster is the API server the role tests share.
type roleCluster struct {
	kubeconfig string
	c          client.Client
	kube       clientset.Interface
}

// TestRoles runs `sluice destination`, `sluice identity` and `sluice
// telemetry` against one real API server, each in-process on loopback
// ports, and talks to them as proxies and the controller do.
func TestRoles(t *testing.T) {
	cfg, c := envtest.Start(t)
	kube, err := clientset.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rc := &roleCluster{kubeconfig: envtest.Kubeconfig(t, cfg), c: c, kube: kube}
	t.Run("Destination", rc.testDestination)
	t.Run("Identity", rc.testIdentity)
	t.Run("IdentityTrustAnchors", rc.testIdentityTrustAnchors)
	t.Run("Telemetry", rc.testTelemetry)
}

// runningRole is a role started by startRole.
type runningRole struct {
	addr, admin string
	logs        *controllerLogs
	// stop stops the role and checks that it stopped cleanly; the test's
	// cleanup calls it if the test did not.
	stop func()
}

// startRole runs a role until the test ends (then checks that it stopped
// cleanly and leaked no goroutine) and returns its addresses once it
// listens.
func startRole(t *testing.T, o *roleOptions, run func(ctx context.Context, logger *slog.Logger) error) *runningRole {
	t.Helper()
	return startRoleChecked(t, o, run, true)
}

// startRoleChecked is startRole, checking for leaked goroutines only if
// checkLeaks (a role that must stop before another's leak check, whose
// goroutines started after that other role's, is checked by its own test).
func startRoleChecked(t *testing.T, o *roleOptions, run func(ctx context.Context, logger *slog.Logger) error, checkLeaks bool) *runningRole {
	t.Helper()
	r := &runningRole{logs: &controllerLogs{}}
	logger, err := roleLogger("test", "debug", r.logs)
	if err != nil {
		t.Fatal(err)
	}
	o.adminAddr = "127.0.0.1:0"
	listening := make(chan struct{})
	o.listening = func(addr, admin net.Addr) {
		r.addr, r.admin = addr.String(), admin.String()
		close(listening)
	}
	before := goleak.IgnoreCurrent()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, logger) }()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("the role ended with %v", err)
				}
			case <-time.After(roleWait):
				t.Errorf("the role did not stop within %s of its context's end", roleWait)
			}
			// Everything the role started has stopped.
			http.DefaultClient.CloseIdleConnections()
			if checkLeaks {
				// goleak gives up after about 2 s; on a loaded machine the
				// role's goroutines may take longer to see their context end.
				deadline := time.Now().Add(roleWait)
				for goleak.Find(before) != nil && time.Now().Before(deadline) {
					time.Sleep(100 * time.Millisecond)
				}
				goleak.VerifyNone(t, before)
			}
			if t.Failed() {
				t.Logf("role logs:\n%s", r.logs.String())
			}
		})
	}
	t.Cleanup(r.stop)
	select {
	case <-listening:
	case err := <-done:
		t.Fatalf("the role ended before listening: %v\nlogs:\n%s", err, r.logs.String())
	case <-time.After(roleWait):
		t.Fatal("the role did not listen")
	}
	return r
}

// get fetches an admin or API path of the role.
func (r *runningRole) get(path string) (int, string, error) {
	resp, err := http.Get("http://" + r.admin + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// waitReady waits until /readyz answers 200, after checking /healthz.
func (r *runningRole) waitReady(t *testing.T) {
	t.Helper()
	if code, body, err := r.get("/healthz"); err != nil || code != http.StatusOK {
		t.Fatalf("/healthz: %d %q %v", code, body, err)
	}
	poll(t, "/readyz to answer 200", func() (bool, string) {
		code, body, err := r.get("/readyz")
		return err == nil && code == http.StatusOK, fmt.Sprintf("%d %q %v", code, body, err)
	})
}

// poll calls cond until it holds, failing the test with its last
// description of what it saw after roleWait.
func poll(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(roleWait)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last saw: %s", what, saw)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dialTLS returns a gRPC client connection to the control-plane service at
// addr, over TLS as a proxy makes it, closed when the test ends.
func dialTLS(t *testing.T, service, addr, serverName string, roots *x509.CertPool, getCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) *grpc.ClientConn {
	t.Helper()
	creds, err := controlplane.TransportCredentials(controlplane.TLSOptions{
		Service: service, Address: addr, ServerName: serverName, Roots: roots, GetClientCertificate: getCert,
	})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// dial returns a gRPC client connection to addr, closed when the test ends.
func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func (rc *roleCluster) create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := rc.c.Create(context.Background(), obj); err != nil {
		t.Fatalf("create %T %s/%s: %v", obj, obj.GetNamespace(), obj.GetName(), err)
	}
}

// meshedPod creates a running pod of Deployment web (ReplicaSet web-abc)
// with a sluice-proxy container, and sets its status as the kubelet would.
func (rc *roleCluster) meshedPod(t *testing.T, ns, name, sa, ip string, annotations map[string]string) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name, Annotations: annotations,
			Labels: map[string]string{"app": "web", "pod-template-hash": "abc"},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-abc", UID: "rs-uid", Controller: new(true),
			}},
		},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			Containers: []corev1.Container{
				{Name: "app", Image: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}},
				{Name: meshk8s.ProxyContainerName, Image: "sluice-proxy"},
			},
		},
	}
	rc.create(t, pod)
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
	if err := rc.c.Status().Update(context.Background(), pod); err != nil {
		t.Fatalf("set the status of pod %s/%s: %v", ns, name, err)
	}
	return pod
}

func (rc *roleCluster) testDestination(t *testing.T) {
	const ns = "dst"
	ctx := context.Background()
	// (The control plane's namespace, created below, holds the status
	// writer's Lease.)
	rc.create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	pod := rc.meshedPod(t, ns, "web-abc-1", "web", "10.1.2.3", nil)
	rc.create(t, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	})
	rc.create(t, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: new("http"), Port: new(int32(8080))}},
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{"10.1.2.3"},
			Conditions: discoveryv1.EndpointConditions{Ready: new(true)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod.Name, UID: pod.UID},
		}},
	})
	rc.create(t, &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{
				Group: new(gatewayv1.Group("")), Kind: new(gatewayv1.Kind("Service")), Name: "web", Port: new(gatewayv1.PortNumber(80)),
			}}},
			Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{
				BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web", Port: new(gatewayv1.PortNumber(80))},
			}}}}},
		},
	})

	// The identity service of the control-plane namespace, still without
	// its CA; the destination service's token and the trust anchors, as
	// the chart mounts them.
	const ctlNS, trustDomain = "sluice", "example.org"
	rc.create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ctlNS}})
	rc.create(t, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ctlNS, Name: identity.DestinationServiceAccount}})
	idRole := rc.startIdentityRole(t, ctlNS, trustDomain, false)
	caDir := t.TempDir()
	ca, err := identity.LoadOrCreate(caDir, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	files := t.TempDir()
	anchorsFile, tokenFile := filepath.Join(files, "ca.crt"), filepath.Join(files, "token")
	if err := os.WriteFile(anchorsFile, ca.TrustAnchorPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	tr, err := rc.kube.CoreV1().ServiceAccounts(ctlNS).CreateToken(ctx, identity.DestinationServiceAccount, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: []string{meshk8s.DefaultTokenAudience}, ExpirationSeconds: new(int64(3600))},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte(tr.Status.Token), 0o600); err != nil {
		t.Fatal(err)
	}

	o := &destinationOptions{
		roleOptions:          roleOptions{kubeconfig: rc.kubeconfig, logLevel: "debug"},
		addr:                 "127.0.0.1:0",
		controllerNamespace:  ctlNS,
		clusterDomain:        "cluster.local",
		trustDomain:          trustDomain,
		defaultInboundPolicy: "all-authenticated",
		identityAddr:         idRole.addr,
		identityTokenFile:    tokenFile,
		trustAnchorsFile:     anchorsFile,
	}
	r := startRole(t, &o.roleOptions, func(ctx context.Context, logger *slog.Logger) error {
		return runDestination(ctx, o, logger)
	})
	dstID := identity.ControlPlaneName(identity.DestinationServiceAccount, ctlNS, trustDomain)

	// Without its certificate the destination service is not ready, and
	// says why.
	poll(t, "/readyz to wait for the certificate", func() (bool, string) {
		code, body, err := r.get("/readyz")
		return err == nil && code == http.StatusServiceUnavailable &&
			strings.Contains(body, "no TLS certificate for "+dstID+" from the identity service at "+idRole.addr), fmt.Sprintf("%d %q %v", code, body, err)
	})

	// Identity gets its CA; destination gets its certificate and is ready.
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(caDir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	rc.create(t, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ctlNS, Name: meshk8s.DefaultTrustConfigMap},
		Data:       map[string]string{meshk8s.TrustAnchorsKey: string(ca.TrustAnchorPEM())},
	})
	rc.create(t, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ctlNS, Name: meshk8s.DefaultIssuerSecret},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: read(identity.IssuerFile), corev1.TLSPrivateKeyKey: read(identity.IssuerKeyFile)},
	})
	r.waitReady(t)

	// A meshed proxy's certificate; the destination service's is checked
	// against the anchors and its name by dialTLS.
	proxyCert, err := identity.NewSelfCertificate(ca, identity.Name("web", ns, ctlNS, trustDomain), 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := dialTLS(t, "destination", r.addr, dstID, ca.TrustAnchors(), func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return proxyCert.Current()
	})

	// The endpoints of web:80, with the pod's mesh identity.
	sctx, cancel := context.WithTimeout(ctx, roleWait)
	defer cancel()
	stream, err := meshv1.NewDestinationClient(conn).GetEndpoints(sctx, &meshv1.GetDestination{
		Service: "web.dst.svc.cluster.local:80", ClientNamespace: ns,
	})
	if err != nil {
		t.Fatal(err)
	}
	up, err := stream.Recv()
	if err != nil {
		t.Fatalf("GetEndpoints: %v", err)
	}
	eps := up.GetAdd().GetEndpoints()
	wantID := "web.dst.serviceaccount.identity.sluice.example.org"
	if len(eps) != 1 || eps[0].GetAddress() != "10.1.2.3:8080" || eps[0].GetIdentity() != wantID ||
		eps[0].GetLabels()["deployment"] != "web" {
		t.Fatalf("first endpoint update = %v; want 10.1.2.3:8080 with identity %s, deployment web", up, wantID)
	}

	// A second pod joins the Service: the stream adds it.
	pod2 := rc.meshedPod(t, ns, "web-abc-2", "web", "10.1.2.4", nil)
	slice := &discoveryv1.EndpointSlice{}
	if err := rc.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "web-1"}, slice); err != nil {
		t.Fatal(err)
	}
	slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
		Addresses:  []string{"10.1.2.4"},
		Conditions: discoveryv1.EndpointConditions{Ready: new(true)},
		TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod2.Name, UID: pod2.UID},
	})
	if err := rc.c.Update(ctx, slice); err != nil {
		t.Fatal(err)
	}
	for {
		up, err := stream.Recv()
		if err != nil {
			t.Fatalf("GetEndpoints after adding a pod: %v", err)
		}
		if slices.ContainsFunc(up.GetAdd().GetEndpoints(), func(e *meshv1.Endpoint) bool { return e.GetAddress() == "10.1.2.4:8080" }) {
			break
		}
	}

	// The inbound policy of the pod's port: the default the flag names.
	pstream, err := meshv1.NewInboundPoliciesClient(conn).WatchPort(sctx, &meshv1.PortSpec{Workload: ns + "/" + pod.Name, Port: 8080})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := pstream.Recv()
	if err != nil {
		t.Fatalf("WatchPort: %v", err)
	}
	if got := pol.GetLabels()["srv_name"]; got != "all-authenticated" {
		t.Errorf("the policy of %s/%s:8080 is %q (%v), want the default all-authenticated", ns, pod.Name, got, pol)
	}

	// The HTTPRoute's parent status, written as sluice.dev/gateway-controller.
	poll(t, "the HTTPRoute to be accepted", func() (bool, string) {
		rt := &gatewayv1.HTTPRoute{}
		if err := rc.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "web"}, rt); err != nil {
			return false, err.Error()
		}
		for _, p := range rt.Status.Parents {
			if p.ControllerName == meshk8s.ControllerName && meta.IsStatusConditionTrue(p.Conditions, string(gatewayv1.RouteConditionAccepted)) {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", rt.Status.Parents)
	})

	// The calls are counted.
	_, metrics, err := r.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`grpc_server_started_total{grpc_method="GetEndpoints",grpc_service="sluice.mesh.v1.Destination",grpc_type="server_stream"} 1`,
		"go_goroutines ",
		"process_start_time_seconds ",
		// The one replica holds the Lease and writes status.
		"sluice_destination_status_leader 1",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics has no %q", want)
		}
	}
	host, _ := replicaName()
	lease, err := rc.kube.CoordinationV1().Leases("sluice").Get(ctx, meshk8s.StatusLeaseName, metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != host {
		t.Errorf("the Lease %s: %v, %v; want it held by this replica, %s", meshk8s.StatusLeaseName, lease, err, host)
	}

	// A client without a mesh certificate gets nothing.
	anon := dialTLS(t, "destination", r.addr, dstID, ca.TrustAnchors(), nil)
	anonStream, err := meshv1.NewDestinationClient(anon).GetEndpoints(ctx, &meshv1.GetDestination{Service: "web.dst.svc.cluster.local:80"})
	if err == nil {
		_, err = anonStream.Recv()
	}
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "requires mutual TLS") {
		t.Errorf("GetEndpoints without a client certificate: %v; want Unauthenticated, mutual TLS required", err)
	}
	// Identity started goroutines after destination did: stop it before
	// destination's leak check.
	idRole.stop()
}

func (rc *roleCluster) testIdentity(t *testing.T) {
	const ctlNS, ns = "sluice-id", "shop"
	ctx := context.Background()
	for _, n := range []string{ctlNS, ns} {
		rc.create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}})
	}
	r := rc.startIdentityRole(t, ctlNS, "cluster.local", true)
	webID := identity.Name("web", ns, ctlNS, "cluster.local")
	serverID := identity.ControlPlaneName(identity.IdentityServiceAccount, ctlNS, "cluster.local")
	caDir := t.TempDir()
	ca, err := identity.LoadOrCreate(caDir, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(caDir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	// Without the CA: not ready, and saying why, in /readyz and the logs;
	// there is no certificate to serve TLS with yet.
	poll(t, "the missing CA to be reported", func() (bool, string) {
		code, body, err := r.get("/readyz")
		return err == nil && code == http.StatusServiceUnavailable && strings.Contains(body, "sluice-identity-trust-roots") &&
			strings.Contains(r.logs.String(), "cannot load the identity CA"), fmt.Sprintf("%d %q %v", code, body, err)
	})
	early := meshv1.NewIdentityClient(dialTLS(t, "identity", r.addr, serverID, ca.TrustAnchors(), nil))
	_, err = early.Certify(ctx, &meshv1.CertifyRequest{Identity: webID, Token: []byte("t"), CertificateSigningRequest: csrFor(t, webID)})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("Certify without a CA: %v; want Unavailable", err)
	}

	// The CA appears: ready.
	rc.create(t, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ctlNS, Name: meshk8s.DefaultTrustConfigMap},
		Data:       map[string]string{meshk8s.TrustAnchorsKey: string(ca.TrustAnchorPEM())},
	})
	rc.create(t, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ctlNS, Name: meshk8s.DefaultIssuerSecret},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: read(identity.IssuerFile), corev1.TLSPrivateKeyKey: read(identity.IssuerKeyFile)},
	})
	r.waitReady(t)
	idc := meshv1.NewIdentityClient(dialTLS(t, "identity", r.addr, serverID, ca.TrustAnchors(), nil))

	// Its TLS certificate names its own identity and chains to the anchors
	// (dialTLS checks both); a client trusting other anchors is told so.
	other, err := identity.LoadOrCreate(t.TempDir(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	stranger := meshv1.NewIdentityClient(dialTLS(t, "identity", r.addr, serverID, other.TrustAnchors(), nil))
	_, err = stranger.Certify(ctx, &meshv1.CertifyRequest{Identity: webID, Token: []byte("t"), CertificateSigningRequest: csrFor(t, webID)})
	if want := "the identity service's certificate at " + r.addr + " is not signed by the configured trust anchors (expected identity " + serverID; !strings.Contains(fmt.Sprint(err), want) {
		t.Errorf("Certify trusting other anchors: %v; want an error saying %q", err, want)
	}

	for _, sa := range []string{"web", "api"} {
		rc.create(t, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}})
	}
	token := func(sa, audience string) []byte {
		t.Helper()
		tr, err := rc.kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authnv1.TokenRequest{
			Spec: authnv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: new(int64(3600))},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("request a token for service account %s/%s: %v", ns, sa, err)
		}
		return []byte(tr.Status.Token)
	}
	webToken := token("web", meshk8s.DefaultTokenAudience)

	// web's projected token gets web's certificate, chaining to the anchors.
	resp, err := idc.Certify(ctx, &meshv1.CertifyRequest{Identity: webID, Token: webToken, CertificateSigningRequest: csrFor(t, webID)})
	if err != nil {
		t.Fatalf("Certify with web's token: %v", err)
	}
	leaf, err := x509.ParseCertificate(resp.GetLeafCertificate())
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, der := range resp.GetIntermediateCertificates() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: ca.TrustAnchors(), Intermediates: inter, DNSName: webID,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		t.Errorf("the certificate for %s does not verify against the trust anchors: %v", webID, err)
	}

	// Tokens that do not prove web's identity are refused, saying why.
	tests := []struct {
		name  string
		token []byte
		want  string
	}{
		{"another service account's token", token("api", meshk8s.DefaultTokenAudience), "service account shop/api"},
		{"a token for another audience", token("web", "vault.example.com"), "token"},
		{"not a token", []byte("garbage"), "token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := idc.Certify(ctx, &meshv1.CertifyRequest{Identity: webID, Token: tt.token, CertificateSigningRequest: csrFor(t, webID)})
			if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Certify: %v; want Unauthenticated saying %q", err, tt.want)
			}
		})
	}
}

// csrFor returns a DER CSR for id, as a proxy makes it.
func csrFor(t *testing.T, id string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{id}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func (rc *roleCluster) testTelemetry(t *testing.T) {
	const ns = "tel"
	rc.create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})

	// A proxy's metrics endpoint: every scrape finds 10 more successful
	// inbound responses.
	var mu sync.Mutex
	var served int
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		served += 10
		n := served
		mu.Unlock()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprintf(w, "# TYPE request_total counter\nrequest_total{direction=\"inbound\"} %d\n", n)
		fmt.Fprintf(w, "# TYPE response_total counter\nresponse_total{direction=\"inbound\",tls=\"true\",status_code=\"200\",classification=\"success\"} %d\n", n)
		fmt.Fprintf(w, "# TYPE response_latency_ms histogram\n")
		fmt.Fprintf(w, "response_latency_ms_bucket{direction=\"inbound\",status_code=\"200\",le=\"10\"} %d\n", n)
		fmt.Fprintf(w, "response_latency_ms_bucket{direction=\"inbound\",status_code=\"200\",le=\"+Inf\"} %d\n", n)
		fmt.Fprintf(w, "response_latency_ms_sum{direction=\"inbound\",status_code=\"200\"} %d\n", 5*n)
		fmt.Fprintf(w, "response_latency_ms_count{direction=\"inbound\",status_code=\"200\"} %d\n", n)
	}))
	t.Cleanup(proxy.Close)
	_, port, err := net.SplitHostPort(strings.TrimPrefix(proxy.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	metricsPort, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	rc.meshedPod(t, ns, "web-abc-1", "web", "127.0.0.1", map[string]string{sluicev1beta1.RevisionAnnotation: "r1"})

	o := &telemetryOptions{
		roleOptions:    roleOptions{kubeconfig: rc.kubeconfig, logLevel: "debug"},
		addr:           "127.0.0.1:0",
		scrapeInterval: 100 * time.Millisecond,
		retention:      time.Minute,
		scrapeTimeout:  5 * time.Second,
		namespace:      ns,
		metricsPort:    metricsPort,
	}
	r := startRole(t, &o.roleOptions, func(ctx context.Context, logger *slog.Logger) error {
		return runTelemetry(ctx, o, logger)
	})
	r.waitReady(t)

	tc := &telemetry.Client{BaseURL: "http://" + r.addr}
	sel := telemetry.Selector{Namespace: ns, Workload: "web", Revision: "r1"}
	poll(t, "the telemetry to answer with the proxy's responses", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		w, err := tc.Window(ctx, sel, time.Minute)
		if err != nil {
			return false, err.Error()
		}
		return w.Requests >= 10 && w.Successes == w.Requests && w.TLSRequests == w.Requests && w.Pods == 1, fmt.Sprintf("%+v", w)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sums, err := tc.Workloads(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(sums) != 1 || sums[0].Namespace != ns || sums[0].Workload != "web" || sums[0].Pods != 1 || sums[0].Meshed != 1 {
		t.Errorf("workloads = %+v; want %s/web with its one meshed pod", sums, ns)
	}
	// Another revision has no traffic.
	if _, err := tc.Window(ctx, telemetry.Selector{Namespace: ns, Workload: "web", Revision: "r2"}, time.Minute); err == nil {
		t.Error("revision r2, which no pod runs, has data")
	}
}

// startIdentityRole runs the identity role for the control-plane namespace
// ctlNS and trust domain, with the chart's defaults otherwise, checking for
// leaked goroutines when it stops if checkLeaks.
func (rc *roleCluster) startIdentityRole(t *testing.T, ctlNS, trustDomain string, checkLeaks bool) *runningRole {
	t.Helper()
	o := &identityOptions{
		roleOptions:           roleOptions{kubeconfig: rc.kubeconfig, logLevel: "debug"},
		addr:                  "127.0.0.1:0",
		controllerNamespace:   ctlNS,
		trustDomain:           trustDomain,
		issuerSecret:          meshk8s.DefaultIssuerSecret,
		trustAnchorsConfigMap: meshk8s.DefaultTrustConfigMap,
		tokenAudience:         meshk8s.DefaultTokenAudience,
	}
	return startRoleChecked(t, &o.roleOptions, func(ctx context.Context, logger *slog.Logger) error {
		return runIdentity(ctx, o, logger)
	}, checkLeaks)
}
