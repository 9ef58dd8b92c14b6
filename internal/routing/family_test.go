package routing

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/trellisnet/trellis/internal/config"
)

// The golden tests repeated for an IPv6-only and a dual-stack cluster.

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

// goldenCluster6 is goldenCluster in IPv6: node1 and node2 on
// fd74:7265:6c00:1::/64, node3 on fd74:7265:6c00:2::/64 (published VTEP
// MAC), node4 without a pod CIDR, node5 without an address; node2 also
// has an IPv4 pod CIDR, ignored by an IPv6-only node.
func goldenCluster6() (LocalNode, []Peer) {
	local := LocalNode{
		Name: "node1", NodeIP6: addr("fd74:7265:6c00:1::11"),
		Underlay6: Underlay{Device: "eth0", Prefix: pfx("fd74:7265:6c00:1::11/64"), MTU: 1500,
			Connected: []netip.Prefix{pfx("::1/128"), pfx("fe80::/64")}},
		PodCIDRs: []netip.Prefix{pfx("fd00:10:244:1::/64")},
	}
	peers := []Peer{
		{Name: "node1", NodeIP6: local.NodeIP6, PodCIDRs: local.PodCIDRs},
		{Name: "node3", NodeIP6: addr("fd74:7265:6c00:2::13"), PodCIDRs: []netip.Prefix{pfx("fd00:10:244:3::/64")}, VTEPMAC: "0e:00:00:00:00:03"},
		{Name: "node2", NodeIP6: addr("fd74:7265:6c00:1::12"), PodCIDRs: []netip.Prefix{pfx("fd00:10:244:2::/64"), pfx("10.244.2.0/24")}},
		{Name: "node4", NodeIP6: addr("fd74:7265:6c00:1::14")},
		{Name: "node5", PodCIDRs: []netip.Prefix{pfx("fd00:10:244:5::/64")}},
	}
	return local, peers
}

// goldenClusterDual is goldenCluster in dual stack: every node has an
// address and a pod CIDR of each family (node1–node3 as in goldenCluster),
// plus node6, IPv6-only on another IPv6 subnet (reached by VXLAN over
// IPv6), and node7 on this node's IPv4 subnet without an IPv6 node IP
// (auto: IPv4 native, IPv6 by VXLAN over IPv4).
func goldenClusterDual() (LocalNode, []Peer) {
	local := LocalNode{
		Name: "node1", NodeIP: addr("10.0.1.11"), NodeIP6: addr("fd74:7265:6c00:1::11"),
		Underlay:  Underlay{Device: "eth0", Prefix: pfx("10.0.1.11/24"), MTU: 1500},
		Underlay6: Underlay{Device: "eth0", Prefix: pfx("fd74:7265:6c00:1::11/64"), MTU: 1500},
		PodCIDRs:  []netip.Prefix{pfx("10.244.1.0/24"), pfx("fd00:10:244:1::/64")},
	}
	peers := []Peer{
		{Name: "node1", NodeIP: local.NodeIP, NodeIP6: local.NodeIP6, PodCIDRs: local.PodCIDRs},
		{Name: "node3", NodeIP: addr("10.0.2.13"), NodeIP6: addr("fd74:7265:6c00:2::13"),
			PodCIDRs: []netip.Prefix{pfx("10.244.3.0/24"), pfx("fd00:10:244:3::/64")}, VTEPMAC: "0e:00:00:00:00:03"},
		{Name: "node2", NodeIP: addr("10.0.1.12"), NodeIP6: addr("fd74:7265:6c00:1::12"),
			PodCIDRs: []netip.Prefix{pfx("10.244.2.0/24"), pfx("fd00:10:244:2::/64")}},
		{Name: "node4", NodeIP: addr("10.0.1.14"), NodeIP6: addr("fd74:7265:6c00:1::14")},
		{Name: "node5", PodCIDRs: []netip.Prefix{pfx("10.244.5.0/24"), pfx("fd00:10:244:5::/64")}},
		{Name: "node6", NodeIP6: addr("fd74:7265:6c00:2::16"), PodCIDRs: []netip.Prefix{pfx("fd00:10:244:6::/64")}, VTEPMAC: "0e:00:00:00:00:06"},
		{Name: "node7", NodeIP: addr("10.0.1.17"), PodCIDRs: []netip.Prefix{pfx("10.244.7.0/24"), pfx("fd00:10:244:7::/64")}},
	}
	return local, peers
}

