// Package nodeclaims screens what Nodes publish about themselves (an
// address and pod CIDRs) against what earlier nodes already hold: the
// routing controller and the BGP desired state both let the earlier
// claimant keep disputed data, so one Node cannot take over another's
// traffic by publishing its address or an overlapping pod CIDR.
package nodeclaims

import (
	"fmt"
	"net/netip"
)

// Claims records which node holds which address and pod CIDR.
type Claims struct {
	// IPLabel names the address in conflict messages ("node IP",
	// "InternalIP").
	IPLabel string
	ips     map[netip.Addr]string
	order   []netip.Addr // ips in claim order, for stable messages
	cidrs   []held
}

type held struct {
	p     netip.Prefix
	owner string
}

// New returns empty claims whose messages call the address ipLabel.
func New(ipLabel string) *Claims {
	return &Claims{IPLabel: ipLabel, ips: map[netip.Addr]string{}}
}

// Claim records owner's address and pod CIDRs.
func (c *Claims) Claim(owner string, ip netip.Addr, cidrs []netip.Prefix) {
	c.ips[ip] = owner
	c.order = append(c.order, ip)
	for _, p := range cidrs {
		c.cidrs = append(c.cidrs, held{p: p, owner: owner})
	}
}

// Conflict returns the holder of the first claim ip or cidrs collide with
// and what is disputed ("" when none): the same address, an address
// inside a held pod CIDR, overlapping pod CIDRs, or a pod CIDR holding a
// claimed address.
func (c *Claims) Conflict(ip netip.Addr, cidrs []netip.Prefix) (holder, what string) {
	if h, ok := c.ips[ip]; ok {
		return h, c.IPLabel + " " + ip.String()
	}
	for _, h := range c.cidrs {
		if h.p.Contains(ip) {
			return h.owner, fmt.Sprintf("%s %s inside pod CIDR %s", c.IPLabel, ip, h.p)
		}
		for _, p := range cidrs {
			if p.Overlaps(h.p) {
				return h.owner, fmt.Sprintf("pod CIDR %s overlapping %s", p, h.p)
			}
		}
	}
	for _, heldIP := range c.order {
		for _, p := range cidrs {
			if p.Contains(heldIP) {
				return c.ips[heldIP], fmt.Sprintf("pod CIDR %s holding %s %s", p, c.IPLabel, heldIP)
			}
		}
	}
	return "", ""
}
