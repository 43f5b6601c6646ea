package supervisor

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"sync"

	"github.com/sluicehq/sluice/mesh/identity"
)

// TokenSet holds the bootstrap tokens handed to sidecars: one per replica,
// so that several replicas may share an identity (a service account) and
// each token is revoked when its replica stops. It is local mode's
// identity.Authenticator. (identity.StaticTokens keeps one token per
// identity: issuing one for a second replica would invalidate the first's.)
// The zero value is ready to use; it is safe for concurrent use.
type TokenSet struct {
	mu     sync.RWMutex
	tokens map[string][][]byte // identity -> live tokens
}

var _ identity.Authenticator = (*TokenSet)(nil)

// Issue makes a new random token (64 hex characters) for identity.
func (t *TokenSet) Issue(id string) ([]byte, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("issue token for %s: %w", id, err)
	}
	token := []byte(hex.EncodeToString(raw))
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tokens == nil {
		t.tokens = map[string][][]byte{}
	}
	t.tokens[id] = append(t.tokens[id], token)
	return token, nil
}

// Revoke forgets one token of identity.
func (t *TokenSet) Revoke(id string, token []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	list := t.tokens[id]
	for i, tok := range list {
		if subtle.ConstantTimeCompare(tok, token) == 1 {
			list = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(t.tokens, id)
	} else {
		t.tokens[id] = list
	}
}

// Authenticate accepts a token issued for identity and not revoked. Its
// errors wrap identity.ErrInvalidToken.
func (t *TokenSet) Authenticate(_ context.Context, id string, token []byte) error {
	if len(token) == 0 {
		return fmt.Errorf("%w: the token is empty", identity.ErrInvalidToken)
	}
	t.mu.RLock()
	list := t.tokens[id]
	t.mu.RUnlock()
	if len(list) == 0 {
		return fmt.Errorf("%w: no bootstrap token is registered for this identity (is its replica still running?)", identity.ErrInvalidToken)
	}
	ok := 0
	for _, tok := range list {
		ok |= subtle.ConstantTimeCompare(tok, token)
	}
	if ok != 1 {
		return fmt.Errorf("%w: it is not a bootstrap token issued for this identity", identity.ErrInvalidToken)
	}
	return nil
}
