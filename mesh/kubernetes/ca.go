package kubernetes

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/sluicehq/sluice/mesh/identity"
)

// Where the identity CA lives on a cluster, in the control plane's
// namespace.
const (
	// DefaultIssuerSecret is the Secret (kubernetes.io/tls) holding the
	// issuer certificate (tls.crt, then any intermediates) and key (tls.key).
	DefaultIssuerSecret = "sluice-identity-issuer"
	// DefaultTrustConfigMap is the ConfigMap holding the trust anchors
	// (ca.crt).
	DefaultTrustConfigMap = "sluice-identity-trust-roots"
	// TrustAnchorsKey is the ConfigMap key of the trust anchors, PEM.
	TrustAnchorsKey = "ca.crt"
)

// LoadCA reads the identity CA from the cluster: the trust anchors from
// the ConfigMap trustConfigMap (key ca.crt) and the issuer from the Secret
// issuerSecret (keys tls.crt and tls.key), both in namespace; empty names
// mean DefaultTrustConfigMap and DefaultIssuerSecret. The issuer must chain
// to an anchor and be valid now (see identity.NewCAFromPEM). Follow issuer
// rotations with WatchIssuerSecret.
func LoadCA(ctx context.Context, client clientset.Interface, namespace, issuerSecret, trustConfigMap string) (*identity.CA, error) {
	if issuerSecret == "" {
		issuerSecret = DefaultIssuerSecret
	}
	if trustConfigMap == "" {
		trustConfigMap = DefaultTrustConfigMap
	}
	cm, err := client.CoreV1().ConfigMaps(namespace).Get(ctx, trustConfigMap, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("load identity CA: trust anchors ConfigMap %s/%s: %w", namespace, trustConfigMap, err)
	}
	anchors := cm.Data[TrustAnchorsKey]
	if anchors == "" {
		return nil, fmt.Errorf("load identity CA: trust anchors ConfigMap %s/%s has no %s", namespace, trustConfigMap, TrustAnchorsKey)
	}
	sec, err := client.CoreV1().Secrets(namespace).Get(ctx, issuerSecret, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("load identity CA: issuer Secret %s/%s: %w", namespace, issuerSecret, err)
	}
	crt, key, err := issuerPEM(sec)
	if err != nil {
		return nil, fmt.Errorf("load identity CA: %w", err)
	}
	ca, err := identity.NewCAFromPEM([]byte(anchors), crt, key, nil)
	if err != nil {
		return nil, fmt.Errorf("load identity CA from ConfigMap %s/%s and Secret %s/%s: %w", namespace, trustConfigMap, namespace, issuerSecret, err)
	}
	return ca, nil
}

// issuerPEM returns the issuer certificate and key of an issuer Secret.
func issuerPEM(sec *corev1.Secret) (crt, key []byte, err error) {
	crt, key = sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey]
	if len(crt) == 0 || len(key) == 0 {
		return nil, nil, fmt.Errorf("issuer Secret %s/%s needs %s and %s", sec.Namespace, sec.Name, corev1.TLSCertKey, corev1.TLSPrivateKeyKey)
	}
	return crt, key, nil
}

// WatchIssuerSecret watches the issuer Secret (empty name:
// DefaultIssuerSecret) in namespace until ctx is done, and makes ca sign
// with the issuer it holds whenever it changes. After each change it calls
// onReload (if not nil) with nil, or with the reason the new issuer was
// rejected (it does not chain to the trust anchors, its key does not match,
// a key is missing, the Secret was deleted); a rejected issuer leaves the
// current one in use. It returns once its watch has stopped.
func WatchIssuerSecret(ctx context.Context, client clientset.Interface, namespace, issuerSecret string, ca *identity.CA, onReload func(error)) {
	if issuerSecret == "" {
		issuerSecret = DefaultIssuerSecret
	}
	if onReload == nil {
		onReload = func(error) {}
	}
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", issuerSecret).String()
		}))
	inf := factory.Core().V1().Secrets().Informer()
	update := func(obj any) {
		sec, ok := obj.(*corev1.Secret)
		if !ok || sec.Name != issuerSecret {
			return
		}
		crt, key, err := issuerPEM(sec)
		if err != nil {
			onReload(fmt.Errorf("reload issuer: %w", err))
			return
		}
		before := ca.Issuer()
		if err := ca.SetIssuerPEM(crt, key); err != nil {
			onReload(fmt.Errorf("reload issuer from Secret %s/%s: %w", namespace, issuerSecret, err))
			return
		}
		if ca.Issuer() != before {
			onReload(nil)
		}
	}
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    update,
		UpdateFunc: func(_, cur any) { update(cur) },
		DeleteFunc: func(any) {
			onReload(fmt.Errorf("reload issuer: Secret %s/%s was deleted; the current issuer stays in use", namespace, issuerSecret))
		},
	})
	if err != nil {
		onReload(errors.Join(errors.New("watch issuer Secret"), err))
		return
	}
	factory.Start(ctx.Done())
	<-ctx.Done()
	factory.Shutdown()
}
