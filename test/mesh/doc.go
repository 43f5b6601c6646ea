// Package mesh holds the mesh's loopback integration tests: a real identity
// service and destination service over a local store, serving real gRPC on
// 127.0.0.1, and real sluice-proxy instances (run in-process) in front of
// small applications, talking to each other over mutual TLS.
//
// The tests prove what the mesh promises from the outside: the TLS labels of
// both proxies' metrics, the verified caller identity handed to the
// application, inbound policy enforcement, certificate rotation and traffic
// shifting without a failed request, and proxies that keep serving while the
// control plane is down and resynchronise when it returns.
package mesh
