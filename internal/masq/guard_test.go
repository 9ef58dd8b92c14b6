package masq

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/nftwatch"
)

// An Apply of the content the table already holds commits nothing; one of
// different content commits one transaction.
func TestApplyCommitsNothingWhenTheTableHoldsTheContent(t *testing.T) {
	nft := knftables.NewFake(knftables.IPv4Family, TableName)
	ctx := context.Background()
	d := Compute(pfx("10.244.1.0/24"), pfx("10.244.0.0/16"), nil, pfx("192.168.7.9/32"))
	if err := Apply(ctx, nft, d); err != nil {
		t.Fatal(err)
	}
	first := nft.LastTransaction
	if first == nil {
		t.Fatal("first Apply committed nothing")
	}
	if err := Apply(ctx, nft, d); err != nil {
		t.Fatal(err)
	}
	if nft.LastTransaction != first {
		t.Errorf("Apply of unchanged content committed:\n%s", nft.LastTransaction)
	}
	d2 := Compute(pfx("10.244.1.0/24"), pfx("10.244.0.0/16"), nil, nil)
	if err := Apply(ctx, nft, d2); err != nil {
		t.Fatal(err)
	}
	if nft.LastTransaction == first {
		t.Error("Apply of changed content committed nothing")
	}
	if got := elements(t, nft, SetNoMasqDst); len(got) != 1 || got[0] != "10.244.0.0/16" {
		t.Errorf("exempt set after change = %v", got)
	}
}

// Read sees the table's content, and anything write would not create
// (an extra rule or set, a missing table) as not intact.
func TestReadTellsIntactContentFromForeignChanges(t *testing.T) {
	ctx := context.Background()
	d := Compute(pfx("10.244.1.0/24"), pfx("10.244.0.0/16"), nil, pfx("192.168.7.9/32"))
	for _, tc := range []struct {
		name    string
		tamper  func(*knftables.Transaction)
		missing bool
		holds   bool
	}{
		{name: "as written", holds: true},
		{name: "table gone", missing: true},
		{name: "extra rule", tamper: func(tx *knftables.Transaction) {
			tx.Add(&knftables.Rule{Chain: ChainName, Rule: "accept"})
		}},
		{name: "extra set", tamper: func(tx *knftables.Transaction) {
			tx.Add(&knftables.Set{Name: "other", Type: "ipv4_addr"})
		}},
		{name: "element removed", tamper: func(tx *knftables.Transaction) {
			tx.Delete(&knftables.Element{Set: SetNoMasqDst, Key: []string{"192.168.7.9/32"}})
		}},
		{name: "rule replaced", tamper: func(tx *knftables.Transaction) {
			tx.Flush(&knftables.Chain{Name: ChainName})
			tx.Add(&knftables.Rule{Chain: ChainName, Rule: "counter"})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nft := knftables.NewFake(knftables.IPv4Family, TableName)
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
			if tc.missing {
				nft.Table = nil
			}
			c, err := Read(ctx, nft)
			if err != nil {
				t.Fatal(err)
			}
			if c.Holds(d) != tc.holds {
				t.Errorf("Holds = %v, want %v (read %+v)", !tc.holds, tc.holds, c)
			}
		})
	}
}

type fakeWatch struct{ changes []nftwatch.Change }

func (w fakeWatch) Run(_ context.Context, fn func(nftwatch.Change)) error {
	for _, ch := range w.changes {
		fn(ch)
	}
	return nil
}

// A sync that finds the table changed by someone else rewrites it and
// counts one foreign change; its own commits and the syncs they trigger
// count none, and a sync of unchanged content commits nothing.
func TestControllerRepairsAndCountsForeignChanges(t *testing.T) {
	ctx := context.Background()
	nft := knftables.NewFake(knftables.IPv4Family, TableName)
	reg := prometheus.NewRegistry()
	nodes := nodeLister(t, map[string]string{"n1": "10.244.1.0/24"})
	c, err := New(Config{NodeName: "n1", NFT: nft, Registerer: reg, Nodes: nodes,
		Watch: fakeWatch{[]nftwatch.Change{{Gen: 7, PID: 42, Comm: "nft"}}}})
	if err != nil {
		t.Fatal(err)
	}
	foreign := func() float64 { return testutil.ToFloat64(c.guard.Changes.WithLabelValues(nftwatch.ReasonForeign)) }
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	want := nft.Dump()
	first := nft.LastTransaction
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if nft.LastTransaction != first || foreign() != 0 {
		t.Errorf("resync of an unchanged table: committed %v, foreign changes %v; want no commit, 0", nft.LastTransaction != first, foreign())
	}

	nft.Table = nil // nft flush ruleset
	if err := c.Watch(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c.guard.Latest(); got.Comm != "nft" || got.PID != 42 {
		t.Errorf("latest notification %+v, want the watch's (pid 42, nft)", got)
	}
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if nft.Dump() != want {
		t.Errorf("table after repair:\n%s\nwant:\n%s", nft.Dump(), want)
	}
	if foreign() != 1 {
		t.Errorf("foreign changes = %v after one flush, want 1", foreign())
	}
	if n, err := testutil.GatherAndCount(reg, "trellis_masq_table_changes_total", "trellis_masq_table_repair_seconds"); err != nil || n != 2 {
		t.Errorf("registry holds %d guard metrics (%v), want 2", n, err)
	}
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if foreign() != 1 {
		t.Errorf("foreign changes = %v after a resync of the repaired table, want 1", foreign())
	}
}
