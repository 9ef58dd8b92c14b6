package node

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/trellisnet/trellis/internal/lab/state"
	"github.com/trellisnet/trellis/internal/lab/topology"
	"github.com/trellisnet/trellis/internal/podlink"
)

// TestWriteStaticCNI checks what a node without the agent gets: the plugin
// installed, a node state file the plugin reads with the node's pod CIDR,
// and a conflist that points the plugin at that file, in the cniVersion the
// nodes' containerd accepts.
func TestWriteStaticCNI(t *testing.T) {
	topo, err := topology.Plan(topology.Options{Nodes: 1, Subnets: 1, RoutingMode: "auto", APIPort: 16443})
	if err != nil {
		t.Fatal(err)
	}
	s := NewSpec(state.Paths{Root: t.TempDir()}, topo.Nodes[0], nil, nil, "", true)
	if err := os.MkdirAll(s.HostPath(agentInstallDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.HostPath(agentInstallDir+"/trellis-cni"), []byte("plugin"), 0o755); err != nil {
		t.Fatal(err)
	}
	cidr := netip.MustParsePrefix("10.244.3.0/24")
	if err := WriteStaticCNI(s, []netip.Prefix{cidr}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(s.HostPath("/opt/cni/bin/trellis-cni")); err != nil || fi.Mode().Perm()&0o111 == 0 {
		t.Errorf("plugin not installed executable: %v %v", fi, err)
	}
	var conf struct {
		CNIVersion string `json:"cniVersion"`
		Plugins    []struct {
			Type          string `json:"type"`
			NodeStateFile string `json:"nodeStateFile"`
		} `json:"plugins"`
	}
	data, err := os.ReadFile(s.HostPath("/etc/cni/net.d/10-trellis.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &conf); err != nil {
		t.Fatal(err)
	}
	if conf.CNIVersion != "1.0.0" || len(conf.Plugins) != 1 || conf.Plugins[0].Type != "trellis-cni" {
		t.Fatalf("conflist = %s", data)
	}
	ns, err := podlink.ReadNodeState(s.HostPath(filepath.Clean(conf.Plugins[0].NodeStateFile)))
	if err != nil {
		t.Fatalf("the conflist's node state file: %v", err)
	}
	if len(ns.PodCIDRs) != 1 || ns.PodCIDRs[0] != cidr || !ns.Ready || ns.NodeName != "node1" {
		t.Errorf("node state = %+v", ns)
	}
}
