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
	"net"
	"net/netip"
	"os/exec"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/trellisnet/trellis/internal/routing"
	"github.com/trellisnet/trellis/internal/sysctl"
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

// Underlay finds the interface that holds nodeIP.
func (n *Programmer) Underlay(nodeIP netip.Addr) (routing.Underlay, error) {
	addrs, err := addrList(n.h(), nil, netlink.FAMILY_V4)
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

// Apply programs d. Order: WireGuard device and peers, VXLAN device, FDB
// and neighbours, routes (add/replace), then deletions of what is no
// longer wanted (routes first, then devices).
func (n *Programmer) Apply(ctx context.Context, d *routing.Desired) error {
	logger := klog.FromContext(ctx).WithName("netlinkprog")
	if d.WireGuard != nil {
		if err := n.applyWireGuard(ctx, logger, d.WireGuard); err != nil {
			return err
		}
	}
	var vx netlink.Link
	if d.VXLAN != nil {
		l, err := n.ensureVXLAN(logger, d.VXLAN)
		if err != nil {
			return err
		}
		vx = l
		if err := n.syncFDB(logger, vx, d.FDB); err != nil {
			return err
		}
		if err := n.syncNeighbors(logger, vx, d.Neighbors); err != nil {
			return err
		}
	}
	routesErr := n.syncRoutes(logger, d)
	var foreign *routing.ForeignRouteError
	if routesErr != nil && !errors.As(routesErr, &foreign) {
		return routesErr
	}
	if d.RemoveVXLAN != "" {
		if err := n.deleteVXLAN(logger, d.RemoveVXLAN); err != nil {
			return err
		}
	}
	if d.RemoveWireGuard != "" {
		if err := n.removeWireGuard(ctx, logger, d.RemoveWireGuard); err != nil {
			return err
		}
	}
	return routesErr
}

// deleteVXLAN removes the agent's VXLAN device (mode changed to native).
// Only a device of type vxlan with that name is touched.
func (n *Programmer) deleteVXLAN(logger klog.Logger, name string) error {
	l, err := n.linkIfExists(name)
	if err != nil || l == nil {
		return err
	}
	if _, ok := l.(*netlink.Vxlan); !ok {
		return nil
	}
	logger.Info("Deleting VXLAN device no longer needed", "device", name)
	if err := n.h().LinkDel(l); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// linkIfExists returns the link named name, nil when there is none.
func (n *Programmer) linkIfExists(name string) (netlink.Link, error) {
	l, err := n.h().LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", name, err)
	}
	return l, nil
}

func (n *Programmer) ensureVXLAN(logger klog.Logger, want *routing.VXLANDevice) (netlink.Link, error) {
	under, err := n.h().LinkByName(want.Underlay)
	if err != nil {
		return nil, fmt.Errorf("underlay link %s: %w", want.Underlay, err)
	}
	mac, err := net.ParseMAC(want.MAC)
	if err != nil {
		return nil, fmt.Errorf("VTEP MAC %q: %w", want.MAC, err)
	}
	spec := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: want.Name, MTU: want.MTU, HardwareAddr: mac},
		VxlanId:      want.VNI,
		VtepDevIndex: under.Attrs().Index,
		SrcAddr:      net.IP(want.Local.AsSlice()),
		Port:         want.Port,
		Learning:     false,
	}
	existing, err := n.h().LinkByName(want.Name)
	var nf netlink.LinkNotFoundError
	switch {
	case errors.As(err, &nf):
		existing = nil
	case err != nil:
		return nil, fmt.Errorf("look up %s: %w", want.Name, err)
	}
	if existing != nil && !vxlanCompatible(existing, spec) {
		logger.Info("Recreating incompatible VXLAN device", "device", want.Name)
		if err := n.h().LinkDel(existing); err != nil {
			return nil, fmt.Errorf("delete incompatible %s: %w", want.Name, err)
		}
		existing = nil
	}
	if existing == nil {
		logger.Info("Creating VXLAN device", "device", want.Name, "vni", want.VNI, "port", want.Port, "local", want.Local)
		if err := n.h().LinkAdd(spec); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create %s: %w", want.Name, err)
		}
		if existing, err = n.h().LinkByName(want.Name); err != nil {
			return nil, fmt.Errorf("look up created %s: %w", want.Name, err)
		}
	}
	attrs := existing.Attrs()
	if attrs.MTU != want.MTU {
		if err := n.h().LinkSetMTU(existing, want.MTU); err != nil {
			return nil, fmt.Errorf("set MTU of %s: %w", want.Name, err)
		}
	}
	if attrs.HardwareAddr.String() != mac.String() {
		if err := n.h().LinkSetHardwareAddr(existing, mac); err != nil {
			return nil, fmt.Errorf("set MAC of %s: %w", want.Name, err)
		}
	}
	if err := n.ensureAddr(existing, want.Addr); err != nil {
		return nil, err
	}
	if attrs.Flags&net.FlagUp == 0 {
		if err := n.h().LinkSetUp(existing); err != nil {
			return nil, fmt.Errorf("set %s up: %w", want.Name, err)
		}
	}
	// Loose reverse-path filtering on the overlay: while peers change mode
	// (one side native, the other VXLAN) replies may arrive on the device
	// the reverse route does not point to; strict filtering would drop them.
	if err := n.setSysctl("net/ipv4/conf/"+want.Name+"/rp_filter", "2"); err != nil {
		return nil, err
	}
	if want.DisableTxChecksumOffload {
		if err := disableTxChecksum(n.NetnsPath, want.Name); err != nil {
			return nil, err
		}
	}
	return existing, nil
}

func vxlanCompatible(l netlink.Link, want *netlink.Vxlan) bool {
	v, ok := l.(*netlink.Vxlan)
	if !ok {
		return false
	}
	return v.VxlanId == want.VxlanId && v.Port == want.Port && !v.Learning &&
		v.SrcAddr.Equal(want.SrcAddr) && v.VtepDevIndex == want.VtepDevIndex
}

// ensureAddr makes addr the only IPv4 address on link.
func (n *Programmer) ensureAddr(link netlink.Link, addr netip.Prefix) error {
	have, err := addrList(n.h(), link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", link.Attrs().Name, err)
	}
	found := false
	for _, a := range have {
		p, _ := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		if netip.PrefixFrom(p.Unmap(), ones) == addr {
			found = true
			continue
		}
		if err := n.h().AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove stale address %s from %s: %w", a.IPNet, link.Attrs().Name, err)
		}
	}
	if found {
		return nil
	}
	a := &netlink.Addr{IPNet: prefixToIPNet(addr)}
	if err := n.h().AddrReplace(link, a); err != nil {
		return fmt.Errorf("add %s to %s: %w", addr, link.Attrs().Name, err)
	}
	return nil
}

// disableTxChecksum turns tx checksum offload off on dev (idempotent), in
// the namespace at netnsPath or the agent's own.
func disableTxChecksum(netnsPath, dev string) error {
	args := []string{"ethtool", "-K", dev, "tx", "off"}
	if netnsPath != "" {
		args = append([]string{"nsenter", "--net=" + netnsPath, "--"}, args...)
	}
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), bits)}
}

// setSysctl writes <SysctlRoot or /proc/sys>/<key> in the programmer's
// namespace (NetnsPath, else the agent's own) unless it already holds value.
func (n *Programmer) setSysctl(key, value string) error {
	p := sysctl.Proc{Root: n.SysctlRoot}
	if n.NetnsPath == "" {
		return p.Set(key, value)
	}
	return ns.WithNetNSPath(n.NetnsPath, func(ns.NetNS) error { return p.Set(key, value) })
}
