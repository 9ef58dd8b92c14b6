//go:build kernel

package cni_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/trellisnet/trellis/internal/cnirunner"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/sysctl"
)

// An IPv6 pod is usable as soon as ADD returns: its address is not
// tentative, the node holds a permanent neighbour entry for it (no
// solicitation, whatever the state of the host end's link-local address),
// and the first connection between two pods, and from the host to a pod,
// completes at once (duplicate address detection would hold the addresses
// for about a second, and a first packet lost to it costs TCP a 1 s
// retransmission). The link-local addresses of both ends skip DAD too:
// none stays tentative (the kernel clears the flag from a work queue, so
// it may show for a moment). CHECK catches a missing host neighbour.
func TestKernelIPv6UsableAtOnce(t *testing.T) {
	f := newFixture(t, confOpts{subnets: []string{"fd00:89::/120"}})
	a, b := f.newPodNS(), f.newPodNS()
	serveEcho(t, b.ns, 8080)
	serveEcho(t, a.ns, 8082)
	f.mustAdd(a)
	f.mustAdd(b)
	for _, p := range []*pod{a, b} {
		if tent := tentative(t, p.ns, "eth0"); slices.Contains(tent, p.addr.String()) {
			t.Fatalf("pod %s right after ADD: its address %s is tentative", p.id, p.addr)
		}
		if !hostNeighbour(t, f.node, podlink.HostName(p.id, "eth0"), p.addr) {
			t.Fatalf("host side of %s right after ADD: no permanent neighbour for %s", p.id, p.addr)
		}
	}
	for _, c := range []struct {
		from ns.NetNS
		to   netip.Addr
		port int
		what string
	}{{a.ns, b.addr, 8080, "pod a -> pod b"}, {f.node, a.addr, 8082, "host -> pod a"}} {
		start := time.Now()
		if err := echo(c.from, "tcp", c.to, c.port); err != nil {
			t.Fatalf("%s right after ADD: %v", c.what, err)
		}
		if d := time.Since(start); d > 900*time.Millisecond {
			t.Fatalf("%s right after ADD took %v: something waited (DAD, a lost first packet)", c.what, d)
		}
	}

	for _, p := range []*pod{a, b} {
		for _, l := range []struct {
			n    ns.NetNS
			link string
		}{{p.ns, "eth0"}, {f.node, podlink.HostName(p.id, "eth0")}} {
			for deadline := time.Now().Add(300 * time.Millisecond); ; time.Sleep(10 * time.Millisecond) {
				tent := tentative(t, l.n, l.link)
				if len(tent) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s of %s: addresses %v still tentative 300 ms after ADD (DAD runs)", l.link, p.id, tent)
				}
			}
		}
	}
	hostIf := podlink.HostName(a.id, "eth0")
	if err := f.node.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(hostIf)
		if err != nil {
			return err
		}
		return netlink.NeighDel(&netlink.Neigh{LinkIndex: l.Attrs().Index, IP: a.addr.AsSlice(), Family: netlink.FAMILY_V6})
	}); err != nil {
		t.Fatal(err)
	}
	if err := f.runner.Check(context.Background(), a.id, a.ns.Path(), "eth0"); err == nil || !strings.Contains(err.Error(), "host neighbour "+a.addr.String()) {
		t.Fatalf("CHECK without the host neighbour: want failure naming it, got %v", err)
	}

	// Control: the same kind of link made without the plugin's settings
	// starts with a tentative address, so the check above can fail.
	c := f.newPodNS()
	err := c.ns.Do(func(ns.NetNS) error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ctl0"}, PeerName: "ctl1"}); err != nil {
			return err
		}
		l, err := netlink.LinkByName("ctl0")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: podlink.HostPrefix(netip.MustParseAddr("fd00:89::99"))}); err != nil {
			return err
		}
		for _, n := range []string{"ctl0", "ctl1"} {
			if l, err = netlink.LinkByName(n); err == nil {
				err = netlink.LinkSetUp(l)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if tent := tentative(t, c.ns, "ctl0"); !slices.Contains(tent, "fd00:89::99") {
		t.Fatalf("control: a plain link's address is not tentative (%v): the check proves nothing", tent)
	}
}

// hostNeighbour reports whether link in n holds a permanent neighbour
// entry for a.
func hostNeighbour(t *testing.T, n ns.NetNS, link string, a netip.Addr) bool {
	t.Helper()
	var ok bool
	err := n.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(link)
		if err != nil {
			return err
		}
		neighs, err := netlink.NeighList(l.Attrs().Index, netlink.FAMILY_V6)
		ok = slices.ContainsFunc(neighs, func(x netlink.Neigh) bool {
			return x.IP.Equal(a.AsSlice()) && x.State == netlink.NUD_PERMANENT
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// tentative lists the tentative IPv6 addresses of link in n.
func tentative(t *testing.T, n ns.NetNS, link string) []string {
	t.Helper()
	var out []string
	err := n.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(link)
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V6)
		for _, a := range addrs {
			if a.Flags&unix.IFA_F_TENTATIVE != 0 {
				out = append(out, a.IP.String())
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A node that learns its default route by router advertisement keeps it
// when ADD turns IPv6 forwarding on, and keeps learning from RAs: the
// uplink's accept_ra goes from 1 to 2 before forwarding goes on. The pod's
// host side, an overlay between nodes (VXLAN) and "default" (devices made
// later) are not raised. Control: the same node with forwarding turned on
// naively loses the route.
func TestKernelIPv6ForwardingKeepsRADefaultRoute(t *testing.T) {
	f := newFixture(t, confOpts{subnets: []string{"fd00:8a::/120"}})
	router := newRouter(t, f.node, "up0")
	if err := f.node.Do(func(ns.NetNS) error {
		return netlink.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vx0"}, VxlanId: 42, Port: 4789})
	}); err != nil {
		t.Fatalf("add a VXLAN device: %v", err)
	}
	sysNode := sysctl.Netns{NS: f.node}
	for key, want := range map[string]string{"net/ipv6/conf/all/forwarding": "0", "net/ipv6/conf/up0/accept_ra": "1", "net/ipv6/conf/vx0/accept_ra": "1"} {
		if v, err := sysNode.Get(key); err != nil || v != want {
			t.Fatalf("fresh node: %s = %q (%v), want %q", key, v, err, want)
		}
	}
	sendRA(t, router, "rt0")
	waitDefaultRoute(t, f.node, true, "after the first RA")

	p := f.newPodNS()
	f.mustAdd(p)
	for key, want := range map[string]string{
		"net/ipv6/conf/all/forwarding": "1", "net/ipv6/conf/up0/accept_ra": "2", "net/ipv6/conf/default/accept_ra": "1",
		"net/ipv6/conf/vx0/accept_ra":                                    "1",
		"net/ipv6/conf/" + podlink.HostName(p.id, "eth0") + "/accept_ra": "0",
	} {
		if v, err := sysNode.Get(key); err != nil || v != want {
			t.Fatalf("after ADD: %s = %q (%v), want %q", key, v, err, want)
		}
	}
	waitDefaultRoute(t, f.node, true, "after ADD turned forwarding on")
	// Still learning: the route, removed by hand, comes back with the next RA.
	delDefaultRoutes(t, f.node)
	waitDefaultRoute(t, f.node, false, "after removing it by hand")
	sendRA(t, router, "rt0")
	waitDefaultRoute(t, f.node, true, "after an RA with forwarding on")

	// Control: forwarding on without accept_ra=2 purges the learned route.
	ctl, err := cnirunner.NewNetNS("trl-node-" + uniq())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		name := ctl.Path()
		ctl.Close()
		_ = cnirunner.DeleteNetNS(name[strings.LastIndex(name, "/")+1:])
	})
	ctlRouter := newRouter(t, ctl, "up0")
	sendRA(t, ctlRouter, "rt0")
	waitDefaultRoute(t, ctl, true, "control, after the RA")
	if err := cnirunner.Sysctl(ctl, "net/ipv6/conf/all/forwarding", "1"); err != nil {
		t.Fatal(err)
	}
	waitDefaultRoute(t, ctl, false, "control, forwarding on with accept_ra=1")
}

// newRouter makes a namespace linked to node by a veth (nodeIf in node,
// rt0 in the router), both ends up, DAD off on the router's end so its
// link-local address can send RAs at once. It is removed at cleanup.
func newRouter(t *testing.T, node ns.NetNS, nodeIf string) ns.NetNS {
	t.Helper()
	name := "trl-rtr-" + uniq()
	r, err := cnirunner.NewNetNS(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); _ = cnirunner.DeleteNetNS(name) })
	if err := cnirunner.Sysctl(r, "net/ipv6/conf/default/accept_dad", "0"); err != nil {
		t.Fatal(err)
	}
	err = node.Do(func(ns.NetNS) error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: nodeIf}, PeerName: "rt0", PeerNamespace: netlink.NsFd(int(r.Fd()))}); err != nil {
			return err
		}
		l, err := netlink.LinkByName(nodeIf)
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	if err != nil {
		t.Fatal(err)
	}
	err = r.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("rt0")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// sendRA sends one router advertisement (router lifetime 1800 s, source
// link-layer address option) to all nodes from link in n, once the link
// has a usable link-local source address.
func sendRA(t *testing.T, n ns.NetNS, link string) {
	t.Helper()
	err := n.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(link)
		if err != nil {
			return err
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			addrs, err := netlink.AddrList(l, netlink.FAMILY_V6)
			if err != nil {
				return err
			}
			if slices.ContainsFunc(addrs, func(a netlink.Addr) bool {
				return a.IP.IsLinkLocalUnicast() && a.Flags&unix.IFA_F_TENTATIVE == 0
			}) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s has no usable link-local address", link)
			}
			time.Sleep(20 * time.Millisecond)
		}
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_ICMPV6)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, 255); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, l.Attrs().Index); err != nil {
			return err
		}
		ra := make([]byte, 16, 24)
		ra[0] = 134                               // router advertisement (the kernel fills the checksum)
		ra[4] = 64                                // current hop limit
		binary.BigEndian.PutUint16(ra[6:8], 1800) // router lifetime (s)
		ra = append(ra, 1, 1)                     // source link-layer address option, 8 bytes
		ra = append(ra, l.Attrs().HardwareAddr...)
		to := &unix.SockaddrInet6{ZoneId: uint32(l.Attrs().Index)}
		copy(to.Addr[:], net.ParseIP("ff02::1"))
		return unix.Sendto(fd, ra, 0, to)
	})
	if err != nil {
		t.Fatalf("send RA: %v", err)
	}
}

