package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	"github.com/sluicehq/sluice/crds/policy/v1beta1"
	"github.com/sluicehq/sluice/mesh/identity"
	"github.com/sluicehq/sluice/routing"
)

// DefaultDebounce is how long Source waits after a change before it wakes
// its watchers, so that a burst of events (a rollout, a resync) wakes them
// once.
const DefaultDebounce = 20 * time.Millisecond

// Options configure a Source.
type Options struct {
	// ControlNamespace and TrustDomain name mesh identities (see
	// identity.Name); empty means identity's defaults.
	ControlNamespace string
	TrustDomain      string
	// ClusterDomain is the cluster's DNS domain, for authorities such as
	// web.shop.svc.<ClusterDomain>:80 (empty: cluster.local).
	ClusterDomain string
	// Debounce delays the change broadcast after an event (0: DefaultDebounce).
	Debounce time.Duration
	// Log receives informer errors and progress (nil: slog.Default()).
	Log *slog.Logger
}

// The policy kinds, watched through the dynamic client.
var (
	serversResource       = v1beta1.GroupVersion.WithResource("servers")
	authzPoliciesResource = v1beta1.GroupVersion.WithResource("authorizationpolicies")
	meshTLSResource       = v1beta1.GroupVersion.WithResource("meshtlsauthentications")
	networkAuthnResource  = v1beta1.GroupVersion.WithResource("networkauthentications")
)

// Index names of the informers' indexers.
const (
	// indexClusterIP indexes Services by cluster IP.
	indexClusterIP = "clusterIP"
	// indexService indexes EndpointSlices by "namespace/service".
	indexService = "service"
	// indexParent indexes HTTPRoutes by the "namespace/name" of every
	// Service their parentRefs name.
	indexParent = "parentService"
	// indexPodIP indexes Pods by their IPs, but for pods on the host's
	// network (whose IP is the node's) and pods that have finished.
	indexPodIP = "podIP"
)

// Source is the Kubernetes discovery and policy source: informers on
// Services, EndpointSlices, Pods, HTTPRoutes, ReferenceGrants and the policy
// kinds, read on demand. It implements destination.Source and
// policy.PolicySource. Create it with NewSource, start it with Run, and wait
// for WaitForSync before trusting its answers: until then it answers from
// partial caches.
type Source struct {
	opts Options
	log  *slog.Logger

	kubeInformers    informers.SharedInformerFactory
	gatewayInformers gatewayinformers.SharedInformerFactory
	dynamicInformers dynamicinformer.DynamicSharedInformerFactory

	services, endpointSlices, pods, routes, grants       cache.SharedIndexInformer
	servers, authzPolicies, meshTLSAuthns, networkAuthns cache.SharedIndexInformer

	// poke is signalled (without blocking) by every relevant event.
	poke    chan struct{}
	synced  chan struct{}
	running atomic.Bool

	mu      sync.Mutex
	changed chan struct{}
}

