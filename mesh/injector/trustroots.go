package injector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// Labels and annotations of the trust roots copies.
const (
	// LabelManagedBy is the well-known label naming the tool that manages
	// an object; ManagedBySluice is Sluice's value. A copy of the trust
	// roots whose label names another tool is left alone.
	LabelManagedBy  = "app.kubernetes.io/managed-by"
	ManagedBySluice = "sluice"
	// AnnotationTrustRootsSource, on a copy, names the ConfigMap it is
	// copied from ("<namespace>/<name>").
	AnnotationTrustRootsSource = "sluice.dev/copied-from"
)

// trustRootsMaxRetries bounds the retries of one namespace's copy; a later
// change of the source or of the namespace tries again.
const trustRootsMaxRetries = 10

// TrustRootsPublisher copies the trust anchors ConfigMap
// (TrustRootsConfigMap, key TrustRootsKey) from the control plane's
// namespace into every namespace where meshed pods run, since a pod can
// only mount a ConfigMap of its own namespace: the namespaces annotated
// sluice.dev/inject=enabled, the namespaces the webhook injected a pod in
// (Publish), and those already holding a copy that Sluice manages.
//
// A missing copy is created; a copy whose ca.crt differs from the source's
// is updated, keeping its other keys, labels and annotations. Copies are
// never deleted, and a copy labelled as managed by another tool is left
// alone. When the source changes, every copy follows.
type TrustRootsPublisher struct {
	client     kubernetes.Interface
	controlNS  string
	namespaces corelisters.NamespaceLister
	configMaps corelisters.ConfigMapLister
	synced     []cache.InformerSynced
	queue      workqueue.TypedRateLimitingInterface[string]
	log        *slog.Logger

	mu       sync.Mutex
	injected map[string]bool // namespaces Publish was called for
}

// NewTrustRootsPublisher returns a publisher for the control plane in
// controlNS. namespaces is an informer of all namespaces; configMaps one of
// the ConfigMaps named TrustRootsConfigMap in all namespaces (a field
// selector on metadata.name keeps it small). The caller starts both; Run
// waits for them. log nil discards the publisher's lines.
func NewTrustRootsPublisher(client kubernetes.Interface, controlNS string, namespaces, configMaps cache.SharedIndexInformer, log *slog.Logger) (*TrustRootsPublisher, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &TrustRootsPublisher{
		client:     client,
		controlNS:  controlNS,
		namespaces: corelisters.NewNamespaceLister(namespaces.GetIndexer()),
		configMaps: corelisters.NewConfigMapLister(configMaps.GetIndexer()),
		synced:     []cache.InformerSynced{namespaces.HasSynced, configMaps.HasSynced},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "sluice-trust-roots"}),
		log:      log.With("configmap", TrustRootsConfigMap),
		injected: map[string]bool{},
	}
	if _, err := namespaces.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { p.namespaceChanged(obj) },
		UpdateFunc: func(_, obj any) { p.namespaceChanged(obj) },
		DeleteFunc: func(obj any) { p.namespaceDeleted(obj) },
	}); err != nil {
		return nil, fmt.Errorf("trust roots: watching namespaces: %w", err)
	}
	if _, err := configMaps.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { p.configMapChanged(obj) },
		UpdateFunc: func(_, obj any) { p.configMapChanged(obj) },
		DeleteFunc: func(obj any) { p.configMapChanged(obj) },
	}); err != nil {
		return nil, fmt.Errorf("trust roots: watching ConfigMaps: %w", err)
	}
	return p, nil
}

// Publish makes sure namespace holds the trust roots, now and whenever they
// change. It does not block: the copy is made by Run's workers.
func (p *TrustRootsPublisher) Publish(namespace string) {
	if namespace == "" || namespace == p.controlNS {
		return
	}
	p.mu.Lock()
	p.injected[namespace] = true
	p.mu.Unlock()
	p.queue.Add(namespace)
}

// HasSynced reports whether the informers the publisher reads have synced.
func (p *TrustRootsPublisher) HasSynced() bool {
	for _, s := range p.synced {
		if !s() {
			return false
		}
	}
	return true
}

// Run copies the trust roots until ctx ends, with workers goroutines
// (at least one), once the informers have synced. It returns when its
// workers have stopped.
func (p *TrustRootsPublisher) Run(ctx context.Context, workers int) error {
	defer p.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), p.synced...) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("trust roots: the namespace and ConfigMap informers did not sync")
	}
	p.enqueueAll()
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Go(func() {
			for p.processNext(ctx) {
			}
		})
	}
	<-ctx.Done()
	p.queue.ShutDown()
	wg.Wait()
	return nil
}

func (p *TrustRootsPublisher) processNext(ctx context.Context) bool {
	ns, quit := p.queue.Get()
	if quit {
		return false
	}
	defer p.queue.Done(ns)
	err := p.sync(ctx, ns)
	switch {
	case err == nil:
		p.queue.Forget(ns)
	case p.queue.NumRequeues(ns) < trustRootsMaxRetries:
		p.log.Debug("trust roots not copied yet, retrying", "namespace", ns, "err", err)
		p.queue.AddRateLimited(ns)
	default:
		p.log.Error("trust roots not copied, giving up until the source or the namespace changes", "namespace", ns, "err", err)
		p.queue.Forget(ns)
	}
	return true
}

