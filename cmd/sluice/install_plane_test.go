package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	chartloader "helm.sh/helm/v3/pkg/chart/loader"

	"github.com/sluicehq/sluice/mesh/identity"
	"github.com/sluicehq/sluice/mesh/injector"
	"github.com/sluicehq/sluice/test/envtest"
)

// runInstall runs `sluice install --ignore-cluster ARGS...` (so that no
// developer's kubeconfig matters) and returns its stdout, failing the test
// if it does not succeed quietly.
func runInstall(t *testing.T, args ...string) []byte {
	t.Helper()
	args = append([]string{"--" + flagIgnoreCluster}, args...)
	var stdout, stderr bytes.Buffer
	if code := run(append([]string{"install"}, args...), &stdout, &stderr); code != 0 {
		t.Fatalf("sluice install %s exited %d: %s", strings.Join(args, " "), code, stderr.String())
	}
	if stderr.Len() != 0 {
		t.Errorf("sluice install %s wrote to stderr: %s", strings.Join(args, " "), stderr.String())
	}
	return stdout.Bytes()
}

// installed is the output of sluice install decoded into typed objects,
// by "Kind/name".
type installed map[string]runtime.Object

// decodeTyped decodes a YAML stream with client-go's scheme, strictly (an
// unknown field is an error), keyed by "Kind/name".
func decodeTyped(t *testing.T, stream []byte) installed {
	t.Helper()
	codecs := serializer.NewCodecFactory(clientgoscheme.Scheme, serializer.EnableStrict)
	dec := codecs.UniversalDeserializer()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	objs := installed{}
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("reading YAML document %d: %v", i, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, gvk, err := dec.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("decoding YAML document %d into a typed object: %v\n%s", i, err, doc)
		}
		m, err := meta.Accessor(obj)
		if err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		key := gvk.Kind + "/" + m.GetName()
		if _, dup := objs[key]; dup {
			t.Errorf("%s printed twice", key)
		}
		objs[key] = obj
	}
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for line := range strings.SplitSeq(string(doc), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.Bytes()
}

