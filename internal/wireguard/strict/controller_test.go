package strict

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/nftwatch"
)

func nodeLister(t *testing.T, cidrs map[string][]string) corelisters.NodeLister {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for name, c := range cidrs {
		n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.NodeSpec{PodCIDRs: c}}
		if err := idx.Add(n); err != nil {
			t.Fatal(err)
		}
	}
	return corelisters.NewNodeLister(idx)
}

func testConfig(t *testing.T, nft knftables.Interface) Config {
	return Config{NodeName: "n1", NFT: nft, Device: "trellis.wg", ClusterCIDRs: pfx("10.244.0.0/16"),
		Nodes: nodeLister(t, map[string][]string{
			"n1": {"10.244.1.0/24"},
			"n2": {"10.244.2.0/24", "fd00:10:244:2::/64"},
			// Outside the cluster CIDRs (the routing controller rejects
			// it): its pods get no plaintext either.
			"rogue": {"10.99.0.0/24"},
		})}
}

// The controller puts every node's pod CIDRs and the cluster CIDRs in
// @pods, this node's in @local, exports the count, and removes the table
// once strict mode is off.
func TestControllerProgramsFromNodesAndRemovesWhenDisabled(t *testing.T) {
	ctx := context.Background()
	nft := knftables.NewFake(knftables.InetFamily, TableName)
	reg := prometheus.NewRegistry()
	cfg := testConfig(t, nft)
	cfg.Registerer = reg
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	cur, err := Read(ctx, nft)
	if err != nil {
		t.Fatal(err)
	}
	if !cur.Intact || !slices.Equal(cur.Pods, pfx("10.99.0.0/24", "10.244.0.0/16")) || !slices.Equal(cur.Local, pfx("10.244.1.0/24")) ||
		!slices.Equal(cur.Pods6, pfx("fd00:10:244:2::/64")) || cur.Local6 != nil {
		t.Errorf("table holds %+v", cur)
	}
	if got := testutil.ToFloat64(c.pods); got != 3 {
		t.Errorf("trellis_encryption_strict_pod_cidrs = %v, want 3", got)
	}
	for _, name := range []string{"trellis_encryption_strict_pod_cidrs", "trellis_encryption_strict_dropped_packets_total"} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || n != 1 {
			t.Errorf("registry holds %d %s (%v), want 1", n, name, err)
		}
	}

	offReg := prometheus.NewRegistry()
	cfg.Disabled, cfg.Registerer = true, offReg
	off, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(offReg, "trellis_encryption_strict_dropped_packets_total"); err != nil || n != 0 {
		t.Errorf("strict mode off: %d drop counters exported (%v), want none (no table to read)", n, err)
	}
	for range 2 {
		if err := off.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if nft.Table != nil {
			t.Fatalf("table still present with strict mode off: %s", nft.Dump())
		}
	}
}

// The drop counter reaches Prometheus as it is in the kernel; absent
// without the table.
func TestDroppedPacketsFollowTheKernelCounter(t *testing.T) {
	ctx := context.Background()
	nft := knftables.NewFake(knftables.InetFamily, TableName)
	c, err := New(testConfig(t, nft))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Dropped(ctx); ok {
		t.Error("a drop counter read without a table")
	}
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	nft.Table.Counters[CounterName].Packets = knftables.PtrTo[uint64](42)
	if n, ok := c.Dropped(ctx); !ok || n != 42 {
		t.Errorf("Dropped = %d, %v; want 42", n, ok)
	}
	c.dropped.lastRead = time.Time{} // past the scrape cache
	if got := testutil.ToFloat64(c.dropped); got != 42 {
		t.Errorf("trellis_encryption_strict_dropped_packets_total = %v, want 42", got)
	}
	if got := testutil.CollectAndCount(c.dropped); got != 1 {
		t.Errorf("collected %d metrics, want 1", got)
	}
}

// A sync that finds the table changed by another process counts a
// foreign change and puts the table back; a node change alone is not one.
func TestSyncRepairsAndCountsForeignChanges(t *testing.T) {
	ctx := context.Background()
	nft := knftables.NewFake(knftables.InetFamily, TableName)
	c, err := New(testConfig(t, nft))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	want := nft.Dump()
	foreign := func() float64 { return testutil.ToFloat64(c.guard.Changes.WithLabelValues(nftwatch.ReasonForeign)) }
	if err := c.Sync(ctx); err != nil || foreign() != 0 {
		t.Fatalf("resync: %v, foreign %v", err, foreign())
	}
	tx := nft.NewTransaction()
	tx.Delete(&knftables.Table{})
	if err := nft.Run(ctx, tx); err != nil {
		t.Fatal(err)
	}
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if foreign() != 1 {
		t.Errorf("foreign changes = %v after the table was deleted, want 1", foreign())
	}
	if got := nft.Dump(); got != want {
		t.Errorf("repaired table:\n%s\nwant:\n%s", got, want)
	}
}

func TestNewRequiresItsInputs(t *testing.T) {
	nft := knftables.NewFake(knftables.InetFamily, TableName)
	cfg := testConfig(t, nft)
	cfg.Device = ""
	if _, err := New(cfg); err == nil {
		t.Error("New accepted strict mode without a device")
	}
	if _, err := New(Config{Disabled: true}); err == nil {
		t.Error("New accepted no nftables interface")
	}
	if _, err := New(Config{Disabled: true, NFT: nft}); err != nil {
		t.Errorf("New of a disabled controller: %v", err)
	}
}