var goldenVXLAN = config.VXLAN{Device: "trellis.vxlan", Device6: "trellis.vxlan6", VNI: 4096, Port: 4789}

func TestComputeGoldenIPv6AndDual(t *testing.T) {
	for _, c := range []struct {
		name    string
		cluster func() (LocalNode, []Peer)
	}{{"ipv6", goldenCluster6}, {"dual", goldenClusterDual}} {
		local, peers := c.cluster()
		for _, mode := range []config.RoutingMode{config.ModeNative, config.ModeVXLAN, config.ModeAuto, config.ModeBGP} {
			t.Run(c.name+"/"+string(mode), func(t *testing.T) {
				p := Params{Mode: mode, VXLAN: goldenVXLAN}
				checkGolden(t, "compute-"+string(mode)+"-"+c.name+".golden.json", Compute(local, peers, p))
			})
		}
	}
}

func TestComputeWireGuardGoldenDual(t *testing.T) {
	local, peers := goldenClusterDual()
	local.PublicKey = testKey(1)
	for i := range peers {
		switch peers[i].Name {
		case "node2":
			peers[i].PublicKey = testKey(2)
		case "node6":
			peers[i].PublicKey = testKey(6)
		}
	}
	for _, mode := range []config.RoutingMode{config.ModeNative, config.ModeVXLAN, config.ModeAuto} {
		t.Run(string(mode), func(t *testing.T) {
			p := Params{Mode: mode, VXLAN: goldenVXLAN, Encryption: wgParams}
			d := Compute(local, peers, p)
			checkGolden(t, "compute-"+string(mode)+"-wireguard-dual.golden.json", goldenView(d))
			// Encrypted peers' IPv6 pod CIDRs go through the device too.
			for _, r := range d.Routes {
				if (r.Node == "node2" || r.Node == "node6") && r.Path != PathWireGuard {
					t.Errorf("route %+v of an encrypted peer not through WireGuard", r)
				}
			}
		})
	}
}

// An IPv6-only node with encryption on has no WireGuard device: it
// programs no plaintext route at all (fail closed).
func TestComputeWireGuardIPv6OnlyFailsClosed(t *testing.T) {
	local, peers := goldenCluster6()
	d := Compute(local, peers, Params{Mode: config.ModeAuto, VXLAN: goldenVXLAN, Encryption: wgParams})
	for _, r := range d.Routes {
		if !r.Unreachable {
			t.Errorf("route %+v programmed with encryption on and no WireGuard device", r)
		}
	}
	if !hasProblem(d, "node2", ReasonNoWireGuardKey) || !hasProblem(d, "node3", ReasonNoWireGuardKey) {
		t.Errorf("problems %+v lack node2 and node3", d.Problems)
	}
}

// routesOf is node's routes by destination.
func routesOf(d *Desired, node string) map[netip.Prefix]Route {
	out := map[netip.Prefix]Route{}
	for _, r := range d.Routes {
		if r.Node == node {
			out[r.Dst] = r
		}
	}
	return out
}

