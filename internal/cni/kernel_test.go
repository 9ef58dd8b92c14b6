//go:build kernel

package cni_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/trellisnet/trellis/internal/cni"
	"github.com/trellisnet/trellis/internal/cnirunner"
	"github.com/trellisnet/trellis/internal/podlink"
)

// ipFamilies are the conflists of the spec-version matrix: IPv4 only,
// IPv6 only and dual-stack.
var ipFamilies = []struct {
	name    string
	subnets []string
}{
	{"ipv4", []string{"10.88.0.0/24"}},
	{"ipv6", []string{"fd00:88::/120"}},
	{"dual", []string{"10.88.0.0/24", "fd00:88::/120"}},
}

// Every spec version the plugin claims, for each IP family: ADD wires two
// pods that reach each other and the host over TCP and UDP in every
// family; CHECK passes, then fails once the pod's default route of one
// family is removed by hand; DEL twice succeeds and leaves nothing.
func TestKernelAddCheckDelAllVersions(t *testing.T) {
	for _, fam := range ipFamilies {
		for _, v := range []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
			t.Run(fam.name+"/"+v, func(t *testing.T) { addCheckDel(t, v, fam.subnets) })
		}
	}
}

func addCheckDel(t *testing.T, v string, subnets []string) {
	f := newFixture(t, confOpts{version: v, subnets: subnets})
	a, b := f.newPodNS(), f.newPodNS()
	f.mustAdd(a)
	f.mustAdd(b)
	if len(a.addrs) != len(subnets) || len(b.addrs) != len(subnets) {
		t.Fatalf("addresses %v and %v, want one per subnet of %v", a.addrs, b.addrs, subnets)
	}
	for i, s := range subnets {
		pfx := netip.MustParsePrefix(s)
		if a.addrs[i] == b.addrs[i] || !pfx.Contains(a.addrs[i]) || !pfx.Contains(b.addrs[i]) {
			t.Fatalf("addresses %s and %s, want two distinct ones in %s", a.addrs[i], b.addrs[i], s)
		}
	}
	// The contract as the agent reads it: group, alias naming the
	// attachment and the pod, every address as a host route.
	hi := f.hostIface(a)
	if hi.Group != podlink.GroupForNamespace("trellis") {
		t.Fatalf("host interface group %d, want the namespace's %d", hi.Group, podlink.GroupForNamespace("trellis"))
	}
	want := podlink.Alias{Network: "trellis-test", ContainerID: a.id, IfName: "eth0", PodNamespace: "trellis", PodName: a.id, PodUID: "uid-" + a.id}
	if got, wantAddrs := hi.Addrs, sortedAddrs(a.addrs); hi.Alias != want || !slices.Equal(got, wantAddrs) {
		t.Fatalf("host interface as read by podlink: alias %+v addrs %v, want %+v and %v", hi.Alias, got, want, wantAddrs)
	}
	serveEcho(t, b.ns, 8080)
	serveEcho(t, f.node, 8081)
	serveEcho(t, a.ns, 8082)
	for _, addr := range a.addrs {
		host := f.hostAddr
		if addr.Is6() {
			host = f.hostAddr6
		}
		mustReach(t, a.ns, b.addrOf(t, addr), 8080, "pod a -> pod b")
		mustReach(t, a.ns, host, 8081, "pod a -> host")
		mustReach(t, f.node, addr, 8082, "host -> pod a")
	}

	if v != "0.3.0" && v != "0.3.1" {
		if err := f.runner.Check(context.Background(), a.id, a.ns.Path(), "eth0"); err != nil {
			t.Fatalf("CHECK on a healthy pod: %v", err)
		}
		last := a.addrs[len(a.addrs)-1] // dual: the IPv6 one
		removeDefaultRoute(t, a.ns, last)
		err := f.runner.Check(context.Background(), a.id, a.ns.Path(), "eth0")
		if err == nil || !strings.Contains(err.Error(), "default route via "+gatewayOf(last)) {
			t.Fatalf("CHECK after removing the %s default route: want failure naming it, got %v", gatewayOf(last), err)
		}
	}
	for _, p := range []*pod{a, b} {
		for i := range 2 {
			if err := f.del(p); err != nil {
				t.Fatalf("DEL #%d of %s: %v", i+1, p.id, err)
			}
		}
	}
	if l, al, r := f.hostLinks(), f.allocations(), f.podRoutes(); len(l)+len(al)+len(r) != 0 {
		t.Fatalf("after DEL: links %v, allocations %v, routes %v", l, al, r)
	}
}

