package speaker

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	api "github.com/osrg/gobgp/v4/api"

	"github.com/trellisnet/trellis/internal/bgp"
)

// route is what the policy interpreter below looks at.
type route struct {
	prefix netip.Prefix
	// kind: "local", "internal" (iBGP-learned), "external".
	kind string
	// to: the neighbour the path is exported to (export only).
	to netip.Addr
}

// evaluate runs a policy the way GoBGP does (statements in order, the
// first whose conditions all match decides; else defaultAction), for the
// conditions this package uses. The tier-1 tests check GoBGP itself.
func evaluate(t *testing.T, req *api.SetPoliciesRequest, policy string, r route) bool {
	t.Helper()
	sets := map[string]*api.DefinedSet{}
	for _, d := range req.DefinedSets {
		if sets[d.Name] != nil {
			t.Fatalf("defined set %s twice", d.Name)
		}
		sets[d.Name] = d
	}
	for _, p := range req.Policies {
		if p.Name != policy {
			continue
		}
		for _, s := range p.Statements {
			if matches(t, sets, s.Conditions, r) {
				return s.Actions.RouteAction == api.RouteAction_ROUTE_ACTION_ACCEPT
			}
		}
		return false // default reject (assignments)
	}
	t.Fatalf("no policy %s", policy)
	return false
}

func matches(t *testing.T, sets map[string]*api.DefinedSet, c *api.Conditions, r route) bool {
	switch c.RouteType {
	case api.Conditions_ROUTE_TYPE_LOCAL:
		if r.kind != "local" {
			return false
		}
	case api.Conditions_ROUTE_TYPE_INTERNAL:
		if r.kind != "internal" {
			return false
		}
	case api.Conditions_ROUTE_TYPE_EXTERNAL:
		if r.kind != "external" {
			return false
		}
	}
	if m := c.PrefixSet; m != nil {
		s := sets[m.Name]
		if s == nil || s.DefinedType != api.DefinedType_DEFINED_TYPE_PREFIX {
			t.Fatalf("prefix set %s missing", m.Name)
		}
		v4 := netip.MustParsePrefix(s.Prefixes[0].IpPrefix).Addr().Is4()
		hit := false
		for _, p := range s.Prefixes {
			pp := netip.MustParsePrefix(p.IpPrefix)
			if pp.Addr().Is4() != v4 {
				t.Fatalf("prefix set %s mixes families (GoBGP refuses it)", m.Name)
			}
			if pp.Addr().Is4() == r.prefix.Addr().Is4() && pp.Contains(r.prefix.Addr()) &&
				r.prefix.Bits() >= int(p.MaskLengthMin) && r.prefix.Bits() <= int(p.MaskLengthMax) && r.prefix.Bits() >= pp.Bits() {
				hit = true
			}
		}
		if !hit {
			return false
		}
	}
	if m := c.NeighborSet; m != nil {
		s := sets[m.Name]
		if s == nil || s.DefinedType != api.DefinedType_DEFINED_TYPE_NEIGHBOR {
			t.Fatalf("neighbour set %s missing", m.Name)
		}
		hit := false
		for _, n := range s.List {
			if netip.MustParsePrefix(n).Contains(r.to) {
				hit = true
			}
		}
		if !hit {
			return false
		}
	}
	return true
}

