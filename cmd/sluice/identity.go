package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	clientset "k8s.io/client-go/kubernetes"

	"github.com/sluicehq/sluice/mesh/api/meshv1"
	"github.com/sluicehq/sluice/mesh/cptls"
	"github.com/sluicehq/sluice/mesh/identity"
	meshk8s "github.com/sluicehq/sluice/mesh/kubernetes"
)

// Retries of loading the CA: the first after caRetryMin, doubling up to
// caRetryMax.
const (
	caRetryMin = time.Second
	caRetryMax = 30 * time.Second
)

// identityOptions are the flags of `sluice identity`.
type identityOptions struct {
	roleOptions
	addr                  string
	controllerNamespace   string
	trustDomain           string
	issuerSecret          string
	trustAnchorsConfigMap string
	tokenAudience         string
}

func newIdentityCmd() *cobra.Command {
	o := &identityOptions{}
	cmd := &cobra.Command{
		Use:   "identity",
		Short: "Run the mesh's certificate authority on a Kubernetes cluster",
		Long: `Run Sluice's identity service: proxies present their projected
service-account token (audience identity.sluice.dev) and a CSR, the API server
reviews the token (TokenReview), and the service issues a certificate for the
identity <sa>.<ns>.serviceaccount.identity.<controller-namespace>.<trust-domain>
of that service account, signed by the issuer in the Secret --issuer-secret
(tls.crt, tls.key) and chaining to the trust anchors of the ConfigMap
--trust-anchors-configmap (ca.crt), both in --controller-namespace and both
reloaded when they change. While the anchors are missing or unparsable, or
the issuer does not chain to any of them, it is not ready and certifies
nothing, saying why. gRPC over TLS on --addr, with a certificate the
service issues itself for its own identity
sluice-identity.<controller-namespace>.serviceaccount.identity.<controller-namespace>.<trust-domain>
(renewed at 70 % of its lifetime and when the issuer changes), which proxies
verify against the trust anchors. /healthz, /readyz (the CA is loaded and
usable) and /metrics on --admin-addr.`,
		Example: `  sluice identity --controller-namespace sluice --trust-domain cluster.local`,
		Args:    cobra.NoArgs,
	}
	cmd.RunE = roleCommand("identity", &o.roleOptions, o.validate, func(ctx context.Context, logger *slog.Logger) error {
		return runIdentity(ctx, o, logger)
	})
	f := cmd.Flags()
	o.addFlags(f)
	f.StringVar(&o.addr, "addr", ":8080", "address of the gRPC Identity API")
	f.StringVar(&o.controllerNamespace, "controller-namespace", identity.DefaultControlNamespace, "namespace of the control plane: where the issuer Secret and trust anchors ConfigMap are, and part of every identity")
	f.StringVar(&o.trustDomain, "trust-domain", identity.DefaultTrustDomain, "trust domain of the mesh identities")
	f.StringVar(&o.issuerSecret, "issuer-secret", meshk8s.DefaultIssuerSecret, "Secret holding the issuer certificate and key (tls.crt, tls.key)")
	f.StringVar(&o.trustAnchorsConfigMap, "trust-anchors-configmap", meshk8s.DefaultTrustConfigMap, "ConfigMap holding the trust anchors (ca.crt)")
	f.StringVar(&o.tokenAudience, "token-audience", meshk8s.DefaultTokenAudience, "audience the proxies' service-account tokens must have")
	return cmd
}

// validate checks the flags.
func (o *identityOptions) validate() error {
	var errs []error
	if o.tokenAudience == "" {
		errs = append(errs, errors.New("--token-audience must not be empty"))
	}
	return errors.Join(append(errs,
		checkListenAddr("addr", o.addr),
		checkListenAddr("admin-addr", o.adminAddr),
		checkDNSLabel("controller-namespace", o.controllerNamespace),
		checkDNSName("trust-domain", o.trustDomain),
		checkDNSName("issuer-secret", o.issuerSecret),
		checkDNSName("trust-anchors-configmap", o.trustAnchorsConfigMap),
	)...)
}

