package netlinkprog

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/trellisnet/trellis/internal/routing"
)

// ListRoutes returns the IPv4 routes in the table tagged RouteProtocol.
func (n *Programmer) ListRoutes() ([]netlink.Route, error) {
	return n.listRoutes(netlink.FAMILY_V4)
}

// ListRoutes6 returns the IPv6 routes in the table tagged RouteProtocol.
func (n *Programmer) ListRoutes6() ([]netlink.Route, error) {
	return n.listRoutes(netlink.FAMILY_V6)
}

func (n *Programmer) listRoutes(family int) ([]netlink.Route, error) {
	filter := &netlink.Route{Protocol: RouteProtocol, Table: n.table()}
	return n.h().RouteListFiltered(family, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
}

// IPv6 routes carry a metric: the kernel gives 1024 to a route added
// without one. Routes are added with it explicitly, so that what is read
// back compares equal to what is desired (IPv4 routes keep none).
const ipv6RouteMetric = 1024

// syncRoutes makes the table hold exactly d's routes among those tagged
// RouteProtocol. A route another owner holds at a desired destination
// (any protocol but RouteProtocol) is never replaced: the desired route is
// skipped and reported in a *routing.ForeignRouteError. It returns the
// routes now programmed by destination; st.links caches device indexes and
// st.foreign receives the skipped destinations.
func (n *session) syncRoutes(logger klog.Logger, d *routing.Desired, st *kernelState) (map[netip.Prefix]routeSpec, error) {
	n.ops.dumps.Add(1)
	all, err := n.h().RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: n.table()}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	want6 := wantsIPv6(d)
	if want6 || n.had6 {
		// IPv6 is listed only when a desired route is IPv6 or an earlier
		// apply of this Programmer programmed one: an IPv4 node's sync
		// costs what it always did.
		n.ops.dumps.Add(1)
		all6, err := n.h().RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{Table: n.table()}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("list IPv6 routes: %w", err)
		}
		all = append(all, all6...)
	}
	byDst := map[netip.Prefix]netlink.Route{}
	foreign := map[netip.Prefix]netlink.Route{}
	for _, r := range all {
		if r.Dst == nil {
			continue
		}
		if r.Protocol == RouteProtocol {
			byDst[ipNetToPrefix(r.Dst)] = r
		} else {
			foreign[ipNetToPrefix(r.Dst)] = r
		}
	}
	programmed := make(map[netip.Prefix]routeSpec, len(d.Routes))
	want := make(map[netip.Prefix]bool, len(d.Routes))
	st.foreign = map[netip.Prefix]bool{}
	var errs []error
	var blocked []routing.Route
	for _, r := range d.Routes {
		want[r.Dst] = true
		if f, ok := foreign[r.Dst]; ok {
			logger.Info("Not programming a route: another owner's route holds the destination",
				"dst", r.Dst, "node", r.Node, "foreignProtocol", int(f.Protocol), "foreignRoute", f.String())
			blocked = append(blocked, r)
			st.foreign[r.Dst] = true
			continue
		}
		nr, err := n.kernelRoute(r, st.links)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		programmed[r.Dst] = specOf(r)
		if cur, ok := byDst[r.Dst]; ok && routeEqual(cur, nr) {
			continue
		}
		logger.V(2).Info("Programming route", "dst", r.Dst, "gw", r.Gw, "dev", r.Dev, "unreachable", r.Unreachable, "node", r.Node, "path", r.Path)
		if cur, ok := byDst[r.Dst]; ok && r.OnLink && r.Dst.Addr().Is6() {
			// The kernel checks an IPv6 on-link gateway against the
			// table: the route being replaced (its destination holds the
			// VTEP address) would fail that check through another
			// device (EINVAL). Delete it first.
			if err := n.deleteRoute(cur); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		n.ops.writes.Add(1)
		if err := n.h().RouteReplace(&nr); err != nil {
			errs = append(errs, fmt.Errorf("replace route %s via %s dev %s: %w", r.Dst, r.Gw, r.Dev, err))
		}
	}
	for dst, r := range byDst {
		if want[dst] {
			continue
		}
		logger.V(2).Info("Deleting route no longer wanted", "dst", dst)
		if err := n.deleteRoute(r); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		n.had6 = n.had6 || want6
		return nil, err
	}
	n.had6 = want6
	if len(blocked) > 0 {
		return programmed, &routing.ForeignRouteError{Routes: blocked}
	}
	return programmed, nil
}

// deleteRoute deletes one of the agent's routes (the kernel matches the
// protocol too: another owner's route at the destination stays).
func (n *session) deleteRoute(r netlink.Route) error {
	r.Protocol = RouteProtocol
	n.ops.deletes.Add(1)
	if err := n.h().RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("delete route %s: %w", r.Dst, err)
	}
	return nil
}

