package routing

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/config"
)

// cmpNetip compares netip values by ==.
var cmpNetip = []cmp.Option{cmp.Comparer(func(x, y netip.Addr) bool { return x == y }),
	cmp.Comparer(func(x, y netip.Prefix) bool { return x == y }), cmp.Comparer(func(x, y netip.AddrPort) bool { return x == y })}

// randomPeers are peers drawn from small spaces so that every kind of
// problem happens: shared node IPs and VTEP MACs, overlapping pod CIDRs,
// pod CIDRs outside the cluster or over the node network, no address, no
// CIDR, shared WireGuard keys, peers on and off this node's subnet.
func randomPeers(rng *rand.Rand, n int) []Peer {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	peers := make([]Peer, n)
	for i := range peers {
		p := Peer{Name: fmt.Sprintf("n%03d", i), Created: t0.Add(time.Duration(rng.IntN(n)) * time.Second)}
		if rng.IntN(12) > 0 {
			p.NodeIP = netip.AddrFrom4([4]byte{10, 0, byte(1 + rng.IntN(2)), byte(2 + rng.IntN(60))})
		}
		if rng.IntN(12) > 0 {
			bits := 24
			if rng.IntN(15) == 0 {
				bits = 20
			}
			third := byte(2 + rng.IntN(80))
			if rng.IntN(30) == 0 {
				p.PodCIDRs = []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 1, 0}), 24)} // the node network
			} else if rng.IntN(30) == 0 {
				p.PodCIDRs = []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, third, 0}), 24)} // outside the cluster
			} else {
				p.PodCIDRs = []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, third, 0}), bits).Masked()}
			}
		}
		if rng.IntN(20) == 0 {
			p.VTEPMAC = "0e:00:00:00:00:01"
		}
		if rng.IntN(3) > 0 {
			p.PublicKey = testKey(byte(2 + rng.IntN(60)))
		}
		peers[i] = p
	}
	return peers
}

// Extending a computed state by peers that come after every other in
// claim order gives what Compute gives for all of them, whatever the mode
// and encryption, with problems of every kind among them.
func TestExtendEqualsCompute(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	local := LocalNode{Name: "local", NodeIP: netip.MustParseAddr("10.0.1.1"),
		Underlay: Underlay{Device: "eth0", Prefix: netip.MustParsePrefix("10.0.1.1/24"), MTU: 1500},
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}, PublicKey: testKey(1)}
	modes := []config.RoutingMode{config.ModeNative, config.ModeVXLAN, config.ModeAuto, config.ModeBGP}
	for round := range 300 {
		p := Params{Mode: modes[round%len(modes)], VXLAN: config.VXLAN{Device: "trellis.vxlan", VNI: 1, Port: 4789},
			ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
			Encryption:   Encryption{Enabled: round%3 == 0, Device: "trellis.wg", Port: 51820}}
		peers := randomPeers(rng, 10+rng.IntN(60))
		slices.SortFunc(peers, comparePeers)
		split := rng.IntN(len(peers))
		d, s := compute(local, peers[:split], p)
		for rest := peers[split:]; len(rest) > 0; {
			k := 1 + rng.IntN(3)
			k = min(k, len(rest))
			d, rest = extend(d, s, local, rest[:k], p), rest[k:]
		}
		shuffled := slices.Clone(peers)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if diff := cmp.Diff(Compute(local, shuffled, p), d, cmpNetip...); diff != "" {
			t.Fatalf("round %d (mode %s, encryption %v, %d peers, split at %d): extended state differs from Compute (-want +got):\n%s",
				round, p.Mode, p.Encryption.Enabled, len(peers), split, diff)
		}
	}
}

// extend leaves the state it extends untouched (the controller hands it
// out through Programmed).
func TestExtendDoesNotModifyPrev(t *testing.T) {
	local, peers := goldenCluster()
	p := Params{Mode: config.ModeAuto, VXLAN: config.VXLAN{Device: "trellis.vxlan", VNI: 1, Port: 4789}}
	d, s := compute(local, peers[:3], p)
	before := d.clone()
	later := Peer{Name: "node9", NodeIP: netip.MustParseAddr("10.0.2.19"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.9.0/24")},
		Created: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	_ = extend(d, s, local, []Peer{later}, p)
	if diff := cmp.Diff(before, d, cmpNetip...); diff != "" {
		t.Fatalf("extend modified its input (-before +after):\n%s", diff)
	}
}

// The cache extends only when Nodes were added after all others; an
// update, a deletion or an older Node recomputes; each answer equals
// Compute over the same Nodes.
func TestComputeCacheExtendsOnlyNewestAdditions(t *testing.T) {
	local := LocalNode{Name: "node1", NodeIP: netip.MustParseAddr("10.0.1.11"),
		Underlay: Underlay{Device: "eth0", Prefix: netip.MustParsePrefix("10.0.1.11/24"), MTU: 1500},
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}}
	p := Params{Mode: config.ModeAuto, VXLAN: config.VXLAN{Device: "trellis.vxlan", VNI: 1, Port: 4789}}
	node := func(i int, created int) *v1.Node {
		n := apiNode(fmt.Sprintf("node%d", i), fmt.Sprintf("10.0.%d.%d", 1+i%2, 10+i), fmt.Sprintf("10.244.%d.0/24", i))
		n.CreationTimestamp = metav1.NewTime(time.Date(2026, 1, 1, 0, 0, created, 0, time.UTC))
		return n
	}
	nodes := []*v1.Node{node(1, 1), node(2, 2), node(3, 3)}
	var cc computeCache
	check := func(what string, wantExtended bool) {
		t.Helper()
		prevScreen := cc.screen
		got := cc.desired(local, nodes, p)
		peers := make([]Peer, len(nodes))
		for i, n := range nodes {
			peers[i] = PeerFromNode(n)
		}
		if diff := cmp.Diff(Compute(local, peers, p), got, cmpNetip...); diff != "" {
			t.Fatalf("%s: cached state differs from Compute (-want +got):\n%s", what, diff)
		}
		if extended := prevScreen != nil && cc.screen == prevScreen; extended != wantExtended {
			t.Errorf("%s: extended = %v, want %v", what, extended, wantExtended)
		}
	}
	check("first", false)
	nodes = append(nodes, node(4, 4))
	check("newest node added", true)
	check("nothing changed", true)
	beat := node(3, 3)
	beat.Status.Conditions = []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue}}
	nodes[2] = beat
	nodes = append(nodes, node(6, 6))
	check("status-only update and newest node added", true)
	nodes = append(nodes, node(5, 0))
	check("node older than others added", false)
	updated := node(2, 2)
	updated.Status.Addresses[0].Address = "10.0.1.99"
	nodes[1] = updated
	check("node address updated", false)
	keyed := node(4, 4)
	keyed.Annotations = map[string]string{AnnotationVTEPMAC: "0e:00:00:00:00:44"}
	nodes[3] = keyed
	check("node annotation updated", false)
	nodes = nodes[:len(nodes)-1]
	check("node deleted", false)
}