// Properties of the IPv6-only cluster, whatever the golden files say.
func TestComputeIPv6Properties(t *testing.T) {
	local, peers := goldenCluster6()
	auto := Compute(local, peers, Params{Mode: config.ModeAuto, VXLAN: goldenVXLAN})
	if auto.VXLAN != nil || auto.RemoveVXLAN != "trellis.vxlan" || auto.VXLAN6 == nil || auto.RemoveVXLAN6 != "" {
		t.Fatalf("auto: VXLAN %+v remove %q, VXLAN6 %+v remove %q; want only the IPv6-underlay device", auto.VXLAN, auto.RemoveVXLAN, auto.VXLAN6, auto.RemoveVXLAN6)
	}
	vx := auto.VXLAN6
	if vx.Local != local.NodeIP6 || vx.MTU != 1430 || vx.Addr.IsValid() || vx.Addr6 != pfx("fd00:10:244:1::/128") || vx.Name != "trellis.vxlan6" {
		t.Errorf("VXLAN6 %+v: want local %s, MTU 1430 (70 bytes), only the IPv6 VTEP address", vx, local.NodeIP6)
	}
	n2, n3 := routesOf(auto, "node2"), routesOf(auto, "node3")
	if r := n2[pfx("fd00:10:244:2::/64")]; r.Path != PathNative || r.Gw != addr("fd74:7265:6c00:1::12") || r.Dev != "eth0" || len(n2) != 1 {
		t.Errorf("node2 routes %+v; want only fd00:10:244:2::/64 native via its node IP (its IPv4 pod CIDR ignored)", n2)
	}
	if r := n3[pfx("fd00:10:244:3::/64")]; r.Path != PathVXLAN || r.Gw != addr("fd00:10:244:3::") || r.Dev != "trellis.vxlan6" || !r.OnLink {
		t.Errorf("node3 routes %+v; want VXLAN over IPv6 via its VTEP address", n3)
	}
	if len(auto.FDB) != 0 || len(auto.FDB6) != 1 || auto.FDB6[0].Dst != addr("fd74:7265:6c00:2::13") ||
		len(auto.Neighbors6) != 1 || auto.Neighbors6[0].IP != addr("fd00:10:244:3::") {
		t.Errorf("FDB %+v FDB6 %+v Neighbors6 %+v; want node3 over IPv6", auto.FDB, auto.FDB6, auto.Neighbors6)
	}
	if !hasProblem(auto, "node4", ReasonNoPodCIDR) || !hasProblem(auto, "node5", ReasonNoNodeIP) {
		t.Errorf("problems %+v lack node4 (no pod CIDR) or node5 (no IP)", auto.Problems)
	}
	native := Compute(local, peers, Params{Mode: config.ModeNative, VXLAN: goldenVXLAN})
	if native.VXLAN6 != nil || native.RemoveVXLAN6 != "trellis.vxlan6" || !hasProblem(native, "node3", ReasonNotOnSameSubnet) {
		t.Errorf("native: VXLAN6 %+v remove %q problems %+v", native.VXLAN6, native.RemoveVXLAN6, native.Problems)
	}
	if got := PodMTUFor(Params{Mode: config.ModeAuto}, local.Underlay6); got != 1430 {
		t.Errorf("pod MTU over an IPv6 underlay %d, want 1430", got)
	}
}

