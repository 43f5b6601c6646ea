package injector

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/proxy/config"
	"github.com/sluicehq/sluice/proxy/iptables"
	"github.com/sluicehq/sluice/proxy/policy"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update creates it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -update rewrites it)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func readPod(t *testing.T, name string) *corev1.Pod {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(data, &pod); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return &pod
}

func namespace(name string, annotations ...string) *corev1.Namespace {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{}}}
	for i := 0; i+1 < len(annotations); i += 2 {
		ns.Annotations[annotations[i]] = annotations[i+1]
	}
	return ns
}

// render is a golden file's content: the report as comments, then the pod.
func render(t *testing.T, pod *corev1.Pod, rep Report) []byte {
	t.Helper()
	var b bytes.Buffer
	what := "skipped: " + rep.Skipped
	if rep.Injected {
		what = "injected, native sidecar: " + fmt.Sprint(rep.Native)
	}
	fmt.Fprintf(&b, "# workload: %s\n# %s\n", rep.Workload, what)
	for _, w := range rep.Warnings {
		fmt.Fprintf(&b, "# warning: %s\n", w)
	}
	out, err := yaml.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	b.Write(out)
	return b.Bytes()
}

func classic() Config {
	c := DefaultConfig()
	c.NativeSidecars = false
	return c
}

var shopEnabled = namespace("shop", AnnotationInject, InjectEnabled,
	AnnotationProxyLogLevel, "warn", AnnotationSkipSubnets, "10.96.0.0/12, 169.254.169.254/32")

var goldenCases = []struct {
	name, input string
	ns          *corev1.Namespace
	cfg         Config
	injected    bool
}{
	{"deployment", "deployment.input.yaml", namespace("shop", AnnotationInject, InjectEnabled), DefaultConfig(), true},
	{"deployment_classic", "deployment.input.yaml", namespace("shop", AnnotationInject, InjectEnabled), classic(), true},
	{"disabled", "disabled.input.yaml", shopEnabled, DefaultConfig(), false},
	{"annotations", "annotations.input.yaml", shopEnabled, DefaultConfig(), true},
	{"job", "job.input.yaml", namespace("shop", AnnotationInject, InjectEnabled), DefaultConfig(), true},
	{"job_classic", "job.input.yaml", namespace("shop", AnnotationInject, InjectEnabled), classic(), true},
	{"udp", "udp.input.yaml", namespace("shop", AnnotationInject, InjectDisabled), DefaultConfig(), true},
	{"already_injected", "deployment.golden.yaml", namespace("shop", AnnotationInject, InjectEnabled), DefaultConfig(), false},
	{"hostnetwork", "hostnetwork.input.yaml", shopEnabled, DefaultConfig(), false},
	{"not_enabled", "deployment.input.yaml", namespace("shop"), DefaultConfig(), false},
}

func TestInjectGolden(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			pod := readPod(t, tc.input)
			before := pod.DeepCopy()
			got, rep, err := Inject(pod, tc.ns, tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(pod, before) {
				t.Error("Inject changed its input")
			}
			if rep.Injected != tc.injected {
				t.Fatalf("Injected = %v, want %v (%s)", rep.Injected, tc.injected, rep)
			}
			if !tc.injected && !reflect.DeepEqual(got, pod) {
				t.Error("a skipped pod was changed")
			}
			golden(t, tc.name+".golden.yaml", render(t, got, rep))
			if !tc.injected {
				return
			}
			// Idempotent: an injected pod is left alone.
			again, rep2, err := Inject(got, tc.ns, tc.cfg)
			if err != nil || rep2.Injected || !strings.HasPrefix(rep2.Skipped, "already injected") || !reflect.DeepEqual(again, got) {
				t.Errorf("second Inject: injected %v, %q, err %v", rep2.Injected, rep2.Skipped, err)
			}
		})
	}
}

// expandEnv resolves a container's environment as the kubelet does: field
// references from fields, and $(NAME) in values from the variables defined
// before ($$ is a literal $).
func expandEnv(t *testing.T, c corev1.Container, fields map[string]string) map[string]string {
	t.Helper()
	vars := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			v, ok := fields[e.ValueFrom.FieldRef.FieldPath]
			if !ok {
				t.Fatalf("env %s: unexpected field %s", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			vars[e.Name] = v
			continue
		}
		var b strings.Builder
		s := e.Value
		for len(s) > 0 {
			switch {
			case strings.HasPrefix(s, "$$"):
				b.WriteByte('$')
				s = s[2:]
			case strings.HasPrefix(s, "$("):
				end := strings.IndexByte(s, ')')
				name := s[2:end]
				v, ok := vars[name]
				if !ok {
					t.Fatalf("env %s refers to $(%s), which is not defined before it", e.Name, name)
				}
				b.WriteString(v)
				s = s[end+1:]
			default:
				b.WriteByte(s[0])
				s = s[1:]
			}
		}
		vars[e.Name] = b.String()
	}
	return vars
}

