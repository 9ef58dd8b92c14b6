package routing

import (
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/trellisnet/trellis/internal/config"
)

var update = flag.Bool("update", false, "rewrite golden files")

// Cluster used by the golden tests: node1 and node2 on 10.0.1.0/24, node3
// on 10.0.2.0/24, node4 without a pod CIDR, node5 without an address.
func goldenCluster() (LocalNode, []Peer) {
	local := LocalNode{
		Name: "node1", NodeIP: netip.MustParseAddr("10.0.1.11"),
		Underlay: Underlay{Device: "eth0", Prefix: netip.MustParsePrefix("10.0.1.11/24"), MTU: 1500},
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")},
	}
	peers := []Peer{
		{Name: "node1", NodeIP: local.NodeIP, PodCIDRs: local.PodCIDRs},
		{Name: "node3", NodeIP: netip.MustParseAddr("10.0.2.13"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.3.0/24")}, VTEPMAC: "0e:00:00:00:00:03"},
		{Name: "node2", NodeIP: netip.MustParseAddr("10.0.1.12"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24"), netip.MustParsePrefix("fd00:2::/64")}},
		{Name: "node4", NodeIP: netip.MustParseAddr("10.0.1.14")},
		{Name: "node5", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.5.0/24")}},
	}
	return local, peers
}

func TestComputeGolden(t *testing.T) {
	local, peers := goldenCluster()
	for _, mode := range []config.RoutingMode{config.ModeNative, config.ModeVXLAN, config.ModeAuto, config.ModeBGP} {
		t.Run(string(mode), func(t *testing.T) {
			p := Params{Mode: mode, VXLAN: config.VXLAN{Device: "trellis.vxlan", VNI: 4096, Port: 4789}}
			checkGolden(t, "compute-"+string(mode)+".golden.json", Compute(local, peers, p))
		})
	}
}

// checkGolden compares v, as indented JSON, with testdata/name (written
// with -update).
func checkGolden(t *testing.T, name string, v any) {
	t.Helper()
	got, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run with -update to create): %v", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("result differs from %s (-want +got):\n%s", path, diff)
	}
}

// routingMode bgp: nothing to other nodes (BGP carries their pod CIDRs),
// no VXLAN device (removed if an earlier mode left one), the own pod
// CIDRs' unreachable route, every valid peer counted under path bgp, and
// the pod MTU is the underlay's.
func TestComputeBGPMode(t *testing.T) {
	local, peers := goldenCluster()
	p := Params{Mode: config.ModeBGP, VXLAN: config.VXLAN{Device: "vx"}}
	d := Compute(local, peers, p)
	if d.VXLAN != nil || d.RemoveVXLAN != "vx" || len(d.FDB) != 0 || len(d.Neighbors) != 0 {
		t.Errorf("bgp: VXLAN %+v remove %q FDB %v neighbours %v; want none and removal of vx", d.VXLAN, d.RemoveVXLAN, d.FDB, d.Neighbors)
	}
	want := []Route{{Dst: netip.MustParsePrefix("10.244.1.0/24"), Unreachable: true, Node: "node1"}}
	if !reflect.DeepEqual(want, d.Routes) {
		t.Errorf("bgp routes %+v, want %+v", d.Routes, want)
	}
	if d.Peers[string(PathBGP)] != 2 {
		t.Errorf("peers %v, want node2 and node3 under bgp", d.Peers)
	}
	if got := PodMTU(p, 1500); got != 1500 {
		t.Errorf("bgp pod MTU %d, want the underlay's 1500", got)
	}
}

// Properties that must hold whatever the golden files say.
func TestComputeProperties(t *testing.T) {
	local, peers := goldenCluster()
	native := Compute(local, peers, Params{Mode: config.ModeNative, VXLAN: config.VXLAN{Device: "vx"}})
	if native.VXLAN != nil || native.RemoveVXLAN != "vx" {
		t.Errorf("native: VXLAN device %+v, RemoveVXLAN %q; want none and removal of vx", native.VXLAN, native.RemoveVXLAN)
	}
	for _, r := range native.Routes {
		if r.Node == "node3" {
			t.Errorf("native: route to cross-subnet node3 installed: %+v (would black-hole)", r)
		}
	}
	if !hasProblem(native, "node3", ReasonNotOnSameSubnet) {
		t.Errorf("native: no %s problem for node3: %+v", ReasonNotOnSameSubnet, native.Problems)
	}
	auto := Compute(local, peers, Params{Mode: config.ModeAuto, VXLAN: config.VXLAN{Device: "vx"}})
	paths := map[string]Path{}
	for _, r := range auto.Routes {
		paths[r.Node] = r.Path
	}
	if paths["node2"] != PathNative || paths["node3"] != PathVXLAN {
		t.Errorf("auto: paths %v, want node2 native and node3 vxlan", paths)
	}
	if len(auto.FDB) != 1 || auto.FDB[0].MAC != "0e:00:00:00:00:03" || auto.FDB[0].Dst != netip.MustParseAddr("10.0.2.13") {
		t.Errorf("auto: FDB %+v, want only node3's published MAC -> 10.0.2.13", auto.FDB)
	}
	vx := Compute(local, peers, Params{Mode: config.ModeVXLAN, VXLAN: config.VXLAN{Device: "vx"}})
	if len(vx.Routes) != 3 || len(vx.FDB) != 2 || len(vx.Neighbors) != 2 {
		t.Errorf("vxlan: %d routes, %d fdb, %d neighbours; want 3 (2 remote, 1 own unreachable), 2, 2", len(vx.Routes), len(vx.FDB), len(vx.Neighbors))
	}
	for _, m := range []*Desired{native, auto, vx} {
		own := 0
		for _, r := range m.Routes {
			if r.Unreachable {
				own++
				if r.Dst != local.PodCIDRs[0] || r.Node != "node1" || r.Dev != "" || r.Gw.IsValid() {
					t.Errorf("unreachable route %+v, want only the own pod CIDR %s", r, local.PodCIDRs[0])
				}
			}
		}
		if own != 1 {
			t.Errorf("%d unreachable routes for the own pod CIDR, want 1: %+v", own, m.Routes)
		}
		if !hasProblem(m, "node4", ReasonNoPodCIDR) || !hasProblem(m, "node5", ReasonNoNodeIP) {
			t.Errorf("problems %+v lack node4 (no pod CIDR) or node5 (no IP)", m.Problems)
		}
		for _, r := range m.Routes {
			if (r.Node == "node1" && !r.Unreachable) || !r.Dst.Addr().Is4() {
				t.Errorf("unexpected route %+v (self or non-IPv4)", r)
			}
		}
	}
}

func TestComputeIsOrderIndependent(t *testing.T) {
	local, peers := goldenCluster()
	p := Params{Mode: config.ModeAuto, VXLAN: config.VXLAN{Device: "vx"}}
	a := Compute(local, peers, p)
	rev := append([]Peer(nil), peers...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	if diff := cmp.Diff(a, Compute(local, rev, p), cmp.Comparer(func(x, y netip.Addr) bool { return x == y }),
		cmp.Comparer(func(x, y netip.Prefix) bool { return x == y })); diff != "" {
		t.Errorf("peer order changed the result:\n%s", diff)
	}
}

func TestPodMTU(t *testing.T) {
	cases := []struct {
		mode     config.RoutingMode
		override int
		underlay int
		want     int
	}{
		{config.ModeNative, 0, 1500, 1500},
		{config.ModeVXLAN, 0, 1500, 1450},
		{config.ModeAuto, 0, 9000, 8950},
		{config.ModeAuto, 1400, 1500, 1400},
	}
	for _, c := range cases {
		if got := PodMTU(Params{Mode: c.mode, MTU: c.override}, c.underlay); got != c.want {
			t.Errorf("PodMTU(%s, override %d, underlay %d) = %d, want %d", c.mode, c.override, c.underlay, got, c.want)
		}
	}
}

func TestVTEPMACStableLocalUnicast(t *testing.T) {
	a, b := VTEPMAC("node-a"), VTEPMAC("node-a")
	if a != b {
		t.Fatalf("VTEPMAC not deterministic: %s vs %s", a, b)
	}
	if a == VTEPMAC("node-b") {
		t.Errorf("two nodes share VTEP MAC %s", a)
	}
	var first byte
	if _, err := fmtSscanHex(a[:2], &first); err != nil {
		t.Fatal(err)
	}
	if first&0x01 != 0 || first&0x02 == 0 {
		t.Errorf("VTEP MAC %s is not locally administered unicast", a)
	}
}

func hasProblem(d *Desired, node, reason string) bool {
	for _, p := range d.Problems {
		if p.Node == node && p.Reason == reason {
			return true
		}
	}
	return false
}
