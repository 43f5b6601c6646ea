// Package kubernetes is the control plane on a Kubernetes cluster: what
// local mode's in-memory store and bootstrap tokens do there, done from the
// API server.
//
//   - Source watches Services, EndpointSlices, Pods, HTTPRoutes,
//     ReferenceGrants and the policy kinds (policy.sluice.dev/v1beta1) with
//     informers, and answers the destination service (destination.Source:
//     service ports, their endpoints with mesh identities and their compiled
//     HTTPRoute rules) and the inbound policy service (policy.PolicySource).
//   - StatusWriter writes the parent status of HTTPRoutes attached to
//     Services (GAMMA): Accepted and ResolvedRefs with the Gateway API's
//     reasons, under the controller name sluice.dev/gateway-controller.
//     RunAsLeader runs it on one replica at a time (Lease
//     sluice-destination-status), so replicas do not fight over the
//     statuses; a new leader rewrites every route's status on taking over.
//   - TokenReviewAuthenticator authenticates proxies' projected
//     service-account tokens with the TokenReview API, for the identity
//     service.
//   - LoadCA and WatchCA build the identity CA from the trust anchor
//     ConfigMap and the issuer Secret, and follow both as they are rotated,
//     reporting anchors that cannot be used (missing, unparsable, or not
//     what the issuer chains to).
//   - TelemetryTargets lists the proxies of the running meshed pods for the
//     mesh telemetry (telemetry.TargetSource), labelled with each pod's
//     namespace, name, workload and revision (annotation sluice.dev/revision).
//
// # Endpoints
//
// A Service port's endpoints are the addresses of its EndpointSlices
// (discovery.k8s.io/v1, labelled kubernetes.io/service-name) on the slice port
// named like the Service port, ready as conditions.ready says (unset means
// ready). An endpoint whose targetRef is a Pod is labelled with the pod's
// namespace, name, service account, workload (the Deployment, found by
// stripping the pod-template-hash from its ReplicaSet owner's name, or the
// owner's kind and name) and revision (the pod-template-hash). A pod with a
// sluice-proxy container is meshed: its endpoints, still podIP:targetPort as
// the proxy intercepts inbound traffic, carry the pod's mesh identity
// (<sa>.<ns>.serviceaccount.identity.<control-ns>.<trust-domain>) and the
// protocol hint http2, except on ports its config.sluice.dev/skip-inbound-ports
// annotation lists (no identity: the proxy does not see that traffic) or its
// config.sluice.dev/opaque-ports annotation lists (hint opaque).
//
// # Pod addresses
//
// A proxy asks about an address it intercepted that no Service claims
// ("ip:port"). When a pod holds that IP (not a cluster IP), the answer is
// the pod alone, as Linkerd's destination service answers for pod IPs: a
// service of its own (named as package podaddress says,
// "10-1-0-5.shop.pod:8080") whose only virtual address and only endpoint
// are the address asked about. The endpoint is labelled like the pod's
// Service endpoints and carries, like them, the pod's mesh identity when
// the pod is meshed and the port is not in its skip-inbound-ports: the
// client proxy then connects over mutual TLS with that identity as the
// server name; an unmeshed pod gets none, and is reached in plain text. A
// port its opaque-ports annotation lists makes the service opaque. The
// endpoint is ready while the pod holds the IP: a client that dials a pod
// chose it, and Kubernetes does not gate such traffic on readiness. Pods on
// the host's network share the node's IP and never answer for it, nor do
// pods that have finished (their IP is free); of two pods with one IP, the
// one not being deleted, then the newer, wins. The answer follows the pod:
// once it is gone the address is unknown again (no endpoints), and the
// next pod to hold the IP answers with its own identity.
//
// # Routes
//
// HTTPRoutes attach to Service ports as package routing defines (producer and
// consumer routes, precedence). A backendRef to a Service in another
// namespace than its route's needs a ReferenceGrant there allowing
// HTTPRoutes of the route's namespace to refer to it (the route's own parent
// Service excepted); without one the backend is invalid, and its share of
// requests gets 500. ExternalName Services are not routed.
package kubernetes
