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

// Underlay describes the interface that carries one of this node's IPs.
type Underlay struct {
	// Device is the interface name.
	Device string
	// Prefix is the node IP with the interface's prefix length (e.g.
	// 10.0.1.5/24, fd74:7265:6c00:1::5/64).
	Prefix netip.Prefix
	// MTU of the interface.
	MTU int
	// Connected are the subnets of every address of the node IP's family
	// on the node (any interface); no peer's pod CIDR may overlap them.
	Connected []netip.Prefix
}

// LocalNode is what Compute needs to know about this node.
type LocalNode struct {
	Name string
	// NodeIP is the IPv4 node IP, NodeIP6 the IPv6 one (invalid: none;
	// at least one is needed). NodeIP6 counts only when the node uses it
	// (UsesIPv6Underlay).
	NodeIP, NodeIP6 netip.Addr
	// Underlay carries NodeIP, Underlay6 NodeIP6.
	Underlay, Underlay6 Underlay
	PodCIDRs            []netip.Prefix
	// PublicKey is the WireGuard public key this node published (zero:
	// none); no peer may claim it.
	PublicKey wgtypes.Key
}

// Peer is a remote node as seen in the API.
type Peer struct {
	Name string
	// NodeIP is the peer's IPv4 node IP, NodeIP6 its IPv6 one (invalid:
	// none).
	NodeIP, NodeIP6 netip.Addr
	PodCIDRs        []netip.Prefix
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

// VXLANDevice is the desired overlay device. Its outer family is Local's;
// it carries both inner families.
type VXLANDevice struct {
	Name     string
	VNI      int
	Port     int
	Local    netip.Addr
	Underlay string
	MTU      int
	MAC      string
	// Addr is the IPv4 VTEP address (the network address of the node's
	// first IPv4 pod CIDR, /32; invalid: the node has no IPv4 pod CIDR).
	Addr netip.Prefix `json:",omitzero"`
	// Addr6 is the IPv6 VTEP address (the network address of the node's
	// first IPv6 pod CIDR, /128; invalid: none).
	Addr6 netip.Prefix `json:",omitzero"`
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
	// VXLAN is the overlay device over the IPv4 underlay, nil when the
	// mode needs none or the node has no IPv4 node IP. FDB and Neighbors
	// are its entries (neighbours of both inner families).
	VXLAN     *VXLANDevice
	Routes    []Route
	FDB       []FDBEntry
	Neighbors []Neighbor
	Problems  []Problem
	// Peers counts remote nodes by path ("native", "vxlan", "wireguard",
	// "none"); a peer whose families take different paths counts under
	// its IPv4 family's.
	Peers map[string]int
	// RemoveVXLAN names the agent's VXLAN device to delete (native mode).
	RemoveVXLAN string
	// VXLAN6 is the overlay device over the IPv6 underlay: on a node
	// without an IPv4 node IP, or to peers without one; FDB6 and
	// Neighbors6 are its entries.
	VXLAN6     *VXLANDevice `json:",omitempty"`
	FDB6       []FDBEntry   `json:",omitempty"`
	Neighbors6 []Neighbor   `json:",omitempty"`
	// RemoveVXLAN6 names the IPv6-underlay VXLAN device to delete (not
	// needed).
	RemoveVXLAN6 string `json:",omitempty"`
	// WireGuard is the WireGuard device and its peers, nil when
	// encryption is off.
	WireGuard *WireGuard `json:",omitempty"`
	// RemoveWireGuard names the agent's WireGuard device to delete
	// (encryption off).
	RemoveWireGuard string `json:",omitempty"`
}

// VXLAN encapsulation overheads in bytes: outer IPv4 20 (IPv6 40) + UDP
// 8 + VXLAN 8 + inner Ethernet 14.
const (
	VXLANOverhead     = 50
	VXLANOverheadIPv6 = 70
)

// PodMTU is the MTU for pod interfaces on a node whose VXLAN runs over
// IPv4: the override when set, else the underlay MTU minus the largest
// overhead a pod packet may meet: the mode's (auto may encapsulate, so it
// reserves the VXLAN overhead too) and, with encryption on, WireGuard's
// (a peer without a key still takes the mode's path, so the larger of the
// two counts; they never add up, since an encrypted packet does not take
// VXLAN).
func PodMTU(p Params, underlayMTU int) int {
	return podMTU(p, underlayMTU, false)
}

// PodMTUFor is PodMTU for the node whose primary underlay is ul (its IPv4
// node IP's, else its IPv6 one's): over IPv6, VXLAN costs 70 bytes and
// WireGuard 80.
func PodMTUFor(p Params, ul Underlay) int {
	return podMTU(p, ul.MTU, ul.Prefix.Addr().Is6())
}

func podMTU(p Params, underlayMTU int, overIPv6 bool) int {
	if p.MTU > 0 {
		return p.MTU
	}
	vx, wg := VXLANOverhead, wireguard.OverheadIPv4
	if overIPv6 {
		vx, wg = VXLANOverheadIPv6, wireguard.OverheadIPv6
	}
	overhead := 0
	if p.Mode != config.ModeNative && p.Mode != config.ModeBGP {
		overhead = vx
	}
	if p.Encryption.Enabled {
		overhead = max(overhead, wg)
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

// vtepAddr is the IPv4 VTEP address of a node (see vtepAddrOf).
func vtepAddr(podCIDRs []netip.Prefix) (netip.Addr, bool) { return vtepAddrOf(podCIDRs, false) }

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
	local = local.routable(p)
	d := &Desired{Peers: map[string]int{}}
	if p.Mode == config.ModeNative || p.Mode == config.ModeBGP {
		d.RemoveVXLAN = p.VXLAN.Device
	} else {
		d.VXLAN = vxlanDevice(local, p, false)
		if !local.NodeIP.IsValid() {
			// An IPv6-only node: VXLAN runs over IPv6 only.
			d.RemoveVXLAN = p.VXLAN.Device
			d.VXLAN6 = vxlanDevice(local, p, true)
		}
	}
	d.WireGuard, d.RemoveWireGuard = wireGuardDevice(local, p)
	for _, c := range routedFamilies(local).prefixes(local.PodCIDRs) {
		d.Routes = append(d.Routes, Route{Dst: c, Unreachable: true, Node: local.Name})
	}
	accepted, problems, s := screenPeers(local, peers, p)
	d.Problems = problems
	d.Peers["none"] = len(problems)
	for _, peer := range accepted {
		d.addPeer(local, peer, p)
	}
	d.finish(p)
	return d, s
}

// finish names the IPv6-underlay VXLAN device for removal when no peer
// needs it, and sorts d.
func (d *Desired) finish(p Params) {
	d.RemoveVXLAN6 = ""
	if d.VXLAN6 == nil {
		d.RemoveVXLAN6 = p.VXLAN.Device6
	}
	sortDesired(d)
}

// vxlanDevice is the VXLAN device over the underlay of one family (v6:
// IPv6), carrying the inner families this node routes; nil when the node
// has no node IP of that family or no pod CIDR for a VTEP address.
func vxlanDevice(local LocalNode, p Params, v6 bool) *VXLANDevice {
	ip, ul := local.nodeIP(v6), local.underlay(v6)
	if !ip.IsValid() {
		return nil
	}
	dev := &VXLANDevice{
		Name: p.VXLAN.Device, VNI: p.VXLAN.VNI, Port: p.VXLAN.Port,
		Local: ip, Underlay: ul.Device,
		MTU: ul.MTU - VXLANOverhead,
		MAC: VTEPMAC(local.Name),

		DisableTxChecksumOffload: p.VXLAN.DisableTxChecksumOffload,
	}
	if v6 {
		dev.Name, dev.MTU = p.VXLAN.Device6, ul.MTU-VXLANOverheadIPv6
	}
	fams := routedFamilies(local)
	if a, ok := vtepAddrOf(local.PodCIDRs, false); ok && fams.v4 {
		dev.Addr = netip.PrefixFrom(a, 32)
	}
	if a, ok := vtepAddrOf(local.PodCIDRs, true); ok && fams.v6 {
		dev.Addr6 = netip.PrefixFrom(a, 128)
	}
	if !dev.Addr.IsValid() && !dev.Addr6.IsValid() {
		return nil
	}
	return dev
}

// addPeer adds the entries of an accepted peer (unsorted): per family of
// its pod CIDRs, the path that family takes.
func (d *Desired) addPeer(local LocalNode, peer Peer, p Params) {
	if p.Mode == config.ModeBGP {
		d.Peers[string(PathBGP)]++
		return
	}
	cidrs := routedFamilies(local).prefixes(peer.PodCIDRs)
	if d.WireGuard != nil && peer.PublicKey != (wgtypes.Key{}) {
		d.Peers[string(PathWireGuard)]++
		addWireGuardPeer(d, local, peer, cidrs, p.Encryption.Port)
		return
	}
	if p.Encryption.Enabled && d.WireGuard == nil && routedFamilies(local).v6 {
		// Fail closed: encryption wanted, no device to encrypt with.
		d.Problems = append(d.Problems, Problem{Node: peer.Name, Reason: ReasonNoWireGuardKey, Message: fmt.Sprintf(
			"encryption is on but this node has no IPv4 node IP and IPv4 pod CIDR for its WireGuard device (IPv6-only nodes do not support encryption); "+
				"no route to node %s's pods", peer.Name)})
		d.Peers["none"]++
		return
	}
	var first Path
	fdbDone := false
	for _, v6 := range []bool{false, true} {
		fc := onlyFamily(v6).prefixes(cidrs)
		if len(fc) == 0 {
			continue
		}
		path, prob := d.choosePath(local, peer, p, v6)
		if prob != nil {
			d.Problems = append(d.Problems, *prob)
			continue
		}
		if first == "" {
			first = path
		}
		switch path {
		case PathNative:
			for _, c := range fc {
				d.Routes = append(d.Routes, Route{Dst: c, Gw: peer.nodeIP(v6), Dev: local.underlay(v6).Device, Path: PathNative, Node: peer.Name})
			}
		case PathVXLAN:
			outer6, _ := outerFamily(local, peer)
			dev := d.vxlanOver(local, p, outer6)
			mac := effectiveMAC(peer)
			vtep, _ := vtepAddrOf(peer.PodCIDRs, v6)
			fdb, neigh := &d.FDB, &d.Neighbors
			if outer6 {
				fdb, neigh = &d.FDB6, &d.Neighbors6
			}
			if !fdbDone {
				*fdb = append(*fdb, FDBEntry{MAC: mac, Dst: peer.nodeIP(outer6), Node: peer.Name})
				fdbDone = true
			}
			*neigh = append(*neigh, Neighbor{IP: vtep, MAC: mac, Node: peer.Name})
			for _, c := range fc {
				d.Routes = append(d.Routes, Route{Dst: c, Gw: vtep, Dev: dev.Name, OnLink: true, Path: PathVXLAN, Node: peer.Name})
			}
		}
	}
	if first == "" {
		d.Peers["none"]++
		return
	}
	d.Peers[string(first)]++
	if d.WireGuard != nil {
		d.Problems = append(d.Problems, Problem{Node: peer.Name, Reason: ReasonNoWireGuardKey, Message: fmt.Sprintf(
			"encryption is on but node %s published no valid WireGuard public key (annotation %s); its pods are reached by the %s path, "+
				"where strict mode drops the traffic (plaintext when encryptionStrict is false)",
			peer.Name, wireguard.AnnotationPublicKey, first)})
	}
}

// onlyFamily is the set holding one family.
func onlyFamily(v6 bool) families {
	if v6 {
		return onlyIPv6
	}
	return onlyIPv4
}

// vxlanOver returns the VXLAN device over one underlay family, creating
// the IPv6 one when the first peer needs it (devices are never modified
// once made: extend shares them).
func (d *Desired) vxlanOver(local LocalNode, p Params, v6 bool) *VXLANDevice {
	if !v6 {
		return d.VXLAN
	}
	if d.VXLAN6 == nil {
		d.VXLAN6 = vxlanDevice(local, p, true)
		if d.VXLAN6 != nil && d.VXLAN != nil {
			// The VTEP addresses live on the IPv4-underlay device (one
			// interface per address); this one needs none: its routes
			// are on-link, its neighbours permanent.
			d.VXLAN6.Addr, d.VXLAN6.Addr6 = netip.Prefix{}, netip.Prefix{}
		}
	}
	return d.VXLAN6
}

// wireGuardDevice is the desired WireGuard device (encryption on and this
// node has an IPv4 pod CIDR for its address), else the name of the device
// to remove (encryption off).
func wireGuardDevice(local LocalNode, p Params) (*WireGuard, string) {
	if !p.Encryption.Enabled {
		return nil, p.Encryption.Device
	}
	addr, ok := vtepAddr(local.PodCIDRs)
	if !ok || !local.NodeIP.IsValid() {
		return nil, ""
	}
	return &WireGuard{Device: wireguard.Device{
		Name: p.Encryption.Device, Port: p.Encryption.Port,
		MTU:  local.Underlay.MTU - wireguard.OverheadIPv4,
		Addr: netip.PrefixFrom(addr, 32), Engine: p.Encryption.Engine,
	}}, ""
}

// addWireGuardPeer adds peer as a WireGuard peer (endpoint its IPv4 node
// IP, else its IPv6 one; allowed IPs its pod CIDRs of both families) and
// routes its pod CIDRs into the device. The endpoint is reached by the
// host's own routes, so a peer on another subnet needs no VXLAN even in
// native mode.
func addWireGuardPeer(d *Desired, local LocalNode, peer Peer, cidrs []netip.Prefix, port int) {
	endpoint := peer.NodeIP
	if !endpoint.IsValid() {
		endpoint = peer.NodeIP6
	}
	d.WireGuard.Peers = append(d.WireGuard.Peers, wireguard.Peer{
		Node: peer.Name, PublicKey: peer.PublicKey,
		Endpoint:   netip.AddrPortFrom(endpoint, uint16(port)),
		AllowedIPs: cidrs,
	})
	for _, c := range cidrs {
		d.Routes = append(d.Routes, Route{Dst: c, Dev: d.WireGuard.Device.Name, Path: PathWireGuard, Node: peer.Name})
	}
}

// choosePath decides one inner family's path to peer (v6: IPv6): native
// needs both nodes' node IPs of that family on one subnet; VXLAN runs
// over the underlay family outerFamily picks.
func (d *Desired) choosePath(local LocalNode, peer Peer, p Params, v6 bool) (Path, *Problem) {
	prob := func(reason, format string, a ...any) (Path, *Problem) {
		return "", &Problem{Node: peer.Name, Reason: reason, Message: fmt.Sprintf(format, a...)}
	}
	ul, ip := local.underlay(v6), peer.nodeIP(v6)
	sameSubnet := ul.Prefix.IsValid() && ip.IsValid() && ul.Prefix.Masked().Contains(ip)
	switch p.Mode {
	case config.ModeNative:
		if sameSubnet {
			return PathNative, nil
		}
		if !v6 {
			return prob(ReasonNotOnSameSubnet,
				"routingMode native: node %s (%s) is not on this node's subnet %s; no route installed (use routingMode auto or vxlan)",
				peer.Name, peer.NodeIP, local.Underlay.Prefix.Masked())
		}
		if !ip.IsValid() || !ul.Prefix.IsValid() {
			return prob(ReasonNotOnSameSubnet,
				"routingMode native: node %s and this node share no IPv6 subnet (an IPv6 node IP on each is needed); no route to its IPv6 pod CIDR (use routingMode auto or vxlan)",
				peer.Name)
		}
		return prob(ReasonNotOnSameSubnet,
			"routingMode native: node %s (%s) is not on this node's IPv6 subnet %s; no route to its IPv6 pod CIDR (use routingMode auto or vxlan)",
			peer.Name, ip, ul.Prefix.Masked())
	case config.ModeAuto:
		if sameSubnet {
			return PathNative, nil
		}
	}
	outer6, ok := outerFamily(local, peer)
	if !ok {
		return prob(ReasonNoNodeIP, "node %s and this node have no node IP of the same family; no VXLAN between them", peer.Name)
	}
	if d.vxlanOver(local, p, outer6) == nil {
		return prob(ReasonNoPodCIDR, "this node has no %s pod CIDR yet, cannot set up VXLAN to %s", routedFamilies(local).word(), peer.Name)
	}
	if _, ok := vtepAddrOf(peer.PodCIDRs, v6); !ok {
		return prob(ReasonNoPodCIDR, "node %s has no %s pod CIDR yet", peer.Name, familyName(v6))
	}
	return PathVXLAN, nil
}

func sortDesired(d *Desired) {
	sortRoutes(d.Routes)
	sort.Slice(d.FDB, func(i, j int) bool { return d.FDB[i].MAC < d.FDB[j].MAC })
	sort.Slice(d.Neighbors, func(i, j int) bool { return d.Neighbors[i].IP.Less(d.Neighbors[j].IP) })
	sort.Slice(d.FDB6, func(i, j int) bool { return d.FDB6[i].MAC < d.FDB6[j].MAC })
	sort.Slice(d.Neighbors6, func(i, j int) bool { return d.Neighbors6[i].IP.Less(d.Neighbors6[j].IP) })
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
