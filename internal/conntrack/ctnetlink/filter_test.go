package ctnetlink

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
)

func flow(osrc, odst, rsrc, rdst string) *netlink.ConntrackFlow {
	f := &netlink.ConntrackFlow{}
	f.Forward.SrcIP, f.Forward.DstIP = net.ParseIP(osrc), net.ParseIP(odst)
	f.Reverse.SrcIP, f.Reverse.DstIP = net.ParseIP(rsrc), net.ParseIP(rdst)
	return f
}

func TestAddrFilterMatchesEitherDirectionAndEnd(t *testing.T) {
	f := addrFilter{netip.MustParseAddr("10.244.1.2"): {}}
	for _, tc := range []struct {
		name string
		flow *netlink.ConntrackFlow
		want bool
	}{
		{"original source (the pod sends)", flow("10.244.1.2", "10.0.0.9", "10.0.0.9", "10.244.1.2"), true},
		{"original destination (a peer sends to it)", flow("10.0.0.9", "10.244.1.2", "10.244.1.2", "10.0.0.9"), true},
		{"reply source (a Service DNATed to it)", flow("10.0.0.9", "10.96.0.10", "10.244.1.2", "10.0.0.9"), true},
		{"reply destination (source NAT to it)", flow("10.0.0.9", "10.0.0.8", "10.0.0.8", "10.244.1.2"), true},
		{"another pod", flow("10.244.1.3", "10.0.0.9", "10.0.0.9", "10.244.1.3"), false},
		{"empty entry", &netlink.ConntrackFlow{}, false},
	} {
		if got := f.MatchConntrackFlow(tc.flow); got != tc.want {
			t.Errorf("%s: match = %v, want %v", tc.name, got, tc.want)
		}
	}
}
