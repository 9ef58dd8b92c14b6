// Package kernelroutes is the BGP controller's kernel side
// (bgp.KernelRoutes): the routes learned from BGP neighbours, in the main
// routing table under their own route protocol number, RouteProtocol (159),
// for IPv4 and IPv6.
//
// Apply is a full-state reconcile: it adds or replaces every wanted route,
// leaves alone (and reports) a destination another owner holds, and deletes
// RouteProtocol routes that are no longer wanted only when asked to sweep
// (graceful restart keeps stale routes until End-of-RIB). Nothing is ever
// flushed: routes found at start are adopted, and an unchanged route is not
// written again.
//
// A next hop on a connected subnet is installed as the gateway itself; any
// other next hop is resolved through the kernel (the route an `ip route get`
// to it picks) and the route installed via that gateway on its device. A
// next hop that is unreachable, this node's own address, or reachable only
// through another learned route is an error for that route; the others are
// still applied.
package kernelroutes

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/trellisnet/trellis/internal/bgp"
)

// RouteProtocol tags every route learned from BGP (rtnetlink protocol
// number 159; /etc/iproute2/rt_protos.d can name it "trellis-bgp"). The
// routing controller's static routes use 158
// (internal/routing/netlinkprog.RouteProtocol): the two owners never take
// each other's routes.
const RouteProtocol netlink.RouteProtocol = 0x9f // 159

// Table is the real bgp.KernelRoutes. The zero value works in the calling
// thread's network namespace; Handle may target another one (tests). It is
// not safe for concurrent use (the BGP controller calls it from its sync).
type Table struct {
	// Handle is the netlink handle to use (nil: the calling thread's
	// namespace).
	Handle *netlink.Handle
	// Logger logs every route written or deleted at V(2) (zero: discard).
	Logger klog.Logger
}

var _ bgp.KernelRoutes = (*Table)(nil)

// h returns the netlink handle wrapped by netlinksafe, whose dump methods
// retry when the kernel interrupts a dump (NLM_F_DUMP_INTR).
func (t *Table) h() netlinksafe.Handle {
	if t.Handle != nil {
		return netlinksafe.Handle{Handle: t.Handle}
	}
	return netlinksafe.Handle{Handle: &netlink.Handle{}}
}

// List is every route of the main table under RouteProtocol, IPv4 then
// IPv6, sorted by prefix. NextHop is the gateway the kernel holds: the BGP
// next hop itself, or the gateway it was resolved to (zero for a route
// without a single gateway).
func (t *Table) List() ([]bgp.KernelRoute, error) {
	var out []bgp.KernelRoute
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := t.h().RouteListFiltered(fam, &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("list routes of protocol %d: %w", RouteProtocol, err)
		}
		for _, r := range rs {
			dst, ok := routeDst(r)
			if !ok {
				continue
			}
			out = append(out, bgp.KernelRoute{Prefix: dst, NextHop: ipToAddr(r.Gw)})
		}
	}
	sortRoutes(out)
	return out, nil
}

// Apply adds or replaces every route in want (resolving next hops that are
// not on a connected subnet), reports the wanted routes whose destination
// another owner holds (never replaced), and with sweep deletes the
// RouteProtocol routes whose prefix is not in want. A wanted route that
// cannot be installed (bad entry, unresolvable next hop, netlink error) is
// a *bgp.KernelRouteError in the joined error (bgp.KernelRouteErrors lists
// them); whatever is installed at its prefix stays, and every other route
// is still applied. Any other error (a failed dump or delete) fails the
// apply as a whole.
func (t *Table) Apply(want []bgp.KernelRoute, sweep bool) (foreign []bgp.KernelRoute, err error) {
	valid, errs := normalize(want)
	targets := t.resolveAll(valid)
	var table []netlink.Route
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := t.h().RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("list main table: %w", err)
		}
		table = append(table, rs...)
	}
	p := plan(targets, table, sweep)
	errs = append(errs, p.errs...)
	for _, w := range p.write {
		t.Logger.V(2).Info("Programming learned route", "dst", w.route.Prefix, "nextHop", w.route.NextHop, "via", w.nl.Gw, "link", w.nl.LinkIndex)
		nr := w.nl
		if err := t.h().RouteReplace(&nr); err != nil {
			errs = append(errs, &bgp.KernelRouteError{Route: w.route, Err: fmt.Errorf("replace: %w", err)})
		}
	}
	for _, d := range p.del {
		t.Logger.V(2).Info("Deleting learned route", "dst", d.Dst, "via", d.Gw)
		r := d
		if err := t.h().RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %s (protocol %d): %w", d.Dst, RouteProtocol, err))
		}
	}
	return p.foreign, errors.Join(errs...)
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func ipToAddr(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

// routeDst is r's destination; a nil Dst is the default route of r's
// family.
func routeDst(r netlink.Route) (netip.Prefix, bool) {
	if r.Dst == nil {
		switch r.Family {
		case netlink.FAMILY_V4:
			return netip.PrefixFrom(netip.IPv4Unspecified(), 0), true
		case netlink.FAMILY_V6:
			return netip.PrefixFrom(netip.IPv6Unspecified(), 0), true
		}
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(r.Dst.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := r.Dst.Mask.Size()
	if bits == 32 {
		a = a.Unmap()
	}
	return netip.PrefixFrom(a, ones).Masked(), true
}

func sortRoutes(rs []bgp.KernelRoute) {
	sort.Slice(rs, func(i, j int) bool { return prefixLess(rs[i].Prefix, rs[j].Prefix) })
}

// prefixLess orders IPv4 before IPv6, then by address, then by length.
func prefixLess(a, b netip.Prefix) bool {
	if a.Addr().Is4() != b.Addr().Is4() {
		return a.Addr().Is4()
	}
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c < 0
	}
	return a.Bits() < b.Bits()
}
