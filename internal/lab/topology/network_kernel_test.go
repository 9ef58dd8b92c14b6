//go:build kernel

package topology

import (
	"context"
	"fmt"
	"net"
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
	if os.Geteuid() != 0 {
		t.Fatal("TestKernelLabNetwork needs root (network namespaces)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topo, err := Plan(Options{Nodes: 3, Subnets: 2, RoutingMode: "auto", APIPort: 16443})
	if err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("tlk%d-", os.Getpid()%100000)
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
		if err := reach(c.from, c.to); err != nil {
			t.Errorf("%s cannot reach %s (%s): %v", c.from.Name, c.to.Name, c.to.Addr, err)
		}
	}
}

// reach opens a TCP listener in to's namespace and connects from from's.
func reach(from, to Host) error {
	var l net.Listener
	err := ns.WithNetNSPath("/run/netns/"+to.Netns, func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp", net.JoinHostPort(to.Addr.String(), "7777"))
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
	c, err := DialInNetns("/run/netns/"+from.Netns, "tcp", net.JoinHostPort(to.Addr.String(), "7777"), 3*time.Second)
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
