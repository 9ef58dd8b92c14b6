package bgp

import (
	"net/netip"
	"sort"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	v1alpha1 "github.com/trellisnet/trellis/internal/apis/bgp/v1alpha1"
	"github.com/trellisnet/trellis/internal/config"
)

// implicitOrigin is the Origin of this node's pod CIDRs in routingMode
// bgp: every node originates them to every neighbour, whatever the
// BGPAdvertisements say (pods on other nodes need them).
const implicitOrigin = "podCIDR (routingMode bgp)"

// advertised is the prefixes one BGPAdvertisement contributes.
type advertised map[string][]netip.Prefix

// paths returns this node's paths, sorted by prefix, and per
// BGPAdvertisement name the prefixes it contributed (for the neighbours'
// Export). The implicit pod CIDRs of routingMode bgp are under "".
//
// The same prefix from several sources (the implicit pod CIDRs, several
// BGPAdvertisements, two Services sharing an address) is one path: its
// communities are the union of all the sources' communities and its local
// preference the highest any source asks for, so the result does not
// depend on the order the objects were listed in. Origins are joined.
func (c *computation) paths() ([]Path, advertised) {
	byPrefix := map[netip.Prefix]*Path{}
	origins := map[netip.Prefix]map[string]bool{}
	add := func(p netip.Prefix, origin string, communities []string, lp *uint32) {
		path, ok := byPrefix[p]
		if !ok {
			path = &Path{Prefix: p}
			byPrefix[p] = path
			origins[p] = map[string]bool{}
		}
		origins[p][origin] = true
		path.Communities = append(path.Communities, communities...)
		if lp != nil && (path.LocalPreference == nil || *lp > *path.LocalPreference) {
			v := *lp
			path.LocalPreference = &v
		}
	}
	by := advertised{}
	localCIDRs := masked(c.in.Local.PodCIDRs)
	if c.in.Mode == config.ModeBGP {
		for _, p := range localCIDRs {
			add(p, implicitOrigin, nil, nil)
			by[""] = append(by[""], p)
		}
	}
	localLabels := labels.Set(c.in.Local.Labels)
	for _, a := range sortedAdvertisements(c.in.Advertisements) {
		obj := "BGPAdvertisement/" + a.Name
		sel, ok := c.selector(ReasonInvalidAdvertisement, obj, "nodeSelector", a.Spec.NodeSelector)
		if !ok || !sel.Matches(localLabels) {
			continue
		}
		communities, ok := c.communities(obj, a.Spec.Communities)
		if !ok {
			continue
		}
		var lp *uint32
		if a.Spec.LocalPreference != nil {
			v := *a.Spec.LocalPreference
			if v < 0 || v > 1<<32-1 {
				c.problem(ReasonInvalidAdvertisement, obj, "localPreference %d is not in 0-4294967295; not advertised", v)
				continue
			}
			u := uint32(v)
			lp = &u
		}
		var prefixes []netip.Prefix
		if a.Spec.PodCIDR {
			for _, p := range localCIDRs {
				add(p, "podCIDR ("+obj+")", communities, lp)
				prefixes = append(prefixes, p)
			}
		}
		if s := a.Spec.Services; s != nil {
			svcSel, ok := c.selector(ReasonInvalidAdvertisement, obj, "services.serviceSelector", s.ServiceSelector)
			if !ok {
				continue
			}
			for _, svc := range c.in.Services {
				if !svcSel.Matches(labels.Set(svc.Labels)) {
					continue
				}
				name := "service " + svc.Namespace + "/" + svc.Name
				kinds := []struct {
					on    bool
					kind  string
					addrs []netip.Addr
				}{
					{s.ClusterIP, "clusterIP", svc.ClusterIPs},
					{s.ExternalIPs, "externalIP", svc.ExternalIPs},
					{s.LoadBalancerIPs, "loadBalancerIP", svc.LoadBalancerIPs},
				}
				for _, k := range kinds {
					if !k.on {
						continue
					}
					for _, ip := range k.addrs {
						p, ok := hostPrefix(ip)
						if !ok {
							continue // "None" headless, or unusable: nothing to route
						}
						add(p, name+" "+k.kind, communities, lp)
						prefixes = append(prefixes, p)
					}
				}
			}
		}
		by[a.Name] = append(by[a.Name], prefixes...)
	}
	out := make([]Path, 0, len(byPrefix))
	for p, path := range byPrefix {
		path.Communities = sortedCommunities(path.Communities)
		names := make([]string, 0, len(origins[p]))
		for o := range origins[p] {
			names = append(names, o)
		}
		sort.Strings(names)
		path.Origin = strings.Join(names, "; ")
		out = append(out, *path)
	}
	sort.Slice(out, func(i, j int) bool { return comparePrefix(out[i].Prefix, out[j].Prefix) < 0 })
	for k, v := range by {
		by[k] = sortedPrefixes(v)
	}
	if len(out) == 0 {
		out = nil
	}
	return out, by
}