// NewSourceForConfig returns a Source talking to the API server of cfg.
func NewSourceForConfig(cfg *rest.Config, opts Options) (*Source, error) {
	kube, err := clientset.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	gw, err := gatewayclient.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("gateway API client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	return NewSource(kube, gw, dyn, opts)
}

// NewSource returns a Source reading Kubernetes objects through kube, Gateway
// API objects through gw and the policy kinds through dyn. Nothing is watched
// until Run.
func NewSource(kube clientset.Interface, gw gatewayclient.Interface, dyn dynamic.Interface, opts Options) (*Source, error) {
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	if opts.ClusterDomain == "" {
		opts.ClusterDomain = "cluster.local"
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	s := &Source{
		opts:    opts,
		log:     log.With("component", "kubernetes-source"),
		poke:    make(chan struct{}, 1),
		synced:  make(chan struct{}),
		changed: make(chan struct{}),
	}
	s.kubeInformers = informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithTransform(trimObject))
	s.gatewayInformers = gatewayinformers.NewSharedInformerFactoryWithOptions(gw, 0, gatewayinformers.WithTransform(trimObject))
	s.dynamicInformers = dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0)

	s.services = s.kubeInformers.Core().V1().Services().Informer()
	s.endpointSlices = s.kubeInformers.Discovery().V1().EndpointSlices().Informer()
	s.pods = s.kubeInformers.Core().V1().Pods().Informer()
	s.routes = s.gatewayInformers.Gateway().V1().HTTPRoutes().Informer()
	s.grants = s.gatewayInformers.Gateway().V1().ReferenceGrants().Informer()
	s.servers = s.policyInformer(serversResource, func() runtime.Object { return &v1beta1.Server{} })
	s.authzPolicies = s.policyInformer(authzPoliciesResource, func() runtime.Object { return &v1beta1.AuthorizationPolicy{} })
	s.meshTLSAuthns = s.policyInformer(meshTLSResource, func() runtime.Object { return &v1beta1.MeshTLSAuthentication{} })
	s.networkAuthns = s.policyInformer(networkAuthnResource, func() runtime.Object { return &v1beta1.NetworkAuthentication{} })

	var errs []error
	errs = append(errs,
		s.services.AddIndexers(cache.Indexers{indexClusterIP: clusterIPIndex}),
		s.endpointSlices.AddIndexers(cache.Indexers{indexService: sliceServiceIndex}),
		s.routes.AddIndexers(cache.Indexers{indexParent: routeParentIndex}),
		s.pods.AddIndexers(cache.Indexers{indexPodIP: podIPIndex}),
	)
	watch := func(name string, inf cache.SharedIndexInformer, relevant func(old, cur any) bool) {
		_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { s.notify() },
			UpdateFunc: func(old, cur any) {
				if relevant(old, cur) {
					s.notify()
				}
			},
			DeleteFunc: func(any) { s.notify() },
		})
		errs = append(errs, err)
		errs = append(errs, inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, _ *cache.Reflector, err error) {
			if !errors.Is(err, context.Canceled) {
				s.log.WarnContext(ctx, "watch failed; retrying", "resource", name, "error", err)
			}
		}))
	}
	watch("services", s.services, serviceChanged)
	watch("endpointslices", s.endpointSlices, sliceChanged)
	watch("pods", s.pods, podChanged)
	watch("httproutes", s.routes, routeChanged)
	watch("referencegrants", s.grants, grantChanged)
	for _, p := range []struct {
		name string
		inf  cache.SharedIndexInformer
	}{
		{serversResource.Resource, s.servers},
		{authzPoliciesResource.Resource, s.authzPolicies},
		{meshTLSResource.Resource, s.meshTLSAuthns},
		{networkAuthnResource.Resource, s.networkAuthns},
	} {
		watch(p.name, p.inf, policyChanged)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("kubernetes source: set up informers: %w", err)
	}
	return s, nil
}

// policyInformer returns the informer of a policy kind, whose store holds
// typed objects (converted from the dynamic client's unstructured ones).
func (s *Source) policyInformer(gvr schema.GroupVersionResource, newObj func() runtime.Object) cache.SharedIndexInformer {
	inf := s.dynamicInformers.ForResource(gvr).Informer()
	// SetTransform fails only once the informer has started.
	_ = inf.SetTransform(func(obj any) (any, error) {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return obj, nil // already converted, or a tombstone
		}
		out := newObj()
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.UnstructuredContent(), out); err != nil {
			return nil, fmt.Errorf("convert %s %s/%s: %w", gvr.Resource, u.GetNamespace(), u.GetName(), err)
		}
		return trimObject(out)
	})
	return inf
}

