// Package gate keeps manual gates for canaries and serves them over HTTP,
// compatible with the gate endpoints of Flagger's load tester.
//
// Each canary (namespace/name) has two switches:
//
//   - the gate, asked by confirm-* webhooks pointed at /gate/check: 200 when
//     open (the run may go on), 403 when closed (the default);
//   - the rollback switch, asked by a rollback webhook pointed at
//     /rollback/check: 200 when open, which asks the run to roll back, 403
//     when closed (the default).
//
// Unlike Flagger's load tester, which keeps them in memory and loses them on
// restart (flagger#445), the state lives in a Store: a FileStore in local
// mode (a JSON file under .sluice/), a ConfigMap in Kubernetes.
package gate

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Position is the position of a switch.
type Position string

const (
	// Opened lets a gated run go on; for the rollback switch, asks for a
	// rollback. Its JSON value is "open".
	Opened Position = "open"
	// Closed holds a gated run; for the rollback switch, asks for nothing.
	// A switch never set is closed.
	Closed Position = "closed"
)

// Key names a canary.
type Key struct {
	// Namespace of the Canary.
	Namespace string
	// Name of the Canary.
	Name string
}

// String returns "namespace/name".
func (k Key) String() string { return k.Namespace + "/" + k.Name }

// Validate checks that the key names a Kubernetes object: a DNS-1123 label
// for the namespace, a DNS-1123 subdomain for the name.
func (k Key) Validate() error {
	if k.Name == "" {
		return errors.New(`missing "name"`)
	}
	if k.Namespace == "" {
		return errors.New(`missing "namespace"`)
	}
	if err := checkDNS(k.Namespace, 63, false); err != nil {
		return fmt.Errorf("namespace %q: %w", k.Namespace, err)
	}
	if err := checkDNS(k.Name, 253, true); err != nil {
		return fmt.Errorf("name %q: %w", k.Name, err)
	}
	return nil
}

// checkDNS accepts lowercase alphanumerics and '-' (and '.' when dots),
// starting and ending with an alphanumeric, at most limit long.
func checkDNS(s string, limit int, dots bool) error {
	if len(s) > limit {
		return fmt.Errorf("longer than %d characters", limit)
	}
	allowed := "only lowercase letters, digits and '-'"
	if dots {
		allowed = "only lowercase letters, digits, '-' and '.'"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z' || c >= '0' && c <= '9':
		case c == '-' || c == '.' && dots:
			if i == 0 || i == len(s)-1 {
				return errors.New("must start and end with a lowercase letter or digit")
			}
		default:
			return fmt.Errorf("invalid character %q: %s", c, allowed)
		}
	}
	return nil
}

// State is the gates of one canary.
type State struct {
	// Gate is open when gated steps may proceed.
	Gate Position `json:"gate"`
	// Rollback is open when a rollback is requested.
	Rollback Position `json:"rollback"`
	// UpdatedAt is when a switch was last set; zero if never.
	UpdatedAt time.Time `json:"updatedAt,omitzero"`
	// By says who set it last (a user name, or the client's address).
	By string `json:"by,omitempty"`
}

// Normalize returns s with empty positions set to Closed.
func (s State) Normalize() State {
	if s.Gate == "" {
		s.Gate = Closed
	}
	if s.Rollback == "" {
		s.Rollback = Closed
	}
	return s
}

// Store keeps gate states durably. Get of a canary never set returns a
// State with both switches Closed and no error. Update applies fn to the
// current state (normalized) and stores the result atomically with respect
// to other Updates of the same key, so a store shared by several
// control-plane replicas (a ConfigMap updated with optimistic concurrency)
// loses no write; it returns the stored state.
type Store interface {
	Get(ctx context.Context, key Key) (State, error)
	Update(ctx context.Context, key Key, fn func(*State)) (State, error)
}
