// Package strict is encryption's strict mode: the agent's own nftables
// table (inet TableName) that drops pod traffic to another node's pods
// unless it leaves by the WireGuard device. Whatever the routing
// controller, the WireGuard device or a peer's key are doing (agent
// starting, a peer without a key yet, agent restart, key rotation), a
// packet to a remote pod either enters the tunnel or is dropped: it never
// leaves the node in plaintext.
//
// The chain hooks postrouting, which sees every packet leaving the node:
// forwarded ones (from pods) and the node's own (output), with the
// destination that kube-proxy's DNAT (prerouting, output) chose. Its rules
// are static; the destinations live in interval sets:
//
//	@pods  the cluster CIDRs and every Node's spec.podCIDRs (IPv4)
//	@local this node's pod CIDRs (delivered here, by the pods' veths)
//
//	ip daddr @pods ip daddr != @local oifname != "<device>" counter drop
//
// IPv6 has the same rule over @pods6/@local6. Trellis carries IPv4 pod
// traffic only today (clusterCIDRs are IPv4); the IPv6 sets hold what the
// Nodes publish, so an IPv6 pod CIDR a Node already has can never carry
// plaintext either. Encrypting IPv6 pod traffic needs the routing
// controller to route IPv6 pod CIDRs into the device and the peers'
// allowed IPs to hold them; the rule needs nothing more.
//
// A sync commits nothing when the table already holds what it should,
// else one atomic transaction. The table is never removed on agent stop
// (it keeps blocking plaintext while no agent runs); only turning
// encryption or strict mode off removes it. The Controller (controller.go)
// feeds it from the Node lister.
package strict

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/nftwatch"
)

// Names of the objects in the table.
const (
	TableName = "trellis-encrypt"
	ChainName = "postrouting"
	SetPods   = "pods"
	SetLocal  = "local"
	SetPods6  = "pods6"
	SetLocal6 = "local6"
	// CounterName counts the packets the rules dropped (both families).
	CounterName = "unencrypted"
)

// LogPrefix is the nflog prefix of the dropped packets when the deny log
// is on (config policyDenyLog): the policy table's "trellis-deny " tag, so
// `trellisctl drops` shows them (internal/drops, verdict "unencrypted").
const LogPrefix = "trellis-deny unencrypted: "

// LogLimit bounds what the log rules send to the deny log, as the policy
// table's deny rules do: at most this many nflog messages per second per
// rule; the rest are still dropped and counted.
const LogLimit = "limit rate 20/second burst 40 packets"

// Desired is what the table should hold.
type Desired struct {
	// Device is the WireGuard device: the only way out for remote pod traffic.
	Device string
	// LogGroup, when not 0, is the nflog group dropped packets are logged to.
	LogGroup uint16
	// Pods and Local are the IPv4 sets, Pods6 and Local6 the IPv6 ones
	// (collapsed: masked, sorted, no prefix inside another).
	Pods, Local, Pods6, Local6 []netip.Prefix
}

// Compute builds the desired state: the pod destinations are the cluster
// CIDRs and every Node's pod CIDRs (all of them, not only those the
// routing controller accepted: a rejected node's pods get no plaintext
// either), the local ones this node's pod CIDRs.
func Compute(localPodCIDRs, clusterCIDRs, allPodCIDRs []netip.Prefix, device string, logGroup uint16) Desired {
	pods := append(slices.Clone(clusterCIDRs), allPodCIDRs...)
	return Desired{
		Device: device, LogGroup: logGroup,
		Pods: Collapse(pods, false), Local: Collapse(localPodCIDRs, false),
		Pods6: Collapse(pods, true), Local6: Collapse(localPodCIDRs, true),
	}
}

