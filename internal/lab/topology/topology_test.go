package topology

import (
	"net/netip"
	"strings"
	"testing"
)

func TestPlanSpreadsNodesOverSubnets(t *testing.T) {
	topo, err := Plan(Options{Nodes: 5, Subnets: 2, RoutingMode: "auto", APIPort: 16443})
	if err != nil {
		t.Fatal(err)
	}
	if len(topo.Subnets) != 2 || len(topo.Nodes) != 5 {
		t.Fatalf("got %d subnets, %d nodes", len(topo.Subnets), len(topo.Nodes))
	}
	seen := map[netip.Addr]string{}
	perSubnet := map[int]int{}
	for _, n := range topo.Nodes {
		sn := topo.Subnets[n.Subnet]
		if !sn.Prefix.Contains(n.Addr) {
			t.Errorf("%s address %s not in its subnet %s", n.Name, n.Addr, sn.Prefix)
		}
		if n.Gateway != sn.Gateway {
			t.Errorf("%s gateway %s, want %s", n.Name, n.Gateway, sn.Gateway)
		}
		if other, dup := seen[n.Addr]; dup {
			t.Errorf("%s and %s share %s", n.Name, other, n.Addr)
		}
		seen[n.Addr] = n.Name
		perSubnet[n.Subnet]++
		if !strings.HasPrefix(n.Netns, NetnsPrefix) {
			t.Errorf("netns %q lacks the lab prefix", n.Netns)
		}
	}
	if perSubnet[0] != 3 || perSubnet[1] != 2 {
		t.Errorf("nodes per subnet = %v, want 3 and 2", perSubnet)
	}
	if _, dup := seen[topo.ControlPlane.Addr]; dup {
		t.Errorf("control plane address %s collides with a node", topo.ControlPlane.Addr)
	}
	if _, err := topo.Node("node9"); err == nil {
		t.Error("unknown node accepted")
	}
	if got := topo.APIServerURL(); got != "https://172.30.1.2:6443" {
		t.Errorf("APIServerURL = %s", got)
	}
}

func TestOptionsValidateReportsAllProblems(t *testing.T) {
	err := Options{Nodes: 0, Subnets: 9, RoutingMode: "ospf", APIPort: 80}.Validate()
	if err == nil {
		t.Fatal("bad options accepted")
	}
	for _, want := range []string{"--nodes", "--subnets", "--routing-mode", "--api-port"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if err := (Options{Nodes: 3, Subnets: 2, RoutingMode: "vxlan", APIPort: 16443}).Validate(); err != nil {
		t.Errorf("good options refused: %v", err)
	}
}

func TestOverlaps(t *testing.T) {
	host := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("192.0.2.0/24"),
		netip.MustParsePrefix("10.96.5.0/24"), netip.MustParsePrefix("172.16.0.0/12")}
	got := Options{}.Overlaps(host)
	if len(got) != 2 || got[0] != host[2] || got[1] != host[3] {
		t.Errorf("Overlaps = %v, want [%s %s]", got, host[2], host[3])
	}
	// A wider cluster CIDR is a wider lab range.
	wide := Options{ClusterCIDR: "10.244.0.0/14"}
	if got := wide.Overlaps([]netip.Prefix{netip.MustParsePrefix("10.246.1.0/24")}); len(got) != 1 {
		t.Errorf("Overlaps with cluster CIDR %s = %v, want 10.246.1.0/24", wide.ClusterCIDR, got)
	}
	if got := (Options{}).Overlaps([]netip.Prefix{netip.MustParsePrefix("10.246.1.0/24")}); len(got) != 0 {
		t.Errorf("Overlaps with the default cluster CIDR = %v, want none", got)
	}
}

