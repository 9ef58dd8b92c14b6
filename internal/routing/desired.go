// Package routing computes and applies the routes, VXLAN FDB entries,
// neighbour entries and WireGuard peers that carry pod traffic to remote
// nodes. Desired state is a pure function of the Nodes (Compute); applying
// it to the kernel goes through the narrow Dataplane interface (implemented
// in internal/routing/netlinkprog).
package routing

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/wireguard"
)

// Path is how traffic to one remote node travels.
type Path string

// Paths.
const (
	PathNative Path = "native"
	PathVXLAN  Path = "vxlan"
	// PathWireGuard: through this node's WireGuard device (encryption on
	// and the peer published a public key).
	PathWireGuard Path = "wireguard"
	// PathBGP: routingMode bgp; the route is BGP's, learned from the
	// fabric (internal/bgp), not this controller's.
	PathBGP Path = "bgp"
)

// Problem reasons (also metric label values and Event reasons).
const (
	ReasonNotOnSameSubnet = "PeerNotOnSameSubnet"
	ReasonNoNodeIP        = "PeerHasNoNodeIP"
	ReasonNoPodCIDR       = "PeerHasNoPodCIDR"
	ReasonBadVTEPMAC      = "PeerHasInvalidVTEPMAC"
	// ReasonPodCIDROutsideCluster: a pod CIDR outside the cluster CIDRs.
	ReasonPodCIDROutsideCluster = "PeerPodCIDROutsideCluster"
	// ReasonPodCIDROverlapsNode: a pod CIDR that is a default route, holds
	// this node's IP or overlaps a subnet this node is connected to.
	ReasonPodCIDROverlapsNode = "PeerPodCIDROverlapsNodeNetwork"
	// ReasonConflict: a VTEP MAC, node IP or pod CIDR already held by an
	// earlier-created node or by this node.
	ReasonConflict = "PeerConflictsWithNode"
	// ReasonNoWireGuardKey: encryption is on but the peer published no
	// (valid) WireGuard public key; it keeps the mode's route, where the
	// strict table drops its traffic (or, strict off, it goes plaintext).
	ReasonNoWireGuardKey = "PeerHasNoWireGuardKey"
	// ReasonForeignRoute: a route Trellis does not own holds the
	// destination of a desired route; it is left alone.
	ReasonForeignRoute = "RouteHeldByAnotherOwner"
)

// Underlay describes the interface that carries this node's IP.
type Underlay struct {
	// Device is the interface name.
	Device string
	// Prefix is the node IP with the interface's prefix length (e.g. 10.0.1.5/24).
	Prefix netip.Prefix
	// MTU of the interface.
	MTU int
	// Connected are the subnets of every IPv4 address on the node (any
	// interface); no peer's pod CIDR may overlap them.
	Connected []netip.Prefix
}

// LocalNode is what Compute needs to know about this node.
type LocalNode struct {
	Name     string
	NodeIP   netip.Addr
	Underlay Underlay
	PodCIDRs []netip.Prefix
	// PublicKey is the WireGuard public key this node published (zero:
	// none); no peer may claim it.
	PublicKey wgtypes.Key
}

// Peer is a remote node as seen in the API.
type Peer struct {
	Name     string
	NodeIP   netip.Addr
	PodCIDRs []netip.Prefix
	// VTEPMAC is the MAC the peer published (annotation); empty: derived from Name.
	VTEPMAC string
	// Created is the Node's creation time: of two conflicting peers, the
	// earlier-created one keeps the disputed data.
	Created time.Time
	// PublicKey is the WireGuard public key the peer published (zero:
	// none or not a valid key).
	PublicKey wgtypes.Key
}

// Params are the mode, VXLAN and encryption settings.
type Params struct {
	Mode  config.RoutingMode
	VXLAN config.VXLAN
	// Encryption are the WireGuard settings.
	Encryption Encryption
	// MTU is the pod MTU override (0: derived from the underlay).
	MTU int
	// ClusterCIDRs, when set, must contain every peer pod CIDR; a peer
	// with a pod CIDR outside them is rejected.
	ClusterCIDRs []netip.Prefix
}

// Encryption configures the WireGuard path.
type Encryption struct {
	// Enabled: encryption: wireguard. Off, the device (Device) is removed.
	Enabled bool
	// Device is the WireGuard interface's name.
	Device string
	// Port is the UDP port every node listens on.
	Port int
	// Engine is auto, kernel or userspace.
	Engine config.WireGuardEngine
}