// Collapse returns the valid prefixes of one family (IPv6 when v6) of in,
// masked, sorted by address, without duplicates and without prefixes
// another one contains (interval sets refuse overlapping elements).
func Collapse(in []netip.Prefix, v6 bool) []netip.Prefix {
	var fam []netip.Prefix
	for _, p := range in {
		if p.IsValid() && p.Addr().Is6() == v6 && !p.Addr().Is4In6() {
			fam = append(fam, p.Masked())
		}
	}
	// By address, the shorter prefix first: a prefix containing later
	// ones comes before them, so one pass keeps the outermost.
	slices.SortFunc(fam, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	out := fam[:0]
	for _, p := range fam {
		if n := len(out); n > 0 && out[n-1].Overlaps(p) {
			continue
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// NewNFT returns the knftables interface for the table.
func NewNFT() (knftables.Interface, error) {
	nft, err := knftables.New(knftables.InetFamily, TableName)
	if err != nil {
		return nil, fmt.Errorf("nftables for table inet %s: %w", TableName, err)
	}
	return nft, nil
}

// rule is one rule of the chain: its text and its comment (a listing
// shows the comment, not the expression, so the comments identify the
// rules; they name the device and the log group, so a change of either
// reads as a different table).
type rule struct{ text, comment string }

// rules are the chain's rules for d, in order.
func (d Desired) rules() []rule {
	var out []rule
	for _, f := range []struct{ fam, ip, pods, local string }{
		{"IPv4", "ip", SetPods, SetLocal},
		{"IPv6", "ip6", SetPods6, SetLocal6},
	} {
		match := knftables.Concat(f.ip, "daddr", "@"+f.pods, f.ip, "daddr !=", "@"+f.local, "oifname !=", strconv.Quote(d.Device))
		what := fmt.Sprintf("%s pod traffic to other nodes leaving by another device than %s", f.fam, d.Device)
		if d.LogGroup != 0 {
			out = append(out, rule{
				text:    knftables.Concat(match, LogLimit, "log prefix", strconv.Quote(LogPrefix), "group", d.LogGroup),
				comment: fmt.Sprintf("log %s to nflog group %d", what, d.LogGroup),
			})
		}
		out = append(out, rule{
			text:    knftables.Concat(match, "counter name", strconv.Quote(CounterName), "drop"),
			comment: "drop " + what,
		})
	}
	return out
}

// sets names the table's sets with the prefixes d puts in each.
func (d Desired) sets() []struct {
	name, typ string
	elems     []netip.Prefix
} {
	return []struct {
		name, typ string
		elems     []netip.Prefix
	}{
		{SetPods, "ipv4_addr", d.Pods}, {SetLocal, "ipv4_addr", d.Local},
		{SetPods6, "ipv6_addr", d.Pods6}, {SetLocal6, "ipv6_addr", d.Local6},
	}
}

// Apply makes the table hold exactly d. When it already does, it commits
// nothing (handles and counters stay); otherwise it rewrites the table in
// one transaction (see write).
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
	return cur, true, write(ctx, nft, d, cur.extra)
}

// Content is what the table holds, as far as a listing shows it.
type Content struct {
	// Intact reports that the table holds exactly the objects write
	// creates: the four sets, the counter, the chain and its rules (by
	// comment); Comments are those rules' comments.
	Intact   bool
	Comments []string
	// Set elements (meaningful when Intact; Device and LogGroup unset).
	Desired
	// read reports that the listing succeeded (apply's result).
	read bool
	// extra reports objects write does not create (another set, chain or
	// counter): the rewrite then replaces the whole table.
	extra bool
}

// Holds reports whether the table's content is exactly d.
func (c Content) Holds(d Desired) bool {
	if !c.Intact {
		return false
	}
	var comments []string
	for _, r := range d.rules() {
		comments = append(comments, r.comment)
	}
	return slices.Equal(c.Comments, comments) &&
		slices.Equal(c.Pods, d.Pods) && slices.Equal(c.Local, d.Local) &&
		slices.Equal(c.Pods6, d.Pods6) && slices.Equal(c.Local6, d.Local6)
}

// Read lists the table. A missing table (or chain, set or counter) is not
// an error: it reads as not Intact.
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
		return c, fmt.Errorf("list nftables table inet %s: %w", TableName, err)
	}
	chains, err := nft.List(ctx, "chains")
	if err != nil {
		return c, fmt.Errorf("list nftables table inet %s: %w", TableName, err)
	}
	counters, err := nft.List(ctx, "counters")
	if err != nil {
		return c, fmt.Errorf("list nftables table inet %s: %w", TableName, err)
	}
	ours := func(names []string, want ...string) (all bool) {
		for _, n := range names {
			if !slices.Contains(want, n) {
				c.extra = true
			}
		}
		return len(names) == len(want)
	}
	complete := ours(sets, SetPods, SetLocal, SetPods6, SetLocal6)
	complete = ours(chains, ChainName) && complete
	complete = ours(counters, CounterName) && complete
	if !complete || c.extra {
		return c, nil
	}
	rules, err := nft.ListRules(ctx, ChainName)
	if err != nil {
		return c, fmt.Errorf("list nftables table inet %s: %w", TableName, err)
	}
	for _, r := range rules {
		if r.Comment == nil {
			return c, nil
		}
		c.Comments = append(c.Comments, *r.Comment)
	}
	for _, s := range []struct {
		name string
		into *[]netip.Prefix
	}{{SetPods, &c.Pods}, {SetLocal, &c.Local}, {SetPods6, &c.Pods6}, {SetLocal6, &c.Local6}} {
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
// chain, sets and counter are declared with Add (kept if present, so the
// counter keeps counting); the sets and the chain are flushed and
// re-filled inside the same transaction, which the kernel applies
// atomically: no packet ever sees the chain without its drop. With
// replace (the table holds objects of another's), the transaction deletes
// the table first and creates it anew, as atomically.
func write(ctx context.Context, nft knftables.Interface, d Desired, replace bool) error {
	tx := nft.NewTransaction()
	if replace {
		tx.Delete(&knftables.Table{})
	}
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("trellis-agent: encryption strict mode, no plaintext pod traffic between nodes")})
	for _, s := range d.sets() {
		set := &knftables.Set{Name: s.name, Type: s.typ, Flags: []knftables.SetFlag{knftables.IntervalFlag}}
		tx.Add(set)
		tx.Flush(set)
		for _, p := range s.elems {
			tx.Add(&knftables.Element{Set: s.name, Key: []string{p.String()}})
		}
	}
	tx.Add(&knftables.Counter{Name: CounterName, Comment: knftables.PtrTo("pod packets to other nodes that would have left unencrypted")})
	chain := &knftables.Chain{
		Name: ChainName, Type: knftables.PtrTo(knftables.FilterType),
		Hook: knftables.PtrTo(knftables.PostroutingHook), Priority: knftables.PtrTo(knftables.FilterPriority),
	}
	tx.Add(chain)
	tx.Flush(chain)
	for _, r := range d.rules() {
		tx.Add(&knftables.Rule{Chain: ChainName, Rule: r.text, Comment: knftables.PtrTo(r.comment)})
	}
	if err := nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("program nftables table inet %s: %w", TableName, err)
	}
	return nil
}

// Remove deletes the table (encryption or strict mode turned off); an
// absent table is fine.
func Remove(ctx context.Context, nft knftables.Interface) error {
	return nftwatch.RemoveTable(ctx, nft, "inet "+TableName)
}