// kernelRoute is r as a netlink route tagged RouteProtocol; links caches
// device indexes by name.
func (n *session) kernelRoute(r routing.Route, links map[string]int) (netlink.Route, error) {
	nr := netlink.Route{Dst: prefixToIPNet(r.Dst), Protocol: RouteProtocol, Table: n.table(), Scope: netlink.SCOPE_UNIVERSE}
	v6 := r.Dst.Addr().Is6()
	if v6 {
		nr.Priority = ipv6RouteMetric
	}
	if r.Unreachable {
		nr.Type = unix.RTN_UNREACHABLE
		return nr, nil
	}
	idx, ok := links[r.Dev]
	if !ok {
		l, err := n.h().LinkByName(r.Dev)
		if err != nil {
			return nr, fmt.Errorf("route %s: device %s: %w", r.Dst, r.Dev, err)
		}
		idx = l.Attrs().Index
		links[r.Dev] = idx
	}
	nr.Gw, nr.LinkIndex = net.IP(r.Gw.AsSlice()), idx
	if !r.Gw.IsValid() && !v6 {
		// Straight into the device (WireGuard): a link-scope route (IPv6
		// routes have no scope).
		nr.Scope = netlink.SCOPE_LINK
	}
	if r.OnLink {
		nr.Flags = int(netlink.FLAG_ONLINK)
	}
	return nr, nil
}

func routeEqual(a, b netlink.Route) bool {
	if routeType(a) == unix.RTN_UNREACHABLE && routeType(b) == unix.RTN_UNREACHABLE {
		// The kernel puts an IPv6 unreachable route on lo: no device to
		// compare.
		return a.Priority == b.Priority
	}
	return a.LinkIndex == b.LinkIndex && a.Gw.Equal(b.Gw) && routeType(a) == routeType(b) &&
		(a.Flags&int(netlink.FLAG_ONLINK)) == (b.Flags&int(netlink.FLAG_ONLINK)) &&
		a.Priority == b.Priority && a.Scope == b.Scope
}

func routeType(r netlink.Route) int {
	if r.Type == 0 {
		return unix.RTN_UNICAST
	}
	return r.Type
}

// ListFDB returns the bridge FDB entries on link.
func (n *Programmer) ListFDB(link netlink.Link) ([]netlink.Neigh, error) {
	return neighList(n.h(), link.Attrs().Index, unix.AF_BRIDGE)
}

// fdbKey is one static FDB entry: a VTEP MAC and the node IP behind it.
type fdbKey struct {
	mac string
	dst netip.Addr
}

// syncFDB makes link's FDB hold exactly want and returns it as a set.
func (n *session) syncFDB(logger klog.Logger, link netlink.Link, want []routing.FDBEntry) (map[fdbKey]bool, error) {
	n.ops.dumps.Add(1)
	have, err := neighList(n.h(), link.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		return nil, fmt.Errorf("list FDB of %s: %w", link.Attrs().Name, err)
	}
	haveSet := map[fdbKey]netlink.Neigh{}
	for _, e := range have {
		ip, ok := netip.AddrFromSlice(e.IP)
		if !ok {
			continue
		}
		haveSet[fdbKey{e.HardwareAddr.String(), ip.Unmap()}] = e
	}
	wantSet := make(map[fdbKey]bool, len(want))
	var errs []error
	for _, e := range want {
		mac, err := net.ParseMAC(e.MAC)
		if err != nil {
			errs = append(errs, fmt.Errorf("FDB entry for %s: %w", e.Node, err))
			continue
		}
		k := fdbKey{mac.String(), e.Dst}
		wantSet[k] = true
		if cur, ok := haveSet[k]; ok && cur.State&netlink.NUD_PERMANENT != 0 {
			continue
		}
		logger.V(2).Info("Programming FDB entry", "mac", e.MAC, "dst", e.Dst, "node", e.Node)
		if err := n.setFDB(link.Attrs().Index, k); err != nil {
			errs = append(errs, err)
		}
	}
	for k, e := range haveSet {
		if wantSet[k] {
			continue
		}
		logger.V(2).Info("Deleting FDB entry no longer wanted", "mac", k.mac, "dst", k.dst)
		if err := n.deleteFDB(e); err != nil {
			errs = append(errs, err)
		}
	}
	return wantSet, errors.Join(errs...)
}

func (n *session) setFDB(linkIndex int, k fdbKey) error {
	mac, err := net.ParseMAC(k.mac)
	if err != nil {
		return fmt.Errorf("FDB entry %s: %w", k.mac, err)
	}
	nb := &netlink.Neigh{
		LinkIndex: linkIndex, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
		Flags: netlink.NTF_SELF, IP: net.IP(k.dst.AsSlice()), HardwareAddr: mac,
	}
	n.ops.writes.Add(1)
	if err := n.h().NeighSet(nb); err != nil {
		return fmt.Errorf("set FDB %s -> %s: %w", k.mac, k.dst, err)
	}
	return nil
}

