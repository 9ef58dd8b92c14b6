package bgp

import (
	"net/netip"
	"sort"

	v1alpha1 "github.com/trellisnet/trellis/internal/apis/bgp/v1alpha1"
	"github.com/trellisnet/trellis/internal/config"
)

// importPolicy is what this node accepts from its neighbours and installs.
// Cluster holds the cluster CIDRs and the pod CIDRs of this node and of
// every accepted node; a rejected node's pod CIDRs are not trusted even to
// refuse routes with (a node publishing 0.0.0.0/1 must not blind every
// node to the fabric).
func (c *computation) importPolicy(obj string, spec *v1alpha1.ImportPolicy) ImportPolicy {
	ip := ImportPolicy{Install: true, MaxPrefixes: DefaultMaxPrefixes}
	local := masked(c.in.Local.PodCIDRs)
	ip.Reject = sortedPrefixes(append([]netip.Prefix(nil), local...))
	cluster := append(masked(c.in.ClusterCIDRs), local...)
	var others []netip.Prefix
	for _, n := range c.nodes {
		others = append(others, n.PodCIDRs...)
	}
	cluster = append(cluster, others...)
	ip.Cluster = sortedPrefixes(cluster)
	if c.in.Mode == config.ModeBGP {
		ip.PodCIDRs = sortedPrefixes(others)
	}
	if spec == nil {
		return ip
	}
	if spec.Enabled != nil {
		ip.Install = *spec.Enabled
	}
	if spec.MaxPrefixes > 0 {
		ip.MaxPrefixes = uint32(spec.MaxPrefixes)
	}
	for _, m := range spec.AcceptedPrefixes {
		p, err := netip.ParsePrefix(m.Prefix)
		if err != nil || m.MaxLength < 0 || int(m.MaxLength) > p.Addr().BitLen() {
			c.problem(ReasonInvalidConfiguration, obj,
				"import.acceptedPrefixes entry %q (maxLength %d) is not a prefix with a length it can hold; ignored", m.Prefix, m.MaxLength)
			continue
		}
		p = p.Masked()
		maxLen := int(m.MaxLength)
		if maxLen < p.Bits() {
			maxLen = p.Bits()
		}
		ip.Accept = append(ip.Accept, PrefixMatch{Prefix: p, MaxLen: maxLen})
	}
	sort.Slice(ip.Accept, func(i, j int) bool {
		a, b := ip.Accept[i], ip.Accept[j]
		if c := comparePrefix(a.Prefix, b.Prefix); c != 0 {
			return c < 0
		}
		return a.MaxLen < b.MaxLen
	})
	if len(spec.AcceptedPrefixes) > 0 && len(ip.Accept) == 0 {
		// Every entry was invalid: an empty Accept would accept any
		// prefix. The zero PrefixMatch matches nothing.
		ip.Accept = []PrefixMatch{{}}
	}
	return ip
}
