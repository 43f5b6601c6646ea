package kubernetes

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientset "k8s.io/client-go/kubernetes"
	k8sfake "k8s.io/client-go/kubernetes/fake"

	"github.com/sluicehq/sluice/mesh/identity"
)

// testCA is a generated trust anchor and issuer, PEM.
type testCA struct {
	anchor, anchorKey, issuer, issuerKey []byte
}

func newTestCA(t testing.TB) testCA {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
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
	return testCA{read(identity.AnchorFile), read(identity.AnchorKeyFile), read(identity.IssuerFile), read(identity.IssuerKeyFile)}
}

// newIssuer signs a new issuer with the anchor's key.
func (c testCA) newIssuer(t testing.TB, name string) (crtPEM, keyPEM []byte) {
	t.Helper()
	ab, _ := pem.Decode(c.anchor)
	anchor, err := x509.ParseCertificate(ab.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := pem.Decode(c.anchorKey)
	anyKey, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		ecKey, err2 := x509.ParseECPrivateKey(kb.Bytes)
		if err2 != nil {
			t.Fatalf("anchor key: %v / %v", err, err2)
		}
		anyKey = ecKey
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(now.UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, anchor, &key.PublicKey, anyKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// caObjects are the ConfigMap and Secret LoadCA reads, in namespace sluice.
func caObjects(c testCA, crt, key []byte) (*corev1.ConfigMap, *corev1.Secret) {
	return &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: "sluice", Name: DefaultTrustConfigMap},
			Data:       map[string]string{TrustAnchorsKey: string(c.anchor)},
		}, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: "sluice", Name: DefaultIssuerSecret},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key},
		}
}

func TestLoadCA(t *testing.T) {
	c := newTestCA(t)
	other := newTestCA(t)
	cm, sec := caObjects(c, c.issuer, c.issuerKey)

	ca, err := LoadCA(context.Background(), k8sfake.NewClientset(cm, sec), "sluice", "", "")
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if string(ca.TrustAnchorPEM()) != string(c.anchor) {
		t.Error("the CA's anchors are not the ConfigMap's")
	}
	if cert, _ := pem.Decode(c.issuer); !ca.Issuer().Equal(mustParse(t, cert.Bytes)) {
		t.Error("the CA's issuer is not the Secret's")
	}

	noKey := sec.DeepCopy()
	delete(noKey.Data, corev1.TLSPrivateKeyKey)
	foreign := sec.DeepCopy()
	foreign.Data = map[string][]byte{corev1.TLSCertKey: other.issuer, corev1.TLSPrivateKeyKey: other.issuerKey}
	emptyCM := cm.DeepCopy()
	emptyCM.Data = nil
	tests := []struct {
		name string
		objs []*corev1.ConfigMap
		secs []*corev1.Secret
		want string
	}{
		{"no ConfigMap", nil, []*corev1.Secret{sec}, "trust anchors ConfigMap sluice/sluice-identity-trust-roots"},
		{"no anchors in the ConfigMap", []*corev1.ConfigMap{emptyCM}, []*corev1.Secret{sec}, "has no ca.crt"},
		{"no Secret", []*corev1.ConfigMap{cm}, nil, "issuer Secret sluice/sluice-identity-issuer"},
		{"no key", []*corev1.ConfigMap{cm}, []*corev1.Secret{noKey}, "needs tls.crt and tls.key"},
		{"issuer of another anchor", []*corev1.ConfigMap{cm}, []*corev1.Secret{foreign}, "does not verify against the trust anchors"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := k8sfake.NewClientset()
			for _, o := range tt.objs {
				client.Tracker().Add(o)
			}
			for _, o := range tt.secs {
				client.Tracker().Add(o)
			}
			_, err := LoadCA(context.Background(), client, "sluice", "", "")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("LoadCA: got %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

func mustParse(t testing.TB, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// reloads collects what WatchIssuerSecret reports.
type reloads struct {
	mu   sync.Mutex
	errs []error
	ch   chan struct{}
}

func newReloads() *reloads { return &reloads{ch: make(chan struct{}, 100)} }

func (r *reloads) report(err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
	r.ch <- struct{}{}
}

// next waits for the next report.
func (r *reloads) next(t testing.TB) error {
	t.Helper()
	select {
	case <-r.ch:
	case <-time.After(waitTimeout):
		t.Fatal("no reload reported")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.errs[len(r.errs)-1]
}

// watchIssuer runs WatchIssuerSecret until the test ends.
func watchIssuer(t *testing.T, client clientset.Interface, ca *identity.CA, r *reloads) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		WatchIssuerSecret(ctx, client, "sluice", "", ca, r.report)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func TestWatchIssuerSecret(t *testing.T) {
	c := newTestCA(t)
	cm, sec := caObjects(c, c.issuer, c.issuerKey)
	client := k8sfake.NewClientset(cm, sec)
	ctx := context.Background()
	ca, err := LoadCA(ctx, client, "sluice", "", "")
	if err != nil {
		t.Fatal(err)
	}
	first := ca.Issuer()
	r := newReloads()
	watchIssuer(t, client, ca, r)

	update := func(crt, key []byte) {
		t.Helper()
		s, err := client.CoreV1().Secrets("sluice").Get(ctx, DefaultIssuerSecret, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s.Data = map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key}
		if _, err := client.CoreV1().Secrets("sluice").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// A rotated issuer is used from then on.
	crt, key := c.newIssuer(t, "issuer-2")
	update(crt, key)
	if err := r.next(t); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if ca.Issuer() == first || ca.Issuer().Subject.CommonName != "issuer-2" {
		t.Fatalf("issuer after rotation = %q", ca.Issuer().Subject.CommonName)
	}

	// A bad issuer is reported and the current one stays.
	other := newTestCA(t)
	update(other.issuer, other.issuerKey)
	if err := r.next(t); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("reload of a foreign issuer: %v", err)
	}
	if ca.Issuer().Subject.CommonName != "issuer-2" {
		t.Fatalf("a rejected issuer replaced the current one: %q", ca.Issuer().Subject.CommonName)
	}

	// Deleting the Secret is reported; the issuer stays.
	if err := client.CoreV1().Secrets("sluice").Delete(ctx, DefaultIssuerSecret, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := r.next(t); err == nil || !strings.Contains(err.Error(), "was deleted") {
		t.Fatalf("deleting the Secret: %v", err)
	}
	if ca.Issuer().Subject.CommonName != "issuer-2" {
		t.Fatal("deleting the Secret replaced the issuer")
	}
}
