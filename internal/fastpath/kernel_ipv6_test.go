//go:build kernel

package fastpath

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/cnirunner"
	"github.com/trellisnet/trellis/internal/masq"
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
		n.addPod6(t, v6PodIPs[i])
		err := n.ns.Do(func(ns.NetNS) error {
			nft, err := masq.NewNFTFamily(knftables.IPv6Family)
			if err != nil {
				return err
			}
			pods := []netip.Prefix{netip.MustParsePrefix("fd00:91::/32")}
			return masq.Apply(context.Background(), nft, masq.ComputeFamily(knftables.IPv6Family,
				[]netip.Prefix{netip.PrefixFrom(v6PodIPs[i], 64).Masked()}, pods, pods, nil))
		})
		if err != nil {
			t.Fatalf("IPv6 masquerade table on %s: %v", n.name, err)
		}
		if err := n.ctl.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	return a, b, v6PodIPs[0], v6PodIPs[1]
}

// addPod6 gives n's pod the IPv6 address ip as trellis-cni does.
func (n *testNode) addPod6(t *testing.T, ip netip.Addr) {
	t.Helper()
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

// Established IPv6 pod flows across nodes are redirected both ways, data
// intact, and counted as IPv6; the handshake goes to the full path; FIN
// drops the IPv6 flow-cache entries.
func TestKernelFastPathIPv6RedirectsEstablishedFlows(t *testing.T) {
	a, b, _, b6 := topology6(t)
	b.serve(t, 8080)
	a0, b0, a06, b06 := a.stats(t), b.stats(t), a.stats6(t), b.stats6(t)
	a.send(t, hostPort(b6, 8080), 16<<20)
	a1, b1, a16, b16 := a.stats(t), b.stats(t), a.stats6(t), b.stats6(t)
	t.Logf("node a, IPv6: %v", a16)
	t.Logf("node b, IPv6: %v", b16)
	for _, c := range []struct {
		node string
		got  uint64
		what string
	}{
		{"a", delta(a16, a06, StatFromPodRedirect), "data a→b leaving a"},
		{"b", delta(b16, b06, StatToPodRedirect), "data a→b entering b's pod"},
		{"b", delta(b16, b06, StatFromPodRedirect), "ACKs b→a leaving b"},
		{"a", delta(a16, a06, StatToPodRedirect), "ACKs b→a entering a's pod"},
	} {
		if c.got == 0 {
			t.Errorf("node %s: no IPv6 packet of the %s took the fast path", c.node, c.what)
		}
	}
	if delta(a16, a06, StatPassNotEstablished) == 0 {
		t.Error("node a: no IPv6 packet went to the full path before the connection was established")
	}
	// Only IPv6 flowed: the totals moved exactly as the IPv6 counters.
	for s := Stat(0); s < numStats; s++ {
		if delta(a1, a0, s) != delta(a16, a06, s) || delta(b1, b0, s) != delta(b16, b06, s) {
			t.Errorf("counter %s: totals moved by %d/%d, IPv6 by %d/%d (nodes a/b): IPv6 packets counted as IPv4",
				s, delta(a1, a0, s), delta(b1, b0, s), delta(a16, a06, s), delta(b16, b06, s))
		}
	}
	for _, n := range []*testNode{a, b} {
		st := n.stats6(t)
		if st[StatPassSource] != 0 || st[StatPassNAT] != 0 {
			t.Errorf("node %s: unexpected IPv6 source/NAT fallbacks: %v", n.name, st)
		}
		if left := flowEntries6(t, n); left != 0 {
			t.Errorf("node %s: %d IPv6 flow-cache entries left after the connection closed", n.name, left)
		}
	}
	// IPv4 still takes it beside IPv6.
	a2 := a.stats(t)
	a.send(t, b.podIP.String()+":8080", 4<<20)
	if a3, a36 := a.stats(t), a.stats6(t); delta(a3, a2, StatFromPodRedirect) == 0 || delta(a36, a16, StatFromPodRedirect) != 0 {
		t.Errorf("node a: an IPv4 flow beside IPv6 was not fast-pathed as IPv4 (totals %v, IPv6 %v)", a3, a36)
	}
}

func flowEntries6(t *testing.T, n *testNode) int {
	t.Helper()
	var (
		k     fastpathFlowKey6
		v     fastpathFlowVal
		count int
	)
	it := n.progs.Flows6.Iterate()
	for it.Next(&k, &v) {
		count++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return count
}

// An IPv6 connection NATed on a node (a DNAT like kube-proxy's to an IPv6
// Service address) never takes the fast path on that node.
func TestKernelFastPathIPv6LeavesNATedFlowsToConntrack(t *testing.T) {
	a, b, _, b6 := topology6(t)
	b.serve(t, 8080)
	nft := exec.Command("ip", "netns", "exec", a.nsName, "nft", "-f", "-")
	nft.Stdin = strings.NewReader(fmt.Sprintf(`table ip6 trellis-fptest {
	chain pre { type nat hook prerouting priority dstnat; ip6 daddr fd00:96::10 tcp dport 80 dnat to [%s]:8080; }
}`, b6))
	if out, err := nft.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	a0 := a.stats6(t)
	a.send(t, "[fd00:96::10]:80", 4<<20)
	a1 := a.stats6(t)
	t.Logf("node a, IPv6: %v", a1)
	if delta(a1, a0, StatPassNAT) == 0 {
		t.Error("node a: the DNATed IPv6 flow was never seen as NATed")
	}
	if n := delta(a1, a0, StatFromPodRedirect) + delta(a1, a0, StatToPodRedirect); n != 0 {
		t.Errorf("node a: %d packets of a DNATed IPv6 flow took the fast path", n)
	}
	a.send(t, hostPort(b6, 8080), 4<<20)
	if a2 := a.stats6(t); delta(a2, a1, StatFromPodRedirect) == 0 {
		t.Error("node a: plain IPv6 flow after the NATed one was not fast-pathed")
	}
}

// Two pods on one node: established IPv6 traffic between them goes straight
// into the other pod (bpf_redirect_peer).
func TestKernelFastPathIPv6SameNode(t *testing.T) {
	a, _, _, _ := topology6(t)
	p2 := &testNode{name: "a-pod2", nsName: a.nsName, ns: a.ns, h: a.h, progs: a.progs, ctl: a.ctl,
		podNS: a.podNS + "b", podIP: netip.MustParseAddr("10.91.1.3"), podIface: "trlfptest3"}
	var err error
	if p2.pod, err = cnirunner.NewNetNS(p2.podNS); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p2.pod.Close(); _ = cnirunner.DeleteNetNS(p2.podNS) })
	if err := cnirunner.Sysctl(p2.pod, "net/ipv6/conf/default/accept_dad", "0"); err != nil {
		t.Fatal(err)
	}
	p2.addPod(t)
	p2IP6 := netip.MustParseAddr("fd00:91:1::3")
	p2.addPod6(t, p2IP6)
	if err := a.ctl.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	p2.serve(t, 8080)
	s0 := a.stats6(t)
	a.send(t, hostPort(p2IP6, 8080), 8<<20)
	s1 := a.stats6(t)
	t.Logf("node a, IPv6: %v", s1)
	if delta(s1, s0, StatFromPodLocal) == 0 {
		t.Error("no IPv6 packet between two pods of one node took the fast path")
	}
	if delta(s1, s0, StatFromPodRedirect)+delta(s1, s0, StatToPodRedirect) != 0 {
		t.Error("same-node IPv6 traffic was counted as crossing an uplink")
	}
}

