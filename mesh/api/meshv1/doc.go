// Package meshv1 is the contract between Sluice's control plane and its proxy:
// the protobuf messages and gRPC services of the destination, inbound policy
// and identity APIs (generated from mesh/api/proto by hack/protoc.sh, in the
// *.pb.go files), and converters between the destination messages and the
// routetable types the proxy runs.
//
// The proxy imports only this package tree from the control plane, so nothing
// here may depend on Kubernetes or on control-plane internals.
package meshv1