// Properties of the dual-stack cluster: auto is decided per family, VXLAN
// carries both inner families over IPv4 whenever both ends have an IPv4
// node IP, over IPv6 to an IPv6-only peer.
func TestComputeDualProperties(t *testing.T) {
	local, peers := goldenClusterDual()
	auto := Compute(local, peers, Params{Mode: config.ModeAuto, VXLAN: goldenVXLAN})
	if auto.VXLAN == nil || auto.VXLAN.Addr != pfx("10.244.1.0/32") || auto.VXLAN.Addr6 != pfx("fd00:10:244:1::/128") || auto.VXLAN.MTU != 1450 {
		t.Errorf("VXLAN %+v: want both VTEP addresses, MTU 1450", auto.VXLAN)
	}
	if auto.VXLAN6 == nil || auto.VXLAN6.MTU != 1430 || auto.RemoveVXLAN6 != "" {
		t.Errorf("VXLAN6 %+v remove %q: want the IPv6-underlay device for node6", auto.VXLAN6, auto.RemoveVXLAN6)
	}
	want := map[string]map[netip.Prefix]Route{
		"node2": {
			pfx("10.244.2.0/24"):      {Gw: addr("10.0.1.12"), Dev: "eth0", Path: PathNative},
			pfx("fd00:10:244:2::/64"): {Gw: addr("fd74:7265:6c00:1::12"), Dev: "eth0", Path: PathNative},
		},
		"node3": {
			pfx("10.244.3.0/24"):      {Gw: addr("10.244.3.0"), Dev: "trellis.vxlan", OnLink: true, Path: PathVXLAN},
			pfx("fd00:10:244:3::/64"): {Gw: addr("fd00:10:244:3::"), Dev: "trellis.vxlan", OnLink: true, Path: PathVXLAN},
		},
		"node6": {
			pfx("fd00:10:244:6::/64"): {Gw: addr("fd00:10:244:6::"), Dev: "trellis.vxlan6", OnLink: true, Path: PathVXLAN},
		},
		"node7": {
			pfx("10.244.7.0/24"):      {Gw: addr("10.0.1.17"), Dev: "eth0", Path: PathNative},
			pfx("fd00:10:244:7::/64"): {Gw: addr("fd00:10:244:7::"), Dev: "trellis.vxlan", OnLink: true, Path: PathVXLAN},
		},
	}
	for node, routes := range want {
		got := routesOf(auto, node)
		if len(got) != len(routes) {
			t.Errorf("%s: routes %+v, want %+v", node, got, routes)
		}
		for dst, w := range routes {
			g := got[dst]
			if g.Gw != w.Gw || g.Dev != w.Dev || g.OnLink != w.OnLink || g.Path != w.Path {
				t.Errorf("%s %s: route %+v, want %+v", node, dst, g, w)
			}
		}
	}
	fdb := map[string]netip.Addr{}
	for _, e := range auto.FDB {
		fdb[e.Node] = e.Dst
	}
	if len(auto.FDB) != 2 || fdb["node3"] != addr("10.0.2.13") || fdb["node7"] != addr("10.0.1.17") {
		t.Errorf("FDB %+v: want one entry each for node3 and node7 over IPv4", auto.FDB)
	}
	if len(auto.FDB6) != 1 || auto.FDB6[0].Dst != addr("fd74:7265:6c00:2::16") {
		t.Errorf("FDB6 %+v: want node6 over IPv6", auto.FDB6)
	}
	if auto.Peers["native"] != 2 || auto.Peers["vxlan"] != 2 {
		t.Errorf("peers %v: want node2 and node7 native (IPv4 family's path), node3 and node6 vxlan", auto.Peers)
	}
	// Without node6 nobody needs VXLAN over IPv6: the device goes.
	var noV6Only []Peer
	for _, p := range peers {
		if p.Name != "node6" {
			noV6Only = append(noV6Only, p)
		}
	}
	if d := Compute(local, noV6Only, Params{Mode: config.ModeAuto, VXLAN: goldenVXLAN}); d.VXLAN6 != nil || d.RemoveVXLAN6 != "trellis.vxlan6" {
		t.Errorf("without an IPv6-only peer: VXLAN6 %+v remove %q; want none, removed", d.VXLAN6, d.RemoveVXLAN6)
	}
	native := Compute(local, peers, Params{Mode: config.ModeNative, VXLAN: goldenVXLAN})
	if r := routesOf(native, "node7"); len(r) != 1 || !hasProblem(native, "node7", ReasonNotOnSameSubnet) {
		t.Errorf("native: node7 routes %+v problems %+v; want its IPv4 route and a problem for IPv6", r, native.Problems)
	}
	if got := PodMTUFor(Params{Mode: config.ModeAuto}, local.Underlay); got != 1450 {
		t.Errorf("dual pod MTU %d, want 1450 (VXLAN over IPv4)", got)
	}
}

// An IPv4 node ignores IPv6 data entirely: adding IPv6 node IPs and pod
// CIDRs to an IPv4 cluster's peers changes nothing.
func TestComputeIPv4NodeIgnoresIPv6(t *testing.T) {
	local, peers := goldenCluster()
	p := Params{Mode: config.ModeAuto, VXLAN: config.VXLAN{Device: "vx", Device6: "vx6"}}
	want := Compute(local, peers, p)
	local.NodeIP6 = addr("fd74::11")
	for i := range peers {
		peers[i].NodeIP6 = addr("fd74::11") // even a colliding one
		peers[i].PodCIDRs = append(slices.Clone(peers[i].PodCIDRs), pfx("fd00::/8"))
	}
	got := Compute(local, peers, p)
	if !equalDesired(want, got) {
		t.Errorf("IPv6 data changed an IPv4 node's desired state:\n%+v\n%+v", want, got)
	}
}

