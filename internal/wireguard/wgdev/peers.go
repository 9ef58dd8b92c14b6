package wgdev

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/trellisnet/trellis/internal/wireguard"
)

// SetPeers makes the device's peers exactly peers: new peers are added,
// changed ones updated prefix by prefix, the others removed, in one
// configuration call. Prefixes are added before any is removed, so a prefix
// that moves between peers (a node's new key, a reassigned pod CIDR) is
// always routed to one of them. See the package comment for how single
// prefixes are removed.
func (m *Manager) SetPeers(ctx context.Context, dev string, peers []wireguard.Peer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.client()
	if err != nil {
		return err
	}
	defer c.Close()
	cur, err := c.Device(dev)
	if err != nil {
		return fmt.Errorf("read WireGuard device %s: %w", dev, err)
	}
	tomb, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return fmt.Errorf("generate tombstone key: %w", err)
	}
	cfgs, err := planPeers(cur.PublicKey, cur.Peers, peers, tomb.PublicKey())
	if err != nil {
		return fmt.Errorf("WireGuard device %s: %w", dev, err)
	}
	nodes := make(map[[32]byte]string, len(peers))
	for _, p := range peers {
		nodes[p.PublicKey] = p.Node
	}
	m.nodes[dev] = nodes
	if len(cfgs) > 0 {
		if err := c.ConfigureDevice(dev, wgtypes.Config{Peers: cfgs}); err != nil {
			return fmt.Errorf("configure peers of WireGuard device %s: %w", dev, err)
		}
	}
	m.greet(dev, peers)
	return nil
}

// greet starts a handshake with every peer that the userspace engine this
// Manager runs for dev has not greeted yet. After an agent restart the
// peers still hold a session the new engine never had and keep sending on
// it (the engine drops those packets) until WireGuard's own timers start a
// new handshake, about 15 s later; a handshake from this side replaces the
// session at once. Kernel devices keep their sessions across a restart and
// need none. A failed initiation is retried by WireGuard's timers.
func (m *Manager) greet(dev string, peers []wireguard.Peer) {
	u := m.user[dev]
	if u == nil || !u.running() {
		return
	}
	if u.greeted == nil {
		u.greeted = map[wgtypes.Key]bool{}
	}
	for _, p := range peers {
		if u.greeted[p.PublicKey] {
			continue
		}
		if wp := u.dev.LookupPeer(device.NoisePublicKey(p.PublicKey)); wp != nil {
			u.greeted[p.PublicKey] = true
			_ = wp.SendHandshakeInitiation(false)
		}
	}
}

// planPeers computes the peer changes that turn current into desired on a
// device whose own public key is own: first additions and updates (only
// the allowed IPs a peer lacks, never a replace of its list), then the
// tombstone peer tomb that takes the prefixes no desired peer has and is
// removed with them, then the removal of peers no longer desired. Nothing
// when the device already matches.
func planPeers(own wgtypes.Key, current []wgtypes.Peer, desired []wireguard.Peer, tomb wgtypes.Key) ([]wgtypes.PeerConfig, error) {
	want, err := normalizeDesired(own, desired)
	if err != nil {
		return nil, err
	}
	wanted := map[wgtypes.Key]*wireguard.Peer{}
	owner := map[netip.Prefix]bool{}
	for i := range want {
		wanted[want[i].PublicKey] = &want[i]
		for _, p := range want[i].AllowedIPs {
			owner[p] = true
		}
	}
	have := map[wgtypes.Key]*wgtypes.Peer{}
	for i := range current {
		have[current[i].PublicKey] = &current[i]
	}

	var cfgs []wgtypes.PeerConfig
	for _, w := range want {
		h, ok := have[w.PublicKey]
		if !ok {
			cfgs = append(cfgs, wgtypes.PeerConfig{PublicKey: w.PublicKey, Endpoint: udpAddr(w.Endpoint), AllowedIPs: ipNets(w.AllowedIPs)})
			continue
		}
		cfg := wgtypes.PeerConfig{PublicKey: w.PublicKey, UpdateOnly: true}
		if w.Endpoint.IsValid() && addrPort(h.Endpoint) != w.Endpoint {
			cfg.Endpoint = udpAddr(w.Endpoint)
		}
		held := prefixSet(h.AllowedIPs)
		for _, p := range w.AllowedIPs {
			if !held[p] {
				cfg.AllowedIPs = append(cfg.AllowedIPs, ipNet(p))
			}
		}
		if cfg.Endpoint != nil || len(cfg.AllowedIPs) > 0 {
			cfgs = append(cfgs, cfg)
		}
	}

	var stale []netip.Prefix
	var gone []wgtypes.Key
	for _, h := range current {
		if _, ok := wanted[h.PublicKey]; !ok {
			gone = append(gone, h.PublicKey)
			continue
		}
		for p := range prefixSet(h.AllowedIPs) {
			if !owner[p] {
				stale = append(stale, p)
			}
		}
	}
	if len(stale) > 0 {
		slices.SortFunc(stale, comparePrefix)
		cfgs = append(cfgs,
			wgtypes.PeerConfig{PublicKey: tomb, AllowedIPs: ipNets(stale)},
			wgtypes.PeerConfig{PublicKey: tomb, Remove: true})
	}
	slices.SortFunc(gone, func(a, b wgtypes.Key) int { return strings.Compare(a.String(), b.String()) })
	for _, k := range gone {
		cfgs = append(cfgs, wgtypes.PeerConfig{PublicKey: k, Remove: true})
	}
	return cfgs, nil
}

