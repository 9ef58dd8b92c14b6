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
	filter := &netlink.Route{Protocol: RouteProtocol, Table: n.table()}
	return n.h().RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
}

// syncRoutes makes the table hold exactly d's routes among those tagged
// RouteProtocol. A route another owner holds at a desired destination
// (any protocol but RouteProtocol) is never replaced: the desired route is
// skipped and reported in a *routing.ForeignRouteError.
func (n *Programmer) syncRoutes(logger klog.Logger, d *routing.Desired) error {
	n.ops.dumps.Add(1)
	all, err := n.h().RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: n.table()}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
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
	links := map[string]int{}
	want := map[netip.Prefix]bool{}
	var errs []error
	var blocked []routing.Route
	for _, r := range d.Routes {
		want[r.Dst] = true
		if f, ok := foreign[r.Dst]; ok {
			logger.Info("Not programming a route: another owner's route holds the destination",
				"dst", r.Dst, "node", r.Node, "foreignProtocol", int(f.Protocol), "foreignRoute", f.String())
			blocked = append(blocked, r)
			continue
		}
		nr, err := n.kernelRoute(r, links)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if cur, ok := byDst[r.Dst]; ok && routeEqual(cur, nr) {
			continue
		}
		logger.V(2).Info("Programming route", "dst", r.Dst, "gw", r.Gw, "dev", r.Dev, "unreachable", r.Unreachable, "node", r.Node, "path", r.Path)
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
		r := r
		n.ops.deletes.Add(1)
		if err := n.h().RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %s: %w", dst, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if len(blocked) > 0 {
		return &routing.ForeignRouteError{Routes: blocked}
	}
	return nil
}

// kernelRoute is r as a netlink route tagged RouteProtocol; links caches
// device indexes by name.
func (n *Programmer) kernelRoute(r routing.Route, links map[string]int) (netlink.Route, error) {
	nr := netlink.Route{Dst: prefixToIPNet(r.Dst), Protocol: RouteProtocol, Table: n.table(), Scope: netlink.SCOPE_UNIVERSE}
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
	if !r.Gw.IsValid() {
		// Straight into the device (WireGuard): a link-scope route.
		nr.Scope = netlink.SCOPE_LINK
	}
	if r.OnLink {
		nr.Flags = int(netlink.FLAG_ONLINK)
	}
	return nr, nil
}

func routeEqual(a, b netlink.Route) bool {
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

func (n *Programmer) syncFDB(logger klog.Logger, link netlink.Link, want []routing.FDBEntry) error {
	n.ops.dumps.Add(1)
	have, err := n.ListFDB(link)
	if err != nil {
		return fmt.Errorf("list FDB of %s: %w", link.Attrs().Name, err)
	}
	type key struct{ mac, dst string }
	haveSet := map[key]netlink.Neigh{}
	for _, e := range have {
		if e.IP == nil {
			continue
		}
		haveSet[key{e.HardwareAddr.String(), e.IP.String()}] = e
	}
	wantSet := map[key]bool{}
	var errs []error
	for _, e := range want {
		mac, err := net.ParseMAC(e.MAC)
		if err != nil {
			errs = append(errs, fmt.Errorf("FDB entry for %s: %w", e.Node, err))
			continue
		}
		k := key{mac.String(), e.Dst.String()}
		wantSet[k] = true
		if cur, ok := haveSet[k]; ok && cur.State&netlink.NUD_PERMANENT != 0 {
			continue
		}
		logger.V(2).Info("Programming FDB entry", "mac", e.MAC, "dst", e.Dst, "node", e.Node)
		nb := &netlink.Neigh{
			LinkIndex: link.Attrs().Index, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
			Flags: netlink.NTF_SELF, IP: net.IP(e.Dst.AsSlice()), HardwareAddr: mac,
		}
		n.ops.writes.Add(1)
		if err := n.h().NeighSet(nb); err != nil {
			errs = append(errs, fmt.Errorf("set FDB %s -> %s: %w", e.MAC, e.Dst, err))
		}
	}
	for k, e := range haveSet {
		if wantSet[k] {
			continue
		}
		logger.V(2).Info("Deleting FDB entry no longer wanted", "mac", k.mac, "dst", k.dst)
		e := e
		e.Flags |= netlink.NTF_SELF
		n.ops.deletes.Add(1)
		if err := n.h().NeighDel(&e); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete FDB %s -> %s: %w", k.mac, k.dst, err))
		}
	}
	return errors.Join(errs...)
}

// ListNeighbors returns the IPv4 neighbour entries on link.
func (n *Programmer) ListNeighbors(link netlink.Link) ([]netlink.Neigh, error) {
	return neighList(n.h(), link.Attrs().Index, netlink.FAMILY_V4)
}

func (n *Programmer) syncNeighbors(logger klog.Logger, link netlink.Link, want []routing.Neighbor) error {
	n.ops.dumps.Add(1)
	have, err := n.ListNeighbors(link)
	if err != nil {
		return fmt.Errorf("list neighbours of %s: %w", link.Attrs().Name, err)
	}
	haveByIP := map[netip.Addr]netlink.Neigh{}
	for _, e := range have {
		ip, ok := netip.AddrFromSlice(e.IP)
		if ok {
			haveByIP[ip.Unmap()] = e
		}
	}
	wantIP := map[netip.Addr]bool{}
	var errs []error
	for _, e := range want {
		mac, err := net.ParseMAC(e.MAC)
		if err != nil {
			errs = append(errs, fmt.Errorf("neighbour for %s: %w", e.Node, err))
			continue
		}
		wantIP[e.IP] = true
		if cur, ok := haveByIP[e.IP]; ok && cur.State&netlink.NUD_PERMANENT != 0 && cur.HardwareAddr.String() == mac.String() {
			continue
		}
		logger.V(2).Info("Programming neighbour", "ip", e.IP, "mac", e.MAC, "node", e.Node)
		nb := &netlink.Neigh{
			LinkIndex: link.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
			IP: net.IP(e.IP.AsSlice()), HardwareAddr: mac,
		}
		n.ops.writes.Add(1)
		if err := n.h().NeighSet(nb); err != nil {
			errs = append(errs, fmt.Errorf("set neighbour %s -> %s: %w", e.IP, e.MAC, err))
		}
	}
	for ip, e := range haveByIP {
		if wantIP[ip] {
			continue
		}
		logger.V(2).Info("Deleting neighbour no longer wanted", "ip", ip)
		e := e
		n.ops.deletes.Add(1)
		if err := n.h().NeighDel(&e); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete neighbour %s: %w", ip, err))
		}
	}
	return errors.Join(errs...)
}

func ipNetToPrefix(n *net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}
