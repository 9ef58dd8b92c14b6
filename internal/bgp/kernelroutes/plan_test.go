package kernelroutes

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/trellisnet/trellis/internal/bgp"
	"github.com/trellisnet/trellis/internal/routing/netlinkprog"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

func kr(p, nh string) bgp.KernelRoute { return bgp.KernelRoute{Prefix: pfx(p), NextHop: addr(nh)} }

// dumped is a route as a main-table dump returns it.
func dumped(dst, gw string, link int, proto netlink.RouteProtocol) netlink.Route {
	_, ipn, _ := net.ParseCIDR(dst)
	r := netlink.Route{Dst: ipn, LinkIndex: link, Protocol: proto, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST}
	if gw != "" {
		r.Gw = net.ParseIP(gw)
	}
	if ipn.IP.To4() == nil {
		r.Family = netlink.FAMILY_V6
		r.Priority = 1024
	} else {
		r.Family = netlink.FAMILY_V4
	}
	return r
}

func ok(p, nh string, link int) target {
	return target{route: kr(p, nh), gw: addr(nh), link: link}
}

func dsts(rs []netlink.Route) string {
	var s []string
	for _, r := range rs {
		s = append(s, r.Dst.String())
	}
	return strings.Join(s, " ")
}

func writes(ws []write) string {
	var s []string
	for _, w := range ws {
		s = append(s, w.nl.Dst.String()+">"+w.nl.Gw.String())
	}
	return strings.Join(s, " ")
}

func prefixes(rs []bgp.KernelRoute) string {
	var s []string
	for _, r := range rs {
		s = append(s, r.Prefix.String())
	}
	return strings.Join(s, " ")
}

func TestRouteProtocolIsNotTheRoutingControllers(t *testing.T) {
	if RouteProtocol != 159 || netlinkprog.RouteProtocol != 158 {
		t.Fatalf("protocols: bgp %d, static %d; want 159 and 158", RouteProtocol, netlinkprog.RouteProtocol)
	}
}

func TestPlanAddsReplacesAndKeepsUnchanged(t *testing.T) {
	table := []netlink.Route{
		dumped("10.0.1.0/24", "", 2, unix.RTPROT_KERNEL),
		dumped("198.18.1.0/24", "10.0.1.1", 2, RouteProtocol), // unchanged
		dumped("198.18.2.0/24", "10.0.1.9", 2, RouteProtocol), // next hop changed
		dumped("2001:db8:1::/64", "2001:db8::1", 2, RouteProtocol),
	}
	targets := []target{
		ok("198.18.1.0/24", "10.0.1.1", 2),
		ok("198.18.2.0/24", "10.0.1.1", 2),
		ok("198.18.3.0/24", "10.0.1.1", 2),
		ok("2001:db8:1::/64", "2001:db8::1", 2), // IPv6 default metric 1024: unchanged
	}
	p := plan(targets, table, true)
	if got, want := writes(p.write), "198.18.2.0/24>10.0.1.1 198.18.3.0/24>10.0.1.1"; got != want {
		t.Errorf("writes %q, want %q", got, want)
	}
	if len(p.del) != 0 || len(p.foreign) != 0 || len(p.errs) != 0 {
		t.Errorf("del %v foreign %v errs %v, want none", p.del, p.foreign, p.errs)
	}
	w := p.write[0].nl
	if w.Protocol != RouteProtocol || w.Table != unix.RT_TABLE_MAIN || w.Type != unix.RTN_UNICAST || w.LinkIndex != 2 {
		t.Errorf("written route %+v: want protocol 159, main table, unicast, link 2", w)
	}
}

func TestPlanSweepsOnlyOwnRoutesAndOnlyWhenAsked(t *testing.T) {
	table := []netlink.Route{
		dumped("198.18.1.0/24", "10.0.1.1", 2, RouteProtocol),
		dumped("198.18.9.0/24", "10.0.1.1", 2, RouteProtocol),      // stale
		dumped("2001:db8:9::/64", "2001:db8::1", 2, RouteProtocol), // stale
		dumped("198.18.8.0/24", "10.0.1.1", 2, netlinkprog.RouteProtocol),
		dumped("198.18.7.0/24", "10.0.1.1", 2, unix.RTPROT_STATIC),
	}
	targets := []target{ok("198.18.1.0/24", "10.0.1.1", 2)}
	if p := plan(targets, table, false); len(p.del) != 0 || len(p.write) != 0 {
		t.Errorf("without sweep: del %q write %q, want nothing", dsts(p.del), writes(p.write))
	}
	p := plan(targets, table, true)
	if got, want := dsts(p.del), "198.18.9.0/24 2001:db8:9::/64"; got != want {
		t.Errorf("sweep deletes %q, want %q", got, want)
	}
}

