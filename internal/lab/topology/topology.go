// Package topology is the shape of a lab and the network that realises it:
// Plan computes, as pure data, the underlay subnets, the hosts (control
// plane, nodes, external host) and their namespaces and addresses;
// BuildNetwork creates those namespaces, bridges, veths and routes.
package topology

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// Names and address ranges. Every lab network namespace starts with NetnsPrefix
// so that leftovers of a crashed lab can be found and removed.
const (
	NetnsPrefix   = "tl-"
	ClusterCIDR   = "10.244.0.0/16"
	ServiceCIDR   = "10.96.0.0/16"
	APIServiceIP  = "10.96.0.1"
	ClusterDNSIP  = "10.96.0.10"
	ClusterDomain = "cluster.local"
	APIPort       = 6443
	MaxNodes      = 50
	MaxSubnets    = 8
	// underlayBase is 172.30.<subnet>.0/24: private, and not used by this
	// machine's own network (the lab checks for overlaps before creating it).
	underlayBase   = "172.30.0.0/16"
	externalSubnet = "172.30.250.0/24"
	// originPrefix is the prefix behind the external host that the ToR
	// originates with --bgp (the external host holds it on its loopback);
	// servicePrefix is where the lab's Services get external and
	// LoadBalancer addresses the nodes announce to the ToR. Both lie in
	// underlayBase, so the overlap check covers them.
	originPrefix  = "172.30.251.0/24"
	servicePrefix = "172.30.252.0/24"
	// md5Host is the router's second address on every subnet with --bgp:
	// the ToR's TCP-MD5 sessions listen there.
	md5Host = 254
)

// BGP numbers of the lab: the ToR's AS, the nodes' AS.
const (
	ToRASN  = 65000
	NodeASN = 64512
)

// RoutingModeBGP is the routing mode in which pod CIDRs travel only by BGP.
const RoutingModeBGP = "bgp"

// RoutingModes the Trellis agent accepts.
var RoutingModes = []string{"native", "vxlan", "auto", RoutingModeBGP}

// BGPPeerings are the values of --bgp-peering (the BGPConfiguration's
// internalPeering).
var BGPPeerings = []string{"None", "FullMesh", "RouteReflector"}

// Encryptions the Trellis agent accepts (its `encryption` setting).
var Encryptions = []string{"none", "wireguard"}

// Options is what `trellis-lab up` is asked for.
type Options struct {
	Nodes       int
	Subnets     int
	RoutingMode string
	// Encryption is the agent's encryption setting: none or wireguard
	// ("" in the state of a lab made before the setting existed: none).
	Encryption  string `json:"encryption,omitempty"`
	APIPort     int    // loopback port on the host forwarded to the API server
	NetnsPrefix string `json:"netnsPrefix,omitempty"` // default NetnsPrefix
	// BGP runs BIRD in the router namespace as the nodes' top-of-rack
	// router and creates the BGP objects peering every node with it.
	BGP bool `json:"bgp,omitempty"`
	// BGPPeering is the BGPConfiguration's internalPeering ("" = None).
	BGPPeering string `json:"bgpPeering,omitempty"`
	// BGPRestartTime is the graceful-restart time the nodes announce, in
	// seconds (0 = the API's default, 120).
	BGPRestartTime int `json:"bgpRestartTime,omitempty"`
	// IPFamily is the cluster's: ipv4 ("" too), ipv6 or dual. With IPv6
	// the underlay carries both families; the cluster only its own.
	IPFamily string `json:"ipFamily,omitempty"`
	// ClusterCIDR is the cluster's pod range ("" = ClusterCIDR) and
	// NodeCIDRMask the size of each real node's pod CIDR in it (0 =
	// DefaultNodeCIDRMask). A wider range leaves room for API-only Nodes
	// with pod CIDRs of their own (the scale bench's thousands).
	ClusterCIDR  string `json:"clusterCIDR,omitempty"`
	NodeCIDRMask int    `json:"nodeCIDRMask,omitempty"`
}

// DefaultNodeCIDRMask is the prefix length of a node's pod CIDR.
const DefaultNodeCIDRMask = 24

// clusterRange is where a lab's cluster CIDR may lie: private, away from
// the underlay (172.30.0.0/16) and the Service range (10.96.0.0/16).
var clusterRange = netip.MustParsePrefix("10.128.0.0/9")

// ClusterCIDROrDefault is o's cluster CIDR, ClusterCIDR when unset.
func (o Options) ClusterCIDROrDefault() string {
	if o.ClusterCIDR == "" {
		return ClusterCIDR
	}
	return o.ClusterCIDR
}

// NodeCIDRMaskOrDefault is o's node pod CIDR size, DefaultNodeCIDRMask
// when unset.
func (o Options) NodeCIDRMaskOrDefault() int {
	if o.NodeCIDRMask == 0 {
		return DefaultNodeCIDRMask
	}
	return o.NodeCIDRMask
}