// normalizeDesired validates the desired peers (a key each, not the
// device's own, no key or prefix twice) and returns them with masked,
// sorted, deduplicated prefixes, ordered by node name.
func normalizeDesired(own wgtypes.Key, desired []wireguard.Peer) ([]wireguard.Peer, error) {
	var errs []error
	keys := map[wgtypes.Key]string{}
	prefixes := map[netip.Prefix]string{}
	out := make([]wireguard.Peer, 0, len(desired))
	for _, p := range desired {
		switch prev, dup := keys[p.PublicKey]; {
		case p.PublicKey == (wgtypes.Key{}):
			errs = append(errs, fmt.Errorf("peer %s has no public key", p.Node))
			continue
		case p.PublicKey == own:
			errs = append(errs, fmt.Errorf("peer %s has this device's own public key", p.Node))
			continue
		case dup:
			errs = append(errs, fmt.Errorf("peers %s and %s have the same public key", prev, p.Node))
			continue
		}
		keys[p.PublicKey] = p.Node
		if p.Endpoint.IsValid() {
			p.Endpoint = netip.AddrPortFrom(p.Endpoint.Addr().Unmap(), p.Endpoint.Port())
		}
		var ips []netip.Prefix
		for _, a := range p.AllowedIPs {
			if !a.IsValid() {
				errs = append(errs, fmt.Errorf("peer %s: invalid allowed IP %v", p.Node, a))
				continue
			}
			a = netip.PrefixFrom(a.Addr().Unmap(), a.Bits()).Masked()
			if prev, dup := prefixes[a]; dup && prev != p.Node {
				errs = append(errs, fmt.Errorf("peers %s and %s both claim %s", prev, p.Node, a))
				continue
			}
			prefixes[a] = p.Node
			ips = append(ips, a)
		}
		slices.SortFunc(ips, comparePrefix)
		p.AllowedIPs = slices.Compact(ips)
		out = append(out, p)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b wireguard.Peer) int {
		if c := strings.Compare(a.Node, b.Node); c != 0 {
			return c
		}
		return strings.Compare(a.PublicKey.String(), b.PublicKey.String())
	})
	return out, nil
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func prefixSet(nets []net.IPNet) map[netip.Prefix]bool {
	s := make(map[netip.Prefix]bool, len(nets))
	for i := range nets {
		if p, ok := prefixOf(&nets[i]); ok {
			s[p.Masked()] = true
		}
	}
	return s
}

func ipNet(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func ipNets(ps []netip.Prefix) []net.IPNet {
	out := make([]net.IPNet, len(ps))
	for i, p := range ps {
		out[i] = ipNet(p)
	}
	return out
}

func udpAddr(ap netip.AddrPort) *net.UDPAddr {
	if !ap.IsValid() {
		return nil
	}
	return net.UDPAddrFromAddrPort(ap)
}

func addrPort(a *net.UDPAddr) netip.AddrPort {
	if a == nil {
		return netip.AddrPort{}
	}
	ap := a.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
