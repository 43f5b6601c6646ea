package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/sluicehq/sluice/mesh/api/certs"
	"github.com/sluicehq/sluice/mesh/api/meshv1"
	"github.com/sluicehq/sluice/mesh/cptls"
	"github.com/sluicehq/sluice/mesh/destination"
	"github.com/sluicehq/sluice/mesh/identity"
	"github.com/sluicehq/sluice/mesh/injector"
	meshk8s "github.com/sluicehq/sluice/mesh/kubernetes"
	"github.com/sluicehq/sluice/mesh/policy"
	"github.com/sluicehq/sluice/proxy/controlplane"
	proxypolicy "github.com/sluicehq/sluice/proxy/policy"
)

// destinationOptions are the flags of `sluice destination`.
type destinationOptions struct {
	roleOptions
	addr                 string
	controllerNamespace  string
	clusterDomain        string
	trustDomain          string
	defaultInboundPolicy string
	identityAddr         string
	identityTokenFile    string
	trustAnchorsFile     string
}

func newDestinationCmd() *cobra.Command {
	o := &destinationOptions{}
	cmd := &cobra.Command{
		Use:   "destination",
		Short: "Run the mesh's destination service on a Kubernetes cluster",
		Long: `Run Sluice's destination service: it watches Services, EndpointSlices, Pods,
HTTPRoutes, ReferenceGrants and the policy.sluice.dev kinds, and streams to
every proxy that asks the endpoints and compiled routes of the services it
talks to (Destination API) and the inbound policy of its own ports
(InboundPolicies API), both gRPC on --addr. It writes the parent status of
HTTPRoutes attached to Services (GAMMA) as sluice.dev/gateway-controller:
of several replicas, only the one holding the Lease sluice-destination-status
in --controller-namespace does (identity: $POD_NAME, else the host name);
every replica serves discovery.

The gRPC is mutual TLS: the service obtains its certificate, for
sluice-destination.<controller-namespace>.serviceaccount.identity.<controller-namespace>.<trust-domain>,
from the identity service at --identity-addr exactly as a proxy does (its
projected service-account token --identity-token-file, audience
identity.sluice.dev), verifies identity's certificate against
--trust-anchors-file, and answers only clients presenting a mesh certificate
that chains to those anchors. /healthz, /readyz (the caches are synced and
the service holds its certificate) and /metrics (sluice_destination_status_leader
is 1 on the status writer) are on --admin-addr.`,
		Example: `  sluice destination --controller-namespace sluice --trust-domain cluster.local`,
		Args:    cobra.NoArgs,
	}
	cmd.RunE = roleCommand("destination", &o.roleOptions, o.validate, func(ctx context.Context, logger *slog.Logger) error {
		return runDestination(ctx, o, logger)
	})
	f := cmd.Flags()
	o.addFlags(f)
	f.StringVar(&o.addr, "addr", ":8086", "address of the gRPC Destination and InboundPolicies APIs")
	f.StringVar(&o.controllerNamespace, "controller-namespace", identity.DefaultControlNamespace, "namespace of the control plane, part of every mesh identity")
	f.StringVar(&o.clusterDomain, "cluster-domain", "cluster.local", "the cluster's DNS domain, as in web.shop.svc.<cluster-domain>")
	f.StringVar(&o.trustDomain, "trust-domain", identity.DefaultTrustDomain, "trust domain of the mesh identities")
	f.StringVar(&o.identityAddr, "identity-addr", "", "host:port of the identity service (default sluice-identity.<controller-namespace>.svc.<cluster-domain>:8080)")
	f.StringVar(&o.identityTokenFile, "identity-token-file", injector.TokenPath, "projected service-account token (audience identity.sluice.dev) that proves this service's identity to the identity service; read at every renewal")
	f.StringVar(&o.trustAnchorsFile, "trust-anchors-file", injector.TrustRootsPath, "PEM trust anchors (the ConfigMap sluice-identity-trust-roots, key ca.crt) that identity's certificate and every client's must chain to")
	f.StringVar(&o.defaultInboundPolicy, "default-inbound-policy", proxypolicy.AllUnauthenticated,
		"inbound policy of ports no Server selects, unless their pod names one: all-unauthenticated, all-authenticated, cluster-unauthenticated, cluster-authenticated, deny or audit")
	return cmd
}

