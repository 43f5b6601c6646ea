package identity

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
)

var (
	// ErrInvalidToken means a token does not prove the identity it was
	// presented for. Certify answers Unauthenticated.
	ErrInvalidToken = errors.New("invalid token")
	// ErrAuthenticatorUnavailable means the authenticator could not decide
	// (its backend, such as the Kubernetes API, is unreachable). Certify
	// answers Unavailable, so the proxy retries.
	ErrAuthenticatorUnavailable = errors.New("authenticator unavailable")
)

// Authenticator checks that a Certify token proves the requested identity.
// It returns nil when it does. Certify answers Unavailable for an error that
// wraps ErrAuthenticatorUnavailable, Canceled or DeadlineExceeded for context
// errors, and Unauthenticated for any other error (wrap ErrInvalidToken).
type Authenticator interface {
	Authenticate(ctx context.Context, identity string, token []byte) error
}

// StaticTokens is the local-mode Authenticator: the supervisor hands each
// workload a bootstrap token for its identity, and registers it here. Tokens
// are compared in constant time. The zero value is ready to use, and all
// methods are safe for concurrent use.
type StaticTokens struct {
	mu     sync.RWMutex
	tokens map[string][]byte
}

// Add registers token as the proof of identity, replacing any earlier token.
func (s *StaticTokens) Add(identity string, token []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tokens == nil {
		s.tokens = make(map[string][]byte)
	}
	s.tokens[identity] = append([]byte(nil), token...)
}

// Issue makes a new random token (64 hex characters, so it fits in a file or
// an environment variable), registers it for identity and returns it.
func (s *StaticTokens) Issue(identity string) ([]byte, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("issue token for %s: %w", identity, err)
	}
	token := []byte(hex.EncodeToString(raw))
	s.Add(identity, token)
	return token, nil
}

// Remove forgets the token of identity; Certify for it fails from then on.
func (s *StaticTokens) Remove(identity string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tokens, identity)
}

// Authenticate accepts token if it is the one registered for identity. Its
// errors wrap ErrInvalidToken.
func (s *StaticTokens) Authenticate(_ context.Context, identity string, token []byte) error {
	if len(token) == 0 {
		return fmt.Errorf("%w: the token is empty", ErrInvalidToken)
	}
	s.mu.RLock()
	want, ok := s.tokens[identity]
	s.mu.RUnlock()
	if !ok {
		return fmt.Errorf("%w: no bootstrap token is registered for this identity", ErrInvalidToken)
	}
	if subtle.ConstantTimeCompare(want, token) != 1 {
		return fmt.Errorf("%w: it is not the bootstrap token registered for this identity", ErrInvalidToken)
	}
	return nil
}
