package dispatch

import (
	"context"

	"github.com/sluicehq/sluice/proxy/metrics"
)

// Headers the mesh adds between proxies and towards applications.
const (
	// ClientIDHeader carries the verified mesh identity of the caller to the
	// application on inbound requests. The inbound proxy always removes the
	// field a client sent, so that it cannot be forged.
	ClientIDHeader = "sluice-client-id"
	// OrigProtoHeader marks an HTTP/1 request that a client proxy carried over
	// the mesh's HTTP/2 connection ("HTTP/1.1" or "HTTP/1.0"): the server
	// proxy removes it and forwards the request to the application as HTTP/1.
	OrigProtoHeader = "sluice-orig-proto"
)

// Peer describes the client connection requests arrive on, as far as metrics
// care: the labels its requests' series carry (inbound: tls and client_id, or
// tls and no_tls_reason). Peers are compared by pointer: make one per kind of
// connection (per client identity, say) and reuse it, so that the series
// handles cached per Peer stay few.
type Peer struct {
	labels metrics.Labels
}

// NewPeer returns a Peer whose requests' series carry labels instead of the
// dispatcher's static labels.
func NewPeer(labels metrics.Labels) *Peer {
	return &Peer{labels: append(metrics.Labels(nil), labels...)}
}

// Labels returns the peer's labels; they must not be modified.
func (p *Peer) Labels() metrics.Labels { return p.labels }

type peerKey struct{}

// WithPeer returns a context whose requests are recorded with peer's labels.
// The proxy sets it on a client connection's context, which the protocol
// servers pass to Forward with every request of the connection.
func WithPeer(ctx context.Context, peer *Peer) context.Context {
	return context.WithValue(ctx, peerKey{}, peer)
}

// PeerFrom returns the Peer of ctx, or nil.
func PeerFrom(ctx context.Context) *Peer {
	p, _ := ctx.Value(peerKey{}).(*Peer)
	return p
}
