//go:build kernel

package kernelroutes

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/trellisnet/trellis/internal/bgp"
	"github.com/trellisnet/trellis/internal/netnstest"
	"github.com/trellisnet/trellis/internal/routing/netlinkprog"
)

// node is a namespace with ul0 holding 10.0.1.11/24 and 2001:db8:1::11/64.
type node struct {
	*netnstest.Node
	tbl *Table
}

func newNode(t *testing.T) *node {
	t.Helper()
	nn := &node{Node: netnstest.NewNode(t, "10.0.1.11/24")}
	nn.tbl = &Table{Handle: nn.Handle}
	ul := nn.link(t, "ul0")
	a, _ := netlink.ParseAddr("2001:db8:1::11/64")
	a.Flags = unix.IFA_F_NODAD
	if err := nn.Handle.AddrAdd(ul, a); err != nil {
		t.Fatalf("IPv6 address: %v", err)
	}
	return nn
}

func (n *node) link(t *testing.T, name string) netlink.Link {
	t.Helper()
	l, err := n.Handle.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// addRoute installs dst via gw on ul0 under proto, as another owner would.
func (n *node) addRoute(t *testing.T, dst, gw string, proto netlink.RouteProtocol) {
	t.Helper()
	_, ipn, err := net.ParseCIDR(dst)
	if err != nil {
		t.Fatal(err)
	}
	r := &netlink.Route{Dst: ipn, Gw: net.ParseIP(gw), LinkIndex: n.link(t, "ul0").Attrs().Index, Protocol: proto}
	if err := n.Handle.RouteAdd(r); err != nil {
		t.Fatalf("add route %s via %s: %v", dst, gw, err)
	}
}

// state is "dst via gw dev" for every protocol-159 route, as `ip route`
// shows them.
func (n *node) state(t *testing.T) string {
	t.Helper()
	var out []string
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := n.Handle.RouteListFiltered(fam, &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			l, err := n.Handle.LinkByIndex(r.LinkIndex)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprintf("%s via %s dev %s", r.Dst, r.Gw, l.Attrs().Name))
		}
	}
	return strings.Join(out, "; ")
}

func (n *node) apply(t *testing.T, want []bgp.KernelRoute, sweep bool) []bgp.KernelRoute {
	t.Helper()
	foreign, err := n.tbl.Apply(want, sweep)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return foreign
}

func expect(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s:\n got  %s\n want %s", what, got, want)
	}
}

// routeWrites counts the changes of protocol-159 routes (RTM_NEWROUTE/
// RTM_DELROUTE notifications) fn makes in n; the kernel's own (IPv6
// addresses finishing DAD) are not counted. A marker route added after fn,
// whose notification ends the count, makes it exact.
func (n *node) routeWrites(t *testing.T, fn func()) int {
	t.Helper()
	ch := make(chan netlink.RouteUpdate, 4096)
	done := make(chan struct{})
	defer close(done)
	nsh := vns.NsHandle(int(n.NS.Fd()))
	if err := netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{Namespace: &nsh}); err != nil {
		t.Fatalf("subscribe to route changes: %v", err)
	}
	fn()
	n.addRoute(t, "192.0.2.222/32", "10.0.1.1", unix.RTPROT_STATIC)
	defer func() {
		_, ipn, _ := net.ParseCIDR("192.0.2.222/32")
		_ = n.Handle.RouteDel(&netlink.Route{Dst: ipn})
	}()
	count := 0
	timeout := time.After(10 * time.Second)
	for {
		select {
		case u := <-ch:
			if u.Dst != nil && u.Dst.String() == "192.0.2.222/32" {
				return count
			}
			if u.Protocol == RouteProtocol {
				count++
			}
		case <-timeout:
			t.Fatalf("no notification of the marker route (after %d changes)", count)
		}
	}
}

func TestKernelApplyAddReplaceSweep(t *testing.T) {
	n := newNode(t)
	n.apply(t, []bgp.KernelRoute{kr("198.18.1.0/24", "10.0.1.1"), kr("198.18.2.0/24", "10.0.1.2")}, false)
	expect(t, "after add", n.state(t), "198.18.1.0/24 via 10.0.1.1 dev ul0; 198.18.2.0/24 via 10.0.1.2 dev ul0")

	// Next hop changed, 198.18.2.0/24 no longer wanted: without sweep it
	// stays (graceful restart keeps stale routes until End-of-RIB).
	want := []bgp.KernelRoute{kr("198.18.1.0/24", "10.0.1.3")}
	n.apply(t, want, false)
	expect(t, "after replace, no sweep", n.state(t), "198.18.1.0/24 via 10.0.1.3 dev ul0; 198.18.2.0/24 via 10.0.1.2 dev ul0")

	n.apply(t, want, true)
	expect(t, "after sweep", n.state(t), "198.18.1.0/24 via 10.0.1.3 dev ul0")

	n.apply(t, nil, true)
	expect(t, "after sweeping everything", n.state(t), "")
}

