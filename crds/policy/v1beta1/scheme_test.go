package v1beta1

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

func TestAddToScheme(t *testing.T) {
	s := runtime.NewScheme()
	if err := AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"Server", "ServerList", "AuthorizationPolicy", "AuthorizationPolicyList",
		"MeshTLSAuthentication", "MeshTLSAuthenticationList", "NetworkAuthentication", "NetworkAuthenticationList"} {
		if !s.Recognizes(GroupVersion.WithKind(kind)) {
			t.Errorf("scheme does not recognize %s", GroupVersion.WithKind(kind))
		}
	}
	gvks, _, err := s.ObjectKinds(&Server{})
	if err != nil || len(gvks) != 1 || gvks[0].GroupVersion().String() != "policy.sluice.dev/v1beta1" {
		t.Errorf("ObjectKinds(Server) = %v, %v", gvks, err)
	}
	if got := Resource("servers").String(); got != "servers.policy.sluice.dev" {
		t.Errorf("Resource = %q", got)
	}
}

func TestDeepCopyIsDeep(t *testing.T) {
	n := &NetworkAuthentication{Spec: NetworkAuthenticationSpec{Networks: []Network{{CIDR: "10.0.0.0/8", Except: []string{"10.1.0.0/16"}}}}}
	c := n.DeepCopyObject().(*NetworkAuthentication)
	c.Spec.Networks[0].Except[0] = "10.2.0.0/16"
	if n.Spec.Networks[0].Except[0] != "10.1.0.0/16" {
		t.Error("DeepCopy shares the except slice")
	}
	s := &Server{Spec: ServerSpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}}
	sc := s.DeepCopy()
	sc.Spec.PodSelector.MatchLabels["app"] = "db"
	if s.Spec.PodSelector.MatchLabels["app"] != "web" {
		t.Error("DeepCopy shares the selector")
	}
}

// TestLinkerdManifest decodes a Linkerd manifest with only its apiVersion
// changed: field names and meanings are the contract.
func TestLinkerdManifest(t *testing.T) {
	const srv = `
apiVersion: policy.sluice.dev/v1beta1
kind: Server
metadata: {name: web-http, namespace: emojivoto}
spec:
  podSelector:
    matchLabels: {app: web-svc}
  port: http
  proxyProtocol: HTTP/1
  accessPolicy: cluster-authenticated
`
	var s Server
	if err := yaml.UnmarshalStrict([]byte(srv), &s); err != nil {
		t.Fatal(err)
	}
	want := ServerSpec{
		PodSelector:   metav1.LabelSelector{MatchLabels: map[string]string{"app": "web-svc"}},
		Port:          intstr.FromString("http"),
		ProxyProtocol: ProxyProtocolHTTP1,
		AccessPolicy:  ClusterAuthenticated,
	}
	if !reflect.DeepEqual(s.Spec, want) {
		t.Errorf("Server spec %+v, want %+v", s.Spec, want)
	}

	const ap = `
apiVersion: policy.sluice.dev/v1beta1
kind: AuthorizationPolicy
metadata: {name: web-authz, namespace: emojivoto}
spec:
  targetRef: {group: policy.sluice.dev, kind: Server, name: web-http}
  requiredAuthenticationRefs:
  - {name: web-authn, kind: MeshTLSAuthentication, group: policy.sluice.dev}
  - {name: cluster, kind: NetworkAuthentication, group: policy.sluice.dev, namespace: sluice}
`
	var p AuthorizationPolicy
	if err := yaml.UnmarshalStrict([]byte(ap), &p); err != nil {
		t.Fatal(err)
	}
	if err := p.Validate(); err != nil {
		t.Error(err)
	}
	if len(p.Spec.RequiredAuthenticationRefs) != 2 || !p.Spec.RequiredAuthenticationRefs[0].IsMeshTLS() || !p.Spec.RequiredAuthenticationRefs[1].IsNetwork() ||
		p.Spec.RequiredAuthenticationRefs[1].NamespaceOr("emojivoto") != "sluice" {
		t.Errorf("refs %+v", p.Spec.RequiredAuthenticationRefs)
	}

	const m = `
apiVersion: policy.sluice.dev/v1beta1
kind: MeshTLSAuthentication
metadata: {name: web-authn, namespace: emojivoto}
spec:
  identities: ["*.emojivoto.serviceaccount.identity.sluice.cluster.local"]
  identityRefs: []
`
	var mt MeshTLSAuthentication
	if err := yaml.UnmarshalStrict([]byte(m), &mt); err != nil {
		t.Fatal(err)
	}
	if err := mt.Validate(); err != nil {
		t.Error(err)
	}

	const n = `
apiVersion: policy.sluice.dev/v1beta1
kind: NetworkAuthentication
metadata: {name: cluster, namespace: sluice}
spec:
  networks:
  - cidr: 10.0.0.0/8
    except: [10.96.0.0/12]
  - cidr: 0.0.0.0/0
`
	var na NetworkAuthentication
	if err := yaml.UnmarshalStrict([]byte(n), &na); err != nil {
		t.Fatal(err)
	}
	if err := na.Validate(); err != nil {
		t.Error(err)
	}
}

// TestManifestsGenerated checks that crds/manifests holds a CRD for every
// kind, in this group, served and stored at v1beta1. Whether they are up to
// date is CI's regenerate-and-diff check.
func TestManifestsGenerated(t *testing.T) {
	for plural, kind := range map[string]string{
		"servers": "Server", "authorizationpolicies": "AuthorizationPolicy",
		"meshtlsauthentications": "MeshTLSAuthentication", "networkauthentications": "NetworkAuthentication",
	} {
		path := filepath.Join("..", "..", "manifests", GroupName+"_"+plural+".yaml")
		b, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%s: %v (run hack/generate-crds.sh)", kind, err)
			continue
		}
		var crd struct {
			Metadata struct{ Name string }
			Spec     struct {
				Group    string
				Names    struct{ Kind, Plural string }
				Scope    string
				Versions []struct {
					Name            string
					Served, Storage bool
				}
			}
		}
		if err := yaml.Unmarshal(b, &crd); err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if crd.Metadata.Name != plural+"."+GroupName || crd.Spec.Group != GroupName || crd.Spec.Names.Kind != kind ||
			crd.Spec.Scope != "Namespaced" || len(crd.Spec.Versions) != 1 || crd.Spec.Versions[0].Name != "v1beta1" ||
			!crd.Spec.Versions[0].Served || !crd.Spec.Versions[0].Storage {
			t.Errorf("%s: unexpected CRD %+v", path, crd)
		}
	}
}