func gatewayOf(a netip.Addr) string {
	if a.Is4() {
		return cni.GatewayV4.String()
	}
	return cni.GatewayV6.String()
}

func sortedAddrs(in []netip.Addr) []netip.Addr {
	out := slices.Clone(in)
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// removeDefaultRoute removes the pod's default route of like's family.
func removeDefaultRoute(t *testing.T, n ns.NetNS, like netip.Addr) {
	t.Helper()
	fam, def := netlink.FAMILY_V4, "0.0.0.0/0"
	if like.Is6() {
		fam, def = netlink.FAMILY_V6, "::/0"
	}
	err := n.Do(func(ns.NetNS) error {
		_, dst, _ := net.ParseCIDR(def)
		routes, err := netlink.RouteListFiltered(fam, &netlink.Route{Dst: dst}, netlink.RT_FILTER_DST)
		if err != nil {
			return err
		}
		if len(routes) == 0 {
			return errors.New("no default route to remove")
		}
		for _, r := range routes {
			if err := netlink.RouteDel(&r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// DEL when the pod's namespace is already gone succeeds and cleans up.
func TestKernelDelWithNamespaceGone(t *testing.T) {
	f := newFixture(t, confOpts{subnets: []string{"10.88.1.0/24"}})
	p := f.newPodNS()
	f.mustAdd(p)
	path := p.ns.Path()
	p.ns.Close()
	if err := cnirunner.DeleteNetNS(p.name); err != nil {
		t.Fatal(err)
	}
	if err := f.runner.Del(context.Background(), p.id, path, "eth0"); err != nil {
		t.Fatalf("DEL with namespace gone: %v", err)
	}
	if l, al := f.hostLinks(), f.allocations(); len(l)+len(al) != 0 {
		t.Fatalf("after DEL: links %v, allocations %v", l, al)
	}
	// DEL of an attachment that never existed is success too.
	if err := f.runner.Del(context.Background(), "never-added", "", "eth0"); err != nil {
		t.Fatalf("DEL of unknown attachment: %v", err)
	}
}

// GC with a partial valid-attachments list releases exactly the rest.
func TestKernelGCReleasesExactlyTheInvalid(t *testing.T) {
	f := newFixture(t, confOpts{subnets: []string{"10.88.2.0/24"}})
	pods := f.addPods(6)
	var valid []types.GCAttachment
	for _, p := range pods[:3] {
		valid = append(valid, types.GCAttachment{ContainerID: p.id, IfName: "eth0"})
	}
	if err := f.runner.GC(context.Background(), valid); err != nil {
		t.Fatalf("GC: %v", err)
	}
	al := f.allocations()
	if len(al) != 3 || len(f.hostLinks()) != 3 || len(f.podRoutes()) != 3 {
		t.Fatalf("after GC: %d allocations, links %v, routes %v; want 3 each", len(al), f.hostLinks(), f.podRoutes())
	}
	for _, a := range al {
		if a.ContainerID != pods[0].id && a.ContainerID != pods[1].id && a.ContainerID != pods[2].id {
			t.Fatalf("GC kept invalid attachment %s", a.Key)
		}
	}
	// The survivors still work.
	serveEcho(t, pods[1].ns, 8080)
	mustReach(t, pods[0].ns, pods[1].addr, 8080, "surviving pods")
}

// STATUS: error 50 without a node state file, not-ready or without subnets;
// success once the agent has written a ready state. ADD takes its subnet
// and MTU from the state file.
func TestKernelStatusAndNodeStateFile(t *testing.T) {
	f := newFixture(t, confOpts{})
	path := f.stateDir + "/node-state.json"
	want50 := func(when string) {
		t.Helper()
		err := f.runner.Status(context.Background())
		var te *types.Error
		if !errors.As(err, &te) || te.Code != types.ErrPluginNotAvailable {
			t.Fatalf("STATUS %s: want code 50, got %v", when, err)
		}
	}
	want50("without a node state file")
	p := f.newPodNS()
	if err := f.add(p); err == nil || !strings.Contains(err.Error(), "not ready") {
		t.Fatalf("ADD without node state: want not-ready error, got %v", err)
	}
	if err := podlink.WriteNodeState(path, &podlink.NodeState{NodeName: "n1"}); err != nil {
		t.Fatal(err)
	}
	want50("without pod subnets")
	if err := podlink.WriteNodeState(path, &podlink.NodeState{NodeName: "n1", PodCIDRs: mustPrefixes("10.88.3.0/24"), MTU: 1380, Reason: "routes pending"}); err != nil {
		t.Fatal(err)
	}
	want50("before the node is ready")
	if err := podlink.WriteNodeState(path, &podlink.NodeState{NodeName: "n1", PodCIDRs: mustPrefixes("10.88.3.0/24"), MTU: 1380, Ready: true}); err != nil {
		t.Fatal(err)
	}
	if err := f.runner.Status(context.Background()); err != nil {
		t.Fatalf("STATUS when ready: %v", err)
	}
	f.mustAdd(p)
	if !strings.HasPrefix(p.addr.String(), "10.88.3.") {
		t.Fatalf("address %s not from the node state file's subnet", p.addr)
	}
	var mtu int
	_ = p.ns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("eth0")
		if err == nil {
			mtu = l.Attrs().MTU
		}
		return err
	})
	if mtu != 1380 {
		t.Fatalf("pod MTU %d, want the node state file's 1380", mtu)
	}
}

// ADD on an interface that already exists fails and leaves the existing
// attachment (and its address) intact.
func TestKernelAddExistingInterfaceFails(t *testing.T) {
	f := newFixture(t, confOpts{subnets: []string{"10.88.4.0/24"}})
	p := f.newPodNS()
	f.mustAdd(p)
	first := p.addr
	err := f.add(p)
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second ADD: want 'already exists', got %v", err)
	}
	if al := f.allocations(); len(al) != 1 || al[0].Addr != first {
		t.Fatalf("failed ADD disturbed the existing allocation: %v", al)
	}
	if err := f.runner.Check(context.Background(), p.id, p.ns.Path(), "eth0"); err != nil {
		t.Fatalf("existing attachment broken by the failed ADD: %v", err)
	}
}

// A late ADD failure (IPv6 disabled in the pod while the config is
// dual-stack: the IPv6 address is refused after the veth exists) rolls back
// the interface, routes and allocations.
func TestKernelAddRollsBackLateFailure(t *testing.T) {
	f := newFixture(t, confOpts{subnets: []string{"10.88.5.0/24", "fd00:88:5::/120"}})
	p := f.newPodNS()
	if err := cnirunner.Sysctl(p.ns, "net/ipv6/conf/all/disable_ipv6", "1"); err != nil {
		t.Fatal(err)
	}
	if err := cnirunner.Sysctl(p.ns, "net/ipv6/conf/default/disable_ipv6", "1"); err != nil {
		t.Fatal(err)
	}
	if err := f.add(p); err == nil {
		t.Fatal("ADD succeeded although the pod refuses IPv6")
	}
	if l, al, r := f.hostLinks(), f.allocations(), f.podRoutes(); len(l)+len(al)+len(r) != 0 {
		t.Fatalf("failed ADD leaked: links %v, allocations %v, routes %v", l, al, r)
	}
	var podLinks int
	_ = p.ns.Do(func(ns.NetNS) error {
		if _, err := netlink.LinkByName("eth0"); err == nil {
			podLinks++
		}
		return nil
	})
	if podLinks != 0 {
		t.Fatal("failed ADD left eth0 in the pod")
	}
}

// A log line per call, naming the command and the container.
func TestKernelLogsOneLinePerCall(t *testing.T) {
	f := newFixture(t, confOpts{subnets: []string{"10.88.6.0/24"}})
	p := f.newPodNS()
	f.mustAdd(p)
	if err := f.del(p); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(f.stateDir + "/cni.log")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"command":"ADD"`) || !strings.Contains(lines[1], `"command":"DEL"`) ||
		!strings.Contains(lines[0], p.id) || !strings.Contains(lines[0], "durationMs") {
		t.Fatalf("log lines: %q", lines)
	}
}
