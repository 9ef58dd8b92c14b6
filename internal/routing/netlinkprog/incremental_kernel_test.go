//go:build kernel

package netlinkprog

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/routing"
)

var peerOther2 = routing.Peer{Name: "node4", NodeIP: netip.MustParseAddr("10.0.2.14"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.4.0/24")}}

func (n *testNode) applyChanges(t *testing.T, d *routing.Desired) Ops {
	t.Helper()
	before := n.dp.Ops()
	if err := n.dp.ApplyChanges(context.Background(), d); err != nil {
		t.Fatalf("ApplyChanges: %v", err)
	}
	return n.dp.Ops().Sub(before)
}

// After a full Apply, ApplyChanges writes exactly the added or removed
// peers' entries and lists nothing; the kernel ends as a full Apply leaves it.
func TestKernelApplyChangesWritesOnlyTheDifference(t *testing.T) {
	n := newTestNode(t)
	n.apply(t, n.desired(t, config.ModeAuto, peerSame, peerOther))

	if ops := n.applyChanges(t, n.desired(t, config.ModeAuto, peerSame, peerOther)); ops != (Ops{}) {
		t.Errorf("nothing changed: %+v operations, want none", ops)
	}
	// A VXLAN peer joins: its FDB entry, neighbour and route.
	if ops := n.applyChanges(t, n.desired(t, config.ModeAuto, peerSame, peerOther, peerOther2)); ops != (Ops{Writes: 3}) {
		t.Errorf("VXLAN peer added: %+v operations, want exactly 3 writes", ops)
	}
	mac3, mac4 := routing.VTEPMAC("node3"), routing.VTEPMAC("node4")
	eq(t, "routes", n.routes(t), map[string]string{
		"10.244.1.0/24": "unreachable",
		"10.244.2.0/24": "10.0.1.12 ul0",
		"10.244.3.0/24": "10.244.3.0 trellis.vxlan onlink",
		"10.244.4.0/24": "10.244.4.0 trellis.vxlan onlink",
	})
	eq(t, "fdb", n.fdb(t), map[string]string{mac3: "10.0.2.13", mac4: "10.0.2.14"})
	eq(t, "neighbours", n.neighbors(t), map[string]string{"10.244.3.0": mac3, "10.244.4.0": mac4})

	// The native peer and a VXLAN peer leave.
	if ops := n.applyChanges(t, n.desired(t, config.ModeAuto, peerOther2)); ops != (Ops{Deletes: 4}) {
		t.Errorf("two peers removed: %+v operations, want exactly 4 deletes", ops)
	}
	eq(t, "routes after removal", n.routes(t), map[string]string{
		"10.244.1.0/24": "unreachable",
		"10.244.4.0/24": "10.244.4.0 trellis.vxlan onlink",
	})
	eq(t, "fdb after removal", n.fdb(t), map[string]string{mac4: "10.0.2.14"})
	eq(t, "neighbours after removal", n.neighbors(t), map[string]string{"10.244.4.0": mac4})
}

// Without a record (no Apply yet) ApplyChanges lists and applies in full.
func TestKernelApplyChangesFirstIsFull(t *testing.T) {
	n := newTestNode(t)
	ops := n.applyChanges(t, n.desired(t, config.ModeAuto, peerSame, peerOther))
	if ops.Dumps != 3 || ops.Writes != 5 {
		t.Errorf("first ApplyChanges: %+v operations, want the full apply's 3 dumps and 5 writes", ops)
	}
	if len(n.routes(t)) != 3 {
		t.Errorf("routes %v, want 3", n.routes(t))
	}
}

// A route another owner installed after the last full Apply, at the
// destination of a peer that joins, is never replaced: ApplyChanges falls
// back to a full apply, which reports it.
func TestKernelApplyChangesNeverReplacesForeignRoute(t *testing.T) {
	n := newTestNode(t)
	n.apply(t, n.desired(t, config.ModeAuto, peerSame))
	ul := n.link(t, "ul0")
	_, dst, _ := net.ParseCIDR("10.244.3.0/24")
	if err := n.h.RouteAdd(&netlink.Route{Dst: dst, Gw: net.ParseIP("10.0.1.99"), LinkIndex: ul.Attrs().Index, Protocol: unix.RTPROT_STATIC}); err != nil {
		t.Fatal(err)
	}
	d := n.desired(t, config.ModeAuto, peerSame, peerOther)
	err := n.dp.ApplyChanges(context.Background(), d)
	var foreign *routing.ForeignRouteError
	if !errors.As(err, &foreign) || len(foreign.Routes) != 1 || foreign.Routes[0].Node != "node3" {
		t.Fatalf("ApplyChanges = %v, want a ForeignRouteError for node3's route", err)
	}
	rs, err := n.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: dst}, netlink.RT_FILTER_DST)
	if err != nil || len(rs) != 1 || rs[0].Protocol != unix.RTPROT_STATIC || !rs[0].Gw.Equal(net.ParseIP("10.0.1.99")) {
		t.Fatalf("routes at %s: %v (%v); want only the foreign one, untouched", dst, rs, err)
	}
	// Still blocked on the next change, without listing again.
	err = n.dp.ApplyChanges(context.Background(), d)
	if !errors.As(err, &foreign) || len(foreign.Routes) != 1 {
		t.Fatalf("second ApplyChanges = %v, want the ForeignRouteError again", err)
	}
}