// ParamsFromConfig returns the routing parameters of an agent configuration.
func ParamsFromConfig(c *config.Config) Params {
	return Params{Mode: c.RoutingMode, VXLAN: c.VXLAN, MTU: c.MTU, ClusterCIDRs: c.ClusterCIDRs,
		Encryption: Encryption{Enabled: c.EncryptionEnabled(), Device: c.WireGuard.Device,
			Port: c.WireGuard.Port, Engine: c.WireGuard.Engine}}
}

// WireGuard is the desired WireGuard device and its peers.
type WireGuard struct {
	Device wireguard.Device
	// Peers are the accepted remote nodes that published a key, by name.
	Peers []wireguard.Peer
}

// VXLANDevice is the desired overlay device.
type VXLANDevice struct {
	Name     string
	VNI      int
	Port     int
	Local    netip.Addr
	Underlay string
	MTU      int
	MAC      string
	// Addr is the VTEP address (the node's first pod CIDR's network address, /32).
	Addr netip.Prefix
	// DisableTxChecksumOffload applies the checksum workaround.
	DisableTxChecksumOffload bool
}

// Route to a remote pod subnet, or (Unreachable) this node's own pod
// subnet: addresses in it that no pod holds (no /32 host route) are
// answered "unreachable" instead of leaving by the default route.
type Route struct {
	Dst         netip.Prefix
	Gw          netip.Addr
	Dev         string
	OnLink      bool
	Unreachable bool `json:",omitempty"`
	Path        Path
	Node        string
}

// FDBEntry maps a remote VTEP MAC to the remote node IP (outer destination).
type FDBEntry struct {
	MAC  string
	Dst  netip.Addr
	Node string
}

// Neighbor maps a remote VTEP address to its MAC on the VXLAN device.
type Neighbor struct {
	IP   netip.Addr
	MAC  string
	Node string
}

// Problem is a peer that cannot be reached in the configured mode.
type Problem struct {
	Node    string
	Reason  string
	Message string
}

// Desired is everything the kernel should hold for remote nodes.
type Desired struct {
	// VXLAN is the overlay device, nil when the mode needs none.
	VXLAN     *VXLANDevice
	Routes    []Route
	FDB       []FDBEntry
	Neighbors []Neighbor
	Problems  []Problem
	// Peers counts remote nodes by path ("native", "vxlan", "wireguard",
	// "none").
	Peers map[string]int
	// RemoveVXLAN names the agent's VXLAN device to delete (native mode).
	RemoveVXLAN string
	// WireGuard is the WireGuard device and its peers, nil when
	// encryption is off.
	WireGuard *WireGuard `json:",omitempty"`
	// RemoveWireGuard names the agent's WireGuard device to delete
	// (encryption off).
	RemoveWireGuard string `json:",omitempty"`
}

// VXLANOverhead is the IPv4 VXLAN encapsulation overhead in bytes
// (outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14).
const VXLANOverhead = 50

// PodMTU is the MTU for pod interfaces: the override when set, else the
// underlay MTU minus the largest overhead a pod packet may meet: the
// mode's (auto may encapsulate, so it reserves the VXLAN overhead too) and,
// with encryption on, WireGuard's (a peer without a key still takes the
// mode's path, so the larger of the two counts; they never add up, since
// an encrypted packet does not take VXLAN).
func PodMTU(p Params, underlayMTU int) int {
	if p.MTU > 0 {
		return p.MTU
	}
	overhead := 0
	if p.Mode != config.ModeNative && p.Mode != config.ModeBGP {
		overhead = VXLANOverhead
	}
	if p.Encryption.Enabled {
		overhead = max(overhead, wireguard.OverheadIPv4)
	}
	return underlayMTU - overhead
}

// VTEPMAC derives this node's stable VTEP MAC from its name: locally
// administered, unicast, the same after a reboot or device recreation.
func VTEPMAC(nodeName string) string {
	h := sha256.Sum256([]byte("trellis-vtep/" + nodeName))
	mac := net.HardwareAddr(h[:6])
	mac[0] = (mac[0] &^ 0x01) | 0x02
	return mac.String()
}

// vtepAddr is the VTEP address of a node: the network address of its first
// IPv4 pod CIDR (never handed to a pod by the IPAM).
func vtepAddr(podCIDRs []netip.Prefix) (netip.Addr, bool) {
	for _, p := range podCIDRs {
		if p.Addr().Is4() {
			return p.Masked().Addr(), true
		}
	}
	return netip.Addr{}, false
}

