package strict

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/drops"
)

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestCollapseKeepsOneFamilyOutermostSorted(t *testing.T) {
	in := pfx("10.244.1.0/24", "10.244.0.0/16", "192.168.1.7/24", "192.168.1.0/24", "fd00::/64", "10.250.2.0/24",
		"fd00::/48", "fd01::1/128")
	if got, want := Collapse(in, false), pfx("10.244.0.0/16", "10.250.2.0/24", "192.168.1.0/24"); !slices.Equal(got, want) {
		t.Errorf("Collapse IPv4 = %v, want %v", got, want)
	}
	if got, want := Collapse(in, true), pfx("fd00::/48", "fd01::1/128"); !slices.Equal(got, want) {
		t.Errorf("Collapse IPv6 = %v, want %v", got, want)
	}
	if got := Collapse(pfx("fd00::/64"), false); got != nil {
		t.Errorf("Collapse of no IPv4 prefix = %v, want nil", got)
	}
}

// The pod destinations are the cluster CIDRs and every node's pod CIDRs
// (this node's included: @local exempts them), per family.
func TestComputeSplitsFamilies(t *testing.T) {
	d := Compute(pfx("10.244.1.0/24", "fd00:10:244:1::/64"), pfx("10.244.0.0/16"),
		pfx("10.244.1.0/24", "10.250.3.0/24", "fd00:10:244:1::/64", "fd00:10:244:2::/64"), "trellis.wg", 0)
	for _, c := range []struct {
		name      string
		got, want []netip.Prefix
	}{
		{"pods", d.Pods, pfx("10.244.0.0/16", "10.250.3.0/24")},
		{"local", d.Local, pfx("10.244.1.0/24")},
		{"pods6", d.Pods6, pfx("fd00:10:244:1::/64", "fd00:10:244:2::/64")},
		{"local6", d.Local6, pfx("fd00:10:244:1::/64")},
	} {
		if !slices.Equal(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

// golden is the table for goldenDesired, as knftables' fake dumps it.
const golden = `add table inet trellis-encrypt { comment "trellis-agent: encryption strict mode, no plaintext pod traffic between nodes" ; }
add chain inet trellis-encrypt postrouting { type filter hook postrouting priority 0 ; }
add set inet trellis-encrypt local { type ipv4_addr ; flags interval ; }
add set inet trellis-encrypt local6 { type ipv6_addr ; flags interval ; }
add set inet trellis-encrypt pods { type ipv4_addr ; flags interval ; }
add set inet trellis-encrypt pods6 { type ipv6_addr ; flags interval ; }
add counter inet trellis-encrypt unencrypted { comment "pod packets to other nodes that would have left unencrypted" ; }
add rule inet trellis-encrypt postrouting ip daddr @pods ip daddr != @local oifname != "trellis.wg" limit rate 20/second burst 40 packets log prefix "trellis-deny unencrypted: " group 7 comment "log IPv4 pod traffic to other nodes leaving by another device than trellis.wg to nflog group 7"
add rule inet trellis-encrypt postrouting ip daddr @pods ip daddr != @local oifname != "trellis.wg" counter name "unencrypted" drop comment "drop IPv4 pod traffic to other nodes leaving by another device than trellis.wg"
add rule inet trellis-encrypt postrouting ip6 daddr @pods6 ip6 daddr != @local6 oifname != "trellis.wg" limit rate 20/second burst 40 packets log prefix "trellis-deny unencrypted: " group 7 comment "log IPv6 pod traffic to other nodes leaving by another device than trellis.wg to nflog group 7"
add rule inet trellis-encrypt postrouting ip6 daddr @pods6 ip6 daddr != @local6 oifname != "trellis.wg" counter name "unencrypted" drop comment "drop IPv6 pod traffic to other nodes leaving by another device than trellis.wg"
add element inet trellis-encrypt local { 10.244.1.0/24 }
add element inet trellis-encrypt pods { 10.244.0.0/16 }
add element inet trellis-encrypt pods { 10.250.3.0/24 }
`

func goldenDesired() Desired {
	return Compute(pfx("10.244.1.0/24"), pfx("10.244.0.0/16"), pfx("10.244.1.0/24", "10.250.3.0/24"), "trellis.wg", 7)
}

// Nodes in, table out: the whole ruleset, with the deny log on.
func TestApplyGolden(t *testing.T) {
	nft := knftables.NewFake(knftables.InetFamily, TableName)
	if err := Apply(context.Background(), nft, goldenDesired()); err != nil {
		t.Fatal(err)
	}
	if got := nft.Dump(); got != golden {
		t.Errorf("table:\n%s\nwant:\n%s", got, golden)
	}
}

// Without the deny log the chain holds only the two drops.
func TestApplyWithoutLogHasOnlyTheDrops(t *testing.T) {
	nft := knftables.NewFake(knftables.InetFamily, TableName)
	d := goldenDesired()
	d.LogGroup = 0
	if err := Apply(context.Background(), nft, d); err != nil {
		t.Fatal(err)
	}
	rules, err := nft.ListRules(context.Background(), ChainName)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, r := range rules {
		texts = append(texts, r.Rule)
	}
	want := []string{
		`ip daddr @pods ip daddr != @local oifname != "trellis.wg" counter name "unencrypted" drop`,
		`ip6 daddr @pods6 ip6 daddr != @local6 oifname != "trellis.wg" counter name "unencrypted" drop`,
	}
	if !slices.Equal(texts, want) {
		t.Errorf("rules %q, want %q", texts, want)
	}
}

// `trellisctl drops` reads the log prefix as the verdict "unencrypted".
func TestLogPrefixIsADenyLogPrefix(t *testing.T) {
	p, err := drops.ParsePrefix(LogPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if p.Verdict != drops.VerdictUnencrypted || p.Direction != "" {
		t.Errorf("ParsePrefix(%q) = %+v, want verdict %q", LogPrefix, p, drops.VerdictUnencrypted)
	}
}

// An Apply of what the table holds commits nothing; a change of the sets,
// the device or the log group commits one transaction.
func TestApplyCommitsOnlyChanges(t *testing.T) {
	ctx := context.Background()
	nft := knftables.NewFake(knftables.InetFamily, TableName)
	d := goldenDesired()
	if err := Apply(ctx, nft, d); err != nil {
		t.Fatal(err)
	}
	first := nft.LastTransaction
	if err := Apply(ctx, nft, d); err != nil {
		t.Fatal(err)
	}
	if nft.LastTransaction != first {
		t.Fatalf("Apply of unchanged content committed:\n%s", nft.LastTransaction)
	}
	for _, c := range []struct {
		name   string
		change func(*Desired)
		want   string
	}{
		{"node gone", func(d *Desired) { d.Pods = pfx("10.244.0.0/16") }, "add element inet trellis-encrypt pods { 10.244.0.0/16 }\n"},
		{"device renamed", func(d *Desired) { d.Device = "wg9" }, `oifname != "wg9"`},
		{"log off", func(d *Desired) { d.LogGroup = 0 }, `counter name "unencrypted" drop`},
		{"local IPv6", func(d *Desired) { d.Local6 = pfx("fd00::/64") }, "add element inet trellis-encrypt local6 { fd00::/64 }"},
	} {
		d2 := d
		c.change(&d2)
		before := nft.LastTransaction
		if err := Apply(ctx, nft, d2); err != nil {
			t.Fatal(err)
		}
		if nft.LastTransaction == before {
			t.Errorf("%s: Apply committed nothing", c.name)
			continue
		}
		dump := nft.Dump()
		if !strings.Contains(dump, c.want) {
			t.Errorf("%s: table lacks %q:\n%s", c.name, c.want, dump)
		}
		cur, err := Read(ctx, nft)
		if err != nil || !cur.Holds(d2) {
			t.Errorf("%s: table read back %+v (%v), does not hold %+v", c.name, cur, err, d2)
		}
		if strings.Count(dump, "add rule") != len(d2.rules()) {
			t.Errorf("%s: %d rules, want %d:\n%s", c.name, strings.Count(dump, "add rule"), len(d2.rules()), dump)
		}
	}
}

// Read sees anything write would not create (an extra rule, set or
// counter, a missing drop or element, no table) as not holding the content.
func TestReadTellsIntactContentFromForeignChanges(t *testing.T) {
	ctx := context.Background()
	d := goldenDesired()
	for _, tc := range []struct {
		name   string
		tamper func(*knftables.Transaction)
		holds  bool
	}{
		{name: "as written", holds: true},
		{name: "table gone", tamper: func(tx *knftables.Transaction) { tx.Delete(&knftables.Table{}) }},
		{name: "extra rule", tamper: func(tx *knftables.Transaction) {
			tx.Insert(&knftables.Rule{Chain: ChainName, Rule: "accept"})
		}},
		{name: "drops flushed", tamper: func(tx *knftables.Transaction) { tx.Flush(&knftables.Chain{Name: ChainName}) }},
		{name: "extra set", tamper: func(tx *knftables.Transaction) { tx.Add(&knftables.Set{Name: "other", Type: "ipv4_addr"}) }},
		{name: "extra counter", tamper: func(tx *knftables.Transaction) { tx.Add(&knftables.Counter{Name: "other"}) }},
		{name: "element removed", tamper: func(tx *knftables.Transaction) {
			tx.Delete(&knftables.Element{Set: SetPods, Key: []string{"10.250.3.0/24"}})
		}},
		{name: "local pods emptied", tamper: func(tx *knftables.Transaction) { tx.Flush(&knftables.Set{Name: SetLocal}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nft := knftables.NewFake(knftables.InetFamily, TableName)
			if err := Apply(ctx, nft, d); err != nil {
				t.Fatal(err)
			}
			if tc.tamper != nil {
				tx := nft.NewTransaction()
				tc.tamper(tx)
				if err := nft.Run(ctx, tx); err != nil {
					t.Fatal(err)
				}
			}
			c, err := Read(ctx, nft)
			if err != nil {
				t.Fatal(err)
			}
			if c.Holds(d) != tc.holds {
				t.Errorf("Holds = %v, want %v (%+v)", c.Holds(d), tc.holds, c)
			}
			// Apply repairs whatever was done.
			if err := Apply(ctx, nft, d); err != nil {
				t.Fatal(err)
			}
			if got := nft.Dump(); got != golden {
				t.Errorf("after repair:\n%s\nwant:\n%s", got, golden)
			}
		})
	}
}

func TestRemoveDeletesTheTableAndToleratesItsAbsence(t *testing.T) {
	ctx := context.Background()
	nft := knftables.NewFake(knftables.InetFamily, TableName)
	if err := Apply(ctx, nft, goldenDesired()); err != nil {
		t.Fatal(err)
	}
	if err := Remove(ctx, nft); err != nil {
		t.Fatal(err)
	}
	if nft.Table != nil {
		t.Errorf("table still present after Remove:\n%s", nft.Dump())
	}
	if err := Remove(ctx, nft); err != nil {
		t.Errorf("Remove of an absent table: %v", err)
	}
}
