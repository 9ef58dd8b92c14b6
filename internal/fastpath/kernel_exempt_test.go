//go:build kernel

package fastpath

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/trellisnet/trellis/internal/nodesetup"
)

// reconfigure replaces n's controller by one built with extra settings and
// syncs it.
func (n *testNode) reconfigure(t *testing.T, exempt uint32, off func() bool) {
	t.Helper()
	var err error
	n.ctl, err = New(Config{Kernel: &Kernel{Handle: n.h}, Programs: n.progs, Sysctls: nodesetup.NetnsSysctls{NS: n.ns},
		Uplinks: func() []string { return []string{"ul0"} }, ExemptCTMark: exempt, Off: off})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.ctl.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Connections the operator marks in conntrack (here: every forwarded
// connection of the family on node a; IPv6 through an inet table that marks
// IPv6 only) stay on the full path on the node that exempts the mark, so
// its netfilter rules see every packet; node b, whose conntrack holds no
// mark, still fast-paths the same connection (the control).
func TestKernelFastPathExemptsMarkedConnections(t *testing.T) { exemptsMarkedConnections(t, ipv4) }
func TestKernelFastPathIPv6ExemptsMarkedConnections(t *testing.T) {
	exemptsMarkedConnections(t, ipv6)
}

func exemptsMarkedConnections(t *testing.T, f family) {
	a, b := f.topology(t)
	table, match := "ip", ""
	if f.v6 {
		table, match = "inet", "meta nfproto ipv6 "
	}
	run(t, "ip", "netns", "exec", a.nsName, "nft", "add table "+table+" operator; "+
		"add chain "+table+" operator marks { type filter hook forward priority 0; policy accept; }; "+
		"add rule "+table+" operator marks "+match+"ct mark set ct mark or 0x100")
	a.reconfigure(t, 0x300, nil)
	b.serve(t, 8080)
	dst := hostPort(f.pod(b), 8080)
	a0, b0 := f.stats(t, a), f.stats(t, b)
	a.send(t, dst, 8<<20)
	a1, b1 := f.stats(t, a), f.stats(t, b)
	t.Logf("node a, %s: %v", f.name, a1)
	t.Logf("node b, %s: %v", f.name, b1)
	if n := delta(a1, a0, StatFromPodRedirect) + delta(a1, a0, StatToPodRedirect); n != 0 {
		t.Errorf("node a redirected %d %s packets of a connection whose conntrack mark it exempts", n, f.name)
	}
	if delta(a1, a0, StatPassMark) == 0 {
		t.Errorf("node a counted no %s packet as passed for its mark", f.name)
	}
	if delta(b1, b0, StatToPodRedirect) == 0 || delta(b1, b0, StatFromPodRedirect) == 0 {
		t.Errorf("node b (no mark in its conntrack) took no %s packet of the connection on the fast path: the control failed", f.name)
	}
	if f.v6 {
		// The rule marks IPv6 only: an IPv4 connection on the same node keeps the fast path.
		a4 := a.stats(t)
		a.send(t, hostPort(b.podIP, 8080), 4<<20)
		if a5 := a.stats(t); delta(a5, a4, StatFromPodRedirect) == 0 {
			t.Errorf("node a: an unmarked IPv4 connection was not fast-pathed: %v", a5)
		}
	}
	// The mask matters: a mark outside it is not exempt.
	a.reconfigure(t, 0x200, nil)
	a0 = f.stats(t, a)
	a.send(t, dst, 8<<20)
	if a1 = f.stats(t, a); delta(a1, a0, StatFromPodRedirect) == 0 || delta(a1, a0, StatPassMark) != 0 {
		t.Errorf("%s mark 0x100 outside the exempt mask 0x200: node a %v", f.name, a1)
	}
}

// The per-node off switch detaches the programs from every interface of
// that node only, and a sync after it is lifted attaches them again.
func TestKernelFastPathOffPerNode(t *testing.T) {
	a, b := topology(t)
	var off atomic.Bool
	off.Store(true)
	a.reconfigure(t, 0, off.Load)
	links, err := a.ctl.k.Links()
	if err != nil {
		t.Fatal(err)
	}
	if att, err := a.ctl.k.Attached(links); err != nil || len(att) != 0 {
		t.Fatalf("node a turned off: programs still attached to %v (%v)", att, err)
	}
	b.serve(t, 8080)
	a0, b0 := a.stats(t), b.stats(t)
	a.send(t, b.podIP.String()+":8080", 8<<20)
	a1, b1 := a.stats(t), b.stats(t)
	var moved uint64
	for s := Stat(0); s < numStats; s++ {
		moved += delta(a1, a0, s)
	}
	if moved != 0 {
		t.Errorf("node a turned off: its programs still saw %d packets: %v", moved, a1)
	}
	if delta(b1, b0, StatToPodRedirect) == 0 {
		t.Error("node b (fast path on) redirected nothing: the control failed")
	}
	off.Store(false)
	if err := a.ctl.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if att, err := a.ctl.k.Attached(links); err != nil || len(att) != 2 {
		t.Fatalf("node a turned on again: attached %v (%v), want the pod interface and ul0", att, err)
	}
	a0 = a.stats(t)
	a.send(t, b.podIP.String()+":8080", 8<<20)
	if a1 = a.stats(t); delta(a1, a0, StatFromPodRedirect) == 0 {
		t.Errorf("node a turned on again: nothing redirected: %v", a1)
	}
}