// runIdentity runs the identity service until ctx ends. It serves at once;
// until the CA is loaded, Certify answers Unavailable and /readyz 503.
func runIdentity(ctx context.Context, o *identityOptions, logger *slog.Logger) error {
	if err := o.validate(); err != nil {
		return err
	}
	cfg, kube, err := roleClient(o.kubeconfig, o.kubeContext)
	if err != nil {
		return err
	}
	svc := &pendingIdentity{}
	svc.setNotReady(errors.New("the CA is not loaded yet"))
	auth := &meshk8s.TokenReviewAuthenticator{
		Client:           kube,
		Audience:         o.tokenAudience,
		ControlNamespace: o.controllerNamespace,
		TrustDomain:      o.trustDomain,
	}

	svc.name = identity.ControlPlaneName(identity.IdentityServiceAccount, o.controllerNamespace, o.trustDomain)

	reg := newRoleRegistry()
	// TLS with a certificate identity issues itself for its own service
	// account; proxies check it against their trust anchors and this name.
	// Clients need no certificate: Certify is how they get their first.
	tlsCfg := cptls.ServerTLSConfig(nil, svc.getCertificate)
	tlsCfg.ClientAuth = tls.NoClientCert
	creds := credentials.NewTLS(tlsCfg)
	srv := grpc.NewServer(append(newGRPCMetrics(reg).serverOptions(), grpc.Creds(creds))...)
	meshv1.RegisterIdentityServer(srv, svc)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)

	r := &role{
		name:     "identity",
		opts:     &o.roleOptions,
		addr:     o.addr,
		log:      logger,
		registry: reg,
		grpc:     srv,
		ready:    []readyCheck{svc.ready},
		tasks: []func(context.Context) error{func(ctx context.Context) error {
			ca := loadCAUntilDone(ctx, kube, o, svc, logger)
			if ca == nil {
				return nil // ctx done
			}
			if err := svc.set(ca, identity.NewServer(ca, auth, 0)); err != nil {
				return fmt.Errorf("identity: %w", err)
			}
			hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
			logger.InfoContext(ctx, "identity CA loaded; certifying", "issuer", ca.Issuer().Subject.String(),
				"issuerNotAfter", ca.Issuer().NotAfter)
			meshk8s.WatchCA(ctx, kube, o.controllerNamespace, o.issuerSecret, o.trustAnchorsConfigMap, ca, func(st meshk8s.CAState) {
				reportCAState(ctx, logger, ca, svc, st)
			})
			return nil
		}},
		beforeStop: hs.Shutdown,
	}
	logger.InfoContext(ctx, "starting the identity service", "apiserver", cfg.Host,
		"controllerNamespace", o.controllerNamespace, "trustDomain", o.trustDomain,
		"issuerSecret", o.issuerSecret, "trustAnchorsConfigMap", o.trustAnchorsConfigMap, "serverIdentity", svc.name)
	return r.serve(ctx)
}

// loadCAUntilDone loads the CA, retrying with backoff (and logging why,
// and recording it as svc's reason not to be ready) until it succeeds or
// ctx ends (nil).
func loadCAUntilDone(ctx context.Context, kube clientset.Interface, o *identityOptions, svc *pendingIdentity, logger *slog.Logger) *identity.CA {
	delay := caRetryMin
	for {
		ca, err := meshk8s.LoadCA(ctx, kube, o.controllerNamespace, o.issuerSecret, o.trustAnchorsConfigMap)
		if err == nil {
			return ca
		}
		if ctx.Err() != nil {
			return nil
		}
		if apierrors.IsNotFound(err) {
			err = fmt.Errorf("%w (`sluice install` creates the ConfigMap %s and the Secret %s in namespace %s)",
				err, o.trustAnchorsConfigMap, o.issuerSecret, o.controllerNamespace)
		}
		svc.setNotReady(err)
		logger.ErrorContext(ctx, "cannot load the identity CA; retrying", "error", err, "retryIn", delay)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, caRetryMax)
	}
}

