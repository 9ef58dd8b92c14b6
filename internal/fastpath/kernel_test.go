//go:build kernel

package fastpath

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/cnirunner"
	"github.com/trellisnet/trellis/internal/masq"
	"github.com/trellisnet/trellis/internal/nodesetup"
)

// testNode is a node namespace with one pod wired like trellis-cni does
// (routed veth, /32, default via 169.254.1.1 onlink). ip6 and podIP6 are
// set by topology6 (addPod6) only.
type testNode struct {
	name, nsName, podNS string
	ns, pod             ns.NetNS
	ip, podIP           netip.Addr
	ip6, podIP6         netip.Addr
	podIface            string
	h                   *netlink.Handle
	progs               *Programs
	ctl                 *Controller
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// topology builds two node namespaces on one veth, a pod on each, the
// masquerade table on both (conntrack runs, as on every agent node), and
// loads and syncs the fast path on both.
func topology(t *testing.T) (a, b *testNode) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("tier-1 test needs root (make test-kernel runs as root)")
	}
	tag := fmt.Sprint(os.Getpid() % 100000)
	var nodes []*testNode
	for i := 1; i <= 2; i++ {
		n := &testNode{name: fmt.Sprintf("n%d", i), nsName: fmt.Sprintf("trl-fp%d-%s", i, tag), podNS: fmt.Sprintf("trl-fpp%d-%s", i, tag),
			ip: netip.AddrFrom4([4]byte{10, 0, 9, byte(i)}), podIP: netip.AddrFrom4([4]byte{10, 91, byte(i), 2}),
			podIface: fmt.Sprintf("trlfptest%d", i)}
		var err error
		if n.ns, err = cnirunner.NewNetNS(n.nsName); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.ns.Close(); _ = cnirunner.DeleteNetNS(n.nsName) })
		if n.pod, err = cnirunner.NewNetNS(n.podNS); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.pod.Close(); _ = cnirunner.DeleteNetNS(n.podNS) })
		h, err := vns.GetFromPath(n.ns.Path())
		if err != nil {
			t.Fatal(err)
		}
		n.h, err = netlink.NewHandleAt(h)
		h.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(n.h.Close)
		if err := cnirunner.Sysctl(n.ns, "net/ipv4/ip_forward", "1"); err != nil {
			t.Fatal(err)
		}
		// IPv6 (topology6): interfaces made from now on are usable at once
		// (no duplicate address detection), as the plugin makes pods'.
		for _, netns := range []ns.NetNS{n.ns, n.pod} {
			if err := cnirunner.Sysctl(netns, "net/ipv6/conf/default/accept_dad", "0"); err != nil {
				t.Fatal(err)
			}
		}
		nodes = append(nodes, n)
	}
	a, b = nodes[0], nodes[1]
	run(t, "ip", "-n", a.nsName, "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", b.nsName)
	for _, n := range nodes {
		peer := a
		if n == a {
			peer = b
		}
		run(t, "ip", "-n", n.nsName, "addr", "add", n.ip.String()+"/24", "dev", "ul0")
		run(t, "ip", "-n", n.nsName, "link", "set", "ul0", "up")
		run(t, "ip", "-n", n.nsName, "route", "add", netip.PrefixFrom(peer.podIP, 24).Masked().String(), "via", peer.ip.String())
		n.addPod(t)
		n.masquerade(t, knftables.IPv4Family, netip.PrefixFrom(n.podIP, 24).Masked(), netip.MustParsePrefix("10.91.0.0/16"))
		n.load(t)
	}
	return a, b
}

// masquerade applies the agent's masquerade table of family in n: local is
// n's pod prefix, pods every pod's (cluster and all pod CIDRs).
func (n *testNode) masquerade(t *testing.T, family knftables.Family, local, pods netip.Prefix) {
	t.Helper()
	err := n.ns.Do(func(ns.NetNS) error {
		nft, err := masq.NewNFTFamily(family)
		if err != nil {
			return err
		}
		all := []netip.Prefix{pods}
		return masq.Apply(context.Background(), nft, masq.ComputeFamily(family, []netip.Prefix{local}, all, all, nil))
	})
	if err != nil {
		t.Fatalf("%s masquerade table on %s: %v", family, n.name, err)
	}
}

