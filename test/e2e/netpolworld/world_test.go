package netpolworld

import (
	"math/rand"
	"net/netip"
	"reflect"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
)

var worldPods = []string{"x/a", "x/b", "y/a"}

func ipBlocks(specs []networkingv1.NetworkPolicySpec) []*networkingv1.IPBlock {
	var out []*networkingv1.IPBlock
	for _, s := range specs {
		for _, r := range s.Ingress {
			for _, p := range r.From {
				if p.IPBlock != nil {
					out = append(out, p.IPBlock)
				}
			}
		}
		for _, r := range s.Egress {
			for _, p := range r.To {
				if p.IPBlock != nil {
					out = append(out, p.IPBlock)
				}
			}
		}
	}
	return out
}

func draw(g Gen, n int) []networkingv1.NetworkPolicySpec {
	var out []networkingv1.NetworkPolicySpec
	for i := 0; i < n; i++ {
		out = append(out, g.Spec())
	}
	return out
}

// Without Blocks the generator draws exactly what it drew before blocks of
// other families existed (a seed of an IPv4 lab replays); one IPv4 Block
// with the same addresses draws the same policies too, but for the block
// vocabulary.
func TestGenIPv4VocabularyUnchanged(t *testing.T) {
	ip := map[string]string{"x/a": "10.244.1.5", "x/b": "10.244.2.7", "y/a": "10.244.1.9"}
	specs := draw(Gen{R: rand.New(rand.NewSource(7)), Pods: worldPods, IP: ip}, 200)
	blocks := ipBlocks(specs)
	if len(blocks) == 0 {
		t.Fatal("200 specs drew no ipBlock")
	}
	for _, b := range blocks {
		if b.CIDR != "10.244.0.0/16" || len(b.Except) != 1 {
			t.Fatalf("legacy block %+v", b)
		}
	}
	again := draw(Gen{R: rand.New(rand.NewSource(7)), Pods: worldPods, IP: ip}, 200)
	if !reflect.DeepEqual(specs, again) {
		t.Fatal("the same seed drew different specs")
	}
}

// With blocks of two families every drawn ipBlock is valid for the API
// (CIDR and excepts of one family, excepts strictly inside the CIDR), both
// families and both shapes (cluster CIDR except a host, everything except
// a node-sized prefix) occur, and a host except is the pod's address.
func TestGenBlocksOfBothFamilies(t *testing.T) {
	ip4 := map[string]string{"x/a": "10.244.1.5", "x/b": "10.244.2.7", "y/a": "10.244.1.9"}
	ip6 := map[string]string{"x/a": "fd74:7265:6c01:1::5", "x/b": "fd74:7265:6c01:2::7", "y/a": "fd74:7265:6c01:1::9"}
	g := Gen{R: rand.New(rand.NewSource(11)), Pods: worldPods, IP: ip4, Blocks: []Block{
		{CIDR: netip.MustParsePrefix("10.244.0.0/16"), IP: ip4, Wide: 24},
		{CIDR: netip.MustParsePrefix("fd74:7265:6c01::/48"), IP: ip6, Wide: 64},
	}}
	seen := map[string]bool{}
	hosts := map[string]bool{}
	for _, m := range []map[string]string{ip4, ip6} {
		for _, a := range m {
			hosts[netip.PrefixFrom(netip.MustParseAddr(a), netip.MustParseAddr(a).BitLen()).String()] = true
		}
	}
	for _, b := range ipBlocks(draw(g, 400)) {
		cidr, err := netip.ParsePrefix(b.CIDR)
		if err != nil || cidr != cidr.Masked() {
			t.Fatalf("block CIDR %q is not a network prefix: %v", b.CIDR, err)
		}
		if len(b.Except) != 1 {
			t.Fatalf("block %+v: want one except", b)
		}
		ex, err := netip.ParsePrefix(b.Except[0])
		if err != nil || ex != ex.Masked() || ex.Addr().Is6() != cidr.Addr().Is6() || ex.Bits() <= cidr.Bits() || !cidr.Contains(ex.Addr()) {
			t.Fatalf("block %+v: except %q is not a longer prefix inside the CIDR of the same family (%v)", b, b.Except[0], err)
		}
		fam := "4"
		if cidr.Addr().Is6() {
			fam = "6"
		}
		if cidr.Bits() == 0 {
			seen["all"+fam] = true
			if want := map[string]int{"4": 24, "6": 64}[fam]; ex.Bits() != want {
				t.Errorf("block %+v: the whole family's except is /%d, want the node size /%d", b, ex.Bits(), want)
			}
		} else {
			seen["cluster"+fam] = true
			if !hosts[ex.String()] {
				t.Errorf("block %+v: except %s is no pod's address", b, ex)
			}
		}
	}
	for _, k := range []string{"all4", "all6", "cluster4", "cluster6"} {
		if !seen[k] {
			t.Errorf("400 specs drew no %s block (seen %v)", k, seen)
		}
	}
}
