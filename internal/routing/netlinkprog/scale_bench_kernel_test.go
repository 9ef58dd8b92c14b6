//go:build kernel

package netlinkprog_test

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/trellisnet/trellis/internal/config"
)

// make bench-routing-scale (not part of make test-kernel): the routing
// controller at -routing.peers peers (default 5,000) in a node namespace.
var (
	benchPeers   = flag.Int("routing.peers", 5000, "peers of the routing scale bench")
	benchAdds    = flag.Int("routing.adds", 60, "single Node adds measured by the routing scale bench")
	benchNoops   = flag.Int("routing.noops", 20, "no-op resyncs measured by the routing scale bench")
	benchGap     = flag.Duration("routing.gap", 150*time.Millisecond, "least pause between two measured adds (plus up to 50 ms of jitter)")
	benchProfile = flag.String("routing.cpuprofile", "", "directory for CPU profiles of each phase (cold.pprof, noop.pprof, adds.pprof)")
)

// phaseProfile starts a CPU profile of one phase when asked; stop ends it.
func phaseProfile(t *testing.T, name string) (stop func()) {
	t.Helper()
	if *benchProfile == "" {
		return func() {}
	}
	if err := os.MkdirAll(*benchProfile, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(*benchProfile, name+".pprof"))
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		t.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}
}

