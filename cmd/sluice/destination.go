package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/sluicehq/sluice/mesh/api/meshv1"
	"github.com/sluicehq/sluice/mesh/destination"
	"github.com/sluicehq/sluice/mesh/identity"
	meshk8s "github.com/sluicehq/sluice/mesh/kubernetes"
	"github.com/sluicehq/sluice/mesh/policy"
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
every replica serves discovery. /healthz, /readyz (the caches are synced) and
/metrics (sluice_destination_status_leader is 1 on the status writer) are on
--admin-addr.`,
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
	f.StringVar(&o.defaultInboundPolicy, "default-inbound-policy", proxypolicy.AllUnauthenticated,
		"inbound policy of ports no Server selects, unless their pod names one: all-unauthenticated, all-authenticated, cluster-unauthenticated, cluster-authenticated, deny or audit")
	return cmd
}

// validate checks the flags.
func (o *destinationOptions) validate() error {
	if _, err := proxypolicy.Default(o.defaultInboundPolicy, nil); err != nil {
		return fmt.Errorf("--default-inbound-policy: %w", err)
	}
	return errors.Join(
		checkListenAddr("addr", o.addr),
		checkListenAddr("admin-addr", o.adminAddr),
		checkDNSLabel("controller-namespace", o.controllerNamespace),
		checkDNSName("cluster-domain", o.clusterDomain),
		checkDNSName("trust-domain", o.trustDomain),
	)
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

	reg := newRoleRegistry()
	statusLeader := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sluice_destination_status_leader",
		Help: "1 while this replica holds the Lease sluice-destination-status and so writes HTTPRoute status, else 0.",
	})
	reg.MustRegister(statusLeader)
	srv := grpc.NewServer(newGRPCMetrics(reg).serverOptions()...)
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
		}},
		tasks: []func(context.Context) error{
			src.Run,
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
				if src.WaitForSync(ctx) == nil {
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
		"controllerNamespace", o.controllerNamespace, "trustDomain", o.trustDomain, "clusterDomain", o.clusterDomain)
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
