package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluicehq/sluice/mesh/api/meshv1"
	"github.com/sluicehq/sluice/mesh/identity"
	meshk8s "github.com/sluicehq/sluice/mesh/kubernetes"
)

// generatedCA is a trust anchor and an issuer it signed, PEM.
type generatedCA struct{ anchor, issuer, issuerKey []byte }

func generateCA(t *testing.T) generatedCA {
	t.Helper()
	dir := t.TempDir()
	if _, err := identity.LoadOrCreate(dir, "", nil); err != nil {
		t.Fatal(err)
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return generatedCA{read(identity.AnchorFile), read(identity.IssuerFile), read(identity.IssuerKeyFile)}
}

// testIdentityTrustAnchors runs `sluice identity` through a trust-anchor
// rotation: a bundle of two anchors keeps it issuing certificates that
// verify against the bundle; a bundle its issuer does not chain to makes it
// not ready, saying which ConfigMap is wrong and how, and refuse to
// certify; fixing the bundle makes it ready again.
func (rc *roleCluster) testIdentityTrustAnchors(t *testing.T) {
	const ctlNS, ns = "sluice-anchors", "anchors"
	ctx := context.Background()
	for _, n := range []string{ctlNS, ns} {
		rc.create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}})
	}
	rc.create(t, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}})
	old, next, foreign := generateCA(t), generateCA(t), generateCA(t)
	rc.create(t, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ctlNS, Name: meshk8s.DefaultTrustConfigMap},
		Data:       map[string]string{meshk8s.TrustAnchorsKey: string(old.anchor)},
	})
	rc.create(t, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ctlNS, Name: meshk8s.DefaultIssuerSecret},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: old.issuer, corev1.TLSPrivateKeyKey: old.issuerKey},
	})
	r := rc.startIdentityRole(t, ctlNS, "cluster.local", true)
	r.waitReady(t)
	// Identity serves TLS with a certificate from its issuer: trust both
	// anchors the test rotates through.
	idRoots := x509.NewCertPool()
	idRoots.AppendCertsFromPEM(old.anchor)
	idRoots.AppendCertsFromPEM(next.anchor)
	idName := identity.ControlPlaneName(identity.IdentityServiceAccount, ctlNS, "cluster.local")
	idc := meshv1.NewIdentityClient(dialTLS(t, "identity", r.addr, idName, idRoots, nil))
	webID := identity.Name("web", ns, ctlNS, "cluster.local")
	tr, err := rc.kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "web", &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: []string{meshk8s.DefaultTokenAudience}, ExpirationSeconds: new(int64(3600))},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	certify := func() (*meshv1.CertifyResponse, error) {
		return idc.Certify(ctx, &meshv1.CertifyRequest{Identity: webID, Token: []byte(tr.Status.Token), CertificateSigningRequest: csrFor(t, webID)})
	}
	// verifies checks that a certificate verifies against the anchors.
	verifies := func(resp *meshv1.CertifyResponse, anchors ...[]byte) error {
		roots, inter := x509.NewCertPool(), x509.NewCertPool()
		for _, a := range anchors {
			roots.AppendCertsFromPEM(a)
		}
		for _, der := range resp.GetIntermediateCertificates() {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return err
			}
			inter.AddCert(c)
		}
		leaf, err := x509.ParseCertificate(resp.GetLeafCertificate())
		if err != nil {
			return err
		}
		_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: webID, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		return err
	}
	setAnchors := func(bundle ...[]byte) {
		t.Helper()
		cm, err := rc.kube.CoreV1().ConfigMaps(ctlNS).Get(ctx, meshk8s.DefaultTrustConfigMap, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cm.Data[meshk8s.TrustAnchorsKey] = string(joinPEM(bundle...))
		if _, err := rc.kube.CoreV1().ConfigMaps(ctlNS).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setIssuer := func(crt, key []byte) {
		t.Helper()
		sec, err := rc.kube.CoreV1().Secrets(ctlNS).Get(ctx, meshk8s.DefaultIssuerSecret, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sec.Data = map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key}
		if _, err := rc.kube.CoreV1().Secrets(ctlNS).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	reloads := func() int { return strings.Count(r.logs.String(), "identity CA reloaded") }

	// The rotation: old+new anchors; it stays ready and keeps issuing.
	before := reloads()
	setAnchors(old.anchor, next.anchor)
	poll(t, "the two-anchor bundle to be loaded", func() (bool, string) { return reloads() > before, r.logs.String() })
	r.waitReady(t)
	resp, err := certify()
	if err != nil {
		t.Fatalf("Certify with the two-anchor bundle: %v", err)
	}
	if err := verifies(resp, old.anchor, next.anchor); err != nil {
		t.Errorf("a certificate issued with the two-anchor bundle does not verify against it: %v", err)
	}
	// The issuer of the new anchor: its certificates verify against the
	// new anchor alone.
	before = reloads()
	setIssuer(next.issuer, next.issuerKey)
	poll(t, "the new issuer to be loaded", func() (bool, string) { return reloads() > before, r.logs.String() })
	if resp, err = certify(); err != nil {
		t.Fatalf("Certify with the new issuer: %v", err)
	}
	if err := verifies(resp, next.anchor); err != nil {
		t.Errorf("a certificate of the new issuer does not verify against the new anchor: %v", err)
	}

	// A bundle the issuer does not chain to: not ready, saying so.
	setAnchors(foreign.anchor)
	want := "does not chain to any trust anchor of ConfigMap " + ctlNS + "/" + meshk8s.DefaultTrustConfigMap
	poll(t, "/readyz to report the foreign bundle", func() (bool, string) {
		code, body, err := r.get("/readyz")
		return err == nil && code == http.StatusServiceUnavailable && strings.Contains(body, want), fmt.Sprintf("%d %q %v", code, body, err)
	})
	if _, err := certify(); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), want) {
		t.Errorf("Certify with a bundle the issuer does not chain to: %v; want Unavailable saying %q", err, want)
	}
	// An unparsable bundle: not ready, saying so.
	setAnchors([]byte("not PEM"))
	want = "trust anchors ConfigMap " + ctlNS + "/" + meshk8s.DefaultTrustConfigMap + ", key ca.crt: trust anchors: no PEM certificate found"
	poll(t, "/readyz to report the unparsable bundle", func() (bool, string) {
		code, body, err := r.get("/readyz")
		return err == nil && code == http.StatusServiceUnavailable && strings.Contains(body, want), fmt.Sprintf("%d %q %v", code, body, err)
	})

	// Fixed: ready again, issuing.
	setAnchors(next.anchor)
	r.waitReady(t)
	if resp, err = certify(); err != nil {
		t.Fatalf("Certify after fixing the bundle: %v", err)
	}
	if err := verifies(resp, next.anchor); err != nil {
		t.Errorf("a certificate issued after the fix does not verify: %v", err)
	}
}

// joinPEM concatenates PEM bundles.
func joinPEM(bundles ...[]byte) []byte {
	var out []byte
	for _, b := range bundles {
		out = append(out, b...)
	}
	return out
}