func pct(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	i := int(float64(len(s))*p+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return string(b[:len(b)-1])
}

func TestBenchRoutingScale(t *testing.T) {
	peers := *benchPeers
	fmt.Printf("routing scale bench: %d peers (auto mode: %d native, %d VXLAN), load average %s\n",
		peers, peers-peers/2, peers/2, loadavg())
	h := newScaleHarness(t, peers, config.DefaultMinSyncInterval)

	// Cold start: the first sync programs every peer.
	stop := phaseProfile(t, "cold")
	h.start()
	h.syncs.waitFor(t, 1, 2*time.Minute)
	coldWall := time.Since(h.started)
	stop()
	took, errs := h.syncs.since(0)
	if errs[0] != nil {
		t.Fatalf("cold sync: %v", errs[0])
	}
	cold, coldCPU := took[0], h.syncs.cpuSince(0)[0]
	opsCold := h.dp.Ops()
	// The informer's initial adds may queue one more sync: let it pass so
	// that every phase counts only its own syncs.
	h.syncs.settle(300 * time.Millisecond)
	r, f, n := h.kernelCounts()
	wr, wf, wn := wantCounts(peers)
	if r != wr || f != wf || n != wn {
		t.Fatalf("after the cold sync the kernel holds %d routes, %d FDB, %d neighbours; want %d, %d, %d", r, f, n, wr, wf, wn)
	}

	// No-op resyncs: nothing changed in the API.
	stop = phaseProfile(t, "noop")
	before, opsBefore := h.syncs.len(), h.dp.Ops()
	for i := range *benchNoops {
		h.ctl.Trigger()
		h.syncs.waitFor(t, before+i+1, time.Minute)
		time.Sleep(config.DefaultMinSyncInterval + 10*time.Millisecond)
	}
	stop()
	noop, errs := h.syncs.since(before)
	noopCPU := h.syncs.cpuSince(before)
	for _, err := range errs {
		if err != nil {
			t.Fatalf("no-op resync: %v", err)
		}
	}
	opsNoop := h.dp.Ops().Sub(opsBefore)

	// Full no-op applies: what the periodic full sync (every
	// maxSyncInterval) costs the kernel side, listing everything.
	var full, fullCPU []time.Duration
	opsBefore = h.dp.Ops()
	programmed := h.ctl.Programmed()
	for range 5 {
		err := h.node.NS.Do(func(ns.NetNS) error {
			c0, t0 := threadCPU(), time.Now()
			err := h.dp.Apply(context.Background(), programmed)
			full, fullCPU = append(full, time.Since(t0)), append(fullCPU, threadCPU()-c0)
			return err
		})
		if err != nil {
			t.Fatalf("full no-op apply: %v", err)
		}
	}
	opsFull := h.dp.Ops().Sub(opsBefore)

	// Single Node adds, informer event → every entry of the node observed
	// in the kernel by netlink notifications.
	w := h.watchKernel()
	stop = phaseProfile(t, "adds")
	before, opsBefore = h.syncs.len(), h.dp.Ops()
	var lat, latNative, latVXLAN []time.Duration
	for k := range *benchAdds {
		time.Sleep(*benchGap + time.Duration(rand.IntN(50))*time.Millisecond)
		i := peers + 1 + k
		h.addNode(i)
		at := w.waitSeen(t, scaleEntriesOf(i), 30*time.Second)
		ev, ok := h.events.get(scaleNode(i).Name)
		if !ok {
			t.Fatalf("no informer event recorded for node %d", i)
		}
		d := at.Sub(ev)
		lat = append(lat, d)
		if i%2 == 0 {
			latVXLAN = append(latVXLAN, d)
		} else {
			latNative = append(latNative, d)
		}
	}
	stop()
	h.syncs.settle(300 * time.Millisecond) // the last sync's end is seen after its entries
	addSyncs, errs := h.syncs.since(before)
	addCPU := h.syncs.cpuSince(before)
	for _, err := range errs {
		if err != nil {
			t.Fatalf("sync during adds: %v", err)
		}
	}
	opsAdds := h.dp.Ops().Sub(opsBefore)

	fmt.Printf("\n%-44s %12s %12s %12s %8s\n", "figure", "p50", "p99", "max", "target")
	row := func(name string, ds []time.Duration, target string) {
		fmt.Printf("%-44s %12s %12s %12s %8s\n", fmt.Sprintf("%s (n=%d)", name, len(ds)), ms(pct(ds, .5)), ms(pct(ds, .99)), ms(pct(ds, 1)), target)
	}
	fmt.Printf("%-44s %12s %12s %12s %8s\n", "cold start: first sync (all peers)", ms(cold), "", "", "≤ 1 s")
	fmt.Printf("%-44s %12s\n", "  its CPU time", ms(coldCPU))
	fmt.Printf("%-44s %12s\n", "cold start: Run → first sync done", ms(coldWall))
	row("no-op resync: sync duration", noop, "cheap")
	row("  its CPU time", noopCPU, "")
	row("full no-op apply (kernel listed)", full, "")
	row("  its CPU time", fullCPU, "")
	row("Node add: informer event → in kernel", lat, "≤ 100ms")
	row("  native peer (route)", latNative, "")
	row("  VXLAN peer (FDB + neighbour + route)", latVXLAN, "")
	row("  sync duration during adds", addSyncs, "")
	row("  its CPU time", addCPU, "")
	fmt.Printf("\nnetlink operations   %8s %8s %8s\n", "dumps", "writes", "deletes")
	fmt.Printf("cold (1 sync)        %8d %8d %8d\n", opsCold.Dumps, opsCold.Writes, opsCold.Deletes)
	perSync := func(v uint64, n int) string { return fmt.Sprintf("%.1f", float64(v)/float64(max(n, 1))) }
	fmt.Printf("no-op, per sync      %8s %8s %8s\n", perSync(opsNoop.Dumps, len(noop)), perSync(opsNoop.Writes, len(noop)), perSync(opsNoop.Deletes, len(noop)))
	fmt.Printf("full no-op apply     %8s %8s %8s\n", perSync(opsFull.Dumps, len(full)), perSync(opsFull.Writes, len(full)), perSync(opsFull.Deletes, len(full)))
	fmt.Printf("add, per sync        %8s %8s %8s   (%d syncs for %d adds)\n", perSync(opsAdds.Dumps, len(addSyncs)),
		perSync(opsAdds.Writes, len(addSyncs)), perSync(opsAdds.Deletes, len(addSyncs)), len(addSyncs), len(lat))
	fmt.Printf("load average after: %s\n", loadavg())
}