func TestKernelForeignRouteLeftAlone(t *testing.T) {
	n := newNode(t)
	n.addRoute(t, "198.18.5.0/24", "10.0.1.99", unix.RTPROT_STATIC)
	n.addRoute(t, "10.244.2.0/24", "10.0.1.12", netlinkprog.RouteProtocol) // the routing mode's route to a pod CIDR
	want := []bgp.KernelRoute{kr("198.18.5.0/24", "10.0.1.1"), kr("10.244.2.0/24", "10.0.1.1"), kr("198.18.6.0/24", "10.0.1.1")}
	foreign := n.apply(t, want, true)
	expect(t, "foreign", prefixes(foreign), "10.244.2.0/24 198.18.5.0/24")
	expect(t, "ours", n.state(t), "198.18.6.0/24 via 10.0.1.1 dev ul0")
	for dst, wantRoute := range map[string]string{"198.18.5.0/24": "10.0.1.99 static", "10.244.2.0/24": "10.0.1.12 158"} {
		_, ipn, _ := net.ParseCIDR(dst)
		rs, err := n.Handle.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: ipn}, netlink.RT_FILTER_DST)
		if err != nil || len(rs) != 1 {
			t.Fatalf("routes to %s: %v %v, want exactly the other owner's", dst, rs, err)
		}
		proto := fmt.Sprint(int(rs[0].Protocol))
		if rs[0].Protocol == unix.RTPROT_STATIC {
			proto = "static"
		}
		expect(t, dst, rs[0].Gw.String()+" "+proto, wantRoute)
	}
	// Sweeping with nothing wanted never touches them either.
	n.apply(t, nil, true)
	if out, err := n.Exec("ip", "route", "show", "198.18.5.0/24"); err != nil || !strings.Contains(out, "10.0.1.99") {
		t.Errorf("static route gone after sweep: %q %v", out, err)
	}
}

func TestKernelAdoptionAfterRestartAndIdempotence(t *testing.T) {
	n := newNode(t)
	n.addRoute(t, "10.50.0.0/16", "10.0.1.1", unix.RTPROT_STATIC)
	want := []bgp.KernelRoute{
		kr("198.18.1.0/24", "10.0.1.1"),
		kr("198.18.2.0/24", "10.50.0.7"), // resolved through the static route
		kr("2001:db8:100::/48", "2001:db8:1::1"),
	}
	n.apply(t, want, true)
	before := n.state(t)
	expect(t, "installed", before, "198.18.1.0/24 via 10.0.1.1 dev ul0; 198.18.2.0/24 via 10.0.1.1 dev ul0; 2001:db8:100::/48 via 2001:db8:1::1 dev ul0")

	// A new Table stands for the restarted agent: it finds the routes...
	restarted := &Table{Handle: n.Handle}
	listed, err := restarted.List()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range listed {
		got = append(got, r.Prefix.String()+" "+r.NextHop.String())
	}
	expect(t, "List after restart", strings.Join(got, "; "), "198.18.1.0/24 10.0.1.1; 198.18.2.0/24 10.0.1.1; 2001:db8:100::/48 2001:db8:1::1")

	// ...and applying the same learned routes (swept or not) writes nothing.
	for _, sweep := range []bool{false, true} {
		writes := n.routeWrites(t, func() {
			if _, err := restarted.Apply(want, sweep); err != nil {
				t.Fatalf("Apply after restart: %v", err)
			}
		})
		if writes != 0 {
			t.Errorf("re-Apply (sweep %v) made %d route changes, want 0", sweep, writes)
		}
	}
	expect(t, "after re-apply", n.state(t), before)

	// The counter itself sees a change: one next hop moved = one write.
	want[0].NextHop = addr("10.0.1.2")
	if w := n.routeWrites(t, func() { restarted.Apply(want, true) }); w != 1 {
		t.Errorf("changing one next hop made %d route changes, want 1", w)
	}
}

