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
)

// RoutingModes the Trellis agent accepts.
var RoutingModes = []string{"native", "vxlan", "auto"}

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
	if o.APIPort < 1024 || o.APIPort > 65535 {
		errs = append(errs, fmt.Errorf("--api-port must be between 1024 and 65535, got %d", o.APIPort))
	}
	return errors.Join(errs...)
}

// Subnet is one underlay L2 segment: a bridge in the switch namespace.
type Subnet struct {
	Index   int          `json:"index"`
	Prefix  netip.Prefix `json:"prefix"`
	Gateway netip.Addr   `json:"gateway"` // the router's address on it
	Bridge  string       `json:"bridge"`
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
	t := Topology{Options: o, SwitchNetns: pfx + "switch", RouterNetns: pfx + "router"}
	for s := 0; s < o.Subnets; s++ {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 30, byte(s + 1), 0}), 24)
		t.Subnets = append(t.Subnets, Subnet{
			Index: s, Prefix: p, Gateway: addrIn(p, 1), Bridge: fmt.Sprintf("br%d", s+1),
		})
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

// APIServerURL is the API server's address inside the lab.
func (t Topology) APIServerURL() string {
	return fmt.Sprintf("https://%s", netip.AddrPortFrom(t.ControlPlane.Addr, APIPort))
}

func addrIn(p netip.Prefix, host byte) netip.Addr {
	a := p.Masked().Addr().As4()
	a[3] = host
	return netip.AddrFrom4(a)
}

// LabRanges are the address ranges the lab uses; none may overlap the
// machine's own addresses or routes.
func LabRanges() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix(underlayBase), netip.MustParsePrefix(ClusterCIDR),
		netip.MustParsePrefix(ServiceCIDR)}
}

// Overlaps returns the host prefixes that overlap any lab range.
func Overlaps(host []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, h := range host {
		if h.Bits() == 0 {
			continue // a default route overlaps everything and is not a collision
		}
		for _, l := range LabRanges() {
			if h.Overlaps(l) {
				out = append(out, h)
				break
			}
		}
	}
	return out
}
