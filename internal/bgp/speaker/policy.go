package speaker

import (
	"fmt"
	"net/netip"
	"strings"

	api "github.com/osrg/gobgp/v4/api"

	"github.com/trellisnet/trellis/internal/bgp"
)

// Policy names in GoBGP (global: GoBGP has per-neighbour policies only
// for route-server clients, so the export policy selects the neighbour
// with a neighbour set).
const (
	importPolicyName = "trellis-import"
	exportPolicyName = "trellis-export"
)

// policies is GoBGP's import and export policy for d.
//
// Import (default reject) mirrors bgp.ImportPolicy.Allows, in its order:
// locally originated paths pass; Reject (own pod CIDRs and their
// subnets) is refused; PodCIDRs (exactly) are accepted; anything inside
// Cluster is refused; then Accept (or, with Accept empty,
// everything but the default route) is accepted.
//
// Export (default reject): a neighbour gets the locally originated paths
// in its Export list; paths learned over iBGP pass between internal
// neighbours (route reflection, which GoBGP only does towards clients);
// nothing learned is passed on to another neighbour otherwise, so a node
// never becomes a transit between two ToRs.
func policies(d bgp.Desired) *api.SetPoliciesRequest {
	req := &api.SetPoliciesRequest{}
	// addSet defines prefix sets, one per address family (GoBGP's
	// prefix sets hold one family), and returns their names.
	addSet := func(name string, prefixes []*api.Prefix) []string {
		var names []string
		for _, fam := range []struct {
			suffix string
			v4     bool
		}{{"-v4", true}, {"-v6", false}} {
			var list []*api.Prefix
			for _, p := range prefixes {
				if netip.MustParsePrefix(p.IpPrefix).Addr().Is4() == fam.v4 {
					list = append(list, p)
				}
			}
			if len(list) == 0 {
				continue
			}
			req.DefinedSets = append(req.DefinedSets, &api.DefinedSet{
				DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: name + fam.suffix, Prefixes: list})
			names = append(names, name+fam.suffix)
		}
		return names
	}
	stmt := func(policy string, n int, c *api.Conditions, a api.RouteAction) *api.Statement {
		return &api.Statement{Name: fmt.Sprintf("%s-%d", policy, n), Conditions: c, Actions: &api.Actions{RouteAction: a}}
	}
	prefixCond := func(set string) *api.Conditions {
		return &api.Conditions{PrefixSet: &api.MatchSet{Name: set, Type: api.MatchSet_TYPE_ANY}}
	}
	accept, reject := api.RouteAction_ROUTE_ACTION_ACCEPT, api.RouteAction_ROUTE_ACTION_REJECT

	// Import.
	ip := d.Import
	imp := &api.Policy{Name: importPolicyName}
	add := func(c *api.Conditions, a api.RouteAction) {
		imp.Statements = append(imp.Statements, stmt(importPolicyName, len(imp.Statements), c, a))
	}
	addSets := func(names []string, a api.RouteAction) {
		for _, n := range names {
			add(prefixCond(n), a)
		}
	}
	add(&api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL}, accept)
	addSets(addSet("import-reject", inside(ip.Reject)), reject)
	addSets(addSet("import-podcidrs", exactly(ip.PodCIDRs)), accept)
	addSets(addSet("import-cluster", inside(ip.Cluster)), reject)
	if len(ip.Accept) == 0 {
		addSets(addSet("import-default", exactly([]netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")})), reject)
		add(&api.Conditions{}, accept)
	} else {
		var ps []*api.Prefix
		for _, m := range ip.Accept {
			maxLen := m.MaxLen
			if maxLen < m.Prefix.Bits() {
				maxLen = m.Prefix.Bits()
			}
			ps = append(ps, &api.Prefix{IpPrefix: m.Prefix.Masked().String(),
				MaskLengthMin: uint32(m.Prefix.Bits()), MaskLengthMax: uint32(maxLen)})
		}
		addSets(addSet("import-accept", ps), accept)
	}

	// Export.
	exp := &api.Policy{Name: exportPolicyName}
	var internal []string
	for _, n := range d.Neighbors {
		if n.Internal {
			internal = append(internal, hostPrefix(n.Address))
		}
		if len(n.Export) == 0 {
			continue
		}
		nset := "export-to-" + setName(n.Address)
		pset := "export-prefixes-" + setName(n.Address)
		req.DefinedSets = append(req.DefinedSets, &api.DefinedSet{
			DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: nset, List: []string{hostPrefix(n.Address)}})
		for _, ps := range addSet(pset, exactly(n.Export)) {
			exp.Statements = append(exp.Statements, stmt(exportPolicyName, len(exp.Statements), &api.Conditions{
				RouteType:   api.Conditions_ROUTE_TYPE_LOCAL,
				NeighborSet: &api.MatchSet{Name: nset, Type: api.MatchSet_TYPE_ANY},
				PrefixSet:   &api.MatchSet{Name: ps, Type: api.MatchSet_TYPE_ANY},
			}, accept))
		}
	}
	if len(internal) > 0 {
		req.DefinedSets = append(req.DefinedSets, &api.DefinedSet{
			DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: "export-internal", List: internal})
		exp.Statements = append(exp.Statements, stmt(exportPolicyName, len(exp.Statements), &api.Conditions{
			RouteType:   api.Conditions_ROUTE_TYPE_INTERNAL,
			NeighborSet: &api.MatchSet{Name: "export-internal", Type: api.MatchSet_TYPE_ANY},
		}, accept))
	}
	// GoBGP refuses a policy without statements.
	exp.Statements = append(exp.Statements, stmt(exportPolicyName, len(exp.Statements), &api.Conditions{}, reject))
	req.Policies = []*api.Policy{imp, exp}
	return req
}

// exactly matches each prefix and nothing else.
func exactly(ps []netip.Prefix) []*api.Prefix {
	out := make([]*api.Prefix, 0, len(ps))
	for _, p := range ps {
		out = append(out, &api.Prefix{IpPrefix: p.Masked().String(),
			MaskLengthMin: uint32(p.Bits()), MaskLengthMax: uint32(p.Bits())})
	}
	return out
}

// inside matches every prefix inside one of ps (bgp.ImportPolicy.Allows'
// rule): the prefix itself and its subnets, not a prefix covering it.
func inside(ps []netip.Prefix) []*api.Prefix {
	var out []*api.Prefix
	seen := map[netip.Prefix]bool{}
	for _, p := range ps {
		p = p.Masked()
		if seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, &api.Prefix{IpPrefix: p.String(), MaskLengthMin: uint32(p.Bits()), MaskLengthMax: uint32(p.Addr().BitLen())})
	}
	return out
}

func hostPrefix(a netip.Addr) string {
	return netip.PrefixFrom(a, a.BitLen()).String()
}

func setName(a netip.Addr) string {
	return strings.NewReplacer(".", "-", ":", "-").Replace(a.String())
}

// assignments attach the two policies to the global RIB, default reject.
func assignments() []*api.PolicyAssignment {
	return []*api.PolicyAssignment{
		{Name: "", Direction: api.PolicyDirection_POLICY_DIRECTION_IMPORT,
			Policies: []*api.Policy{{Name: importPolicyName}}, DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT},
		{Name: "", Direction: api.PolicyDirection_POLICY_DIRECTION_EXPORT,
			Policies: []*api.Policy{{Name: exportPolicyName}}, DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT},
	}
}
