// Package masq SNATs pod traffic leaving the cluster to the node's address,
// in the agent's own nftables table (TableName), one per IP family: ip
// trellis-masq for IPv4 and ip6 trellis-masq for IPv6, the same code run
// once per family. The ruleset is static: the pod source prefixes and the
// exempt destinations live in interval sets, so per-packet cost does not
// grow with the number of nodes. A sync commits nothing when the table
// already holds what it should, else one atomic transaction; restarts never
// remove the table. The Controller (controller.go) feeds the tables from
// the Node lister.
package masq

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"

	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/nftwatch"
)

// Names of the objects in the agent's table.
const (
	TableName     = "trellis-masq"
	ChainName     = "postrouting"
	SetPodSources = "pod-sources"
	SetNoMasqDst  = "no-masquerade-dst"
)

// Desired is what the masquerade table of one IP family should hold.
type Desired struct {
	// Family is the table's family: knftables.IPv4Family (also when
	// empty) or knftables.IPv6Family. Prefixes of the other family are
	// ignored.
	Family knftables.Family
	// PodSources are the prefixes whose traffic may be masqueraded (this node's pod CIDRs).
	PodSources []netip.Prefix
	// NoMasquerade are destinations never masqueraded (cluster and pod CIDRs, nonMasqueradeCIDRs).
	NoMasquerade []netip.Prefix
}

// Compute builds the desired IPv4 state (ComputeFamily for IPv4).
func Compute(localPodCIDRs, clusterCIDRs, allPodCIDRs, nonMasq []netip.Prefix) Desired {
	return ComputeFamily(knftables.IPv4Family, localPodCIDRs, clusterCIDRs, allPodCIDRs, nonMasq)
}

// ComputeFamily builds the desired state of family's table from prefixes of
// any family: sources are this node's pod CIDRs of that family; exempt
// destinations are its cluster CIDRs, every node's pod CIDRs and the
// configured nonMasqueradeCIDRs, with prefixes covered by others removed.
func ComputeFamily(family knftables.Family, localPodCIDRs, clusterCIDRs, allPodCIDRs, nonMasq []netip.Prefix) Desired {
	var exempt []netip.Prefix
	exempt = append(exempt, clusterCIDRs...)
	exempt = append(exempt, allPodCIDRs...)
	exempt = append(exempt, nonMasq...)
	family = familyOrIPv4(family)
	return Desired{Family: family, PodSources: CollapseFamily(family, localPodCIDRs), NoMasquerade: CollapseFamily(family, exempt)}
}

func familyOrIPv4(f knftables.Family) knftables.Family {
	if f == "" {
		return knftables.IPv4Family
	}
	return f
}

// Collapse is CollapseFamily for IPv4.
func Collapse(in []netip.Prefix) []netip.Prefix { return CollapseFamily(knftables.IPv4Family, in) }

// CollapseFamily returns the prefixes of in of family (IPv4 or IPv6),
// masked, sorted, without duplicates and without prefixes contained in
// another one (interval sets refuse overlapping elements).
func CollapseFamily(family knftables.Family, in []netip.Prefix) []netip.Prefix {
	want6 := family == knftables.IPv6Family
	var keep []netip.Prefix
	for _, p := range in {
		if p.IsValid() && p.Addr().Is6() == want6 && !p.Addr().Is4In6() {
			keep = append(keep, p.Masked())
		}
	}
	sort.Slice(keep, func(i, j int) bool {
		if keep[i].Bits() != keep[j].Bits() {
			return keep[i].Bits() < keep[j].Bits()
		}
		return keep[i].Addr().Less(keep[j].Addr())
	})
	var out []netip.Prefix
	for _, p := range keep {
		covered := false
		for _, q := range out {
			if q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr().Less(out[j].Addr()) })
	return out
}

// NewNFT returns the knftables interface for the agent's IPv4 table.
func NewNFT() (knftables.Interface, error) { return NewNFTFamily(knftables.IPv4Family) }

// NewNFTFamily returns the knftables interface for the agent's table of
// family (knftables.IPv4Family or knftables.IPv6Family).
func NewNFTFamily(family knftables.Family) (knftables.Interface, error) {
	nft, err := knftables.New(family, TableName)
	if err != nil {
		return nil, fmt.Errorf("nftables for table %s %s: %w", family, TableName, err)
	}
	return nft, nil
}

// ruleComment is the comment of the table's only rule; a listing shows the
// rule's comment, not its expression, so the comment identifies it.
const ruleComment = "masquerade pod traffic leaving the cluster"

// Apply makes the table hold exactly d. When its content already does, it
// commits nothing (handles and counters stay); otherwise it rewrites the
// table in one transaction (see write).
func Apply(ctx context.Context, nft knftables.Interface, d Desired) error {
	_, _, err := apply(ctx, nft, d)
	return err
}