func (objs installed) keys() []string {
	var keys []string
	for k := range objs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// get returns the object key as a T, failing the test when it is missing.
func get[T runtime.Object](t *testing.T, objs installed, key string) T {
	t.Helper()
	obj, ok := objs[key].(T)
	if !ok {
		t.Fatalf("sluice install printed no %s (it printed %v)", key, objs.keys())
	}
	return obj
}

var controlPlaneRoles = []string{"controller", "destination", "identity", "telemetry", "injector"}

// wantInstalled is every object sluice install must print.
func wantInstalled() []string {
	want := []string{
		"Namespace/sluice",
		"ConfigMap/sluice-identity-trust-roots",
		"Secret/sluice-identity-issuer",
		"Secret/sluice-injector-tls",
		"Service/sluice-destination", "Service/sluice-identity", "Service/sluice-telemetry", "Service/sluice-injector",
		"Role/sluice-identity", "RoleBinding/sluice-identity",
		"Role/sluice-controller", "RoleBinding/sluice-controller",
		"Role/sluice-destination", "RoleBinding/sluice-destination",
		"MutatingWebhookConfiguration/sluice-injector",
	}
	for _, r := range controlPlaneRoles {
		want = append(want, "ServiceAccount/sluice-"+r, "ClusterRole/sluice-"+r, "ClusterRoleBinding/sluice-"+r, "Deployment/sluice-"+r)
	}
	sort.Strings(want)
	return want
}

func TestInstallPrintsTheControlPlane(t *testing.T) {
	objs := decodeTyped(t, runInstall(t))
	if got, want := objs.keys(), wantInstalled(); !slices.Equal(got, want) {
		t.Fatalf("sluice install printed\n%v\nwant\n%v", got, want)
	}

	ns := get[*corev1.Namespace](t, objs, "Namespace/sluice")
	if ns.Annotations["sluice.dev/inject"] != "disabled" {
		t.Errorf("namespace sluice is not marked for the injector to skip: annotations %v", ns.Annotations)
	}

	ports := map[string]struct {
		port   int32
		target string
		name   string
	}{
		"sluice-destination": {8086, "grpc", "grpc"},
		"sluice-identity":    {8080, "grpc", "grpc"},
		"sluice-telemetry":   {9995, "http", "http"},
		"sluice-injector":    {443, "webhook", "webhook"},
	}
	containerPorts := map[string]int32{"destination": 8086, "identity": 8080, "telemetry": 9995, "injector": 8443}
	for svcName, want := range ports {
		svc := get[*corev1.Service](t, objs, "Service/"+svcName)
		if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != want.port || svc.Spec.Ports[0].Name != want.name || svc.Spec.Ports[0].TargetPort.StrVal != want.target {
			t.Errorf("Service %s ports %+v, want port %d named %s to %s", svcName, svc.Spec.Ports, want.port, want.name, want.target)
		}
		role := strings.TrimPrefix(svcName, "sluice-")
		if svc.Namespace != "sluice" || svc.Spec.Selector["app.kubernetes.io/component"] != role {
			t.Errorf("Service %s in %q selects %v", svcName, svc.Namespace, svc.Spec.Selector)
		}
		d := get[*appsv1.Deployment](t, objs, "Deployment/"+svcName)
		found := false
		for _, p := range d.Spec.Template.Spec.Containers[0].Ports {
			if p.Name == want.target && p.ContainerPort == containerPorts[role] {
				found = true
			}
		}
		if !found {
			t.Errorf("Deployment %s has no container port %s = %d for its Service", svcName, want.target, containerPorts[role])
		}
	}

	for _, role := range controlPlaneRoles {
		t.Run(role, func(t *testing.T) {
			d := get[*appsv1.Deployment](t, objs, "Deployment/sluice-"+role)
			checkDeployment(t, d, role, "ghcr.io/sluicehq/sluice:"+version)
		})
	}
	if got := get[*corev1.ServiceAccount](t, objs, "ServiceAccount/sluice-identity").Namespace; got != "sluice" {
		t.Errorf("ServiceAccount sluice-identity in %q", got)
	}
	identityPod := get[*appsv1.Deployment](t, objs, "Deployment/sluice-identity").Spec.Template
	if identityPod.Annotations["sluice.dev/inject"] != "disabled" {
		t.Errorf("the identity pod may be meshed: annotations %v", identityPod.Annotations)
	}

	checkRBAC(t, objs)
	checkIdentityCertificates(t, objs)
	checkWebhook(t, objs)
}

// checkDeployment checks what every control-plane Deployment must have.
func checkDeployment(t *testing.T, d *appsv1.Deployment, role, image string) {
	t.Helper()
	pod := d.Spec.Template.Spec
	if d.Namespace != "sluice" || pod.ServiceAccountName != "sluice-"+role {
		t.Errorf("namespace %q, service account %q", d.Namespace, pod.ServiceAccountName)
	}
	labels := d.Spec.Template.Labels
	if labels["app.kubernetes.io/name"] != "sluice" || labels["app.kubernetes.io/component"] != role {
		t.Errorf("pod labels %v", labels)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Containers))
	}
	c := pod.Containers[0]
	if c.Name != role || c.Image != image || len(c.Args) == 0 || c.Args[0] != role {
		t.Errorf("container %q image %q args %v; want %q, %q, the subcommand %s", c.Name, c.Image, c.Args, role, image, role)
	}
	probePort, probePortName := int32(9990), "admin"
	if role == "controller" {
		probePort, probePortName = 8081, "health"
	} else if !slices.Contains(c.Args, "--admin-addr=:9990") {
		t.Errorf("args %v lack --admin-addr=:9990", c.Args)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.StrVal != probePortName {
			t.Errorf("%s probe %+v, want GET %s on port %s", p.name, p.probe, p.path, probePortName)
		}
	}
	if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == probePortName && p.ContainerPort == probePort }) {
		t.Errorf("ports %+v lack %s = %d", c.Ports, probePortName, probePort)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Errorf("no CPU and memory requests: %+v", c.Resources)
	}
	sc := c.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("security context %+v: want runAsNonRoot, readOnlyRootFilesystem, no privilege escalation", sc)
	}
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsUser == nil || *pod.SecurityContext.RunAsUser == 0 {
		t.Errorf("pod security context %+v: want a non-root UID", pod.SecurityContext)
	}
	if d.Spec.Template.Labels["sluice.dev/control-plane-component"] != role {
		t.Errorf("pod lacks the label sluice.dev/control-plane-component that keeps the injector away: %v", d.Spec.Template.Labels)
	}
	wantArgs := map[string][]string{
		"destination": {"--addr=:8086", "--controller-namespace=sluice", "--cluster-domain=cluster.local", "--trust-domain=cluster.local",
			"--identity-addr=sluice-identity.sluice.svc.cluster.local:8080", "--identity-token-file=" + injector.TokenPath,
			"--trust-anchors-file=" + injector.TrustRootsPath},
		"identity": {"--addr=:8080", "--controller-namespace=sluice", "--trust-domain=cluster.local",
			"--issuer-secret=sluice-identity-issuer", "--trust-anchors-configmap=sluice-identity-trust-roots"},
		"telemetry": {"--addr=:9995", "--scrape-interval=10s"},
		"injector": {"--addr=:8443", "--tls-cert-file=/var/run/sluice/webhook/tls.crt", "--tls-key-file=/var/run/sluice/webhook/tls.key",
			"--proxy-image=ghcr.io/sluicehq/sluice-proxy", "--proxy-version=" + version, "--controller-namespace=sluice",
			"--trust-domain=cluster.local", "--cluster-domain=cluster.local", "--image-pull-policy=IfNotPresent"},
		"controller": {"--telemetry-addr=http://sluice-telemetry.sluice.svc.cluster.local:9995", "--health-probe-bind-address=:8081", "--leader-elect=true"},
	}
	for _, a := range wantArgs[role] {
		if !slices.Contains(c.Args, a) {
			t.Errorf("args %v lack %s", c.Args, a)
		}
	}
	if role == "destination" {
		checkDestinationVolumes(t, c, pod)
	}
	if role == "injector" {
		if len(c.VolumeMounts) != 1 || c.VolumeMounts[0].MountPath != "/var/run/sluice/webhook" ||
			len(pod.Volumes) != 1 || pod.Volumes[0].Secret == nil || pod.Volumes[0].Secret.SecretName != "sluice-injector-tls" {
			t.Errorf("the injector does not mount Secret sluice-injector-tls at /var/run/sluice/webhook: mounts %+v volumes %+v", c.VolumeMounts, pod.Volumes)
		}
	}
}

