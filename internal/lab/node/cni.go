package node

import (
	"fmt"
	"net/netip"
	"path/filepath"

	"github.com/trellisnet/trellis/internal/atomicfile"
	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/nodesetup"
	"github.com/trellisnet/trellis/internal/podlink"
)

// staticCNIMTU is the pod MTU of a node without the agent (no overlay: the
// underlay's 1500).
const staticCNIMTU = 1500

// WriteStaticCNI sets node s up for pods the way the agent's node setup
// does, for a lab running without the agent: the plugin installed from the
// node's /opt/trellis/bin, the node state file with podCIDRs, and the
// conflist rendered by the agent's own renderer with the agent's defaults.
// Pods then reach pods on the same node only (no routes between nodes).
func WriteStaticCNI(s Spec, podCIDRs []netip.Prefix) error {
	c := config.Default()
	paths := map[string]string{}
	for _, p := range []string{agentInstallDir + "/" + nodesetup.PluginName, c.CNIBinDir, c.NodeStateFile,
		filepath.Join(c.CNIConfDir, nodesetup.ConflistName)} {
		if paths[p] = s.HostPath(p); paths[p] == "" {
			return fmt.Errorf("node %s: %s is not on a node-private path", s.Name, p)
		}
	}
	if _, err := nodesetup.InstallPlugin(paths[agentInstallDir+"/"+nodesetup.PluginName], paths[c.CNIBinDir]); err != nil {
		return fmt.Errorf("node %s: %w", s.Name, err)
	}
	st := &podlink.NodeState{NodeName: s.Name, PodCIDRs: podCIDRs, MTU: staticCNIMTU, Ready: true}
	if err := podlink.WriteNodeState(paths[c.NodeStateFile], st); err != nil {
		return fmt.Errorf("node %s: writing the node state file: %w", s.Name, err)
	}
	conf, err := nodesetup.RenderConflist(nodesetup.ConflistParams{
		CNIVersion: c.CNIConfVersion, MTU: staticCNIMTU, NodeStateFile: c.NodeStateFile,
		IPAMDataDir: c.IPAMDataDir, LogFile: c.CNILogFile, LogLevel: c.CNILogLevel,
	})
	if err != nil {
		return fmt.Errorf("node %s: %w", s.Name, err)
	}
	conflist := paths[filepath.Join(c.CNIConfDir, nodesetup.ConflistName)]
	if err := atomicfile.Write(conflist, conf, 0o644); err != nil {
		return fmt.Errorf("node %s: writing the conflist: %w", s.Name, err)
	}
	return nil
}