func TestClusterCIDROptions(t *testing.T) {
	base := Options{Nodes: 3, Subnets: 2, RoutingMode: "auto", APIPort: 16443}
	ok := base
	ok.ClusterCIDR, ok.NodeCIDRMask = "10.244.0.0/14", 24
	if err := ok.Validate(); err != nil {
		t.Errorf("cluster CIDR %s /%d refused: %v", ok.ClusterCIDR, ok.NodeCIDRMask, err)
	}
	for _, c := range []struct {
		cidr string
		mask int
		want string
	}{
		{"10.244.0.1/14", 24, "--cluster-cidr"},
		{"192.168.0.0/16", 24, "--cluster-cidr"},
		{"10.0.0.0/8", 24, "--cluster-cidr"},
		{"fd00::/64", 80, "--cluster-cidr"},
		{"10.244.0.0/16", 16, "--node-cidr-mask"},
		{"10.244.0.0/16", 29, "--node-cidr-mask"},
		{"10.128.0.0/9", 28, "16 bits"},
		{"10.244.0.0/24", 25, "fewer than --nodes"},
	} {
		o := base
		o.ClusterCIDR, o.NodeCIDRMask = c.cidr, c.mask
		err := o.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("cluster CIDR %s /%d: error %v, want one mentioning %q", c.cidr, c.mask, err, c.want)
		}
	}
}

func TestBGPOptions(t *testing.T) {
	ok := Options{Nodes: 3, Subnets: 2, RoutingMode: RoutingModeBGP, BGP: true, BGPPeering: "RouteReflector", BGPRestartTime: 30, APIPort: 16443}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid BGP options refused: %v", err)
	}
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Nodes: 3, Subnets: 2, RoutingMode: RoutingModeBGP, APIPort: 16443}, "add --bgp"},
		{Options{Nodes: 3, Subnets: 2, RoutingMode: "auto", BGP: true, Encryption: "wireguard", APIPort: 16443}, "encryption"},
		{Options{Nodes: 3, Subnets: 2, RoutingMode: "auto", BGP: true, BGPPeering: "Mesh", APIPort: 16443}, "--bgp-peering"},
		{Options{Nodes: 3, Subnets: 2, RoutingMode: "auto", BGPPeering: "FullMesh", APIPort: 16443}, "need --bgp"},
		{Options{Nodes: 3, Subnets: 2, RoutingMode: "auto", BGP: true, BGPRestartTime: 5000, APIPort: 16443}, "--bgp-restart-time"},
	} {
		err := c.o.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one mentioning %q", c.o, err, c.want)
		}
	}
}

func TestPlanWithBGP(t *testing.T) {
	topo, err := Plan(Options{Nodes: 3, Subnets: 2, RoutingMode: RoutingModeBGP, BGP: true, APIPort: 16443})
	if err != nil {
		t.Fatal(err)
	}
	if topo.OriginPrefix.String() != "172.30.251.0/24" || topo.OriginAddr.String() != "172.30.251.1" {
		t.Errorf("origin %s / %s", topo.OriginPrefix, topo.OriginAddr)
	}
	for _, s := range topo.Subnets {
		if !s.Prefix.Contains(s.MD5Addr) || s.MD5Addr == s.Gateway {
			t.Errorf("subnet %s: MD5 address %s", s.Prefix, s.MD5Addr)
		}
		for _, n := range topo.Nodes {
			if n.Addr == s.MD5Addr {
				t.Errorf("MD5 address %s is %s's", s.MD5Addr, n.Name)
			}
		}
	}
	// Every address the ToR adds lies in the lab's ranges: the overlap
	// check covers them, and nothing routes outside the lab.
	for _, p := range []netip.Prefix{topo.OriginPrefix, topo.ServicePrefix} {
		if len(topo.Options.Overlaps([]netip.Prefix{p})) != 1 {
			t.Errorf("%s is outside the lab's ranges", p)
		}
	}
	plain, err := Plan(Options{Nodes: 3, Subnets: 2, RoutingMode: "auto", APIPort: 16443})
	if err != nil {
		t.Fatal(err)
	}
	if plain.OriginPrefix.IsValid() || plain.Subnets[0].MD5Addr.IsValid() {
		t.Error("a lab without --bgp got the ToR's addresses")
	}
}
