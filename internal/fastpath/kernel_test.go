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

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"

	"github.com/trellisnet/trellis/internal/cnirunner"
	"github.com/trellisnet/trellis/internal/masq"
	"github.com/trellisnet/trellis/internal/nodesetup"
)

// testNode is a node namespace with one pod wired like trellis-cni does
// (routed veth, /32, default via 169.254.1.1 onlink).
type testNode struct {
	name, nsName, podNS string
	ns, pod             ns.NetNS
	ip, podIP           netip.Addr
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
		err := n.ns.Do(func(ns.NetNS) error {
			nft, err := masq.NewNFT()
			if err != nil {
				return err
			}
			pods := []netip.Prefix{netip.MustParsePrefix("10.91.0.0/16")}
			return masq.Apply(context.Background(), nft, masq.Compute([]netip.Prefix{netip.PrefixFrom(n.podIP, 24).Masked()}, pods, pods, nil))
		})
		if err != nil {
			t.Fatalf("masquerade table on %s: %v", n.name, err)
		}
		n.load(t)
	}
	return a, b
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
	var l net.Listener
	err := n.pod.Do(func(ns.NetNS) (err error) {
		l, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
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

// Established pod flows across nodes are redirected both ways, data intact;
// the handshake and teardown are left to the full path.
func TestKernelFastPathRedirectsEstablishedFlows(t *testing.T) {
	a, b := topology(t)
	b.serve(t, 8080)
	a0, b0 := a.stats(t), b.stats(t)
	a.send(t, b.podIP.String()+":8080", 16<<20)
	a1, b1 := a.stats(t), b.stats(t)
	t.Logf("node a: %v", a1)
	t.Logf("node b: %v", b1)
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
			t.Errorf("node %s: no packet of the %s took the fast path", c.node, c.what)
		}
	}
	// The SYN-ACK's ACK and the first data segments precede ASSURED.
	if delta(a1, a0, StatPassNotEstablished) == 0 {
		t.Error("node a: no packet went to the full path before the connection was established")
	}
	for _, n := range []*testNode{a, b} {
		st := n.stats(t)
		if st[StatPassSource] != 0 || st[StatPassNAT] != 0 {
			t.Errorf("node %s: unexpected source/NAT fallbacks: %v", n.name, st)
		}
		// The connection is closed: FIN dropped its flow-cache entries
		// (one per direction and node) as it passed.
		if left := flowEntries(t, n); left != 0 {
			t.Errorf("node %s: %d flow-cache entries left after the connection closed", n.name, left)
		}
	}
}

func flowEntries(t *testing.T, n *testNode) int {
	t.Helper()
	var (
		k     fastpathFlowKey
		v     fastpathFlowVal
		count int
	)
	it := n.progs.Flows.Iterate()
	for it.Next(&k, &v) {
		count++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return count
}

// A connection NATed on a node (here a DNAT like kube-proxy's to a Service
// VIP) never takes the fast path on that node: un-NAT needs conntrack.
func TestKernelFastPathLeavesNATedFlowsToConntrack(t *testing.T) {
	a, b := topology(t)
	b.serve(t, 8080)
	nft := exec.Command("ip", "netns", "exec", a.nsName, "nft", "-f", "-")
	nft.Stdin = strings.NewReader(fmt.Sprintf(`table ip trellis-fptest {
	chain pre { type nat hook prerouting priority dstnat; ip daddr 10.96.0.10 tcp dport 80 dnat to %s:8080; }
}`, b.podIP))
	if out, err := nft.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	a0 := a.stats(t)
	a.send(t, "10.96.0.10:80", 4<<20)
	a1 := a.stats(t)
	t.Logf("node a: %v", a1)
	if delta(a1, a0, StatPassNAT) == 0 {
		t.Error("node a: the DNATed flow was never seen as NATed")
	}
	if n := delta(a1, a0, StatFromPodRedirect) + delta(a1, a0, StatToPodRedirect); n != 0 {
		t.Errorf("node a: %d packets of a DNATed flow took the fast path", n)
	}
	// Without NAT, the same pair is fast-pathed.
	a.send(t, b.podIP.String()+":8080", 4<<20)
	if a2 := a.stats(t); delta(a2, a1, StatFromPodRedirect) == 0 {
		t.Error("node a: plain flow after the NATed one was not fast-pathed")
	}
}

// Two pods on one node: established traffic between them goes straight
// from one pod's interface into the other pod (bpf_redirect_peer).
func TestKernelFastPathSameNode(t *testing.T) {
	a, _ := topology(t)
	p2 := &testNode{name: "a-pod2", nsName: a.nsName, ns: a.ns, h: a.h, progs: a.progs, ctl: a.ctl,
		podNS: a.podNS + "b", podIP: netip.MustParseAddr("10.91.1.3"), podIface: "trlfptest3"}
	var err error
	if p2.pod, err = cnirunner.NewNetNS(p2.podNS); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p2.pod.Close(); _ = cnirunner.DeleteNetNS(p2.podNS) })
	p2.addPod(t)
	if err := a.ctl.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	p2.serve(t, 8080)
	s0 := a.stats(t)
	a.send(t, p2.podIP.String()+":8080", 8<<20)
	s1 := a.stats(t)
	t.Logf("node a: %v", s1)
	if delta(s1, s0, StatFromPodLocal) == 0 {
		t.Error("no packet between two pods of one node took the fast path")
	}
	if delta(s1, s0, StatFromPodRedirect)+delta(s1, s0, StatToPodRedirect) != 0 {
		t.Error("same-node traffic was counted as crossing an uplink")
	}
}
