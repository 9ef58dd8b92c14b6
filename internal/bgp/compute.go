package bgp

import (
	"fmt"
	"net/netip"
	"sort"
	"time"

	v1alpha1 "github.com/trellisnet/trellis/internal/apis/bgp/v1alpha1"
)

// Problem reasons Compute reports.
const (
	ReasonNoRouterID           = "NoRouterID"
	ReasonInvalidASNLabel      = "InvalidASNLabel"
	ReasonInvalidConfiguration = "InvalidConfiguration"
	ReasonInvalidPeer          = "InvalidPeer"
	ReasonInvalidAdvertisement = "InvalidAdvertisement"
	ReasonInvalidNode          = "InvalidNode"
	ReasonNodeConflict         = "NodeConflict"
	ReasonPasswordMissing      = "PasswordMissing"
	ReasonPeerConflict         = "PeerConflict"
	ReasonASNConflict          = "ASNConflict"
	ReasonGracefulRestartBFD   = "GracefulRestartWithBFD"
)

// Defaults of the BGPConfiguration and BGPPeer fields left unset.
const (
	DefaultListenPort    = 179
	DefaultRestartTime   = 120 * time.Second
	DefaultMaxPrefixes   = 1000
	DefaultBFDInterval   = 300 * time.Millisecond
	DefaultBFDMultiplier = 3
)

// GracefulRestartWithBFDMessage explains why BFD and graceful restart on
// one session are warned about.
const GracefulRestartWithBFDMessage = "GoBGP flushes a neighbour's routes when BFD goes down; " +
	"graceful restart does not hold them across a BFD-detected failure"

// Compute returns this node's desired speaker state and the problems
// found in the configuration. It is pure: the same Input gives the same
// Desired and Problems, sorted.
//
// Data other nodes publish (their InternalIP, pod CIDRs, ASN label) is
// input, not truth: a node whose data is implausible or collides with an
// earlier node's is left out (no session, its pod CIDRs neither imported
// nor counted as cluster addresses) and reported. A configuration object
// Compute cannot honour is left out and reported too; nothing is half
// applied where that would weaken security (a session whose password is
// missing is not opened at all).
func Compute(in Input) (Desired, []Problem) {
	c := &computation{in: in}
	d := c.run()
	sortProblems(c.problems)
	return d, c.problems
}

// computation carries the state of one Compute call.
type computation struct {
	in       Input
	problems []Problem
	// nodes are the other nodes accepted by screenNodes, sorted by name.
	nodes []Node
	// localASN is this node's effective ASN, configASN the configuration's.
	localASN, configASN uint32
}

func (c *computation) problem(reason, object, format string, a ...any) {
	c.problems = append(c.problems, Problem{Reason: reason, Object: object, Message: fmt.Sprintf(format, a...)})
}

func (c *computation) run() Desired {
	cfg := c.in.Config
	if cfg == nil {
		return Desired{Enabled: false}
	}
	spec := cfg.Spec
	cfgObj := "BGPConfiguration/" + cfg.Name
	local := c.in.Local
	if !local.InternalIP.IsValid() || !local.InternalIP.Unmap().Is4() {
		c.problem(ReasonNoRouterID, "Node/"+local.Name,
			"node %s has no IPv4 InternalIP to use as router ID and listen address; BGP stays off on this node", local.Name)
		return Desired{Enabled: false}
	}
	local.InternalIP = local.InternalIP.Unmap()
	c.in.Local = local
	if spec.ASN < 1 || spec.ASN > maxASN {
		c.problem(ReasonInvalidConfiguration, cfgObj, "asn %d is not in 1-%d; BGP stays off", spec.ASN, maxASN)
		return Desired{Enabled: false}
	}
	c.configASN = uint32(spec.ASN)
	c.localASN = c.nodeASN(local, true)
	c.nodes = c.screenNodes()

	d := Desired{Enabled: true, Global: c.global(spec)}
	paths, byAdvert := c.paths()
	d.Paths = paths
	d.Neighbors = c.neighbors(paths, byAdvert, d.Global.GracefulRestart.Enabled)
	d.Import = c.importPolicy(cfgObj, spec.Import)
	return d
}

// global is the speaker's identity and session-wide settings.
func (c *computation) global(spec v1alpha1.BGPConfigurationSpec) Global {
	g := Global{
		ASN:             c.localASN,
		RouterID:        c.in.Local.InternalIP,
		ListenPort:      spec.ListenPort,
		ListenAddresses: []netip.Addr{c.in.Local.InternalIP},
		GracefulRestart: GracefulRestart{Enabled: true, RestartTime: DefaultRestartTime},
	}
	if g.ListenPort == 0 {
		g.ListenPort = DefaultListenPort
	}
	if gr := spec.GracefulRestart; gr != nil {
		if gr.Enabled != nil {
			g.GracefulRestart.Enabled = *gr.Enabled
		}
		if gr.RestartTimeSeconds > 0 {
			g.GracefulRestart.RestartTime = time.Duration(gr.RestartTimeSeconds) * time.Second
		}
	}
	if !g.GracefulRestart.Enabled {
		g.GracefulRestart.RestartTime = 0
	}
	// Restarting is the controller's to set: only it knows whether the
	// agent restarted in this boot.
	return g
}

func sortProblems(ps []Problem) {
	sort.SliceStable(ps, func(i, j int) bool {
		a, b := ps[i], ps[j]
		if a.Object != b.Object {
			return a.Object < b.Object
		}
		if a.Reason != b.Reason {
			return a.Reason < b.Reason
		}
		return a.Message < b.Message
	})
}