func TestPlanNeverWritesAtAnotherOwnersDestination(t *testing.T) {
	table := []netlink.Route{
		dumped("10.244.2.0/24", "10.0.1.12", 2, netlinkprog.RouteProtocol), // routing mode's route
		dumped("10.0.1.0/24", "", 2, unix.RTPROT_KERNEL),                   // connected
	}
	targets := []target{
		ok("10.244.2.0/24", "10.0.1.1", 2),
		ok("10.0.1.0/24", "10.0.1.1", 2),
		ok("198.18.1.0/24", "10.0.1.1", 2),
	}
	p := plan(targets, table, true)
	if got, want := prefixes(p.foreign), "10.0.1.0/24 10.244.2.0/24"; got != want {
		t.Errorf("foreign %q, want %q", got, want)
	}
	if got, want := writes(p.write), "198.18.1.0/24>10.0.1.1"; got != want {
		t.Errorf("writes %q, want %q", got, want)
	}
	if len(p.del) != 0 {
		t.Errorf("deletes %q, want none", dsts(p.del))
	}
}

func TestPlanFailedTargetKeepsInstalledRouteEvenOnSweep(t *testing.T) {
	table := []netlink.Route{dumped("198.18.1.0/24", "10.0.1.1", 2, RouteProtocol)}
	bad := target{route: kr("198.18.1.0/24", "192.0.2.1"), err: errors.New("next hop unreachable")}
	p := plan([]target{bad, ok("198.18.2.0/24", "10.0.1.1", 2)}, table, true)
	if len(p.del) != 0 {
		t.Errorf("deleted %q, want the failed prefix's route kept", dsts(p.del))
	}
	if got := writes(p.write); got != "198.18.2.0/24>10.0.1.1" {
		t.Errorf("writes %q: the other route must still be applied", got)
	}
	re := bgp.KernelRouteErrors(errors.Join(p.errs...))
	if len(re) != 1 || re[0].Route.Prefix != pfx("198.18.1.0/24") {
		t.Errorf("errors %v, want one for 198.18.1.0/24", p.errs)
	}
}

func TestPlanDeletesOwnDuplicateWithAnotherMetric(t *testing.T) {
	odd := dumped("198.18.1.0/24", "10.0.1.1", 2, RouteProtocol)
	odd.Priority = 50
	table := []netlink.Route{odd}
	p := plan([]target{ok("198.18.1.0/24", "10.0.1.1", 2)}, table, false)
	if writes(p.write) != "198.18.1.0/24>10.0.1.1" || dsts(p.del) != "198.18.1.0/24" || p.del[0].Priority != 50 {
		t.Errorf("write %q del %v; want the default-metric route written and the metric-50 one deleted", writes(p.write), p.del)
	}
}

func TestPlanRewritesOwnRouteOfAnotherShape(t *testing.T) {
	onlink := dumped("198.18.1.0/24", "10.0.1.1", 2, RouteProtocol)
	onlink.Flags = int(netlink.FLAG_ONLINK)
	unreach := dumped("198.18.2.0/24", "", 0, RouteProtocol)
	unreach.Type = unix.RTN_UNREACHABLE
	otherDev := dumped("198.18.3.0/24", "10.0.1.1", 3, RouteProtocol)
	p := plan([]target{ok("198.18.1.0/24", "10.0.1.1", 2), ok("198.18.2.0/24", "10.0.1.1", 2), ok("198.18.3.0/24", "10.0.1.1", 2)},
		[]netlink.Route{onlink, unreach, otherDev}, false)
	if got := len(p.write); got != 3 {
		t.Errorf("%d writes (%q), want 3", got, writes(p.write))
	}
}

func TestNormalize(t *testing.T) {
	want := []bgp.KernelRoute{
		kr("198.18.1.7/24", "10.0.1.1"), // masked
		kr("198.18.1.0/24", "10.0.1.2"), // duplicate after masking
		{Prefix: pfx("198.18.2.0/24")},  // no next hop
		kr("198.18.3.0/24", "2001:db8::1"),
		kr("198.18.4.0/24", "224.0.0.5"),
		kr("2001:db8:5::/64", "fe80::1"),
		{NextHop: addr("10.0.1.1")}, // no prefix
		kr("2001:db8:6::/64", "2001:db8::1"),
	}
	ts, errs := normalize(want)
	var got []string
	for _, t := range ts {
		s := t.route.Prefix.String()
		if t.err != nil {
			s += "!"
		}
		got = append(got, s)
	}
	if g, w := strings.Join(got, " "), "198.18.1.0/24 198.18.2.0/24! 198.18.3.0/24! 198.18.4.0/24! 2001:db8:5::/64! 2001:db8:6::/64"; g != w {
		t.Errorf("targets %q, want %q", g, w)
	}
	if len(errs) != 2 || len(bgp.KernelRouteErrors(errors.Join(errs...))) != 2 {
		t.Errorf("errors %v, want the duplicate and the missing prefix", errs)
	}
}