// validate checks the flags.
func (o *destinationOptions) validate() error {
	if _, err := proxypolicy.Default(o.defaultInboundPolicy, nil); err != nil {
		return fmt.Errorf("--default-inbound-policy: %w", err)
	}
	var errs []error
	if o.identityAddr != "" {
		if _, port, err := net.SplitHostPort(o.identityAddr); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("--identity-addr %q: want host:port (such as sluice-identity.sluice.svc.cluster.local:8080)", o.identityAddr))
		}
	}
	if o.identityTokenFile == "" {
		errs = append(errs, errors.New("--identity-token-file must not be empty"))
	}
	if o.trustAnchorsFile == "" {
		errs = append(errs, errors.New("--trust-anchors-file must not be empty"))
	}
	return errors.Join(append(errs,
		checkListenAddr("addr", o.addr),
		checkListenAddr("admin-addr", o.adminAddr),
		checkDNSLabel("controller-namespace", o.controllerNamespace),
		checkDNSName("cluster-domain", o.clusterDomain),
		checkDNSName("trust-domain", o.trustDomain),
	)...)
}

// identityAddress is --identity-addr, or the identity Service's address in
// the control-plane namespace.
func (o *destinationOptions) identityAddress() string {
	if o.identityAddr != "" {
		return o.identityAddr
	}
	return fmt.Sprintf("%s.%s.svc.%s:%d", injector.IdentityService, o.controllerNamespace, o.clusterDomain, injector.IdentityPort)
}

// destinationIdentity obtains and renews the destination service's own
// certificate from the identity service, as a proxy does. Close its
// connection when done.
type destinationIdentity struct {
	*controlplane.Identity
	addr  string
	conn  *grpc.ClientConn
	roots *x509.CertPool
}

// newDestinationIdentity reads the trust anchors and prepares the identity
// client; nothing is dialled until Run.
func newDestinationIdentity(o *destinationOptions, logger *slog.Logger) (*destinationIdentity, error) {
	anchors, err := os.ReadFile(o.trustAnchorsFile)
	if err != nil {
		return nil, fmt.Errorf("--trust-anchors-file: %w (mount the ConfigMap %s, key %s, there)", err, meshk8s.DefaultTrustConfigMap, meshk8s.TrustAnchorsKey)
	}
	roots, err := certs.ParseRoots(anchors)
	if err != nil {
		return nil, fmt.Errorf("--trust-anchors-file %s: %w", o.trustAnchorsFile, err)
	}
	addr := o.identityAddress()
	creds, err := controlplane.TransportCredentials(controlplane.TLSOptions{
		Service: "identity", Address: addr, Roots: roots,
		ServerName: identity.ControlPlaneName(identity.IdentityServiceAccount, o.controllerNamespace, o.trustDomain),
	})
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds), grpc.WithConnectParams(controlplane.ConnectParams()))
	if err != nil {
		return nil, fmt.Errorf("--identity-addr %s: %w", addr, err)
	}
	id, err := controlplane.NewIdentity(controlplane.IdentityOptions{
		Conn:            conn,
		Name:            identity.ControlPlaneName(identity.DestinationServiceAccount, o.controllerNamespace, o.trustDomain),
		Token:           func() ([]byte, error) { return os.ReadFile(o.identityTokenFile) },
		TrustAnchorsPEM: anchors,
		Logger:          logger,
	})
	if err != nil {
		conn.Close()
		return nil, err
	}
	return &destinationIdentity{Identity: id, addr: addr, conn: conn, roots: roots}, nil
}

// ready is a readiness check: the service holds an unexpired certificate.
func (d *destinationIdentity) ready() error {
	if ok, why := d.Identity.Ready(); !ok {
		return fmt.Errorf("no TLS certificate for %s from the identity service at %s: %s", d.Name(), d.addr, why)
	}
	return nil
}