// A VXLAN device deleted behind the agent's back makes ApplyChanges fall
// back to a full apply, which recreates it with its entries.
func TestKernelApplyChangesRepairsDeletedDevice(t *testing.T) {
	n := newTestNode(t)
	d := n.desired(t, config.ModeAuto, peerSame, peerOther)
	n.apply(t, d)
	if err := n.h.LinkDel(n.link(t, "trellis.vxlan")); err != nil {
		t.Fatal(err)
	}
	if ops := n.applyChanges(t, d); ops.Dumps != 3 {
		t.Errorf("ApplyChanges after the device vanished: %+v operations, want a full apply (3 dumps)", ops)
	}
	mac3 := routing.VTEPMAC("node3")
	eq(t, "routes", n.routes(t), map[string]string{
		"10.244.1.0/24": "unreachable",
		"10.244.2.0/24": "10.0.1.12 ul0",
		"10.244.3.0/24": "10.244.3.0 trellis.vxlan onlink",
	})
	eq(t, "fdb", n.fdb(t), map[string]string{mac3: "10.0.2.13"})
}

// ApplyChanges deletes routes of every kind it adds: through a gateway,
// straight into a device (link scope, as into the WireGuard device) and
// unreachable.
func TestKernelApplyChangesDeletesEveryKindOfRoute(t *testing.T) {
	n := newTestNode(t)
	base := n.desired(t, config.ModeAuto, peerSame)
	with := *base
	with.Routes = append(append([]routing.Route(nil), base.Routes...),
		routing.Route{Dst: netip.MustParsePrefix("10.244.8.0/24"), Unreachable: true, Node: "node8"},
		routing.Route{Dst: netip.MustParsePrefix("10.244.9.0/24"), Dev: "ul0", Path: routing.PathWireGuard, Node: "node9"})
	n.apply(t, &with)
	if got := n.routes(t); got["10.244.8.0/24"] != "unreachable" || got["10.244.9.0/24"] != "<nil> ul0" {
		t.Fatalf("routes %v, want the extra unreachable and link-scope routes", got)
	}
	if ops := n.applyChanges(t, base); ops != (Ops{Deletes: 2}) {
		t.Errorf("two routes removed: %+v operations, want exactly 2 deletes", ops)
	}
	eq(t, "routes", n.routes(t), map[string]string{"10.244.1.0/24": "unreachable", "10.244.2.0/24": "10.0.1.12 ul0"})
}
