package kubernetes

import (
	"context"
	"errors"
	"strings"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/sluicehq/sluice/mesh/identity"
)

// reviewer answers TokenReviews with status, or fails with err; it records
// the reviews it was asked for.
func reviewer(status authnv1.TokenReviewStatus, err error, asked *[]authnv1.TokenReviewSpec) *k8sfake.Clientset {
	c := k8sfake.NewClientset()
	c.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview)
		if asked != nil {
			*asked = append(*asked, tr.Spec)
		}
		if err != nil {
			return true, nil, err
		}
		out := tr.DeepCopy()
		out.Status = status
		return true, out, nil
	})
	return c
}

func TestTokenReviewAuthenticator(t *testing.T) {
	const webID = "web.shop.serviceaccount.identity.sluice.cluster.local"
	ok := func(user string, audiences ...string) authnv1.TokenReviewStatus {
		return authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: user}, Audiences: audiences}
	}
	tests := []struct {
		name     string
		status   authnv1.TokenReviewStatus
		apiErr   error
		token    string
		identity string
		auth     TokenReviewAuthenticator
		wantErr  error  // nil: accepted
		wantMsg  string // in the error
	}{
		{name: "the token's service account", status: ok("system:serviceaccount:shop:web", "identity.sluice.dev"), identity: webID},
		{
			name:   "custom control plane and trust domain",
			status: ok("system:serviceaccount:shop:web", "identity.sluice.dev"), identity: "web.shop.serviceaccount.identity.mesh.example.org",
			auth: TokenReviewAuthenticator{ControlNamespace: "mesh", TrustDomain: "example.org"},
		},
		{
			name:   "another service account's identity",
			status: ok("system:serviceaccount:shop:api", "identity.sluice.dev"), identity: webID,
			wantErr: identity.ErrInvalidToken, wantMsg: "service account shop/api's, whose identity is api.shop.serviceaccount.identity.sluice.cluster.local, not " + webID,
		},
		{
			name:   "another namespace",
			status: ok("system:serviceaccount:other:web", "identity.sluice.dev"), identity: webID,
			wantErr: identity.ErrInvalidToken, wantMsg: "other/web",
		},
		{
			name:   "not authenticated",
			status: authnv1.TokenReviewStatus{Error: "token has expired"}, identity: webID,
			wantErr: identity.ErrInvalidToken, wantMsg: "token has expired",
		},
		{
			name:   "another audience",
			status: ok("system:serviceaccount:shop:web"), identity: webID,
			wantErr: identity.ErrInvalidToken, wantMsg: `not for audience "identity.sluice.dev"`,
		},
		{
			name:   "a user, not a service account",
			status: ok("alice", "identity.sluice.dev"), identity: webID,
			wantErr: identity.ErrInvalidToken, wantMsg: `user "alice" is not a service account`,
		},
		{
			name:   "a name that is not a DNS label",
			status: ok("system:serviceaccount:shop:web.v2", "identity.sluice.dev"), identity: "web.v2.shop.serviceaccount.identity.sluice.cluster.local",
			wantErr: identity.ErrInvalidToken, wantMsg: "is not a DNS label",
		},
		{
			name:   "malformed service account user",
			status: ok("system:serviceaccount:shop", "identity.sluice.dev"), identity: webID,
			wantErr: identity.ErrInvalidToken, wantMsg: "system:serviceaccount:<namespace>:<name>",
		},
		{
			name: "empty token", token: "-", identity: webID,
			wantErr: identity.ErrInvalidToken, wantMsg: "empty",
		},
		{
			name:     "API server refuses",
			apiErr:   apierrors.NewForbidden(schema.GroupResource{Group: "authentication.k8s.io", Resource: "tokenreviews"}, "", errors.New("RBAC")),
			identity: webID, wantErr: identity.ErrAuthenticatorUnavailable, wantMsg: "forbidden",
		},
		{
			name: "API server unreachable", apiErr: errors.New("connection refused"), identity: webID,
			wantErr: identity.ErrAuthenticatorUnavailable, wantMsg: "connection refused",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var asked []authnv1.TokenReviewSpec
			a := tt.auth
			a.Client = reviewer(tt.status, tt.apiErr, &asked)
			token := "the-token"
			if tt.token == "-" {
				token = ""
			}
			err := a.Authenticate(context.Background(), tt.identity, []byte(token))
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Authenticate: %v", err)
				}
			} else if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("Authenticate: got %v; want %v saying %q", err, tt.wantErr, tt.wantMsg)
			}
			if token == "" {
				if len(asked) != 0 {
					t.Error("an empty token was sent for review")
				}
				return
			}
			if len(asked) != 1 || asked[0].Token != token || len(asked[0].Audiences) != 1 || asked[0].Audiences[0] != DefaultTokenAudience {
				t.Errorf("reviews asked = %+v; want one of the token for audience %s", asked, DefaultTokenAudience)
			}
		})
	}
}

func TestTokenReviewContextEnded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	a := TokenReviewAuthenticator{Client: reviewer(authnv1.TokenReviewStatus{}, context.Canceled, nil)}
	err := a.Authenticate(ctx, "web.shop.serviceaccount.identity.sluice.cluster.local", []byte("t"))
	if !errors.Is(err, context.Canceled) || errors.Is(err, identity.ErrAuthenticatorUnavailable) {
		t.Fatalf("Authenticate with a canceled context: %v; want context.Canceled", err)
	}
}
