//go:build kernel

package conntrack_test

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/trellisnet/trellis/internal/conntrack"
	"github.com/trellisnet/trellis/internal/conntrack/ctnetlink"
	"github.com/trellisnet/trellis/internal/podlink"
)

// udpFlow6 is udpFlow for IPv6.
func udpFlow6(osrc string, osport uint16, odst string, odport uint16, rsrc string, rsport uint16, rdst string, rdport uint16) *netlink.ConntrackFlow {
	f := udpFlow(osrc, osport, odst, odport, rsrc, rsport, rdst, rdport)
	f.FamilyType = netlink.FAMILY_V6
	return f
}

// Dual-stack pods: deleting a pod with an address of each family deletes
// the entries of both; an IPv6 address whose host route moves to another
// interface loses its entries (in either direction, through NAT); another
// pod's IPv6 and IPv4 entries stay.
func TestKernelControllerForgetsBothFamiliesOfAPod(t *testing.T) {
	node, nsh, h := handleNode(t, "trl-ct6-")
	index := map[string]int{}
	for _, name := range []string{"trlc6a", "trlc6b", "trlc6c"} {
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "p" + name}); err != nil {
			t.Fatal(err)
		}
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		index[name] = l.Attrs().Index
	}
	a4, a6 := netip.MustParseAddr("10.252.1.2"), netip.MustParseAddr("fd00:252::2")
	b6 := netip.MustParseAddr("fd00:252::3")
	other4, other6 := netip.MustParseAddr("10.252.1.9"), netip.MustParseAddr("fd00:252::9")
	for _, r := range []struct {
		link string
		addr netip.Addr
	}{{"trlc6a", a4}, {"trlc6a", a6}, {"trlc6b", b6}} {
		if err := h.RouteAdd(podlink.HostRoute(index[r.link], r.addr)); err != nil {
			t.Fatalf("host route %v: %v", r.addr, err)
		}
	}
	for _, f := range []*netlink.ConntrackFlow{
		udpFlow("10.252.1.2", 1000, "10.9.9.9", 53, "10.9.9.9", 53, "10.252.1.2", 1000),         // a sends out (IPv4)
		udpFlow6("fd00:252::2", 1000, "fd00:9::9", 53, "fd00:9::9", 53, "fd00:252::2", 1000),    // a sends out (IPv6)
		udpFlow6("fd00:9::9", 2000, "fd00:96::10", 80, "fd00:252::3", 8080, "fd00:9::9", 2000),  // to an IPv6 Service, DNATed to b
		udpFlow6("fd00:252::3", 4000, "2001:db8::8", 53, "2001:db8::8", 53, "fd00:1::1", 61000), // b sends out, masqueraded
		udpFlow6("fd00:252::9", 5000, "fd00:9::9", 53, "fd00:9::9", 53, "fd00:252::9", 5000),    // another pod (IPv6)
		udpFlow("10.252.1.9", 5000, "10.9.9.9", 53, "10.9.9.9", 53, "10.252.1.9", 5000),         // another pod (IPv4)
	} {
		fam := netlink.InetFamily(netlink.FAMILY_V4)
		if f.FamilyType == netlink.FAMILY_V6 {
			fam = netlink.FAMILY_V6
		}
		if err := h.ConntrackCreate(netlink.ConntrackTable, fam, f); err != nil {
			t.Fatalf("create conntrack entry %v: %v", f, err)
		}
	}
	count := func(addr netip.Addr) int { return len(entriesNaming(t, node, addr)) }
	if count(a4) != 1 || count(a6) != 1 || count(b6) != 2 || count(other4) != 1 || count(other6) != 1 {
		t.Fatalf("entries before: a %d+%d, b %d, others %d+%d; want 1+1, 2, 1+1", count(a4), count(a6), count(b6), count(other4), count(other6))
	}

	ctl, err := conntrack.New(conntrack.Config{Kernel: &ctnetlink.Netlink{Netns: &nsh}})
	if err != nil {
		t.Fatal(err)
	}
	w := podlink.NewWatcher(podlink.WatchOptions{Netns: &nsh})
	var once sync.Once
	listed := make(chan struct{})
	w.OnChange(func(l []podlink.Interface) {
		ctl.InterfacesChanged(l)
		once.Do(func() { close(listed) })
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(2)
	go func() { defer wg.Done(); _ = w.Run(ctx) }()
	go func() { defer wg.Done(); ctl.Run(ctx) }()
	select {
	case <-listed:
	case <-time.After(5 * time.Second):
		t.Fatal("the watch never listed the pod interfaces")
	}

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