// checkDestinationVolumes checks that destination has what it needs to be
// certified by identity, as a proxy: a projected service-account token
// with identity's audience and the trust anchors, mounted where its flags
// say.
func checkDestinationVolumes(t *testing.T, c corev1.Container, pod corev1.PodSpec) {
	t.Helper()
	mounted := map[string]string{} // volume -> mount path
	for _, m := range c.VolumeMounts {
		if !m.ReadOnly {
			t.Errorf("volume %s is mounted writable", m.Name)
		}
		mounted[m.Name] = m.MountPath
	}
	var token, anchors bool
	for _, v := range pod.Volumes {
		switch {
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				if sat := src.ServiceAccountToken; sat != nil && sat.Audience == injector.TokenAudience &&
					mounted[v.Name]+"/"+sat.Path == injector.TokenPath {
					token = true
				}
			}
		case v.ConfigMap != nil && v.ConfigMap.Name == injector.TrustRootsConfigMap:
			for _, it := range v.ConfigMap.Items {
				if it.Key == injector.TrustRootsKey && mounted[v.Name]+"/"+it.Path == injector.TrustRootsPath {
					anchors = true
				}
			}
		}
	}
	if !token {
		t.Errorf("destination has no token with audience %s at %s: mounts %+v volumes %+v", injector.TokenAudience, injector.TokenPath, c.VolumeMounts, pod.Volumes)
	}
	if !anchors {
		t.Errorf("destination has no trust anchors (ConfigMap %s) at %s: mounts %+v volumes %+v", injector.TrustRootsConfigMap, injector.TrustRootsPath, c.VolumeMounts, pod.Volumes)
	}
}

// allows says whether rules grant verb on group/resource (named name, or
// any name when name is "").
func allows(rules []rbacv1.PolicyRule, group, resource, verb, name string) bool {
	for _, r := range rules {
		if slices.Contains(r.APIGroups, group) && slices.Contains(r.Resources, resource) && slices.Contains(r.Verbs, verb) &&
			(len(r.ResourceNames) == 0 || slices.Contains(r.ResourceNames, name)) {
			return true
		}
	}
	return false
}

func checkRBAC(t *testing.T, objs installed) {
	t.Helper()
	type grant struct{ group, resource, verb, name string }
	for _, tc := range []struct {
		kind, name string
		want       []grant
		deny       []grant
	}{
		{"ClusterRole", "sluice-destination",
			[]grant{{"", "services", "watch", ""}, {"discovery.k8s.io", "endpointslices", "list", ""}, {"", "pods", "watch", ""},
				{"", "namespaces", "get", ""}, {"gateway.networking.k8s.io", "httproutes", "watch", ""},
				{"gateway.networking.k8s.io", "referencegrants", "list", ""}, {"gateway.networking.k8s.io", "httproutes/status", "update", ""},
				{"policy.sluice.dev", "servers", "watch", ""}, {"policy.sluice.dev", "authorizationpolicies", "list", ""},
				{"policy.sluice.dev", "meshtlsauthentications", "get", ""}, {"policy.sluice.dev", "networkauthentications", "watch", ""}},
			[]grant{{"gateway.networking.k8s.io", "httproutes", "update", ""}, {"", "secrets", "get", ""}}},
		{"ClusterRole", "sluice-identity",
			[]grant{{"authentication.k8s.io", "tokenreviews", "create", ""}},
			[]grant{{"", "secrets", "get", ""}}},
		{"Role", "sluice-identity",
			[]grant{{"", "secrets", "watch", "sluice-identity-issuer"}, {"", "configmaps", "get", "sluice-identity-trust-roots"}},
			[]grant{{"", "secrets", "get", "sluice-injector-tls"}}},
		{"ClusterRole", "sluice-telemetry",
			[]grant{{"", "pods", "list", ""}, {"", "pods", "watch", ""}},
			[]grant{{"", "secrets", "get", ""}, {"", "pods", "delete", ""}}},
		{"ClusterRole", "sluice-injector",
			[]grant{{"", "namespaces", "watch", ""}, {"", "configmaps", "create", ""}, {"", "configmaps", "update", ""}, {"", "configmaps", "watch", ""}},
			[]grant{{"", "secrets", "get", ""}, {"", "configmaps", "delete", ""}}},
		{"ClusterRole", "sluice-controller",
			[]grant{{"apps", "deployments", "create", ""}, {"", "services", "delete", ""}, {"autoscaling", "horizontalpodautoscalers", "update", ""},
				{"gateway.networking.k8s.io", "httproutes", "patch", ""}, {"sluice.dev", "canaries", "watch", ""},
				{"sluice.dev", "canaries/status", "update", ""}, {"sluice.dev", "canaries/finalizers", "update", ""},
				{"sluice.dev", "metrictemplates", "list", ""}, {"sluice.dev", "alertproviders", "watch", ""},
				{"events.k8s.io", "events", "create", ""}, {"", "events", "create", ""}, {"", "configmaps", "get", ""}, {"", "secrets", "get", ""}},
			[]grant{{"", "secrets", "list", ""}, {"", "pods", "delete", ""}}},
		{"Role", "sluice-controller",
			[]grant{{"coordination.k8s.io", "leases", "update", ""}},
			nil},
		{"Role", "sluice-destination",
			[]grant{{"coordination.k8s.io", "leases", "create", ""},
				{"coordination.k8s.io", "leases", "get", "sluice-destination-status"},
				{"coordination.k8s.io", "leases", "update", "sluice-destination-status"}},
			[]grant{{"coordination.k8s.io", "leases", "update", "sluice-controller"}, {"", "secrets", "get", ""}}},
	} {
		var rules []rbacv1.PolicyRule
		switch tc.kind {
		case "ClusterRole":
			rules = get[*rbacv1.ClusterRole](t, objs, tc.kind+"/"+tc.name).Rules
		case "Role":
			r := get[*rbacv1.Role](t, objs, tc.kind+"/"+tc.name)
			if r.Namespace != "sluice" {
				t.Errorf("Role %s in namespace %q", tc.name, r.Namespace)
			}
			rules = r.Rules
		}
		for _, g := range tc.want {
			if !allows(rules, g.group, g.resource, g.verb, g.name) {
				t.Errorf("%s %s does not allow %s on %s.%s %s", tc.kind, tc.name, g.verb, g.resource, g.group, g.name)
			}
		}
		for _, g := range tc.deny {
			if allows(rules, g.group, g.resource, g.verb, g.name) {
				t.Errorf("%s %s allows %s on %s.%s %s: more than it needs", tc.kind, tc.name, g.verb, g.resource, g.group, g.name)
			}
		}
	}
	for _, role := range controlPlaneRoles {
		b := get[*rbacv1.ClusterRoleBinding](t, objs, "ClusterRoleBinding/sluice-"+role)
		if b.RoleRef.Kind != "ClusterRole" || b.RoleRef.Name != "sluice-"+role || len(b.Subjects) != 1 ||
			b.Subjects[0].Kind != "ServiceAccount" || b.Subjects[0].Name != "sluice-"+role || b.Subjects[0].Namespace != "sluice" {
			t.Errorf("ClusterRoleBinding sluice-%s binds %+v to %+v", role, b.RoleRef, b.Subjects)
		}
	}
	for _, role := range []string{"identity", "controller"} {
		b := get[*rbacv1.RoleBinding](t, objs, "RoleBinding/sluice-"+role)
		if b.Namespace != "sluice" || b.RoleRef.Kind != "Role" || b.RoleRef.Name != "sluice-"+role || len(b.Subjects) != 1 || b.Subjects[0].Name != "sluice-"+role {
			t.Errorf("RoleBinding sluice-%s binds %+v to %+v", role, b.RoleRef, b.Subjects)
		}
	}
}

