package routing

import "net/netip"

// Address families. A node has 0–1 node IP and 0–1 pod CIDR of each; the
// families of its pod CIDRs are the ones this node routes (IPv4 when it
// has none yet), and a peer's pod CIDRs of other families are ignored.

// families is a set of address families.
type families struct{ v4, v6 bool }

// familiesOf returns the families of the valid prefixes of ps.
func familiesOf(ps []netip.Prefix) families {
	var f families
	for _, p := range ps {
		switch {
		case !p.IsValid():
		case p.Addr().Is4():
			f.v4 = true
		case !p.Addr().Is4In6():
			f.v6 = true
		}
	}
	return f
}

// routedFamilies are the families this node routes: those of its pod
// CIDRs, IPv4 while it has none.
func routedFamilies(local LocalNode) families {
	f := familiesOf(local.PodCIDRs)
	if !f.v4 && !f.v6 {
		f.v4 = true
	}
	return f
}

// has reports whether the family of a is in f.
func (f families) has(a netip.Addr) bool {
	if a.Is4() {
		return f.v4
	}
	return f.v6 && a.Is6() && !a.Is4In6()
}

// word names f in messages: "IPv4", "IPv6", "IPv4 or IPv6".
func (f families) word() string {
	switch {
	case f.v4 && f.v6:
		return "IPv4 or IPv6"
	case f.v6:
		return "IPv6"
	}
	return "IPv4"
}

// prefixes returns the valid prefixes of in whose family is in f, masked:
// in itself when it holds nothing else (the common case, no allocation;
// callers do not modify the result).
func (f families) prefixes(in []netip.Prefix) []netip.Prefix {
	clean := true
	for _, p := range in {
		if !p.IsValid() || !f.has(p.Addr()) || p != p.Masked() {
			clean = false
			break
		}
	}
	if clean {
		return in
	}
	var out []netip.Prefix
	for _, p := range in {
		if p.IsValid() && f.has(p.Addr()) {
			out = append(out, p.Masked())
		}
	}
	return out
}

var (
	onlyIPv4 = families{v4: true}
	onlyIPv6 = families{v6: true}
)

// ipv4Prefixes returns the valid IPv4 prefixes of in, masked.
func ipv4Prefixes(in []netip.Prefix) []netip.Prefix { return onlyIPv4.prefixes(in) }

// familyName is "IPv4" or "IPv6".
func familyName(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

// nodeIP is the node IP of one family (invalid: none).
func (l LocalNode) nodeIP(v6 bool) netip.Addr {
	if v6 {
		return l.NodeIP6
	}
	return l.NodeIP
}

// underlay is the underlay of one family.
func (l LocalNode) underlay(v6 bool) Underlay {
	if v6 {
		return l.Underlay6
	}
	return l.Underlay
}

// nodeIPs are the node's valid node IPs, IPv4 first.
func (l LocalNode) nodeIPs() families {
	return families{v4: l.NodeIP.IsValid(), v6: l.NodeIP6.IsValid()}
}

func (p Peer) nodeIP(v6 bool) netip.Addr {
	if v6 {
		return p.NodeIP6
	}
	return p.NodeIP
}

// UsesIPv6Underlay reports whether a node with these node IPs and pod
// CIDRs uses its IPv6 node IP (v6) at all: when it has an IPv6 pod CIDR
// (native IPv6 routes go via the peers' IPv6 node IPs) or no IPv4 node IP
// (VXLAN then runs over IPv6). An IPv4 node with only IPv4 pod CIDRs
// ignores an IPv6 address its Node reports, so an IPv4 cluster behaves as
// if no node had one.
func UsesIPv6Underlay(v4, v6 netip.Addr, podCIDRs []netip.Prefix) bool {
	return v6.IsValid() && (!v4.IsValid() || familiesOf(podCIDRs).v6)
}

// normalised returns local with the IPv6 node IP cleared when the node
// does not use it (see UsesIPv6Underlay).
func (l LocalNode) normalised() LocalNode {
	if !UsesIPv6Underlay(l.NodeIP, l.NodeIP6, l.PodCIDRs) {
		l.NodeIP6, l.Underlay6 = netip.Addr{}, Underlay{}
	}
	if l.NodeIP.IsValid() && !l.NodeIP.Is4() {
		l.NodeIP = netip.Addr{}
	}
	return l
}

// routable returns local as Compute uses it: its pod CIDRs of the
// families the cluster CIDRs allow, then normalised.
func (l LocalNode) routable(p Params) LocalNode {
	l.PodCIDRs = configuredFamilies(p.ClusterCIDRs).prefixes(l.PodCIDRs)
	return l.normalised()
}

// usable returns peer with the node IPs this node cannot use cleared: a
// family in which this node has no node IP is no underlay between them.
func (l LocalNode) usable(peer Peer) Peer {
	if !l.NodeIP.IsValid() || !peer.NodeIP.Is4() {
		peer.NodeIP = netip.Addr{}
	}
	if !l.NodeIP6.IsValid() || !peer.NodeIP6.Is6() || peer.NodeIP6.Is4In6() {
		peer.NodeIP6 = netip.Addr{}
	}
	return peer
}

// outerFamily is the underlay family VXLAN to peer uses: IPv4 when both
// nodes have an IPv4 node IP, else IPv6 when both have an IPv6 one (v6
// true); ok false when they share none. Both ends decide alike.
func outerFamily(local LocalNode, peer Peer) (v6, ok bool) {
	switch {
	case local.NodeIP.IsValid() && peer.NodeIP.IsValid():
		return false, true
	case local.NodeIP6.IsValid() && peer.NodeIP6.IsValid():
		return true, true
	}
	return false, false
}

// vtepAddrOf is the VTEP address of one inner family: the network address
// of the first pod CIDR of that family (never handed to a pod by the
// IPAM).
func vtepAddrOf(podCIDRs []netip.Prefix, v6 bool) (netip.Addr, bool) {
	for _, p := range podCIDRs {
		if p.IsValid() && p.Addr().Is4() != v6 && !p.Addr().Is4In6() {
			return p.Masked().Addr(), true
		}
	}
	return netip.Addr{}, false
}

// configuredFamilies are the families the configured cluster CIDRs allow:
// those they hold a prefix of; both when none are configured (no bound at
// all, as without cluster CIDRs in IPv4). A family the cluster CIDRs do
// not mention is not routed (fail closed): its pod CIDRs would be bounded
// by nothing, and a Node could claim any range of that family (an IPv6
// pod CIDR of 2000::/3 would make it this node's IPv6 router).
func configuredFamilies(clusterCIDRs []netip.Prefix) families {
	if len(clusterCIDRs) == 0 {
		return families{v4: true, v6: true}
	}
	return familiesOf(clusterCIDRs)
}

// unconfiguredFamily is why this node, with pod CIDRs of fams, cannot
// route one of them under the cluster CIDRs ("" when it can).
func unconfiguredFamily(fams families, clusterCIDRs []netip.Prefix) string {
	allowed := configuredFamilies(clusterCIDRs)
	for _, v6 := range []bool{false, true} {
		has, ok := fams.v4, allowed.v4
		if v6 {
			has, ok = fams.v6, allowed.v6
		}
		if has && !ok {
			return "own Node has an " + familyName(v6) + " pod CIDR but clusterCIDRs hold no " + familyName(v6) +
				" prefix: add the cluster's " + familyName(v6) + " pod CIDR to clusterCIDRs (the agent routes no family they do not bound)"
		}
	}
	return ""
}