// reportCAState logs what WatchCA found and makes svc unusable or usable
// accordingly.
func reportCAState(ctx context.Context, logger *slog.Logger, ca *identity.CA, svc *pendingIdentity, st meshk8s.CAState) {
	if st.IssuerRejected != nil {
		logger.ErrorContext(ctx, "the issuer Secret changed but cannot be used; the current issuer stays in use", "error", st.IssuerRejected)
	}
	if st.Unusable != nil {
		logger.ErrorContext(ctx, "the trust anchors cannot be used; not ready, certifying nothing until they are fixed", "error", st.Unusable)
	}
	if svc.setUnusable(st.Unusable) && st.Unusable == nil {
		logger.InfoContext(ctx, "the trust anchors are usable again; certifying")
	}
	if st.Reloaded {
		logger.InfoContext(ctx, "identity CA reloaded", "issuer", ca.Issuer().Subject.String(),
			"issuerNotAfter", ca.Issuer().NotAfter, "trustAnchors", bytes.Count(ca.TrustAnchorPEM(), []byte("-----BEGIN CERTIFICATE-----")))
	}
}

// pendingIdentity is the Identity API before and after the CA is loaded:
// until then every Certify fails with Unavailable (proxies retry), saying
// why.
type pendingIdentity struct {
	meshv1.UnimplementedIdentityServer

	srv atomic.Pointer[identity.Server]
	// name is the identity of the service's own TLS certificate.
	name string

	mu   sync.Mutex
	why  error
	ca   *identity.CA
	self *identity.SelfCertificate // issued from ca for name
	// unusable, once the CA is loaded, is why it must not issue now (its
	// trust anchors are broken), or nil.
	unusable error
}

// setUnusable records why the loaded CA must not issue (nil: it may) and
// reports whether that changed whether it may.
func (p *pendingIdentity) setUnusable(why error) (changed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	changed = (p.unusable == nil) != (why == nil)
	p.unusable = why
	return changed
}

// set makes srv, which issues from ca, answer from now on.
func (p *pendingIdentity) set(ca *identity.CA, srv *identity.Server) error {
	self, err := identity.NewSelfCertificate(ca, p.name, 0)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.ca = ca
	p.self = self
	p.mu.Unlock()
	p.srv.Store(srv)
	return nil
}

// getCertificate serves the identity service's own certificate once the CA
// is loaded (tls.Config.GetCertificate).
func (p *pendingIdentity) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	p.mu.Lock()
	self, why := p.self, p.why
	p.mu.Unlock()
	if self == nil {
		return nil, fmt.Errorf("no certificate for %s yet: identity CA: %v", p.name, why)
	}
	return self.GetCertificate(hello)
}

// setNotReady records why there is no server yet.
func (p *pendingIdentity) setNotReady(why error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.why = why
}

// ready is the role's readiness check: the CA is loaded, and its issuer
// is valid now.
func (p *pendingIdentity) ready() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.srv.Load() == nil {
		return fmt.Errorf("identity CA: %v", p.why)
	}
	if p.unusable != nil {
		return fmt.Errorf("identity CA: %v", p.unusable)
	}
	iss := p.ca.Issuer()
	if now := time.Now(); now.Before(iss.NotBefore) || now.After(iss.NotAfter) {
		return fmt.Errorf("identity CA: the issuer %q is valid from %s to %s, not now: rotate the Secret",
			iss.Subject.CommonName, iss.NotBefore.Format(time.RFC3339), iss.NotAfter.Format(time.RFC3339))
	}
	if err := p.self.Ready(); err != nil {
		return fmt.Errorf("identity's own TLS certificate: %w", err)
	}
	return nil
}

// Certify delegates to the server once there is one.
func (p *pendingIdentity) Certify(ctx context.Context, req *meshv1.CertifyRequest) (*meshv1.CertifyResponse, error) {
	srv := p.srv.Load()
	if srv == nil {
		p.mu.Lock()
		why := p.why
		p.mu.Unlock()
		return nil, status.Errorf(codes.Unavailable, "cannot certify %q yet: identity CA: %v", req.GetIdentity(), why)
	}
	p.mu.Lock()
	unusable := p.unusable
	p.mu.Unlock()
	if unusable != nil {
		return nil, status.Errorf(codes.Unavailable, "cannot certify %q now: identity CA: %v", req.GetIdentity(), unusable)
	}
	return srv.Certify(ctx, req)
}