// checkIdentityCertificates checks that the issuer Secret verifies against
// the trust anchors and makes a CA.
func checkIdentityCertificates(t *testing.T, objs installed) {
	t.Helper()
	anchors := []byte(get[*corev1.ConfigMap](t, objs, "ConfigMap/sluice-identity-trust-roots").Data["ca.crt"])
	issuer := get[*corev1.Secret](t, objs, "Secret/sluice-identity-issuer")
	if issuer.Type != corev1.SecretTypeTLS {
		t.Errorf("issuer Secret of type %q", issuer.Type)
	}
	crt, key := issuer.Data["tls.crt"], issuer.Data["tls.key"]
	if _, err := identity.NewCAFromPEM(anchors, crt, key, nil); err != nil {
		t.Fatalf("the installed issuer does not make a CA: %v", err)
	}
	anchor := parseCert(t, anchors)
	iss := parseCert(t, crt)
	roots := x509.NewCertPool()
	roots.AddCert(anchor)
	if _, err := iss.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("the issuer does not verify against the trust anchors: %v", err)
	}
	if iss.Subject.CommonName != "identity.sluice.cluster.local" {
		t.Errorf("issuer named %q, want identity.sluice.cluster.local", iss.Subject.CommonName)
	}
	if !anchor.IsCA || anchor.Subject.String() != anchor.Issuer.String() {
		t.Errorf("the trust anchor %q is not a self-signed CA", anchor.Subject)
	}
	for _, c := range []*x509.Certificate{anchor, iss} {
		if life := c.NotAfter.Sub(c.NotBefore); life < 364*24*time.Hour || life > 366*24*time.Hour {
			t.Errorf("%q is valid for %s, want a year", c.Subject.CommonName, life)
		}
	}
}

// checkWebhook checks the webhook configuration, and that its caBundle
// verifies the injector's serving certificate.
func checkWebhook(t *testing.T, objs installed) {
	t.Helper()
	cfg := get[*admissionregistrationv1.MutatingWebhookConfiguration](t, objs, "MutatingWebhookConfiguration/sluice-injector")
	if len(cfg.Webhooks) != 1 {
		t.Fatalf("%d webhooks", len(cfg.Webhooks))
	}
	w := cfg.Webhooks[0]
	svc := w.ClientConfig.Service
	if w.Name != "inject.sluice.dev" || svc == nil || svc.Name != "sluice-injector" || svc.Namespace != "sluice" ||
		svc.Path == nil || *svc.Path != "/inject" || svc.Port == nil || *svc.Port != 443 {
		t.Errorf("webhook %q calls %+v", w.Name, svc)
	}
	if w.FailurePolicy == nil || *w.FailurePolicy != admissionregistrationv1.Ignore ||
		w.SideEffects == nil || *w.SideEffects != admissionregistrationv1.SideEffectClassNone ||
		!slices.Equal(w.AdmissionReviewVersions, []string{"v1"}) {
		t.Errorf("webhook failurePolicy %v, sideEffects %v, admissionReviewVersions %v", w.FailurePolicy, w.SideEffects, w.AdmissionReviewVersions)
	}
	if len(w.Rules) != 1 || !slices.Equal(w.Rules[0].Operations, []admissionregistrationv1.OperationType{admissionregistrationv1.Create}) ||
		!slices.Equal(w.Rules[0].Resources, []string{"pods"}) {
		t.Errorf("webhook rules %+v, want CREATE pods", w.Rules)
	}
	excluded := false
	for _, e := range w.NamespaceSelector.MatchExpressions {
		if e.Key == "kubernetes.io/metadata.name" && e.Operator == "NotIn" && slices.Contains(e.Values, "kube-system") && slices.Contains(e.Values, "sluice") {
			excluded = true
		}
	}
	if !excluded {
		t.Errorf("the webhook's namespaceSelector %+v does not exclude kube-system and sluice", w.NamespaceSelector)
	}

	tlsSecret := get[*corev1.Secret](t, objs, "Secret/sluice-injector-tls")
	serving := parseCert(t, tlsSecret.Data["tls.crt"])
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(w.ClientConfig.CABundle) {
		t.Fatalf("the webhook's caBundle holds no PEM certificate: %q", w.ClientConfig.CABundle)
	}
	if _, err := serving.Verify(x509.VerifyOptions{DNSName: "sluice-injector.sluice.svc", Roots: roots}); err != nil {
		t.Errorf("the caBundle does not verify the injector's certificate for sluice-injector.sluice.svc: %v", err)
	}
	if !bytes.Equal(tlsSecret.Data["ca.crt"], w.ClientConfig.CABundle) {
		t.Error("Secret sluice-injector-tls's ca.crt is not the webhook's caBundle")
	}
}

