//go:build kernel

package netlinkprog

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/netnstest"
	"github.com/trellisnet/trellis/internal/routing"
)

// IPv6 and dual-stack routes, VXLAN over both underlays, in real kernels.

var vxlanParams = config.VXLAN{Device: "trellis.vxlan", Device6: "trellis.vxlan6", VNI: 4242, Port: 8472}

// addNoDAD adds addr to link in n without duplicate address detection
// (usable at once) and sets the link up.
func addNoDAD(t *testing.T, h *netlink.Handle, link, addr string) {
	t.Helper()
	l, err := h.LinkByName(link)
	if err != nil {
		t.Fatal(err)
	}
	a, err := netlink.ParseAddr(addr)
	if err != nil {
		t.Fatal(err)
	}
	if a.IP.To4() == nil {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := h.AddrAdd(l, a); err != nil {
		t.Fatalf("address %s on %s: %v", addr, link, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
}

// localFor builds this namespace's LocalNode from a Peer description,
// finding the underlays through the Programmer.
func localFor(t *testing.T, dp *Programmer, self routing.Peer) routing.LocalNode {
	t.Helper()
	l := routing.LocalNode{Name: self.Name, NodeIP: self.NodeIP, NodeIP6: self.NodeIP6, PodCIDRs: self.PodCIDRs}
	var err error
	if l.NodeIP.IsValid() {
		if l.Underlay, err = dp.Underlay(l.NodeIP); err != nil {
			t.Fatalf("IPv4 underlay: %v", err)
		}
	}
	if l.NodeIP6.IsValid() {
		if l.Underlay6, err = dp.Underlay(l.NodeIP6); err != nil {
			t.Fatalf("IPv6 underlay: %v", err)
		}
	}
	return l
}

// routes6 returns dst -> "gw dev [onlink]" for trellis IPv6 routes.
func (n *testNode) routes6(t *testing.T) map[string]string {
	t.Helper()
	rs, err := n.dp.ListRoutes6()
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

func (n *testNode) fdbOf(t *testing.T, dev string) map[string]string {
	t.Helper()
	es, err := n.dp.ListFDB(n.link(t, dev))
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

func (n *testNode) neighbors6(t *testing.T, dev string) map[string]string {
	t.Helper()
	es, err := n.dp.ListNeighbors6(n.link(t, dev))
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

// globalAddrs are link's addresses that are not IPv6 link-local.
func (n *testNode) globalAddrs(t *testing.T, dev string) map[string]string {
	t.Helper()
	as, err := n.h.AddrList(n.link(t, dev), netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, a := range as {
		if !a.IP.IsLinkLocalUnicast() {
			out[a.IPNet.String()] = fmt.Sprintf("nodad=%v", a.Flags&unix.IFA_F_NODAD != 0)
		}
	}
	return out
}

var (
	dualLocal = routing.Peer{Name: "node1", NodeIP: netip.MustParseAddr("10.0.1.11"), NodeIP6: netip.MustParseAddr("fd74:7265:6c00:1::11"),
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd00:10:244:1::/64")}}
	dualSame = routing.Peer{Name: "node2", NodeIP: netip.MustParseAddr("10.0.1.12"), NodeIP6: netip.MustParseAddr("fd74:7265:6c00:1::12"),
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24"), netip.MustParsePrefix("fd00:10:244:2::/64")}}
	dualOther = routing.Peer{Name: "node3", NodeIP: netip.MustParseAddr("10.0.2.13"), NodeIP6: netip.MustParseAddr("fd74:7265:6c00:2::13"),
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.3.0/24"), netip.MustParsePrefix("fd00:10:244:3::/64")}}
	v6OnlyOther = routing.Peer{Name: "node6", NodeIP6: netip.MustParseAddr("fd74:7265:6c00:2::16"),
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("fd00:10:244:6::/64")}}
)

// A dual-stack node in auto mode: native routes in both families to the
// same-subnet peer, VXLAN over IPv4 carrying both inner families to the
// cross-subnet dual peer, VXLAN over IPv6 to the IPv6-only peer. A second
// Apply writes nothing; dropping the IPv6-only peer removes the IPv6
// device; losing the IPv6 pod CIDR removes every IPv6 route.
func TestKernelApplyDualStackAuto(t *testing.T) {
	nn := netnstest.NewNode(t, "10.0.1.11/24")
	addNoDAD(t, nn.Handle, "ul0", "fd74:7265:6c00:1::11/64")
	n := &testNode{h: nn.Handle, dp: &Programmer{Handle: nn.Handle, NetnsPath: nn.NS.Path()}}
	local := localFor(t, n.dp, dualLocal)
	p := routing.Params{Mode: config.ModeAuto, VXLAN: vxlanParams}
	d := routing.Compute(local, []routing.Peer{dualSame, dualOther, v6OnlyOther}, p)
	n.apply(t, d)

	mac3, mac6 := routing.VTEPMAC("node3"), routing.VTEPMAC("node6")
	eq(t, "IPv4 routes", n.routes(t), map[string]string{
		"10.244.1.0/24": "unreachable",
		"10.244.2.0/24": "10.0.1.12 ul0",
		"10.244.3.0/24": "10.244.3.0 trellis.vxlan onlink",
	})
	eq(t, "IPv6 routes", n.routes6(t), map[string]string{
		"fd00:10:244:1::/64": "unreachable",
		"fd00:10:244:2::/64": "fd74:7265:6c00:1::12 ul0",
		"fd00:10:244:3::/64": "fd00:10:244:3:: trellis.vxlan onlink",
		"fd00:10:244:6::/64": "fd00:10:244:6:: trellis.vxlan6 onlink",
	})
	eq(t, "FDB over IPv4", n.fdbOf(t, "trellis.vxlan"), map[string]string{mac3: "10.0.2.13"})
	eq(t, "FDB over IPv6", n.fdbOf(t, "trellis.vxlan6"), map[string]string{mac6: "fd74:7265:6c00:2::16"})
	eq(t, "IPv4 neighbours", n.neighbors(t), map[string]string{"10.244.3.0": mac3})
	eq(t, "IPv6 neighbours on trellis.vxlan", n.neighbors6(t, "trellis.vxlan"), map[string]string{"fd00:10:244:3::": mac3})
	eq(t, "IPv6 neighbours on trellis.vxlan6", n.neighbors6(t, "trellis.vxlan6"), map[string]string{"fd00:10:244:6::": mac6})
	eq(t, "VTEP addresses", n.globalAddrs(t, "trellis.vxlan"), map[string]string{
		"10.244.1.0/32": "nodad=false", "fd00:10:244:1::/128": "nodad=true"})
	eq(t, "addresses of trellis.vxlan6", n.globalAddrs(t, "trellis.vxlan6"), map[string]string{})
	vx6, ok := n.link(t, "trellis.vxlan6").(*netlink.Vxlan)
	if !ok || !vx6.SrcAddr.Equal(net.ParseIP("fd74:7265:6c00:1::11")) || vx6.VxlanId != 4242 || vx6.Port != 8472 || vx6.MTU != 1430 {
		t.Errorf("trellis.vxlan6 %+v: want local fd74:7265:6c00:1::11, the same VNI and port as trellis.vxlan, MTU 1430", vx6)
	}

	before := n.dp.Ops()
	n.apply(t, d)
	if ops := n.dp.Ops().Sub(before); ops.Writes != 0 || ops.Deletes != 0 {
		t.Errorf("second Apply of the same state: %+v; want no writes or deletes", ops)
	}

	d2 := routing.Compute(local, []routing.Peer{dualSame, dualOther}, p)
	if err := n.dp.ApplyChanges(context.Background(), d2); err != nil {
		t.Fatalf("ApplyChanges: %v", err)
	}
	if _, err := n.h.LinkByName("trellis.vxlan6"); err == nil {
		t.Error("trellis.vxlan6 still there without an IPv6-only peer")
	}
	if _, ok := n.routes6(t)["fd00:10:244:6::/64"]; ok {
		t.Error("route to the departed IPv6-only peer's pods still there")
	}

	v4 := local
	v4.PodCIDRs, v4.NodeIP6, v4.Underlay6 = local.PodCIDRs[:1], netip.Addr{}, routing.Underlay{}
	n.apply(t, routing.Compute(v4, []routing.Peer{dualSame, dualOther}, p))
	eq(t, "IPv6 routes after the IPv6 pod CIDR went", n.routes6(t), map[string]string{})
	eq(t, "IPv4 routes", n.routes(t), map[string]string{
		"10.244.1.0/24": "unreachable",
		"10.244.2.0/24": "10.0.1.12 ul0",
		"10.244.3.0/24": "10.244.3.0 trellis.vxlan onlink",
	})
	eq(t, "VTEP addresses of an IPv4 node", n.globalAddrs(t, "trellis.vxlan"), map[string]string{"10.244.1.0/32": "nodad=false"})
	eq(t, "IPv6 neighbours of an IPv4 node", n.neighbors6(t, "trellis.vxlan"), map[string]string{})
}

// pairOfNodes wires two node namespaces on one L2 segment through the
// agent's dataplane: a and b describe them (node IPs, pod CIDRs); each
// namespace gets its node IPs on ul0 and the pod address ::5 / .5 of its
// pod CIDRs on lo. It returns the namespaces and the pod MTU.
func pairOfNodes(t *testing.T, mode config.RoutingMode, a, b routing.Peer) (na, nb *netnstest.Node, podMTU int) {
	t.Helper()
	ipPfx := func(ip netip.Addr) string {
		if ip.Is4() {
			return ip.String() + "/24"
		}
		return ip.String() + "/64"
	}
	// NewLinkedNodes adds an IPv4 address with the link (unused here);
	// the node IPs are added below, IPv6 ones without DAD.
	na, nb = netnstest.NewLinkedNodes(t, "192.0.2.1/32", "192.0.2.2/32")
	nodes := []routing.Peer{a, b}
	params := routing.Params{Mode: mode, VXLAN: vxlanParams}
	for i, n := range []*netnstest.Node{na, nb} {
		self := nodes[i]
		for _, ip := range []netip.Addr{self.NodeIP, self.NodeIP6} {
			if ip.IsValid() {
				addNoDAD(t, n.Handle, "ul0", ipPfx(ip))
			}
		}
		for _, c := range self.PodCIDRs {
			addNoDAD(t, n.Handle, "lo", netip.PrefixFrom(podAddr(c), c.Addr().BitLen()).String())
		}
	}
	for _, n := range []*netnstest.Node{na, nb} {
		waitNotTentative(t, n.Handle, "ul0")
	}
	for i, n := range []*netnstest.Node{na, nb} {
		dp := &Programmer{Handle: n.Handle, NetnsPath: n.NS.Path()}
		local := localFor(t, dp, nodes[i])
		if err := dp.Apply(context.Background(), routing.Compute(local, nodes, params)); err != nil {
			t.Fatalf("Apply on %s: %v", nodes[i].Name, err)
		}
		ul := local.Underlay
		if !local.NodeIP.IsValid() {
			ul = local.Underlay6
		}
		podMTU = routing.PodMTUFor(params, ul)
	}
	return na, nb, podMTU
}

// waitNotTentative waits until link's link-local address has passed
// duplicate address detection: until then the kernel cannot use it as the
// source of neighbour solicitations for traffic from a pod address (held
// by another interface), and the first native packets would be lost (a
// node's uplink has been up for long; a test's, for milliseconds).
func waitNotTentative(t *testing.T, h *netlink.Handle, link string) {
	t.Helper()
	l, err := h.LinkByName(link)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		as, err := h.AddrList(l, netlink.FAMILY_V6)
		if err != nil {
			t.Fatal(err)
		}
		ready := false
		for _, a := range as {
			if a.IP.IsLinkLocalUnicast() && a.Flags&unix.IFA_F_TENTATIVE == 0 {
				ready = true
			}
		}
		if ready {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: link-local address still tentative after 5s: %+v", link, as)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// podAddr is the test pod's address in c: the network address + 5.
func podAddr(c netip.Prefix) netip.Addr {
	a := c.Addr()
	for range 5 {
		a = a.Next()
	}
	return a
}

// testIPv6Datagrams sends the largest IPv6 datagram a pod with the pod MTU
// may send with DF (IPv6 40 + UDP 8) between the two pods, both ways,
// without fragments, and checks one byte more is refused at the sender.
func testIPv6Datagrams(t *testing.T, mode config.RoutingMode, a, b routing.Peer, wantMTU int, wantDev string) {
	na, nb, podMTU := pairOfNodes(t, mode, a, b)
	if podMTU != wantMTU {
		t.Fatalf("pod MTU %d, want %d", podMTU, wantMTU)
	}
	v6CIDR := func(p routing.Peer) netip.Prefix {
		for _, c := range p.PodCIDRs {
			if c.Addr().Is6() {
				return c
			}
		}
		t.Fatalf("%s has no IPv6 pod CIDR", p.Name)
		return netip.Prefix{}
	}
	ca := netnstest.DFUDP(t, na.NS.Path(), netip.AddrPortFrom(podAddr(v6CIDR(a)), 7001).String())
	cb := netnstest.DFUDP(t, nb.NS.Path(), netip.AddrPortFrom(podAddr(v6CIDR(b)), 7002).String())
	if err := roundTrip(ca, cb, 100); err != nil {
		t.Fatalf("%s: small IPv6 datagram failed: %v", mode, err)
	}
	if err := roundTrip(ca, cb, podMTU-48); err != nil {
		t.Fatalf("%s: full-size DF IPv6 datagram pod->pod failed: %v", mode, err)
	}
	if wantDev != "" {
		l, err := na.Handle.LinkByName(wantDev)
		if err != nil || l.Attrs().Statistics == nil || l.Attrs().Statistics.TxPackets < 2 || l.Attrs().Statistics.RxPackets < 2 {
			t.Errorf("traffic did not go through %s: %v %+v", wantDev, err, l)
		}
	}
	_, err := ca.WriteToUDP(make([]byte, podMTU-47), cb.LocalAddr().(*net.UDPAddr))
	if !errors.Is(err, syscall.EMSGSIZE) {
		t.Errorf("%s: oversize DF IPv6 datagram: err %v, want EMSGSIZE", mode, err)
	}
}

var (
	v6a = routing.Peer{Name: "a", NodeIP6: netip.MustParseAddr("fd74:7265:6c00:1::11"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("fd00:10:244:1::/64")}}
	v6b = routing.Peer{Name: "b", NodeIP6: netip.MustParseAddr("fd74:7265:6c00:1::12"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("fd00:10:244:2::/64")}}
	dua = routing.Peer{Name: "a", NodeIP: netip.MustParseAddr("10.0.1.11"), NodeIP6: netip.MustParseAddr("fd74:7265:6c00:1::11"),
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd00:10:244:1::/64")}}
	dub = routing.Peer{Name: "b", NodeIP: netip.MustParseAddr("10.0.1.12"), NodeIP6: netip.MustParseAddr("fd74:7265:6c00:1::12"),
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24"), netip.MustParsePrefix("fd00:10:244:2::/64")}}
)

// IPv6-only nodes, native: IPv6 pod traffic via the peer's IPv6 node IP.
func TestKernelPacketsIPv6NativeFullSizeDF(t *testing.T) {
	testIPv6Datagrams(t, config.ModeNative, v6a, v6b, 1500, "")
}

// IPv6-only nodes, VXLAN over the IPv6 underlay: 70 bytes of overhead.
func TestKernelPacketsIPv6OverIPv6VXLANFullSizeDF(t *testing.T) {
	testIPv6Datagrams(t, config.ModeVXLAN, v6a, v6b, 1430, "trellis.vxlan6")
}

// Dual-stack nodes, VXLAN over the IPv4 underlay carrying IPv6 pod
// traffic: 50 bytes of overhead.
func TestKernelPacketsIPv6OverIPv4VXLANFullSizeDF(t *testing.T) {
	testIPv6Datagrams(t, config.ModeVXLAN, dua, dub, 1450, "trellis.vxlan")
}

// Dual-stack nodes, native: IPv6 pod traffic via the peer's IPv6 node IP.
func TestKernelPacketsDualNativeIPv6FullSizeDF(t *testing.T) {
	testIPv6Datagrams(t, config.ModeNative, dua, dub, 1500, "")
}

// On a dual-stack node, ApplyChanges for a dual-stack VXLAN peer that
// joins writes exactly its entries (one FDB entry, a neighbour and a route
// per family) and lists nothing; its departure deletes them the same way.
func TestKernelApplyChangesDualStackPeer(t *testing.T) {
	nn := netnstest.NewNode(t, "10.0.1.11/24")
	addNoDAD(t, nn.Handle, "ul0", "fd74:7265:6c00:1::11/64")
	n := &testNode{h: nn.Handle, dp: &Programmer{Handle: nn.Handle, NetnsPath: nn.NS.Path()}}
	local := localFor(t, n.dp, dualLocal)
	p := routing.Params{Mode: config.ModeAuto, VXLAN: vxlanParams}
	n.apply(t, routing.Compute(local, []routing.Peer{dualSame}, p))

	if ops := n.applyChanges(t, routing.Compute(local, []routing.Peer{dualSame, dualOther}, p)); ops != (Ops{Writes: 5}) {
		t.Errorf("dual-stack VXLAN peer added: %+v operations, want exactly 5 writes", ops)
	}
	mac3 := routing.VTEPMAC("node3")
	eq(t, "IPv6 routes", n.routes6(t), map[string]string{
		"fd00:10:244:1::/64": "unreachable",
		"fd00:10:244:2::/64": "fd74:7265:6c00:1::12 ul0",
		"fd00:10:244:3::/64": "fd00:10:244:3:: trellis.vxlan onlink",
	})
	eq(t, "IPv6 neighbours", n.neighbors6(t, "trellis.vxlan"), map[string]string{"fd00:10:244:3::": mac3})
	if ops := n.applyChanges(t, routing.Compute(local, []routing.Peer{dualSame}, p)); ops != (Ops{Deletes: 5}) {
		t.Errorf("dual-stack VXLAN peer removed: %+v operations, want exactly 5 deletes", ops)
	}
	eq(t, "IPv6 neighbours after removal", n.neighbors6(t, "trellis.vxlan"), map[string]string{})
	eq(t, "IPv6 routes after removal", n.routes6(t), map[string]string{
		"fd00:10:244:1::/64": "unreachable",
		"fd00:10:244:2::/64": "fd74:7265:6c00:1::12 ul0",
	})
}

// Switching a dual-stack node from native to VXLAN replaces each native
// IPv6 route by an on-link one through the VXLAN device (the kernel
// refuses to replace it in place: its gateway check finds the route being
// replaced), and back.
func TestKernelApplyDualStackNativeToVXLANAndBack(t *testing.T) {
	nn := netnstest.NewNode(t, "10.0.1.11/24")
	addNoDAD(t, nn.Handle, "ul0", "fd74:7265:6c00:1::11/64")
	n := &testNode{h: nn.Handle, dp: &Programmer{Handle: nn.Handle, NetnsPath: nn.NS.Path()}}
	local := localFor(t, n.dp, dualLocal)
	native := map[string]string{
		"fd00:10:244:1::/64": "unreachable",
		"fd00:10:244:2::/64": "fd74:7265:6c00:1::12 ul0",
	}
	n.apply(t, routing.Compute(local, []routing.Peer{dualSame}, routing.Params{Mode: config.ModeNative, VXLAN: vxlanParams}))
	eq(t, "native IPv6 routes", n.routes6(t), native)
	n.apply(t, routing.Compute(local, []routing.Peer{dualSame}, routing.Params{Mode: config.ModeVXLAN, VXLAN: vxlanParams}))
	eq(t, "VXLAN IPv6 routes", n.routes6(t), map[string]string{
		"fd00:10:244:1::/64": "unreachable",
		"fd00:10:244:2::/64": "fd00:10:244:2:: trellis.vxlan onlink",
	})
	n.apply(t, routing.Compute(local, []routing.Peer{dualSame}, routing.Params{Mode: config.ModeNative, VXLAN: vxlanParams}))
	eq(t, "native IPv6 routes again", n.routes6(t), native)
}