func findContainer(t *testing.T, pod *corev1.Pod, name string) corev1.Container {
	t.Helper()
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range list {
			if c.Name == name {
				return c
			}
		}
	}
	t.Fatalf("no %s container", name)
	return corev1.Container{}
}

// TestProxyConfigParses checks that the configuration the proxy gets, once
// the kubelet expanded it, is one the proxy accepts and says what it must.
func TestProxyConfigParses(t *testing.T) {
	fields := map[string]string{
		"metadata.name":           "web-5d8f7c9b4-x7k2p",
		"metadata.namespace":      "0123", // digits: must stay a string
		"spec.serviceAccountName": "web",
	}
	tests := []struct {
		input       string
		ns          *corev1.Namespace
		app         string
		policy      string
		logLevel    string
		opaque      []int
		labels      map[string]string
		goMemLimit  string
		inboundOpen bool
		probes      []config.Probe
	}{
		{input: "deployment.input.yaml", ns: namespace("shop", AnnotationInject, InjectEnabled),
			app: "127.0.0.1:8080", policy: "all-unauthenticated", logLevel: "info", inboundOpen: true,
			probes: []config.Probe{{Port: 8080, Path: "/healthz"}},
			labels: map[string]string{"namespace": "0123", "pod": "web-5d8f7c9b4-x7k2p", "deployment": "web"}},
		{input: "annotations.input.yaml", ns: shopEnabled,
			app: "127.0.0.1:5432", policy: "all-authenticated", logLevel: "debug", opaque: []int{5432, 6379}, inboundOpen: true,
			labels:     map[string]string{"namespace": "0123", "pod": "web-5d8f7c9b4-x7k2p", "statefulset": "db"},
			goMemLimit: "241591905",
			// The exporter's probe is on a skipped port.
			probes: []config.Probe{{Port: 8008, Path: "/"}, {Port: 8008, Path: "/started"}}},
		// No declared port: every port is still served, with no fallback.
		{input: "job.input.yaml", ns: namespace("shop", AnnotationInject, InjectEnabled),
			policy: "all-unauthenticated", inboundOpen: true, logLevel: "info", labels: map[string]string{"namespace": "0123", "pod": "web-5d8f7c9b4-x7k2p", "k8s_job": "backup"}},
	}
	for _, tc := range tests {
		t.Run(tc.input, func(t *testing.T) {
			got, _, err := Inject(readPod(t, tc.input), tc.ns, DefaultConfig())
			if err != nil {
				t.Fatal(err)
			}
			env := expandEnv(t, findContainer(t, got, ProxyContainerName), fields)
			cfg := parseProxyConfig(t, env[ConfigEnv])
			if cfg.Inbound.Enabled() != tc.inboundOpen || cfg.Inbound.App != tc.app || !cfg.Inbound.OriginalDst {
				t.Errorf("inbound = %+v, want enabled %v, app %q, originalDst", cfg.Inbound, tc.inboundOpen, tc.app)
			}
			if tc.inboundOpen && cfg.Inbound.Policy() != tc.policy {
				t.Errorf("inbound policy = %q, want %q", cfg.Inbound.Policy(), tc.policy)
			}
			if cfg.Admin != "0.0.0.0:4191" || cfg.Outbound.Listen != "127.0.0.1:4140" || (tc.inboundOpen && cfg.Inbound.Listen != "0.0.0.0:4143") {
				t.Errorf("listeners: admin %q inbound %q outbound %q", cfg.Admin, cfg.Inbound.Listen, cfg.Outbound.Listen)
			}
			if cfg.LogLevel != tc.logLevel || env[LogLevelEnv] != tc.logLevel {
				t.Errorf("log level: config %q, env %q, want %q", cfg.LogLevel, env[LogLevelEnv], tc.logLevel)
			}
			if tc.opaque != nil && !slices.Equal(cfg.OpaquePorts, tc.opaque) {
				t.Errorf("opaque ports = %v, want %v", cfg.OpaquePorts, tc.opaque)
			}
			if !reflect.DeepEqual(cfg.Labels, tc.labels) {
				t.Errorf("labels = %v, want %v", cfg.Labels, tc.labels)
			}
			if !slices.Equal(cfg.Inbound.Probes, tc.probes) {
				t.Errorf("inbound.probes = %v, want %v", cfg.Inbound.Probes, tc.probes)
			}
			if env["GOMEMLIMIT"] != tc.goMemLimit {
				t.Errorf("GOMEMLIMIT = %q, want %q", env["GOMEMLIMIT"], tc.goMemLimit)
			}
			want := config.ControlPlane{
				Address:         "sluice-destination.sluice.svc.cluster.local:8086",
				IdentityAddress: "sluice-identity.sluice.svc.cluster.local:8080",
				DestinationName: "sluice-destination.sluice.serviceaccount.identity.sluice.cluster.local",
				IdentityName:    "sluice-identity.sluice.serviceaccount.identity.sluice.cluster.local",
				Identity:        "web.0123.serviceaccount.identity.sluice.cluster.local",
				TokenFile:       "/var/run/sluice/identity/token",
				TrustAnchors:    "/var/run/sluice/trust-roots/ca.crt",
				Namespace:       "0123",
				Workload:        "0123/web-5d8f7c9b4-x7k2p",
			}
			if cfg.ControlPlane == nil || !reflect.DeepEqual(*cfg.ControlPlane, want) {
				t.Errorf("controlPlane = %+v, want %+v", cfg.ControlPlane, want)
			}
			// The files the configuration names are mounted.
			proxy := findContainer(t, got, ProxyContainerName)
			mounted := map[string]bool{}
			for _, m := range proxy.VolumeMounts {
				mounted[m.MountPath] = m.ReadOnly
			}
			for _, f := range []string{want.TokenFile, want.TrustAnchors} {
				if !mounted[filepath.Dir(f)] {
					t.Errorf("%s: its directory is not mounted read-only in the proxy", f)
				}
			}
		})
	}
}

