// Package config holds the trellis-agent configuration: defaults, the
// optional config file (YAML or JSON, the ConfigMap in deploy/trellis.yaml)
// and validation that reports every problem at once.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"time"

	"sigs.k8s.io/yaml"
)

// RoutingMode selects how traffic to remote nodes' pod subnets is carried.
type RoutingMode string

// Routing modes.
const (
	// ModeNative routes remote pod subnets via the remote node IP (same L2 only).
	ModeNative RoutingMode = "native"
	// ModeVXLAN carries all cross-node pod traffic in a VXLAN overlay.
	ModeVXLAN RoutingMode = "vxlan"
	// ModeAuto is native to same-subnet nodes and VXLAN to the others.
	ModeAuto RoutingMode = "auto"
	// ModeBGP distributes pod CIDRs through BGP only (docs/bgp.md): the
	// routing controller installs no route to other nodes' pods; the
	// routes learned from the fabric or the other nodes do.
	ModeBGP RoutingMode = "bgp"
)

// Defaults.
const (
	DefaultRoutingMode = ModeAuto
	// DefaultNamespace is the agent's namespace when env POD_NAMESPACE is unset.
	DefaultNamespace = "kube-system"
	// DefaultMetricsBindAddress is the node's loopback only: the kubelet's
	// probes and a node-local scraper reach it, nothing off the node does.
	// Give the node's address (or 0.0.0.0) for a Prometheus that scrapes
	// the nodes.
	DefaultMetricsBindAddress = "127.0.0.1:9465"
	DefaultCNIBinDir          = "/opt/cni/bin"
	DefaultCNIConfDir         = "/etc/cni/net.d"
	DefaultNodeStateFile      = "/var/lib/trellis/node-state.json"
	DefaultIPAMDataDir        = "/var/lib/trellis/ipam"
	DefaultCNILogFile         = "/var/log/trellis/cni.log"
	DefaultCNILogLevel        = "info"
	// DefaultCNIConfVersion is the conflist's cniVersion. 1.0.0, not 1.1.0:
	// containerd 1.6 (Debian 12, libcni 1.1) refuses 1.1.0 results
	// ("unsupported CNI result version"); the plugin serves both.
	DefaultCNIConfVersion  = "1.0.0"
	DefaultVXLANDevice     = "trellis.vxlan"
	DefaultVXLANDevice6    = "trellis.vxlan6"
	DefaultVXLANVNI        = 4096
	DefaultVXLANPort       = 4789
	DefaultSysctlRoot      = "/proc/sys"
	DefaultMinSyncInterval = 100 * time.Millisecond
	DefaultMaxSyncInterval = 60 * time.Second
)

// VXLAN configures the overlay device.
type VXLAN struct {
	// Device is the name of the VXLAN interface over the IPv4 underlay (at
	// most 15 characters); it carries IPv4 and IPv6 pod traffic.
	Device string `json:"device,omitempty"`
	// Device6 is the name of the VXLAN interface over the IPv6 underlay,
	// used by nodes without an IPv4 node IP and to reach such nodes.
	Device6 string `json:"device6,omitempty"`
	// VNI is the VXLAN network identifier (1..16777215).
	VNI int `json:"vni,omitempty"`
	// Port is the UDP destination port.
	Port int `json:"port,omitempty"`
	// DisableTxChecksumOffload turns off tx checksum offload on the device
	// (workaround for NICs/kernels that corrupt VXLAN checksums).
	DisableTxChecksumOffload bool `json:"disableTxChecksumOffload,omitempty"`
}

