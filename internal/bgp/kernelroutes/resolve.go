package kernelroutes

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// resolved is where a next hop leads: the gateway to install and its
// device.
type resolved struct {
	gw   netip.Addr
	link int
	err  error
}

// resolveAll resolves the next hop of every target not already failed,
// once per distinct next hop.
func (t *Table) resolveAll(targets []target) []target {
	cache := map[netip.Addr]resolved{}
	for i := range targets {
		tg := &targets[i]
		if tg.err != nil {
			continue
		}
		r, ok := cache[tg.route.NextHop]
		if !ok {
			r = t.resolve(tg.route.NextHop)
			cache[tg.route.NextHop] = r
		}
		tg.gw, tg.link, tg.err = r.gw, r.link, r.err
	}
	return targets
}

// resolve asks the kernel how it reaches nh. A next hop on a connected
// subnet is its own gateway; any other is replaced by the gateway of the
// route the kernel would use. Refused: unreachable, this node's own
// address, and a next hop reachable only through a route of RouteProtocol
// (learned routes are never resolved through each other: the result would
// go stale when that route changes).
func (t *Table) resolve(nh netip.Addr) resolved {
	ip := net.IP(nh.AsSlice())
	rs, err := t.h().RouteGet(ip)
	if err != nil {
		return resolved{err: fmt.Errorf("next hop unreachable: %w", err)}
	}
	if len(rs) == 0 {
		return resolved{err: errors.New("next hop unreachable: the kernel has no route to it")}
	}
	r := rs[0]
	switch r.Type {
	case unix.RTN_UNICAST:
	case unix.RTN_LOCAL:
		return resolved{err: errors.New("next hop is this node's own address")}
	default:
		return resolved{err: fmt.Errorf("next hop unreachable: the kernel's route to it has type %d", r.Type)}
	}
	if r.LinkIndex == 0 {
		return resolved{err: errors.New("next hop unreachable: the kernel's route to it has no device")}
	}
	fib, err := t.h().RouteGetWithOptions(ip, &netlink.RouteGetOptions{FIBMatch: true})
	if err != nil {
		return resolved{err: fmt.Errorf("look up the route to the next hop: %w", err)}
	}
	if len(fib) > 0 && fib[0].Protocol == RouteProtocol {
		dst, _ := routeDst(fib[0])
		return resolved{err: fmt.Errorf("next hop reachable only through the learned route %s (protocol %d); learned routes are not resolved through each other", dst, RouteProtocol)}
	}
	if r.Gw == nil {
		return resolved{gw: nh, link: r.LinkIndex}
	}
	gw := ipToAddr(r.Gw)
	if !gw.IsValid() {
		return resolved{err: fmt.Errorf("next hop resolves to an unusable gateway %v", r.Gw)}
	}
	return resolved{gw: gw, link: r.LinkIndex}
}