// ipv4Prefixes returns the valid IPv4 prefixes of in, masked: in itself
// when it holds nothing else (the common case, no allocation; callers do
// not modify the result).
func ipv4Prefixes(in []netip.Prefix) []netip.Prefix {
	clean := true
	for _, p := range in {
		if !p.IsValid() || !p.Addr().Is4() || p != p.Masked() {
			clean = false
			break
		}
	}
	if clean {
		return in
	}
	var out []netip.Prefix
	for _, p := range in {
		if p.IsValid() && p.Addr().Is4() {
			out = append(out, p.Masked())
		}
	}
	return out
}

// Compute returns the desired state for local given its peers. It is pure:
// same input, same output, sorted for stable comparison.
//
// In routingMode bgp the other nodes' pod CIDRs are BGP's (internal/bgp
// installs what the fabric announces): no route, FDB or neighbour entry
// to them here, and no VXLAN device; only the own pod CIDRs' unreachable
// routes stay.
func Compute(local LocalNode, peers []Peer, p Params) *Desired {
	d, _ := compute(local, peers, p)
	return d
}

// compute is Compute, also returning the screen holding the claims (for
// extend).
func compute(local LocalNode, peers []Peer, p Params) (*Desired, *screen) {
	d := &Desired{Peers: map[string]int{}}
	if p.Mode == config.ModeNative || p.Mode == config.ModeBGP {
		d.RemoveVXLAN = p.VXLAN.Device
	} else {
		if addr, ok := vtepAddr(local.PodCIDRs); ok {
			d.VXLAN = &VXLANDevice{
				Name: p.VXLAN.Device, VNI: p.VXLAN.VNI, Port: p.VXLAN.Port,
				Local: local.NodeIP, Underlay: local.Underlay.Device,
				MTU:  local.Underlay.MTU - VXLANOverhead,
				MAC:  VTEPMAC(local.Name),
				Addr: netip.PrefixFrom(addr, 32),

				DisableTxChecksumOffload: p.VXLAN.DisableTxChecksumOffload,
			}
		}
	}
	d.WireGuard, d.RemoveWireGuard = wireGuardDevice(local, p)
	for _, c := range ipv4Prefixes(local.PodCIDRs) {
		d.Routes = append(d.Routes, Route{Dst: c, Unreachable: true, Node: local.Name})
	}
	accepted, problems, s := screenPeers(local, peers, p)
	d.Problems = problems
	d.Peers["none"] = len(problems)
	for _, peer := range accepted {
		d.addPeer(local, peer, p)
	}
	sortDesired(d)
	return d, s
}

// addPeer adds the entries of an accepted peer (unsorted).
func (d *Desired) addPeer(local LocalNode, peer Peer, p Params) {
	if p.Mode == config.ModeBGP {
		d.Peers[string(PathBGP)]++
		return
	}
	cidrs := ipv4Prefixes(peer.PodCIDRs)
	if d.WireGuard != nil && peer.PublicKey != (wgtypes.Key{}) {
		d.Peers[string(PathWireGuard)]++
		addWireGuardPeer(d, peer, cidrs, p.Encryption.Port)
		return
	}
	path, prob := choosePath(local, peer, p, d.VXLAN != nil)
	if prob != nil {
		d.Problems = append(d.Problems, *prob)
		d.Peers["none"]++
		return
	}
	d.Peers[string(path)]++
	if d.WireGuard != nil {
		d.Problems = append(d.Problems, Problem{Node: peer.Name, Reason: ReasonNoWireGuardKey, Message: fmt.Sprintf(
			"encryption is on but node %s published no valid WireGuard public key (annotation %s); its pods are reached by the %s path, "+
				"where strict mode drops the traffic (plaintext when encryptionStrict is false)",
			peer.Name, wireguard.AnnotationPublicKey, path)})
	}
	switch path {
	case PathNative:
		for _, c := range cidrs {
			d.Routes = append(d.Routes, Route{Dst: c, Gw: peer.NodeIP, Dev: local.Underlay.Device, Path: PathNative, Node: peer.Name})
		}
	case PathVXLAN:
		mac := effectiveMAC(peer)
		vtep, _ := vtepAddr(peer.PodCIDRs)
		d.FDB = append(d.FDB, FDBEntry{MAC: mac, Dst: peer.NodeIP, Node: peer.Name})
		d.Neighbors = append(d.Neighbors, Neighbor{IP: vtep, MAC: mac, Node: peer.Name})
		for _, c := range cidrs {
			d.Routes = append(d.Routes, Route{Dst: c, Gw: vtep, Dev: d.VXLAN.Name, OnLink: true, Path: PathVXLAN, Node: peer.Name})
		}
	}
}

