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

func TestClaimIndexIPv6IsAlwaysMaybe(t *testing.T) {
	x := &claimIndex{}
	x.claim(netip.MustParseAddr("10.0.0.1"), []netip.Prefix{netip.MustParsePrefix("fd00::/64")})
	if !x.mayConflict(netip.MustParseAddr("10.0.0.2"), []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")}) {
		t.Fatal("after an IPv6 claim the index must defer to the scan")
	}
}