// Run watches the API server until ctx is done, then stops every informer
// and returns once they have stopped. It may be called once.
func (s *Source) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("kubernetes source: Run called twice")
	}
	s.kubeInformers.Start(ctx.Done())
	s.gatewayInformers.Start(ctx.Done())
	s.dynamicInformers.Start(ctx.Done())
	defer func() {
		s.kubeInformers.Shutdown()
		s.gatewayInformers.Shutdown()
		s.dynamicInformers.Shutdown()
	}()

	start := time.Now()
	if !cache.WaitForCacheSync(ctx.Done(),
		s.services.HasSynced, s.endpointSlices.HasSynced, s.pods.HasSynced,
		s.routes.HasSynced, s.grants.HasSynced,
		s.servers.HasSynced, s.authzPolicies.HasSynced, s.meshTLSAuthns.HasSynced, s.networkAuthns.HasSynced) {
		return nil // ctx done first
	}
	s.log.InfoContext(ctx, "caches synced", "after", time.Since(start).Round(time.Millisecond))
	close(s.synced)
	s.broadcast()

	var fire <-chan time.Time
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.poke:
			// Wake watchers one debounce after the first event of a burst;
			// later events of the burst ride along.
			if fire == nil {
				timer = time.NewTimer(s.opts.Debounce)
				fire = timer.C
			}
		case <-fire:
			fire = nil
			s.broadcast()
		}
	}
}

// Synced returns a channel closed once every informer has listed its
// objects.
func (s *Source) Synced() <-chan struct{} { return s.synced }

// WaitForSync waits until every informer has listed its objects, or ctx is
// done (its error).
func (s *Source) WaitForSync(ctx context.Context) error {
	select {
	case <-s.synced:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("kubernetes source: waiting for caches to sync: %w", ctx.Err())
	}
}

// Changed returns a channel that is closed at the next change of anything
// the source answers from (a broadcast; call again after it fires, and
// before reading, so that no change is missed). Changes are debounced: a
// burst of events closes it once.
func (s *Source) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// notify records that something changed.
func (s *Source) notify() {
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// broadcast wakes every watcher.
func (s *Source) broadcast() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.changed)
	s.changed = make(chan struct{})
}

// identityOf returns the mesh identity of a service account.
func (s *Source) identityOf(serviceAccount, namespace string) string {
	if serviceAccount == "" {
		serviceAccount = "default"
	}
	return identity.Name(serviceAccount, namespace, s.opts.ControlNamespace, s.opts.TrustDomain)
}

// trimObject drops what the source never reads from a cached object, to
// keep the caches small: managed fields everywhere, and most of a Pod.
// It is idempotent, as informer transforms must be.
func trimObject(obj any) (any, error) {
	if m, ok := obj.(interface {
		SetManagedFields([]metav1.ManagedFieldsEntry)
	}); ok {
		m.SetManagedFields(nil)
	}
	if pod, ok := obj.(*corev1.Pod); ok {
		trimPod(pod)
	}
	return obj, nil
}

// trimPod keeps of a Pod what endpoints and policy need: metadata, the
// service account, container names and ports, whether it is on the host's
// network, its phase and its IPs.
func trimPod(pod *corev1.Pod) {
	trim := func(cs []corev1.Container) []corev1.Container {
		out := make([]corev1.Container, len(cs))
		for i, c := range cs {
			out[i] = corev1.Container{Name: c.Name, Ports: c.Ports, RestartPolicy: c.RestartPolicy}
		}
		return out
	}
	pod.Spec = corev1.PodSpec{
		ServiceAccountName: pod.Spec.ServiceAccountName,
		HostNetwork:        pod.Spec.HostNetwork,
		Containers:         trim(pod.Spec.Containers),
		InitContainers:     trim(pod.Spec.InitContainers),
	}
	pod.Status = corev1.PodStatus{Phase: pod.Status.Phase, PodIP: pod.Status.PodIP, PodIPs: pod.Status.PodIPs}
}

// Event filters: an update wakes watchers only if it changes something the
// source reads (status writes and resyncs do not).

func serviceChanged(old, cur any) bool {
	o, ok1 := old.(*corev1.Service)
	c, ok2 := cur.(*corev1.Service)
	return !ok1 || !ok2 || !equality.Semantic.DeepEqual(o.Spec, c.Spec) ||
		!equality.Semantic.DeepEqual(o.Labels, c.Labels)
}

func sliceChanged(old, cur any) bool {
	o, ok1 := old.(*discoveryv1.EndpointSlice)
	c, ok2 := cur.(*discoveryv1.EndpointSlice)
	return !ok1 || !ok2 || o.AddressType != c.AddressType ||
		!equality.Semantic.DeepEqual(o.Endpoints, c.Endpoints) ||
		!equality.Semantic.DeepEqual(o.Ports, c.Ports) ||
		!equality.Semantic.DeepEqual(o.Labels, c.Labels)
}

