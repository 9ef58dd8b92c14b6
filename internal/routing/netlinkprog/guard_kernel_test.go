//go:build kernel

package netlinkprog

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/netnstest"
	"github.com/trellisnet/trellis/internal/routing"
)

// A route another owner holds at a desired destination is never replaced
// nor deleted: Apply programs everything else and reports it.
func TestKernelApplyNeverReplacesForeignRoute(t *testing.T) {
	n := newTestNode(t)
	ul := n.link(t, "ul0")
	_, dst, _ := net.ParseCIDR(peerSame.PodCIDRs[0].String())
	foreign := &netlink.Route{Dst: dst, Gw: net.ParseIP("10.0.1.99"), LinkIndex: ul.Attrs().Index, Protocol: unix.RTPROT_STATIC}
	if err := n.h.RouteAdd(foreign); err != nil {
		t.Fatalf("add foreign route: %v", err)
	}
	d := n.desired(t, config.ModeAuto, peerSame, peerOther)
	for i := 0; i < 2; i++ {
		err := n.dp.Apply(context.Background(), d)
		var fe *routing.ForeignRouteError
		if !errors.As(err, &fe) || len(fe.Routes) != 1 || fe.Routes[0].Dst != peerSame.PodCIDRs[0] || fe.Routes[0].Node != "node2" {
			t.Fatalf("Apply %d: err %v; want a ForeignRouteError for %s (node2) only", i, err, peerSame.PodCIDRs[0])
		}
	}
	rs, err := n.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: dst}, netlink.RT_FILTER_DST)
	if err != nil || len(rs) != 1 || rs[0].Protocol != unix.RTPROT_STATIC || !rs[0].Gw.Equal(net.ParseIP("10.0.1.99")) {
		t.Errorf("routes to %s: %v (%v); want only the foreign static route via 10.0.1.99", dst, rs, err)
	}
	// Everything else is programmed.
	eq(t, "trellis routes", n.routes(t), map[string]string{
		"10.244.1.0/24": "unreachable",
		"10.244.3.0/24": "10.244.3.0 trellis.vxlan onlink",
	})
	// Once the foreign route goes, the next Apply programs Trellis's.
	if err := n.h.RouteDel(&rs[0]); err != nil {
		t.Fatal(err)
	}
	n.apply(t, d)
	if got := n.routes(t)["10.244.2.0/24"]; got != "10.0.1.12 ul0" {
		t.Errorf("route to 10.244.2.0/24 after the foreign one went: %q", got)
	}
}

// A packet to an address of the node's own pod CIDR that no pod holds does
// not leave by the default route: the own pod CIDR is unreachable, pod
// addresses (more specific) still work, and the route is Trellis's.
func TestKernelUnassignedOwnPodAddressDoesNotLeave(t *testing.T) {
	a, b := netnstest.NewLinkedNodes(t, "10.0.1.11/24", "10.0.1.12/24")
	// a's default route points at b; b holds the address a will probe, so
	// a packet that leaves a by the default route is received there.
	if out, err := a.Exec("ip", "route", "add", "default", "via", "10.0.1.12"); err != nil {
		t.Fatalf("default route: %v %s", err, out)
	}
	b.Configure(t, "lo", "10.244.1.77/32")
	a.Configure(t, "lo", "10.244.1.5/32") // a "pod" address on a
	dp := &Programmer{Handle: a.Handle, NetnsPath: a.NS.Path()}
	tn := &testNode{h: a.Handle, dp: dp}
	tn.apply(t, tn.desired(t, config.ModeAuto, peerSame))

	rs, err := a.Handle.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	found := false
	for _, r := range rs {
		if r.Dst != nil && r.Dst.String() == "10.244.1.0/24" && r.Type == unix.RTN_UNREACHABLE {
			found = true
		}
	}
	if err != nil || !found {
		t.Errorf("no unreachable route for the own pod CIDR with protocol %d: %v %v", RouteProtocol, rs, err)
	}
	if out, err := a.Exec("ip", "route", "get", "10.244.1.77"); err == nil || !strings.Contains(out, "No route to host") {
		t.Errorf("ip route get 10.244.1.77 on a: %v %q; want No route to host", err, out)
	}
	if out, err := a.Exec("ip", "route", "get", "10.244.1.5"); err != nil || !strings.HasPrefix(out, "local 10.244.1.5") {
		t.Errorf("ip route get 10.244.1.5 (a pod address) on a: %v %q; want local", err, out)
	}

	rx := netnstest.DFUDP(t, b.NS.Path(), "10.244.1.77:7777")
	tx := netnstest.DFUDP(t, a.NS.Path(), "10.0.1.11:0")
	_, sendErr := tx.WriteToUDP([]byte("probe"), &net.UDPAddr{IP: net.ParseIP("10.244.1.77"), Port: 7777})
	_ = rx.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	buf := make([]byte, 64)
	if n, from, err := rx.ReadFromUDP(buf); err == nil {
		t.Errorf("a packet to unassigned 10.244.1.77 left a by the default route: %q from %s", buf[:n], from)
	}
	if !errors.Is(sendErr, unix.EHOSTUNREACH) {
		t.Errorf("send to unassigned 10.244.1.77: %v; want EHOSTUNREACH", sendErr)
	}
}
