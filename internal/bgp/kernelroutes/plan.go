package kernelroutes

import (
	"errors"
	"net"
	"net/netip"
	"sort"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/trellisnet/trellis/internal/bgp"
)

// target is one wanted route: as asked (prefix masked), and the gateway
// and device its next hop resolved to, or why it cannot be installed.
type target struct {
	route bgp.KernelRoute
	gw    netip.Addr
	link  int
	err   error
}

// write is a route to add or replace.
type write struct {
	route bgp.KernelRoute
	nl    netlink.Route
}

// planned is what Apply does to the kernel: pure data computed from the
// targets and the main table's current routes.
type planned struct {
	write   []write
	del     []netlink.Route
	foreign []bgp.KernelRoute
	errs    []error
}

// normalize masks want's prefixes and turns the entries that can never be
// installed into failed targets: an invalid prefix is dropped (it names
// no destination), any other problem keeps its prefix wanted, so that a
// sweep leaves what is installed there alone.
func normalize(want []bgp.KernelRoute) ([]target, []error) {
	var out []target
	var errs []error
	seen := map[netip.Prefix]bool{}
	for _, r := range want {
		if !r.Prefix.IsValid() {
			errs = append(errs, &bgp.KernelRouteError{Route: r, Err: errors.New("invalid prefix")})
			continue
		}
		r.Prefix = r.Prefix.Masked()
		t := target{route: r}
		nh := r.NextHop
		switch {
		case seen[r.Prefix]:
			errs = append(errs, &bgp.KernelRouteError{Route: r, Err: errors.New("prefix wanted twice; the first entry is kept")})
			continue
		case !nh.IsValid() || nh.IsUnspecified():
			t.err = errors.New("no next hop")
		case nh.Is4In6() || nh.Is4() != r.Prefix.Addr().Is4():
			t.err = errors.New("next hop of the other address family")
		case nh.IsMulticast():
			t.err = errors.New("multicast next hop")
		case nh.IsLinkLocalUnicast() && nh.Is6():
			t.err = errors.New("link-local next hop (needs an interface; not supported)")
		}
		seen[r.Prefix] = true
		out = append(out, t)
	}
	return out, errs
}

// plan decides the writes and deletions that make the main table (table:
// every route of the main table, both families) hold the targets:
//   - a target whose prefix another owner holds (a route of any protocol
//     but RouteProtocol) is reported foreign and not written;
//   - a failed target is an error; what is installed at its prefix stays;
//   - a target already installed as wanted is not written again;
//   - our routes at a wanted prefix with another metric are deleted (the
//     written route replaces the one with the default metric);
//   - with sweep, our routes at prefixes not wanted at all are deleted.
func plan(targets []target, table []netlink.Route, sweep bool) planned {
	own := map[netip.Prefix][]netlink.Route{}
	other := map[netip.Prefix]bool{}
	for _, r := range table {
		dst, ok := routeDst(r)
		if !ok {
			continue
		}
		if r.Protocol == RouteProtocol {
			own[dst] = append(own[dst], r)
		} else {
			other[dst] = true
		}
	}
	var p planned
	wanted := map[netip.Prefix]bool{}
	for _, t := range targets {
		dst := t.route.Prefix
		wanted[dst] = true
		if other[dst] {
			p.foreign = append(p.foreign, t.route)
			continue
		}
		if t.err != nil {
			p.errs = append(p.errs, &bgp.KernelRouteError{Route: t.route, Err: t.err})
			continue
		}
		nr := kernelRoute(dst, t.gw, t.link)
		found := false
		for _, cur := range own[dst] {
			switch {
			case installedAs(cur, nr):
				found = true
			case !defaultMetric(cur):
				p.del = append(p.del, cur)
			}
		}
		if !found {
			p.write = append(p.write, write{route: t.route, nl: nr})
		}
	}
	if sweep {
		for dst, rs := range own {
			if !wanted[dst] {
				p.del = append(p.del, rs...)
			}
		}
	}
	sortRoutes(p.foreign)
	sortNetlink(p.del)
	return p
}

// kernelRoute is the route this package installs for dst via gw on link.
func kernelRoute(dst netip.Prefix, gw netip.Addr, link int) netlink.Route {
	return netlink.Route{
		Dst:       prefixToIPNet(dst),
		Gw:        net.IP(gw.AsSlice()),
		LinkIndex: link,
		Protocol:  RouteProtocol,
		Table:     unix.RT_TABLE_MAIN,
		Scope:     netlink.SCOPE_UNIVERSE,
		Type:      unix.RTN_UNICAST,
	}
}

// installedAs reports whether cur (one of ours, as dumped) is want.
func installedAs(cur, want netlink.Route) bool {
	typ := cur.Type
	if typ == 0 {
		typ = unix.RTN_UNICAST
	}
	return typ == want.Type && cur.Scope == want.Scope && cur.LinkIndex == want.LinkIndex &&
		cur.Gw.Equal(want.Gw) && len(cur.MultiPath) == 0 && cur.Flags&int(netlink.FLAG_ONLINK) == 0 &&
		defaultMetric(cur) && cur.Tos == 0 && cur.Encap == nil && cur.Via == nil
}

// defaultMetric: the metric a route installed without one gets (IPv6
// stores 1024).
func defaultMetric(r netlink.Route) bool {
	if r.Priority == 0 {
		return true
	}
	dst, ok := routeDst(r)
	return ok && dst.Addr().Is6() && r.Priority == 1024
}

func sortNetlink(rs []netlink.Route) {
	sort.SliceStable(rs, func(i, j int) bool {
		a, _ := routeDst(rs[i])
		b, _ := routeDst(rs[j])
		return prefixLess(a, b)
	})
}