// hostPrefix is ip as a /32 or /128; false for an address no route can
// carry (unset, unspecified, loopback, multicast, link-local).
func hostPrefix(ip netip.Addr) (netip.Prefix, bool) {
	ip = ip.Unmap()
	if !ip.IsValid() || !ip.IsGlobalUnicast() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(ip, ip.BitLen()), true
}

// communities checks an advertisement's communities: "a:b" (RFC 1997,
// each part 16 bits) or "a:b:c" (RFC 8092, each part 32 bits). An
// advertisement with an invalid one is not advertised at all: sent
// without the community, the prefix could be spread further than the
// operator meant.
func (c *computation) communities(obj string, cs []string) ([]string, bool) {
	for _, s := range cs {
		parts := strings.Split(s, ":")
		bits := 16
		if len(parts) == 3 {
			bits = 32
		}
		ok := len(parts) == 2 || len(parts) == 3
		for _, part := range parts {
			if _, err := strconv.ParseUint(part, 10, bits); err != nil {
				ok = false
			}
		}
		if !ok {
			c.problem(ReasonInvalidAdvertisement, obj,
				"community %q is neither ASN:value (16-bit parts) nor ASN:x:y (32-bit parts); not advertised", s)
			return nil, false
		}
	}
	return cs, true
}

// sortedCommunities sorts numerically (standard before large) and
// deduplicates.
func sortedCommunities(cs []string) []string {
	if len(cs) == 0 {
		return nil
	}
	key := func(s string) []uint64 {
		parts := strings.Split(s, ":")
		k := []uint64{uint64(len(parts))}
		for _, p := range parts {
			v, _ := strconv.ParseUint(p, 10, 32)
			k = append(k, v)
		}
		return k
	}
	sort.Slice(cs, func(i, j int) bool {
		a, b := key(cs[i]), key(cs[j])
		for n := range a {
			if a[n] != b[n] {
				return a[n] < b[n]
			}
		}
		return false
	})
	out := []string{cs[0]}
	for _, s := range cs[1:] {
		if s != out[len(out)-1] {
			out = append(out, s)
		}
	}
	return out
}

// selector converts a label selector; nil or empty selects everything.
// An invalid one is reported and selects nothing.
func (c *computation) selector(reason, obj, field string, s *metav1.LabelSelector) (labels.Selector, bool) {
	if s == nil {
		return labels.Everything(), true
	}
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		c.problem(reason, obj, "%s is invalid: %v; ignored", field, err)
		return labels.Nothing(), false
	}
	return sel, true
}

func sortedAdvertisements(as []*v1alpha1.BGPAdvertisement) []*v1alpha1.BGPAdvertisement {
	out := make([]*v1alpha1.BGPAdvertisement, 0, len(as))
	for _, a := range as {
		if a != nil {
			out = append(out, a)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
