package topology

import "net/netip"

// IP families of a lab (`up --ip-family`): the Kubernetes cluster's, in
// order of preference. Dual is IPv4 first (the primary family: the one of
// the API server's address, of single-stack Services and of kubelet's first
// node IP), IPv6 second.
const (
	IPv4 = "ipv4"
	IPv6 = "ipv6"
	Dual = "dual"
)

// IPFamilies are the values of --ip-family.
var IPFamilies = []string{IPv4, IPv6, Dual}

// IPv6 address plan. Three /48s from one ULA global ID (fd74:7265:6c…,
// "trel"), nothing routed outside the lab: the underlay (one /64 per subnet,
// the subnet's number written as hex digits: subnet 1 is
// fd74:7265:6c00:1::/64, the external link fd74:7265:6c00:250::/64), the
// pods (a /64 per node) and the Services (a /112).
const (
	underlayBase6 = "fd74:7265:6c00::/48"
	ClusterCIDR6  = "fd74:7265:6c01::/48"
	ServiceCIDR6  = "fd74:7265:6c02::/112"
	APIServiceIP6 = "fd74:7265:6c02::1"
	ClusterDNSIP6 = "fd74:7265:6c02::a"
	// labRange6 holds the three (Topology.LabRanges lists them one by one).
	labRange6 = "fd74:7265:6c00::/46"
	// externalSubnet6's number matches externalSubnet's third octet.
	externalSubnet6 = 250
)

// Node mask sizes: the pod CIDR each node gets out of the cluster CIDR.
const (
	NodeMaskSize4 = 24
	NodeMaskSize6 = 64
)

// ClusterFamily is one IP family's cluster addressing: the pod CIDR the
// controller manager hands node CIDRs out of and their size, the Service
// range and its two well-known addresses.
type ClusterFamily struct {
	IPv6         bool         `json:"ipv6,omitempty"`
	ClusterCIDR  netip.Prefix `json:"clusterCIDR"`
	NodeMaskSize int          `json:"nodeMaskSize"`
	ServiceCIDR  netip.Prefix `json:"serviceCIDR"`
	APIServiceIP netip.Addr   `json:"apiServiceIP"`
	ClusterDNSIP netip.Addr   `json:"clusterDNSIP"`
}

// Name is "ipv4" or "ipv6".
func (f ClusterFamily) Name() string {
	if f.IPv6 {
		return IPv6
	}
	return IPv4
}

// DefaultFamily4 is the IPv4 cluster addressing of every lab with IPv4.
func DefaultFamily4() ClusterFamily {
	return ClusterFamily{ClusterCIDR: netip.MustParsePrefix(ClusterCIDR), NodeMaskSize: NodeMaskSize4,
		ServiceCIDR: netip.MustParsePrefix(ServiceCIDR), APIServiceIP: netip.MustParseAddr(APIServiceIP),
		ClusterDNSIP: netip.MustParseAddr(ClusterDNSIP)}
}

// DefaultFamily6 is the IPv6 cluster addressing of every lab with IPv6: a
// /64 per node out of a /48.
func DefaultFamily6() ClusterFamily {
	return ClusterFamily{IPv6: true, ClusterCIDR: netip.MustParsePrefix(ClusterCIDR6), NodeMaskSize: NodeMaskSize6,
		ServiceCIDR: netip.MustParsePrefix(ServiceCIDR6), APIServiceIP: netip.MustParseAddr(APIServiceIP6),
		ClusterDNSIP: netip.MustParseAddr(ClusterDNSIP6)}
}

// IPFamilyOrDefault is o's IP family, "ipv4" when unset.
func (o Options) IPFamilyOrDefault() string {
	if o.IPFamily == "" {
		return IPv4
	}
	return o.IPFamily
}

// clusterFamilies is the cluster addressing for o, primary family first.
// It is the one place that decides the families' CIDRs and node mask
// sizes: an option changing them changes them here.
func clusterFamilies(o Options) []ClusterFamily {
	switch o.IPFamilyOrDefault() {
	case IPv6:
		return []ClusterFamily{DefaultFamily6()}
	case Dual:
		return []ClusterFamily{family4(o), DefaultFamily6()}
	}
	return []ClusterFamily{family4(o)}
}