// TestImportPolicyAgreesWithAllows: GoBGP's import policy refuses and
// accepts exactly what ImportPolicy.Allows does.
func TestImportPolicyAgreesWithAllows(t *testing.T) {
	candidates := []string{
		"0.0.0.0/0", "::/0", "10.0.0.0/8", "10.244.0.0/16", "10.244.0.0/15", "10.244.1.0/24", "10.244.1.0/25",
		"10.244.1.128/26", "10.244.2.0/24", "10.244.2.0/25", "10.244.3.0/24", "10.245.0.0/16", "10.96.0.0/12",
		"198.18.100.0/24", "198.18.100.0/25", "198.18.0.0/15", "198.19.7.0/24", "203.0.113.7/32", "192.0.2.0/24",
		"fd00:10::/48", "fd00:10:0:1::/64", "fd00:10:0:2::/64", "fd00:20::/64", "2001:db8::/32", "2001:db8:1::/48",
	}
	cases := map[string]bgp.ImportPolicy{
		"default (no lists)": {},
		"native mode": {
			Reject:  []netip.Prefix{mustPrefix("10.244.1.0/24"), mustPrefix("fd00:10:0:1::/64")},
			Cluster: []netip.Prefix{mustPrefix("10.244.0.0/16"), mustPrefix("fd00:10::/48")},
		},
		"bgp mode": {
			Reject:   []netip.Prefix{mustPrefix("10.244.1.0/24"), mustPrefix("fd00:10:0:1::/64")},
			PodCIDRs: []netip.Prefix{mustPrefix("10.244.2.0/24"), mustPrefix("10.244.3.0/24"), mustPrefix("fd00:10:0:2::/64")},
			Cluster:  []netip.Prefix{mustPrefix("10.244.0.0/16"), mustPrefix("fd00:10::/48")},
		},
		"accepted prefixes": {
			Reject:  []netip.Prefix{mustPrefix("10.244.1.0/24")},
			Cluster: []netip.Prefix{mustPrefix("10.244.0.0/16")},
			Accept: []bgp.PrefixMatch{{Prefix: mustPrefix("198.18.0.0/15"), MaxLen: 24},
				{Prefix: mustPrefix("0.0.0.0/0")}, {Prefix: mustPrefix("2001:db8::/32"), MaxLen: 48}},
		},
		"accept covering the cluster": {
			Cluster: []netip.Prefix{mustPrefix("10.244.0.0/16")},
			Accept:  []bgp.PrefixMatch{{Prefix: mustPrefix("10.0.0.0/8"), MaxLen: 32}},
		},
	}
	for name, ip := range cases {
		t.Run(name, func(t *testing.T) {
			req := policies(bgp.Desired{Import: ip})
			for _, c := range candidates {
				p := mustPrefix(c)
				want, why := ip.Allows(p)
				for _, kind := range []string{"external", "internal"} {
					if got := evaluate(t, req, importPolicyName, route{prefix: p, kind: kind}); got != want {
						t.Errorf("%s (%s): GoBGP policy %v, Allows %v (%s)", c, kind, got, want, why)
					}
				}
				if !evaluate(t, req, importPolicyName, route{prefix: p, kind: "local"}) {
					t.Errorf("%s: own path refused by the import policy", c)
				}
			}
		})
	}
}

// TestExportPolicy: each neighbour gets its Export list of this node's
// paths, iBGP-learned paths pass only between internal neighbours, and
// nothing learned goes to an external neighbour.
func TestExportPolicy(t *testing.T) {
	tor, n2, n3 := mustAddr("10.0.0.254"), mustAddr("10.0.1.2"), mustAddr("fd00::3")
	d := bgp.Desired{Neighbors: []bgp.Neighbor{
		{Address: tor, Export: []netip.Prefix{mustPrefix("10.244.1.0/24"), mustPrefix("10.96.0.10/32"), mustPrefix("fd00:10:0:1::/64")}},
		{Address: n2, Internal: true, Export: []netip.Prefix{mustPrefix("10.244.1.0/24")}},
		{Address: n3, Internal: true},
	}}
	req := policies(d)
	for _, tc := range []struct {
		r    route
		want bool
	}{
		{route{mustPrefix("10.244.1.0/24"), "local", tor}, true},
		{route{mustPrefix("10.96.0.10/32"), "local", tor}, true},
		{route{mustPrefix("fd00:10:0:1::/64"), "local", tor}, true},
		{route{mustPrefix("10.96.0.11/32"), "local", tor}, false},
		{route{mustPrefix("10.96.0.0/24"), "local", tor}, false},
		{route{mustPrefix("10.244.1.0/24"), "local", n2}, true},
		{route{mustPrefix("10.96.0.10/32"), "local", n2}, false},
		{route{mustPrefix("10.244.1.0/24"), "local", n3}, false},
		{route{mustPrefix("10.244.2.0/24"), "internal", n2}, true},
		{route{mustPrefix("10.244.2.0/24"), "internal", n3}, true},
		{route{mustPrefix("10.244.2.0/24"), "internal", tor}, false},
		{route{mustPrefix("198.18.100.0/24"), "external", n2}, false},
		{route{mustPrefix("198.18.100.0/24"), "external", tor}, false},
	} {
		if got := evaluate(t, req, exportPolicyName, tc.r); got != tc.want {
			t.Errorf("%v %s to %v: %v, want %v", tc.r.prefix, tc.r.kind, tc.r.to, got, tc.want)
		}
	}
	// Set and statement names are unique (GoBGP keys them by name).
	seen := map[string]bool{}
	for _, p := range req.Policies {
		for _, s := range p.Statements {
			if seen[s.Name] {
				t.Errorf("statement name %s twice", s.Name)
			}
			seen[s.Name] = true
		}
	}
}

func TestInside(t *testing.T) {
	var got []string
	for _, p := range inside([]netip.Prefix{mustPrefix("10.244.0.0/16"), mustPrefix("10.244.0.0/16"), mustPrefix("10.245.1.0/24")}) {
		got = append(got, fmt.Sprintf("%s %d-%d", p.IpPrefix, p.MaskLengthMin, p.MaskLengthMax))
	}
	want := []string{"10.244.0.0/16 16-32", "10.245.1.0/24 24-32"}
	if !slices.Equal(got, want) {
		t.Errorf("inside = %v, want %v (each prefix once, with its subnets, no supernet)", got, want)
	}
}
