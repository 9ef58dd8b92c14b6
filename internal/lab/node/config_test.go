package node

import (
	"strings"
	"testing"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/lab/images"
	"github.com/trellisnet/trellis/internal/lab/state"
	"github.com/trellisnet/trellis/internal/lab/topology"
)

func TestNodeConfigs(t *testing.T) {
	topo, err := topology.Plan(topology.Options{Nodes: 2, Subnets: 1, RoutingMode: "native", APIPort: 16443})
	if err != nil {
		t.Fatal(err)
	}
	s := NewSpec(state.Paths{Root: "/x"}, topo.Nodes[1], nil, nil, "native", true)
	kc := KubeletConfig(s)
	for _, want := range []string{"failCgroupV1: false", "oomScoreAdj: 0", "cgroupRoot: /trellis-lab/node2",
		"address: 172.30.1.11", "clusterDNS: [10.96.0.10]", "cgroupsPerQOS: true"} {
		if !strings.Contains(kc, want) {
			t.Errorf("kubelet config lacks %q", want)
		}
	}
	if !strings.Contains(ContainerdConfig(), "restrict_oom_score_adj = true") ||
		!strings.Contains(ContainerdConfig(), images.PauseImage) {
		t.Error("containerd config lacks restrict_oom_score_adj or the sandbox image")
	}
	if got := s.HostPath("/etc/cni/net.d/10-trellis.conflist"); got != "/x/nodes/node2/fs/etc-cni-net.d/10-trellis.conflist" {
		t.Errorf("hostPath = %s", got)
	}
	if s.HostPath("/etc/passwd") != "" {
		t.Error("a non-private path mapped to a node directory")
	}
	args := strings.Join(AgentArgs(s), " ")
	if !strings.Contains(args, "--node-name=node2") || !strings.Contains(args, "--config=/etc/trellis/config.yaml") {
		t.Errorf("agent args = %s", args)
	}
	// The configuration file is read by the agent's own loader.
	c := config.Default()
	if err := config.ParseFile([]byte(AgentConfig("native", "")), c); err != nil {
		t.Fatalf("agent config file: %v", err)
	}
	if c.RoutingMode != "native" || len(c.ClusterCIDRs) != 1 || c.ClusterCIDRs[0].String() != topology.ClusterCIDR {
		t.Errorf("agent config file parsed as mode %q, cluster CIDRs %v", c.RoutingMode, c.ClusterCIDRs)
	}
	if c.EncryptionEnabled() {
		t.Error("encryption on without the lab asking for it")
	}
	c = config.Default()
	if err := config.ParseFile([]byte(AgentConfig("vxlan", "wireguard")), c); err != nil {
		t.Fatalf("agent config file with encryption: %v", err)
	}
	if c.RoutingMode != "vxlan" || !c.EncryptionEnabled() {
		t.Errorf("agent config file parsed as mode %q, encryption %q; want vxlan, wireguard", c.RoutingMode, c.Encryption)
	}
}

func TestNamedLabKubeletCgroupRoot(t *testing.T) {
	e2e := state.NewPaths("e2e")
	topo, err := topology.Plan(topology.Options{Nodes: 1, Subnets: 1, RoutingMode: "auto", APIPort: 17000, NetnsPrefix: e2e.NetnsPrefix()})
	if err != nil {
		t.Fatal(err)
	}
	if s := NewSpec(e2e, topo.Nodes[0], nil, nil, "auto", true); !strings.Contains(KubeletConfig(s), "cgroupRoot: /trellis-lab-e2e/node1") {
		t.Errorf("kubelet cgroup root not per lab:\n%s", KubeletConfig(s))
	}
}