// parseProxyConfig parses the rendered configuration as the proxy does
// (strictly: an unknown field fails) and checks its control-plane addresses.
func parseProxyConfig(t *testing.T, rendered string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(rendered))
	if err != nil {
		t.Fatalf("the proxy rejects its configuration: %v\n%s", err, rendered)
	}
	if got, want := cfg.ControlPlane.IdentityAddress, "sluice-identity.sluice.svc.cluster.local:8080"; got != want {
		t.Errorf("controlPlane.identityAddress = %v, want %s", got, want)
	}
	return cfg
}

// TestInitArgs checks the init container's flags against what
// `sluice-proxy init` parses.
func TestInitArgs(t *testing.T) {
	got, _, err := Inject(readPod(t, "annotations.input.yaml"), shopEnabled, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	init := findContainer(t, got, InitContainerName)
	if init.Args[0] != "init" {
		t.Fatalf("args = %q, want init first", init.Args)
	}
	flags := map[string]string{}
	for _, a := range init.Args[1:] {
		k, v, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !ok {
			t.Fatalf("argument %q is not --flag=value", a)
		}
		flags[k] = v
	}
	wantFlags := map[string]string{
		"proxy-uid": "2102", "inbound-port": "4143", "outbound-port": "4140", "admin-port": "4191",
		"inbound-ports-to-ignore":  "9187,7000-7010",
		"outbound-ports-to-ignore": "443,6443",
		"subnets-to-ignore":        "10.96.0.0/12,169.254.169.254/32",
	}
	if !reflect.DeepEqual(flags, wantFlags) {
		t.Errorf("flags = %v\nwant %v", flags, wantFlags)
	}
	in, err := iptables.ParsePortRanges(flags["inbound-ports-to-ignore"])
	if err != nil || len(in) != 2 || in[1] != (iptables.PortRange{First: 7000, Last: 7010}) {
		t.Errorf("inbound ports: %v, %v", in, err)
	}
	if _, err := iptables.ParsePortRanges(flags["outbound-ports-to-ignore"]); err != nil {
		t.Error(err)
	}
	if s, err := iptables.ParseSubnets(flags["subnets-to-ignore"]); err != nil || len(s) != 2 {
		t.Errorf("subnets: %v, %v", s, err)
	}
	sc := init.SecurityContext
	if *sc.RunAsUser != 0 || *sc.RunAsNonRoot || !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"NET_ADMIN", "NET_RAW"}) {
		t.Errorf("init security context = %+v", sc)
	}
	proxy := findContainer(t, got, ProxyContainerName)
	if psc := proxy.SecurityContext; *psc.RunAsUser != ProxyUID || !*psc.ReadOnlyRootFilesystem || !*psc.RunAsNonRoot {
		t.Errorf("proxy security context = %+v", psc)
	}
	for name, want := range map[corev1.ResourceName]string{corev1.ResourceCPU: "100m", corev1.ResourceMemory: "32Mi"} {
		if q := proxy.Resources.Requests[name]; q.String() != want {
			t.Errorf("request %s = %s, want %s", name, q.String(), want)
		}
	}
}