func parseCert(t *testing.T, pemBytes []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		t.Fatalf("no PEM certificate in %q", pemBytes)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestInstallFlags(t *testing.T) {
	objs := decodeTyped(t, runInstall(t, "--registry", "registry.example.com/team", "--version", "v1.2.3",
		"--image-pull-policy", "Always", "--trust-domain", "mesh.example", "--cluster-domain", "k8s.example",
		"--controller-replicas", "3", "--destination-replicas", "2", "--proxy-log-level", "debug", "--default-inbound-policy", "all-authenticated"))
	for _, role := range controlPlaneRoles {
		c := get[*appsv1.Deployment](t, objs, "Deployment/sluice-"+role).Spec.Template.Spec.Containers[0]
		if c.Image != "registry.example.com/team/sluice:v1.2.3" || c.ImagePullPolicy != corev1.PullAlways {
			t.Errorf("%s: image %q pulled %s", role, c.Image, c.ImagePullPolicy)
		}
	}
	if r := get[*appsv1.Deployment](t, objs, "Deployment/sluice-controller").Spec.Replicas; r == nil || *r != 3 {
		t.Errorf("controller replicas %v, want 3", r)
	}
	if r := get[*appsv1.Deployment](t, objs, "Deployment/sluice-destination").Spec.Replicas; r == nil || *r != 2 {
		t.Errorf("destination replicas %v, want 2", r)
	}
	args := func(role string) []string {
		return get[*appsv1.Deployment](t, objs, "Deployment/sluice-"+role).Spec.Template.Spec.Containers[0].Args
	}
	for role, want := range map[string][]string{
		"injector": {"--proxy-image=registry.example.com/team/sluice-proxy", "--proxy-version=v1.2.3", "--image-pull-policy=Always",
			"--trust-domain=mesh.example", "--cluster-domain=k8s.example", "--proxy-log-level=debug", "--default-inbound-policy=all-authenticated"},
		"destination": {"--trust-domain=mesh.example", "--cluster-domain=k8s.example", "--identity-addr=sluice-identity.sluice.svc.k8s.example:8080"},
		"identity":    {"--trust-domain=mesh.example"},
		"controller":  {"--telemetry-addr=http://sluice-telemetry.sluice.svc.k8s.example:9995"},
	} {
		for _, a := range want {
			if !slices.Contains(args(role), a) {
				t.Errorf("%s args %v lack %s", role, args(role), a)
			}
		}
	}
	iss := parseCert(t, get[*corev1.Secret](t, objs, "Secret/sluice-identity-issuer").Data["tls.crt"])
	if iss.Subject.CommonName != "identity.sluice.mesh.example" {
		t.Errorf("issuer named %q, want identity.sluice.mesh.example", iss.Subject.CommonName)
	}
	// The defaults leave the injector's own defaults alone.
	def := decodeTyped(t, runInstall(t))
	for _, a := range get[*appsv1.Deployment](t, def, "Deployment/sluice-injector").Spec.Template.Spec.Containers[0].Args {
		if strings.HasPrefix(a, "--default-inbound-policy") || strings.HasPrefix(a, "--proxy-log-level") {
			t.Errorf("default install passes %s to the injector", a)
		}
	}
}

// issuerFiles writes a trust anchor, an issuer and the issuer's key into
// files and returns their paths.
type issuerFiles struct{ anchors, crt, key string }

func writeIssuerFiles(t *testing.T, anchor, issuer identity.KeyPair) issuerFiles {
	t.Helper()
	dir := t.TempDir()
	f := issuerFiles{filepath.Join(dir, "ca.crt"), filepath.Join(dir, "issuer.crt"), filepath.Join(dir, "issuer.key")}
	for p, data := range map[string][]byte{f.anchors: anchor.CertPEM, f.crt: issuer.CertPEM, f.key: issuer.KeyPEM} {
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f issuerFiles) args() []string {
	return []string{"--" + flagTrustAnchorsFile, f.anchors, "--" + flagIssuerCertFile, f.crt, "--" + flagIssuerKeyFile, f.key}
}

func TestInstallGivenIssuer(t *testing.T) {
	now := time.Now()
	anchor, err := identity.NewRootCA("my root", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := identity.NewIntermediateCA(anchor, "my issuer", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	files := writeIssuerFiles(t, anchor, issuer)
	objs := decodeTyped(t, runInstall(t, files.args()...))
	if got := get[*corev1.ConfigMap](t, objs, "ConfigMap/sluice-identity-trust-roots").Data["ca.crt"]; strings.TrimSpace(got) != strings.TrimSpace(string(anchor.CertPEM)) {
		t.Errorf("trust anchors %q, want the given file's", got)
	}
	sec := get[*corev1.Secret](t, objs, "Secret/sluice-identity-issuer")
	if !bytes.Equal(sec.Data["tls.crt"], issuer.CertPEM) || !bytes.Equal(sec.Data["tls.key"], issuer.KeyPEM) {
		t.Error("the issuer Secret does not hold the given certificate and key")
	}
}

func TestInstallErrors(t *testing.T) {
	now := time.Now()
	must := func(kp identity.KeyPair, err error) identity.KeyPair {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return kp
	}
	anchor := must(identity.NewRootCA("root", now, 24*time.Hour))
	issuer := must(identity.NewIntermediateCA(anchor, "issuer", now, 24*time.Hour))
	otherAnchor := must(identity.NewRootCA("other root", now, 24*time.Hour))
	otherIssuer := must(identity.NewIntermediateCA(otherAnchor, "other issuer", now, 24*time.Hour))
	expired := must(identity.NewIntermediateCA(anchor, "old issuer", now.Add(-3*time.Hour), time.Hour))
	leaf := must(identity.NewServingCertificate(anchor, []string{"leaf.example"}, now, time.Hour))

	good := writeIssuerFiles(t, anchor, issuer)
	mismatched := writeIssuerFiles(t, anchor, identity.KeyPair{CertPEM: issuer.CertPEM, KeyPEM: otherIssuer.KeyPEM})
	foreign := writeIssuerFiles(t, anchor, otherIssuer)
	old := writeIssuerFiles(t, anchor, expired)
	notCA := writeIssuerFiles(t, anchor, leaf)
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.crt")

	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"mismatched key", mismatched.args(), []string{"--" + flagIssuerKeyFile, mismatched.key, "not the key"}},
		{"expired issuer", old.args(), []string{"--" + flagIssuerCertFile, old.crt, "expired"}},
		{"issuer of another anchor", foreign.args(), []string{"--" + flagIssuerCertFile, foreign.crt, "does not chain"}},
		{"issuer not a CA", notCA.args(), []string{"--" + flagIssuerCertFile, notCA.crt, "not a CA"}},
		{"anchors not PEM", []string{"--" + flagTrustAnchorsFile, garbage, "--" + flagIssuerCertFile, good.crt, "--" + flagIssuerKeyFile, good.key},
			[]string{"--" + flagTrustAnchorsFile, garbage, "no PEM certificate"}},
		{"key not PEM", []string{"--" + flagTrustAnchorsFile, good.anchors, "--" + flagIssuerCertFile, good.crt, "--" + flagIssuerKeyFile, garbage},
			[]string{"--" + flagIssuerKeyFile, garbage, "no PEM key"}},
		{"missing file", []string{"--" + flagTrustAnchorsFile, good.anchors, "--" + flagIssuerCertFile, missing, "--" + flagIssuerKeyFile, good.key},
			[]string{"--" + flagIssuerCertFile, missing, "no such file"}},
		{"issuer without its key", []string{"--" + flagTrustAnchorsFile, good.anchors, "--" + flagIssuerCertFile, good.crt},
			[]string{"--" + flagIssuerKeyFile, "together"}},
		{"anchors alone", []string{"--" + flagTrustAnchorsFile, good.anchors},
			[]string{"--" + flagIssuerCertFile, "--" + flagIssuerKeyFile}},
		{"default inbound policy", []string{"--default-inbound-policy", "allow-all"}, []string{"--default-inbound-policy", "allow-all", "all-unauthenticated"}},
		{"proxy log level", []string{"--proxy-log-level", "loud"}, []string{"--proxy-log-level", "loud"}},
		{"pull policy", []string{"--image-pull-policy", "Sometimes"}, []string{"--image-pull-policy", "IfNotPresent"}},
		{"replicas", []string{"--controller-replicas", "0"}, []string{"--controller-replicas"}},
		{"destination replicas", []string{"--destination-replicas", "0"}, []string{"--destination-replicas 0: want at least 1"}},
		{"trust domain", []string{"--trust-domain", "Not A Domain"}, []string{"--trust-domain"}},
		{"version", []string{"--version", "v1:latest"}, []string{"--version"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(append([]string{"install", "--" + flagIgnoreCluster}, tc.args...), &stdout, &stderr); code == 0 {
				t.Fatalf("sluice install %v succeeded", tc.args)
			}
			if stdout.Len() != 0 {
				t.Errorf("sluice install %v printed %d bytes to stdout", tc.args, stdout.Len())
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("sluice install %v: stderr %q lacks %q", tc.args, stderr.String(), w)
				}
			}
		})
	}
}

// TestChartRendersWhatInstallPrints renders charts/sluice from the
// repository as `helm template` does, with certificates a user gives, and
// checks it makes the same objects as sluice install.
func TestChartRendersWhatInstallPrints(t *testing.T) {
	ch, err := chartloader.Load(filepath.Join("..", "..", "charts", "sluice"))
	if err != nil {
		t.Fatalf("loading the chart: %v", err)
	}
	now := time.Now()
	anchor, _ := identity.NewRootCA("root", now, time.Hour)
	issuer, _ := identity.NewIntermediateCA(anchor, "issuer", now, time.Hour)
	webCA, _ := identity.NewRootCA("webhook", now, time.Hour)
	serving, err := identity.NewServingCertificate(webCA, []string{"sluice-injector.sluice.svc"}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	vals := func() map[string]any {
		return map[string]any{
			"identity": map[string]any{
				"trustAnchorsPEM": string(anchor.CertPEM),
				"issuer":          map[string]any{"crtPEM": string(issuer.CertPEM), "keyPEM": string(issuer.KeyPEM)},
			},
			"webhook": map[string]any{"caBundle": string(webCA.CertPEM), "crtPEM": string(serving.CertPEM), "keyPEM": string(serving.KeyPEM)},
		}
	}
	out, err := renderChart(ch, vals(), "sluice")
	if err != nil {
		t.Fatalf("rendering the chart: %v", err)
	}
	objs := decodeTyped(t, out)
	if got, want := objs.keys(), decodeTyped(t, runInstall(t)).keys(); !slices.Equal(got, want) {
		t.Errorf("the chart renders\n%v\nsluice install prints\n%v", got, want)
	}
	checkWebhook(t, objs)
	if got := get[*appsv1.Deployment](t, objs, "Deployment/sluice-destination").Spec.Template.Spec.Containers[0].Image; got != "ghcr.io/sluicehq/sluice:"+ch.Metadata.AppVersion {
		t.Errorf("the chart's default image is %q, want the appVersion's tag", got)
	}

	t.Run("required certificates", func(t *testing.T) {
		for _, path := range [][]string{
			{"identity", "trustAnchorsPEM"}, {"identity", "issuer", "crtPEM"}, {"identity", "issuer", "keyPEM"},
			{"webhook", "caBundle"}, {"webhook", "crtPEM"}, {"webhook", "keyPEM"},
		} {
			v := vals()
			m := v
			for _, k := range path[:len(path)-1] {
				m = m[k].(map[string]any)
			}
			delete(m, path[len(path)-1])
			_, err := renderChart(ch, v, "sluice")
			name := strings.Join(path, ".")
			if err == nil || !strings.Contains(err.Error(), name+" is required") || !strings.Contains(err.Error(), "--set-file") {
				t.Errorf("without %s: %v, want %q and how to give it", name, err, name+" is required")
			}
		}
	})
	t.Run("schema", func(t *testing.T) {
		v := vals()
		v["proxy"] = map[string]any{"defaultInboundPolicy": "allow-all"}
		if _, err := renderChart(ch, v, "sluice"); err == nil || !strings.Contains(err.Error(), "defaultInboundPolicy") {
			t.Errorf("an unknown default inbound policy renders: %v", err)
		}
	})
}

// TestInstallAppliesToAnAPIServer applies what the README's quick start
// applies to a real API server: the CRDs with kubectl server-side, then
// the control plane as a server-side dry run (the API server validates and
// admits every object and stores none), then for real.
func TestInstallAppliesToAnAPIServer(t *testing.T) {
	cfg, c := envtest.Start(t)
	kubectl := envtest.Kubectl(t)
	kubeconfig := envtest.Kubeconfig(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// apply pipes stdin into kubectl apply --server-side ARGS... and returns
	// kubectl's output lines.
	apply := func(name string, stdin []byte, args ...string) []string {
		t.Helper()
		cmd := exec.CommandContext(ctx, kubectl, append([]string{"--kubeconfig", kubeconfig, "apply", "--server-side", "-f", "-"}, args...)...)
		cmd.Stdin = bytes.NewReader(stdin)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s | kubectl apply --server-side %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
		}
		return strings.Split(strings.TrimSpace(stdout.String()), "\n")
	}

	apply("sluice install --crds", installCRDs(t))

	out := runInstall(t)
	objs := decodeTyped(t, out)
	// A dry run creates no namespace, so the namespaced objects of a dry
	// run would find none: create the printed Namespace first.
	var nsDoc []byte
	for doc := range strings.SplitSeq(string(out), "\n---\n") {
		if strings.Contains(doc, "\nkind: Namespace\n") {
			nsDoc = []byte(doc)
		}
	}
	if nsDoc == nil {
		t.Fatal("sluice install printed no Namespace")
	}
	apply("the Namespace of sluice install", nsDoc)
	lines := apply("sluice install", out, "--dry-run=server")
	if len(lines) != len(objs) {
		t.Errorf("kubectl applied %d objects, want %d:\n%s", len(lines), len(objs), strings.Join(lines, "\n"))
	}
	for _, l := range lines {
		if !strings.Contains(l, "serverside-applied (server dry run)") {
			t.Errorf("kubectl line %q is not a server dry run apply", l)
		}
	}
	var wh admissionregistrationv1.MutatingWebhookConfiguration
	if err := c.Get(ctx, client.ObjectKey{Name: "sluice-injector"}, &wh); !apierrors.IsNotFound(err) {
		t.Errorf("after a dry run, getting the webhook configuration: %v, want not found", err)
	}

	lines = apply("sluice install", out)
	if len(lines) != len(objs) {
		t.Errorf("kubectl applied %d objects, want %d:\n%s", len(lines), len(objs), strings.Join(lines, "\n"))
	}
	if err := c.Get(ctx, client.ObjectKey{Name: "sluice-injector"}, &wh); err != nil {
		t.Fatalf("the applied webhook configuration: %v", err)
	}
	want := get[*admissionregistrationv1.MutatingWebhookConfiguration](t, objs, "MutatingWebhookConfiguration/sluice-injector")
	if !bytes.Equal(wh.Webhooks[0].ClientConfig.CABundle, want.Webhooks[0].ClientConfig.CABundle) {
		t.Error("the stored webhook's caBundle is not the printed one")
	}
	var d appsv1.Deployment
	if err := c.Get(ctx, client.ObjectKey{Namespace: "sluice", Name: "sluice-destination"}, &d); err != nil {
		t.Fatalf("the applied destination Deployment: %v", err)
	}
	checkRolesMayWork(t, cfg)
	// Applying the same manifests again changes nothing and conflicts with nothing.
	apply("sluice install", out)
}

// installCerts are the certificates in the output of sluice install.
type installCerts struct {
	anchors, issuerCrt, issuerKey, webhookCA, webhookCrt string
}

func certsOf(t *testing.T, out []byte) installCerts {
	t.Helper()
	objs := decodeTyped(t, out)
	iss := get[*corev1.Secret](t, objs, "Secret/sluice-identity-issuer")
	wh := get[*corev1.Secret](t, objs, "Secret/sluice-injector-tls")
	whc := get[*admissionregistrationv1.MutatingWebhookConfiguration](t, objs, "MutatingWebhookConfiguration/sluice-injector")
	return installCerts{
		anchors:    strings.TrimSpace(get[*corev1.ConfigMap](t, objs, "ConfigMap/sluice-identity-trust-roots").Data["ca.crt"]),
		issuerCrt:  string(iss.Data["tls.crt"]),
		issuerKey:  string(iss.Data["tls.key"]),
		webhookCA:  string(whc.Webhooks[0].ClientConfig.CABundle),
		webhookCrt: string(wh.Data["tls.crt"]),
	}
}

// runInstallOn runs `sluice install ARGS...` without --ignore-cluster and
// returns its stdout, stderr and exit code.
func runInstallOn(args ...string) (stdout, stderr string, code int) {
	var o, e bytes.Buffer
	code = run(append([]string{"install"}, args...), &o, &e)
	return o.String(), e.String(), code
}

// TestInstallUpgradeKeepsTheClusterCertificates installs on an API server,
// then installs again as an upgrade would: the second run must print the
// cluster's trust anchors, issuer and webhook certificate, not new ones.
func TestInstallUpgradeKeepsTheClusterCertificates(t *testing.T) {
	cfg, c := envtest.Start(t)
	kubectl := envtest.Kubectl(t)
	kubeconfig := envtest.Kubeconfig(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	out, stderr, code := runInstallOn("--kubeconfig", kubeconfig)
	if code != 0 {
		t.Fatalf("first install exited %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "holds no Sluice certificates") || !strings.Contains(stderr, cfg.Host) {
		t.Errorf("first install's stderr %q does not say it generated the certificates for %s", stderr, cfg.Host)
	}
	first := certsOf(t, []byte(out))
	cmd := exec.CommandContext(ctx, kubectl, "--kubeconfig", kubeconfig, "apply", "--server-side", "-f", "-")
	cmd.Stdin = strings.NewReader(out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, b)
	}

	out, stderr, code = runInstallOn("--kubeconfig", kubeconfig)
	if code != 0 {
		t.Fatalf("second install exited %d: %s", code, stderr)
	}
	t.Logf("second install: %s", stderr)
	for _, w := range []string{"reused", cfg.Host, "ConfigMap sluice/sluice-identity-trust-roots", "Secret sluice/sluice-identity-issuer", "Secret sluice/sluice-injector-tls"} {
		if !strings.Contains(stderr, w) {
			t.Errorf("second install's stderr %q lacks %q", stderr, w)
		}
	}
	if second := certsOf(t, []byte(out)); second != first {
		t.Errorf("the second install changed the certificates:\nfirst  %+v\nsecond %+v", first, second)
	}

	t.Run("ignore cluster", func(t *testing.T) {
		out, stderr, code := runInstallOn("--kubeconfig", kubeconfig, "--"+flagIgnoreCluster)
		if code != 0 || stderr != "" {
			t.Fatalf("install --ignore-cluster exited %d, stderr %q", code, stderr)
		}
		got := certsOf(t, []byte(out))
		if got.anchors == first.anchors || got.issuerCrt == first.issuerCrt || got.webhookCA == first.webhookCA {
			t.Error("install --ignore-cluster reused a certificate of the cluster")
		}
	})

	t.Run("files win", func(t *testing.T) {
		now := time.Now()
		anchor, err := identity.NewRootCA("my root", now, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		issuer, err := identity.NewIntermediateCA(anchor, "my issuer", now, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		files := writeIssuerFiles(t, anchor, issuer)
		out, stderr, code := runInstallOn(append([]string{"--kubeconfig", kubeconfig}, files.args()...)...)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		got := certsOf(t, []byte(out))
		if got.anchors != strings.TrimSpace(string(anchor.CertPEM)) || got.issuerCrt != string(issuer.CertPEM) {
			t.Error("the --identity-* files did not win over the cluster's certificates")
		}
		if got.webhookCA != first.webhookCA || got.webhookCrt != first.webhookCrt {
			t.Error("the cluster's webhook certificate was not reused")
		}
	})

	t.Run("expired issuer", func(t *testing.T) {
		now := time.Now()
		anchor, err := identity.NewRootCA("root", now.Add(-3*time.Hour), 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		expired, err := identity.NewIntermediateCA(anchor, "old issuer", now.Add(-3*time.Hour), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		var sec corev1.Secret
		if err := c.Get(ctx, client.ObjectKey{Namespace: "sluice", Name: "sluice-identity-issuer"}, &sec); err != nil {
			t.Fatal(err)
		}
		sec.Data["tls.crt"], sec.Data["tls.key"] = expired.CertPEM, expired.KeyPEM
		if err := c.Update(ctx, &sec); err != nil {
			t.Fatal(err)
		}
		out, stderr, code := runInstallOn("--kubeconfig", kubeconfig)
		if code == 0 || out != "" {
			t.Fatalf("install with an expired issuer in the cluster exited %d and printed %d bytes, want a failure and nothing", code, len(out))
		}
		t.Logf("install with an expired issuer: %s", stderr)
		for _, w := range []string{"Secret sluice/sluice-identity-issuer", "expired", "--" + flagIssuerCertFile, "--" + flagIgnoreCluster} {
			if !strings.Contains(stderr, w) {
				t.Errorf("stderr %q lacks %q", stderr, w)
			}
		}
	})
}
