package bgp

import (
	"context"
	"errors"
	"fmt"
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
	// A wanted route that cannot be installed (its next hop unresolvable,
	// say) is a *KernelRouteError in err (joined: KernelRouteErrors lists
	// them); every other route is still applied.
	Apply(want []KernelRoute, sweep bool) (foreign []KernelRoute, err error)
}

// KernelRouteError is the failure of one wanted route in
// KernelRoutes.Apply; what is installed at its prefix stays.
type KernelRouteError struct {
	Route KernelRoute
	Err   error
}

func (e *KernelRouteError) Error() string {
	return fmt.Sprintf("route %s via %s: %v", e.Route.Prefix, e.Route.NextHop, e.Err)
}

func (e *KernelRouteError) Unwrap() error { return e.Err }

// KernelRouteErrors lists the per-route failures in an error of
// KernelRoutes.Apply (nil when there are none). An error that is not one
// of them (a failed dump, a failed delete) means the apply as a whole
// failed: OnlyKernelRouteErrors tells the two apart.
func KernelRouteErrors(err error) []*KernelRouteError {
	var out []*KernelRouteError
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var re *KernelRouteError
		if errors.As(err, &re) {
			out = append(out, re)
		}
	}
	if err != nil {
		walk(err)
	}
	return out
}

// OnlyKernelRouteErrors reports whether err (non-nil) consists of
// per-route failures alone: the routes that could be applied were.
func OnlyKernelRouteErrors(err error) bool {
	if err == nil {
		return false
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		var re *KernelRouteError
		return errors.As(err, &re)
	}
	for _, e := range j.Unwrap() {
		if !OnlyKernelRouteErrors(e) {
			return false
		}
	}
	return true
}

// KernelRoute is one learned route as the kernel holds it.
type KernelRoute struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
}