// family4 is the IPv4 cluster addressing for o: --cluster-cidr and
// --node-cidr-mask (validated by Plan) over the defaults.
func family4(o Options) ClusterFamily {
	f := DefaultFamily4()
	if p, err := netip.ParsePrefix(o.ClusterCIDROrDefault()); err == nil {
		f.ClusterCIDR = p
	}
	f.NodeMaskSize = o.NodeCIDRMaskOrDefault()
	return f
}

// ClusterFamilies is t's cluster addressing, primary family first (the
// IPv4 defaults for the state of a lab made before it was recorded).
func (t Topology) ClusterFamilies() []ClusterFamily {
	if len(t.Families) == 0 {
		return []ClusterFamily{DefaultFamily4()}
	}
	return t.Families
}

// Primary is t's primary cluster family.
func (t Topology) Primary() ClusterFamily { return t.ClusterFamilies()[0] }

// HasIPv6 says whether the cluster (and so the underlay) has IPv6.
func (t Topology) HasIPv6() bool {
	for _, f := range t.ClusterFamilies() {
		if f.IPv6 {
			return true
		}
	}
	return false
}

// ClusterCIDRs are the families' pod CIDRs, primary first.
func (t Topology) ClusterCIDRs() []netip.Prefix {
	var out []netip.Prefix
	for _, f := range t.ClusterFamilies() {
		out = append(out, f.ClusterCIDR)
	}
	return out
}

// ClusterCIDRs4 are the IPv4 pod CIDRs (none in an IPv6-only lab): what the
// Trellis agent, IPv4-only, is configured with.
func (t Topology) ClusterCIDRs4() []netip.Prefix {
	var out []netip.Prefix
	for _, f := range t.ClusterFamilies() {
		if !f.IPv6 {
			out = append(out, f.ClusterCIDR)
		}
	}
	return out
}

// ServiceCIDRs are the families' Service ranges, primary first.
func (t Topology) ServiceCIDRs() []netip.Prefix {
	var out []netip.Prefix
	for _, f := range t.ClusterFamilies() {
		out = append(out, f.ServiceCIDR)
	}
	return out
}

// ClusterDNSIPs are kube-dns's ClusterIPs, primary first.
func (t Topology) ClusterDNSIPs() []netip.Addr {
	var out []netip.Addr
	for _, f := range t.ClusterFamilies() {
		out = append(out, f.ClusterDNSIP)
	}
	return out
}

// APIServiceIPs are the `kubernetes` Service's addresses of every family
// (the API server's certificate holds them all).
func (t Topology) APIServiceIPs() []netip.Addr {
	var out []netip.Addr
	for _, f := range t.ClusterFamilies() {
		out = append(out, f.APIServiceIP)
	}
	return out
}

// HostIPs are h's underlay addresses in the cluster's families, primary
// first: kubelet's --node-ip, the Node's InternalIPs.
func (t Topology) HostIPs(h Host) []netip.Addr {
	var out []netip.Addr
	for _, f := range t.ClusterFamilies() {
		if f.IPv6 {
			out = append(out, h.Addr6)
		} else {
			out = append(out, h.Addr)
		}
	}
	return out
}

// PrimaryIP is h's address in the primary family.
func (t Topology) PrimaryIP(h Host) netip.Addr { return t.HostIPs(h)[0] }

// subnet6 is the IPv6 underlay /64 numbered n, the number written with
// hex digits (subnet 1 is fd74:7265:6c00:1::/64, 250 is …:250::/64).
func subnet6(n int) netip.Prefix {
	a := netip.MustParsePrefix(underlayBase6).Addr().As16()
	v := hexDigits(n)
	a[6], a[7] = byte(v>>8), byte(v)
	return netip.PrefixFrom(netip.AddrFrom16(a), 64)
}

// addrIn6 is host number host in the /64 p, written like the IPv4 host
// number (172.30.1.10 and fd74:7265:6c00:1::10 are the same host).
func addrIn6(p netip.Prefix, host byte) netip.Addr {
	a := p.Masked().Addr().As16()
	v := hexDigits(int(host))
	a[14], a[15] = byte(v>>8), byte(v)
	return netip.AddrFrom16(a)
}

// hexDigits reads n's decimal digits as hex digits (10 → 0x10); n is below
// 10000, so the result fits a 16-bit group.
func hexDigits(n int) uint16 {
	var v, shift uint16
	for ; n > 0 && shift < 16; n /= 10 {
		v |= uint16(n%10) << shift
		shift += 4
	}
	return v
}