// runDestination runs the destination service until ctx ends.
func runDestination(ctx context.Context, o *destinationOptions, logger *slog.Logger) error {
	if err := o.validate(); err != nil {
		return err
	}
	cfg, kube, err := roleClient(o.kubeconfig, o.kubeContext)
	if err != nil {
		return err
	}
	src, err := meshk8s.NewSourceForConfig(cfg, meshk8s.Options{
		ControlNamespace: o.controllerNamespace,
		TrustDomain:      o.trustDomain,
		ClusterDomain:    o.clusterDomain,
		Log:              logger,
	})
	if err != nil {
		return fmt.Errorf("destination: %w", err)
	}
	gw, err := gatewayclient.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("destination: gateway API client: %w", err)
	}
	replica, err := replicaName()
	if err != nil {
		return fmt.Errorf("destination: %w", err)
	}
	identityOf := func(sa, ns string) string {
		return identity.Name(sa, ns, o.controllerNamespace, o.trustDomain)
	}

	ident, err := newDestinationIdentity(o, logger)
	if err != nil {
		return fmt.Errorf("destination: %w", err)
	}
	defer ident.conn.Close()

	reg := newRoleRegistry()
	statusLeader := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sluice_destination_status_leader",
		Help: "1 while this replica holds the Lease sluice-destination-status and so writes HTTPRoute status, else 0.",
	})
	reg.MustRegister(statusLeader)
	// Mutual TLS: only meshed proxies, whose certificates chain to the
	// trust anchors, get routes, endpoints and policies.
	srv := grpc.NewServer(append(newGRPCMetrics(reg).serverOptions(),
		cptls.ServerOptions(ident.roots, ident.GetCertificate, cptls.MeshOnlyServices...)...)...)
	dst := destination.NewServer(src, logger)
	pol := policy.NewServer(src, o.defaultInboundPolicy, nil, identityOf, logger)
	hs := health.NewServer()
	meshv1.RegisterDestinationServer(srv, dst)
	meshv1.RegisterInboundPoliciesServer(srv, pol)
	healthpb.RegisterHealthServer(srv, hs)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)

	r := &role{
		name:     "destination",
		opts:     &o.roleOptions,
		addr:     o.addr,
		log:      logger,
		registry: reg,
		grpc:     srv,
		ready: []readyCheck{func() error {
			select {
			case <-src.Synced():
				return nil
			default:
				return errors.New("the Kubernetes caches are not synced yet")
			}
		}, ident.ready},
		tasks: []func(context.Context) error{
			src.Run,
			ident.Run,
			func(ctx context.Context) error {
				// One replica writes status; every replica serves.
				return meshk8s.RunAsLeader(ctx, meshk8s.LeaderElection{
					Client:    kube,
					Namespace: o.controllerNamespace,
					Name:      meshk8s.StatusLeaseName,
					Identity:  replica,
					OnLeading: func(leading bool) {
						if leading {
							statusLeader.Set(1)
						} else {
							statusLeader.Set(0)
						}
					},
					Log: logger,
				}, meshk8s.NewStatusWriter(src, gw, logger).Run)
			},
			func(ctx context.Context) error {
				if src.WaitForSync(ctx) == nil && ident.WaitCertified(ctx, "serving") == nil {
					hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
				}
				return nil
			},
		},
		beforeStop: func() {
			hs.Shutdown()
			dst.Close()
			pol.Close()
		},
	}
	logger.InfoContext(ctx, "starting the destination service", "apiserver", cfg.Host, "replica", replica,
		"controllerNamespace", o.controllerNamespace, "trustDomain", o.trustDomain, "clusterDomain", o.clusterDomain,
		"identityAddr", ident.addr, "serverIdentity", ident.Name())
	return r.serve(ctx)
}

// replicaName is this replica's name among the role's replicas, as leader
// election records it: $POD_NAME (the chart sets it from the pod's name),
// else the host name (a pod's, unless its spec sets another).
func replicaName() (string, error) {
	if name := os.Getenv("POD_NAME"); name != "" {
		return name, nil
	}
	name, err := os.Hostname()
	if err != nil || name == "" {
		return "", fmt.Errorf("this replica has no name for leader election: set $POD_NAME (host name: %v)", err)
	}
	return name, nil
}