// packet6 builds an Ethernet/IPv6 frame with a TCP header (or, for another
// next header, the same 20 bytes after the fixed header).
func packet6(src, dst netip.Addr, hops uint8, next uint8, tcpFlags uint8) []byte {
	p := make([]byte, 14+40+20)
	binary.BigEndian.PutUint16(p[12:], unix.ETH_P_IPV6)
	ip := p[14:]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], 20)
	ip[6], ip[7] = next, hops
	s, d := src.As16(), dst.As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	tcp := ip[40:]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 8080)
	tcp[12] = 5 << 4
	tcp[13] = tcpFlags
	return p
}

// The programs' decisions on single IPv6 packets (BPF_PROG_TEST_RUN): only
// a segment from the pod's own IPv6 address, right after the fixed header,
// with an established conntrack entry, may be redirected; everything else
// continues on the full path, counted as IPv6 by reason.
func TestKernelFastPathIPv6Decisions(t *testing.T) {
	a, b, a6, b6 := topology6(t)
	podIdx, ulIdx := a.index(t, a.podIface), b.index(t, "ul0")
	// Resolve the neighbours (the FIB lookup needs them).
	b.serve(t, 8080)
	a.send(t, hostPort(b6, 8080), 1024)
	const ack, syn = 0x10, 0x02
	const hopByHop, icmpv6 = 0, 58
	for _, c := range []struct {
		name string
		pkt  []byte
		want Stat // numStats: no counter moves
	}{
		{"segment of an unknown connection", packet6(a6, b6, 64, unix.IPPROTO_TCP, ack), StatPassNoConntrack},
		{"spoofed source address", packet6(netip.MustParseAddr("fd00:91:1::99"), b6, 64, unix.IPPROTO_TCP, ack), StatPassSource},
		{"the pod's IPv4-mapped address", packet6(netip.AddrFrom16(a.podIP.As16()), b6, 64, unix.IPPROTO_TCP, ack), StatPassSource},
		{"link-local source", packet6(netip.MustParseAddr("fe80::2"), b6, 64, unix.IPPROTO_TCP, ack), StatPassSource},
		{"hop limit expiring here", packet6(a6, b6, 1, unix.IPPROTO_TCP, ack), StatPassRoute},
		{"no route", packet6(a6, netip.MustParseAddr("2001:db8::1"), 64, unix.IPPROTO_TCP, ack), StatPassRoute},
		{"SYN", packet6(a6, b6, 64, unix.IPPROTO_TCP, syn), numStats},
		{"UDP", packet6(a6, b6, 64, unix.IPPROTO_UDP, 0), numStats},
		{"ICMPv6", packet6(a6, b6, 64, icmpv6, 0), numStats},
		{"extension header", packet6(a6, b6, 64, hopByHop, ack), numStats},
	} {
		a.decide(t, a.progs.FromPod, podIdx, c.name, c.pkt, c.want)
	}
	for _, c := range []struct {
		name string
		pkt  []byte
		want Stat
	}{
		{"to_pod: segment of an unknown connection", packet6(a6, b6, 64, unix.IPPROTO_TCP, ack), StatPassNoConntrack},
		{"to_pod: for the node itself", packet6(v6NodeIPs[0], v6NodeIPs[1], 64, unix.IPPROTO_TCP, ack), numStats},
		{"to_pod: for an address no pod has", packet6(a6, netip.MustParseAddr("fd00:91:2::99"), 64, unix.IPPROTO_TCP, ack), numStats},
		{"to_pod: hop limit expiring here", packet6(a6, b6, 1, unix.IPPROTO_TCP, ack), numStats},
	} {
		b.decide(t, b.progs.ToPod, ulIdx, c.name, c.pkt, c.want)
	}
}

