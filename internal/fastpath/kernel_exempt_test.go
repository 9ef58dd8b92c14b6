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
// connection on node a) stay on the full path on the node that exempts the
// mark, so its netfilter rules see every packet; node b, whose conntrack
// holds no mark, still fast-paths the same connection (the control).
func TestKernelFastPathExemptsMarkedConnections(t *testing.T) {
	a, b := topology(t)
	run(t, "ip", "netns", "exec", a.nsName, "nft", "add table ip operator; "+
		"add chain ip operator marks { type filter hook forward priority 0; policy accept; }; "+
		"add rule ip operator marks ct mark set ct mark or 0x100")
	a.reconfigure(t, 0x300, nil)
	b.serve(t, 8080)
	a0, b0 := a.stats(t), b.stats(t)
	a.send(t, b.podIP.String()+":8080", 8<<20)
	a1, b1 := a.stats(t), b.stats(t)
	t.Logf("node a: %v", a1)
	t.Logf("node b: %v", b1)
	if n := delta(a1, a0, StatFromPodRedirect) + delta(a1, a0, StatToPodRedirect); n != 0 {
		t.Errorf("node a redirected %d packets of a connection whose conntrack mark it exempts", n)
	}
	if delta(a1, a0, StatPassMark) == 0 {
		t.Error("node a counted no packet as passed for its mark")
	}
	if delta(b1, b0, StatToPodRedirect) == 0 || delta(b1, b0, StatFromPodRedirect) == 0 {
		t.Error("node b (no mark in its conntrack) took no packet of the connection on the fast path: the control failed")
	}
	// The mask matters: a mark outside it is not exempt.
	a.reconfigure(t, 0x200, nil)
	a0 = a.stats(t)
	a.send(t, b.podIP.String()+":8080", 8<<20)
	if a1 = a.stats(t); delta(a1, a0, StatFromPodRedirect) == 0 || delta(a1, a0, StatPassMark) != 0 {
		t.Errorf("mark 0x100 outside the exempt mask 0x200: node a %v", a1)
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
