package netlinkprog

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/trellisnet/trellis/internal/routing"
)

// kernelState is what the Programmer's last successful Apply or
// ApplyChanges left in the kernel.
type kernelState struct {
	wireGuard *routing.WireGuard
	// overlay is the VXLAN device over IPv4, overlay6 over IPv6.
	overlay, overlay6 overlayState
	removeVXLAN       string
	removeVXLAN6      string
	removeWireGuard   string
	routes            map[netip.Prefix]routeSpec // programmed, by destination
	foreign           map[netip.Prefix]bool      // desired destinations another owner holds
	links             map[string]int             // device indexes by name
}

// overlayState is one VXLAN device as programmed (dev nil: none).
type overlayState struct {
	dev       *routing.VXLANDevice
	index     int
	fdb       map[fdbKey]bool
	neighbors map[netip.Addr]string // VTEP address → MAC
}

var _ routing.IncrementalDataplane = (*Programmer)(nil)

// newRoute is a route to add: as desired and as sent.
type newRoute struct {
	spec routeSpec
	nr   netlink.Route
}

// routeSpec is what of a routing.Route reaches the kernel.
type routeSpec struct {
	gw          netip.Addr
	dev         string
	onLink      bool
	unreachable bool
}

func specOf(r routing.Route) routeSpec {
	return routeSpec{gw: r.Gw, dev: r.Dev, onLink: r.OnLink, unreachable: r.Unreachable}
}

// routeToDelete is the agent's route at dst as RouteDel needs it: no
// next hop (the kernel matches any), the protocol, type and scope it was
// added with.
func (n *session) routeToDelete(dst netip.Prefix, spec routeSpec) netlink.Route {
	nr := netlink.Route{Dst: prefixToIPNet(dst), Protocol: RouteProtocol, Table: n.table(), Scope: netlink.SCOPE_UNIVERSE}
	switch {
	case spec.unreachable:
		nr.Type = unix.RTN_UNREACHABLE
	case !spec.gw.IsValid() && !dst.Addr().Is6():
		nr.Scope = netlink.SCOPE_LINK
	}
	return nr
}

// errFallBack: the change needs Apply (listing the kernel) after all.
var errFallBack = errors.New("needs a full apply")

// ApplyChanges makes the kernel hold d like Apply, without listing it: it
// compares d with what the last Apply or ApplyChanges programmed and
// writes only the difference (a Node added: its route, or its FDB entry,
// neighbour entry and route). It is Apply when there is no such record (the
// first call, after a failure), when a device changes, and when a
// programmed route would change (Apply checks who holds the destination
// before it replaces a route). A new route is added exclusively, so a
// route another owner installed meanwhile is never replaced: the kernel
// refuses, and Apply sorts it out. What others changed since the last
// Apply (an entry deleted by hand) is not seen: call Apply periodically.
func (n *Programmer) ApplyChanges(ctx context.Context, d *routing.Desired) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := n.state
	if st == nil || !st.sameDevices(d) {
		return n.applyFull(ctx, d)
	}
	s, done, err := n.open()
	if err != nil {
		return err
	}
	err = s.applyChanges(ctx, st, d)
	done()
	var foreign *routing.ForeignRouteError
	switch {
	case errors.Is(err, errFallBack):
		return n.applyFull(ctx, d)
	case err != nil && !errors.As(err, &foreign):
		n.state = nil
	}
	return err
}

// sameDevices: d wants the devices st holds (and removes the same ones).
func (st *kernelState) sameDevices(d *routing.Desired) bool {
	same := func(a, b *routing.VXLANDevice) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }
	return same(d.VXLAN, st.overlay.dev) && same(d.VXLAN6, st.overlay6.dev) && (d.WireGuard == nil) == (st.wireGuard == nil) &&
		d.RemoveVXLAN == st.removeVXLAN && d.RemoveVXLAN6 == st.removeVXLAN6 && d.RemoveWireGuard == st.removeWireGuard
}

// routeChanges are the route writes that take st to d.
type routeChanges struct {
	add     []newRoute
	del     []netip.Prefix
	blocked []routing.Route
	want    map[netip.Prefix]bool
}

