// Package hostfw keeps pod forwarding working on hosts whose iptables or
// ip6tables FORWARD policy is DROP (Docker sets it, for IPv6 too when its
// ip6tables support is on). In nftables every base chain at
// a hook gets its say: a drop in iptables' `ip filter FORWARD` chain is
// final whatever Trellis's own tables accept, so pods on such a host cannot
// reach pods behind another interface. When that chain exists with policy
// drop, Trellis appends, as flannel and kube-router do, one accept for
// traffic from and one for traffic to each pod CIDR:
//
//	ip saddr 10.244.0.0/16 counter accept comment "trellis: pod forwarding from 10.244.0.0/16"
//
// IPv6 pod CIDRs get the same accepts (ip6 saddr, ip6 daddr) in
// ip6tables' chain, `ip6 filter FORWARD`; each family's chain is read and
// synced on its own, and a family without pod CIDRs gets nothing.
//
// The rules have the shape `iptables -A FORWARD -s CIDR -j ACCEPT -m
// comment` gives under iptables-nft, so iptables (and Docker) keep reading
// and editing the chain; being appended, they come after Docker's
// DOCKER-USER hook, where an operator's own drops still win. The comment
// prefix is how Trellis finds its rules again: a sync removes its rules
// that are no longer wanted (policy back to accept, a CIDR gone), and
// uninstall removes them all. A host on iptables-legacy keeps its FORWARD
// chain outside nftables, where this package does not see it.
package hostfw

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
)

// The iptables filter table's FORWARD chain, as iptables-nft names it
// (Family; ip6tables-nft's is in Family6).
const (
	Family  = "ip"
	Family6 = "ip6"
	Table   = "filter"
	Chain   = "FORWARD"
)

// Families are the chains' families, IPv4 first.
var Families = []string{Family, Family6}

// familyOf is the nftables family of p's chain.
func familyOf(p netip.Prefix) string {
	if p.Addr().Is4() || p.Addr().Is4In6() {
		return Family
	}
	return Family6
}

// CommentPrefix starts the comment of every rule Trellis adds.
const CommentPrefix = "trellis: pod forwarding "

// NFT runs the nft binary (Exec) or a fake.
type NFT interface {
	// Run runs nft with args and returns its standard output.
	Run(ctx context.Context, args ...string) ([]byte, error)
}

// Exec runs /usr/sbin/nft (from PATH) in the caller's network namespace.
type Exec struct{}

// Run implements NFT.
func (Exec) Run(ctx context.Context, args ...string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, "nft", args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("nft %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(ee.Stderr)))
		}
		return nil, fmt.Errorf("nft %s: %w", strings.Join(args, " "), err)
	}
	return out, nil
}

// Rule is one accept Trellis wants: from (Dir "from", ip/ip6 saddr) or to
// (Dir "to", ip/ip6 daddr) a pod CIDR, in the chain of the CIDR's family.
type Rule struct {
	Dir  string
	CIDR netip.Prefix
}

func (r Rule) comment() string { return CommentPrefix + r.Dir + " " + r.CIDR.String() }

func (r Rule) nft() string {
	field := "saddr"
	if r.Dir == "to" {
		field = "daddr"
	}
	return fmt.Sprintf("%s %s %s counter accept comment %q", familyOf(r.CIDR), field, r.CIDR, r.comment())
}

// Desired is the accepts iptables' IPv4 FORWARD chain with policy
// policyDrop needs for the pod CIDRs (DesiredFamily for Family).
func Desired(policyDrop bool, cidrs []netip.Prefix) []Rule {
	return DesiredFamily(Family, policyDrop, cidrs)
}

// DesiredFamily is the accepts the FORWARD chain of family (Family or
// Family6) with policy policyDrop needs for the pod CIDRs of that family.
func DesiredFamily(family string, policyDrop bool, cidrs []netip.Prefix) []Rule {
	if !policyDrop {
		return nil
	}
	var out []Rule
	for _, c := range cidrs {
		if c.IsValid() && !c.Addr().Is4In6() && familyOf(c) == family {
			out = append(out, Rule{"from", c.Masked()}, Rule{"to", c.Masked()})
		}
	}
	return out
}

// Chain is what Sync read of the FORWARD chain.
type ChainState struct {
	// Exists: the table and chain are there (iptables-nft or Docker
	// created them).
	Exists bool
	// PolicyDrop: its policy is drop.
	PolicyDrop bool
	// Ours are Trellis's rules in it, by comment, with their handles.
	Ours map[Rule]int
}

