//go:build kernel

package fastpath

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/cnirunner"
	"github.com/trellisnet/trellis/internal/nodesetup"
)

// The IPv6 side of the test topology: node i has fd00:9::i/64 on the
// uplink, its pod fd00:91:i::2/128 behind a link-local gateway (fe80::1
// with a permanent neighbour, as trellis-cni wires pods), the node a /128
// host route to it and a route to the peer's pod /64 via the peer; both
// nodes forward IPv6 and run the agent's IPv6 masquerade table (conntrack).
var (
	v6NodeIPs = []netip.Addr{netip.MustParseAddr("fd00:9::1"), netip.MustParseAddr("fd00:9::2")}
	v6PodIPs  = []netip.Addr{netip.MustParseAddr("fd00:91:1::2"), netip.MustParseAddr("fd00:91:2::2")}
)

// topology6 is topology with both families: every pod also has an IPv6
// address, and the fast path is synced again to learn it. It returns the
// pods' IPv6 addresses with the nodes.
func topology6(t *testing.T) (a, b *testNode, a6, b6 netip.Addr) {
	t.Helper()
	a, b = topology(t)
	for i, n := range []*testNode{a, b} {
		peer := 1 - i
		if err := cnirunner.Sysctl(n.ns, "net/ipv6/conf/all/forwarding", "1"); err != nil {
			t.Fatal(err)
		}
		run(t, "ip", "-n", n.nsName, "-6", "addr", "add", v6NodeIPs[i].String()+"/64", "dev", "ul0", "nodad")
		run(t, "ip", "-n", n.nsName, "-6", "route", "add", netip.PrefixFrom(v6PodIPs[peer], 64).Masked().String(),
			"via", v6NodeIPs[peer].String(), "dev", "ul0")
		n.ip6 = v6NodeIPs[i]
		n.addPod6(t, v6PodIPs[i])
		n.masquerade(t, knftables.IPv6Family, netip.PrefixFrom(v6PodIPs[i], 64).Masked(), netip.MustParsePrefix("fd00:91::/32"))
		if err := n.ctl.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	return a, b, v6PodIPs[0], v6PodIPs[1]
}

// addPod6 gives n's pod the IPv6 address ip as trellis-cni does.
func (n *testNode) addPod6(t *testing.T, ip netip.Addr) {
	t.Helper()
	n.podIP6 = ip
	l, err := n.h.LinkByName(n.podIface)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{
		{"-6", "addr", "add", ip.String() + "/128", "dev", "eth0", "nodad"},
		{"-6", "neigh", "add", "fe80::1", "lladdr", l.Attrs().HardwareAddr.String(), "dev", "eth0", "nud", "permanent"},
		{"-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0"},
	} {
		run(t, append([]string{"ip", "-n", n.podNS}, c...)...)
	}
	run(t, "ip", "-n", n.nsName, "-6", "route", "add", ip.String()+"/128", "dev", n.podIface)
}

func hostPort(a netip.Addr, port int) string { return net.JoinHostPort(a.String(), fmt.Sprint(port)) }

// An IPv6 flow from a pod to an address outside the cluster is masqueraded
// by the agent's ip6 trellis-masq table and never takes the fast path on the
// node that masquerades it (here: to node b's own address).
func TestKernelFastPathIPv6LeavesMasqueradedFlowsToConntrack(t *testing.T) {
	a, b, _, _ := topology6(t)
	serveIn(t, b.ns, hostPort(v6NodeIPs[1], 8081))
	a0 := a.stats6(t)
	a.send(t, hostPort(v6NodeIPs[1], 8081), 4<<20)
	a1 := a.stats6(t)
	t.Logf("node a, IPv6: %v", a1)
	if delta(a1, a0, StatPassNAT) == 0 {
		t.Error("node a: the masqueraded IPv6 flow was never seen as NATed")
	}
	if n := delta(a1, a0, StatFromPodRedirect) + delta(a1, a0, StatToPodRedirect); n != 0 {
		t.Errorf("node a: %d packets of a masqueraded IPv6 flow took the fast path", n)
	}
}

// vxlanOverIPv6 replaces the native routes between the nodes of topology6
// by a VXLAN device over the IPv6 underlay ("trellis.vxlan6", point to
// point to the peer's IPv6 address) carrying both inner families: each
// peer's pod prefixes via a gateway with a permanent neighbour holding the
// peer device's MAC (IPv4: 10.99.0.<i> onlink; IPv6: the peer device's
// EUI-64 link-local address). The uplink's MTU is raised so that the
// device keeps the pods' 1500. Both nodes' fast path then counts the device
// as an uplink.
func vxlanOverIPv6(t *testing.T, nodes ...*testNode) {
	t.Helper()
	const dev = "trellis.vxlan6"
	for i, n := range nodes {
		peer := 1 - i
		run(t, "ip", "-n", n.nsName, "link", "set", "ul0", "mtu", "9000")
		run(t, "ip", "-n", n.nsName, "link", "add", dev, "type", "vxlan", "id", "77", "dstport", "4789",
			"local", v6NodeIPs[i].String(), "remote", v6NodeIPs[peer].String(), "dev", "ul0")
		run(t, "ip", "-n", n.nsName, "link", "set", dev, "mtu", "1500", "up")
	}
	for i, n := range nodes {
		peer := nodes[1-i]
		l, err := peer.h.LinkByName(dev)
		if err != nil {
			t.Fatal(err)
		}
		mac := l.Attrs().HardwareAddr
		ll := netip.AddrFrom16([16]byte{0: 0xfe, 1: 0x80, 8: mac[0] ^ 2, 9: mac[1], 10: mac[2], 11: 0xff, 12: 0xfe,
			13: mac[3], 14: mac[4], 15: mac[5]})
		gw4 := fmt.Sprintf("10.99.0.%d", 2-i)
		p4, p6 := netip.PrefixFrom(peer.podIP, 24).Masked().String(), netip.PrefixFrom(v6PodIPs[1-i], 64).Masked().String()
		for _, c := range [][]string{
			{"route", "del", p4},
			{"-6", "route", "del", p6},
			{"neigh", "replace", gw4, "lladdr", mac.String(), "dev", dev, "nud", "permanent"},
			{"route", "add", p4, "via", gw4, "dev", dev, "onlink"},
			{"-6", "neigh", "replace", ll.String(), "lladdr", mac.String(), "dev", dev, "nud", "permanent"},
			{"-6", "route", "add", p6, "via", ll.String(), "dev", dev},
		} {
			run(t, append([]string{"ip", "-n", n.nsName}, c...)...)
		}
		var err2 error
		n.ctl, err2 = New(Config{Kernel: &Kernel{Handle: n.h}, Programs: n.progs, Sysctls: nodesetup.NetnsSysctls{NS: n.ns},
			Uplinks: func() []string { return []string{"ul0", dev} }})
		if err2 != nil {
			t.Fatal(err2)
		}
		if err := n.ctl.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// linkTxBytes is the bytes interface name of n has sent.
func (n *testNode) linkTxBytes(t *testing.T, name string) uint64 {
	t.Helper()
	l, err := n.h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Statistics.TxBytes
}

// Over a VXLAN device with an IPv6 underlay, established IPv4 and IPv6 pod
// flows are fast-pathed both ways (the device is an uplink: bpf_redirect
// into it encapsulates as the full path would), data intact, and the
// traffic crosses the device.
func TestKernelFastPathVXLANOverIPv6Underlay(t *testing.T) {
	a, b, _, b6 := topology6(t)
	vxlanOverIPv6(t, a, b)
	b.serve(t, 8080)
	for _, c := range []struct {
		family, dst string
		read        func(*testNode, *testing.T) map[Stat]uint64
	}{
		{"IPv4", b.podIP.String() + ":8080", (*testNode).stats},
		{"IPv6", hostPort(b6, 8080), (*testNode).stats6},
	} {
		a0, b0, tx0 := c.read(a, t), c.read(b, t), a.linkTxBytes(t, "trellis.vxlan6")
		a.send(t, c.dst, 16<<20)
		a1, b1, tx1 := c.read(a, t), c.read(b, t), a.linkTxBytes(t, "trellis.vxlan6")
		t.Logf("%s: node a %v, node b %v, %d bytes out of a's VXLAN device", c.family, a1, b1, tx1-tx0)
		if tx1-tx0 < 16<<20 {
			t.Errorf("%s: the flow did not cross the VXLAN device (%d bytes sent)", c.family, tx1-tx0)
		}
		if delta(a1, a0, StatFromPodRedirect) == 0 || delta(b1, b0, StatToPodRedirect) == 0 ||
			delta(b1, b0, StatFromPodRedirect) == 0 || delta(a1, a0, StatToPodRedirect) == 0 {
			t.Errorf("%s over the IPv6-underlay VXLAN: a direction was not fast-pathed", c.family)
		}
	}
}