func (n *session) applyChanges(ctx context.Context, st *kernelState, d *routing.Desired) error {
	logger := klog.FromContext(ctx).WithName("netlinkprog")
	n.had6 = n.had6 || wantsIPv6(d)
	rc, err := n.planRoutes(st, d)
	if err != nil {
		return err
	}
	if d.WireGuard != nil {
		// Always: the device's private key is not in d (a rotation of this
		// node's key triggers a sync that changes nothing else).
		if err := n.applyWireGuard(ctx, logger, d.WireGuard); err != nil {
			return err
		}
		st.wireGuard = d.WireGuard
	}
	if d.VXLAN != nil {
		if err := n.changeFDB(logger, &st.overlay, d.FDB); err != nil {
			return err
		}
		if err := n.changeNeighbors(logger, &st.overlay, d.Neighbors); err != nil {
			return err
		}
	}
	if d.VXLAN6 != nil {
		if err := n.changeFDB(logger, &st.overlay6, d.FDB6); err != nil {
			return err
		}
		if err := n.changeNeighbors(logger, &st.overlay6, d.Neighbors6); err != nil {
			return err
		}
	}
	for _, r := range rc.add {
		logger.V(2).Info("Adding route", "dst", r.nr.Dst, "gw", r.spec.gw, "dev", r.spec.dev, "unreachable", r.spec.unreachable)
		n.ops.writes.Add(1)
		err := n.h().RouteAdd(&r.nr)
		if errors.Is(err, unix.EEXIST) {
			logger.V(2).Info("A route appeared at the destination since the last full apply; applying in full", "dst", r.nr.Dst)
			return errFallBack
		}
		if err != nil {
			return fmt.Errorf("add route %s: %w", r.nr.Dst, err)
		}
		st.routes[ipNetToPrefix(r.nr.Dst)] = r.spec
	}
	for _, dst := range rc.del {
		logger.V(2).Info("Deleting route no longer wanted", "dst", dst)
		if err := n.deleteRoute(n.routeToDelete(dst, st.routes[dst])); err != nil {
			return err
		}
		delete(st.routes, dst)
	}
	for dst := range st.foreign {
		if !rc.want[dst] {
			delete(st.foreign, dst)
		}
	}
	if len(rc.blocked) > 0 {
		return &routing.ForeignRouteError{Routes: rc.blocked}
	}
	return nil
}

// planRoutes compares d's routes with st's; a programmed route that
// would change, or a device whose index changed, is errFallBack.
func (n *session) planRoutes(st *kernelState, d *routing.Desired) (*routeChanges, error) {
	for name, idx := range st.links {
		l, err := n.h().LinkByName(name)
		if err != nil || l.Attrs().Index != idx {
			return nil, errFallBack
		}
	}
	rc := &routeChanges{want: make(map[netip.Prefix]bool, len(d.Routes))}
	for _, r := range d.Routes {
		rc.want[r.Dst] = true
		if st.foreign[r.Dst] {
			rc.blocked = append(rc.blocked, r)
			continue
		}
		cur, ok := st.routes[r.Dst]
		if ok {
			if cur != specOf(r) {
				return nil, errFallBack
			}
			continue
		}
		nr, err := n.kernelRoute(r, st.links)
		if err != nil {
			return nil, err
		}
		rc.add = append(rc.add, newRoute{spec: specOf(r), nr: nr})
	}
	for dst := range st.routes {
		if !rc.want[dst] {
			rc.del = append(rc.del, dst)
		}
	}
	return rc, nil
}

func (n *session) changeFDB(logger klog.Logger, st *overlayState, want []routing.FDBEntry) error {
	wantSet := make(map[fdbKey]bool, len(want))
	for _, e := range want {
		// Desired MACs are in net.HardwareAddr's form already (one that
		// is not only costs a redundant, idempotent write).
		k := fdbKey{e.MAC, e.Dst}
		if st.fdb[k] {
			wantSet[k] = true
			continue
		}
		mac, err := net.ParseMAC(e.MAC)
		if err != nil {
			return fmt.Errorf("FDB entry for %s: %w", e.Node, err)
		}
		k.mac = mac.String()
		wantSet[k] = true
		if st.fdb[k] {
			continue
		}
		logger.V(2).Info("Programming FDB entry", "mac", e.MAC, "dst", e.Dst, "node", e.Node)
		if err := n.setFDB(st.index, k); err != nil {
			return err
		}
		st.fdb[k] = true
	}
	for k := range st.fdb {
		if wantSet[k] {
			continue
		}
		mac, _ := net.ParseMAC(k.mac)
		logger.V(2).Info("Deleting FDB entry no longer wanted", "mac", k.mac, "dst", k.dst)
		if err := n.deleteFDB(netlink.Neigh{LinkIndex: st.index, Family: unix.AF_BRIDGE,
			IP: net.IP(k.dst.AsSlice()), HardwareAddr: mac}); err != nil {
			return err
		}
		delete(st.fdb, k)
	}
	return nil
}

func (n *session) changeNeighbors(logger klog.Logger, st *overlayState, want []routing.Neighbor) error {
	wantIP := make(map[netip.Addr]bool, len(want))
	for _, e := range want {
		wantIP[e.IP] = true
		if st.neighbors[e.IP] == e.MAC {
			continue
		}
		mac, err := net.ParseMAC(e.MAC)
		if err != nil {
			return fmt.Errorf("neighbour for %s: %w", e.Node, err)
		}
		logger.V(2).Info("Programming neighbour", "ip", e.IP, "mac", e.MAC, "node", e.Node)
		if err := n.setNeighbor(st.index, e.IP, mac); err != nil {
			return err
		}
		st.neighbors[e.IP] = mac.String()
	}
	for ip := range st.neighbors {
		if wantIP[ip] {
			continue
		}
		logger.V(2).Info("Deleting neighbour no longer wanted", "ip", ip)
		if err := n.deleteNeighbor(netlink.Neigh{LinkIndex: st.index, Family: neighFamily(ip),
			IP: net.IP(ip.AsSlice())}); err != nil {
			return err
		}
		delete(st.neighbors, ip)
	}
	return nil
}
