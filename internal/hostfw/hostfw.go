// Package hostfw keeps pod forwarding working on hosts whose iptables
// FORWARD policy is DROP (Docker sets it). In nftables every base chain at
// a hook gets its say: a drop in iptables' `ip filter FORWARD` chain is
// final whatever Trellis's own tables accept, so pods on such a host cannot
// reach pods behind another interface. When that chain exists with policy
// drop, Trellis appends, as flannel and kube-router do, one accept for
// traffic from and one for traffic to each pod CIDR:
//
//	ip saddr 10.244.0.0/16 counter accept comment "trellis: pod forwarding from 10.244.0.0/16"
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

// The iptables filter table's FORWARD chain, as iptables-nft names it.
const (
	Family = "ip"
	Table  = "filter"
	Chain  = "FORWARD"
)

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

// Rule is one accept Trellis wants: from (Dir "from", ip saddr) or to
// (Dir "to", ip daddr) a pod CIDR.
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
	return fmt.Sprintf("ip %s %s counter accept comment %q", field, r.CIDR, r.comment())
}

// Desired is the accepts a FORWARD chain with policy policyDrop needs for
// the pod CIDRs (IPv4 only: the chain is iptables' IPv4 one).
func Desired(policyDrop bool, cidrs []netip.Prefix) []Rule {
	if !policyDrop {
		return nil
	}
	var out []Rule
	for _, c := range cidrs {
		if c.Addr().Is4() {
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

// Read lists the FORWARD chain.
func Read(ctx context.Context, nft NFT) (ChainState, error) {
	st := ChainState{Ours: map[Rule]int{}}
	out, err := nft.Run(ctx, "-j", "list", "chain", Family, Table, Chain)
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
		return st, fmt.Errorf("parse nft listing of %s %s %s: %w", Family, Table, Chain, err)
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

// Sync makes Trellis's accepts in the FORWARD chain what Desired says for
// its current policy: it appends the missing ones and deletes its own that
// are no longer wanted. It returns the state it found and how many rules
// it added and removed.
func Sync(ctx context.Context, nft NFT, cidrs []netip.Prefix) (st ChainState, added, removed int, err error) {
	st, err = Read(ctx, nft)
	if err != nil || !st.Exists {
		return st, 0, 0, err
	}
	want := Desired(st.PolicyDrop, cidrs)
	for r, h := range st.Ours {
		if !slices.Contains(want, r) {
			if _, err := nft.Run(ctx, "delete", "rule", Family, Table, Chain, "handle", strconv.Itoa(h)); err != nil {
				return st, added, removed, err
			}
			removed++
		}
	}
	for _, r := range want {
		if _, ok := st.Ours[r]; ok {
			continue
		}
		if _, err := nft.Run(ctx, "add rule "+Family+" "+Table+" "+Chain+" "+r.nft()); err != nil {
			return st, added, removed, err
		}
		added++
	}
	return st, added, removed, nil
}

// Remove deletes every rule of Trellis's from the FORWARD chain (uninstall)
// and returns how many it deleted.
func Remove(ctx context.Context, nft NFT) (int, error) {
	_, _, removed, err := Sync(ctx, nft, nil)
	return removed, err
}
