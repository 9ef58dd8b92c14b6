package bgp

import (
	"context"
	"net/netip"
)

// Speaker is the BGP speaker the controller drives (internal/bgp/speaker:
// GoBGP embedded, no gRPC listener).
type Speaker interface {
	// Apply makes the speaker match d: it starts it (first call with
	// d.Enabled), adds, updates and removes neighbours and paths, and
	// stops it when !d.Enabled. Changing Global.ASN or RouterID restarts
	// the speaker (a BGP identity cannot change in place). Idempotent.
	Apply(ctx context.Context, d Desired) error
	// Peers is every session's state, sorted by Address.
	Peers() []PeerState
	// Learned is the current best path per prefix learned from neighbours
	// and accepted by the import policy, sorted by Prefix.
	Learned() []LearnedRoute
	// Changes is signalled (non-blocking, coalesced) whenever Peers or
	// Learned changed; the controller then syncs.
	Changes() <-chan struct{}
	// Stop stops the speaker without NOTIFICATION to the peers (an agent
	// restart keeps its routes on them for the graceful-restart time).
	Stop()
}

// KernelRoutes programs learned routes into the main table under
// RouteProtocol (internal/bgp/kernelroutes).
type KernelRoutes interface {
	// List is every route this node holds under the BGP protocol number.
	List() ([]KernelRoute, error)
	// Apply adds or replaces every route in want and, with sweep, deletes
	// the BGP-protocol routes not in want. Routes held by another owner
	// (another protocol) are never replaced; they are reported instead.
	Apply(want []KernelRoute, sweep bool) (foreign []KernelRoute, err error)
}

// KernelRoute is one learned route as the kernel holds it.
type KernelRoute struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
}
