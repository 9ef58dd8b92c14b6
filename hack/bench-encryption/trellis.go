package main

// STAND-IN until the agent's WireGuard path lands: builds trellis.wg like
// the hand-built tunnel, with routes to the peer's pod CIDRs.

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

type trellisSpec struct {
	Name     string         `json:"name"`
	NodeIP   netip.Addr     `json:"nodeIP"`
	PodCIDRs []netip.Prefix `json:"podCIDRs"`
	Peers    []trellisPeer  `json:"peers"`
	Engine   string         `json:"engine"`
}

type trellisPeer struct {
	Name      string         `json:"name"`
	NodeIP    netip.Addr     `json:"nodeIP"`
	PodCIDRs  []netip.Prefix `json:"podCIDRs"`
	PublicKey string         `json:"publicKey"`
}

func startTrellis(s helperSpec) (helperDevice, error) {
	p := s.Trellis.Peers[0]
	s.Peer = handPeer{PublicKey: p.PublicKey, Endpoint: netip.AddrPortFrom(p.NodeIP, uint16(s.Port)), AllowedIPs: p.PodCIDRs}
	d, err := startHand(s)
	if err != nil {
		return nil, err
	}
	l, err := netlink.LinkByName(s.Device)
	if err != nil {
		return nil, err
	}
	for _, c := range p.PodCIDRs {
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index, Scope: netlink.SCOPE_LINK,
			Dst: &net.IPNet{IP: c.Addr().AsSlice(), Mask: net.CIDRMask(c.Bits(), 32)}}); err != nil {
			return nil, fmt.Errorf("route %s: %w", c, err)
		}
	}
	return d, nil
}
