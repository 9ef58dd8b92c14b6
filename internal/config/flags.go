package config

import (
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// Flags holds the command-line values before they are merged with the
// config file. Precedence: defaults < config file < flags that were set.
type Flags struct {
	fs                 *pflag.FlagSet
	ConfigFile         string
	Kubeconfig         string
	NodeName           string
	RoutingMode        string
	ClusterCIDRs       []string
	NonMasqueradeCIDRs []string
	MTU                int
	MetricsBindAddress string
	CNIPluginSource    string
	CNIBinDir          string
	CNIConfDir         string
	NodeStateFile      string
	NetworkPolicy      bool
	PolicyDenyLogGroup int
	FastPath           bool
	SysctlRoot         string
	VXLANDevice        string
	VXLANDevice6       string
	Encryption         string
	EncryptionStrict   bool
	WireGuardEngine    string
}

// AddFlags registers the agent's flags on fs.
func (f *Flags) AddFlags(fs *pflag.FlagSet) {
	f.fs = fs
	fs.StringVar(&f.ConfigFile, "config", "", "path to a YAML or JSON config file (flags override it)")
	fs.StringVar(&f.Kubeconfig, "kubeconfig", "", "path to a kubeconfig; in-cluster config when empty")
	fs.StringVar(&f.NodeName, "node-name", "", "name of this node's Node object (default: env NODE_NAME)")
	fs.StringVar(&f.RoutingMode, "routing-mode", string(DefaultRoutingMode), "native, vxlan, auto or bgp (pod CIDRs through BGP only: docs/bgp.md)")
	fs.StringSliceVar(&f.ClusterCIDRs, "cluster-cidr", nil, "cluster pod CIDR(s) of either family, comma separated: every Node's pod CIDR of a family must lie inside them (when one of that family is given); traffic to them is not masqueraded")
	fs.StringSliceVar(&f.NonMasqueradeCIDRs, "non-masquerade-cidr", nil, "extra destination CIDR(s) that are not masqueraded")
	fs.IntVar(&f.MTU, "mtu", 0, "pod MTU; 0 detects it from the node IP's interface minus encapsulation overhead")
	fs.StringVar(&f.MetricsBindAddress, "metrics-bind-address", DefaultMetricsBindAddress, "HOST:PORT for /metrics, /healthz and /readyz; empty disables")
	fs.StringVar(&f.CNIPluginSource, "cni-plugin-source", "", "trellis-cni binary to install (default: trellis-cni next to this executable)")
	fs.StringVar(&f.CNIBinDir, "cni-bin-dir", DefaultCNIBinDir, "directory the container runtime loads CNI plugins from")
	fs.StringVar(&f.CNIConfDir, "cni-conf-dir", DefaultCNIConfDir, "directory the container runtime reads CNI configs from")
	fs.StringVar(&f.NodeStateFile, "node-state-file", DefaultNodeStateFile, "node state file shared with the CNI plugin")
	fs.BoolVar(&f.NetworkPolicy, "network-policy", true, "enforce NetworkPolicy; false removes the policy table")
	fs.IntVar(&f.PolicyDenyLogGroup, "policy-deny-log-group", 0, "nflog group that packets denied by NetworkPolicy are logged to (prefix \"trellis-deny\"); 0 disables")
	fs.StringVar(&f.SysctlRoot, "sysctl-root", DefaultSysctlRoot, "directory holding net/... sysctls (a writable host mount of /proc/sys/net's parent when not privileged)")
	fs.StringVar(&f.VXLANDevice, "vxlan-device", DefaultVXLANDevice, "name of the VXLAN device over the IPv4 underlay (config key vxlan.device)")
	fs.StringVar(&f.VXLANDevice6, "vxlan-device6", DefaultVXLANDevice6, "name of the VXLAN device over the IPv6 underlay (config key vxlan.device6)")
	fs.BoolVar(&f.FastPath, "fast-path", true, "attach the eBPF fast path for established pod TCP flows; false detaches it")
	fs.StringVar(&f.Encryption, "encryption", string(EncryptionNone), "encryption of pod traffic between nodes: none or wireguard")
	fs.BoolVar(&f.EncryptionStrict, "encryption-strict", true, "with encryption on, drop pod traffic to other nodes that would leave unencrypted")
	fs.StringVar(&f.WireGuardEngine, "wireguard-engine", string(DefaultWireGuardEngine), "auto, kernel or userspace (config key wireguard.engine)")
}

func (f *Flags) changed(name string) bool { return f.fs != nil && f.fs.Changed(name) }

// Complete builds the Config: defaults, then the config file, then the flags
// that were set on the command line, then environment fallbacks. It reports
// every parse problem at once; call Validate on the result afterwards (the
// result is non-nil when only flag values failed to parse).
func (f *Flags) Complete(getenv func(string) string) (*Config, error) {
	c := &Config{}
	if f.ConfigFile != "" {
		if err := LoadFile(f.ConfigFile, c); err != nil {
			return nil, err
		}
	}
	var errs []string
	c.Kubeconfig = f.Kubeconfig
	if f.changed("node-name") || f.NodeName != "" {
		c.NodeName = f.NodeName
	}
	if c.NodeName == "" && getenv != nil {
		c.NodeName = getenv("NODE_NAME")
	}
	if getenv != nil {
		c.Namespace = getenv("POD_NAMESPACE")
	}
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
	}
	if f.changed("routing-mode") || c.RoutingMode == "" {
		c.RoutingMode = RoutingMode(f.RoutingMode)
	}
	if f.changed("cluster-cidr") {
		p, err := parsePrefixes("--cluster-cidr", f.ClusterCIDRs)
		if err != nil {
			errs = append(errs, err.Error())
		}
		c.ClusterCIDRs = p
	}
	if f.changed("non-masquerade-cidr") {
		p, err := parsePrefixes("--non-masquerade-cidr", f.NonMasqueradeCIDRs)
		if err != nil {
			errs = append(errs, err.Error())
		}
		c.NonMasqueradeCIDRs = p
	}
	if f.changed("mtu") {
		c.MTU = f.MTU
	}
	if f.changed("network-policy") {
		v := f.NetworkPolicy
		c.NetworkPolicy = &v
	}
	if f.changed("fast-path") {
		v := f.FastPath
		c.FastPath = &v
	}
	if f.changed("encryption") {
		c.Encryption = Encryption(f.Encryption)
	}
	if f.changed("encryption-strict") {
		v := f.EncryptionStrict
		c.EncryptionStrict = &v
	}
	if f.changed("wireguard-engine") {
		c.WireGuard.Engine = WireGuardEngine(f.WireGuardEngine)
	}
	if f.changed("policy-deny-log-group") {
		c.PolicyDenyLog = f.PolicyDenyLogGroup
	}
	override := func(name string, dst *string, v string) {
		if f.changed(name) || *dst == "" {
			*dst = v
		}
	}
	override("metrics-bind-address", &c.MetricsBindAddress, f.MetricsBindAddress)
	override("cni-plugin-source", &c.CNIPluginSource, f.CNIPluginSource)
	override("cni-bin-dir", &c.CNIBinDir, f.CNIBinDir)
	override("cni-conf-dir", &c.CNIConfDir, f.CNIConfDir)
	override("node-state-file", &c.NodeStateFile, f.NodeStateFile)
	override("sysctl-root", &c.SysctlRoot, f.SysctlRoot)
	override("vxlan-device", &c.VXLAN.Device, f.VXLANDevice)
	override("vxlan-device6", &c.VXLAN.Device6, f.VXLANDevice6)
	if f.changed("metrics-bind-address") && f.MetricsBindAddress == "" {
		c.MetricsBindAddress = "-"
	}
	if c.CNIPluginSource == "" {
		c.CNIPluginSource = defaultPluginSource()
	}
	c.ApplyDefaults()
	if c.MetricsBindAddress == "-" {
		c.MetricsBindAddress = ""
	}
	if len(errs) > 0 {
		// The Config is still returned so that Validate can report the
		// remaining problems together with these.
		return c, fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return c, nil
}

func defaultPluginSource() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	dir := exe[:strings.LastIndex(exe, "/")+1]
	return dir + "trellis-cni"
}

func parsePrefixes(flag string, in []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var bad []string
	for _, s := range in {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s %q: %v", flag, s, err))
			continue
		}
		out = append(out, p)
	}
	if len(bad) > 0 {
		return out, fmt.Errorf("%s", strings.Join(bad, "; "))
	}
	return out, nil
}
