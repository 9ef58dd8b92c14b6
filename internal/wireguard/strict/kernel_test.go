//go:build kernel

package strict

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/drops"
	"github.com/trellisnet/trellis/internal/netnstest"
	"github.com/trellisnet/trellis/internal/nftwatch"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

// strictLab is a node namespace with the strict table's controller
// running, a pod behind a veth, an uplink to a far namespace (another
// node, holding a remote pod address, a node IP and an "API server"
// address) and a veth named like the WireGuard device whose other end is
// also in the far namespace. The far namespace counts every packet to a
// pod CIDR that reaches it over the uplink, and receives UDP on every
// address.
type strictLab struct {
	node, far, pod *netnstest.Node
	c              *Controller
	podConn        *net.UDPConn // in the pod, 10.244.1.5
	hostConn       *net.UDPConn // in the node, any address
	rx             *receiver    // in the far namespace, port farPort
	podRx          *receiver    // in the pod, port farPort
}

const (
	device  = "trellis.wg"
	farPort = 7400
	// Addresses.
	remotePod = "10.244.2.5"
	nodeIP    = "10.0.1.12" // the far node
	apiServer = "192.168.50.1"
	service   = "10.96.0.10" // DNATed to the remote pod (kube-proxy's part)
	localPod  = "10.244.1.5"
)

func newStrictLab(t *testing.T) *strictLab {
	t.Helper()
	l := &strictLab{}
	l.node, l.far = netnstest.NewLinkedNodes(t, "10.0.1.11/24", nodeIP+"/24")
	l.pod = netnstest.NewNode(t, "192.0.2.99/32") // its ul0 is unused
	// The pod's veth and the WireGuard-named veth.
	if err := l.node.Handle.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "pod1", MTU: 1500},
		PeerName: "eth0", PeerNamespace: netlink.NsFd(int(l.pod.NS.Fd()))}); err != nil {
		t.Fatalf("pod veth: %v", err)
	}
	if err := l.node.Handle.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: device, MTU: 1420},
		PeerName: "wgpeer", PeerNamespace: netlink.NsFd(int(l.far.NS.Fd()))}); err != nil {
		t.Fatalf("%s veth: %v", device, err)
	}
	l.node.Configure(t, "pod1", "10.244.1.1/24")
	l.node.Configure(t, device, "10.244.1.0/32")
	l.pod.Configure(t, "eth0", localPod+"/24")
	l.far.Configure(t, "wgpeer", "10.99.0.2/30")
	for _, a := range []string{remotePod + "/32", apiServer + "/32"} {
		l.far.Configure(t, "lo", a)
	}
	route(t, l.pod.Handle, "0.0.0.0/0", "10.244.1.1", "")
	route(t, l.node.Handle, "192.168.50.0/24", nodeIP, "")
	route(t, l.node.Handle, "10.96.0.0/12", nodeIP, "")
	route(t, l.far.Handle, "10.244.1.0/24", "10.0.1.11", "")
	l.viaUplink(t)
	sysctl(t, l.node, "net.ipv4.ip_forward=1")
	for _, n := range []*netnstest.Node{l.node, l.far} {
		sysctl(t, n, "net.ipv4.conf.all.rp_filter=0")
		sysctl(t, n, "net.ipv4.conf.default.rp_filter=0")
	}
	sysctl(t, l.far, "net.ipv4.conf.wgpeer.rp_filter=0")
	// What reaches the far side over the uplink, addressed to a pod CIDR.
	nftIn(t, l.far, `table ip observe {
		counter to_pods {}
		chain pre { type filter hook prerouting priority -300; iifname "ul0" ip daddr 10.244.0.0/16 counter name "to_pods"; }
	}`)
	// kube-proxy's DNAT of a Service address to the remote pod, for the
	// pod (prerouting) and the node (output).
	nftIn(t, l.node, fmt.Sprintf(`table ip kubeproxy {
		chain pre { type nat hook prerouting priority -100; ip daddr %[1]s udp dport 53 dnat to %[2]s:%[3]d; }
		chain out { type nat hook output priority -100; ip daddr %[1]s udp dport 53 dnat to %[2]s:%[3]d; }
	}`, service, remotePod, farPort))

	l.podConn = udpIn(t, l.pod, localPod+":0")
	l.hostConn = udpIn(t, l.node, "0.0.0.0:0")
	l.rx = newReceiver(t, udpIn(t, l.far, "0.0.0.0:"+strconv.Itoa(farPort)))
	l.podRx = newReceiver(t, udpIn(t, l.pod, "0.0.0.0:"+strconv.Itoa(farPort)))
	return l
}