// Config is the agent's complete configuration.
type Config struct {
	Kubeconfig string `json:"-"`
	// Namespace is the agent's own namespace (env POD_NAMESPACE, default
	// kube-system), where it reads the Secret trellis-bgp-passwords.
	Namespace          string         `json:"-"`
	NodeName           string         `json:"nodeName,omitempty"`
	RoutingMode        RoutingMode    `json:"routingMode,omitempty"`
	ClusterCIDRs       []netip.Prefix `json:"clusterCIDRs,omitempty"`
	NonMasqueradeCIDRs []netip.Prefix `json:"nonMasqueradeCIDRs,omitempty"`
	Masquerade         *bool          `json:"masquerade,omitempty"`
	// MasqueradeIPv6 masquerades the node's IPv6 pod traffic leaving the
	// cluster (table ip6 trellis-masq, present only while the node has an
	// IPv6 pod CIDR). Default: the value of Masquerade.
	MasqueradeIPv6     *bool  `json:"masqueradeIPv6,omitempty"`
	MTU                int    `json:"mtu,omitempty"`
	MetricsBindAddress string `json:"metricsBindAddress,omitempty"`
	// APIServer, when set, is the API server's URL (https://host:port)
	// the agent uses in a pod instead of the in-cluster Service address
	// (kubernetes.default, reached through kube-proxy): kube-proxy needs
	// the API server too, and after the API server restarts it can take a
	// minute to route the Service again, the agent then learning nothing.
	APIServer       string `json:"apiServer,omitempty"`
	CNIPluginSource string `json:"cniPluginSource,omitempty"`
	CNIBinDir       string `json:"cniBinDir,omitempty"`
	CNIConfDir      string `json:"cniConfDir,omitempty"`
	NodeStateFile   string `json:"nodeStateFile,omitempty"`
	IPAMDataDir     string `json:"ipamDataDir,omitempty"`
	CNILogFile      string `json:"cniLogFile,omitempty"`
	CNILogLevel     string `json:"cniLogLevel,omitempty"`
	CNIConfVersion  string `json:"cniConfVersion,omitempty"`
	VXLAN           VXLAN  `json:"vxlan,omitempty"`
	// SysctlRoot is where the agent writes sysctls (net/...): /proc/sys,
	// or a writable host mount of /proc/sys/net's parent when the container
	// is not privileged (its own /proc/sys is read-only). Net sysctls act
	// on the network namespace of the writer, the node's with hostNetwork.
	SysctlRoot      string   `json:"sysctlRoot,omitempty"`
	MinSyncInterval Duration `json:"minSyncInterval,omitempty"`
	MaxSyncInterval Duration `json:"maxSyncInterval,omitempty"`

	// NetworkPolicy enables NetworkPolicy enforcement (default true); when
	// false the agent removes its policy table.
	NetworkPolicy *bool `json:"networkPolicy,omitempty"`
	// PolicyDenyLog, when not 0, is the nflog group that every packet
	// denied by NetworkPolicy (or anti-spoofing) is also sent to, with the
	// prefix "trellis-deny <direction> ..." (read it with ulogd or
	// `tcpdump -i nflog:<group>`). 0, the default, logs nothing.
	PolicyDenyLog int `json:"policyDenyLog,omitempty"`

	// FastPath attaches the eBPF fast path (internal/fastpath, default
	// true): established, non-NATed pod TCP flows skip the host's
	// forwarding path. When the kernel cannot load it the agent says so
	// (log, Event, metric) and runs without it; false detaches it.
	FastPath *bool `json:"fastPath,omitempty"`
	// FastPathExemptCTMark keeps connections whose conntrack mark has any
	// of these bits set on the full path, so that the operator's own
	// netfilter rules see every packet of them (they set the mark, e.g.
	// `ct mark set ct mark | 0x100`, on the connection's first packets).
	// 0, the default, exempts none. Per node, the Node annotation
	// trellis.dev/fast-path: "off" turns the fast path off altogether.
	FastPathExemptCTMark uint32 `json:"fastPathExemptCTMark,omitempty"`

	// Encryption is none (default) or wireguard: every pod packet that
	// crosses nodes goes through the WireGuard device (docs/encryption.md).
	Encryption Encryption `json:"encryption,omitempty"`
	// EncryptionStrict (default true when encryption is on) drops pod
	// traffic to another node's pods that would leave by any interface
	// other than the WireGuard device: never plaintext, from boot to key
	// rotation.
	EncryptionStrict *bool `json:"encryptionStrict,omitempty"`
	// WireGuard configures the device.
	WireGuard WireGuard `json:"wireguard,omitempty"`
}

// Duration is a time.Duration that reads "1s"-style strings from files.
type Duration struct{ time.Duration }

