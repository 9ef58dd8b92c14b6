package bgp

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"

	v1alpha1 "github.com/trellisnet/trellis/internal/apis/bgp/v1alpha1"
	"github.com/trellisnet/trellis/internal/nodeclaims"
)

// maxASN is the highest assignable 4-byte ASN (4294967295 is reserved,
// RFC 7300).
const maxASN = 4294967294

// nodeASN is a node's effective ASN: its bgp.trellis.dev/asn label, or
// the configuration's. An invalid label is reported only for this node
// (report): another node's agent falls back to the configuration's ASN
// the same way and reports its own label, so both sides agree.
func (c *computation) nodeASN(n Node, report bool) uint32 {
	v, ok := n.Labels[v1alpha1.NodeASNLabel]
	if !ok {
		return c.configASN
	}
	asn, err := strconv.ParseUint(v, 10, 32)
	if err != nil || asn < 1 || asn > maxASN {
		if report {
			c.problem(ReasonInvalidASNLabel, "Node/"+n.Name,
				"label %s=%q is not an ASN in 1-%d; using the configuration's asn %d",
				v1alpha1.NodeASNLabel, v, maxASN, c.configASN)
		}
		return c.configASN
	}
	return uint32(asn)
}

// screenNodes returns the other nodes whose data may be used, sorted by
// name, and reports the others. Like internal/routing's screening, a
// node's data must be plausible on its own (an IPv4 InternalIP, pod CIDRs
// that are real prefixes, not a default route, inside the cluster CIDRs
// when those are known) and collide with no earlier claim: this node
// claims its address and pod CIDRs first, then the other nodes in order
// of creation (then name), and a node colliding with an earlier claim
// (same InternalIP, overlapping pod CIDRs, a pod CIDR holding a claimed
// node address) is left out whole. A node joining later never takes
// over, or knocks out, an existing node's addresses.
//
// A node without a pod CIDR yet is kept: peering with it is harmless and
// its pod CIDR appears when it is allocated.
func (c *computation) screenNodes() []Node {
	local := c.in.Local
	var cands []Node
	for _, n := range c.in.Nodes {
		if n.Name == local.Name {
			continue
		}
		if n, ok := c.plausible(n); ok {
			cands = append(cands, n)
		}
	}
	sort.SliceStable(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if !a.Created.Equal(b.Created) {
			return a.Created.Before(b.Created)
		}
		return a.Name < b.Name
	})
	cl := nodeclaims.New("InternalIP")
	cl.Claim(local.Name+" (this node)", local.InternalIP, masked(local.PodCIDRs))
	var out []Node
	for _, n := range cands {
		if holder, what := cl.Conflict(n.InternalIP, n.PodCIDRs); holder != "" {
			c.problem(ReasonNodeConflict, "Node/"+n.Name,
				"node %s publishes %s, already held by node %s; no session with node %s and its pod CIDRs are ignored (the earlier node keeps them)",
				n.Name, what, holder, n.Name)
			continue
		}
		cl.Claim(n.Name, n.InternalIP, n.PodCIDRs)
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// plausible checks one other node's data on its own; it returns the node
// with its addresses normalised.
func (c *computation) plausible(n Node) (Node, bool) {
	bad := func(format string, a ...any) (Node, bool) {
		c.problem(ReasonInvalidNode, "Node/"+n.Name, "node %s %s; no session with it and its pod CIDRs are ignored",
			n.Name, fmt.Sprintf(format, a...))
		return Node{}, false
	}
	if !n.InternalIP.IsValid() || !n.InternalIP.Unmap().Is4() {
		return bad("has no IPv4 InternalIP")
	}
	ip := n.InternalIP.Unmap()
	if !ip.IsGlobalUnicast() {
		return bad("has InternalIP %s, not a unicast address", ip)
	}
	n.InternalIP = ip
	cidrs := make([]netip.Prefix, 0, len(n.PodCIDRs))
	for _, p := range n.PodCIDRs {
		if !p.IsValid() {
			return bad("has an invalid pod CIDR")
		}
		p = p.Masked()
		if p.Bits() == 0 {
			return bad("has pod CIDR %s, a default route", p)
		}
		if len(c.in.ClusterCIDRs) > 0 && !insideAny(p, c.in.ClusterCIDRs) {
			return bad("has pod CIDR %s outside the cluster CIDRs %s", p, joinPrefixes(c.in.ClusterCIDRs))
		}
		cidrs = append(cidrs, p)
	}
	n.PodCIDRs = cidrs
	return n, true
}

func masked(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		if p.IsValid() {
			out = append(out, p.Masked())
		}
	}
	return out
}

func insideAny(p netip.Prefix, outer []netip.Prefix) bool {
	for _, o := range outer {
		if inside(p, o) {
			return true
		}
	}
	return false
}

// inside: p is o or a subnet of it.
func inside(p, o netip.Prefix) bool {
	return o.IsValid() && p.IsValid() && o.Bits() <= p.Bits() && o.Contains(p.Addr())
}

func joinPrefixes(ps []netip.Prefix) string {
	s := ""
	for i, p := range ps {
		if i > 0 {
			s += ", "
		}
		s += p.String()
	}
	return s
}

// sortedPrefixes sorts and deduplicates.
func sortedPrefixes(ps []netip.Prefix) []netip.Prefix {
	if len(ps) == 0 {
		return nil
	}
	sort.Slice(ps, func(i, j int) bool { return comparePrefix(ps[i], ps[j]) < 0 })
	out := ps[:1]
	for _, p := range ps[1:] {
		if p != out[len(out)-1] {
			out = append(out, p)
		}
	}
	return out
}

// comparePrefix orders by address, then length.
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
