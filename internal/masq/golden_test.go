package masq

import (
	"context"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"
)

var update = flag.Bool("update", false, "rewrite golden files")

// nodesWith lists Nodes with the given pod CIDRs (any family, in order).
func nodesWith(t *testing.T, cidrs map[string][]string) corelisters.NodeLister {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for name, c := range cidrs {
		if err := idx.Add(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.NodeSpec{PodCIDRs: c}}); err != nil {
			t.Fatal(err)
		}
	}
	return corelisters.NewNodeLister(idx)
}

// Objects in, tables out: the controller's IPv4 and IPv6 tables for an
// IPv4, an IPv6 and a dual-stack cluster (three nodes, this one n1), with
// cluster CIDRs and nonMasqueradeCIDRs of both families in the
// configuration: each table takes its family's.
func TestGoldenTablesPerFamily(t *testing.T) {
	cluster := pfx("10.244.0.0/16", "fd00:10:244::/56")
	nonMasq := pfx("192.168.0.0/16", "10.244.7.0/24", "fd00:beef::/48")
	for _, c := range []struct {
		name  string
		nodes map[string][]string
	}{
		{"ipv4", map[string][]string{"n1": {"10.244.1.0/24"}, "n2": {"10.244.2.0/24"}, "n3": {"10.250.3.0/24"}}},
		{"ipv6", map[string][]string{"n1": {"fd00:10:244:1::/64"}, "n2": {"fd00:10:244:2::/64"}, "n3": {"fd00:10:250:3::/64"}}},
		{"dual", map[string][]string{"n1": {"10.244.1.0/24", "fd00:10:244:1::/64"}, "n2": {"fd00:10:244:2::/64", "10.244.2.0/24"},
			"n3": {"10.250.3.0/24", "fd00:10:250:3::/64"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			nft4 := knftables.NewFake(knftables.IPv4Family, TableName)
			nft6 := knftables.NewFake(knftables.IPv6Family, TableName)
			ctl, err := New(Config{NodeName: "n1", ClusterCIDRs: cluster, NonMasqueradeCIDRs: nonMasq,
				Nodes: nodesWith(t, c.nodes), NFT: nft4, NFT6: nft6})
			if err != nil {
				t.Fatal(err)
			}
			if err := ctl.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			for _, f := range []struct {
				name string
				nft  *knftables.Fake
			}{{"ip " + TableName, nft4}, {"ip6 " + TableName, nft6}} {
				b.WriteString("# " + f.name + "\n")
				if f.nft.Table == nil {
					b.WriteString("(no table)\n")
					continue
				}
				b.WriteString(f.nft.Dump())
			}
			checkGolden(t, "tables-"+c.name+".golden", b.String())
		})
	}
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run with -update to create): %v", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("result differs from %s (-want +got):\n%s", path, diff)
	}
}

// The IPv6 table follows the node's IPv6 pod CIDR: none while the node has
// none (an IPv4-only node's ruleset is what it always was), created when it
// gets one, removed when it loses it, and removed when IPv6 masquerade is
// disabled. The IPv4 table is not touched by any of it.
func TestIPv6TableFollowsTheNodeAndTheSetting(t *testing.T) {
	ctx := context.Background()
	nft4 := knftables.NewFake(knftables.IPv4Family, TableName)
	nft6 := knftables.NewFake(knftables.IPv6Family, TableName)
	cfg := Config{NodeName: "n1", NFT: nft4, NFT6: nft6, Nodes: nodesWith(t, map[string][]string{"n1": {"10.244.1.0/24"}})}
	sync := func(cfg Config) *Controller {
		t.Helper()
		c, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := sync(cfg)
	v4 := nft4.Dump()
	if nft6.Table != nil {
		t.Fatalf("IPv6 table on an IPv4-only node:\n%s", nft6.Dump())
	}
	// Known absent: the next sync runs no nft at all.
	before := nft6.LastTransaction
	if err := c.Sync(ctx); err != nil || nft6.LastTransaction != before {
		t.Fatalf("resync of an IPv4-only node touched the IPv6 table (err %v)", err)
	}

	cfg.Nodes = nodesWith(t, map[string][]string{"n1": {"10.244.1.0/24", "fd00:10:244:1::/64"}})
	sync(cfg)
	if got := elements(t, nft6, SetPodSources); len(got) != 1 || got[0] != "fd00:10:244:1::/64" {
		t.Fatalf("IPv6 pod sources %v, want the node's fd00:10:244:1::/64", got)
	}
	if !strings.Contains(nft6.Dump(), "ip6 saddr @pod-sources ip6 daddr != @no-masquerade-dst fib daddr type != local counter masquerade") {
		t.Fatalf("IPv6 rule:\n%s", nft6.Dump())
	}
	if nft4.Dump() != v4 {
		t.Fatalf("IPv4 table changed by IPv6:\n%s\nwas\n%s", nft4.Dump(), v4)
	}

	cfg.DisabledIPv6 = true
	sync(cfg)
	if nft6.Table != nil || nft4.Dump() != v4 {
		t.Fatalf("IPv6 masquerade disabled: IPv6 table %v, IPv4 unchanged %v", nft6.Table != nil, nft4.Dump() == v4)
	}

	cfg.DisabledIPv6 = false
	sync(cfg)
	cfg.Nodes = nodesWith(t, map[string][]string{"n1": {"10.244.1.0/24"}})
	sync(cfg)
	if nft6.Table != nil {
		t.Fatalf("IPv6 table kept after the node lost its IPv6 pod CIDR:\n%s", nft6.Dump())
	}

	// IPv4 off, IPv6 on: the IPv6 table alone.
	cfg.Disabled = true
	cfg.Nodes = nodesWith(t, map[string][]string{"n1": {"fd00:10:244:1::/64"}})
	sync(cfg)
	if nft4.Table != nil || nft6.Table == nil {
		t.Fatalf("IPv4 off, IPv6 on: IPv4 table %v, IPv6 table %v", nft4.Table != nil, nft6.Table != nil)
	}
}

func TestCollapseFamily(t *testing.T) {
	in := pfx("10.244.1.0/24", "fd00:10:244::/56", "fd00:10:244:1::/64", "fd00:beef::1/48", "10.0.0.0/8", "::ffff:10.0.0.0/104")
	if got, want := CollapseFamily(knftables.IPv6Family, in), pfx("fd00:10:244::/56", "fd00:beef::/48"); !cmp.Equal(got, want, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })) {
		t.Errorf("IPv6: %v, want %v", got, want)
	}
	if got, want := CollapseFamily(knftables.IPv4Family, in), pfx("10.0.0.0/8"); !cmp.Equal(got, want, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })) {
		t.Errorf("IPv4: %v, want %v", got, want)
	}
}