func TestNodeConfigsPerIPFamily(t *testing.T) {
	for _, c := range []struct {
		family, nodeIP, address, proxyCIDR, dns string
		agentCIDRs                              int
	}{
		{topology.IPv6, "--node-ip=fd74:7265:6c00:1::10", "address: fd74:7265:6c00:1::10", "clusterCIDR: fd74:7265:6c01::/48",
			"clusterDNS: [fd74:7265:6c02::a]", 1},
		{topology.Dual, "--node-ip=172.30.1.10,fd74:7265:6c00:1::10", "address: 172.30.1.10",
			"clusterCIDR: 10.244.0.0/16,fd74:7265:6c01::/48", "clusterDNS: [10.96.0.10]", 2},
	} {
		topo, err := topology.Plan(topology.Options{Nodes: 2, Subnets: 1, RoutingMode: "auto", APIPort: 16443, IPFamily: c.family})
		if err != nil {
			t.Fatal(err)
		}
		s := NewSpec(state.Paths{Root: "/x"}, topo.Nodes[0], nil, nil, "auto", true)
		s.Cluster = ClusterOf(topo, topo.Nodes[0])
		if got := "--node-ip=" + strings.Join(s.cluster().NodeIPs, ","); got != c.nodeIP {
			t.Errorf("%s: kubelet %s, want %s", c.family, got, c.nodeIP)
		}
		for doc, want := range map[string]string{KubeletConfig(s): c.address, KubeProxyConfig(s): c.proxyCIDR} {
			if !strings.Contains(doc, want+"\n") {
				t.Errorf("%s: config lacks %q:\n%s", c.family, want, doc)
			}
		}
		if !strings.Contains(KubeletConfig(s), c.dns+"\n") {
			t.Errorf("%s: kubelet config lacks %q", c.family, c.dns)
		}
		// The agent gets the cluster CIDRs of every family, and accepts
		// its file.
		cfg := config.Default()
		if err := config.ParseFile([]byte(agentConfig(s.cluster().AgentClusterCIDRs, "auto", "")), cfg); err != nil {
			t.Fatalf("%s: the agent refuses its configuration: %v", c.family, err)
		}
		if len(cfg.ClusterCIDRs) != c.agentCIDRs {
			t.Errorf("%s: agent cluster CIDRs %v", c.family, cfg.ClusterCIDRs)
		}
	}
	// An IPv4 lab's spec carries no Cluster and renders as before.
	topo, _ := topology.Plan(topology.Options{Nodes: 1, Subnets: 1, RoutingMode: "auto", APIPort: 16443})
	s := NewSpec(state.Paths{Root: "/x"}, topo.Nodes[0], nil, nil, "auto", true)
	if !strings.Contains(KubeProxyConfig(s), "clusterCIDR: 10.244.0.0/16\n") || s.cluster().NodeIPs[0] != "172.30.1.10" ||
		AgentConfig("auto", "") != "routingMode: auto\nclusterCIDRs: [\"10.244.0.0/16\"]\n" {
		t.Errorf("IPv4 lab's node configuration changed:\n%s", KubeProxyConfig(s))
	}
	// up gives every node its Cluster; in an IPv4 lab that renders the
	// same files as a spec without one.
	withCluster := s
	withCluster.Cluster = ClusterOf(topo, topo.Nodes[0])
	if KubeletConfig(withCluster) != KubeletConfig(s) || KubeProxyConfig(withCluster) != KubeProxyConfig(s) ||
		agentConfig(withCluster.cluster().AgentClusterCIDRs, "auto", "") != AgentConfig("auto", "") ||
		strings.Join(withCluster.cluster().NodeIPs, ",") != s.Addr {
		t.Errorf("an IPv4 lab's Cluster renders differently:\n%s\n%s", KubeletConfig(withCluster), KubeProxyConfig(withCluster))
	}
}

// --cluster-cidr reaches kube-proxy and the agent's clusterCIDRs through
// the node's Cluster, in an IPv4 and a dual lab.
func TestNodeConfigsClusterCIDROption(t *testing.T) {
	for _, c := range []struct{ family, proxyCIDR, agentCIDRs string }{
		{topology.IPv4, "clusterCIDR: 10.244.0.0/14\n", `["10.244.0.0/14"]`},
		{topology.Dual, "clusterCIDR: 10.244.0.0/14,fd74:7265:6c01::/48\n", `["10.244.0.0/14", "fd74:7265:6c01::/48"]`},
	} {
		topo, err := topology.Plan(topology.Options{Nodes: 2, Subnets: 1, RoutingMode: "auto", APIPort: 16443, IPFamily: c.family,
			ClusterCIDR: "10.244.0.0/14", NodeCIDRMask: 27})
		if err != nil {
			t.Fatal(err)
		}
		s := NewSpec(state.Paths{Root: "/x"}, topo.Nodes[0], nil, nil, "auto", true)
		s.Cluster = ClusterOf(topo, topo.Nodes[0])
		if !strings.Contains(KubeProxyConfig(s), c.proxyCIDR) {
			t.Errorf("%s: kube-proxy config lacks %q:\n%s", c.family, c.proxyCIDR, KubeProxyConfig(s))
		}
		if got, want := agentConfig(s.cluster().AgentClusterCIDRs, "auto", ""), "routingMode: auto\nclusterCIDRs: "+c.agentCIDRs+"\n"; got != want {
			t.Errorf("%s: agent config %q, want %q", c.family, got, want)
		}
	}
}