// validCluster checks --cluster-cidr and --node-cidr-mask.
func (o Options) validCluster() []error {
	var errs []error
	p, err := netip.ParsePrefix(o.ClusterCIDROrDefault())
	if err != nil || !p.Addr().Is4() || p != p.Masked() {
		return []error{fmt.Errorf("--cluster-cidr must be an IPv4 network address with its prefix length, got %q", o.ClusterCIDR)}
	}
	if p.Bits() < clusterRange.Bits() || !clusterRange.Contains(p.Addr()) {
		errs = append(errs, fmt.Errorf("--cluster-cidr must lie inside %s (lab-only), got %s", clusterRange, p))
	}
	m := o.NodeCIDRMaskOrDefault()
	switch {
	case m <= p.Bits() || m > 28:
		errs = append(errs, fmt.Errorf("--node-cidr-mask must be longer than the cluster CIDR's /%d and at most 28, got %d", p.Bits(), m))
	case m-p.Bits() > 16:
		errs = append(errs, fmt.Errorf("--node-cidr-mask %d is more than 16 bits longer than the cluster CIDR's /%d (kube-controller-manager's limit)", m, p.Bits()))
	case 1<<(m-p.Bits()) < o.Nodes:
		errs = append(errs, fmt.Errorf("--cluster-cidr %s holds %d node CIDRs of /%d, fewer than --nodes %d", p, 1<<(m-p.Bits()), m, o.Nodes))
	}
	return errs
}

// Validate returns every problem with o, joined.
func (o Options) Validate() error {
	var errs []error
	if o.Nodes < 1 || o.Nodes > MaxNodes {
		errs = append(errs, fmt.Errorf("--nodes must be between 1 and %d, got %d", MaxNodes, o.Nodes))
	}
	if o.Subnets < 1 || o.Subnets > MaxSubnets {
		errs = append(errs, fmt.Errorf("--subnets must be between 1 and %d, got %d", MaxSubnets, o.Subnets))
	}
	if o.Subnets > o.Nodes && o.Nodes >= 1 {
		errs = append(errs, fmt.Errorf("--subnets (%d) cannot exceed --nodes (%d)", o.Subnets, o.Nodes))
	}
	ok := false
	for _, m := range RoutingModes {
		ok = ok || m == o.RoutingMode
	}
	if !ok {
		errs = append(errs, fmt.Errorf("--routing-mode must be one of %v, got %q", RoutingModes, o.RoutingMode))
	}
	if o.Encryption != "" && !slices.Contains(Encryptions, o.Encryption) {
		errs = append(errs, fmt.Errorf("--encryption must be one of %v, got %q", Encryptions, o.Encryption))
	}
	if o.RoutingMode == RoutingModeBGP && !o.BGP {
		errs = append(errs, errors.New("--routing-mode bgp needs the ToR: add --bgp"))
	}
	if o.BGP && o.Encryption != "" && o.Encryption != "none" {
		errs = append(errs, fmt.Errorf("--bgp with --encryption %s: BGP and encryption together are not supported", o.Encryption))
	}
	if o.BGPPeering != "" && !slices.Contains(BGPPeerings, o.BGPPeering) {
		errs = append(errs, fmt.Errorf("--bgp-peering must be one of %v, got %q", BGPPeerings, o.BGPPeering))
	}
	if (o.BGPPeering != "" || o.BGPRestartTime != 0) && !o.BGP {
		errs = append(errs, errors.New("--bgp-peering and --bgp-restart-time need --bgp"))
	}
	if o.BGPRestartTime < 0 || o.BGPRestartTime > 4095 {
		errs = append(errs, fmt.Errorf("--bgp-restart-time must be between 1 and 4095 seconds, got %d", o.BGPRestartTime))
	}
	if o.IPFamily != "" && !slices.Contains(IPFamilies, o.IPFamily) {
		errs = append(errs, fmt.Errorf("--ip-family must be one of %v, got %q", IPFamilies, o.IPFamily))
	}
	if o.BGP && o.IPFamilyOrDefault() != IPv4 {
		errs = append(errs, fmt.Errorf("--bgp with --ip-family %s: the lab's ToR and BGP objects are IPv4-only", o.IPFamily))
	}
	errs = append(errs, o.validCluster()...)
	if o.IPFamilyOrDefault() == IPv6 && (o.ClusterCIDROrDefault() != ClusterCIDR || o.NodeCIDRMaskOrDefault() != DefaultNodeCIDRMask) {
		errs = append(errs, errors.New("--cluster-cidr and --node-cidr-mask set the IPv4 cluster range: not with --ip-family ipv6"))
	}
	if o.APIPort < 1024 || o.APIPort > 65535 {
		errs = append(errs, fmt.Errorf("--api-port must be between 1024 and 65535, got %d", o.APIPort))
	}
	return errors.Join(errs...)
}