func equalDesired(a, b *Desired) bool {
	return slices.Equal(a.Routes, b.Routes) && slices.Equal(a.FDB, b.FDB) && slices.Equal(a.Neighbors, b.Neighbors) &&
		slices.Equal(a.Problems, b.Problems) && *a.VXLAN == *b.VXLAN && a.VXLAN6 == nil && b.VXLAN6 == nil
}

// Conflicts are screened in IPv6 as in IPv4: the earlier node keeps an
// IPv6 node IP or pod CIDR, and cluster CIDRs bound each family.
func TestComputeRejectsConflictingIPv6Peers(t *testing.T) {
	local, _ := goldenClusterDual()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(name, ip6, cidr6 string, age int) Peer {
		return Peer{Name: name, NodeIP: netip.AddrFrom4([4]byte{10, 0, 1, byte(100 + age)}), NodeIP6: addr(ip6),
			PodCIDRs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(100 + age), 0}), 24), pfx(cidr6)},
			Created:  t0.Add(time.Duration(age) * time.Minute)}
	}
	cluster := []netip.Prefix{pfx("10.244.0.0/16"), pfx("fd00:10:244::/56")}
	cases := []struct {
		name   string
		peers  []Peer
		reject map[string]string
	}{
		{"distinct", []Peer{mk("a", "fd74:7265:6c00:1::20", "fd00:10:244:20::/64", 0), mk("b", "fd74:7265:6c00:1::21", "fd00:10:244:21::/64", 1)}, nil},
		{"same IPv6 node IP", []Peer{mk("a", "fd74:7265:6c00:1::20", "fd00:10:244:20::/64", 0), mk("b", "fd74:7265:6c00:1::20", "fd00:10:244:21::/64", 1)},
			map[string]string{"b": ReasonConflict}},
		{"overlapping IPv6 pod CIDR", []Peer{mk("b", "fd74:7265:6c00:1::21", "fd00:10:244:20::/60", 1), mk("a", "fd74:7265:6c00:1::20", "fd00:10:244:20::/64", 0)},
			map[string]string{"b": ReasonConflict}},
		{"this node's IPv6 pod CIDR", []Peer{mk("a", "fd74:7265:6c00:1::20", "fd00:10:244:1::/64", 0)}, map[string]string{"a": ReasonConflict}},
		{"IPv6 pod CIDR holding this node's IPv6 IP", []Peer{mk("a", "fd74:7265:6c00:1::20", "fd74:7265:6c00:1::/64", 0)}, map[string]string{"a": ReasonPodCIDROverlapsNode}},
		{"IPv6 pod CIDR outside the IPv6 cluster CIDR", []Peer{mk("a", "fd74:7265:6c00:1::20", "fd00:99::/64", 0)}, map[string]string{"a": ReasonPodCIDROutsideCluster}},
		{"IPv6 default route", []Peer{mk("a", "fd74:7265:6c00:1::20", "::/0", 0)}, map[string]string{"a": ReasonPodCIDROverlapsNode}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cidrs := cluster
			if c.name == "IPv6 default route" || c.name == "IPv6 pod CIDR holding this node's IPv6 IP" {
				cidrs = nil // no bound at all
			}
			d := Compute(local, c.peers, Params{Mode: config.ModeAuto, VXLAN: goldenVXLAN, ClusterCIDRs: cidrs})
			for _, peer := range c.peers {
				reason, rejected := c.reject[peer.Name]
				routes := routesOf(d, peer.Name)
				switch {
				case rejected && (len(routes) != 0 || !hasProblem(d, peer.Name, reason)):
					t.Errorf("%s: routes %+v problems %+v; want rejected (%s)", peer.Name, routes, d.Problems, reason)
				case !rejected && len(routes) != 2:
					t.Errorf("%s: routes %+v problems %+v; want both families routed", peer.Name, routes, d.Problems)
				}
			}
		})
	}
}

