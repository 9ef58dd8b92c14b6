//go:build kernel

package masq

import (
	"context"
	"regexp"
	"sort"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/netnstest"
	"github.com/trellisnet/trellis/internal/nftwatch"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

var counterValues = regexp.MustCompile(`packets \d+ bytes \d+`)

// listTable is the table as nft lists it, counter values dropped (no
// handles: a listing without -a shows none).
func listTable(t *testing.T, n *netnstest.Node) string {
	t.Helper()
	out, err := n.Exec("nft", "list", "table", "ip", TableName)
	if err != nil {
		return "(no table)"
	}
	return counterValues.ReplaceAllString(out, "packets _ bytes _")
}

// nsNFT opens the table's nftables interface in n (knftables checks nft in
// the calling namespace).
func nsNFT(t *testing.T, n *netnstest.Node) knftables.Interface {
	t.Helper()
	var nft knftables.Interface
	if err := n.NS.Do(func(ns.NetNS) error {
		var err error
		nft, err = NewNFT()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return nft
}

// After nft flush ruleset in the node namespace, the guarded controller
// puts the masquerade table back, equal to a fresh render, within 1 s
// (the periodic resync, a minute away, is not what repairs it).
func TestKernelMasqueradeTableRepairedAfterFlush(t *testing.T) {
	n := netnstest.NewNode(t, "10.0.1.11/24")
	var w *nftwatch.Watch
	if err := n.NS.Do(func(ns.NetNS) error {
		var err error
		w, err = nftwatch.Open(unix.NFPROTO_IPV4, TableName)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	// A fresh render, in a namespace of its own.
	fresh := netnstest.NewNode(t, "10.0.1.12/24")
	d := Compute(pfx("10.244.1.0/24"), pfx("10.244.0.0/16"), pfx("10.244.1.0/24", "10.245.2.0/24"), pfx("192.168.0.0/16"))
	if err := fresh.NS.Do(func(ns.NetNS) error { return Apply(context.Background(), nsNFT(t, fresh), d) }); err != nil {
		t.Fatal(err)
	}
	want := listTable(t, fresh)

	c, err := New(Config{NodeName: "n1", NFT: nsNFT(t, n), Watch: w,
		ClusterCIDRs: pfx("10.244.0.0/16"), NonMasqueradeCIDRs: pfx("192.168.0.0/16"),
		Nodes: nodeLister(t, map[string]string{"n1": "10.244.1.0/24", "n2": "10.245.2.0/24"}),
		// The agent's default least interval; the periodic resync stays a
		// minute away.
		Sync: syncrunner.Options{MinInterval: 100 * time.Millisecond, MaxInterval: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer netnstest.RunGuarded(ctx, t, n.NS, c.Run, c.Watch)() // nft runs in the node namespace
	defer cancel()
	waitTable := func(limit time.Duration) (time.Duration, bool) {
		start := time.Now()
		for time.Since(start) < limit {
			if listTable(t, n) == want {
				return time.Since(start), true
			}
			time.Sleep(2 * time.Millisecond)
		}
		return time.Since(start), false
	}
	if _, ok := waitTable(5 * time.Second); !ok {
		t.Fatalf("first sync: table never matched a fresh render:\n%s\nwant:\n%s", listTable(t, n), want)
	}
	const flushes = 10
	var windows []time.Duration
	for i := 0; i < flushes; i++ {
		time.Sleep(150 * time.Millisecond) // past the least interval since the last sync
		if out, err := n.Exec("nft", "flush", "ruleset"); err != nil {
			t.Fatalf("nft flush ruleset: %v %s", err, out)
		}
		win, ok := waitTable(time.Second)
		if !ok {
			t.Fatalf("flush %d: table not back within 1s:\n%s\nwant:\n%s", i, listTable(t, n), want)
		}
		windows = append(windows, win)
	}
	sort.Slice(windows, func(i, j int) bool { return windows[i] < windows[j] })
	t.Logf("nft flush ruleset -> masquerade table equal to a fresh render, %d flushes: p50 %v, max %v (polling nft listings)",
		flushes, windows[len(windows)/2], windows[len(windows)-1])
	if got := testutil.ToFloat64(c.guard.Changes.WithLabelValues(nftwatch.ReasonForeign)); got != flushes {
		t.Errorf("trellis_masq_table_changes_total{reason=foreign} = %v, want %d", got, flushes)
	}
}

// handles lists the table with handles (nft -a).
func handles(t *testing.T, n *netnstest.Node) string {
	t.Helper()
	out, err := n.Exec("nft", "-a", "list", "table", "ip", TableName)
	if err != nil {
		t.Fatalf("nft -a list: %v %s", err, out)
	}
	return counterValues.ReplaceAllString(out, "packets _ bytes _")
}

// A resync of an unchanged table commits nothing: handles (and the ruleset
// generation) stay as they were.
func TestKernelMasqueradeResyncOfUnchangedTableCommitsNothing(t *testing.T) {
	n := netnstest.NewNode(t, "10.0.1.11/24")
	d := Compute(pfx("10.244.1.0/24"), pfx("10.244.0.0/16"), nil, pfx("192.168.0.0/16"))
	nft := nsNFT(t, n)
	var gen func() uint32
	if err := n.NS.Do(func(ns.NetNS) error {
		w, err := nftwatch.Open(unix.NFPROTO_IPV4, TableName)
		if err != nil {
			return err
		}
		t.Cleanup(w.Close)
		gen = func() uint32 {
			g, err := w.Generation()
			if err != nil {
				t.Fatal(err)
			}
			return g
		}
		return Apply(context.Background(), nft, d)
	}); err != nil {
		t.Fatal(err)
	}
	before, genBefore := handles(t, n), gen()
	if err := n.NS.Do(func(ns.NetNS) error { return Apply(context.Background(), nft, d) }); err != nil {
		t.Fatal(err)
	}
	if after, genAfter := handles(t, n), gen(); after != before || genAfter != genBefore {
		t.Errorf("resync of an unchanged table committed (generation %d -> %d):\n%s\nbefore:\n%s", genBefore, genAfter, after, before)
	}
}
