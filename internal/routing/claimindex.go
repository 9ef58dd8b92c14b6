package routing

import "net/netip"

// claimIndex answers, in time independent of the number of claims,
// whether an IPv4 node IP or pod CIDRs collide with anything claimed so
// far. nodeclaims.Conflict answers the same question (and names the
// earliest holder) by scanning every claim, so screening n peers with it
// alone costs n²: 80 % of a routing sync at 5,000 nodes. The index lets
// screenPeers skip that scan for the peers that collide with nothing
// (all of them, in a healthy cluster); the scan still names the holder
// when there is a collision.
//
// Claimed pod CIDRs and node IPs are kept in two binary tries over the
// address bits (one node per bit, in an arena): a prefix overlaps a
// claimed prefix when a marked node lies on its path (a claim containing
// it) or its own node exists (a claim inside it, since nodes are only
// created by claims below them).
type claimIndex struct {
	cidrs, ips bitTrie
	// slow: something not IPv4 was claimed; the index answers "maybe".
	slow bool
}

func (x *claimIndex) claim(ip netip.Addr, cidrs []netip.Prefix) {
	if !ip.Is4() {
		x.slow = true
	} else {
		x.ips.insert(netip.PrefixFrom(ip, 32))
	}
	for _, p := range cidrs {
		if !p.Addr().Is4() {
			x.slow = true
			continue
		}
		x.cidrs.insert(p.Masked())
	}
}

// mayConflict is false only when ip and cidrs collide with no claim (the
// checks of nodeclaims.Claims.Conflict): the same node IP, the node IP
// inside a claimed pod CIDR, overlapping pod CIDRs, a pod CIDR holding a
// claimed node IP.
func (x *claimIndex) mayConflict(ip netip.Addr, cidrs []netip.Prefix) bool {
	if x.slow || !ip.Is4() {
		return true
	}
	host := netip.PrefixFrom(ip, 32)
	if x.ips.covers(host) || x.cidrs.covers(host) {
		return true
	}
	for _, p := range cidrs {
		if !p.Addr().Is4() {
			return true
		}
		p = p.Masked()
		if x.cidrs.covers(p) || x.cidrs.holdsWithin(p) || x.ips.holdsWithin(p) {
			return true
		}
	}
	return false
}

// bitTrie is a binary trie of IPv4 prefixes; node 0 is the root (/0).
type bitTrie struct {
	nodes []trieNode
}

type trieNode struct {
	child  [2]int32 // 0: none (the root is never a child)
	marked bool     // a claimed prefix ends here
}

func bit(a [4]byte, i int) int { return int(a[i/8]>>(7-i%8)) & 1 }

func (t *bitTrie) insert(p netip.Prefix) {
	if len(t.nodes) == 0 {
		t.nodes = append(t.nodes, trieNode{})
	}
	a, cur := p.Addr().As4(), int32(0)
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
	a, cur := p.Addr().As4(), int32(0)
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
	a, cur := p.Addr().As4(), int32(0)
	for i := range p.Bits() {
		if cur = t.nodes[cur].child[bit(a, i)]; cur == 0 {
			return false
		}
	}
	return true
}
