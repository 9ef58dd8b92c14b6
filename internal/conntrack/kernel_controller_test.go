//go:build kernel

package conntrack_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/trellisnet/trellis/internal/conntrack"
	"github.com/trellisnet/trellis/internal/conntrack/ctnetlink"
	"github.com/trellisnet/trellis/internal/podlink"
)

// ip4 is s in the form a conntrack tuple wants: 4 bytes for IPv4.
func ip4(s string) net.IP {
	if ip := net.ParseIP(s).To4(); ip != nil {
		return ip
	}
	return net.ParseIP(s)
}

// udpFlow is a UDP entry with the given original and reply tuples, of
// the family of osrc.
func udpFlow(osrc string, osport uint16, odst string, odport uint16, rsrc string, rsport uint16, rdst string, rdport uint16) *netlink.ConntrackFlow {
	f := &netlink.ConntrackFlow{FamilyType: netlink.FAMILY_V4, TimeOut: 300}
	if netip.MustParseAddr(osrc).Is6() {
		f.FamilyType = netlink.FAMILY_V6
	}
	f.Forward = netlink.IPTuple{Protocol: unix.IPPROTO_UDP, SrcIP: ip4(osrc), SrcPort: osport, DstIP: ip4(odst), DstPort: odport}
	f.Reverse = netlink.IPTuple{Protocol: unix.IPPROTO_UDP, SrcIP: ip4(rsrc), SrcPort: rsport, DstIP: ip4(rdst), DstPort: rdport}
	return f
}

// handleNode makes a throwaway node namespace and returns it with a handle
// on it and a netlink handle inside it, closed at cleanup.
func handleNode(t *testing.T, prefix string) (ns.NetNS, netns.NsHandle, *netlink.Handle) {
	t.Helper()
	node := newNetNS(t, prefix)
	nsh, err := netns.GetFromPath(node.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nsh.Close() })
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return node, nsh, h
}

// podIfaces adds pod interfaces named names to the node of h (veth, both
// ends in the node: only the host side matters here), up, and returns
// their indexes by name.
func podIfaces(t *testing.T, h *netlink.Handle, names ...string) map[string]int {
	t.Helper()
	index := map[string]int{}
	for _, name := range names {
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
	return index
}

// hostRoute is a pod address and the interface of its host route.
type hostRoute struct {
	link string
	addr netip.Addr
}

func addHostRoutes(t *testing.T, h *netlink.Handle, index map[string]int, routes ...hostRoute) {
	t.Helper()
	for _, r := range routes {
		if err := h.RouteAdd(podlink.HostRoute(index[r.link], r.addr)); err != nil {
			t.Fatalf("host route %v: %v", r.addr, err)
		}
	}
}

// createFlows adds flows, each in its family, to the conntrack table of
// the node of h.
func createFlows(t *testing.T, h *netlink.Handle, flows ...*netlink.ConntrackFlow) {
	t.Helper()
	for _, f := range flows {
		if err := h.ConntrackCreate(netlink.ConntrackTable, netlink.InetFamily(f.FamilyType), f); err != nil {
			t.Fatalf("create conntrack entry %v: %v", f, err)
		}
	}
}

// runController runs a controller fed by the real podlink watch of the
// node nsh (the agent's side) until the test ends; it returns once the
// watch has listed the pod interfaces.
func runController(t *testing.T, nsh netns.NsHandle, reg prometheus.Registerer) *conntrack.Controller {
	t.Helper()
	ctl, err := conntrack.New(conntrack.Config{Kernel: &ctnetlink.Netlink{Netns: &nsh}, Registerer: reg})
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
	t.Cleanup(func() { cancel(); wg.Wait() })
	wg.Add(2)
	go func() { defer wg.Done(); _ = w.Run(ctx) }()
	go func() { defer wg.Done(); ctl.Run(ctx) }()
	select {
	case <-listed:
	case <-time.After(5 * time.Second):
		t.Fatal("the watch never listed the pod interfaces")
	}
	return ctl
}

// The agent's side: the real podlink watch of a node namespace feeds the
// controller, which deletes the conntrack entries of an address whose pod
// interface is deleted, and of an address whose host route moves to
// another interface, in either direction and through NAT, and leaves every
// other entry alone.
func TestKernelControllerForgetsReleasedAndMovedAddresses(t *testing.T) {
	node, nsh, h := handleNode(t, "trl-ctw-")
	// Three pod interfaces; a and b carry one pod address each.
	index := podIfaces(t, h, "trlcta", "trlctb", "trlctc")
	a, b := netip.MustParseAddr("10.252.0.2"), netip.MustParseAddr("10.252.0.3")
	other := netip.MustParseAddr("10.252.0.9")
	addHostRoutes(t, h, index, hostRoute{"trlcta", a}, hostRoute{"trlctb", b})
	createFlows(t, h,
		udpFlow("10.252.0.2", 1000, "10.9.9.9", 53, "10.9.9.9", 53, "10.252.0.2", 1000),   // a sends out
		udpFlow("10.9.9.9", 2000, "10.96.0.10", 80, "10.252.0.2", 8080, "10.9.9.9", 2000), // to a Service, DNATed to a
		udpFlow("10.9.9.9", 3000, "10.252.0.3", 80, "10.252.0.3", 80, "10.9.9.9", 3000),   // a peer sends to b
		udpFlow("10.252.0.3", 4000, "10.8.8.8", 53, "10.8.8.8", 53, "192.0.2.1", 61000),   // b sends out, masqueraded
		udpFlow("10.252.0.9", 5000, "10.9.9.9", 53, "10.9.9.9", 53, "10.252.0.9", 5000),   // another pod
	)
	count := func(addr netip.Addr) int { return len(entriesNaming(t, node, addr)) }
	if count(a) != 2 || count(b) != 2 || count(other) != 1 {
		t.Fatalf("entries before: a %d, b %d, other %d; want 2, 2, 1", count(a), count(b), count(other))
	}

	reg := prometheus.NewRegistry()
	ctl := runController(t, nsh, reg)

	// a's interface goes (the pod is deleted).
	start := time.Now()
	if err := h.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "trlcta", Index: index["trlcta"]}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "a's entries deleted", func() bool { return count(a) == 0 })
	t.Logf("entries of a released address deleted %v after its interface went", time.Since(start).Round(time.Millisecond))
	if count(b) != 2 || count(other) != 1 {
		t.Fatalf("deleting a's entries touched others: b %d, other %d; want 2, 1", count(b), count(other))
	}

	// b's address moves to another interface.
	start = time.Now()
	if err := h.RouteReplace(podlink.HostRoute(index["trlctc"], b)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "b's entries deleted", func() bool { return count(b) == 0 })
	t.Logf("entries of a moved address deleted %v after its route moved", time.Since(start).Round(time.Millisecond))
	if count(other) != 1 {
		t.Fatalf("another pod's entry was deleted")
	}
	if got, err := testutil.GatherAndCount(reg, "trellis_conntrack_deleted_entries_total"); err != nil || got != 1 {
		t.Fatalf("deleted-entries metric: %d series (%v)", got, err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "trellis_conntrack_deleted_entries_total" {
			if v := mf.GetMetric()[0].GetCounter().GetValue(); v != 4 {
				t.Errorf("trellis_conntrack_deleted_entries_total = %v, want 4", v)
			}
		}
	}
	if p := ctl.Pending(); len(p) != 0 {
		t.Errorf("pending after both deletions: %v", p)
	}
}

