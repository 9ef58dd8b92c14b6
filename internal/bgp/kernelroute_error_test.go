package bgp

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
)

func TestKernelRouteErrors(t *testing.T) {
	r1 := &KernelRouteError{Route: KernelRoute{Prefix: netip.MustParsePrefix("198.18.1.0/24"), NextHop: netip.MustParseAddr("192.0.2.1")},
		Err: errors.New("next hop unreachable")}
	r2 := &KernelRouteError{Route: KernelRoute{Prefix: netip.MustParsePrefix("198.18.2.0/24")}, Err: errors.New("no next hop")}
	perRoute := errors.Join(r1, errors.Join(r2))
	if got := KernelRouteErrors(perRoute); len(got) != 2 || got[0] != r1 || got[1] != r2 {
		t.Errorf("KernelRouteErrors = %v, want both", got)
	}
	if !OnlyKernelRouteErrors(perRoute) || !OnlyKernelRouteErrors(r1) {
		t.Error("per-route failures alone not recognised")
	}
	whole := errors.Join(r1, fmt.Errorf("list main table: %w", errors.New("EBUSY")))
	if OnlyKernelRouteErrors(whole) || OnlyKernelRouteErrors(nil) || len(KernelRouteErrors(whole)) != 1 {
		t.Error("a failed apply taken for per-route failures")
	}
	if got := r1.Error(); got != "route 198.18.1.0/24 via 192.0.2.1: next hop unreachable" {
		t.Errorf("Error() = %q", got)
	}
}