func podChanged(old, cur any) bool {
	o, ok1 := old.(*corev1.Pod)
	c, ok2 := cur.(*corev1.Pod)
	return !ok1 || !ok2 ||
		!equality.Semantic.DeepEqual(o.Labels, c.Labels) ||
		!equality.Semantic.DeepEqual(o.Annotations, c.Annotations) ||
		!equality.Semantic.DeepEqual(o.OwnerReferences, c.OwnerReferences) ||
		!equality.Semantic.DeepEqual(o.Spec, c.Spec) ||
		!equality.Semantic.DeepEqual(o.Status, c.Status)
}

func routeChanged(old, cur any) bool {
	o, ok1 := old.(*gatewayv1.HTTPRoute)
	c, ok2 := cur.(*gatewayv1.HTTPRoute)
	return !ok1 || !ok2 || !equality.Semantic.DeepEqual(o.Spec, c.Spec) ||
		!equality.Semantic.DeepEqual(o.Annotations, c.Annotations) ||
		!o.CreationTimestamp.Equal(&c.CreationTimestamp)
}

func grantChanged(old, cur any) bool {
	o, ok1 := old.(*gatewayv1.ReferenceGrant)
	c, ok2 := cur.(*gatewayv1.ReferenceGrant)
	return !ok1 || !ok2 || !equality.Semantic.DeepEqual(o.Spec, c.Spec)
}

func policyChanged(old, cur any) bool {
	o, ok1 := old.(runtime.Object)
	c, ok2 := cur.(runtime.Object)
	return !ok1 || !ok2 || !equality.Semantic.DeepEqual(withoutVersion(o), withoutVersion(c))
}

// withoutVersion returns a copy of obj with its resourceVersion cleared.
func withoutVersion(obj runtime.Object) runtime.Object {
	c := obj.DeepCopyObject()
	if m, ok := c.(interface{ SetResourceVersion(string) }); ok {
		m.SetResourceVersion("")
	}
	return c
}

// Indexers.

func clusterIPIndex(obj any) ([]string, error) {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return nil, nil
	}
	return routing.ClusterIPsOf(svc), nil
}

func sliceServiceIndex(obj any) ([]string, error) {
	es, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	name := es.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return nil, nil
	}
	return []string{es.Namespace + "/" + name}, nil
}

func podIPIndex(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.Spec.HostNetwork || podFinished(pod) {
		return nil, nil
	}
	var out []string
	add := func(s string) {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return
		}
		if a := ip.Unmap().String(); !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	add(pod.Status.PodIP)
	for _, ip := range pod.Status.PodIPs {
		add(ip.IP)
	}
	return out, nil
}

// podFinished reports whether all of a pod's containers have terminated for
// good: its IP is free to be given to another pod.
func podFinished(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

func routeParentIndex(obj any) ([]string, error) {
	rt, ok := obj.(*gatewayv1.HTTPRoute)
	if !ok {
		return nil, nil
	}
	var out []string
	seen := map[string]bool{}
	for _, pr := range rt.Spec.ParentRefs {
		if !isServiceParent(pr) {
			continue
		}
		k := parentNamespace(pr, rt.Namespace) + "/" + string(pr.Name)
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out, nil
}

// isServiceParent reports whether a parentRef names a Service (GAMMA: group
// "" or "core", kind Service).
func isServiceParent(pr gatewayv1.ParentReference) bool {
	return pr.Group != nil && isCoreGroup(string(*pr.Group)) && pr.Kind != nil && *pr.Kind == "Service"
}

// isCoreGroup reports whether a group names the core API group.
func isCoreGroup(g string) bool { return g == "" || g == "core" }

// parentNamespace is the namespace a parentRef names (default: the route's).
func parentNamespace(pr gatewayv1.ParentReference, routeNamespace string) string {
	if pr.Namespace != nil && *pr.Namespace != "" {
		return string(*pr.Namespace)
	}
	return routeNamespace
}
