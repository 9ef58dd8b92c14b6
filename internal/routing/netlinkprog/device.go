package netlinkprog

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/trellisnet/trellis/internal/routing"
	"github.com/trellisnet/trellis/internal/sysctl"
)

// deleteVXLAN removes the agent's VXLAN device (mode changed to native).
// Only a device of type vxlan with that name is touched.
func (n *session) deleteVXLAN(logger klog.Logger, name string) error {
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
func (n *session) linkIfExists(name string) (netlink.Link, error) {
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

func (n *session) ensureVXLAN(logger klog.Logger, want *routing.VXLANDevice) (netlink.Link, error) {
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
	if err := n.ensureAddr(existing, want.Addr, netlink.FAMILY_V4); err != nil {
		return nil, err
	}
	if err := n.ensureAddr(existing, want.Addr6, netlink.FAMILY_V6); err != nil {
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

// ensureAddr makes addr the only address of family on link (invalid
// addr: none). IPv6 link-local addresses (the kernel's own) are left
// alone; an IPv6 address is added without duplicate address detection,
// usable at once (it is the network address of this node's pod CIDR,
// held by no other interface).
func (n *session) ensureAddr(link netlink.Link, addr netip.Prefix, family int) error {
	have, err := addrList(n.h(), link, family)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", link.Attrs().Name, err)
	}
	found := false
	for _, a := range have {
		p, _ := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		if family == netlink.FAMILY_V6 && p.IsLinkLocalUnicast() {
			continue
		}
		if addr.IsValid() && netip.PrefixFrom(p.Unmap(), ones) == addr {
			found = true
			continue
		}
		if err := n.h().AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove stale address %s from %s: %w", a.IPNet, link.Attrs().Name, err)
		}
	}
	if found || !addr.IsValid() {
		return nil
	}
	a := &netlink.Addr{IPNet: prefixToIPNet(addr)}
	if addr.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
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