// wireGuardDevice is the desired WireGuard device (encryption on and this
// node has an IPv4 pod CIDR for its address), else the name of the device
// to remove (encryption off).
func wireGuardDevice(local LocalNode, p Params) (*WireGuard, string) {
	if !p.Encryption.Enabled {
		return nil, p.Encryption.Device
	}
	addr, ok := vtepAddr(local.PodCIDRs)
	if !ok {
		return nil, ""
	}
	return &WireGuard{Device: wireguard.Device{
		Name: p.Encryption.Device, Port: p.Encryption.Port,
		MTU:  local.Underlay.MTU - wireguard.OverheadIPv4,
		Addr: netip.PrefixFrom(addr, 32), Engine: p.Encryption.Engine,
	}}, ""
}

// addWireGuardPeer adds peer as a WireGuard peer (endpoint its node IP,
// allowed IPs its pod CIDRs) and routes its pod CIDRs into the device.
// The endpoint is reached by the host's own routes, so a peer on another
// subnet needs no VXLAN even in native mode.
func addWireGuardPeer(d *Desired, peer Peer, cidrs []netip.Prefix, port int) {
	d.WireGuard.Peers = append(d.WireGuard.Peers, wireguard.Peer{
		Node: peer.Name, PublicKey: peer.PublicKey,
		Endpoint:   netip.AddrPortFrom(peer.NodeIP, uint16(port)),
		AllowedIPs: cidrs,
	})
	for _, c := range cidrs {
		d.Routes = append(d.Routes, Route{Dst: c, Dev: d.WireGuard.Device.Name, Path: PathWireGuard, Node: peer.Name})
	}
}

func choosePath(local LocalNode, peer Peer, p Params, haveVXLAN bool) (Path, *Problem) {
	prob := func(reason, format string, a ...any) (Path, *Problem) {
		return "", &Problem{Node: peer.Name, Reason: reason, Message: fmt.Sprintf(format, a...)}
	}
	sameSubnet := local.Underlay.Prefix.IsValid() && local.Underlay.Prefix.Masked().Contains(peer.NodeIP)
	switch p.Mode {
	case config.ModeNative:
		if !sameSubnet {
			return prob(ReasonNotOnSameSubnet,
				"routingMode native: node %s (%s) is not on this node's subnet %s; no route installed (use routingMode auto or vxlan)",
				peer.Name, peer.NodeIP, local.Underlay.Prefix.Masked())
		}
		return PathNative, nil
	case config.ModeAuto:
		if sameSubnet {
			return PathNative, nil
		}
	}
	if !haveVXLAN {
		return prob(ReasonNoPodCIDR, "this node has no IPv4 pod CIDR yet, cannot set up VXLAN to %s", peer.Name)
	}
	return PathVXLAN, nil
}

func sortDesired(d *Desired) {
	sortRoutes(d.Routes)
	sort.Slice(d.FDB, func(i, j int) bool { return d.FDB[i].MAC < d.FDB[j].MAC })
	sort.Slice(d.Neighbors, func(i, j int) bool { return d.Neighbors[i].IP.Less(d.Neighbors[j].IP) })
	sort.SliceStable(d.Problems, func(i, j int) bool { return d.Problems[i].Node < d.Problems[j].Node })
	if d.WireGuard != nil {
		sort.Slice(d.WireGuard.Peers, func(i, j int) bool { return d.WireGuard.Peers[i].Node < d.WireGuard.Peers[j].Node })
	}
}

// sortRoutes orders routes by their destination's text, each formatted
// once (formatting both in every comparison was a quarter of a sync at
// 5,000 peers); indexes are sorted, not the routes.
func sortRoutes(rs []Route) {
	type keyed struct {
		key string
		i   int
	}
	keys := make([]keyed, len(rs))
	for i, r := range rs {
		keys[i] = keyed{r.Dst.String(), i}
	}
	slices.SortFunc(keys, func(a, b keyed) int { return strings.Compare(a.key, b.key) })
	sorted := make([]Route, len(rs))
	for i, k := range keys {
		sorted[i] = rs[k.i]
	}
	copy(rs, sorted)
}