// BGPPeeringOrDefault is o's internal peering, "None" when unset.
func (o Options) BGPPeeringOrDefault() string {
	if o.BGPPeering == "" {
		return "None"
	}
	return o.BGPPeering
}

// Subnet is one underlay L2 segment: a bridge in the switch namespace.
type Subnet struct {
	Index   int          `json:"index"`
	Prefix  netip.Prefix `json:"prefix"`
	Gateway netip.Addr   `json:"gateway"` // the router's address on it
	Bridge  string       `json:"bridge"`
	// RouterIf is the router's interface on the subnet.
	RouterIf string `json:"routerIf,omitempty"`
	// MD5Addr is the router's second address on the subnet with --bgp,
	// where the ToR's TCP-MD5 sessions listen.
	MD5Addr netip.Addr `json:"md5Addr,omitempty"`
	// Prefix6 and Gateway6 are the subnet's IPv6 /64 and the router's
	// address on it, in a lab with IPv6.
	Prefix6  netip.Prefix `json:"prefix6,omitzero"`
	Gateway6 netip.Addr   `json:"gateway6,omitzero"`
}

// Host is a namespace attached to an underlay subnet (a node, the control
// plane or the external host).
type Host struct {
	Name    string     `json:"name"`
	Netns   string     `json:"netns"`
	Subnet  int        `json:"subnet"` // index into Topology.Subnets, -1 for external
	Addr    netip.Addr `json:"addr"`
	Prefix  int        `json:"prefixLen"`
	Gateway netip.Addr `json:"gateway"`
	// Addr6 and Gateway6 are the host's IPv6 address (in a /64) and its
	// default gateway, in a lab with IPv6.
	Addr6    netip.Addr `json:"addr6,omitzero"`
	Gateway6 netip.Addr `json:"gateway6,omitzero"`
}

// Topology is the complete desired shape of a lab: pure data.
type Topology struct {
	Options      Options      `json:"options"`
	Subnets      []Subnet     `json:"subnets"`
	ControlPlane Host         `json:"controlPlane"`
	Nodes        []Host       `json:"nodes"`
	External     Host         `json:"external"`
	SwitchNetns  string       `json:"switchNetns"`
	RouterNetns  string       `json:"routerNetns"`
	ExternalGW   netip.Prefix `json:"externalRouterAddr"` // the router's end of the external link
	// OriginPrefix (with --bgp) is the prefix behind the external host the
	// ToR originates; OriginAddr is the external host's address in it.
	OriginPrefix netip.Prefix `json:"originPrefix,omitempty"`
	OriginAddr   netip.Addr   `json:"originAddr,omitempty"`
	// ServicePrefix (with --bgp) is the range the lab's Services take
	// external and LoadBalancer addresses from; the ToR accepts it.
	ServicePrefix netip.Prefix `json:"servicePrefix,omitempty"`
	// Families is the cluster's addressing per IP family, primary first
	// (ClusterFamilies reads it).
	Families []ClusterFamily `json:"families,omitempty"`
	// ExternalGW6 is the router's end of the external link in a lab with
	// IPv6.
	ExternalGW6 netip.Prefix `json:"externalRouterAddr6,omitzero"`
}

// EncryptionOrDefault is o's encryption setting, "none" when unset.
func (o Options) EncryptionOrDefault() string {
	if o.Encryption == "" {
		return "none"
	}
	return o.Encryption
}

// NodeName is the Kubernetes node name of node i (0-based).
func NodeName(i int) string { return fmt.Sprintf("node%d", i+1) }

