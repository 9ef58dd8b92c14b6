package routing

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/trellisnet/trellis/internal/nodeclaims"
	"github.com/trellisnet/trellis/internal/wireguard"
)

// Peer data comes from Node objects that other nodes write (addresses,
// annotations), so it is input, not truth. screenPeers accepts a peer only
// when its data is plausible on its own and conflicts with no other node;
// a rejected peer gets no route, FDB or neighbour entry and is reported as
// a Problem.
//
// Conflicts between two peers (the same VTEP MAC, the same node IP,
// overlapping pod CIDRs, a pod CIDR holding the other's node IP, or, with
// encryption on, the same WireGuard public key) are
// decided by age: peers are taken in order of creation (then name), each
// claims its MAC, node IP and pod CIDRs, and a peer whose data collides
// with an earlier claim is rejected whole. So a node that joins later can
// never take over, or knock out, an existing node's traffic. This node's
// own data is claimed before every peer and always wins.

// screenPeers returns the peers that may be programmed, the problems of
// the others, and the screen holding their claims. The local node (by
// name) is neither returned nor reported.
func screenPeers(local LocalNode, peers []Peer, p Params) ([]Peer, []Problem, *screen) {
	var problems []Problem
	s := newScreen(local, p)
	// Pointers into peers: sorting them moves 8 bytes, not a Peer.
	candidates := make([]*Peer, 0, len(peers))
	for i := range peers {
		peer := &peers[i]
		if peer.Name == local.Name {
			continue
		}
		*peer = local.usable(*peer)
		if prob := implausible(local, s.conns, *peer, p.ClusterCIDRs); prob != nil {
			problems = append(problems, *prob)
			continue
		}
		candidates = append(candidates, peer)
	}
	slices.SortFunc(candidates, func(a, b *Peer) int { return comparePeers(*a, *b) })
	accepted := make([]Peer, 0, len(candidates))
	for _, pp := range candidates {
		if prob := s.claim(*pp); prob != nil {
			problems = append(problems, *prob)
			continue
		}
		accepted = append(accepted, *pp)
	}
	return accepted, problems, s
}

// comparePeers orders peers by creation, then name: the order in which
// they claim their data.
func comparePeers(a, b Peer) int {
	if c := a.Created.Compare(b.Created); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

// screen holds what this node and the peers accepted so far claim.
type screen struct {
	local LocalNode
	p     Params
	fams  families // routedFamilies(local)
	conns []netip.Prefix
	c     *claims
}

func newScreen(local LocalNode, p Params) *screen {
	s := &screen{local: local, p: p, fams: routedFamilies(local), conns: connected(local), c: newClaims()}
	s.c.claim(local.Name+" (this node)", VTEPMAC(local.Name), local.NodeIP, local.NodeIP6, s.fams.prefixes(local.PodCIDRs), s.key(local.PublicKey))
	return s
}

func (s *screen) key(k wgtypes.Key) wgtypes.Key {
	if !s.p.Encryption.Enabled {
		return wgtypes.Key{} // keys are not used: never a conflict
	}
	return k
}

// claim records a plausible peer's data, or returns the problem of a peer
// whose data collides with an earlier claim.
func (s *screen) claim(peer Peer) *Problem {
	mac := effectiveMAC(peer)
	cidrs := s.fams.prefixes(peer.PodCIDRs)
	if holder, what := s.c.conflict(mac, peer.NodeIP, peer.NodeIP6, cidrs, s.key(peer.PublicKey)); holder != "" {
		return &Problem{Node: peer.Name, Reason: ReasonConflict, Message: fmt.Sprintf(
			"node %s publishes %s, already held by node %s; node %s is not programmed (the earlier node keeps it)",
			peer.Name, what, holder, peer.Name)}
	}
	s.c.claim(peer.Name, mac, peer.NodeIP, peer.NodeIP6, cidrs, s.key(peer.PublicKey))
	return nil
}

// admit screens one more peer, later than every peer screened so far; it
// returns the peer as screened (node IPs this node cannot use cleared).
func (s *screen) admit(peer Peer) (Peer, *Problem) {
	peer = s.local.usable(peer)
	if prob := implausible(s.local, s.conns, peer, s.p.ClusterCIDRs); prob != nil {
		return peer, prob
	}
	return peer, s.claim(peer)
}

// implausible checks one peer's data (as local.usable returns it) on its
// own and against this node. conns are this node's subnets
// (connected(local)).
func implausible(local LocalNode, conns []netip.Prefix, peer Peer, clusterCIDRs []netip.Prefix) *Problem {
	prob := func(reason, format string, a ...any) *Problem {
		return &Problem{Node: peer.Name, Reason: reason, Message: fmt.Sprintf(format, a...)}
	}
	fams := routedFamilies(local)
	cidrs := fams.prefixes(peer.PodCIDRs)
	if len(cidrs) == 0 {
		return prob(ReasonNoPodCIDR, "node %s has no %s pod CIDR yet", peer.Name, fams.word())
	}
	if !peer.NodeIP.IsValid() && !peer.NodeIP6.IsValid() {
		ips := local.nodeIPs()
		if !ips.v4 && !ips.v6 {
			ips.v4 = true
		}
		return prob(ReasonNoNodeIP, "node %s has no %s InternalIP", peer.Name, ips.word())
	}
	if peer.VTEPMAC != "" && !unicastMAC(peer.VTEPMAC) {
		return prob(ReasonBadVTEPMAC, "node %s published an invalid VTEP MAC %q (not a unicast MAC)", peer.Name, peer.VTEPMAC)
	}
	for _, c := range cidrs {
		if bounds := sameFamily(clusterCIDRs, c.Addr()); len(bounds) > 0 && !insideAny(c, bounds) {
			return prob(ReasonPodCIDROutsideCluster, "node %s has pod CIDR %s outside the cluster CIDRs %s; not programmed",
				peer.Name, c, joinPrefixes(clusterCIDRs))
		}
		if c.Bits() == 0 {
			return prob(ReasonPodCIDROverlapsNode, "node %s has pod CIDR %s, a default route; not programmed", peer.Name, c)
		}
		for _, ip := range []netip.Addr{local.NodeIP, local.NodeIP6} {
			if c.Contains(ip) {
				return prob(ReasonPodCIDROverlapsNode, "node %s has pod CIDR %s holding this node's IP %s; not programmed", peer.Name, c, ip)
			}
		}
		for _, conn := range conns {
			if c.Overlaps(conn) {
				return prob(ReasonPodCIDROverlapsNode, "node %s has pod CIDR %s overlapping this node's connected subnet %s; not programmed",
					peer.Name, c, conn)
			}
		}
	}
	return nil
}

// connected is every subnet this node is attached to, in the families of
// its node IPs.
func connected(local LocalNode) []netip.Prefix {
	out := slices.Clone(ipv4Prefixes(local.Underlay.Connected))
	if local.Underlay.Prefix.IsValid() && local.Underlay.Prefix.Addr().Is4() {
		out = append(out, local.Underlay.Prefix.Masked())
	}
	if local.NodeIP6.IsValid() {
		out = append(out, onlyIPv6.prefixes(local.Underlay6.Connected)...)
		if local.Underlay6.Prefix.IsValid() && local.Underlay6.Prefix.Addr().Is6() {
			out = append(out, local.Underlay6.Prefix.Masked())
		}
	}
	return out
}

// sameFamily returns the prefixes of ps of a's family (nil when none).
func sameFamily(ps []netip.Prefix, a netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.IsValid() && p.Addr().Is4() == a.Is4() {
			out = append(out, p)
		}
	}
	return out
}

