//go:build kernel

package netlinkprog

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/netnstest"
	"github.com/trellisnet/trellis/internal/routing"
)

type testNode struct {
	h  *netlink.Handle
	dp *Programmer
}

func newTestNode(t *testing.T) *testNode {
	n := netnstest.NewNode(t, "10.0.1.11/24")
	return &testNode{h: n.Handle, dp: &Programmer{Handle: n.Handle, NetnsPath: n.NS.Path()}}
}

var (
	local = routing.LocalNode{Name: "node1", NodeIP: netip.MustParseAddr("10.0.1.11"),
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}}
	peerSame  = routing.Peer{Name: "node2", NodeIP: netip.MustParseAddr("10.0.1.12"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}}
	peerOther = routing.Peer{Name: "node3", NodeIP: netip.MustParseAddr("10.0.2.13"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.3.0/24")}}
)

func (n *testNode) desired(t *testing.T, mode config.RoutingMode, peers ...routing.Peer) *routing.Desired {
	t.Helper()
	ul, err := n.dp.Underlay(local.NodeIP)
	if err != nil {
		t.Fatalf("Underlay: %v", err)
	}
	l := local
	l.Underlay = ul
	return routing.Compute(l, peers, routing.Params{Mode: mode, VXLAN: config.VXLAN{Device: "trellis.vxlan", VNI: 4242, Port: 8472}})
}

func (n *testNode) apply(t *testing.T, d *routing.Desired) {
	t.Helper()
	if err := n.dp.Apply(context.Background(), d); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

// routes returns dst -> "gw dev [onlink]" for trellis routes.
func (n *testNode) routes(t *testing.T) map[string]string {
	t.Helper()
	rs, err := n.dp.ListRoutes()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, r := range rs {
		if r.Type == unix.RTN_UNREACHABLE {
			out[r.Dst.String()] = "unreachable"
			continue
		}
		l, err := n.h.LinkByIndex(r.LinkIndex)
		if err != nil {
			t.Fatal(err)
		}
		v := r.Gw.String() + " " + l.Attrs().Name
		if r.Flags&int(netlink.FLAG_ONLINK) != 0 {
			v += " onlink"
		}
		out[r.Dst.String()] = v
	}
	return out
}

func (n *testNode) link(t *testing.T, name string) netlink.Link {
	t.Helper()
	l, err := n.h.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	return l
}

func (n *testNode) fdb(t *testing.T) map[string]string {
	t.Helper()
	es, err := n.dp.ListFDB(n.link(t, "trellis.vxlan"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range es {
		if e.IP != nil {
			out[e.HardwareAddr.String()] = e.IP.String()
		}
	}
	return out
}

func (n *testNode) neighbors(t *testing.T) map[string]string {
	t.Helper()
	es, err := n.dp.ListNeighbors(n.link(t, "trellis.vxlan"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range es {
		if e.State&netlink.NUD_PERMANENT != 0 {
			out[e.IP.String()] = e.HardwareAddr.String()
		}
	}
	return out
}

func eq(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s = %v, want %v", what, got, want)
		return
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", what, got, want)
			return
		}
	}
}

func TestKernelApplyAutoProgramsBothPaths(t *testing.T) {
	n := newTestNode(t)
	n.apply(t, n.desired(t, config.ModeAuto, peerSame, peerOther))

	eq(t, "routes", n.routes(t), map[string]string{
		"10.244.1.0/24": "unreachable",
		"10.244.2.0/24": "10.0.1.12 ul0",
		"10.244.3.0/24": "10.244.3.0 trellis.vxlan onlink",
	})
	mac3 := routing.VTEPMAC("node3")
	eq(t, "fdb", n.fdb(t), map[string]string{mac3: "10.0.2.13"})
	eq(t, "neighbours", n.neighbors(t), map[string]string{"10.244.3.0": mac3})

	vx, ok := n.link(t, "trellis.vxlan").(*netlink.Vxlan)
	if !ok {
		t.Fatalf("trellis.vxlan is not a vxlan device")
	}
	if vx.VxlanId != 4242 || vx.Port != 8472 || vx.Learning || vx.MTU != 1450 ||
		vx.HardwareAddr.String() != routing.VTEPMAC("node1") || !vx.SrcAddr.Equal(net.ParseIP("10.0.1.11")) {
		t.Errorf("device: vni %d port %d learning %v mtu %d mac %s local %s; want 4242 8472 false 1450 %s 10.0.1.11",
			vx.VxlanId, vx.Port, vx.Learning, vx.MTU, vx.HardwareAddr, vx.SrcAddr, routing.VTEPMAC("node1"))
	}
	if vx.Flags&net.FlagUp == 0 {
		t.Errorf("device is down")
	}
	addrs, err := n.h.AddrList(vx, netlink.FAMILY_V4)
	if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != "10.244.1.0/32" {
		t.Errorf("device addresses %v (%v), want only 10.244.1.0/32", addrs, err)
	}
}

func TestKernelApplyIsIdempotentAndAdoptsAfterRestart(t *testing.T) {
	n := newTestNode(t)
	d := n.desired(t, config.ModeVXLAN, peerSame, peerOther)
	n.apply(t, d)
	idx := n.link(t, "trellis.vxlan").Attrs().Index
	before := n.routes(t)
	// A new dataplane object stands for a restarted agent.
	restarted := &Programmer{Handle: n.h, NetnsPath: n.dp.NetnsPath}
	for i := 0; i < 2; i++ {
		if err := restarted.Apply(context.Background(), d); err != nil {
			t.Fatalf("re-Apply %d: %v", i, err)
		}
	}
	if got := n.link(t, "trellis.vxlan").Attrs().Index; got != idx {
		t.Errorf("VXLAN device recreated (ifindex %d -> %d); want adopted", idx, got)
	}
	eq(t, "routes after re-apply", n.routes(t), before)
	if len(n.fdb(t)) != 2 || len(n.neighbors(t)) != 2 {
		t.Errorf("fdb %v neighbours %v after re-apply, want 2 each", n.fdb(t), n.neighbors(t))
	}
}

func TestKernelApplyRemovesLeftoversOnlyOwnProtocol(t *testing.T) {
	n := newTestNode(t)
	n.apply(t, n.desired(t, config.ModeAuto, peerSame, peerOther))
	ul := n.link(t, "ul0")
	vx := n.link(t, "trellis.vxlan")
	// Leftovers from a previous run: a trellis route to a gone node, a
	// stale FDB and neighbour entry; plus a route someone else owns.
	add := func(dst, gw string, proto netlink.RouteProtocol) {
		_, ipn, _ := net.ParseCIDR(dst)
		if err := n.h.RouteAdd(&netlink.Route{Dst: ipn, Gw: net.ParseIP(gw), LinkIndex: ul.Attrs().Index, Protocol: proto}); err != nil {
			t.Fatalf("add route %s: %v", dst, err)
		}
	}
	add("10.244.9.0/24", "10.0.1.19", RouteProtocol)
	add("10.99.0.0/16", "10.0.1.1", unix.RTPROT_STATIC)
	staleMAC, _ := net.ParseMAC("0a:00:00:00:00:09")
	if err := n.h.NeighSet(&netlink.Neigh{LinkIndex: vx.Attrs().Index, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
		Flags: netlink.NTF_SELF, IP: net.ParseIP("10.0.2.19"), HardwareAddr: staleMAC}); err != nil {
		t.Fatal(err)
	}
	if err := n.h.NeighSet(&netlink.Neigh{LinkIndex: vx.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
		IP: net.ParseIP("10.244.9.0"), HardwareAddr: staleMAC}); err != nil {
		t.Fatal(err)
	}

	n.apply(t, n.desired(t, config.ModeAuto, peerSame, peerOther))

	eq(t, "routes", n.routes(t), map[string]string{
		"10.244.1.0/24": "unreachable",
		"10.244.2.0/24": "10.0.1.12 ul0",
		"10.244.3.0/24": "10.244.3.0 trellis.vxlan onlink",
	})
	eq(t, "fdb", n.fdb(t), map[string]string{routing.VTEPMAC("node3"): "10.0.2.13"})
	eq(t, "neighbours", n.neighbors(t), map[string]string{"10.244.3.0": routing.VTEPMAC("node3")})
	_, foreign, _ := net.ParseCIDR("10.99.0.0/16")
	rs, err := n.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: foreign}, netlink.RT_FILTER_DST)
	if err != nil || len(rs) != 1 {
		t.Errorf("route owned by someone else was touched: %v %v", rs, err)
	}
}

func TestKernelApplyGarbageCollectsRemovedNode(t *testing.T) {
	n := newTestNode(t)
	n.apply(t, n.desired(t, config.ModeAuto, peerSame, peerOther))
	n.apply(t, n.desired(t, config.ModeAuto, peerSame))
	eq(t, "routes", n.routes(t), map[string]string{"10.244.1.0/24": "unreachable", "10.244.2.0/24": "10.0.1.12 ul0"})
	eq(t, "fdb", n.fdb(t), map[string]string{})
	eq(t, "neighbours", n.neighbors(t), map[string]string{})
}

func TestKernelModeChangeKeepsUnchangedRoutes(t *testing.T) {
	n := newTestNode(t)
	n.apply(t, n.desired(t, config.ModeAuto, peerSame, peerOther))
	// Native: the cross-subnet peer loses its route (reported as a
	// problem), the same-subnet route is untouched, the device goes.
	n.apply(t, n.desired(t, config.ModeNative, peerSame, peerOther))
	eq(t, "routes", n.routes(t), map[string]string{"10.244.1.0/24": "unreachable", "10.244.2.0/24": "10.0.1.12 ul0"})
	if _, err := n.h.LinkByName("trellis.vxlan"); err == nil {
		t.Errorf("VXLAN device still present in native mode")
	}
	// And back to vxlan: everything through the overlay.
	n.apply(t, n.desired(t, config.ModeVXLAN, peerSame, peerOther))
	eq(t, "routes", n.routes(t), map[string]string{
		"10.244.1.0/24": "unreachable",
		"10.244.2.0/24": "10.244.2.0 trellis.vxlan onlink",
		"10.244.3.0/24": "10.244.3.0 trellis.vxlan onlink",
	})
}

func TestKernelIncompatibleDeviceIsRecreated(t *testing.T) {
	n := newTestNode(t)
	n.apply(t, n.desired(t, config.ModeVXLAN, peerOther))
	d := n.desired(t, config.ModeVXLAN, peerOther)
	d.VXLAN.VNI = 777
	n.apply(t, d)
	vx, ok := n.link(t, "trellis.vxlan").(*netlink.Vxlan)
	if !ok || vx.VxlanId != 777 {
		t.Fatalf("device not recreated with VNI 777: %+v", n.link(t, "trellis.vxlan"))
	}
	eq(t, "routes", n.routes(t), map[string]string{"10.244.1.0/24": "unreachable", "10.244.3.0/24": "10.244.3.0 trellis.vxlan onlink"})
	eq(t, "fdb", n.fdb(t), map[string]string{routing.VTEPMAC("node3"): "10.0.2.13"})
}

func TestKernelChecksumOffloadWorkaround(t *testing.T) {
	node := netnstest.NewNode(t, "10.0.1.11/24")
	n := &testNode{h: node.Handle, dp: &Programmer{Handle: node.Handle, NetnsPath: node.NS.Path()}}
	d := n.desired(t, config.ModeVXLAN, peerOther)
	d.VXLAN.DisableTxChecksumOffload = true
	for i := 0; i < 2; i++ { // idempotent
		n.apply(t, d)
	}
	out, err := node.Exec("ethtool", "-k", "trellis.vxlan")
	if err != nil {
		t.Fatalf("ethtool -k: %v %s", err, out)
	}
	if !strings.Contains(out, "tx-checksumming: off") {
		t.Errorf("tx checksumming not off:\n%s", out)
	}
	if out, err := node.Exec("cat", "/proc/sys/net/ipv4/conf/trellis.vxlan/rp_filter"); err != nil || strings.TrimSpace(out) != "2" {
		t.Errorf("rp_filter on the VXLAN device = %q (%v), want 2 (loose)", out, err)
	}
}