func TestKernelRecursiveNextHop(t *testing.T) {
	n := newNode(t)
	n.addRoute(t, "10.50.0.0/16", "10.0.1.1", unix.RTPROT_STATIC)
	n.addRoute(t, "2001:db8:50::/48", "2001:db8:1::1", unix.RTPROT_STATIC)
	want := []bgp.KernelRoute{
		kr("198.18.1.0/24", "10.0.1.5"),           // connected
		kr("198.18.2.0/24", "10.50.0.7"),          // through a static route
		kr("198.18.3.0/24", "192.0.2.9"),          // unreachable (no default route yet)
		kr("198.18.4.0/24", "10.0.1.11"),          // this node
		kr("198.18.5.0/24", "198.18.1.77"),        // only through a learned route
		kr("2001:db8:200::/48", "2001:db8:50::7"), // IPv6 through a static route
		kr("2001:db8:300::/48", "2001:db8:1::20"), // IPv6 connected
	}
	_, err := n.tbl.Apply(want, true)
	if !bgp.OnlyKernelRouteErrors(err) {
		t.Errorf("Apply error %v: want per-route failures only", err)
	}
	re := bgp.KernelRouteErrors(err)
	var failed []string
	for _, e := range re {
		failed = append(failed, e.Route.Prefix.String())
	}
	expect(t, "failed routes", strings.Join(failed, " "), "198.18.3.0/24 198.18.4.0/24 198.18.5.0/24")
	if len(re) == 3 {
		// 198.18.5.0/24's next hop is unreachable while 198.18.1.0/24 is
		// not installed yet.
		for i, frag := range []string{"unreachable", "own address", "unreachable"} {
			if !strings.Contains(re[i].Error(), frag) {
				t.Errorf("error %q does not say %q", re[i], frag)
			}
		}
	}
	expect(t, "installed", n.state(t), "198.18.1.0/24 via 10.0.1.5 dev ul0; 198.18.2.0/24 via 10.0.1.1 dev ul0; "+
		"2001:db8:200::/48 via 2001:db8:1::1 dev ul0; 2001:db8:300::/48 via 2001:db8:1::20 dev ul0")

	// A default route makes 192.0.2.9 reachable through its gateway.
	n.addRoute(t, "0.0.0.0/0", "10.0.1.254", unix.RTPROT_STATIC)
	_, err = n.tbl.Apply(want, true)
	if re := bgp.KernelRouteErrors(err); len(re) != 2 || !strings.Contains(re[0].Error(), "own address") ||
		!strings.Contains(re[1].Error(), "only through the learned route 198.18.1.0/24") {
		t.Errorf("errors after adding a default route: %v, want 2 (own address; learned route, not the default route)", err)
	}
	if !strings.Contains(n.state(t), "198.18.3.0/24 via 10.0.1.254 dev ul0") {
		t.Errorf("198.18.3.0/24 not resolved through the default route: %s", n.state(t))
	}

	// The static route's gateway moves: the next Apply follows it.
	_, ipn, _ := net.ParseCIDR("10.50.0.0/16")
	if err := n.Handle.RouteReplace(&netlink.Route{Dst: ipn, Gw: net.ParseIP("10.0.1.2"), LinkIndex: n.link(t, "ul0").Attrs().Index, Protocol: unix.RTPROT_STATIC}); err != nil {
		t.Fatal(err)
	}
	n.tbl.Apply(want, true)
	if !strings.Contains(n.state(t), "198.18.2.0/24 via 10.0.1.2 dev ul0") {
		t.Errorf("198.18.2.0/24 did not follow its resolved gateway: %s", n.state(t))
	}
}

func TestKernelThousandRoutes(t *testing.T) {
	n := newNode(t)
	want := make([]bgp.KernelRoute, 1000)
	for i := range want {
		p := netip.AddrFrom4([4]byte{100, 64 + byte(i/256), byte(i % 256), 0})
		want[i] = bgp.KernelRoute{Prefix: netip.PrefixFrom(p, 24), NextHop: addr("10.0.1." + fmt.Sprint(1+i%3))}
	}
	start := time.Now()
	n.apply(t, want, true)
	first := time.Since(start)
	start = time.Now()
	n.apply(t, want, true)
	again := time.Since(start)
	listed, err := n.tbl.List()
	if err != nil || len(listed) != 1000 {
		t.Fatalf("List: %d routes (%v), want 1000", len(listed), err)
	}
	start = time.Now()
	n.apply(t, nil, true)
	sweep := time.Since(start)
	if listed, _ := n.tbl.List(); len(listed) != 0 {
		t.Errorf("%d routes after sweeping all, want 0", len(listed))
	}
	t.Logf("1,000 routes: install %v, unchanged re-apply %v, sweep %v", first, again, sweep)
}

func TestKernelIPv6Route(t *testing.T) {
	n := newNode(t)
	want := []bgp.KernelRoute{kr("2001:db8:100::/48", "2001:db8:1::1"), kr("2001:db8:101::/48", "2001:db8:1::2")}
	n.apply(t, want, true)
	out, err := n.Exec("ip", "-6", "route", "show", "proto", "159")
	if err != nil {
		t.Fatalf("ip -6 route: %v %s", err, out)
	}
	for _, line := range []string{"2001:db8:100::/48 via 2001:db8:1::1 dev ul0", "2001:db8:101::/48 via 2001:db8:1::2 dev ul0"} {
		if !strings.Contains(out, line) {
			t.Errorf("ip -6 route show proto 159 lacks %q:\n%s", line, out)
		}
	}
	if w := n.routeWrites(t, func() { n.apply(t, want, true) }); w != 0 {
		t.Errorf("IPv6 re-apply made %d route changes, want 0", w)
	}
	n.apply(t, want[:1], true)
	expect(t, "after sweep", n.state(t), "2001:db8:100::/48 via 2001:db8:1::1 dev ul0")
}
