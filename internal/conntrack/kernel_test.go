//go:build kernel

package conntrack_test

import (
	"context"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/trellisnet/trellis/internal/fastpath"
)

// A pod address is reused while a UDP peer keeps sending to it and the
// old pod keeps sending out: the new pod, isolated both ways by a
// default-deny policy, never receives a packet of the old flows, and its
// packets on the old flows never reach the peer. Real plugin (libcni),
// real policy table, real conntrack; two /30 subnets of one usable
// address each, so the old pod's address is the only one the new pod
// can get.
//
// Without the plugin's conntrack deletion (on DEL and on ADD), the entries
// of the old flows outlive the old pod (the peer's packets keep refreshing
// them), the policy's `ct state established,related accept` matches them
// before any pod-specific rule, and the new pod receives the peer's
// packets and can answer on them.
func TestKernelReusedAddressNeverInheritsAFlow(t *testing.T) {
	for _, tc := range []struct {
		name string
		// gone takes the old pod away; forgotten: its entries must be gone
		// at once (before any ADD).
		gone      func(n *node, old, peer *pod)
		forgotten bool
	}{
		{"old pod deleted (DEL)", func(n *node, old, _ *pod) { n.del(old) }, true},
		// A DEL that never came (runtime or node crash): the interface is
		// gone and GC freed the address; only ADD stands between the old
		// flows and the new pod.
		{"no DEL (interface removed, address freed by GC)", func(n *node, old, peer *pod) {
			if err := n.ns.Do(func(ns.NetNS) error {
				l, err := netlink.LinkByName(old.iface())
				if err != nil {
					return err
				}
				return netlink.LinkDel(l)
			}); err != nil {
				t.Fatal(err)
			}
			if err := n.runner.GC(context.Background(), []types.GCAttachment{{ContainerID: peer.id, IfName: "eth0"}}); err != nil {
				t.Fatalf("GC: %v", err)
			}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) { reuse(t, tc.gone, tc.forgotten) })
	}
}

func reuse(t *testing.T, gone func(n *node, old, peer *pod), forgotten bool) {
	// The first subnet's one address goes to the old pod, then to the new
	// one; the peer gets the second subnet's.
	n := newNode(t, []string{"10.251.0.0/30", "10.251.1.0/30"})
	old, peer := n.newPod("old"), n.newPod("peer")
	n.add(old)
	n.add(peer)
	x := old.addr
	if x != netip.MustParseAddr("10.251.0.2") || peer.addr != netip.MustParseAddr("10.251.1.2") {
		t.Fatalf("addresses: old %v, peer %v; want 10.251.0.2 and 10.251.1.2", x, peer.addr)
	}
	deny := denyAll("new")
	n.program([]*pod{old, peer}, deny)

	// Flow 1: the peer sends to the old pod (peer:4001 -> x:5001), which
	// answers. Flow 2: the old pod sends out (x:5002 -> peer:4002), and
	// the peer answers. Both are then established in conntrack.
	peerIn, peerOut := peer.udp(t, 4001), peer.udp(t, 4002)
	oldIn, oldOut := old.udp(t, 5001), old.udp(t, 5002)
	toX1, toX2 := netip.AddrPortFrom(x, 5001), netip.AddrPortFrom(x, 5002)
	toPeer1, toPeer2 := netip.AddrPortFrom(peer.addr, 4001), netip.AddrPortFrom(peer.addr, 4002)
	eventually(t, 3*time.Second, "both flows established with the old pod", func() bool {
		peerIn.sendTo(toX1, "peer")
		oldIn.sendTo(toPeer1, "old")
		oldOut.sendTo(toPeer2, "old")
		peerOut.sendTo(toX2, "peer")
		time.Sleep(20 * time.Millisecond)
		return oldIn.count("peer") > 0 && peerIn.count("old") > 0 && peerOut.count("old") > 0 && oldOut.count("peer") > 0
	})
	if got := len(entriesNaming(t, n.ns, x)); got < 2 {
		t.Fatalf("conntrack holds %d entries naming %v, want both flows", got, x)
	}

	// The senders keep running across the reuse: the peer on both flows,
	// the old pod out on flow 2 until it is gone.
	stop := make(chan struct{})
	defer close(stop)
	var peerSent, oldSent atomic.Int64
	peerIn.keepSending(toX1, "peer", 5*time.Millisecond, stop, &peerSent)
	peerOut.keepSending(toX2, "peer", 5*time.Millisecond, stop, &peerSent)
	oldOut.keepSending(toPeer2, "old", 5*time.Millisecond, stop, &oldSent)
	time.Sleep(100 * time.Millisecond)

	gone(n, old, peer)
	time.Sleep(200 * time.Millisecond) // the peer's packets keep arriving for x
	if es := entriesNaming(t, n.ns, x); forgotten && len(es) > 0 {
		t.Errorf("after the old pod went, conntrack still holds %d entries naming %v: %v", len(es), x, es)
	}

	// The new pod's sockets exist before its interface does, so they see
	// whatever arrives from the first instant.
	nw := n.newPod("new")
	newIn, newOut := nw.udp(t, 5001), nw.udp(t, 5002)
	addStart := time.Now()
	n.add(nw)
	t.Logf("ADD of the new pod took %v", time.Since(addStart).Round(time.Millisecond))
	if nw.addr != x {
		t.Fatalf("the new pod got %v, want the reused %v", nw.addr, x)
	}
	// The fast path's flow cache holds the egress interface by index; the
	// host end keeps the index it had in the pod's namespace when that is
	// free, so it often is the old pod's. A cached verdict also requires
	// the interface's generation, which the agent derives from its name:
	// the new pod's must differ (docs/fastpath.md).
	t.Logf("host interface index: old pod %d, new pod %d", old.index, nw.index)
	if g := fastpath.Generation(old.iface()); g == fastpath.Generation(nw.iface()) {
		t.Errorf("old pod's %s and new pod's %s share fast-path generation %#x", old.iface(), nw.iface(), g)
	}
	// Pending first (the agent has not programmed the new pod), then
	// programmed, isolated both ways.
	time.Sleep(200 * time.Millisecond)
	n.program([]*pod{peer, nw}, deny)
	before := peerSent.Load()
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		newIn.sendTo(toPeer1, "new")  // on flow 1, as the old pod's answers
		newOut.sendTo(toPeer2, "new") // on flow 2, as the old pod's packets
		time.Sleep(5 * time.Millisecond)
	}
	if got := newIn.total() + newOut.total(); got != 0 {
		t.Errorf("the new pod (default-deny) received %d packets of the old pod's flows (flow 1: %d, flow 2: %d)", got, newIn.total(), newOut.total())
	}
	if got := peerIn.count("new") + peerOut.count("new"); got != 0 {
		t.Errorf("the peer received %d packets the new pod (default-deny egress) sent on the old flows", got)
	}
	// The test saw the traffic it claims: the peer kept sending throughout.
	if sent := peerSent.Load() - before; sent < 100 {
		t.Errorf("the peer sent only %d packets to %v while the new pod listened; the test proves nothing", sent, x)
	}
	if oldSent.Load() == 0 {
		t.Error("the old pod's sender sent nothing before it went")
	}
	t.Logf("peer sent %d packets to %v while the new pod held it; the new pod received %d", peerSent.Load()-before, x, newIn.total()+newOut.total())
}