func TestDefaultInboundPoliciesMatchTheProxy(t *testing.T) {
	if !slices.Equal(DefaultInboundPolicies, policy.DefaultPolicies) {
		t.Errorf("DefaultInboundPolicies = %v, the proxy's are %v", DefaultInboundPolicies, policy.DefaultPolicies)
	}
}

func TestInjectDecisions(t *testing.T) {
	pod := func(ann ...string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "shop", Annotations: map[string]string{}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
		for i := 0; i+1 < len(ann); i += 2 {
			p.Annotations[ann[i]] = ann[i+1]
		}
		return p
	}
	tests := []struct {
		name     string
		pod      *corev1.Pod
		ns       *corev1.Namespace
		injected bool
		reason   string
	}{
		{"namespace enabled", pod(), namespace("shop", AnnotationInject, InjectEnabled), true, ""},
		{"pod enabled, no namespace", pod(AnnotationInject, InjectEnabled), nil, true, ""},
		{"pod enabled wins over namespace disabled", pod(AnnotationInject, InjectEnabled), namespace("shop", AnnotationInject, InjectDisabled), true, ""},
		{"pod disabled wins over namespace enabled", pod(AnnotationInject, InjectDisabled), namespace("shop", AnnotationInject, InjectEnabled), false, "pod annotation sluice.dev/inject is disabled"},
		{"namespace disabled", pod(), namespace("shop", AnnotationInject, InjectDisabled), false, "namespace shop annotation sluice.dev/inject is disabled"},
		{"nothing", pod(), namespace("shop"), false, "neither the pod nor namespace shop has the sluice.dev/inject annotation"},
		{"no namespace", pod(), nil, false, "no sluice.dev/inject annotation on the pod"},
		{"pod empty", pod(AnnotationInject, ""), namespace("shop"), false, "pod annotation sluice.dev/inject is empty and namespace shop has none"},
		{"pod empty, namespace enabled", pod(AnnotationInject, ""), namespace("shop", AnnotationInject, InjectEnabled), true, ""},
		{"disabled pod with a bad config annotation", pod(AnnotationInject, InjectDisabled, AnnotationProxyLogLevel, "loud"), nil, false, "pod annotation sluice.dev/inject is disabled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, rep, err := Inject(tc.pod, tc.ns, DefaultConfig())
			if err != nil {
				t.Fatal(err)
			}
			if rep.Injected != tc.injected || rep.Skipped != tc.reason {
				t.Errorf("got injected %v %q, want %v %q", rep.Injected, rep.Skipped, tc.injected, tc.reason)
			}
		})
	}
}