// Plan computes the topology for o. Nodes are spread round-robin over the
// subnets; the control plane sits on subnet 1.
func Plan(o Options) (Topology, error) {
	if err := o.Validate(); err != nil {
		return Topology{}, err
	}
	pfx := o.NetnsPrefix
	if pfx == "" {
		pfx = NetnsPrefix
	}
	t := Topology{Options: o, SwitchNetns: pfx + "switch", RouterNetns: pfx + "router", Families: clusterFamilies(o)}
	for s := 0; s < o.Subnets; s++ {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 30, byte(s + 1), 0}), 24)
		sn := Subnet{Index: s, Prefix: p, Gateway: addrIn(p, 1), Bridge: fmt.Sprintf("br%d", s+1),
			RouterIf: fmt.Sprintf("sub%d", s+1)}
		if o.BGP {
			sn.MD5Addr = addrIn(p, md5Host)
		}
		t.Subnets = append(t.Subnets, sn)
	}
	sn0 := t.Subnets[0]
	t.ControlPlane = Host{Name: "control-plane", Netns: pfx + "cp", Subnet: 0,
		Addr: addrIn(sn0.Prefix, 2), Prefix: 24, Gateway: sn0.Gateway}
	for i := 0; i < o.Nodes; i++ {
		sn := t.Subnets[i%o.Subnets]
		t.Nodes = append(t.Nodes, Host{Name: NodeName(i), Netns: pfx + NodeName(i), Subnet: sn.Index,
			Addr: addrIn(sn.Prefix, byte(10+i/o.Subnets)), Prefix: 24, Gateway: sn.Gateway})
	}
	ext := netip.MustParsePrefix(externalSubnet)
	t.External = Host{Name: "external", Netns: pfx + "external", Subnet: -1,
		Addr: addrIn(ext, 2), Prefix: 24, Gateway: addrIn(ext, 1)}
	t.ExternalGW = netip.PrefixFrom(addrIn(ext, 1), 24)
	if t.HasIPv6() {
		planIPv6(&t)
	}
	if o.BGP {
		t.OriginPrefix = netip.MustParsePrefix(originPrefix)
		t.OriginAddr = addrIn(t.OriginPrefix, 1)
		t.ServicePrefix = netip.MustParsePrefix(servicePrefix)
	}
	return t, nil
}

// Node returns the node called name.
func (t Topology) Node(name string) (Host, error) {
	for _, n := range t.Nodes {
		if n.Name == name {
			return n, nil
		}
	}
	names := make([]string, 0, len(t.Nodes))
	for _, n := range t.Nodes {
		names = append(names, n.Name)
	}
	return Host{}, fmt.Errorf("unknown node %q (the lab has %v)", name, names)
}

// Netnses lists every network namespace of the topology.
func (t Topology) Netnses() []string {
	out := []string{t.SwitchNetns, t.RouterNetns, t.ControlPlane.Netns, t.External.Netns}
	for _, n := range t.Nodes {
		out = append(out, n.Netns)
	}
	return out
}

// planIPv6 gives every subnet, host and the external link of t its IPv6
// address: the same host number as in IPv4 in the subnet's /64.
func planIPv6(t *Topology) {
	for i := range t.Subnets {
		s := &t.Subnets[i]
		s.Prefix6 = subnet6(s.Index + 1)
		s.Gateway6 = addrIn6(s.Prefix6, 1)
	}
	set := func(h *Host) {
		if h.Subnet < 0 {
			return
		}
		s := t.Subnets[h.Subnet]
		h.Addr6, h.Gateway6 = addrIn6(s.Prefix6, h.Addr.As4()[3]), s.Gateway6
	}
	set(&t.ControlPlane)
	for i := range t.Nodes {
		set(&t.Nodes[i])
	}
	ext := subnet6(externalSubnet6)
	t.External.Addr6, t.External.Gateway6 = addrIn6(ext, 2), addrIn6(ext, 1)
	t.ExternalGW6 = netip.PrefixFrom(addrIn6(ext, 1), 64)
}

// APIServerURL is the API server's address inside the lab, in the primary
// family.
func (t Topology) APIServerURL() string {
	return fmt.Sprintf("https://%s", netip.AddrPortFrom(t.PrimaryIP(t.ControlPlane), APIPort))
}

func addrIn(p netip.Prefix, host byte) netip.Addr {
	a := p.Masked().Addr().As4()
	a[3] = host
	return netip.AddrFrom4(a)
}

// LabRanges are the address ranges an IPv4 lab with the default cluster CIDR
// uses; none may overlap the machine's own addresses or routes.
func LabRanges() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix(underlayBase), netip.MustParsePrefix(ClusterCIDR),
		netip.MustParsePrefix(ServiceCIDR)}
}

// LabRanges are the address ranges t uses: the underlay of each family and
// every family's cluster and Service CIDRs.
func (t Topology) LabRanges() []netip.Prefix {
	out := []netip.Prefix{netip.MustParsePrefix(underlayBase)}
	if t.HasIPv6() {
		out = append(out, netip.MustParsePrefix(underlayBase6))
	}
	for _, f := range t.ClusterFamilies() {
		out = append(out, f.ClusterCIDR, f.ServiceCIDR)
	}
	return out
}

// Overlaps returns the host prefixes that overlap any range of an IPv4 lab
// with the default cluster CIDR.
func Overlaps(host []netip.Prefix) []netip.Prefix { return overlaps(host, LabRanges()) }

// Overlaps returns the host prefixes that overlap any of t's ranges.
func (t Topology) Overlaps(host []netip.Prefix) []netip.Prefix { return overlaps(host, t.LabRanges()) }

func overlaps(host, lab []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, h := range host {
		if h.Bits() == 0 {
			continue // a default route overlaps everything and is not a collision
		}
		for _, l := range lab {
			if h.Overlaps(l) {
				out = append(out, h)
				break
			}
		}
	}
	return out
}