func (n *session) deleteFDB(e netlink.Neigh) error {
	e.Flags |= netlink.NTF_SELF
	n.ops.deletes.Add(1)
	if err := n.h().NeighDel(&e); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete FDB %s -> %s: %w", e.HardwareAddr, e.IP, err)
	}
	return nil
}

// ListNeighbors returns the IPv4 neighbour entries on link.
func (n *Programmer) ListNeighbors(link netlink.Link) ([]netlink.Neigh, error) {
	return neighList(n.h(), link.Attrs().Index, netlink.FAMILY_V4)
}

// ListNeighbors6 returns the IPv6 neighbour entries on link.
func (n *Programmer) ListNeighbors6(link netlink.Link) ([]netlink.Neigh, error) {
	return neighList(n.h(), link.Attrs().Index, netlink.FAMILY_V6)
}

// syncNeighbors makes link's neighbours exactly want (permanent) and
// returns them as VTEP address → MAC. IPv4 neighbours are always managed;
// IPv6 ones (never link-local or multicast: the kernel's own) when the
// device has an IPv6 VTEP address, an IPv6 neighbour is desired, or this
// Programmer programmed IPv6 before.
func (n *session) syncNeighbors(logger klog.Logger, link netlink.Link, want []routing.Neighbor, v6 bool) (map[netip.Addr]string, error) {
	n.ops.dumps.Add(1)
	have, err := neighList(n.h(), link.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list neighbours of %s: %w", link.Attrs().Name, err)
	}
	v6 = v6 || n.had6 // an earlier apply may have left IPv6 neighbours
	if !v6 {
		for _, e := range want {
			v6 = v6 || e.IP.Is6()
		}
	}
	if v6 {
		n.ops.dumps.Add(1)
		have6, err := neighList(n.h(), link.Attrs().Index, netlink.FAMILY_V6)
		if err != nil {
			return nil, fmt.Errorf("list IPv6 neighbours of %s: %w", link.Attrs().Name, err)
		}
		for _, e := range have6 {
			if ip, ok := netip.AddrFromSlice(e.IP); ok && !ip.IsLinkLocalUnicast() && !ip.IsMulticast() {
				have = append(have, e)
			}
		}
	}
	haveByIP := map[netip.Addr]netlink.Neigh{}
	for _, e := range have {
		ip, ok := netip.AddrFromSlice(e.IP)
		if ok {
			haveByIP[ip.Unmap()] = e
		}
	}
	wantIP := make(map[netip.Addr]string, len(want))
	var errs []error
	for _, e := range want {
		mac, err := net.ParseMAC(e.MAC)
		if err != nil {
			errs = append(errs, fmt.Errorf("neighbour for %s: %w", e.Node, err))
			continue
		}
		wantIP[e.IP] = mac.String()
		if cur, ok := haveByIP[e.IP]; ok && cur.State&netlink.NUD_PERMANENT != 0 && cur.HardwareAddr.String() == mac.String() {
			continue
		}
		logger.V(2).Info("Programming neighbour", "ip", e.IP, "mac", e.MAC, "node", e.Node)
		if err := n.setNeighbor(link.Attrs().Index, e.IP, mac); err != nil {
			errs = append(errs, err)
		}
	}
	for ip, e := range haveByIP {
		if _, ok := wantIP[ip]; ok {
			continue
		}
		logger.V(2).Info("Deleting neighbour no longer wanted", "ip", ip)
		if err := n.deleteNeighbor(e); err != nil {
			errs = append(errs, err)
		}
	}
	return wantIP, errors.Join(errs...)
}

func (n *session) setNeighbor(linkIndex int, ip netip.Addr, mac net.HardwareAddr) error {
	nb := &netlink.Neigh{
		LinkIndex: linkIndex, Family: neighFamily(ip), State: netlink.NUD_PERMANENT,
		IP: net.IP(ip.AsSlice()), HardwareAddr: mac,
	}
	n.ops.writes.Add(1)
	if err := n.h().NeighSet(nb); err != nil {
		return fmt.Errorf("set neighbour %s -> %s: %w", ip, mac, err)
	}
	return nil
}

func (n *session) deleteNeighbor(e netlink.Neigh) error {
	n.ops.deletes.Add(1)
	if err := n.h().NeighDel(&e); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete neighbour %s: %w", e.IP, err)
	}
	return nil
}

// neighFamily is the neighbour table family of ip.
func neighFamily(ip netip.Addr) int {
	if ip.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// wantsIPv6 reports whether d has anything IPv6 for the route table.
func wantsIPv6(d *routing.Desired) bool {
	for _, r := range d.Routes {
		if r.Dst.Addr().Is6() {
			return true
		}
	}
	return false
}

func ipNetToPrefix(n *net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}