// UnmarshalJSON accepts a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	s := string(b)
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q: %w", s, err)
	}
	d.Duration = v
	return nil
}

// MarshalJSON writes a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(`"` + d.String() + `"`), nil
}

// MasqueradeEnabled reports whether masquerading is on (default true).
func (c *Config) MasqueradeEnabled() bool { return c.Masquerade == nil || *c.Masquerade }

// MasqueradeIPv6Enabled reports whether IPv6 masquerading is on (default:
// as masquerade).
func (c *Config) MasqueradeIPv6Enabled() bool {
	if c.MasqueradeIPv6 != nil {
		return *c.MasqueradeIPv6
	}
	return c.MasqueradeEnabled()
}

// NetworkPolicyEnabled reports whether NetworkPolicy is enforced (default true).
func (c *Config) NetworkPolicyEnabled() bool { return c.NetworkPolicy == nil || *c.NetworkPolicy }

// FastPathEnabled reports whether the eBPF fast path is wanted (default true).
func (c *Config) FastPathEnabled() bool { return c.FastPath == nil || *c.FastPath }

// Default returns a configuration with every default filled in.
func Default() *Config {
	c := &Config{}
	c.ApplyDefaults()
	return c
}

// ApplyDefaults fills zero-valued fields with their defaults.
func (c *Config) ApplyDefaults() {
	setStr := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	if c.RoutingMode == "" {
		c.RoutingMode = DefaultRoutingMode
	}
	setStr(&c.MetricsBindAddress, DefaultMetricsBindAddress)
	setStr(&c.CNIBinDir, DefaultCNIBinDir)
	setStr(&c.CNIConfDir, DefaultCNIConfDir)
	setStr(&c.NodeStateFile, DefaultNodeStateFile)
	setStr(&c.IPAMDataDir, DefaultIPAMDataDir)
	setStr(&c.CNILogFile, DefaultCNILogFile)
	setStr(&c.CNILogLevel, DefaultCNILogLevel)
	setStr(&c.CNIConfVersion, DefaultCNIConfVersion)
	setStr(&c.VXLAN.Device, DefaultVXLANDevice)
	setStr(&c.VXLAN.Device6, DefaultVXLANDevice6)
	setStr(&c.SysctlRoot, DefaultSysctlRoot)
	if c.VXLAN.VNI == 0 {
		c.VXLAN.VNI = DefaultVXLANVNI
	}
	if c.VXLAN.Port == 0 {
		c.VXLAN.Port = DefaultVXLANPort
	}
	if c.MinSyncInterval.Duration == 0 {
		c.MinSyncInterval.Duration = DefaultMinSyncInterval
	}
	if c.MaxSyncInterval.Duration == 0 {
		c.MaxSyncInterval.Duration = DefaultMaxSyncInterval
	}
	c.applyEncryptionDefaults()
}

// ParseFile decodes a YAML or JSON config file into c, leaving fields the
// file does not mention untouched. Unknown keys are errors (typos must not
// be silently ignored).
func ParseFile(data []byte, c *Config) error {
	if err := yaml.UnmarshalStrict(data, c); err != nil {
		return fmt.Errorf("parse config file: %w", err)
	}
	return nil
}

// LoadFile reads path and decodes it into c.
func LoadFile(path string, c *Config) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config file: %w", err)
	}
	if err := ParseFile(data, c); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func validLogLevel(l string) bool {
	switch l {
	case "debug", "info", "warn", "error":
		return true
	}
	return false
}

