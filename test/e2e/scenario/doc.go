// Package scenario is Sluice's end-to-end test on a real single-node
// Kubernetes cluster (test/e2e/cluster): images built without Docker,
// `sluice install`, a meshed namespace with the demo's frontend and backend,
// mutual TLS between real pods, inbound policy, retries and timeouts from an
// HTTPRoute, and a Canary promoted and rolled back under load.
//
// It needs root. Under SLUICE_REQUIRE_CLUSTER=1 (CI) it fails rather than
// skips when the cluster cannot be brought up.
package scenario