// start runs the guarded controller in the node namespace and waits for
// its table.
func (l *strictLab) start(t *testing.T) {
	t.Helper()
	var w *nftwatch.Watch
	var nft knftables.Interface
	if err := l.node.NS.Do(func(ns.NetNS) error {
		var err error
		if w, err = nftwatch.Open(unix.NFPROTO_INET, TableName); err != nil {
			return err
		}
		nft, err = NewNFT()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	c, err := New(Config{NodeName: "n1", NFT: nft, Watch: w, Device: device,
		ClusterCIDRs: pfx("10.244.0.0/16"),
		Nodes:        nodeLister(t, map[string][]string{"n1": {"10.244.1.0/24"}, "n2": {"10.244.2.0/24"}}),
		Sync:         syncrunner.Options{MinInterval: 100 * time.Millisecond, MaxInterval: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	l.c = c
	ctx, cancel := context.WithCancel(context.Background())
	wait := netnstest.RunGuarded(ctx, t, l.node.NS, c.Run, c.Watch)
	t.Cleanup(func() { cancel(); wait() })
	l.waitTable(t, 5*time.Second)
}

// waitTable waits until the table holds its drop rule; it returns how long
// that took.
func (l *strictLab) waitTable(t *testing.T, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < limit {
		if out, err := l.node.Exec("nft", "list", "chain", "inet", TableName, ChainName); err == nil &&
			regexp.MustCompile(`oifname != "trellis.wg" counter name "unencrypted" drop`).MatchString(out) {
			return time.Since(start)
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("table inet %s not in place within %v", TableName, limit)
	return 0
}

func (l *strictLab) viaUplink(t *testing.T) { route(t, l.node.Handle, "10.244.2.0/24", nodeIP, "") }
func (l *strictLab) viaDevice(t *testing.T) { route(t, l.node.Handle, "10.244.2.0/24", "", device) }

var packetsRE = regexp.MustCompile(`packets (\d+)`)

// counter reads a named counter's packets in n.
func counter(t *testing.T, n *netnstest.Node, family, table, name string) uint64 {
	t.Helper()
	out, err := n.Exec("nft", "list", "counter", family, table, name)
	if err != nil {
		t.Fatalf("nft list counter %s %s %s: %v %s", family, table, name, err, out)
	}
	m := packetsRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no packets in %q", out)
	}
	v, _ := strconv.ParseUint(m[1], 10, 64)
	return v
}

// uplinkToPods is what the far side saw over the uplink addressed to pods.
func (l *strictLab) uplinkToPods(t *testing.T) uint64 {
	return counter(t, l.far, "ip", "observe", "to_pods")
}

func (l *strictLab) dropped(t *testing.T) uint64 {
	return counter(t, l.node, "inet", TableName, CounterName)
}

// send sends one tagged datagram from conn to dst:port and reports whether
// rx received it within wait. A send refused locally (EPERM: the node's
// own packet dropped in postrouting) counts as not received.
func send(t *testing.T, conn *net.UDPConn, dst string, port int, rx *receiver, wait time.Duration) bool {
	t.Helper()
	tag := fmt.Sprintf("strict-%d", time.Now().UnixNano())
	_, err := conn.WriteToUDP([]byte(tag), net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(dst), uint16(port))))
	if err != nil && !errors.Is(err, syscall.EPERM) {
		t.Fatalf("send to %s:%d: %v", dst, port, err)
	}
	return rx.saw(tag, wait)
}

// Strict mode in a real kernel: a pod's packet to a remote pod leaves only
// through the WireGuard-named device; through the uplink it is dropped and
// counted, and the far side sees nothing. The node's own packets and
// packets kube-proxy DNATed to a remote pod are held the same way; node
// IPs, the API server and local pods stay reachable; a foreign nft flush
// ruleset is repaired by the controller.
func TestKernelStrictDropsPlaintextToRemotePods(t *testing.T) {
	l := newStrictLab(t)
	const wait = 400 * time.Millisecond

	// Negative control: without the table, the pod's packet crosses the
	// uplink in plaintext, and the observer counts it.
	before := l.uplinkToPods(t)
	if !send(t, l.podConn, remotePod, farPort, l.rx, 2*time.Second) {
		t.Fatal("control: without the strict table the remote pod did not receive the pod's packet over the uplink; the test cannot see plaintext")
	}
	if got := l.uplinkToPods(t); got != before+1 {
		t.Fatalf("control: far side counted %d packets to pods over the uplink, want 1", got-before)
	}

	l.start(t)
	before, droppedBefore := l.uplinkToPods(t), l.dropped(t)
	cases := []struct {
		name string
		conn *net.UDPConn
		dst  string
		port int
	}{
		{"pod to remote pod via the uplink", l.podConn, remotePod, farPort},
		{"node to remote pod via the uplink", l.hostConn, remotePod, farPort},
		{"pod to a Service DNATed to a remote pod", l.podConn, service, 53},
		{"node to a Service DNATed to a remote pod", l.hostConn, service, 53},
	}
	for _, c := range cases {
		if send(t, c.conn, c.dst, c.port, l.rx, wait) {
			t.Errorf("%s: received by the far side in plaintext", c.name)
		}
	}
	if got := l.uplinkToPods(t); got != before {
		t.Errorf("far side counted %d packets to pods over the uplink with strict mode on, want 0", got-before)
	}
	dropped := l.dropped(t) - droppedBefore
	if dropped != uint64(len(cases)) {
		t.Errorf("strict table counted %d drops, want %d", dropped, len(cases))
	}
	t.Logf("via the uplink: %d packets to remote pods sent, %d dropped and counted, 0 seen on the far side", len(cases), dropped)

	// What is not pod traffic to another node passes.
	for _, c := range []struct {
		name string
		conn *net.UDPConn
		dst  string
		rx   *receiver
	}{
		{"pod to the other node's IP", l.podConn, nodeIP, l.rx},
		{"node to the other node's IP", l.hostConn, nodeIP, l.rx},
		{"pod to the API server", l.podConn, apiServer, l.rx},
		{"node to the API server", l.hostConn, apiServer, l.rx},
		{"node to its local pod", l.hostConn, localPod, l.podRx},
	} {
		if !send(t, c.conn, c.dst, farPort, c.rx, 2*time.Second) {
			t.Errorf("%s: not received (strict mode must leave it alone)", c.name)
		}
	}

	// Through the WireGuard-named device, pod traffic passes.
	l.viaDevice(t)
	droppedBefore = l.dropped(t)
	for _, c := range cases {
		if !send(t, c.conn, c.dst, c.port, l.rx, 2*time.Second) {
			t.Errorf("%s, routed through %s: not received", c.name, device)
		}
	}
	if got := l.dropped(t); got != droppedBefore {
		t.Errorf("strict table dropped %d packets that left through %s", got-droppedBefore, device)
	}
	if got := l.uplinkToPods(t); got != before {
		t.Errorf("far side counted %d packets to pods over the uplink, want 0", got-before)
	}

	// A foreign flush: the controller puts the table back, and the drop
	// holds again.
	l.viaUplink(t)
	var repairs []time.Duration
	for i := 0; i < 3; i++ {
		time.Sleep(300 * time.Millisecond) // past the least interval since the last sync (and the resync our own commit triggers)
		if out, err := l.node.Exec("nft", "flush", "ruleset"); err != nil {
			t.Fatalf("nft flush ruleset: %v %s", err, out)
		}
		repairs = append(repairs, l.waitTable(t, time.Second))
	}
	if send(t, l.podConn, remotePod, farPort, l.rx, wait) {
		t.Error("after the repair: pod to remote pod received in plaintext")
	}
	if got := l.uplinkToPods(t); got != before {
		t.Errorf("after the repair: far side counted %d packets to pods over the uplink, want 0", got-before)
	}
	t.Logf("nft flush ruleset -> strict table back in %v", repairs)
	if got := testutil.ToFloat64(l.c.guard.Changes.WithLabelValues(nftwatch.ReasonForeign)); got != float64(len(repairs)) {
		t.Errorf("trellis_encryption_strict_table_changes_total{reason=foreign} = %v, want %d", got, len(repairs))
	}
}

// receiver collects the datagrams a socket receives.
type receiver struct {
	mu   sync.Mutex
	seen map[string]bool
	cond *sync.Cond
}

func newReceiver(t *testing.T, c *net.UDPConn) *receiver {
	r := &receiver{seen: map[string]bool{}}
	r.cond = sync.NewCond(&r.mu)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := c.ReadFromUDP(buf)
			if err != nil {
				return // closed at cleanup
			}
			r.mu.Lock()
			r.seen[string(buf[:n])] = true
			r.cond.Broadcast()
			r.mu.Unlock()
		}
	}()
	return r
}

// saw waits up to wait for tag.
func (r *receiver) saw(tag string, wait time.Duration) bool {
	deadline := time.Now().Add(wait)
	for {
		r.mu.Lock()
		ok := r.seen[tag]
		r.mu.Unlock()
		if ok || time.Now().After(deadline) {
			return ok
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func udpIn(t *testing.T, n *netnstest.Node, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := n.NS.Do(func(ns.NetNS) error {
		var err error
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
		return err
	}); err != nil {
		t.Fatalf("udp %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// route replaces the route to dst: via gw, or through dev.
func route(t *testing.T, h *netlink.Handle, dst, gw, dev string) {
	t.Helper()
	_, ipn, err := net.ParseCIDR(dst)
	if err != nil {
		t.Fatal(err)
	}
	r := &netlink.Route{Dst: ipn}
	if gw != "" {
		r.Gw = net.ParseIP(gw)
	}
	if dev != "" {
		l, err := h.LinkByName(dev)
		if err != nil {
			t.Fatal(err)
		}
		r.LinkIndex, r.Scope = l.Attrs().Index, netlink.SCOPE_LINK
	}
	if err := h.RouteReplace(r); err != nil {
		t.Fatalf("route %s: %v", dst, err)
	}
}

func sysctl(t *testing.T, n *netnstest.Node, kv string) {
	t.Helper()
	if out, err := n.Exec("sysctl", "-qw", kv); err != nil {
		t.Fatalf("sysctl %s: %v %s", kv, err, out)
	}
}

// nftIn loads a ruleset in n.
func nftIn(t *testing.T, n *netnstest.Node, ruleset string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "ruleset.nft")
	if err := os.WriteFile(f, []byte(ruleset+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := n.Exec("nft", "-f", f); err != nil {
		t.Fatalf("nft -f %s: %v %s", ruleset, err, out)
	}
}

// With the deny log on, a dropped packet reaches the nflog group with a
// prefix `trellisctl drops` decodes as the verdict "unencrypted", naming
// both addresses.
func TestKernelStrictDenyLog(t *testing.T) {
	l := newStrictLab(t)
	const group = 7
	d := Compute(pfx("10.244.1.0/24"), pfx("10.244.0.0/16"), pfx("10.244.1.0/24", "10.244.2.0/24"), device, group)
	var r *drops.Reader
	if err := l.node.NS.Do(func(ns.NetNS) error {
		nft, err := NewNFT()
		if err != nil {
			return err
		}
		if err := Apply(context.Background(), nft, d); err != nil {
			return err
		}
		r, err = drops.Open(group)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if send(t, l.podConn, remotePod, farPort, l.rx, 300*time.Millisecond) {
		t.Fatal("pod to remote pod via the uplink received in plaintext")
	}
	src, err := drops.NewSource(drops.Config{Node: "n1", Group: group, Ring: drops.NewRing(8, 0, nil)})
	if err != nil {
		t.Fatal(err)
	}
	_ = r.SetDeadline(time.Now().Add(2 * time.Second))
	for {
		recs, err := r.Receive()
		if err != nil {
			t.Fatalf("no deny-log record: %v", err)
		}
		for i := range recs {
			got, ok := src.Decode(&recs[i])
			if !ok {
				t.Fatalf("record %+v not decoded", recs[i])
			}
			if got.Verdict != drops.VerdictUnencrypted || got.Src.IP != localPod || got.Dst.IP != remotePod || got.Dst.Port != farPort {
				t.Fatalf("drop %+v, want verdict unencrypted %s -> %s:%d", got, localPod, remotePod, farPort)
			}
			t.Logf("deny log: %s %s -> %s:%d (prefix %q)", got.Verdict, got.Src.IP, got.Dst.IP, got.Dst.Port, recs[i].Prefix)
			return
		}
	}
}

// A resync of an unchanged table commits nothing in a real kernel (the
// listing reads back as what was written: both families, host prefixes,
// adjacent prefixes), so neither the periodic sync nor the guard sees a
// change where there is none.
func TestKernelStrictResyncOfUnchangedTableCommitsNothing(t *testing.T) {
	n := netnstest.NewNode(t, "10.0.1.11/24")
	d := Compute(pfx("10.244.1.0/24", "fd00:10:244:1::/64"), pfx("10.244.0.0/16"),
		pfx("10.244.1.0/24", "10.250.0.0/24", "10.250.1.0/24", "10.251.0.7/32", "fd00:10:244:2::/64", "fd00:99::5/128"), device, 3)
	var gen func() uint32
	var nft knftables.Interface
	if err := n.NS.Do(func(ns.NetNS) error {
		w, err := nftwatch.Open(unix.NFPROTO_INET, TableName)
		if err != nil {
			return err
		}
		t.Cleanup(w.Close)
		gen = func() uint32 {
			g, err := w.Generation()
			if err != nil {
				t.Fatal(err)
			}
			return g
		}
		if nft, err = NewNFT(); err != nil {
			return err
		}
		return Apply(context.Background(), nft, d)
	}); err != nil {
		t.Fatal(err)
	}
	var cur Content
	before := gen()
	if err := n.NS.Do(func(ns.NetNS) error {
		var err error
		if cur, err = Read(context.Background(), nft); err != nil {
			return err
		}
		return Apply(context.Background(), nft, d)
	}); err != nil {
		t.Fatal(err)
	}
	if !cur.Holds(d) {
		t.Errorf("the table reads back as %+v, not as written %+v", cur, d)
	}
	if after := gen(); after != before {
		t.Errorf("resync of an unchanged table committed (generation %d -> %d)", before, after)
	}
}
