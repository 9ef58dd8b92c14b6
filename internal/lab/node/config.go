package node

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/trellisnet/trellis/internal/atomicfile"
	"github.com/trellisnet/trellis/internal/lab/images"
	"github.com/trellisnet/trellis/internal/lab/topology"
)

// ContainerdConfig renders the node's containerd configuration.
func ContainerdConfig() string {
	return fmt.Sprintf(`version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = %q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
`, containerdSock, images.PauseImage)
}

// KubeletConfig renders the node's KubeletConfiguration: the settings this
// machine needs (cgroup v1, no oom_score_adj changes) and a cgroup root of its
// own per node (with per-QoS cgroups below it), so several kubelets share the
// machine and every container of the node lives under /trellis-lab/<node>.
func KubeletConfig(s Spec) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %s
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %s}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://%s
cgroupDriver: cgroupfs
cgroupsPerQOS: true
cgroupRoot: /%s
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
clusterDNS: [%s]
clusterDomain: %s
resolvConf: ""
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
podPidsLimit: -1
maxPods: 250
`, s.cluster().NodeIPs[0], caPath, containerdSock, s.Group, s.cluster().ClusterDNS, topology.ClusterDomain)
}

// KubeProxyConfig renders kube-proxy's configuration (nftables mode).
func KubeProxyConfig(s Spec) string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {kubeconfig: %s/kube-proxy.conf}
hostnameOverride: %s
clusterCIDR: %s
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 0.0.0.0:10256
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
`, nodeLabDir, s.Name, strings.Join(s.cluster().ClusterCIDRs, ","))
}

// AgentArgs is exactly the command line a DaemonSet would run the agent with;
// the settings come from the configuration file, as from the DaemonSet's
// ConfigMap, so a mode change is a config change plus an agent restart.
func AgentArgs(s Spec) []string {
	return []string{agentInstallDir + "/trellis-agent", "--config=" + agentConfigPath,
		"--kubeconfig=" + agentKubeconfig, "--node-name=" + s.Name}
}

// agentConfigPath is where the node's agent reads its configuration file.
const agentConfigPath = "/etc/trellis/config.yaml"

// AgentConfig is the content of the node's agent configuration file in an
// IPv4 lab; encryption "" leaves the agent's default (none).
func AgentConfig(routingMode, encryption string) string {
	return agentConfig([]string{topology.ClusterCIDR}, routingMode, encryption)
}

// agentConfig is the agent's configuration file with clusterCIDRs.
func agentConfig(clusterCIDRs []string, routingMode, encryption string) string {
	quoted := make([]string, 0, len(clusterCIDRs))
	for _, c := range clusterCIDRs {
		quoted = append(quoted, strconv.Quote(c))
	}
	c := fmt.Sprintf("routingMode: %s\nclusterCIDRs: [%s]\n", routingMode, strings.Join(quoted, ", "))
	if encryption != "" {
		c += fmt.Sprintf("encryption: %s\n", encryption)
	}
	return c
}

// WriteAgentConfig replaces node s's agent configuration file with one for
// routingMode and encryption and records both in the node's spec; the
// agent reads the file at its next start (restart-agent).
func WriteAgentConfig(s Spec, routingMode, encryption string) error {
	hp := s.HostPath(agentConfigPath)
	if hp == "" {
		return fmt.Errorf("node %s: %s is not on a node-private path", s.Name, agentConfigPath)
	}
	if err := atomicfile.Write(hp, []byte(agentConfig(s.cluster().AgentClusterCIDRs, routingMode, encryption)), 0o644); err != nil {
		return fmt.Errorf("node %s: writing the agent configuration: %w", s.Name, err)
	}
	s.RoutingMode, s.Encryption = routingMode, encryption
	return SaveSpec(s)
}
