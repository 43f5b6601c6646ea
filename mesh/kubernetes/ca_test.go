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

// caReports collects what WatchCA reports.
type caReports struct {
	mu     sync.Mutex
	states []CAState
	ch     chan struct{}
}

func newCAReports() *caReports { return &caReports{ch: make(chan struct{}, 100)} }

func (r *caReports) report(s CAState) {
	r.mu.Lock()
	r.states = append(r.states, s)
	r.mu.Unlock()
	r.ch <- struct{}{}
}

// next waits for the next report.
func (r *caReports) next(t testing.TB) CAState {
	t.Helper()
	select {
	case <-r.ch:
	case <-time.After(waitTimeout):
		t.Fatal("WatchCA reported nothing")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.states[len(r.states)-1]
}

// until waits for a report that cond accepts, and returns it.
func (r *caReports) until(t testing.TB, what string, cond func(CAState) bool) CAState {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case <-r.ch:
		case <-deadline:
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("WatchCA did not report %s; reported %+v", what, r.states)
		}
		r.mu.Lock()
		last := r.states[len(r.states)-1]
		r.mu.Unlock()
		if cond(last) {
			return last
		}
	}
}

// watchCA runs WatchCA until the test ends.
func watchCA(t *testing.T, client clientset.Interface, ca *identity.CA, r *caReports) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		WatchCA(ctx, client, "sluice", "", "", ca, r.report)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// caUpdater rewrites the CA's ConfigMap and Secret through a client.
type caUpdater struct {
	t      testing.TB
	client clientset.Interface
}

func (u caUpdater) secret(crt, key []byte) {
	u.t.Helper()
	ctx := context.Background()
	s, err := u.client.CoreV1().Secrets("sluice").Get(ctx, DefaultIssuerSecret, metav1.GetOptions{})
	if err != nil {
		u.t.Fatal(err)
	}
	s.Data = map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key}
	if _, err := u.client.CoreV1().Secrets("sluice").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		u.t.Fatal(err)
	}
}

func (u caUpdater) anchors(bundle ...[]byte) {
	u.t.Helper()
	ctx := context.Background()
	cm, err := u.client.CoreV1().ConfigMaps("sluice").Get(ctx, DefaultTrustConfigMap, metav1.GetOptions{})
	if err != nil {
		u.t.Fatal(err)
	}
	var all []byte
	for _, b := range bundle {
		all = append(all, b...)
	}
	cm.Data = map[string]string{TrustAnchorsKey: string(all)}
	if _, err := u.client.CoreV1().ConfigMaps("sluice").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		u.t.Fatal(err)
	}
}

