// Package node is one lab node: its specification and private directories,
// the configuration files of its components (containerd, kubelet,
// kube-proxy, the Trellis agent), and the supervisor (`trellis-lab __node`)
// that sets up its private mounts and keeps those components running.
package node

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/trellisnet/trellis/internal/atomicfile"
	"github.com/trellisnet/trellis/internal/lab/state"
	"github.com/trellisnet/trellis/internal/lab/topology"
)

// Bind is one bind mount of a node-private directory onto a standard path.
type Bind struct {
	Src string `json:"src"`
	Dst string `json:"dst"`
}

// Spec is everything the node supervisor (`trellis-lab __node`) needs.
type Spec struct {
	Name        string            `json:"name"`
	Addr        string            `json:"addr"`
	Group       string            `json:"group"` // cgroup path: the kubelet's cgroupRoot
	Dir         string            `json:"dir"`
	Binds       []Bind            `json:"binds"`
	Images      []string          `json:"images"` // image tarballs to import
	Bin         map[string]string `json:"bin"`
	RoutingMode string            `json:"routingMode"`
	// Encryption is the agent's encryption setting in the process install
	// mode (none or wireguard; "" leaves the agent's default).
	Encryption string `json:"encryption,omitempty"`
	// AgentProcess: the supervisor runs trellis-agent as a process (the
	// lab's process install mode); otherwise kubelet runs it as a pod.
	AgentProcess bool `json:"agentProcess"`
	// Cluster is the cluster's addressing as the node's components see
	// it (nil: the IPv4 lab's, Addr as the node IP).
	Cluster *Cluster `json:"cluster,omitempty"`
}

// Cluster is what a node's components are told of the cluster's
// addressing, per IP family, primary family first.
type Cluster struct {
	NodeIPs      []string `json:"nodeIPs"`      // kubelet --node-ip: the Node's InternalIPs
	ClusterCIDRs []string `json:"clusterCIDRs"` // kube-proxy's clusterCIDR
	ClusterDNS   string   `json:"clusterDNS"`   // kubelet's clusterDNS: kube-dns's primary ClusterIP
	// AgentClusterCIDRs are the Trellis agent's clusterCIDRs: the cluster
	// CIDRs of every family (the agent routes no family they do not bound).
	AgentClusterCIDRs []string `json:"agentClusterCIDRs"`
}

// ClusterOf is node n's view of t's cluster addressing.
func ClusterOf(t topology.Topology, n topology.Host) *Cluster {
	c := &Cluster{ClusterDNS: t.Primary().ClusterDNSIP.String(), AgentClusterCIDRs: []string{}}
	for _, a := range t.HostIPs(n) {
		c.NodeIPs = append(c.NodeIPs, a.String())
	}
	for _, p := range t.ClusterCIDRs() {
		c.ClusterCIDRs = append(c.ClusterCIDRs, p.String())
	}
	for _, p := range t.ClusterCIDRs() {
		c.AgentClusterCIDRs = append(c.AgentClusterCIDRs, p.String())
	}
	return c
}

// cluster is s.Cluster or the IPv4 lab's.
func (s Spec) cluster() Cluster {
	if s.Cluster != nil {
		return *s.Cluster
	}
	return Cluster{NodeIPs: []string{s.Addr}, ClusterCIDRs: []string{topology.ClusterCIDR}, ClusterDNS: topology.ClusterDNSIP,
		AgentClusterCIDRs: []string{topology.ClusterCIDR}}
}

// ContainerdSocket is the node's containerd socket (in the node's mount
// namespace; Spec.HostPath gives its path on the machine).
const ContainerdSocket = "/run/containerd/containerd.sock"

// nodeMounts are the standard paths every node gets its own copy of.
var nodeMounts = []string{
	"/etc/cni/net.d", "/opt/cni/bin", "/var/lib/kubelet", "/run/containerd", "/var/lib/containerd",
	"/var/lib/trellis", "/var/log/trellis", "/var/log/pods", "/var/log/containers", "/var/lib/cni",
	"/run/netns", "/opt/trellis", "/etc/trellis", "/run/trellis",
	// wireguard-go's UAPI sockets (/var/run/wireguard/<device>.sock): every
	// node's agent names its device alike, so each node needs its own.
	"/run/wireguard",
}

// MountPoints lists the host paths node namespaces mount over.
func MountPoints() []string { return append([]string(nil), nodeMounts...) }

// In-node paths of the node's configuration (under /etc/trellis, which is
// node-private).
const (
	nodeLabDir         = "/etc/trellis/lab"
	containerdSock     = ContainerdSocket
	agentKubeconfig    = "/etc/trellis/kubeconfig"
	agentInstallDir    = "/opt/trellis/bin"
	kubeletKubeconfig  = nodeLabDir + "/kubelet.conf"
	kubeProxyConfig    = nodeLabDir + "/kube-proxy.yaml"
	kubeletConfigPath  = nodeLabDir + "/kubelet.yaml"
	containerdConfPath = nodeLabDir + "/containerd.toml"
	caPath             = nodeLabDir + "/ca.crt"
)

