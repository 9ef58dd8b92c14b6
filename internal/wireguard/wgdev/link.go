package wgdev

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/wireguard"
)

// Link types as netlink reports them.
const (
	linkTypeKernel = "wireguard"
	linkTypeTUN    = "tuntap"
)

// ensureLink makes the interface d.Name exist with an engine d.Engine
// allows, and for the userspace engine makes sure this Manager runs it. It
// returns the engine in use.
func (m *Manager) ensureLink(d wireguard.Device) (config.WireGuardEngine, error) {
	link, err := m.h.LinkByName(d.Name)
	var nf netlink.LinkNotFoundError
	switch {
	case errors.As(err, &nf):
		link = nil
	case err != nil:
		return "", fmt.Errorf("look up WireGuard device %s: %w", d.Name, err)
	}
	if link != nil {
		have, err := linkEngine(link)
		if err != nil {
			return "", err
		}
		if d.Engine == config.EngineAuto || d.Engine == have {
			if have == config.EngineUserspace {
				return have, m.runUserspace(d)
			}
			return have, nil
		}
		m.log().Info("replacing WireGuard device of the other engine", "device", d.Name, "have", have, "want", d.Engine)
		if err := m.stopUserspace(d.Name); err != nil {
			return "", err
		}
		if err := m.h.LinkDel(link); err != nil {
			return "", fmt.Errorf("delete WireGuard device %s (engine %s, want %s): %w", d.Name, have, d.Engine, err)
		}
	}
	// No interface: a userspace engine still running for it (deleted
	// under it) is stopped before a new one starts.
	if err := m.stopUserspace(d.Name); err != nil {
		return "", err
	}
	switch d.Engine {
	case config.EngineKernel:
		if err := m.addKernelLink(d.Name); err != nil {
			return "", fmt.Errorf("WireGuard device %s: engine kernel, but the kernel module cannot create it "+
				"(load the wireguard module, or set wireguard.engine to auto or userspace): %w", d.Name, err)
		}
		return config.EngineKernel, nil
	case config.EngineAuto:
		err := m.addKernelLink(d.Name)
		if err == nil {
			return config.EngineKernel, nil
		}
		m.log().Info("no WireGuard kernel module, using the userspace engine", "device", d.Name, "reason", err.Error())
	}
	return config.EngineUserspace, m.runUserspace(d)
}

// linkEngine tells the engine behind an existing interface.
func linkEngine(link netlink.Link) (config.WireGuardEngine, error) {
	switch link.Type() {
	case linkTypeKernel:
		return config.EngineKernel, nil
	case linkTypeTUN:
		if t, ok := link.(*netlink.Tuntap); ok && t.Mode == netlink.TUNTAP_MODE_TAP {
			return "", fmt.Errorf("interface %s is a TAP device, not a WireGuard device: remove it or set another wireguard.device",
				link.Attrs().Name)
		}
		return config.EngineUserspace, nil
	}
	return "", fmt.Errorf("interface %s is a %s device, not a WireGuard device: remove it or set another wireguard.device",
		link.Attrs().Name, link.Type())
}

func (m *Manager) addKernelLink(name string) error {
	return m.h.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: name}})
}

// runUserspace makes sure this Manager runs the userspace device d.Name,
// creating its TUN interface or re-attaching to the existing one.
func (m *Manager) runUserspace(d wireguard.Device) error {
	if u, ok := m.user[d.Name]; ok && u.running() {
		return u.ensureUAPI()
	}
	// wireguard-go closes a device whose TUN failed: start anew.
	if err := m.stopUserspace(d.Name); err != nil {
		return err
	}
	u, err := m.startUserspace(d.Name, d.MTU)
	if err != nil {
		return fmt.Errorf("WireGuard device %s (userspace engine): %w", d.Name, err)
	}
	m.user[d.Name] = u
	m.log().Info("running userspace WireGuard device", "device", d.Name, "offloads", u.offloads.String())
	return nil
}

// stopUserspace stops the userspace engine this Manager runs for name, if
// any (its TUN interface stays).
func (m *Manager) stopUserspace(name string) error {
	u, ok := m.user[name]
	if !ok {
		return nil
	}
	delete(m.user, name)
	if err := u.stop(); err != nil {
		return fmt.Errorf("stop WireGuard device %s: %w", name, err)
	}
	return nil
}

// configureLink sets the MTU, the address (and removes any other address of
// its family) and brings the link up.
func (m *Manager) configureLink(d wireguard.Device) error {
	link, err := m.h.LinkByName(d.Name)
	if err != nil {
		return fmt.Errorf("look up WireGuard device %s: %w", d.Name, err)
	}
	if link.Attrs().MTU != d.MTU {
		if err := m.h.LinkSetMTU(link, d.MTU); err != nil {
			return fmt.Errorf("set MTU %d on %s: %w", d.MTU, d.Name, err)
		}
	}
	family := netlink.FAMILY_V4
	if d.Addr.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := addrList(m.h, link, family)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", d.Name, err)
	}
	want := netip.PrefixFrom(d.Addr.Addr().Unmap(), d.Addr.Bits())
	have := false
	for _, a := range addrs {
		p, ok := prefixOf(a.IPNet)
		if ok && p == want {
			have = true
			continue
		}
		if p.Addr().IsLinkLocalUnicast() {
			continue
		}
		if err := m.h.AddrDel(link, &a); err != nil {
			return fmt.Errorf("remove stale address %s from %s: %w", a.IPNet, d.Name, err)
		}
	}
	if !have {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: want.Addr().AsSlice(), Mask: net.CIDRMask(want.Bits(), want.Addr().BitLen())}}
		if err := m.h.AddrReplace(link, addr); err != nil {
			return fmt.Errorf("add address %s to %s: %w", want, d.Name, err)
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := m.h.LinkSetUp(link); err != nil {
			return fmt.Errorf("set %s up: %w", d.Name, err)
		}
	}
	return nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones), true
}

// configureDevice writes the private key and listen port through wgctrl,
// each only when it differs from what the device holds.
func (m *Manager) configureDevice(d wireguard.Device, key wgtypes.Key) error {
	c, err := m.client()
	if err != nil {
		return err
	}
	defer c.Close()
	cur, err := c.Device(d.Name)
	if err != nil {
		return fmt.Errorf("read WireGuard device %s: %w", d.Name, err)
	}
	var cfg wgtypes.Config
	changed := false
	if cur.PrivateKey != key {
		cfg.PrivateKey = &key
		changed = true
	}
	if cur.ListenPort != d.Port {
		cfg.ListenPort = &d.Port
		changed = true
	}
	if !changed {
		return nil
	}
	if err := c.ConfigureDevice(d.Name, cfg); err != nil {
		return fmt.Errorf("configure WireGuard device %s: %w", d.Name, err)
	}
	if cfg.PrivateKey != nil {
		m.log().Info("WireGuard device key set", "device", d.Name, "keyID", wireguard.KeyID(key.PublicKey()))
	}
	return nil
}

// addrList lists the link's addresses, retrying a dump the kernel
// interrupted (NLM_F_DUMP_INTR: the result may be incomplete).
func addrList(h *netlink.Handle, link netlink.Link, family int) ([]netlink.Addr, error) {
	for range 5 {
		addrs, err := h.AddrList(link, family)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return addrs, err
		}
	}
	return nil, fmt.Errorf("address dump of %s interrupted 5 times", link.Attrs().Name)
}
