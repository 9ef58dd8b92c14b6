//go:build kernel

package topology

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// TestKernelLabNetwork builds a lab underlay (namespaces renamed with a
// test-unique prefix so a running lab is not disturbed) and checks that nodes
// on different subnets reach each other and the external host only through
// the router, and that the machine's own namespace gained no interface.
func TestKernelLabNetwork(t *testing.T) {
	topo := buildTestNetwork(t, IPv4, "tlk")
	n1, n2, n3 := topo.Nodes[0], topo.Nodes[1], topo.Nodes[2]
	if n1.Subnet == n2.Subnet || n1.Subnet != n3.Subnet {
		t.Fatalf("unexpected subnets %d %d %d", n1.Subnet, n2.Subnet, n3.Subnet)
	}
	for _, c := range []struct {
		from, to Host
	}{
		{n1, n3},                // same subnet, L2
		{n1, n2},                // across the router
		{n2, topo.ControlPlane}, // node to control plane across the router
		{n1, topo.External},     // node to the external host behind the router
	} {
		if err := reach(c.from, c.to, c.to.Addr); err != nil {
			t.Errorf("%s cannot reach %s (%s): %v", c.from.Name, c.to.Name, c.to.Addr, err)
		}
	}
}

// TestKernelLabNetworkIPv6 builds a dual-stack underlay: every host reaches
// the others over IPv6 on its subnet, across the router and to the external
// host (and over IPv4 still), and the router has no IPv6 route but the
// lab's connected subnets, so nothing can leave the lab.
func TestKernelLabNetworkIPv6(t *testing.T) {
	topo := buildTestNetwork(t, Dual, "tlk6")
	n1, n2, n3 := topo.Nodes[0], topo.Nodes[1], topo.Nodes[2]
	for _, c := range []struct {
		from, to Host
	}{
		{n1, n3}, {n1, n2}, {n2, topo.ControlPlane}, {n1, topo.External}, {topo.External, n2},
	} {
		for _, a := range []netip.Addr{c.to.Addr6, c.to.Addr} {
			if err := reach(c.from, c.to, a); err != nil {
				t.Errorf("%s cannot reach %s (%s): %v", c.from.Name, c.to.Name, a, err)
			}
		}
	}
	out, err := exec.Command("ip", "-n", topo.RouterNetns, "-6", "route", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	lab6 := netip.MustParsePrefix(labRange6)
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		dst, err := netip.ParsePrefix(strings.Fields(l)[0])
		if err != nil || !(lab6.Contains(dst.Addr()) || dst.Addr().IsLinkLocalUnicast()) || dst.Bits() < 64 {
			t.Errorf("router route %q leads outside the lab's IPv6 subnets", l)
		}
	}
}

// buildTestNetwork builds the lab underlay of a 3-node, 2-subnet lab of
// family, its namespaces renamed with a test-unique prefix so a running lab
// is not disturbed, checks the machine's namespace gained no interface, and
// removes it at the end of the test.
func buildTestNetwork(t *testing.T, family, tag string) Topology {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the lab network tests need root (network namespaces)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topo, err := Plan(Options{Nodes: 3, Subnets: 2, RoutingMode: "auto", APIPort: 16443, IPFamily: family})
	if err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("%s%d-", tag, os.Getpid()%100000)
	rename := func(s string) string { return prefix + strings.TrimPrefix(s, NetnsPrefix) }
	topo.SwitchNetns, topo.RouterNetns = rename(topo.SwitchNetns), rename(topo.RouterNetns)
	topo.ControlPlane.Netns, topo.External.Netns = rename(topo.ControlPlane.Netns), rename(topo.External.Netns)
	for i := range topo.Nodes {
		topo.Nodes[i].Netns = rename(topo.Nodes[i].Netns)
	}
	hostLinks := links(t, "")
	t.Cleanup(func() {
		if err := DeleteNetns(context.Background(), topo.Netnses()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := BuildNetwork(ctx, topo); err != nil {
		t.Fatal(err)
	}
	if got := links(t, ""); got != hostLinks {
		t.Errorf("the machine's namespace changed:\nbefore: %s\nafter: %s", hostLinks, got)
	}
	return topo
}

// reach opens a TCP listener on addr in to's namespace and connects from
// from's.
func reach(from, to Host, addr netip.Addr) error {
	var l net.Listener
	err := ns.WithNetNSPath("/run/netns/"+to.Netns, func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp", net.JoinHostPort(addr.String(), "7777"))
		return err
	})
	if err != nil {
		return err
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Close()
		}
	}()
	c, err := DialInNetns("/run/netns/"+from.Netns, "tcp", net.JoinHostPort(addr.String(), "7777"), 3*time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

func links(t *testing.T, netns string) string {
	t.Helper()
	args := []string{"-o", "link", "show"}
	if netns != "" {
		args = append([]string{"-n", netns}, args...)
	}
	out, err := exec.Command("ip", args...).Output()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			names = append(names, f[1])
		}
	}
	return strings.Join(names, " ")
}