// NewSpec lays out node n's private directories under p.
func NewSpec(p state.Paths, n topology.Host, bin map[string]string, imageFiles []string, mode string, agentProcess bool) Spec {
	dir := p.Node(n.Name)
	s := Spec{Name: n.Name, Addr: n.Addr.String(), Group: p.CgroupRoot() + "/" + n.Name, Dir: dir, Images: imageFiles, Bin: bin,
		RoutingMode: mode, AgentProcess: agentProcess}
	for _, m := range nodeMounts {
		s.Binds = append(s.Binds, Bind{Src: filepath.Join(dir, "fs", strings.ReplaceAll(strings.TrimPrefix(m, "/"), "/", "-")), Dst: m})
	}
	return s
}

// HostPath maps an in-node path to where it lives on the host ("" when it
// is not on a node-private path).
func (s Spec) HostPath(inNode string) string {
	for _, b := range s.Binds {
		if inNode == b.Dst || strings.HasPrefix(inNode, b.Dst+"/") {
			return filepath.Join(b.Src, strings.TrimPrefix(inNode, b.Dst))
		}
	}
	return ""
}

// WriteFiles creates the node's directories and writes its configuration,
// credentials and binaries (p holds the lab's kubeconfigs and CA).
func WriteFiles(p state.Paths, s Spec) error {
	for _, b := range s.Binds {
		if err := os.MkdirAll(b.Src, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", b.Src, err)
		}
	}
	files := map[string][]byte{
		containerdConfPath: []byte(ContainerdConfig()),
		kubeletConfigPath:  []byte(KubeletConfig(s)),
		kubeProxyConfig:    []byte(KubeProxyConfig(s)),
	}
	if s.AgentProcess {
		files[agentConfigPath] = []byte(agentConfig(s.cluster().AgentClusterCIDRs, s.RoutingMode, s.Encryption))
	}
	copies := map[string]string{
		kubeletKubeconfig:               p.KubeconfigFile("kubelet-" + s.Name + ".conf"),
		nodeLabDir + "/kube-proxy.conf": p.KubeconfigFile("kube-proxy.conf"),
		caPath:                          p.PKIFile("ca.crt"),
		"/opt/cni/bin/loopback":         s.Bin["loopback"],
	}
	if s.AgentProcess {
		copies[agentInstallDir+"/trellis-cni"] = s.Bin["trellis-cni"]
		copies[agentInstallDir+"/trellis-agent"] = s.Bin["trellis-agent"]
		copies[agentKubeconfig] = p.KubeconfigFile("trellis-agent.conf")
	}
	for dst, src := range copies {
		if src == "" {
			continue
		}
		data, err := os.ReadFile(src)
		if err != nil {
			if os.IsNotExist(err) && (strings.Contains(dst, "trellis-") || dst == agentKubeconfig) {
				continue // the agent is optional until it exists
			}
			return fmt.Errorf("node %s: %w", s.Name, err)
		}
		files[dst] = data
	}
	for inNode, data := range files {
		hp := s.HostPath(inNode)
		if hp == "" {
			return fmt.Errorf("node %s: %s is not on a node-private path", s.Name, inNode)
		}
		mode := os.FileMode(0o600)
		if strings.Contains(inNode, "/bin/") {
			mode = 0o755
		}
		if err := atomicfile.Write(hp, data, mode); err != nil {
			return fmt.Errorf("node %s: %w", s.Name, err)
		}
	}
	return SaveSpec(s)
}

// SaveSpec writes s as the node's node.json (read by the supervisor when
// the node starts).
func SaveSpec(s Spec) error {
	spec, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding node spec: %w", err)
	}
	return atomicfile.Write(filepath.Join(s.Dir, "node.json"), spec, 0o644)
}

// LoadSpec reads a node spec written by WriteFiles.
func LoadSpec(path string) (Spec, error) {
	var s Spec
	data, err := os.ReadFile(path)
	if err != nil {
		return s, fmt.Errorf("reading node spec: %w", err)
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return s, fmt.Errorf("parsing %s: %w", path, err)
	}
	return s, nil
}

// RefreshTrellisBinaries copies the current trellis-agent and trellis-cni
// from binDir into node s (where the agent picks them up on its next start),
// so a rebuilt agent reaches the lab with `restart-agent`. It returns the
// names it copied.
func RefreshTrellisBinaries(s Spec, binDir string) ([]string, error) {
	var done []string
	for _, name := range []string{"trellis-agent", "trellis-cni"} {
		src := filepath.Join(binDir, name)
		if _, err := os.Stat(src); err != nil {
			continue
		}
		if err := CopyFile(src, s.HostPath(agentInstallDir+"/"+name), 0o755); err != nil {
			return done, fmt.Errorf("node %s: %w", s.Name, err)
		}
		done = append(done, name)
	}
	return done, nil
}