func effectiveMAC(p Peer) string {
	if p.VTEPMAC == "" {
		return VTEPMAC(p.Name)
	}
	mac, _ := net.ParseMAC(p.VTEPMAC)
	return mac.String()
}

// unicastMAC: a 6-byte MAC that is neither multicast (broadcast included)
// nor all zeros.
func unicastMAC(s string) bool {
	mac, err := net.ParseMAC(s)
	if err != nil || len(mac) != 6 || mac[0]&0x01 != 0 {
		return false
	}
	for _, b := range mac {
		if b != 0 {
			return true
		}
	}
	return false
}

func insideAny(p netip.Prefix, outer []netip.Prefix) bool {
	for _, o := range outer {
		if o.Bits() <= p.Bits() && o.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// claims records which node holds which VTEP MAC, node IP, pod CIDR and
// WireGuard public key.
type claims struct {
	*nodeclaims.Claims
	macs  map[string]string
	keys  map[wgtypes.Key]string
	index claimIndex
	// cidrsOnly are pod CIDRs claimed without a node IP.
	cidrsOnly []heldCIDRs
}

type heldCIDRs struct {
	owner string
	cidrs []netip.Prefix
}

func newClaims() *claims {
	return &claims{Claims: nodeclaims.New("node IP"), macs: map[string]string{}, keys: map[wgtypes.Key]string{}}
}

// claim records owner's data (node IPs of either family, invalid: none);
// a zero key claims nothing.
func (c *claims) claim(owner, mac string, ip4, ip6 netip.Addr, cidrs []netip.Prefix, key wgtypes.Key) {
	c.macs[mac] = owner
	if key != (wgtypes.Key{}) {
		c.keys[key] = owner
	}
	var ips []netip.Addr
	for _, ip := range []netip.Addr{ip4, ip6} {
		if ip.IsValid() {
			ips = append(ips, ip)
		}
	}
	// nodeclaims takes one address with the pod CIDRs: the first valid
	// one; the second is claimed alone. An invalid address is never
	// claimed (it would collide with every peer lacking that family).
	for i, ip := range ips {
		if i == 0 {
			c.Claim(owner, ip, cidrs)
		} else {
			c.Claim(owner, ip, nil)
		}
	}
	if len(ips) == 0 && len(cidrs) > 0 {
		c.cidrsOnly = append(c.cidrsOnly, heldCIDRs{owner: owner, cidrs: cidrs})
	}
	c.index.claim(ip4, cidrs)
	c.index.claim(ip6, nil)
}

// conflict returns the holder of the first claim the data collides with
// and a description of the disputed item ("" when none).
func (c *claims) conflict(mac string, ip4, ip6 netip.Addr, cidrs []netip.Prefix, key wgtypes.Key) (holder, what string) {
	if h, ok := c.macs[mac]; ok {
		return h, "VTEP MAC " + mac
	}
	if h, ok := c.keys[key]; ok && key != (wgtypes.Key{}) {
		return h, "WireGuard public key " + wireguard.KeyID(key) + " (key id)"
	}
	if !c.index.mayConflict(ip4, cidrs) && !c.index.mayConflict(ip6, nil) {
		return "", ""
	}
	for _, h := range c.cidrsOnly {
		for _, p := range cidrs {
			for _, q := range h.cidrs {
				if p.Overlaps(q) {
					return h.owner, fmt.Sprintf("pod CIDR %s overlapping %s", p, q)
				}
			}
		}
	}
	if h, what := c.Conflict(ip4, cidrs); h != "" {
		return h, what
	}
	return c.Conflict(ip6, nil)
}
