package kubernetes

import (
	"context"
	"fmt"
	"slices"
	"strings"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	clientset "k8s.io/client-go/kubernetes"

	"github.com/sluicehq/sluice/mesh/identity"
)

// DefaultTokenAudience is the audience of the projected service-account
// token the injector mounts for the proxy.
const DefaultTokenAudience = "identity.sluice.dev"

// serviceAccountPrefix starts the username of a service-account token.
const serviceAccountPrefix = "system:serviceaccount:"

// TokenReviewAuthenticator is the identity service's Authenticator on
// Kubernetes: the proxy presents its projected service-account token, the
// API server reviews it (TokenReview, which needs RBAC to create
// tokenreviews), and it proves the identity of that service account, and no
// other. The zero value of every field but Client is its default.
type TokenReviewAuthenticator struct {
	// Client creates the TokenReviews.
	Client clientset.Interface
	// Audience the token must have been issued for (empty:
	// DefaultTokenAudience).
	Audience string
	// ControlNamespace and TrustDomain name identities (see identity.Name;
	// empty means its defaults).
	ControlNamespace, TrustDomain string
}

var _ identity.Authenticator = (*TokenReviewAuthenticator)(nil)

// Authenticate reviews the token and accepts it if it is a valid token for
// the audience, of a service account whose identity is the identity asked
// for. A token that does not prove it is an error wrapping
// identity.ErrInvalidToken that says why; a review that could not be made
// (the API server unreachable or refusing) wraps
// identity.ErrAuthenticatorUnavailable, and a context that ended is
// returned as its error.
func (a *TokenReviewAuthenticator) Authenticate(ctx context.Context, id string, token []byte) error {
	if len(token) == 0 {
		return fmt.Errorf("%w: the token is empty", identity.ErrInvalidToken)
	}
	if a.Client == nil {
		return fmt.Errorf("%w: token review: no Kubernetes client", identity.ErrAuthenticatorUnavailable)
	}
	aud := a.Audience
	if aud == "" {
		aud = DefaultTokenAudience
	}
	review, err := a.Client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: string(token), Audiences: []string{aud}},
	}, metav1.CreateOptions{})
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("token review: %w", ctxErr)
		}
		return fmt.Errorf("%w: token review: %v", identity.ErrAuthenticatorUnavailable, err)
	}
	st := review.Status
	if !st.Authenticated {
		reason := st.Error
		if reason == "" {
			reason = "the API server did not authenticate it"
		}
		return fmt.Errorf("%w: %s", identity.ErrInvalidToken, reason)
	}
	if !slices.Contains(st.Audiences, aud) {
		return fmt.Errorf("%w: the token is not for audience %q (its audiences: %q)", identity.ErrInvalidToken, aud, st.Audiences)
	}
	ns, sa, err := parseServiceAccountUser(st.User.Username)
	if err != nil {
		return fmt.Errorf("%w: %v", identity.ErrInvalidToken, err)
	}
	if got := identity.Name(sa, ns, a.ControlNamespace, a.TrustDomain); got != id {
		return fmt.Errorf("%w: the token is service account %s/%s's, whose identity is %s, not %s", identity.ErrInvalidToken, ns, sa, got, id)
	}
	return nil
}

// parseServiceAccountUser splits "system:serviceaccount:<ns>:<sa>"; both
// parts must be DNS-1123 labels, so that the identity built from them is
// unambiguous.
func parseServiceAccountUser(username string) (ns, sa string, err error) {
	rest, ok := strings.CutPrefix(username, serviceAccountPrefix)
	if !ok {
		return "", "", fmt.Errorf("user %q is not a service account", username)
	}
	ns, sa, ok = strings.Cut(rest, ":")
	if !ok || strings.Contains(sa, ":") {
		return "", "", fmt.Errorf("user %q is not %s<namespace>:<name>", username, serviceAccountPrefix)
	}
	for _, part := range []struct{ what, v string }{{"namespace", ns}, {"service account name", sa}} {
		if errs := validation.IsDNS1123Label(part.v); len(errs) > 0 {
			return "", "", fmt.Errorf("user %q: %s %q is not a DNS label: %s", username, part.what, part.v, strings.Join(errs, "; "))
		}
	}
	return ns, sa, nil
}