// Validate returns every problem in c joined into one error, or nil.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.NodeName == "" {
		add("nodeName: required (--node-name or env NODE_NAME)")
	}
	switch c.RoutingMode {
	case ModeNative, ModeVXLAN, ModeAuto, ModeBGP:
	default:
		add("routingMode: %q is not one of native, vxlan, auto, bgp", c.RoutingMode)
	}
	for i, p := range c.ClusterCIDRs {
		if !p.IsValid() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			add("clusterCIDRs[%d]: %v is not a valid IPv4 or IPv6 prefix", i, p)
		} else if p.Masked() != p {
			add("clusterCIDRs[%d]: %v has host bits set (did you mean %v?)", i, p, p.Masked())
		}
	}
	for i, p := range c.NonMasqueradeCIDRs {
		if !p.IsValid() || p.Addr().Is4In6() {
			add("nonMasqueradeCIDRs[%d]: %v is not a valid IPv4 or IPv6 prefix", i, p)
		}
	}
	if c.APIServer != "" {
		if u, err := url.Parse(c.APIServer); err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
			add("apiServer: %q is not an https://host[:port] URL", c.APIServer)
		}
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535) {
		add("mtu: %d is outside 576..65535 (0 means detect)", c.MTU)
	}
	for name, v := range map[string]string{"cniBinDir": c.CNIBinDir, "cniConfDir": c.CNIConfDir, "nodeStateFile": c.NodeStateFile,
		"ipamDataDir": c.IPAMDataDir, "sysctlRoot": c.SysctlRoot} {
		if v == "" || v[0] != '/' {
			add("%s: %q must be an absolute path", name, v)
		}
	}
	if c.CNIPluginSource != "" && c.CNIPluginSource[0] != '/' {
		add("cniPluginSource: %q must be an absolute path", c.CNIPluginSource)
	}
	if !validLogLevel(c.CNILogLevel) {
		add("cniLogLevel: %q is not one of debug, info, warn, error", c.CNILogLevel)
	}
	switch c.CNIConfVersion {
	case "0.3.1", "0.4.0", "1.0.0", "1.1.0":
	default:
		add("cniConfVersion: %q is not one of 0.3.1, 0.4.0, 1.0.0, 1.1.0", c.CNIConfVersion)
	}
	if n := len(c.VXLAN.Device); n == 0 || n > 15 {
		add("vxlan.device: %q must be 1..15 characters", c.VXLAN.Device)
	}
	if n := len(c.VXLAN.Device6); n == 0 || n > 15 {
		add("vxlan.device6: %q must be 1..15 characters", c.VXLAN.Device6)
	} else if c.VXLAN.Device6 == c.VXLAN.Device {
		add("vxlan.device6: %q is also vxlan.device; the IPv4- and IPv6-underlay devices need two names", c.VXLAN.Device6)
	}
	if c.VXLAN.VNI < 1 || c.VXLAN.VNI > 1<<24-1 {
		add("vxlan.vni: %d is outside 1..16777215", c.VXLAN.VNI)
	}
	if c.VXLAN.Port < 1 || c.VXLAN.Port > 65535 {
		add("vxlan.port: %d is outside 1..65535", c.VXLAN.Port)
	}
	if c.PolicyDenyLog < 0 || c.PolicyDenyLog > 65535 {
		add("policyDenyLog: %d is outside 0..65535 (an nflog group; 0 turns the deny log off)", c.PolicyDenyLog)
	}
	if c.MetricsBindAddress != "" {
		if err := validBindAddress(c.MetricsBindAddress); err != nil {
			add("metricsBindAddress: %q %v", c.MetricsBindAddress, err)
		}
	}
	if c.MinSyncInterval.Duration <= 0 {
		add("minSyncInterval: %v must be positive", c.MinSyncInterval.Duration)
	}
	if c.MaxSyncInterval.Duration < c.MinSyncInterval.Duration {
		add("maxSyncInterval: %v must be at least minSyncInterval (%v)", c.MaxSyncInterval.Duration, c.MinSyncInterval.Duration)
	}
	errs = append(errs, c.validateEncryption()...)
	errs = append(errs, c.validateIPv6()...)
	if c.RoutingMode == ModeBGP && c.EncryptionEnabled() {
		add("routingMode bgp with encryption %s: not supported (pod CIDRs learned through BGP are routed by the fabric, not through the WireGuard device); use routingMode native, vxlan or auto with encryption, or encryption none with bgp", c.Encryption)
	}
	return errors.Join(errs...)
}

// validBindAddress accepts IP:PORT ([IP]:PORT for IPv6) and :PORT (every
// address); host names are refused, so what the agent listens on is never
// a matter of name resolution.
func validBindAddress(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("is not HOST:PORT: %w", err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("has an invalid port %q", port)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("has a host %q that is not an IP address", host)
		}
	}
	return nil
}