// The IPv6 flow cache follows the interfaces' incarnations as IPv4's does:
// a planted verdict redirects while the egress (and, from a pod, the
// ingress) entries carry its generations, and falls to the full checks
// otherwise.
func TestKernelFastPathIPv6FlowCacheFollowsInterfaceIncarnation(t *testing.T) {
	a, b, a6, b6 := topology6(t)
	b.serve(t, 8080)
	a.send(t, hostPort(b6, 8080), 1024)
	const ack = 0x10
	pkt := func() []byte { return packet6(a6, b6, 64, unix.IPPROTO_TCP, ack) }
	put := func(n *testNode, in int, v fastpathFlowVal) {
		t.Helper()
		k := fastpathFlowKey6{Saddr: a6.As16(), Daddr: b6.As16(), Sport: 0x409c /* 40000 */, Dport: 0x901f /* 8080 */, In: uint32(in)}
		v.Until = ^uint64(0)
		if err := n.progs.Flows6.Put(k, v); err != nil {
			t.Fatal(err)
		}
	}
	aPodIdx, aUlIdx, bPodIdx, bUlIdx := a.index(t, a.podIface), a.index(t, "ul0"), b.index(t, b.podIface), b.index(t, "ul0")

	bPod := b.iface(t, bPodIdx)
	if bPod.Ipv6 != b6.As16() || bPod.Ipv4 != be32(b.podIP) {
		t.Fatalf("node b: ifaces entry of the pod %+v lacks one of its addresses %s, %s", bPod, b.podIP, b6)
	}
	put(b, bUlIdx, fastpathFlowVal{Out: uint32(bPodIdx), Stat: uint32(StatToPodRedirect), OutGen: bPod.Gen})
	b.runOnce(t, b.progs.ToPod, bUlIdx, "to_pod: cached, same incarnation", pkt(), tcActRedirect, StatToPodRedirect)
	other := bPod
	other.Gen ^= 0x5a5a5a5a
	b.putIface(t, bPodIdx, other)
	b.runOnce(t, b.progs.ToPod, bUlIdx, "to_pod: cached, output index reused", pkt(), -1, StatPassNoConntrack)
	b.putIface(t, bPodIdx, bPod)

	aPod, aUl := a.iface(t, aPodIdx), a.iface(t, aUlIdx)
	put(a, aPodIdx, fastpathFlowVal{Out: uint32(aUlIdx), Stat: uint32(StatFromPodRedirect), InGen: aPod.Gen, OutGen: aUl.Gen})
	a.runOnce(t, a.progs.FromPod, aPodIdx, "from_pod: cached, same incarnations", pkt(), tcActRedirect, StatFromPodRedirect)
	otherPod := aPod
	otherPod.Gen ^= 0x5a5a5a5a
	a.putIface(t, aPodIdx, otherPod)
	a.runOnce(t, a.progs.FromPod, aPodIdx, "from_pod: cached, input index reused", pkt(), -1, StatPassNoConntrack)
	a.putIface(t, aPodIdx, aPod)
	a.deleteIface(t, aUlIdx)
	a.runOnce(t, a.progs.FromPod, aPodIdx, "from_pod: cached, output entry deleted", pkt(), -1, StatPassRoute)
}