func TestWatchCAIssuerSecret(t *testing.T) {
	c := newTestCA(t)
	cm, sec := caObjects(c, c.issuer, c.issuerKey)
	client := k8sfake.NewClientset(cm, sec)
	ctx := context.Background()
	ca, err := LoadCA(ctx, client, "sluice", "", "")
	if err != nil {
		t.Fatal(err)
	}
	r := newCAReports()
	watchCA(t, client, ca, r)
	if s := r.next(t); s != (CAState{}) {
		t.Fatalf("first report of an unchanged CA: %+v", s)
	}
	u := caUpdater{t, client}

	// A rotated issuer is used from then on.
	crt, key := c.newIssuer(t, "issuer-2")
	u.secret(crt, key)
	if s := r.next(t); s.Unusable != nil || s.IssuerRejected != nil || !s.Reloaded {
		t.Fatalf("after rotating the issuer: %+v", s)
	}
	if ca.Issuer().Subject.CommonName != "issuer-2" {
		t.Fatalf("issuer after rotation = %q", ca.Issuer().Subject.CommonName)
	}

	// A bad issuer is reported and the current one stays.
	other := newTestCA(t)
	u.secret(other.issuer, other.issuerKey)
	if s := r.next(t); s.Unusable != nil || s.IssuerRejected == nil || !strings.Contains(s.IssuerRejected.Error(), "does not verify") {
		t.Fatalf("after a foreign issuer: %+v", s)
	}
	if ca.Issuer().Subject.CommonName != "issuer-2" {
		t.Fatalf("a rejected issuer replaced the current one: %q", ca.Issuer().Subject.CommonName)
	}

	// Deleting the Secret is reported; the issuer stays.
	if err := client.CoreV1().Secrets("sluice").Delete(ctx, DefaultIssuerSecret, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if s := r.next(t); s.IssuerRejected == nil || !strings.Contains(s.IssuerRejected.Error(), "does not exist") {
		t.Fatalf("after deleting the Secret: %+v", s)
	}
	if ca.Issuer().Subject.CommonName != "issuer-2" {
		t.Fatal("deleting the Secret replaced the issuer")
	}
}

// TestWatchCATrustAnchors rotates the trust anchors: old+new, then the new
// issuer, then the new anchor alone; and breaks them on the way.
func TestWatchCATrustAnchors(t *testing.T) {
	old, next, foreign := newTestCA(t), newTestCA(t), newTestCA(t)
	cm, sec := caObjects(old, old.issuer, old.issuerKey)
	client := k8sfake.NewClientset(cm, sec)
	ca, err := LoadCA(context.Background(), client, "sluice", "", "")
	if err != nil {
		t.Fatal(err)
	}
	r := newCAReports()
	watchCA(t, client, ca, r)
	r.next(t)
	u := caUpdater{t, client}

	// The new issuer comes first: rejected, its anchor is not trusted yet.
	u.secret(next.issuer, next.issuerKey)
	if s := r.next(t); s.Unusable != nil || s.IssuerRejected == nil {
		t.Fatalf("an issuer of an anchor not yet in the bundle: %+v", s)
	}
	// old+new: the waiting issuer is taken at once.
	u.anchors(old.anchor, next.anchor)
	if s := r.next(t); s.Unusable != nil || s.IssuerRejected != nil || !s.Reloaded {
		t.Fatalf("after adding the new anchor: %+v", s)
	}
	if string(ca.TrustAnchorPEM()) != string(old.anchor)+string(next.anchor) {
		t.Error("the CA's anchors are not the two-anchor bundle")
	}
	if cert, _ := pem.Decode(next.issuer); !ca.Issuer().Equal(mustParse(t, cert.Bytes)) {
		t.Error("the CA does not use the new issuer")
	}

	tests := []struct {
		name   string
		change func()
		want   string
	}{
		{"anchors the issuer does not chain to", func() { u.anchors(foreign.anchor) },
			`does not chain to any trust anchor of ConfigMap sluice/sluice-identity-trust-roots (key ca.crt)`},
		{"garbage anchors", func() { u.anchors([]byte("garbage")) },
			"trust anchors ConfigMap sluice/sluice-identity-trust-roots, key ca.crt: trust anchors: no PEM certificate found"},
		{"no anchors", func() { u.anchors() },
			"trust anchors ConfigMap sluice/sluice-identity-trust-roots has no ca.crt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := ca.Issuer()
			tt.change()
			s := r.next(t)
			if s.Unusable == nil || !strings.Contains(s.Unusable.Error(), tt.want) {
				t.Fatalf("got %+v; want Unusable saying %q", s, tt.want)
			}
			if ca.Issuer() != before || string(ca.TrustAnchorPEM()) != string(old.anchor)+string(next.anchor) {
				t.Error("unusable anchors changed the CA")
			}
			// Fixed: usable again.
			u.anchors(old.anchor, next.anchor)
			if s := r.next(t); s.Unusable != nil {
				t.Fatalf("after restoring the anchors: %+v", s)
			}
		})
	}

	// The old anchor goes.
	u.anchors(next.anchor)
	if s := r.next(t); s.Unusable != nil || !s.Reloaded || string(ca.TrustAnchorPEM()) != string(next.anchor) {
		t.Fatalf("after dropping the old anchor: %+v", s)
	}

	// The ConfigMap is deleted: unusable, saying so.
	if err := client.CoreV1().ConfigMaps("sluice").Delete(context.Background(), DefaultTrustConfigMap, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if s := r.next(t); s.Unusable == nil || !strings.Contains(s.Unusable.Error(), "ConfigMap sluice/sluice-identity-trust-roots does not exist") {
		t.Fatalf("after deleting the ConfigMap: %+v", s)
	}
}
