package kubernetes

import (
	"bytes"
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
// rotations of either with WatchCA.
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

// CAState is what WatchCA reports after each change of the trust anchors
// ConfigMap or the issuer Secret.
type CAState struct {
	// Unusable says why the CA must not issue now, naming the ConfigMap
	// and what is wrong with it: it or its ca.crt is missing, ca.crt is
	// not a bundle of PEM CA certificates, or the issuer in use does not
	// chain to any of its anchors. nil when the CA may issue.
	Unusable error
	// IssuerRejected says why the issuer of the Secret is not the one in
	// use (a key is missing, it does not chain to the anchors, the Secret
	// was deleted): the previous issuer stays. nil when it is in use.
	IssuerRejected error
	// Reloaded reports whether the anchors or the issuer in use changed.
	Reloaded bool
}

// WatchCA watches the trust anchors ConfigMap (empty name:
// DefaultTrustConfigMap; key ca.crt) and the issuer Secret (empty name:
// DefaultIssuerSecret; keys tls.crt and tls.key) in namespace until ctx is
// done, and keeps ca in step with both: after every change it makes ca use
// the Secret's issuer and the ConfigMap's anchors if the issuer chains to
// them, else the issuer in use with the new anchors if it chains to them.
// So a trust-anchor rotation works in any order: add the new anchor to the
// bundle (old+new), then rotate the issuer, then drop the old anchor; an
// issuer rejected because its anchor was not yet in the bundle is taken as
// soon as the bundle has it.
//
// After each change it calls report (if not nil) with the outcome; when
// the anchors cannot be used, ca is left as it was and report's Unusable
// says why. It returns once its watches have stopped.
func WatchCA(ctx context.Context, client clientset.Interface, namespace, issuerSecret, trustConfigMap string, ca *identity.CA, report func(CAState)) {
	if issuerSecret == "" {
		issuerSecret = DefaultIssuerSecret
	}
	if trustConfigMap == "" {
		trustConfigMap = DefaultTrustConfigMap
	}
	if report == nil {
		report = func(CAState) {}
	}
	changed := make(chan struct{}, 1)
	notify := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke(changed) },
		UpdateFunc: func(any, any) { poke(changed) },
		DeleteFunc: func(any) { poke(changed) },
	}
	named := func(name string) informers.SharedInformerOption {
		return informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		})
	}
	// One factory per object: each lists and watches only its own name,
	// which is all the role's RBAC allows.
	cmFactory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(namespace), named(trustConfigMap))
	secFactory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(namespace), named(issuerSecret))
	cms := cmFactory.Core().V1().ConfigMaps().Informer()
	secs := secFactory.Core().V1().Secrets().Informer()
	for _, inf := range []cache.SharedIndexInformer{cms, secs} {
		if _, err := inf.AddEventHandler(notify); err != nil {
			report(CAState{Unusable: fmt.Errorf("watch the identity CA's ConfigMap and Secret: %w", err)})
			return
		}
	}
	cmFactory.Start(ctx.Done())
	secFactory.Start(ctx.Done())
	defer cmFactory.Shutdown()
	defer secFactory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), cms.HasSynced, secs.HasSynced) {
		return // ctx done
	}
	w := caWatch{namespace: namespace, secret: issuerSecret, configMap: trustConfigMap, ca: ca}
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
		var cm *corev1.ConfigMap
		if obj, ok, _ := cms.GetStore().GetByKey(namespace + "/" + trustConfigMap); ok {
			cm, _ = obj.(*corev1.ConfigMap)
		}
		var sec *corev1.Secret
		if obj, ok, _ := secs.GetStore().GetByKey(namespace + "/" + issuerSecret); ok {
			sec, _ = obj.(*corev1.Secret)
		}
		report(w.apply(cm, sec))
	}
}

// poke signals ch without blocking: one pending signal is enough.
func poke(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// caWatch applies the ConfigMap and Secret WatchCA sees to its CA.
type caWatch struct {
	namespace, secret, configMap string
	ca                           *identity.CA
}

// apply makes the CA use the anchors of cm and the issuer of sec (either
// nil when it does not exist), as WatchCA describes.
func (w *caWatch) apply(cm *corev1.ConfigMap, sec *corev1.Secret) CAState {
	cmName := w.namespace + "/" + w.configMap
	if cm == nil {
		return CAState{Unusable: fmt.Errorf("trust anchors ConfigMap %s does not exist; create it with the PEM trust anchors in %s", cmName, TrustAnchorsKey)}
	}
	anchors := []byte(cm.Data[TrustAnchorsKey])
	if len(anchors) == 0 {
		return CAState{Unusable: fmt.Errorf("trust anchors ConfigMap %s has no %s: put the PEM trust anchors there", cmName, TrustAnchorsKey)}
	}
	beforeAnchors, beforeIssuer := w.ca.TrustAnchorPEM(), w.ca.Issuer()
	reloaded := func() bool {
		return !bytes.Equal(beforeAnchors, w.ca.TrustAnchorPEM()) || !beforeIssuer.Equal(w.ca.Issuer())
	}

	var rejected error
	if sec == nil {
		rejected = fmt.Errorf("issuer Secret %s/%s does not exist; the current issuer stays in use", w.namespace, w.secret)
	} else if crt, key, err := issuerPEM(sec); err != nil {
		rejected = err
	} else {
		err := w.ca.SetPEM(anchors, crt, key)
		if err == nil {
			return CAState{Reloaded: reloaded()}
		}
		if errors.Is(err, identity.ErrInvalidTrustAnchors) {
			return CAState{Unusable: fmt.Errorf("trust anchors ConfigMap %s, key %s: %w", cmName, TrustAnchorsKey, err)}
		}
		rejected = fmt.Errorf("issuer from Secret %s/%s with the anchors of ConfigMap %s: %w", w.namespace, w.secret, cmName, err)
	}
	// The Secret's issuer cannot be used: keep the one in use, with the
	// new anchors if it chains to them.
	if err := w.ca.SetTrustAnchorsPEM(anchors); err != nil {
		if errors.Is(err, identity.ErrInvalidTrustAnchors) {
			return CAState{Unusable: fmt.Errorf("trust anchors ConfigMap %s, key %s: %w", cmName, TrustAnchorsKey, err), IssuerRejected: rejected}
		}
		return CAState{
			Unusable: fmt.Errorf("the issuer %q does not chain to any trust anchor of ConfigMap %s (key %s): add its root to the bundle or rotate the issuer: %w",
				w.ca.Issuer().Subject.CommonName, cmName, TrustAnchorsKey, err),
			IssuerRejected: rejected,
		}
	}
	return CAState{IssuerRejected: rejected, Reloaded: reloaded()}
}
