//go:build kernel

package netlinkprog_test

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/routing/netlinkprog"
)

// The routing controller at 1,000 peers (500 native, 500 VXLAN) in a node
// namespace, driven by informers: the cold sync programs every peer; then
// a sync with nothing changed issues no netlink operation at all, and one
// Node added or deleted costs exactly its own entries, no listing of the
// kernel (operations counted, not timed: the figure does not flake on a
// loaded machine). make bench-routing-scale times the same at 5,000.
func TestKernelRoutingControllerAtScaleTouchesOnlyTheChangedNode(t *testing.T) {
	const peers = 1000
	h := newScaleHarness(t, peers, 10*time.Millisecond)
	h.start()
	h.syncs.waitFor(t, 1, time.Minute)
	h.syncs.settle(200 * time.Millisecond)
	if _, errs := h.syncs.since(0); errs[0] != nil {
		t.Fatalf("cold sync: %v", errs[0])
	}
	r, f, n := h.kernelCounts()
	if wr, wf, wn := wantCounts(peers); r != wr || f != wf || n != wn {
		t.Fatalf("after the cold sync: %d routes, %d FDB, %d neighbours; want %d, %d, %d", r, f, n, wr, wf, wn)
	}
	w := h.watchKernel()

	// step runs one change through the informer and the controller and
	// returns the netlink operations its sync issued.
	step := func(what string, change func()) netlinkprog.Ops {
		t.Helper()
		count, before := h.syncs.len(), h.dp.Ops()
		change()
		h.syncs.waitFor(t, count+1, 30*time.Second)
		h.syncs.settle(100 * time.Millisecond)
		_, errs := h.syncs.since(count)
		for _, err := range errs {
			if err != nil {
				t.Fatalf("%s: sync failed: %v", what, err)
			}
		}
		return h.dp.Ops().Sub(before)
	}
	if ops := step("no change", h.ctl.Trigger); ops != (netlinkprog.Ops{}) {
		t.Errorf("sync with nothing changed: %+v netlink operations, want none", ops)
	}
	vx, native := peers+2, peers+1 // even: VXLAN, odd: native
	if ops := step("VXLAN node added", func() { h.addNode(vx) }); ops != (netlinkprog.Ops{Writes: 3}) {
		t.Errorf("one VXLAN Node added: %+v netlink operations, want exactly 3 writes (FDB, neighbour, route)", ops)
	}
	w.waitSeen(t, scaleEntriesOf(vx), 10*time.Second)
	if ops := step("native node added", func() { h.addNode(native) }); ops != (netlinkprog.Ops{Writes: 1}) {
		t.Errorf("one native Node added: %+v netlink operations, want exactly 1 write (route)", ops)
	}
	w.waitSeen(t, scaleEntriesOf(native), 10*time.Second)
	del := func() {
		if err := h.client.CoreV1().Nodes().Delete(context.Background(), scaleNode(2).Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if ops := step("VXLAN node deleted", del); ops != (netlinkprog.Ops{Deletes: 3}) {
		t.Errorf("one VXLAN Node deleted: %+v netlink operations, want exactly 3 deletes", ops)
	}
	r, f, n = h.kernelCounts()
	if wr, wf, wn := wantCounts(peers); r != wr+1 || f != wf || n != wn {
		t.Errorf("after +2 −1 nodes: %d routes, %d FDB, %d neighbours; want %d, %d, %d", r, f, n, wr+1, wf, wn)
	}
}
