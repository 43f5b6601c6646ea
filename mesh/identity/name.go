// Package identity is the mesh's certificate authority and the gRPC Identity
// service proxies call to get their certificates.
//
// A CA has trust anchors (ca.crt, which every proxy trusts) and an issuer
// (issuer.crt and issuer.key, signed by an anchor) that signs the leaves. Both
// are loaded from PEM files, or generated on first start; the issuer is
// reloaded when its files change, so it can be rotated without a restart.
//
// Certify authenticates the caller's token as the identity it asks for (an
// Authenticator: bootstrap tokens in local mode, TokenReview on Kubernetes),
// checks that the CSR names exactly that identity, and issues a 24 h ECDSA
// P-256 leaf that never outlives the issuer.
package identity

import "fmt"

// Defaults for the parts of an identity name.
const (
	// DefaultControlNamespace is the namespace of Sluice's control plane.
	DefaultControlNamespace = "sluice"
	// DefaultTrustDomain is the trust domain, Kubernetes' default cluster domain.
	DefaultTrustDomain = "cluster.local"
)

// Name builds the mesh identity of a service account:
// <sa>.<ns>.serviceaccount.identity.<controlNS>.<trustDomain>. An empty
// controlNamespace or trustDomain means the default ("sluice",
// "cluster.local").
func Name(serviceAccount, namespace, controlNamespace, trustDomain string) string {
	if controlNamespace == "" {
		controlNamespace = DefaultControlNamespace
	}
	if trustDomain == "" {
		trustDomain = DefaultTrustDomain
	}
	return fmt.Sprintf("%s.%s.serviceaccount.identity.%s.%s", serviceAccount, namespace, controlNamespace, trustDomain)
}

// Service accounts of the control-plane roles that serve gRPC to proxies.
// Their mesh identities (Name of the account in the control-plane
// namespace) are what proxies expect those servers to present.
const (
	// IdentityServiceAccount runs the identity service.
	IdentityServiceAccount = "sluice-identity"
	// DestinationServiceAccount runs the destination service.
	DestinationServiceAccount = "sluice-destination"
)

// ControlPlaneName is the mesh identity of a control-plane role's service
// account, which lives in the control-plane namespace:
// Name(serviceAccount, controlNamespace, controlNamespace, trustDomain).
func ControlPlaneName(serviceAccount, controlNamespace, trustDomain string) string {
	if controlNamespace == "" {
		controlNamespace = DefaultControlNamespace
	}
	return Name(serviceAccount, controlNamespace, controlNamespace, trustDomain)
}
