package routing

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/trellisnet/trellis/internal/nodeclaims"
)

// The index must agree with nodeclaims.Conflict on every IPv4 question:
// never "no" when Conflict finds a holder (a peer would be programmed over
// another's claim), and never "maybe" when it finds none (the index would
// be useless). Addresses come from a small space so that collisions of
// every kind happen often.
func TestClaimIndexAgreesWithConflict(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	addr := func() netip.Addr {
		return netip.AddrFrom4([4]byte{10, byte(rng.IntN(4)), byte(rng.IntN(8)), byte(rng.IntN(4) * 64)})
	}
	prefix := func() netip.Prefix {
		return netip.PrefixFrom(addr(), 14+rng.IntN(19)).Masked()
	}
	for round := range 200 {
		c, x := nodeclaims.New("node IP"), &claimIndex{}
		for i := range 40 {
			ip, cidrs := addr(), []netip.Prefix{prefix()}
			if rng.IntN(3) == 0 {
				cidrs = append(cidrs, prefix())
			}
			holder, _ := c.Conflict(ip, cidrs)
			if maybe := x.mayConflict(ip, cidrs); maybe != (holder != "") {
				t.Fatalf("round %d claim %d: %s %v: index says %v, Conflict says holder %q", round, i, ip, cidrs, maybe, holder)
			}
			if holder == "" {
				c.Claim("n", ip, cidrs)
				x.claim(ip, cidrs)
			}
		}
	}
}

// The same agreement over both families: IPv6 node IPs and pod CIDRs
// beside IPv4 ones (an address never collides with the other family), as
// routing claims them (the IPv6 node IP alone, the pod CIDRs with the
// first address).
func TestClaimIndexAgreesWithConflictMixedFamilies(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	addr4 := func() netip.Addr {
		return netip.AddrFrom4([4]byte{10, byte(rng.IntN(4)), byte(rng.IntN(8)), byte(rng.IntN(4) * 64)})
	}
	addr6 := func() netip.Addr {
		var b [16]byte
		b[0], b[1], b[5], b[7], b[15] = 0xfd, 0x74, byte(rng.IntN(4)), byte(rng.IntN(8)), byte(rng.IntN(4))
		return netip.AddrFrom16(b)
	}
	prefix := func() netip.Prefix {
		if rng.IntN(2) == 0 {
			return netip.PrefixFrom(addr4(), 14+rng.IntN(19)).Masked()
		}
		return netip.PrefixFrom(addr6(), 40+rng.IntN(89)).Masked()
	}
	maybeAddr := func(f func() netip.Addr) netip.Addr {
		if rng.IntN(4) == 0 {
			return netip.Addr{}
		}
		return f()
	}
	for round := range 200 {
		c, x := nodeclaims.New("node IP"), &claimIndex{}
		for i := range 40 {
			ip4, ip6, cidrs := maybeAddr(addr4), maybeAddr(addr6), []netip.Prefix{prefix()}
			if !ip4.IsValid() && !ip6.IsValid() {
				ip6 = addr6()
			}
			if rng.IntN(3) == 0 {
				cidrs = append(cidrs, prefix())
			}
			first, second := ip4, ip6
			if !first.IsValid() {
				first, second = ip6, netip.Addr{}
			}
			holder, _ := c.Conflict(first, cidrs)
			if holder == "" && second.IsValid() {
				holder, _ = c.Conflict(second, nil)
			}
			maybe := x.mayConflict(ip4, cidrs) || x.mayConflict(ip6, nil)
			if maybe != (holder != "") {
				t.Fatalf("round %d claim %d: %s %s %v: index says %v, Conflict says holder %q", round, i, ip4, ip6, cidrs, maybe, holder)
			}
			if holder == "" {
				c.Claim("n", first, cidrs)
				if second.IsValid() {
					c.Claim("n", second, nil)
				}
				x.claim(ip4, cidrs)
				x.claim(ip6, nil)
			}
		}
	}
}
