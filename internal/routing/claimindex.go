package routing

import "net/netip"

// claimIndex answers, in time independent of the number of claims,
// whether a node IP or pod CIDRs (of either family) collide with anything
// claimed so far. nodeclaims.Conflict answers the same question (and
// names the earliest holder) by scanning every claim, so screening n
// peers with it alone costs n²: 80 % of a routing sync at 5,000 nodes.
// The index lets screenPeers skip that scan for the peers that collide
// with nothing (all of them, in a healthy cluster); the scan still names
// the holder when there is a collision.
//
// Claimed pod CIDRs and node IPs are kept in binary tries over the
// address bits (one node per bit, in an arena), one pair per family (an
// address of one family never collides with a prefix of the other): a
// prefix overlaps a claimed prefix when a marked node lies on its path (a
// claim containing it) or its own node exists (a claim inside it, since
// nodes are only created by claims below them).
type claimIndex struct {
	v4, v6 familyIndex
}

// familyIndex holds one family's claims.
type familyIndex struct {
	cidrs, ips bitTrie
}

func (x *claimIndex) family(a netip.Addr) *familyIndex {
	if a.Is4() {
		return &x.v4
	}
	return &x.v6
}

// claim records a node IP (ignored when invalid) and pod CIDRs.
func (x *claimIndex) claim(ip netip.Addr, cidrs []netip.Prefix) {
	if ip.IsValid() {
		x.family(ip).ips.insert(netip.PrefixFrom(ip, ip.BitLen()))
	}
	for _, p := range cidrs {
		if p.IsValid() {
			x.family(p.Addr()).cidrs.insert(p.Masked())
		}
	}
}

// mayConflict is false only when ip (ignored when invalid) and cidrs
// collide with no claim (the checks of nodeclaims.Claims.Conflict): the
// same node IP, the node IP inside a claimed pod CIDR, overlapping pod
// CIDRs, a pod CIDR holding a claimed node IP.
func (x *claimIndex) mayConflict(ip netip.Addr, cidrs []netip.Prefix) bool {
	if ip.Is4In6() {
		return true // never claimed as such: let the scan decide
	}
	if ip.IsValid() {
		f, host := x.family(ip), netip.PrefixFrom(ip, ip.BitLen())
		if f.ips.covers(host) || f.cidrs.covers(host) {
			return true
		}
	}
	for _, p := range cidrs {
		if !p.IsValid() || p.Addr().Is4In6() {
			return true
		}
		p = p.Masked()
		f := x.family(p.Addr())
		if f.cidrs.covers(p) || f.cidrs.holdsWithin(p) || f.ips.holdsWithin(p) {
			return true
		}
	}
	return false
}

// bitTrie is a binary trie of prefixes of one family; node 0 is the root
// (/0).
type bitTrie struct {
	nodes []trieNode
}

type trieNode struct {
	child  [2]int32 // 0: none (the root is never a child)
	marked bool     // a claimed prefix ends here
}

// addrBits are an address's bytes (IPv4: the first 4 of 16).
func addrBits(a netip.Addr) [16]byte {
	if a.Is4() {
		var b [16]byte
		b4 := a.As4()
		copy(b[:], b4[:])
		return b
	}
	return a.As16()
}

func bit(a [16]byte, i int) int { return int(a[i/8]>>(7-i%8)) & 1 }

func (t *bitTrie) insert(p netip.Prefix) {
	if len(t.nodes) == 0 {
		t.nodes = append(t.nodes, trieNode{})
	}
	a, cur := addrBits(p.Addr()), int32(0)
	for i := range p.Bits() {
		b := bit(a, i)
		next := t.nodes[cur].child[b]
		if next == 0 {
			t.nodes = append(t.nodes, trieNode{})
			next = int32(len(t.nodes) - 1)
			t.nodes[cur].child[b] = next
		}
		cur = next
	}
	t.nodes[cur].marked = true
}

// covers: a claimed prefix contains p (or equals it).
func (t *bitTrie) covers(p netip.Prefix) bool {
	if len(t.nodes) == 0 {
		return false
	}
	a, cur := addrBits(p.Addr()), int32(0)
	for i := 0; ; i++ {
		if t.nodes[cur].marked {
			return true
		}
		if i == p.Bits() {
			return false
		}
		if cur = t.nodes[cur].child[bit(a, i)]; cur == 0 {
			return false
		}
	}
}

// holdsWithin: a claimed prefix lies inside p (or equals it).
func (t *bitTrie) holdsWithin(p netip.Prefix) bool {
	if len(t.nodes) == 0 {
		return false
	}
	a, cur := addrBits(p.Addr()), int32(0)
	for i := range p.Bits() {
		if cur = t.nodes[cur].child[bit(a, i)]; cur == 0 {
			return false
		}
	}
	return true
}
