//go:build kernel

package podlink_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/trellisnet/trellis/internal/cnirunner"
	"github.com/trellisnet/trellis/internal/podlink"
)

// node is a throwaway network namespace with a netlink handle into it.
type node struct {
	t  *testing.T
	ns netns.NsHandle
	h  *netlink.Handle
}

func newNode(t *testing.T) *node {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("tier-1 tests need root (network namespaces)")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "podlink-" + hex.EncodeToString(b)
	n, err := cnirunner.NewNetNS(name)
	if err != nil {
		t.Fatal(err)
	}
	_ = n.Close()
	t.Cleanup(func() { _ = cnirunner.DeleteNetNS(name) })
	nsh, err := netns.GetFromPath(filepath.Join("/run/netns", name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nsh.Close() })
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return &node{t: t, ns: nsh, h: h}
}

// addPod writes the contract for one attachment the way the plugin does:
// a veth whose host end is named podlink.HostName, with alias, group and
// the address as a host route (the peer stays in the same namespace).
func (n *node) addPod(al podlink.Alias, addr netip.Addr) podlink.Interface {
	n.t.Helper()
	name := podlink.HostName(al.ContainerID, al.IfName)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	if err := n.h.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "p" + name[3:]}); err != nil {
		n.t.Fatal(err)
	}
	l, err := n.h.LinkByName(name)
	if err != nil {
		n.t.Fatal(err)
	}
	group := podlink.GroupForNamespace(al.PodNamespace)
	if err := n.h.LinkSetAlias(l, al.String()); err != nil {
		n.t.Fatal(err)
	}
	if err := n.h.LinkSetGroup(l, int(group)); err != nil {
		n.t.Fatal(err)
	}
	if err := n.h.LinkSetUp(l); err != nil {
		n.t.Fatal(err)
	}
	if err := n.h.RouteReplace(podlink.HostRoute(l.Attrs().Index, addr)); err != nil {
		n.t.Fatal(err)
	}
	return podlink.Interface{Index: l.Attrs().Index, Name: name, Group: group, Addrs: []netip.Addr{addr}, Alias: al}
}

// uplink adds a non-pod link (a veth pair: this kernel has no dummy).
func uplink(n *node) netlink.Link {
	n.t.Helper()
	if err := n.h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "uplink0"}, PeerName: "uplink0p"}); err != nil {
		n.t.Fatal(err)
	}
	l, err := n.h.LinkByName("uplink0")
	if err != nil {
		n.t.Fatal(err)
	}
	return l
}

func equal(a, b []podlink.Interface) bool {
	return slices.EqualFunc(a, b, func(x, y podlink.Interface) bool {
		return x.Index == y.Index && x.Name == y.Name && x.Group == y.Group && x.Alias == y.Alias && slices.Equal(x.Addrs, y.Addrs)
	})
}

// List reads back exactly what the plugin wrote: index, name, group, alias
// (new and old form), the host-route address; other links and routes are
// not pod interfaces.
func TestKernelPodlinkList(t *testing.T) {
	n := newNode(t)
	a := n.addPod(podlink.Alias{Network: "trellis", ContainerID: "c1", IfName: "eth0", PodNamespace: "x", PodName: "a", PodUID: "u1"},
		netip.MustParseAddr("10.244.1.5"))
	b := n.addPod(podlink.Alias{Network: "trellis", ContainerID: "c2", IfName: "eth0"}, netip.MustParseAddr("10.244.1.6"))
	// An interface made by an older plugin: old alias form.
	l, _ := n.h.LinkByName(b.Name)
	if err := n.h.LinkSetAlias(l, "trellis:trellis:c2:eth0"); err != nil {
		t.Fatal(err)
	}
	// Noise: a dummy uplink with a /32 route, a subnet route on a pod link.
	d := uplink(n)
	if err := n.h.LinkSetUp(d); err != nil {
		t.Fatal(err)
	}
	if err := n.h.RouteReplace(podlink.HostRoute(d.Attrs().Index, netip.MustParseAddr("10.0.0.9"))); err != nil {
		t.Fatal(err)
	}
	got, err := podlink.List(n.h)
	if err != nil {
		t.Fatal(err)
	}
	want := []podlink.Interface{a, b}
	if !equal(got, want) {
		t.Fatalf("List:\n got %+v\nwant %+v", got, want)
	}
	if got[0].Alias.Pod() != "x/a" || got[1].Alias.Pod() != "" {
		t.Fatalf("pods: %q %q", got[0].Alias.Pod(), got[1].Alias.Pod())
	}
}

// Watch follows pod interfaces appearing (with their host route) and
// disappearing, and reports other link changes separately.
func TestKernelPodlinkWatch(t *testing.T) {
	n := newNode(t)
	first := n.addPod(podlink.Alias{Network: "trellis", ContainerID: "c0", IfName: "eth0", PodNamespace: "x", PodName: "z"},
		netip.MustParseAddr("10.244.1.4"))
	w := podlink.NewWatcher(podlink.WatchOptions{Netns: &n.ns, Resync: time.Hour})
	var podChanges, linkChanges atomic.Int32
	w.OnChange(func([]podlink.Interface) { podChanges.Add(1) })
	w.OnLinkChange(func() { linkChanges.Add(1) })
	// Before Run: a direct list.
	if got, err := w.PodInterfaces(); err != nil || !equal(got, []podlink.Interface{first}) {
		t.Fatalf("before Run: %+v %v", got, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	waitFor := func(what string, cond func([]podlink.Interface) bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			got, err := w.PodInterfaces()
			if err == nil && cond(got) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not seen within 5s (have %+v, %v)", what, got, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor("initial list", func(l []podlink.Interface) bool { return podChanges.Load() > 0 && equal(l, []podlink.Interface{first}) })

	start := time.Now()
	second := n.addPod(podlink.Alias{Network: "trellis", ContainerID: "c1", IfName: "eth0", PodNamespace: "x", PodName: "a"},
		netip.MustParseAddr("10.244.1.5"))
	waitFor("new pod interface with its address", func(l []podlink.Interface) bool {
		return equal(l, []podlink.Interface{first, second})
	})
	t.Logf("new pod interface and its host route seen after %s", time.Since(start).Round(time.Microsecond))

	// A route removed by hand: the address goes, the interface stays.
	if err := n.h.RouteDel(podlink.HostRoute(second.Index, second.Addrs[0])); err != nil {
		t.Fatal(err)
	}
	noAddr := second
	noAddr.Addrs = nil
	waitFor("host route removed", func(l []podlink.Interface) bool { return equal(l, []podlink.Interface{first, noAddr}) })

	l, _ := n.h.LinkByName(second.Name)
	if err := n.h.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	waitFor("pod interface deleted", func(l []podlink.Interface) bool { return equal(l, []podlink.Interface{first}) })

	before := linkChanges.Load()
	uplink(n)
	waitFor("uplink change reported", func([]podlink.Interface) bool { return linkChanges.Load() > before })
	if got, _ := w.PodInterfaces(); !equal(got, []podlink.Interface{first}) {
		t.Fatalf("an uplink became a pod interface: %+v", got)
	}
}