func (p *TrustRootsPublisher) namespaceChanged(obj any) {
	if ns, ok := obj.(*corev1.Namespace); ok && ns.Annotations[AnnotationInject] == InjectEnabled && ns.Name != p.controlNS {
		p.queue.Add(ns.Name)
	}
}

func (p *TrustRootsPublisher) namespaceDeleted(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	if ns, ok := obj.(*corev1.Namespace); ok {
		p.mu.Lock()
		delete(p.injected, ns.Name)
		p.mu.Unlock()
	}
}

func (p *TrustRootsPublisher) configMapChanged(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok || cm.Name != TrustRootsConfigMap {
		return
	}
	if cm.Namespace == p.controlNS {
		p.enqueueAll()
		return
	}
	p.queue.Add(cm.Namespace) // a copy changed or went: sync decides
}

// enqueueAll queues every namespace that should hold a copy.
func (p *TrustRootsPublisher) enqueueAll() {
	for ns := range p.targets() {
		p.queue.Add(ns)
	}
}

// targets are the namespaces that should hold a copy.
func (p *TrustRootsPublisher) targets() map[string]bool {
	p.mu.Lock()
	out := maps.Clone(p.injected)
	p.mu.Unlock()
	if nss, err := p.namespaces.List(labels.Everything()); err == nil {
		for _, ns := range nss {
			if ns.Annotations[AnnotationInject] == InjectEnabled {
				out[ns.Name] = true
			}
		}
	}
	if cms, err := p.configMaps.List(labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedBySluice})); err == nil {
		for _, cm := range cms {
			if cm.Name == TrustRootsConfigMap {
				out[cm.Namespace] = true
			}
		}
	}
	delete(out, p.controlNS)
	return out
}

// isTarget reports whether ns should hold a copy; existing is its copy, or nil.
func (p *TrustRootsPublisher) isTarget(ns string, existing *corev1.ConfigMap) bool {
	if ns == p.controlNS {
		return false
	}
	if existing != nil && existing.Labels[LabelManagedBy] == ManagedBySluice {
		return true
	}
	p.mu.Lock()
	injected := p.injected[ns]
	p.mu.Unlock()
	if injected {
		return true
	}
	n, err := p.namespaces.Get(ns)
	return err == nil && n.Annotations[AnnotationInject] == InjectEnabled
}

// sync makes namespace ns's copy match the source.
func (p *TrustRootsPublisher) sync(ctx context.Context, ns string) error {
	existing, err := p.configMaps.ConfigMaps(ns).Get(TrustRootsConfigMap)
	switch {
	case apierrors.IsNotFound(err):
		existing = nil
	case err != nil:
		return err
	}
	if !p.isTarget(ns, existing) {
		return nil
	}
	if n, err := p.namespaces.Get(ns); err == nil && n.Status.Phase == corev1.NamespaceTerminating {
		return nil
	}
	source, err := p.configMaps.ConfigMaps(p.controlNS).Get(TrustRootsConfigMap)
	if apierrors.IsNotFound(err) {
		p.log.Warn("no trust roots to publish: the control plane's ConfigMap is missing", "namespace", p.controlNS)
		return nil // its creation queues every namespace again
	}
	if err != nil {
		return err
	}
	roots, ok := source.Data[TrustRootsKey]
	if !ok {
		p.log.Warn("no trust roots to publish: the control plane's ConfigMap has no key "+TrustRootsKey, "namespace", p.controlNS)
		return nil
	}
	log := p.log.With("namespace", ns)
	sourceName := p.controlNS + "/" + TrustRootsConfigMap
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()

	if existing == nil {
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{
				Name:        TrustRootsConfigMap,
				Namespace:   ns,
				Labels:      map[string]string{LabelManagedBy: ManagedBySluice},
				Annotations: map[string]string{AnnotationTrustRootsSource: sourceName},
			},
			Data: map[string]string{TrustRootsKey: roots},
		}
		_, err := p.client.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{FieldManager: "sluice-injector"})
		switch {
		case err == nil:
			log.Info("trust roots published")
			return nil
		case apierrors.IsNotFound(err) || apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause):
			return nil // the namespace is gone or going
		default:
			return fmt.Errorf("creating ConfigMap %s/%s: %w", ns, TrustRootsConfigMap, err)
		}
	}

	if by, ok := existing.Labels[LabelManagedBy]; ok && by != ManagedBySluice {
		log.Debug("trust roots copy left alone: another tool manages it", LabelManagedBy, by)
		return nil
	}
	if existing.Data[TrustRootsKey] == roots && existing.Labels[LabelManagedBy] == ManagedBySluice {
		return nil
	}
	cm := existing.DeepCopy()
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[TrustRootsKey] = roots
	if cm.Labels == nil {
		cm.Labels = map[string]string{}
	}
	cm.Labels[LabelManagedBy] = ManagedBySluice
	if cm.Annotations == nil {
		cm.Annotations = map[string]string{}
	}
	cm.Annotations[AnnotationTrustRootsSource] = sourceName
	if _, err := p.client.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{FieldManager: "sluice-injector"}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil // deleted meanwhile: its deletion event queues it again
		}
		return fmt.Errorf("updating ConfigMap %s/%s: %w", ns, TrustRootsConfigMap, err)
	}
	log.Info("trust roots updated")
	return nil
}