// Extending the cached state with a joining IPv6 or dual node equals a
// full compute.
func TestExtendEqualsComputeIPv6AndDual(t *testing.T) {
	for _, cluster := range []func() (LocalNode, []Peer){goldenCluster6, goldenClusterDual} {
		local, peers := cluster()
		t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		for i := range peers {
			peers[i].Created = t0.Add(time.Duration(i) * time.Minute)
		}
		for _, mode := range []config.RoutingMode{config.ModeNative, config.ModeVXLAN, config.ModeAuto} {
			p := Params{Mode: mode, VXLAN: goldenVXLAN}
			for split := 1; split < len(peers); split++ {
				prev, s := compute(local, peers[:split], p)
				got := extend(prev, s, local, peers[split:], p)
				want := Compute(local, peers, p)
				if !sameDesired(got, want) {
					t.Errorf("%s split %d: extend\n%+v\nwant\n%+v", mode, split, got, want)
				}
			}
		}
	}
}

func sameDesired(a, b *Desired) bool {
	eqDev := func(x, y *VXLANDevice) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	return eqDev(a.VXLAN, b.VXLAN) && eqDev(a.VXLAN6, b.VXLAN6) && a.RemoveVXLAN == b.RemoveVXLAN && a.RemoveVXLAN6 == b.RemoveVXLAN6 &&
		slices.Equal(a.Routes, b.Routes) && slices.Equal(a.FDB, b.FDB) && slices.Equal(a.FDB6, b.FDB6) &&
		slices.Equal(a.Neighbors, b.Neighbors) && slices.Equal(a.Neighbors6, b.Neighbors6) && slices.Equal(a.Problems, b.Problems)
}

// Cluster CIDRs that hold no prefix of a family leave that family
// unrouted (fail closed: nothing would bound a Node's pod CIDR of it): an
// IPv4-bounded dual-stack node routes IPv4 only, even to a peer claiming
// 2000::/3.
func TestComputeFamilyWithoutClusterCIDRIsNotRouted(t *testing.T) {
	local, peers := goldenClusterDual()
	peers = append(peers, Peer{Name: "wide", NodeIP: addr("10.0.1.30"), NodeIP6: addr("fd74:7265:6c00:1::30"),
		PodCIDRs: []netip.Prefix{pfx("10.244.30.0/24"), pfx("2000::/3")}})
	d := Compute(local, peers, Params{Mode: config.ModeAuto, VXLAN: goldenVXLAN, ClusterCIDRs: []netip.Prefix{pfx("10.244.0.0/16")}})
	for _, r := range d.Routes {
		if r.Dst.Addr().Is6() {
			t.Errorf("IPv6 route %+v with IPv4-only cluster CIDRs", r)
		}
	}
	if r := routesOf(d, "wide"); len(r) != 1 {
		t.Errorf("wide: routes %+v, want its IPv4 pod CIDR only", r)
	}
	if d.VXLAN == nil || d.VXLAN.Addr6.IsValid() {
		t.Errorf("VXLAN %+v: want no IPv6 VTEP address", d.VXLAN)
	}
	both := []netip.Prefix{pfx("10.244.0.0/16"), pfx("fd00:10:244::/48")}
	d = Compute(local, peers, Params{Mode: config.ModeAuto, VXLAN: goldenVXLAN, ClusterCIDRs: both})
	if r := routesOf(d, "wide"); len(r) != 0 || !hasProblem(d, "wide", ReasonPodCIDROutsideCluster) {
		t.Errorf("wide with an IPv6 cluster CIDR: routes %+v problems %+v; want rejected", r, d.Problems)
	}
	if r := routesOf(d, "node2"); len(r) != 2 {
		t.Errorf("node2: routes %+v, want both families", r)
	}
	if why := unconfiguredFamily(familiesOf(local.PodCIDRs), []netip.Prefix{pfx("10.244.0.0/16")}); why == "" {
		t.Error("an IPv6 pod CIDR without an IPv6 cluster CIDR is not reported")
	}
}
