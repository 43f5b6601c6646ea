package injector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// informerResync is how often the informers replay their objects, so that
// a copy of the trust roots that drifted unnoticed is repaired.
const informerResync = 10 * time.Minute

// ServerOptions configure a Server.
type ServerOptions struct {
	// Config is the injection configuration; NewServer sets its
	// NativeSidecars from the API server's version.
	Config Config
	// Client talks to the API server: namespaces (get, list, watch) and
	// ConfigMaps (get, list, watch, create, update).
	Client kubernetes.Interface
	// CertFile and KeyFile are the serving certificate and its key (PEM),
	// reloaded when they change.
	CertFile, KeyFile string
	// CertPollInterval is how often the certificate files are read;
	// DefaultCertificatePollInterval when zero.
	CertPollInterval time.Duration
	// Metrics counts the webhook's decisions; nil counts nothing.
	Metrics *Metrics
	// Log receives the server's lines; nil discards them.
	Log *slog.Logger
}

// Server is `sluice injector`: the mutating admission webhook over HTTPS,
// with its certificate reloaded from files, the namespaces' annotations
// from an informer, and the trust roots published into meshed namespaces.
type Server struct {
	cfg          Config
	handler      *Handler
	certs        *CertificateFiles
	pollInterval time.Duration
	nsFactory    informers.SharedInformerFactory
	cmFactory    informers.SharedInformerFactory
	nsInformer   cache.SharedIndexInformer
	publisher    *TrustRootsPublisher
	log          *slog.Logger
}

// NewServer loads the serving certificate and asks the API server its
// version, to decide between native and classic sidecars. It starts
// nothing: Serve does.
func NewServer(opts ServerOptions) (*Server, error) {
	if opts.Client == nil {
		return nil, errors.New("injector: no Kubernetes client")
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	certs, err := LoadCertificateFiles(opts.CertFile, opts.KeyFile, log)
	if err != nil {
		return nil, fmt.Errorf("injector: %w", err)
	}
	v, err := opts.Client.Discovery().ServerVersion()
	if err != nil {
		return nil, fmt.Errorf("injector: asking the API server its version (for native sidecars): %w", err)
	}
	cfg := opts.Config.withDefaults()
	cfg.NativeSidecars = NativeSidecarsSupported(v.GitVersion)
	log.Info("sidecar mode chosen from the API server's version", "version", v.GitVersion, "nativeSidecars", cfg.NativeSidecars)

	s := &Server{
		cfg:          cfg,
		certs:        certs,
		pollInterval: opts.CertPollInterval,
		log:          log,
		nsFactory:    informers.NewSharedInformerFactory(opts.Client, informerResync),
		cmFactory: informers.NewSharedInformerFactoryWithOptions(opts.Client, informerResync,
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("metadata.name", TrustRootsConfigMap).String()
			})),
	}
	s.nsInformer = s.nsFactory.Core().V1().Namespaces().Informer()
	cmInformer := s.cmFactory.Core().V1().ConfigMaps().Informer()
	if s.publisher, err = NewTrustRootsPublisher(opts.Client, cfg.ControlPlaneNamespace, s.nsInformer, cmInformer, log); err != nil {
		return nil, fmt.Errorf("injector: %w", err)
	}
	nsLister := corelisters.NewNamespaceLister(s.nsInformer.GetIndexer())
	s.handler = &Handler{
		Config:   cfg,
		Log:      log,
		Metrics:  opts.Metrics,
		Injected: s.publisher.Publish,
		Namespace: func(ctx context.Context, name string) (*corev1.Namespace, error) {
			ns, err := nsLister.Get(name)
			if apierrors.IsNotFound(err) {
				// Created a moment ago, before the informer saw it.
				ns, err = opts.Client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
			}
			return ns, err
		},
	}
	return s, nil
}

// Config is the injection configuration in use, NativeSidecars included.
func (s *Server) Config() Config { return s.cfg }

// Handler is the webhook's handler, for tests and other servers.
func (s *Server) Handler() *Handler { return s.handler }

// Ready returns nil once the server can decide as it should: the serving
// certificate is loaded and the namespace and ConfigMap informers have
// synced. Otherwise it says what is missing.
func (s *Server) Ready() error {
	switch {
	case !s.certs.Loaded():
		return errors.New("no serving certificate loaded")
	case !s.nsInformer.HasSynced():
		return errors.New("the namespace informer has not synced")
	case !s.publisher.HasSynced():
		return errors.New("the trust roots ConfigMap informer has not synced")
	}
	return nil
}

// Run is Serve on a listener on addr.
func (s *Server) Run(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("injector: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves the webhook over TLS on ln (closing it when done), reloads
// the certificate, and publishes the trust roots, until ctx ends or the
// server fails. It returns once everything it started has stopped.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		s.nsFactory.Shutdown()
		s.cmFactory.Shutdown()
	}()
	s.nsFactory.Start(ctx.Done())
	s.cmFactory.Start(ctx.Done())
	wg.Go(func() { s.certs.Watch(ctx, s.pollInterval) })
	errc := make(chan error, 2)
	wg.Go(func() {
		if err := s.publisher.Run(ctx, 2); err != nil {
			errc <- err
			cancel()
		}
	})
	s.log.Info("injector starting", "controlPlaneNamespace", s.cfg.ControlPlaneNamespace,
		"proxyImage", imageRef(s.cfg.ProxyImage, s.cfg.ProxyVersion), "nativeSidecars", s.cfg.NativeSidecars)
	err := s.handler.ServeTLS(ctx, ln, s.certs.GetCertificate)
	select {
	case perr := <-errc:
		if err == nil {
			err = perr
		}
	default:
	}
	return err
}
