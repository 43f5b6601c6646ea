// Package netns holds the network-namespace tests (DESIGN.md, testing layer 3):
// pods simulated as network namespaces joined by a veth pair or a bridge, each
// with the demo application, `sluice-proxy init`'s iptables rules and a
// sluice-proxy running as UID 2102, exactly as on a Kubernetes node. The
// applications talk to each other's plain addresses and the tests check, from
// the proxies' metrics, that the traffic was intercepted transparently. The
// mutual-TLS test adds a control plane (identity and destination) running in
// the test process on the host end of a veth to the pods' bridge.
//
// The tests need root, ip (iproute2), iptables and setpriv (util-linux). When
// one is missing they skip, unless SLUICE_REQUIRE_NETNS=1 (CI), which makes
// them fail with the reason. They use only addresses inside the namespaces
// they create, or on that one host veth, whose /24 overlaps no host route;
// they never touch the host namespace's iptables, and they check that the
// host is left as it was.
package netns
