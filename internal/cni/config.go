// Package cni implements the trellis-cni plugin: routed (no bridge) pod
// networking over a veth pair per attachment, with node-local IPAM from
// internal/ipam. The plugin never calls the Kubernetes API: it reads its
// configuration from stdin and, when the configuration names no subnets, the
// node's pod subnets from the node state file the agent writes.
package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/trellisnet/trellis/internal/ipam"
	"github.com/trellisnet/trellis/internal/podlink"
)

// PluginType is the `type` of the plugin in a conflist.
const PluginType = "trellis-cni"

// Defaults for optional configuration fields.
const (
	DefaultMTU     = 1500
	DefaultLogFile = "/var/log/trellis/cni.log"
)

// SupportedVersions are the CNI spec versions the plugin speaks.
var SupportedVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// VersionInfo is what VERSION reports.
func VersionInfo() version.PluginInfo { return version.PluginSupports(SupportedVersions...) }

// IPAMConfig is the embedded IPAM section (no separate IPAM binary).
type IPAMConfig struct {
	// Subnets to allocate from; empty means: the node state file's podCIDRs.
	Subnets []string `json:"subnets,omitempty"`
	// DataDir holds the persistent allocations.
	DataDir string `json:"dataDir,omitempty"`
}

// NetConf is the plugin's configuration as it arrives on stdin.
type NetConf struct {
	types.NetConf
	MTU           int        `json:"mtu,omitempty"`
	NodeStateFile string     `json:"nodeStateFile,omitempty"`
	IPAM          IPAMConfig `json:"ipam"`
	LogFile       string     `json:"logFile,omitempty"`
	LogLevel      string     `json:"logLevel,omitempty"`
	// RequireDataplane makes ADD and STATUS wait for the agent's base
	// dataplane (gate.go). The agent's conflist sets it; a plugin used
	// alone leaves it unset.
	RequireDataplane bool `json:"requireDataplane,omitempty"`

	// Parsed and defaulted forms, filled by ParseConfig.
	subnets []netip.Prefix
}

// Subnets are the configured subnets (nil when the node state file decides).
func (c *NetConf) Subnets() []netip.Prefix { return c.subnets }

// invalid builds the CNI "invalid network config" error (code 7).
func invalid(field string, value any, why string) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig,
		fmt.Sprintf("invalid network config: %s=%v: %s", field, value, why), "")
}

// ParseConfig decodes and validates stdin. Malformed JSON is CNI error 6;
// every invalid value is CNI error 7 naming the field and the value (all
// problems are reported at once).
func ParseConfig(stdin []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "failed to parse network config", err.Error())
	}
	var problems []string
	bad := func(e *types.Error) {
		problems = append(problems, strings.TrimPrefix(e.Msg, "invalid network config: "))
	}

	if conf.Type != "" && conf.Type != PluginType {
		bad(invalid("type", conf.Type, "this plugin is "+PluginType))
	}
	switch {
	case conf.MTU == 0:
	case conf.MTU < 576 || conf.MTU > 65535:
		bad(invalid("mtu", conf.MTU, "must be between 576 and 65535 (or absent)"))
	}
	for i, s := range conf.IPAM.Subnets {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			bad(invalid(fmt.Sprintf("ipam.subnets[%d]", i), s, "not a CIDR"))
			continue
		}
		if _, _, ok := ipam.Usable(p); !ok {
			bad(invalid(fmt.Sprintf("ipam.subnets[%d]", i), s, "too small to hold a pod address"))
			continue
		}
		conf.subnets = append(conf.subnets, p.Masked())
	}
	if conf.IPAM.DataDir == "" {
		conf.IPAM.DataDir = ipam.DefaultDataDir
	} else if !filepath.IsAbs(conf.IPAM.DataDir) {
		bad(invalid("ipam.dataDir", conf.IPAM.DataDir, "must be an absolute path"))
	}
	if conf.NodeStateFile == "" {
		conf.NodeStateFile = podlink.DefaultNodeStatePath
	} else if !filepath.IsAbs(conf.NodeStateFile) {
		bad(invalid("nodeStateFile", conf.NodeStateFile, "must be an absolute path"))
	}
	if conf.LogFile != "" && !filepath.IsAbs(conf.LogFile) {
		bad(invalid("logFile", conf.LogFile, "must be an absolute path"))
	}
	if _, err := parseLevel(conf.LogLevel); err != nil {
		bad(invalid("logLevel", conf.LogLevel, err.Error()))
	}
	if len(problems) > 0 {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			"invalid network config: "+strings.Join(problems, "; "), "")
	}
	return conf, nil
}

// nodeState reads the node state file when the configuration needs it:
// without configured subnets (they come from it) or with requireDataplane
// (the gate reads it). nil when neither.
func (c *NetConf) nodeState() (*podlink.NodeState, error) {
	if len(c.subnets) > 0 && !c.RequireDataplane {
		return nil, nil
	}
	return podlink.ReadNodeState(c.NodeStateFile)
}

// resolve returns the subnets to allocate from and the MTU for new pod
// interfaces. Subnets come from the configuration, else from the node state
// file st; the MTU from the configuration, else st, else DefaultMTU.
func (c *NetConf) resolve(st *podlink.NodeState) ([]netip.Prefix, int, error) {
	mtu := c.MTU
	if len(c.subnets) > 0 {
		if mtu == 0 {
			mtu = DefaultMTU
		}
		return c.subnets, mtu, nil
	}
	if len(st.PodCIDRs) == 0 {
		return nil, 0, notReady(fmt.Errorf("node state file %s lists no pod subnets", c.NodeStateFile))
	}
	if mtu == 0 {
		mtu = st.MTU
	}
	if mtu == 0 {
		mtu = DefaultMTU
	}
	return st.PodCIDRs, mtu, nil
}

// notReady wraps a reason the node cannot wire pods yet as CNI error 11
// (try again later): kubelet retries the sandbox.
func notReady(err error) *types.Error {
	return types.NewError(types.ErrTryAgainLater, "node network not ready: "+err.Error(), "")
}

var errUnknownLevel = errors.New("must be one of debug, info, warn, error")