func defaultRoutes6(n ns.NetNS) ([]netlink.Route, error) {
	var out []netlink.Route
	err := n.Do(func(ns.NetNS) error {
		_, def, _ := net.ParseCIDR("::/0")
		var err error
		out, err = netlink.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{Dst: def}, netlink.RT_FILTER_DST)
		return err
	})
	return out, err
}

// waitDefaultRoute waits up to 3 s for n to have (or not) an IPv6 default
// route learned from an RA.
func waitDefaultRoute(t *testing.T, n ns.NetNS, want bool, when string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		routes, err := defaultRoutes6(n)
		if err != nil {
			t.Fatal(err)
		}
		have := slices.ContainsFunc(routes, func(r netlink.Route) bool { return r.Protocol == unix.RTPROT_RA })
		if have == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: RA default route present=%v, want %v (routes %v)", when, have, want, routes)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func delDefaultRoutes(t *testing.T, n ns.NetNS) {
	t.Helper()
	routes, err := defaultRoutes6(n)
	if err == nil {
		err = n.Do(func(ns.NetNS) error {
			for _, r := range routes {
				if err := netlink.RouteDel(&r); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		t.Fatal(err)
	}
}

// GC and STATUS for both families: the node state file's dual-stack and
// IPv6-only subnets make STATUS succeed and ADD allocate from each; GC
// releases exactly the invalid attachments' addresses of both families.
func TestKernelDualStackStatusAndGC(t *testing.T) {
	for _, c := range []struct {
		name  string
		cidrs []netip.Prefix
	}{
		{"ipv6", mustPrefixes("fd00:8b::/120")},
		{"dual", mustPrefixes("10.88.11.0/24", "fd00:8b::/120")},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, confOpts{})
			path := f.stateDir + "/node-state.json"
			if err := podlink.WriteNodeState(path, &podlink.NodeState{NodeName: "n1", PodCIDRs: c.cidrs, MTU: 1380, Reason: "routes pending"}); err != nil {
				t.Fatal(err)
			}
			var te *types.Error
			if err := f.runner.Status(context.Background()); !errors.As(err, &te) || te.Code != types.ErrPluginNotAvailable {
				t.Fatalf("STATUS before ready: want code 50, got %v", err)
			}
			if err := podlink.WriteNodeState(path, &podlink.NodeState{NodeName: "n1", PodCIDRs: c.cidrs, MTU: 1380, Ready: true}); err != nil {
				t.Fatal(err)
			}
			if err := f.runner.Status(context.Background()); err != nil {
				t.Fatalf("STATUS when ready: %v", err)
			}
			pods := f.addPods(4)
			for _, p := range pods {
				if len(p.addrs) != len(c.cidrs) {
					t.Fatalf("pod %s got %v, want one address from each of %v", p.id, p.addrs, c.cidrs)
				}
				for i, cidr := range c.cidrs {
					if !cidr.Contains(p.addrs[i]) {
						t.Fatalf("pod %s address %s not from %s", p.id, p.addrs[i], cidr)
					}
				}
			}
			valid := []types.GCAttachment{{ContainerID: pods[0].id, IfName: "eth0"}, {ContainerID: pods[1].id, IfName: "eth0"}}
			if err := f.runner.GC(context.Background(), valid); err != nil {
				t.Fatalf("GC: %v", err)
			}
			var kept []netip.Addr
			for _, a := range f.allocations() {
				if a.ContainerID != pods[0].id && a.ContainerID != pods[1].id {
					t.Fatalf("GC kept invalid attachment %s", a.Key)
				}
				kept = append(kept, a.Addr)
			}
			want := append(slices.Clone(pods[0].addrs), pods[1].addrs...)
			if slices.SortFunc(kept, netip.Addr.Compare); !slices.Equal(kept, sortedAddrs(want)) {
				t.Fatalf("after GC: allocations %v, want %v", kept, sortedAddrs(want))
			}
			if l, r := f.hostLinks(), f.podRoutes(); len(l) != 2 || len(r) != len(want) {
				t.Fatalf("after GC: links %v, routes %v; want 2 links and %d routes", l, r, len(want))
			}
			serveEcho(t, pods[1].ns, 8080)
			for _, addr := range pods[1].addrs {
				mustReach(t, pods[0].ns, addr, 8080, "surviving pods")
			}
			if err := f.runner.Check(context.Background(), pods[0].id, pods[0].ns.Path(), "eth0"); err != nil {
				t.Fatalf("CHECK of a surviving pod: %v", err)
			}
		})
	}
}