// Read lists iptables' IPv4 FORWARD chain (ReadFamily for Family).
func Read(ctx context.Context, nft NFT) (ChainState, error) { return ReadFamily(ctx, nft, Family) }

// ReadFamily lists the FORWARD chain of family (Family or Family6).
func ReadFamily(ctx context.Context, nft NFT, family string) (ChainState, error) {
	st := ChainState{Ours: map[Rule]int{}}
	out, err := nft.Run(ctx, "-j", "list", "chain", family, Table, Chain)
	if err != nil {
		if strings.Contains(err.Error(), "No such file or directory") {
			return st, nil // no iptables-nft filter table: nothing to do
		}
		return st, err
	}
	var doc struct {
		Nftables []struct {
			Chain *struct {
				Name   string `json:"name"`
				Policy string `json:"policy"`
			} `json:"chain"`
			Rule *struct {
				Handle  int    `json:"handle"`
				Comment string `json:"comment"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return st, fmt.Errorf("parse nft listing of %s %s %s: %w", family, Table, Chain, err)
	}
	for _, o := range doc.Nftables {
		switch {
		case o.Chain != nil && o.Chain.Name == Chain:
			st.Exists, st.PolicyDrop = true, o.Chain.Policy == "drop"
		case o.Rule != nil && strings.HasPrefix(o.Rule.Comment, CommentPrefix):
			if r, ok := parseComment(o.Rule.Comment); ok {
				st.Ours[r] = o.Rule.Handle
			} else {
				st.Ours[Rule{Dir: "stale " + strconv.Itoa(o.Rule.Handle)}] = o.Rule.Handle
			}
		}
	}
	return st, nil
}

func parseComment(c string) (Rule, bool) {
	dir, cidr, ok := strings.Cut(strings.TrimPrefix(c, CommentPrefix), " ")
	p, err := netip.ParsePrefix(cidr)
	if !ok || err != nil || (dir != "from" && dir != "to") {
		return Rule{}, false
	}
	return Rule{dir, p}, true
}

// Sync makes Trellis's accepts in both families' FORWARD chains what
// DesiredFamily says for their current policies (SyncFamily for each,
// IPv4 first). The state it returns is the IPv4 chain's, with Exists and
// PolicyDrop true when either chain's is; added and removed count both.
// A family's failure does not keep the other from being synced.
func Sync(ctx context.Context, nft NFT, cidrs []netip.Prefix) (st ChainState, added, removed int, err error) {
	var errs []error
	for i, family := range Families {
		fst, a, r, ferr := SyncFamily(ctx, nft, family, cidrs)
		added, removed = added+a, removed+r
		if ferr != nil {
			errs = append(errs, fmt.Errorf("%s %s %s: %w", family, Table, Chain, ferr))
		}
		if i == 0 {
			st = fst
			continue
		}
		st.Exists, st.PolicyDrop = st.Exists || fst.Exists, st.PolicyDrop || fst.PolicyDrop
	}
	return st, added, removed, errors.Join(errs...)
}

// SyncFamily makes Trellis's accepts in the FORWARD chain of family what
// DesiredFamily says for its current policy: it appends the missing ones
// and deletes its own that are no longer wanted. It returns the state it
// found and how many rules it added and removed.
func SyncFamily(ctx context.Context, nft NFT, family string, cidrs []netip.Prefix) (st ChainState, added, removed int, err error) {
	st, err = ReadFamily(ctx, nft, family)
	if err != nil || !st.Exists {
		return st, 0, 0, err
	}
	want := DesiredFamily(family, st.PolicyDrop, cidrs)
	for r, h := range st.Ours {
		if !slices.Contains(want, r) {
			if _, err := nft.Run(ctx, "delete", "rule", family, Table, Chain, "handle", strconv.Itoa(h)); err != nil {
				return st, added, removed, err
			}
			removed++
		}
	}
	for _, r := range want {
		if _, ok := st.Ours[r]; ok {
			continue
		}
		if _, err := nft.Run(ctx, "add rule "+family+" "+Table+" "+Chain+" "+r.nft()); err != nil {
			return st, added, removed, err
		}
		added++
	}
	return st, added, removed, nil
}

// Remove deletes every rule of Trellis's from both FORWARD chains (uninstall)
// and returns how many it deleted.
func Remove(ctx context.Context, nft NFT) (int, error) {
	_, _, removed, err := Sync(ctx, nft, nil)
	return removed, err
}
