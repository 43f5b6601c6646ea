package policy

import (
	"net/netip"
	"sync/atomic"
)

// Evaluator holds the current policy of one port and checks clients against
// it. Authorize takes no lock: the Server sits behind an atomic pointer and is
// replaced whole by Store, so a check sees either the old policy or the new
// one, never a mix. It is safe for concurrent use.
//
// It does not count: the caller knows whether it checked an HTTP request or a
// TCP connection, and increments inbound_http_authz_allow_total /
// inbound_http_authz_deny_total or inbound_tcp_authz_allow_total /
// inbound_tcp_authz_deny_total from the Decision, labelled srv_name=Server,
// srv_kind=ServerKind and, when allowed, authz_name=Authorization,
// authz_kind=AuthorizationKind. An audit decision is allowed, so it counts as
// an allow with authz_name "audit"; the caller also logs it.
type Evaluator struct {
	cur atomic.Pointer[Server]
}

// NewEvaluator returns an Evaluator enforcing s.
func NewEvaluator(s Server) *Evaluator {
	e := &Evaluator{}
	e.Store(s)
	return e
}

// Store replaces the policy. Checks already running finish with the old one.
// The Evaluator keeps its own copy of s's top-level fields; s's slices must
// not be modified afterwards.
func (e *Evaluator) Store(s Server) { e.cur.Store(&s) }

// Server returns the current policy (nil for a zero Evaluator). It must not be
// modified.
func (e *Evaluator) Server() *Server { return e.cur.Load() }

// Authorize checks a client against the current policy; see Server.Authorize.
// A zero Evaluator, which has no policy yet, denies.
func (e *Evaluator) Authorize(client netip.Addr, identity string) Decision {
	s := e.cur.Load()
	if s == nil {
		return Decision{Reason: "unauthorized: no inbound policy yet"}
	}
	return s.Authorize(client, identity)
}
