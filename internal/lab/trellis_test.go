package lab

import (
	"strings"
	"testing"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/lab/install"
	"github.com/trellisnet/trellis/internal/lab/topology"
)

// The lab's settings reach the agent's configuration as the agent reads it.
func TestLabOverridesCarryEncryption(t *testing.T) {
	for _, c := range []struct{ flag, want string }{{"", "none"}, {"none", "none"}, {"wireguard", "wireguard"}} {
		topo, err := topology.Plan(topology.Options{Nodes: 2, Subnets: 1, RoutingMode: "vxlan", Encryption: c.flag, APIPort: 16443})
		if err != nil {
			t.Fatal(err)
		}
		doc, err := install.MergeConfig("routingMode: auto\n", labOverrides(topo))
		if err != nil {
			t.Fatal(err)
		}
		cfg := config.Default()
		if err := config.ParseFile([]byte(doc), cfg); err != nil {
			t.Fatalf("--encryption %q: the agent refuses its configuration: %v\n%s", c.flag, err, doc)
		}
		if string(cfg.Encryption) != c.want || cfg.RoutingMode != "vxlan" {
			t.Errorf("--encryption %q: agent config has encryption %q, mode %q; want %q, vxlan", c.flag, cfg.Encryption, cfg.RoutingMode, c.want)
		}
	}
	if _, err := topology.Plan(topology.Options{Nodes: 1, Subnets: 1, RoutingMode: "auto", Encryption: "ipsec", APIPort: 16443}); err == nil ||
		!strings.Contains(err.Error(), "--encryption") {
		t.Errorf("--encryption ipsec: %v, want an error naming the flag", err)
	}
}

// The agent gets the lab's cluster CIDRs of every family and the API
// server at its primary-family address, and accepts the result.
func TestLabOverridesPerIPFamily(t *testing.T) {
	for _, c := range []struct {
		family, apiServer string
		cidrs             int
	}{
		{topology.IPv4, "https://172.30.1.2:6443", 1},
		{topology.Dual, "https://172.30.1.2:6443", 2},
		{topology.IPv6, "https://[fd74:7265:6c00:1::2]:6443", 1},
	} {
		topo, err := topology.Plan(topology.Options{Nodes: 2, Subnets: 1, RoutingMode: "auto", APIPort: 16443, IPFamily: c.family})
		if err != nil {
			t.Fatal(err)
		}
		doc, err := install.MergeConfig("routingMode: auto\nclusterCIDRs: [10.0.0.0/8]\n", labOverrides(topo))
		if err != nil {
			t.Fatal(err)
		}
		cfg := config.Default()
		if err := config.ParseFile([]byte(doc), cfg); err != nil {
			t.Fatalf("%s: the agent refuses its configuration: %v\n%s", c.family, err, doc)
		}
		if len(cfg.ClusterCIDRs) != c.cidrs || cfg.APIServer != c.apiServer {
			t.Errorf("%s: cluster CIDRs %v, API server %s; want %d, %s", c.family, cfg.ClusterCIDRs, cfg.APIServer, c.cidrs, c.apiServer)
		}
	}
}

// --cluster-cidr is the agent's clusterCIDRs in an IPv4 and a dual lab.
func TestLabOverridesClusterCIDROption(t *testing.T) {
	for _, family := range []string{topology.IPv4, topology.Dual} {
		topo, err := topology.Plan(topology.Options{Nodes: 2, Subnets: 1, RoutingMode: "auto", APIPort: 16443, IPFamily: family,
			ClusterCIDR: "10.244.0.0/14", NodeCIDRMask: 27})
		if err != nil {
			t.Fatal(err)
		}
		doc, err := install.MergeConfig("routingMode: auto\nclusterCIDRs: [10.0.0.0/8]\n", labOverrides(topo))
		if err != nil {
			t.Fatal(err)
		}
		cfg := config.Default()
		if err := config.ParseFile([]byte(doc), cfg); err != nil {
			t.Fatalf("%s: the agent refuses its configuration: %v\n%s", family, err, doc)
		}
		if len(cfg.ClusterCIDRs) == 0 || cfg.ClusterCIDRs[0].String() != "10.244.0.0/14" ||
			(family == topology.Dual) != (len(cfg.ClusterCIDRs) == 2 && cfg.ClusterCIDRs[1].String() == "fd74:7265:6c01::/48") {
			t.Errorf("%s: agent cluster CIDRs %v, want 10.244.0.0/14 (and, dual, fd74:7265:6c01::/48)", family, cfg.ClusterCIDRs)
		}
	}
}