// What the plugin's call costs on a node with a large table, and that it
// deletes exactly the address's entries: one dump of the whole table per
// address family, then one delete per matching entry.
func TestKernelForgetCostWithALargeTable(t *testing.T) {
	const entries = 20000
	_, nsh, h := handleNode(t, "trl-ctc-")
	for i := 0; i < entries; i++ {
		src := fmt.Sprintf("10.253.%d.%d", i/250, 2+i%250)
		if err := h.ConntrackCreate(netlink.ConntrackTable, netlink.FAMILY_V4,
			udpFlow(src, 1000, "10.9.9.9", 53, "10.9.9.9", 53, src, 1000)); err != nil {
			t.Fatalf("create entry %d: %v", i, err)
		}
	}
	// And one IPv6 entry: both families in one call.
	createFlows(t, h, udpFlow("fd00:253::2", 1000, "fd00:9::9", 53, "fd00:9::9", 53, "fd00:253::2", 1000))
	victim, victim6 := netip.MustParseAddr("10.253.7.9"), netip.MustParseAddr("fd00:253::2")
	k := &ctnetlink.Netlink{Netns: &nsh}
	start := time.Now()
	n, err := k.DeleteAddrs([]netip.Addr{victim})
	took := time.Since(start)
	if err != nil || n != 1 {
		t.Fatalf("DeleteAddrs = %d, %v; want 1 entry deleted", n, err)
	}
	if n, err := k.DeleteAddrs([]netip.Addr{victim, victim6}); err != nil || n != 1 {
		t.Fatalf("DeleteAddrs with the IPv6 address = %d, %v; want its 1 entry deleted", n, err)
	}
	if left6, err := h.ConntrackTableList(netlink.ConntrackTable, netlink.FAMILY_V6); err != nil || len(left6) != 0 {
		t.Fatalf("IPv6 entries left: %v (%v)", left6, err)
	}
	left, err := h.ConntrackTableList(netlink.ConntrackTable, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != entries-1 {
		t.Fatalf("%d entries left, want %d", len(left), entries-1)
	}
	start = time.Now()
	if _, err := k.DeleteAddrs([]netip.Addr{victim}); err != nil {
		t.Fatal(err)
	}
	t.Logf("one address forgotten in a table of %d entries: %v (nothing to delete: %v)", entries, took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}