// An IPv6 flow from a pod to an address outside the cluster is masqueraded
// by the agent's ip6 trellis-masq table and never takes the fast path on the
// node that masquerades it (here: to node b's own address).
func TestKernelFastPathIPv6LeavesMasqueradedFlowsToConntrack(t *testing.T) {
	a, b, _, _ := topology6(t)
	var l net.Listener
	err := b.ns.Do(func(ns.NetNS) (err error) {
		l, err = net.Listen("tcp", hostPort(v6NodeIPs[1], 8081))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				h := sha256.New()
				if _, err := io.Copy(h, c); err == nil {
					_, _ = c.Write(h.Sum(nil))
				}
			}()
		}
	}()
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

// IPv6 connections the operator marks in conntrack stay on the full path
// on the node that exempts the mark, as IPv4's do (the inet family marks
// both).
func TestKernelFastPathIPv6ExemptsMarkedConnections(t *testing.T) {
	a, b, _, b6 := topology6(t)
	run(t, "ip", "netns", "exec", a.nsName, "nft", "add table inet operator; "+
		"add chain inet operator marks { type filter hook forward priority 0; policy accept; }; "+
		"add rule inet operator marks meta nfproto ipv6 ct mark set ct mark or 0x100")
	a.reconfigure(t, 0x100, nil)
	b.serve(t, 8080)
	a0, b0 := a.stats6(t), b.stats6(t)
	a.send(t, hostPort(b6, 8080), 8<<20)
	a1, b1 := a.stats6(t), b.stats6(t)
	t.Logf("node a, IPv6: %v", a1)
	if n := delta(a1, a0, StatFromPodRedirect) + delta(a1, a0, StatToPodRedirect); n != 0 {
		t.Errorf("node a redirected %d IPv6 packets of a connection whose conntrack mark it exempts", n)
	}
	if delta(a1, a0, StatPassMark) == 0 {
		t.Error("node a counted no IPv6 packet as passed for its mark")
	}
	if delta(b1, b0, StatToPodRedirect) == 0 {
		t.Error("node b (no mark in its conntrack) fast-pathed no IPv6 packet: the control failed")
	}
	// The rule marks IPv6 only: an IPv4 connection on the same node keeps the fast path.
	a4 := a.stats(t)
	a.send(t, b.podIP.String()+":8080", 4<<20)
	if a5 := a.stats(t); delta(a5, a4, StatFromPodRedirect) == 0 {
		t.Errorf("node a: an unmarked IPv4 connection was not fast-pathed: %v", a5)
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