func (n *testNode) addPod(t *testing.T) {
	run(t, "ip", "-n", n.nsName, "link", "add", n.podIface, "type", "veth", "peer", "name", "eth0", "netns", n.podNS)
	run(t, "ip", "-n", n.nsName, "link", "set", n.podIface, "up")
	l, err := n.h.LinkByName(n.podIface)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{
		{"addr", "add", n.podIP.String() + "/32", "dev", "eth0"},
		{"link", "set", "eth0", "up"},
		{"route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"},
		{"route", "add", "default", "via", "169.254.1.1", "dev", "eth0"},
		{"neigh", "add", "169.254.1.1", "lladdr", l.Attrs().HardwareAddr.String(), "dev", "eth0", "nud", "permanent"},
	} {
		run(t, append([]string{"ip", "-n", n.podNS}, c...)...)
	}
	run(t, "ip", "-n", n.nsName, "route", "add", n.podIP.String()+"/32", "dev", n.podIface, "scope", "link")
}

// load loads the programs (as a starting agent does) and syncs them.
func (n *testNode) load(t *testing.T) {
	t.Helper()
	progs, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(progs.Close)
	n.progs = progs
	n.ctl, err = New(Config{Kernel: &Kernel{Handle: n.h}, Programs: progs, Sysctls: nodesetup.NetnsSysctls{NS: n.ns},
		Uplinks: func() []string { return []string{"ul0"} }})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.ctl.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func (n *testNode) stats(t *testing.T) map[Stat]uint64 {
	t.Helper()
	st, err := n.progs.ReadStats()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// stats6 reads the counters of IPv6 packets only.
func (n *testNode) stats6(t *testing.T) map[Stat]uint64 {
	t.Helper()
	st, err := n.progs.ReadStatsIPv6()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// serve accepts connections in n's pod on port and answers each with the
// sha256 of everything it received.
func (n *testNode) serve(t *testing.T, port int) {
	t.Helper()
	serveIn(t, n.pod, fmt.Sprintf(":%d", port))
}

// serveIn accepts connections in netns on addr and answers each with the
// sha256 of everything it received.
func serveIn(t *testing.T, netns ns.NetNS, addr string) {
	t.Helper()
	var l net.Listener
	err := netns.Do(func(ns.NetNS) (err error) {
		l, err = net.Listen("tcp", addr)
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
}

// send connects from n's pod to dst and sends size random bytes; it fails
// the test unless the server's digest matches.
func (n *testNode) send(t *testing.T, dst string, size int) {
	t.Helper()
	data := make([]byte, size)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	var c net.Conn
	err := n.pod.Do(func(ns.NetNS) (err error) {
		c, err = net.DialTimeout("tcp", dst, 5*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("dial %s from %s: %v", dst, n.podNS, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(data); err != nil {
		t.Fatalf("send to %s: %v", dst, err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	want := sha256.Sum256(data)
	if err != nil || !bytes.Equal(got, want[:]) {
		t.Fatalf("%s: server digest %x (err %v), want %x", dst, got, err, want)
	}
}

func delta(after, before map[Stat]uint64, s Stat) uint64 { return after[s] - before[s] }

// family is one IP family of the test topology: each scenario below is
// written once and run for both, by a test of its own per family.
type family struct {
	name string // "IPv4" or "IPv6"
	v6   bool
}

var (
	ipv4 = family{name: "IPv4"}
	ipv6 = family{name: "IPv6", v6: true}
)

// topology builds the test topology with f's addresses on the pods:
// topology, or topology6.
func (f family) topology(t *testing.T) (a, b *testNode) {
	t.Helper()
	if f.v6 {
		a, b, _, _ = topology6(t)
		return a, b
	}
	return topology(t)
}

// pick is the address of f among v4 and v6.
func (f family) pick(v4, v6 string) netip.Addr {
	if f.v6 {
		return netip.MustParseAddr(v6)
	}
	return netip.MustParseAddr(v4)
}

// pod is n's pod address of f; node is n's uplink address of f.
func (f family) pod(n *testNode) netip.Addr {
	if f.v6 {
		return n.podIP6
	}
	return n.podIP
}

func (f family) node(n *testNode) netip.Addr {
	if f.v6 {
		return n.ip6
	}
	return n.ip
}

// stats reads n's counters for f: the totals for IPv4 (as the IPv4 tests
// always have), the IPv6 counters (ReadStatsIPv6) for IPv6.
func (f family) stats(t *testing.T, n *testNode) map[Stat]uint64 {
	t.Helper()
	if f.v6 {
		return n.stats6(t)
	}
	return n.stats(t)
}

// flowEntries counts n's flow-cache entries of f.
func (f family) flowEntries(t *testing.T, n *testNode) int {
	t.Helper()
	if f.v6 {
		return countEntries(t, n.progs.Flows6.Iterate(), new(fastpathFlowKey6))
	}
	return countEntries(t, n.progs.Flows.Iterate(), new(fastpathFlowKey))
}

func countEntries(t *testing.T, it *ebpf.MapIterator, k any) int {
	t.Helper()
	var (
		v     fastpathFlowVal
		count int
	)
	for it.Next(k, &v) {
		count++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return count
}

// Established pod flows across nodes are redirected both ways, data intact,
// and counted in their family; the handshake goes to the full path; FIN
// drops the flow-cache entries.
func TestKernelFastPathRedirectsEstablishedFlows(t *testing.T) { redirectsEstablishedFlows(t, ipv4) }
func TestKernelFastPathIPv6RedirectsEstablishedFlows(t *testing.T) {
	redirectsEstablishedFlows(t, ipv6)
}

func redirectsEstablishedFlows(t *testing.T, f family) {
	a, b := f.topology(t)
	b.serve(t, 8080)
	a0, b0, at0, bt0 := f.stats(t, a), f.stats(t, b), a.stats(t), b.stats(t)
	a.send(t, hostPort(f.pod(b), 8080), 16<<20)
	a1, b1, at1, bt1 := f.stats(t, a), f.stats(t, b), a.stats(t), b.stats(t)
	t.Logf("node a, %s: %v", f.name, a1)
	t.Logf("node b, %s: %v", f.name, b1)
	for _, c := range []struct {
		node string
		got  uint64
		what string
	}{
		{"a", delta(a1, a0, StatFromPodRedirect), "data a→b leaving a"},
		{"b", delta(b1, b0, StatToPodRedirect), "data a→b entering b's pod"},
		{"b", delta(b1, b0, StatFromPodRedirect), "ACKs b→a leaving b"},
		{"a", delta(a1, a0, StatToPodRedirect), "ACKs b→a entering a's pod"},
	} {
		if c.got == 0 {
			t.Errorf("node %s: no %s packet of the %s took the fast path", c.node, f.name, c.what)
		}
	}
	// The SYN-ACK's ACK and the first data segments precede ASSURED.
	if delta(a1, a0, StatPassNotEstablished) == 0 {
		t.Errorf("node a: no %s packet went to the full path before the connection was established", f.name)
	}
	if f.v6 {
		// Only IPv6 flowed: the totals moved exactly as the IPv6 counters.
		for s := Stat(0); s < numStats; s++ {
			if delta(at1, at0, s) != delta(a1, a0, s) || delta(bt1, bt0, s) != delta(b1, b0, s) {
				t.Errorf("counter %s: totals moved by %d/%d, IPv6 by %d/%d (nodes a/b): IPv6 packets counted as IPv4",
					s, delta(at1, at0, s), delta(bt1, bt0, s), delta(a1, a0, s), delta(b1, b0, s))
			}
		}
	}
	for _, n := range []*testNode{a, b} {
		st := f.stats(t, n)
		if st[StatPassSource] != 0 || st[StatPassNAT] != 0 {
			t.Errorf("node %s: unexpected %s source/NAT fallbacks: %v", n.name, f.name, st)
		}
		// The connection is closed: FIN dropped its flow-cache entries
		// (one per direction and node) as it passed.
		if left := f.flowEntries(t, n); left != 0 {
			t.Errorf("node %s: %d %s flow-cache entries left after the connection closed", n.name, left, f.name)
		}
	}
	if f.v6 {
		// IPv4 still takes it beside IPv6.
		a2 := a.stats(t)
		a.send(t, hostPort(b.podIP, 8080), 4<<20)
		if a3, a36 := a.stats(t), a.stats6(t); delta(a3, a2, StatFromPodRedirect) == 0 || delta(a36, a1, StatFromPodRedirect) != 0 {
			t.Errorf("node a: an IPv4 flow beside IPv6 was not fast-pathed as IPv4 (totals %v, IPv6 %v)", a3, a36)
		}
	}
}

// A connection NATed on a node (here a DNAT like kube-proxy's to a Service
// address of the family) never takes the fast path on that node: un-NAT
// needs conntrack.
func TestKernelFastPathLeavesNATedFlowsToConntrack(t *testing.T) {
	leavesNATedFlowsToConntrack(t, ipv4)
}
func TestKernelFastPathIPv6LeavesNATedFlowsToConntrack(t *testing.T) {
	leavesNATedFlowsToConntrack(t, ipv6)
}

func leavesNATedFlowsToConntrack(t *testing.T, f family) {
	a, b := f.topology(t)
	b.serve(t, 8080)
	nftFamily, vip := "ip", f.pick("10.96.0.10", "fd00:96::10")
	if f.v6 {
		nftFamily = "ip6"
	}
	nft := exec.Command("ip", "netns", "exec", a.nsName, "nft", "-f", "-")
	nft.Stdin = strings.NewReader(fmt.Sprintf(`table %[1]s trellis-fptest {
	chain pre { type nat hook prerouting priority dstnat; %[1]s daddr %[2]s tcp dport 80 dnat to %[3]s; }
}`, nftFamily, vip, hostPort(f.pod(b), 8080)))
	if out, err := nft.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	a0 := f.stats(t, a)
	a.send(t, hostPort(vip, 80), 4<<20)
	a1 := f.stats(t, a)
	t.Logf("node a, %s: %v", f.name, a1)
	if delta(a1, a0, StatPassNAT) == 0 {
		t.Errorf("node a: the DNATed %s flow was never seen as NATed", f.name)
	}
	if n := delta(a1, a0, StatFromPodRedirect) + delta(a1, a0, StatToPodRedirect); n != 0 {
		t.Errorf("node a: %d packets of a DNATed %s flow took the fast path", n, f.name)
	}
	// Without NAT, the same pair is fast-pathed.
	a.send(t, hostPort(f.pod(b), 8080), 4<<20)
	if a2 := f.stats(t, a); delta(a2, a1, StatFromPodRedirect) == 0 {
		t.Errorf("node a: plain %s flow after the NATed one was not fast-pathed", f.name)
	}
}

// Two pods on one node: established traffic between them goes straight
// from one pod's interface into the other pod (bpf_redirect_peer).
func TestKernelFastPathSameNode(t *testing.T)     { sameNode(t, ipv4) }
func TestKernelFastPathIPv6SameNode(t *testing.T) { sameNode(t, ipv6) }

func sameNode(t *testing.T, f family) {
	a, _ := f.topology(t)
	p2 := &testNode{name: "a-pod2", nsName: a.nsName, ns: a.ns, h: a.h, progs: a.progs, ctl: a.ctl,
		podNS: a.podNS + "b", podIP: netip.MustParseAddr("10.91.1.3"), podIface: "trlfptest3"}
	var err error
	if p2.pod, err = cnirunner.NewNetNS(p2.podNS); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p2.pod.Close(); _ = cnirunner.DeleteNetNS(p2.podNS) })
	// As topology does for every pod namespace (IPv6: no duplicate address detection).
	if err := cnirunner.Sysctl(p2.pod, "net/ipv6/conf/default/accept_dad", "0"); err != nil {
		t.Fatal(err)
	}
	p2.addPod(t)
	if f.v6 {
		p2.addPod6(t, netip.MustParseAddr("fd00:91:1::3"))
	}
	if err := a.ctl.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	p2.serve(t, 8080)
	s0 := f.stats(t, a)
	a.send(t, hostPort(f.pod(p2), 8080), 8<<20)
	s1 := f.stats(t, a)
	t.Logf("node a, %s: %v", f.name, s1)
	if delta(s1, s0, StatFromPodLocal) == 0 {
		t.Errorf("no %s packet between two pods of one node took the fast path", f.name)
	}
	if delta(s1, s0, StatFromPodRedirect)+delta(s1, s0, StatToPodRedirect) != 0 {
		t.Errorf("same-node %s traffic was counted as crossing an uplink", f.name)
	}
}
