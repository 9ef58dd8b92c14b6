// Package netlinkprog programs the routing controller's desired state into
// the kernel with netlink: the VXLAN device, routes to remote pod subnets
// (tagged with RouteProtocol so leftovers are recognised), static FDB and
// neighbour entries; the WireGuard device and its peers go through a
// wireguard.Kernel (internal/wireguard/wgdev) before the routes into it.
// Every operation is idempotent; nothing is flushed: existing state is
// adopted when it matches and replaced or deleted when not.
package netlinkprog

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/trellisnet/trellis/internal/routing"
	"github.com/trellisnet/trellis/internal/wireguard"
)

// RouteProtocol tags every route the agent installs (rtnetlink protocol
// number; /etc/iproute2/rt_protos names it "trellis" if an operator adds it).
const RouteProtocol netlink.RouteProtocol = 0x9e // 158

// Programmer is the real kernel side of routing. The zero value uses the calling
// thread's network namespace; Handle may target another one (tests).
type Programmer struct {
	// Handle is the netlink handle to use (nil: the default namespace handle).
	Handle *netlink.Handle
	// Table is the routing table (0: main).
	Table int
	// NetnsPath, when Handle targets another namespace, is that namespace's
	// path, so that helpers run as processes (ethtool) act there too.
	NetnsPath string
	// SysctlRoot is where net sysctls are written (empty: /proc/sys).
	SysctlRoot string
	// WireGuard programs the WireGuard device and its peers (nil:
	// encryption unsupported; a desired device is then an error).
	WireGuard wireguard.Kernel

	ops opCounters
	// mu serialises Apply and ApplyChanges and guards state.
	mu sync.Mutex
	// state is what the last Apply or ApplyChanges left in the kernel
	// (nil: unknown, after a failure or before the first).
	state *kernelState
	// had6: an IPv6 route may be programmed (a full apply then lists the
	// IPv6 table even when none is desired any more).
	had6 bool
}

var _ routing.Dataplane = (*Programmer)(nil)

// h returns the netlink handle wrapped by netlinksafe, whose dump methods
// retry when the kernel interrupts a dump (NLM_F_DUMP_INTR).
func (n *Programmer) h() netlinksafe.Handle {
	if n.Handle != nil {
		return netlinksafe.Handle{Handle: n.Handle}
	}
	return netlinksafe.Handle{Handle: &netlink.Handle{}}
}

func (n *Programmer) table() int {
	if n.Table == 0 {
		return unix.RT_TABLE_MAIN
	}
	return n.Table
}

// Underlay finds the interface that holds nodeIP; Connected are the
// subnets of every address of nodeIP's family on the node.
func (n *Programmer) Underlay(nodeIP netip.Addr) (routing.Underlay, error) {
	family := netlink.FAMILY_V4
	if nodeIP.Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := addrList(n.h(), nil, family)
	if err != nil {
		return routing.Underlay{}, fmt.Errorf("list addresses: %w", err)
	}
	var ul routing.Underlay
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		ul.Connected = append(ul.Connected, netip.PrefixFrom(ip.Unmap(), ones).Masked())
		if ip.Unmap() != nodeIP || ul.Device != "" {
			continue
		}
		link, err := n.h().LinkByIndex(a.LinkIndex)
		if err != nil {
			return routing.Underlay{}, fmt.Errorf("link %d holding %s: %w", a.LinkIndex, nodeIP, err)
		}
		ul.Device, ul.Prefix, ul.MTU = link.Attrs().Name, netip.PrefixFrom(nodeIP, ones), link.Attrs().MTU
	}
	if ul.Device == "" {
		return routing.Underlay{}, fmt.Errorf("no interface holds the node IP %s", nodeIP)
	}
	return ul, nil
}

// Apply programs d after listing what the kernel holds: it adopts what
// matches, adds what is missing, deletes what is no longer wanted. Order:
// WireGuard device and peers, VXLAN device, FDB and neighbours, routes
// (add/replace), then deletions of what is no longer wanted (routes first,
// then devices). It records what it programmed for ApplyChanges.
func (n *Programmer) Apply(ctx context.Context, d *routing.Desired) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.applyFull(ctx, d)
}

func (n *Programmer) applyFull(ctx context.Context, d *routing.Desired) error {
	n.state = nil
	s, done, err := n.open()
	if err != nil {
		return err
	}
	defer done()
	logger := klog.FromContext(ctx).WithName("netlinkprog")
	st := &kernelState{links: map[string]int{}, removeVXLAN: d.RemoveVXLAN, removeVXLAN6: d.RemoveVXLAN6, removeWireGuard: d.RemoveWireGuard}
	if d.WireGuard != nil {
		if err := s.applyWireGuard(ctx, logger, d.WireGuard); err != nil {
			return err
		}
		st.wireGuard = d.WireGuard
	}
	for _, o := range []struct {
		dev       *routing.VXLANDevice
		fdb       []routing.FDBEntry
		neighbors []routing.Neighbor
		st        *overlayState
	}{{d.VXLAN, d.FDB, d.Neighbors, &st.overlay}, {d.VXLAN6, d.FDB6, d.Neighbors6, &st.overlay6}} {
		if o.dev == nil {
			continue
		}
		vx, err := s.ensureVXLAN(logger, o.dev)
		if err != nil {
			return err
		}
		o.st.dev, o.st.index = o.dev, vx.Attrs().Index
		if o.st.fdb, err = s.syncFDB(logger, vx, o.fdb); err != nil {
			return err
		}
		if o.st.neighbors, err = s.syncNeighbors(logger, vx, o.neighbors, o.dev.Addr6.IsValid()); err != nil {
			return err
		}
	}
	routes, routesErr := s.syncRoutes(logger, d, st)
	var foreign *routing.ForeignRouteError
	if routesErr != nil && !errors.As(routesErr, &foreign) {
		return routesErr
	}
	st.routes = routes
	for _, name := range []string{d.RemoveVXLAN, d.RemoveVXLAN6} {
		if name == "" {
			continue
		}
		if err := s.deleteVXLAN(logger, name); err != nil {
			return err
		}
	}
	if d.RemoveWireGuard != "" {
		if err := s.removeWireGuard(ctx, logger, d.RemoveWireGuard); err != nil {
			return err
		}
	}
	n.state = st
	return routesErr
}

// session is one Apply's use of netlink: every request goes through one
// socket (with a nil Programmer.Handle, netlink would open and close a
// socket for each of them: at 5,000 peers, 10,000 sockets for a cold sync).
type session struct {
	*Programmer
	nh netlinksafe.Handle
}

// h shadows Programmer.h: the session's socket.
func (n *session) h() netlinksafe.Handle { return n.nh }

// open starts a session on Handle, or on a socket opened now in the
// calling thread's network namespace (closed by done).
func (n *Programmer) open() (s *session, done func(), err error) {
	if n.Handle != nil {
		return &session{Programmer: n, nh: netlinksafe.Handle{Handle: n.Handle}}, func() {}, nil
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, nil, fmt.Errorf("open a netlink socket: %w", err)
	}
	return &session{Programmer: n, nh: netlinksafe.Handle{Handle: h}}, h.Close, nil
}
