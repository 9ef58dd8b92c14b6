package topology

import (
	"fmt"
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
	got := Overlaps(host)
	if len(got) != 2 || got[0] != host[2] || got[1] != host[3] {
		t.Errorf("Overlaps = %v, want [%s %s]", got, host[2], host[3])
	}
	// A wider cluster CIDR is a wider lab range, in every family with IPv4.
	for _, family := range []string{IPv4, Dual} {
		wide, err := Plan(Options{Nodes: 3, Subnets: 2, RoutingMode: "auto", APIPort: 16443, IPFamily: family,
			ClusterCIDR: "10.244.0.0/14", NodeCIDRMask: 27})
		if err != nil {
			t.Fatal(err)
		}
		if got := wide.Overlaps([]netip.Prefix{netip.MustParsePrefix("10.246.1.0/24")}); len(got) != 1 {
			t.Errorf("%s: Overlaps with cluster CIDR %s = %v, want 10.246.1.0/24", family, wide.Options.ClusterCIDR, got)
		}
		if f := wide.Primary(); f.ClusterCIDR.String() != "10.244.0.0/14" || f.NodeMaskSize != 27 {
			t.Errorf("%s: IPv4 family %s /%d, want 10.244.0.0/14 /27", family, f.ClusterCIDR, f.NodeMaskSize)
		}
	}
	plain, err := Plan(Options{Nodes: 3, Subnets: 2, RoutingMode: "auto", APIPort: 16443})
	if err != nil {
		t.Fatal(err)
	}
	if got := plain.Overlaps([]netip.Prefix{netip.MustParsePrefix("10.246.1.0/24")}); len(got) != 0 {
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
	// The flags set the IPv4 range: an IPv6-only lab refuses them, a dual
	// one takes them.
	six := ok
	six.IPFamily = IPv6
	if err := six.Validate(); err == nil || !strings.Contains(err.Error(), "--ip-family ipv6") {
		t.Errorf("--cluster-cidr with --ip-family ipv6: error %v", err)
	}
	six.ClusterCIDR, six.NodeCIDRMask = ClusterCIDR, DefaultNodeCIDRMask
	if err := six.Validate(); err != nil {
		t.Errorf("IPv6 lab with the default (flag) cluster CIDR refused: %v", err)
	}
	dual := ok
	dual.IPFamily = Dual
	if err := dual.Validate(); err != nil {
		t.Errorf("dual lab with cluster CIDR %s refused: %v", dual.ClusterCIDR, err)
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
		if len(topo.Overlaps([]netip.Prefix{p})) != 1 {
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

func TestPlanIPFamilies(t *testing.T) {
	for _, c := range []struct {
		family            string
		clusterCIDRs      string
		serviceCIDRs      string
		masks             []int
		node1IPs, apiURL  string
		dnsIPs            string
		hasIPv6, agentV4s bool
	}{
		{"", "[10.244.0.0/16]", "[10.96.0.0/16]", []int{24}, "[172.30.1.10]", "https://172.30.1.2:6443", "[10.96.0.10]", false, true},
		{IPv4, "[10.244.0.0/16]", "[10.96.0.0/16]", []int{24}, "[172.30.1.10]", "https://172.30.1.2:6443", "[10.96.0.10]", false, true},
		{IPv6, "[fd74:7265:6c01::/48]", "[fd74:7265:6c02::/112]", []int{64}, "[fd74:7265:6c00:1::10]",
			"https://[fd74:7265:6c00:1::2]:6443", "[fd74:7265:6c02::a]", true, false},
		{Dual, "[10.244.0.0/16 fd74:7265:6c01::/48]", "[10.96.0.0/16 fd74:7265:6c02::/112]", []int{24, 64},
			"[172.30.1.10 fd74:7265:6c00:1::10]", "https://172.30.1.2:6443", "[10.96.0.10 fd74:7265:6c02::a]", true, true},
	} {
		topo, err := Plan(Options{Nodes: 3, Subnets: 2, RoutingMode: "auto", APIPort: 16443, IPFamily: c.family})
		if err != nil {
			t.Fatalf("%q: %v", c.family, err)
		}
		var masks []int
		for _, f := range topo.ClusterFamilies() {
			masks = append(masks, f.NodeMaskSize)
			// A node's pod CIDR must fit the cluster CIDR at most 16
			// bits smaller (kube-controller-manager's limit), and an
			// IPv6 node gets a /64 out of a /48 or wider.
			if d := f.NodeMaskSize - f.ClusterCIDR.Bits(); d < 1 || d > 16 {
				t.Errorf("%q: node mask /%d out of %s", c.family, f.NodeMaskSize, f.ClusterCIDR)
			}
			if f.IPv6 && (f.NodeMaskSize != 64 || f.ClusterCIDR.Bits() > 48) {
				t.Errorf("%q: IPv6 node mask /%d out of %s", c.family, f.NodeMaskSize, f.ClusterCIDR)
			}
			if !f.ServiceCIDR.Contains(f.APIServiceIP) || !f.ServiceCIDR.Contains(f.ClusterDNSIP) {
				t.Errorf("%q: %s or %s outside %s", c.family, f.APIServiceIP, f.ClusterDNSIP, f.ServiceCIDR)
			}
		}
		for got, want := range map[string]string{
			fmt.Sprint(topo.ClusterCIDRs()): c.clusterCIDRs, fmt.Sprint(topo.ServiceCIDRs()): c.serviceCIDRs,
			fmt.Sprint(masks): fmt.Sprint(c.masks), fmt.Sprint(topo.HostIPs(topo.Nodes[0])): c.node1IPs,
			topo.APIServerURL(): c.apiURL, fmt.Sprint(topo.ClusterDNSIPs()): c.dnsIPs,
		} {
			if got != want {
				t.Errorf("%q: got %s, want %s", c.family, got, want)
			}
		}
		if topo.HasIPv6() != c.hasIPv6 || (len(topo.ClusterCIDRs4()) > 0) != c.agentV4s {
			t.Errorf("%q: HasIPv6 %v, IPv4 cluster CIDRs %v", c.family, topo.HasIPv6(), topo.ClusterCIDRs4())
		}
		for _, p := range append(topo.ClusterCIDRs(), topo.ServiceCIDRs()...) {
			if len(topo.Overlaps([]netip.Prefix{p})) != 1 {
				t.Errorf("%q: %s is not among the lab's ranges %v", c.family, p, topo.LabRanges())
			}
		}
		if !c.hasIPv6 {
			if fmt.Sprint(topo.LabRanges()) != fmt.Sprint(LabRanges()) {
				t.Errorf("%q: lab ranges %v, want the IPv4 lab's %v", c.family, topo.LabRanges(), LabRanges())
			}
			if topo.Nodes[0].Addr6.IsValid() || topo.Subnets[0].Prefix6.IsValid() || topo.ExternalGW6.IsValid() {
				t.Errorf("%q: an IPv4 lab got IPv6 underlay addresses", c.family)
			}
			continue
		}
		checkUnderlay6(t, c.family, topo)
	}
}

// checkUnderlay6: every host of a lab with IPv6 has an IPv6 address in
// its subnet's /64 (the same host number as its IPv4 one), the router is
// every subnet's gateway, no two hosts share an address, every prefix is
// in the lab's ULA range and none is the machine's kind of ULA (fd00::/8
// is wide: the lab keeps to its own /46).
func checkUnderlay6(t *testing.T, family string, topo Topology) {
	t.Helper()
	lab6 := netip.MustParsePrefix(labRange6)
	seen := map[netip.Addr]string{}
	hosts := append([]Host{topo.ControlPlane, topo.External}, topo.Nodes...)
	for _, h := range hosts {
		if !h.Addr6.IsValid() || !h.Gateway6.IsValid() {
			t.Errorf("%q: %s has no IPv6 address or gateway", family, h.Name)
			continue
		}
		if other, dup := seen[h.Addr6]; dup {
			t.Errorf("%q: %s and %s share %s", family, h.Name, other, h.Addr6)
		}
		seen[h.Addr6] = h.Name
		if !lab6.Contains(h.Addr6) || !h.Addr6.IsPrivate() {
			t.Errorf("%q: %s's %s is not a ULA in %s", family, h.Name, h.Addr6, lab6)
		}
		if h.Subnet >= 0 {
			s := topo.Subnets[h.Subnet]
			if !s.Prefix6.Contains(h.Addr6) || h.Gateway6 != s.Gateway6 || s.Prefix6.Bits() != 64 {
				t.Errorf("%q: %s %s / gw %s vs subnet %s gw %s", family, h.Name, h.Addr6, h.Gateway6, s.Prefix6, s.Gateway6)
			}
		}
	}
	if got := topo.Nodes[1].Addr6.String(); got != "fd74:7265:6c00:2::10" {
		t.Errorf("%q: node2 (172.30.2.10) has %s", family, got)
	}
	if got := topo.External.Addr6.String(); got != "fd74:7265:6c00:250::2" || !topo.ExternalGW6.Contains(topo.External.Gateway6) {
		t.Errorf("%q: external %s via %s (router %s)", family, got, topo.External.Gateway6, topo.ExternalGW6)
	}
	for _, p := range append(topo.ClusterCIDRs(), topo.ServiceCIDRs()...) {
		if p.Addr().Is6() && !lab6.Contains(p.Addr()) {
			t.Errorf("%q: %s outside %s", family, p, lab6)
		}
	}
	// The machine's own ULA (fd00::/64 here) is not the lab's; the lab's
	// ranges are reported as overlapping.
	host := []netip.Prefix{netip.MustParsePrefix("fd00::/64"), netip.MustParsePrefix("::/0"),
		netip.MustParsePrefix("fd74:7265:6c01:5::/64")}
	if got := topo.Overlaps(host); len(got) != 1 || got[0] != host[2] {
		t.Errorf("%q: Overlaps = %v, want [%s]", family, got, host[2])
	}
	if got := Overlaps(host); len(got) != 0 {
		t.Errorf("the IPv4 ranges overlap %v", got)
	}
}

func TestIPFamilyOptions(t *testing.T) {
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Nodes: 1, Subnets: 1, RoutingMode: "auto", APIPort: 16443, IPFamily: "ipv5"}, "--ip-family"},
		{Options{Nodes: 1, Subnets: 1, RoutingMode: "auto", APIPort: 16443, IPFamily: Dual, BGP: true}, "IPv4-only"},
	} {
		if err := c.o.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error mentioning %q", c.o, err, c.want)
		}
	}
	// The state of a lab made before the families were recorded reads as
	// an IPv4 lab.
	var old Topology
	if f := old.ClusterFamilies(); len(f) != 1 || f[0] != DefaultFamily4() || old.HasIPv6() {
		t.Errorf("families of an old state: %+v", f)
	}
}
