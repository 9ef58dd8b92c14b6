//go:build kernel

package conntrack_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/trellisnet/trellis/internal/podlink"
)

// Dual-stack pods: deleting a pod with an address of each family deletes
// the entries of both; an IPv6 address whose host route moves to another
// interface loses its entries (in either direction, through NAT); another
// pod's IPv6 and IPv4 entries stay.
func TestKernelControllerForgetsBothFamiliesOfAPod(t *testing.T) {
	node, nsh, h := handleNode(t, "trl-ct6-")
	index := podIfaces(t, h, "trlc6a", "trlc6b", "trlc6c")
	a4, a6 := netip.MustParseAddr("10.252.1.2"), netip.MustParseAddr("fd00:252::2")
	b6 := netip.MustParseAddr("fd00:252::3")
	other4, other6 := netip.MustParseAddr("10.252.1.9"), netip.MustParseAddr("fd00:252::9")
	addHostRoutes(t, h, index, hostRoute{"trlc6a", a4}, hostRoute{"trlc6a", a6}, hostRoute{"trlc6b", b6})
	createFlows(t, h,
		udpFlow("10.252.1.2", 1000, "10.9.9.9", 53, "10.9.9.9", 53, "10.252.1.2", 1000),        // a sends out (IPv4)
		udpFlow("fd00:252::2", 1000, "fd00:9::9", 53, "fd00:9::9", 53, "fd00:252::2", 1000),    // a sends out (IPv6)
		udpFlow("fd00:9::9", 2000, "fd00:96::10", 80, "fd00:252::3", 8080, "fd00:9::9", 2000),  // to an IPv6 Service, DNATed to b
		udpFlow("fd00:252::3", 4000, "2001:db8::8", 53, "2001:db8::8", 53, "fd00:1::1", 61000), // b sends out, masqueraded
		udpFlow("fd00:252::9", 5000, "fd00:9::9", 53, "fd00:9::9", 53, "fd00:252::9", 5000),    // another pod (IPv6)
		udpFlow("10.252.1.9", 5000, "10.9.9.9", 53, "10.9.9.9", 53, "10.252.1.9", 5000),        // another pod (IPv4)
	)
	count := func(addr netip.Addr) int { return len(entriesNaming(t, node, addr)) }
	if count(a4) != 1 || count(a6) != 1 || count(b6) != 2 || count(other4) != 1 || count(other6) != 1 {
		t.Fatalf("entries before: a %d+%d, b %d, others %d+%d; want 1+1, 2, 1+1", count(a4), count(a6), count(b6), count(other4), count(other6))
	}

	ctl := runController(t, nsh, nil)

	if err := h.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "trlc6a", Index: index["trlc6a"]}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "the dual-stack pod's entries of both families deleted", func() bool { return count(a4) == 0 && count(a6) == 0 })
	if count(b6) != 2 || count(other4) != 1 || count(other6) != 1 {
		t.Fatalf("deleting a's entries touched others: b %d, others %d+%d", count(b6), count(other4), count(other6))
	}
	if err := h.RouteReplace(podlink.HostRoute(index["trlc6c"], b6)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "the moved IPv6 address's entries deleted", func() bool { return count(b6) == 0 })
	if count(other4) != 1 || count(other6) != 1 {
		t.Fatalf("another pod's entries were deleted: %d+%d", count(other4), count(other6))
	}
	if p := ctl.Pending(); len(p) != 0 {
		t.Errorf("pending after the deletions: %v", p)
	}
}
