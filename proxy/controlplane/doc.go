// Package controlplane is the proxy's client of Sluice's control plane: it
// keeps the outbound route table current from the Destination API
// (Discovery) and obtains and refreshes the proxy's mesh certificate from the
// Identity API (Identity).
//
// Both follow the same rule when the control plane is unreachable: the proxy
// keeps serving with what it last received (endpoints, routes, certificate)
// and reconnects with jittered exponential backoff. A stream that comes back
// replaces the kept state only with its own first message.
//
// Like the rest of the proxy, this package depends on nothing from the control
// plane but mesh/api.
package controlplane