// apply is Apply, also returning the content found before and whether it
// committed.
func apply(ctx context.Context, nft knftables.Interface, d Desired) (Content, bool, error) {
	cur, err := Read(ctx, nft)
	cur.read = err == nil
	if err == nil && cur.Holds(d) {
		return cur, false, nil
	}
	return cur, true, write(ctx, nft, d)
}

// Content is what the table holds, as far as a listing shows it.
type Content struct {
	// Intact reports that the table holds exactly the objects write
	// creates: the two sets, the chain and its one rule (by comment).
	Intact bool
	// Set elements (meaningful when Intact).
	Desired
	// read reports that the listing succeeded (apply's result).
	read bool
}

// Holds reports whether the table's content is exactly d (the table being
// of d's family: a listing does not tell).
func (c Content) Holds(d Desired) bool {
	f := familyOrIPv4(d.Family)
	return c.Intact && slices.Equal(c.PodSources, CollapseFamily(f, d.PodSources)) && slices.Equal(c.NoMasquerade, CollapseFamily(f, d.NoMasquerade))
}

// Read lists the table. A missing table (or chain or set) is not an
// error: it reads as not Intact.
func Read(ctx context.Context, nft knftables.Interface) (Content, error) {
	c, err := readTable(ctx, nft)
	if knftables.IsNotFound(err) {
		// The table vanished between two of the listings: another
		// process removed it while it was read. It holds nothing.
		return Content{}, nil
	}
	return c, err
}

// readTable is Read, listing the table's parts one after the other.
func readTable(ctx context.Context, nft knftables.Interface) (Content, error) {
	var c Content
	sets, err := nft.List(ctx, "sets")
	if knftables.IsNotFound(err) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("list nftables table %s: %w", TableName, err)
	}
	chains, err := nft.List(ctx, "chains")
	if err != nil {
		return c, fmt.Errorf("list nftables table %s: %w", TableName, err)
	}
	slices.Sort(sets)
	if !slices.Equal(sets, []string{SetNoMasqDst, SetPodSources}) || !slices.Equal(chains, []string{ChainName}) {
		return c, nil
	}
	rules, err := nft.ListRules(ctx, ChainName)
	if err != nil {
		return c, fmt.Errorf("list nftables table %s: %w", TableName, err)
	}
	if len(rules) != 1 || rules[0].Comment == nil || *rules[0].Comment != ruleComment {
		return c, nil
	}
	for _, s := range []struct {
		name string
		into *[]netip.Prefix
	}{{SetPodSources, &c.PodSources}, {SetNoMasqDst, &c.NoMasquerade}} {
		prefixes, ok, err := nftwatch.ReadPrefixSet(ctx, nft, s.name)
		if err != nil || !ok {
			return c, err // !ok: not an element the controller writes
		}
		*s.into = prefixes
	}
	c.Intact = true
	return c, nil
}

// write rewrites the table to hold exactly d, in one transaction. The
// chain and sets are declared with Add (kept if present); their contents
// are flushed and re-filled inside the same transaction, which the kernel
// applies atomically, so no packet ever sees a partial state.
func write(ctx context.Context, nft knftables.Interface, d Desired) error {
	addrType, ip := "ipv4_addr", "ip"
	if d.Family == knftables.IPv6Family {
		addrType, ip = "ipv6_addr", "ip6"
	}
	tx := nft.NewTransaction()
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("trellis-agent: masquerade of pod traffic leaving the cluster")})
	for _, name := range []string{SetPodSources, SetNoMasqDst} {
		s := &knftables.Set{Name: name, Type: addrType, Flags: []knftables.SetFlag{knftables.IntervalFlag}}
		tx.Add(s)
		tx.Flush(s)
	}
	for _, p := range d.PodSources {
		tx.Add(&knftables.Element{Set: SetPodSources, Key: []string{p.String()}})
	}
	for _, p := range d.NoMasquerade {
		tx.Add(&knftables.Element{Set: SetNoMasqDst, Key: []string{p.String()}})
	}
	chain := &knftables.Chain{
		Name: ChainName, Type: knftables.PtrTo(knftables.NATType),
		Hook: knftables.PtrTo(knftables.PostroutingHook), Priority: knftables.PtrTo(knftables.SNATPriority),
	}
	tx.Add(chain)
	tx.Flush(chain)
	tx.Add(&knftables.Rule{
		Chain: ChainName,
		Rule: knftables.Concat(
			ip, "saddr", "@"+SetPodSources,
			ip, "daddr !=", "@"+SetNoMasqDst,
			"fib daddr type != local",
			"counter masquerade",
		),
		Comment: knftables.PtrTo(ruleComment),
	})
	if err := nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("program nftables table %s: %w", TableName, err)
	}
	return nil
}

// Remove deletes the agent's table (masquerade disabled by configuration).
func Remove(ctx context.Context, nft knftables.Interface) error {
	return nftwatch.RemoveTable(ctx, nft, TableName)
}