func TestInjectErrors(t *testing.T) {
	tests := []struct {
		name   string
		podAnn map[string]string
		nsAnn  map[string]string
		want   []string // substrings of the error
	}{
		{"inject value", map[string]string{AnnotationInject: "yes"}, nil,
			[]string{`pod annotation sluice.dev/inject="yes": want enabled or disabled`}},
		{"namespace inject value", nil, map[string]string{AnnotationInject: "on"},
			[]string{`namespace shop annotation sluice.dev/inject="on"`}},
		{"skip inbound ports", map[string]string{AnnotationSkipInboundPorts: "80,http2"}, nil,
			[]string{`pod annotation config.sluice.dev/skip-inbound-ports="80,http2": port "http2"`, "container port name"}},
		{"skip outbound range", map[string]string{AnnotationSkipOutboundPorts: "9010-9000"}, nil,
			[]string{`config.sluice.dev/skip-outbound-ports="9010-9000": port range "9010-9000": 9000 is below 9010`}},
		{"port zero", map[string]string{AnnotationSkipOutboundPorts: "0"}, nil, []string{`skip-outbound-ports="0"`}},
		{"port too big", map[string]string{AnnotationOpaquePorts: "70000"}, nil, []string{`opaque-ports="70000"`}},
		{"too many opaque ports", map[string]string{AnnotationOpaquePorts: "1000-3000"}, nil, []string{"more than 1024 ports"}},
		{"subnet", map[string]string{AnnotationSkipSubnets: "10.0.0.0/8,10.1.2.3"}, nil,
			[]string{`config.sluice.dev/skip-subnets="10.0.0.0/8,10.1.2.3": subnet "10.1.2.3" is not a CIDR`}},
		{"namespace subnet", nil, map[string]string{AnnotationInject: InjectEnabled, AnnotationSkipSubnets: "x"},
			[]string{`namespace shop annotation config.sluice.dev/skip-subnets="x"`}},
		{"cpu", map[string]string{AnnotationProxyCPURequest: "lots"}, nil, []string{`proxy-cpu-request="lots": not a quantity`}},
		{"negative memory", map[string]string{AnnotationProxyMemoryLimit: "-1Gi"}, nil, []string{`proxy-memory-limit="-1Gi": must be positive`}},
		{"request above limit", map[string]string{AnnotationProxyMemoryRequest: "1Gi", AnnotationProxyMemoryLimit: "512Mi"}, nil,
			[]string{`config.sluice.dev/proxy-memory-request="1Gi": the request is above the memory limit 512Mi`}},
		{"log level", map[string]string{AnnotationProxyLogLevel: "trace"}, nil, []string{`proxy-log-level="trace": want one of debug, info, warn, error`}},
		{"policy", map[string]string{AnnotationDefaultInboundPolicy: "allow"}, nil, []string{`default-inbound-policy="allow": want one of all-unauthenticated`}},
		{"image", map[string]string{AnnotationProxyImage: "a b"}, nil, []string{`proxy-image="a b"`}},
		{"version", map[string]string{AnnotationProxyVersion: "v1/2"}, nil, []string{`proxy-version="v1/2": not an image tag`}},
		{"several", map[string]string{AnnotationProxyLogLevel: "trace", AnnotationProxyVersion: ":"}, nil,
			[]string{"proxy-log-level", "proxy-version"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ann := map[string]string{AnnotationInject: InjectEnabled}
			if tc.nsAnn != nil {
				ann = map[string]string{}
			}
			for k, v := range tc.podAnn {
				ann[k] = v
			}
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "shop", Annotations: ann},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}}}}}}
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Annotations: tc.nsAnn}}
			got, _, err := Inject(pod, ns, DefaultConfig())
			if err == nil {
				t.Fatal("no error")
			}
			if got != nil {
				t.Error("a pod came back with the error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestConfigResourcesDefault(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("20m")}
	pod := readPod(t, "deployment.input.yaml")
	pod.Annotations = map[string]string{AnnotationInject: InjectEnabled, AnnotationProxyCPULimit: "10m"}
	if _, _, err := Inject(pod, nil, cfg); err == nil || !strings.Contains(err.Error(), `default config.sluice.dev/proxy-cpu-request="20m": the request is above the cpu limit 10m`) {
		t.Errorf("err = %v", err)
	}
	pod.Annotations[AnnotationProxyCPULimit] = "500m"
	got, _, err := Inject(pod, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := findContainer(t, got, ProxyContainerName).Resources
	if q := r.Requests[corev1.ResourceCPU]; q.String() != "20m" {
		t.Errorf("cpu request = %s", q.String())
	}
	if cfg.Resources.Limits != nil {
		t.Error("Inject changed the Config's resources")
	}
}

func TestWorkloadOf(t *testing.T) {
	owner := func(kind, name string, controller bool) []metav1.OwnerReference {
		return []metav1.OwnerReference{{Kind: kind, Name: name, Controller: &controller}}
	}
	tests := []struct {
		name string
		meta metav1.ObjectMeta
		want string
	}{
		{"deployment", metav1.ObjectMeta{Labels: map[string]string{"pod-template-hash": "abc12"}, OwnerReferences: owner("ReplicaSet", "web-abc12", true)}, "deployment/web"},
		{"replicaset without hash", metav1.ObjectMeta{OwnerReferences: owner("ReplicaSet", "web-abc12", true)}, "replicaset/web-abc12"},
		{"replicaset other hash", metav1.ObjectMeta{Labels: map[string]string{"pod-template-hash": "zzz"}, OwnerReferences: owner("ReplicaSet", "web-abc12", true)}, "replicaset/web-abc12"},
		{"statefulset", metav1.ObjectMeta{OwnerReferences: owner("StatefulSet", "db", true)}, "statefulset/db"},
		{"daemonset", metav1.ObjectMeta{OwnerReferences: owner("DaemonSet", "agent", true)}, "daemonset/agent"},
		{"job", metav1.ObjectMeta{OwnerReferences: owner("Job", "backup-29000000", true)}, "job/backup-29000000"},
		{"single non-controller owner", metav1.ObjectMeta{OwnerReferences: owner("Thing", "t", false)}, "thing/t"},
		{"bare pod", metav1.ObjectMeta{Name: "p"}, "pod/p"},
		{"bare pod generate name", metav1.ObjectMeta{GenerateName: "p-"}, "pod/p"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := workloadOf(&corev1.Pod{ObjectMeta: tc.meta}).String(); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestNativeSidecarsSupported(t *testing.T) {
	for v, want := range map[string]bool{
		"v1.29.0": true, "v1.33.1": true, "v1.31.2-gke.1200": true, "1.30": true, "v2.0.0": true,
		"v1.28.9": false, "v1.9.0": false, "1.3": false, "": false, "garbage": false, "v1.x": false,
	} {
		if got := NativeSidecarsSupported(v); got != want {
			t.Errorf("NativeSidecarsSupported(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestImageRef(t *testing.T) {
	for _, tc := range []struct{ image, want string }{
		{"ghcr.io/sluicehq/sluice-proxy", "ghcr.io/sluicehq/sluice-proxy:v1"},
		{"localhost:5000/sluice-proxy", "localhost:5000/sluice-proxy:v1"},
		{"localhost:5000/sluice-proxy:pinned", "localhost:5000/sluice-proxy:pinned"},
		{"example.com/p@sha256:0123", "example.com/p@sha256:0123"},
	} {
		if got := imageRef(tc.image, "v1"); got != tc.want {
			t.Errorf("imageRef(%q) = %q, want %q", tc.image, got, tc.want)
		}
	}
}

// TestPatchGolden pins the webhook's JSON Patch for a Deployment's pod and
// checks that it rebuilds Inject's result, with this package's ApplyPatch
// and with an independent implementation.
func TestPatchGolden(t *testing.T) {
	for _, tc := range goldenCases {
		if !tc.injected {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			pod := readPod(t, tc.input)
			got, _, err := Inject(pod, tc.ns, tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			ops, err := CreatePatch(pod, got)
			if err != nil {
				t.Fatal(err)
			}
			patch, err := json.MarshalIndent(ops, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			if tc.name == "deployment" || tc.name == "deployment_classic" {
				golden(t, tc.name+".patch.json", append(patch, '\n'))
			}
			want, _ := json.Marshal(got)
			orig, _ := json.Marshal(pod)

			p, err := jsonpatch.DecodePatch(patch)
			if err != nil {
				t.Fatal(err)
			}
			theirs, err := p.Apply(orig)
			if err != nil {
				t.Fatalf("json-patch: %v", err)
			}
			assertSameJSON(t, "json-patch", theirs, want)

			doc, err := decodeGeneric(orig)
			if err != nil {
				t.Fatal(err)
			}
			ours, err := ApplyPatch(doc, ops)
			if err != nil {
				t.Fatal(err)
			}
			oursJSON, _ := json.Marshal(ours)
			assertSameJSON(t, "ApplyPatch", oursJSON, want)
		})
	}
}

func assertSameJSON(t *testing.T, what string, got, want []byte) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s: patched document differs\n got %s\nwant %s", what, got, want)
	}
}

func TestCreatePatch(t *testing.T) {
	tests := []struct {
		name string
		a, b string
		want string
	}{
		{"equal", `{"a":[1,2]}`, `{"a":[1,2]}`, `null`},
		{"add key with escapes", `{"m":{}}`, `{"m":{"a/b~c":"v"}}`, `[{"op":"add","path":"/m/a~1b~0c","value":"v"}]`},
		{"remove and replace", `{"x":1,"y":2}`, `{"y":3}`, `[{"op":"remove","path":"/x"},{"op":"replace","path":"/y","value":3}]`},
		{"insert front and back", `{"l":[{"n":"a"}]}`, `{"l":[{"n":"p"},{"n":"a"},{"n":"z"}]}`,
			`[{"op":"add","path":"/l/0","value":{"n":"p"}},{"op":"add","path":"/l/2","value":{"n":"z"}}]`},
		{"array changed otherwise", `{"l":[1,2,3]}`, `{"l":[3,1]}`, `[{"op":"replace","path":"/l","value":[3,1]}]`},
		{"type change", `{"v":{"a":1}}`, `{"v":[1]}`, `[{"op":"replace","path":"/v","value":[1]}]`},
		{"false and zero kept", `{}`, `{"f":false,"z":0}`, `[{"op":"add","path":"/f","value":false},{"op":"add","path":"/z","value":0}]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var a, b any
			if err := json.Unmarshal([]byte(tc.a), &a); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tc.b), &b); err != nil {
				t.Fatal(err)
			}
			ops, err := CreatePatch(a, b)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(ops)
			if string(got) != tc.want {
				t.Errorf("patch = %s, want %s", got, tc.want)
			}
			doc, _ := toGeneric(a)
			res, err := ApplyPatch(doc, ops)
			if err != nil {
				t.Fatal(err)
			}
			resJSON, _ := json.Marshal(res)
			assertSameJSON(t, "ApplyPatch", resJSON, []byte(tc.b))
		})
	}
}

func TestApplyPatchErrors(t *testing.T) {
	for _, tc := range []struct {
		doc string
		op  PatchOp
	}{
		{`{}`, PatchOp{Op: "add", Path: "/a/b", Value: json.RawMessage(`1`)}},
		{`{}`, PatchOp{Op: "replace", Path: "/a", Value: json.RawMessage(`1`)}},
		{`{}`, PatchOp{Op: "remove", Path: "/a"}},
		{`{"l":[]}`, PatchOp{Op: "add", Path: "/l/1", Value: json.RawMessage(`1`)}},
		{`{"l":[]}`, PatchOp{Op: "replace", Path: "/l/0", Value: json.RawMessage(`1`)}},
		{`{"l":[]}`, PatchOp{Op: "move", Path: "/l/0"}},
		{`{"s":"x"}`, PatchOp{Op: "add", Path: "/s/a", Value: json.RawMessage(`1`)}},
		{`{}`, PatchOp{Op: "add", Path: "a", Value: json.RawMessage(`1`)}},
		{`{}`, PatchOp{Op: "add", Path: "/a"}},
	} {
		doc, _ := decodeGeneric([]byte(tc.doc))
		if _, err := ApplyPatch(doc, []PatchOp{tc.op}); err == nil {
			t.Errorf("%s %+v: no error", tc.doc, tc.op)
		}
	}
}

func TestReportString(t *testing.T) {
	for _, tc := range []struct {
		r    Report
		want string
	}{
		{Report{Injected: true, Native: true}, "injected (native sidecar)"},
		{Report{Injected: true, Warnings: []string{"w1", "w2"}}, "injected (sidecar container); warning: w1; warning: w2"},
		{Report{Skipped: "why"}, "skipped: why"},
	} {
		if got := tc.r.String(); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}

// TestControlPlaneAddresses: the proxy reaches the destination and identity
// Services of the configured control-plane namespace and cluster domain.
func TestControlPlaneAddresses(t *testing.T) {
	tests := []struct {
		name         string
		cfg          Config
		destination  string
		identityAddr string
	}{
		{"defaults", Config{}, "sluice-destination.sluice.svc.cluster.local:8086", "sluice-identity.sluice.svc.cluster.local:8080"},
		{"other namespace and domain", Config{ControlPlaneNamespace: "mesh", ClusterDomain: "corp.example"},
			"sluice-destination.mesh.svc.corp.example:8086", "sluice-identity.mesh.svc.corp.example:8080"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := Inject(readPod(t, "deployment.input.yaml"), shopEnabled, tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			var pc proxyConfig
			if err := json.Unmarshal([]byte(envValue(findContainer(t, got, ProxyContainerName), ConfigEnv)), &pc); err != nil {
				t.Fatal(err)
			}
			if pc.ControlPlane.Address != tc.destination || pc.ControlPlane.IdentityAddress != tc.identityAddr {
				t.Errorf("address %q identityAddress %q, want %q %q", pc.ControlPlane.Address, pc.ControlPlane.IdentityAddress, tc.destination, tc.identityAddr)
			}
			if !pc.Inbound.OriginalDst || pc.Inbound.App != "127.0.0.1:8080" {
				t.Errorf("inbound = %+v, want originalDst with app 127.0.0.1:8080", pc.Inbound)
			}
		})
	}
}

// TestEveryInboundPortServed: with originalDst no declared port bypasses
// the proxy, except those skip-inbound-ports names.
func TestEveryInboundPortServed(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "multi", Namespace: "shop"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "a", Ports: []corev1.ContainerPort{{ContainerPort: 8080}, {ContainerPort: 9090}}},
			{Name: "b", Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9187}}},
		}},
	}
	tests := []struct {
		name       string
		skip       string
		wantIgnore string // the init container's --inbound-ports-to-ignore; "" for none
	}{
		{"no skip", "", ""},
		{"skip by name", "metrics", "9187"},
		{"skip a range", "9000-9100", "9000-9100"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := pod.DeepCopy()
			if tc.skip != "" {
				p.Annotations = map[string]string{AnnotationSkipInboundPorts: tc.skip}
			}
			got, rep, err := Inject(p, shopEnabled, DefaultConfig())
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Warnings) != 0 {
				t.Errorf("warnings %q, want none", rep.Warnings)
			}
			ignore := ""
			for _, a := range findContainer(t, got, InitContainerName).Args {
				if v, ok := strings.CutPrefix(a, "--inbound-ports-to-ignore="); ok {
					ignore = v
				}
			}
			if ignore != tc.wantIgnore {
				t.Errorf("--inbound-ports-to-ignore=%q, want %q", ignore, tc.wantIgnore)
			}
		})
	}
}

func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// TestAppProbes: the containers' HTTP probes become the proxy's
// inbound.probes, by port number or name, path "/" by default, each once;
// probes the proxy never sees (skipped ports, HTTPS, another host) are left out.
func TestAppProbes(t *testing.T) {
	get := func(path string, port intstr.IntOrString) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: port}}}
	}
	tests := []struct {
		name       string
		containers []corev1.Container
		skip       string
		want       []proxyProbe
	}{
		{name: "named port", containers: []corev1.Container{{Name: "a",
			Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
			ReadinessProbe: get("/ready", intstr.FromString("http"))}},
			want: []proxyProbe{{Port: 8080, Path: "/ready"}}},
		{name: "numeric port", containers: []corev1.Container{{Name: "a",
			LivenessProbe: get("/live", intstr.FromInt32(9000))}},
			want: []proxyProbe{{Port: 9000, Path: "/live"}}},
		{name: "number as a string", containers: []corev1.Container{{Name: "a",
			LivenessProbe: get("/live", intstr.FromString("9000"))}},
			want: []proxyProbe{{Port: 9000, Path: "/live"}}},
		{name: "default path, no query, leading slash", containers: []corev1.Container{{Name: "a",
			LivenessProbe:  get("", intstr.FromInt32(8080)),
			ReadinessProbe: get("/ready?verbose=1", intstr.FromInt32(8080)),
			StartupProbe:   get("started", intstr.FromInt32(8080))}},
			want: []proxyProbe{{Port: 8080, Path: "/"}, {Port: 8080, Path: "/ready"}, {Port: 8080, Path: "/started"}}},
		{name: "each once, in container order", containers: []corev1.Container{
			{Name: "a", LivenessProbe: get("/healthz", intstr.FromInt32(8080)), ReadinessProbe: get("/healthz", intstr.FromInt32(8080))},
			{Name: "b", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 9090}}, ReadinessProbe: get("/healthz", intstr.FromString("http"))}},
			want: []proxyProbe{{Port: 8080, Path: "/healthz"}, {Port: 9090, Path: "/healthz"}}},
		{name: "skipped port", skip: "metrics,7000-7010", containers: []corev1.Container{{Name: "a",
			Ports:          []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9187}},
			LivenessProbe:  get("/metrics", intstr.FromString("metrics")),
			ReadinessProbe: get("/ready", intstr.FromInt32(7005)),
			StartupProbe:   get("/started", intstr.FromInt32(8080))}},
			want: []proxyProbe{{Port: 8080, Path: "/started"}}},
		{name: "not the proxy's", containers: []corev1.Container{{Name: "a",
			LivenessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(8443), Scheme: corev1.URISchemeHTTPS}}},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(80), Host: "example.com"}}},
			StartupProbe:   get("/", intstr.FromString("nope"))}}},
		{name: "exec and tcp probes", containers: []corev1.Container{{Name: "a",
			LivenessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "shop"}, Spec: corev1.PodSpec{Containers: tc.containers}}
			if tc.skip != "" {
				pod.Annotations = map[string]string{AnnotationSkipInboundPorts: tc.skip}
			}
			got, _, err := Inject(pod, shopEnabled, DefaultConfig())
			if err != nil {
				t.Fatal(err)
			}
			cfg := parseProxyConfig(t, envValue(findContainer(t, got, ProxyContainerName), ConfigEnv))
			var want []config.Probe
			for _, p := range tc.want {
				want = append(want, config.Probe{Port: p.Port, Path: p.Path})
			}
			if !slices.Equal(cfg.Inbound.Probes, want) {
				t.Errorf("inbound.probes = %v, want %v", cfg.Inbound.Probes, want)
			}
		})
	}
}
