package scale

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/trellisnet/trellis/internal/scalebench"
)

// The ghosts' pod CIDRs are disjoint /27s inside the bench lab's cluster
// CIDR and outside the real nodes' /24s; their addresses are lab-only.
func TestGhostAddressPlan(t *testing.T) {
	cluster := netip.MustParsePrefix(ClusterCIDR)
	realNodes := netip.MustParsePrefix("10.244.0.0/16") // kube-controller-manager allocates /24s from the start
	underlay := netip.MustParsePrefix("172.30.0.0/16")
	subnet := netip.MustParsePrefix("172.30.0.0/24")
	seen := map[netip.Addr]int{}
	var last netip.Prefix
	for i := 0; i < MaxGhosts; i++ {
		c := GhostCIDR(i)
		if !cluster.Contains(c.Addr()) || !cluster.Contains(GhostPodIP(i, PodsPerCap-1)) || c.Bits() != 27 {
			t.Fatalf("ghost %d: pod CIDR %s outside %s", i, c, cluster)
		}
		if realNodes.Overlaps(c) {
			t.Fatalf("ghost %d: pod CIDR %s overlaps the real nodes' range %s", i, c, realNodes)
		}
		if i > 0 && last.Overlaps(c) {
			t.Fatalf("ghosts %d and %d overlap: %s %s", i-1, i, last, c)
		}
		last = c
		if p := GhostPodIP(i, PodsPerCap-1); !c.Contains(p) || p == c.Addr() {
			t.Fatalf("ghost %d: last pod address %s not a host of %s", i, p, c)
		}
		a := GhostAddr(i, subnet)
		if !underlay.Contains(a) {
			t.Fatalf("ghost %d: address %s outside the lab's underlay range", i, a)
		}
		if j, dup := seen[a]; dup {
			t.Fatalf("ghosts %d and %d share address %s", j, i, a)
		}
		seen[a] = i
		if onSubnet := subnet.Contains(a); onSubnet != (i < nativeGhosts) {
			t.Fatalf("ghost %d: address %s on the node's subnet = %v", i, a, onSubnet)
		}
		if i < nativeGhosts && (a.As4()[3] < 100 || a.As4()[3] > 199) {
			t.Fatalf("ghost %d: native address %s outside hosts .100-.199 (the lab's own hosts are below .100 and .254)", i, a)
		}
	}
	if MaxGhosts < 5000+200 {
		t.Fatalf("MaxGhosts %d leaves no room for 5,000 ghosts and the node-add samples", MaxGhosts)
	}
}

func TestParseSteps(t *testing.T) {
	got, err := ParseSteps("100/2000, 1000/20000,5000/100000")
	if err != nil || len(got) != 3 || got[2] != (StepSize{5000, 100000}) {
		t.Fatalf("ParseSteps = %v, %v", got, err)
	}
	for _, bad := range []string{"", "100", "100/x", "1000/20000,100/2000", "0/5"} {
		if _, err := ParseSteps(bad); err == nil {
			t.Errorf("ParseSteps(%q) accepted", bad)
		}
	}
}

// Each step's pods land on that step's new ghosts, 20 or 21 a ghost at the
// planned sizes, and no ghost gets more than PodsPerCap.
func TestPlacement(t *testing.T) {
	var p Placement
	ghosts := []int{97, 997, 4997}
	pods := []int{2000, 18000, 80000}
	first := 0
	for k := range ghosts {
		p.Grow(ghosts[k])
		got, err := p.Place(pods[k], first)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[[2]int]bool{}
		for _, gs := range got {
			if gs[0] < first {
				t.Fatalf("step %d: pod on old ghost %d while new ghosts had room", k, gs[0])
			}
			if seen[gs] {
				t.Fatalf("step %d: slot %v given twice", k, gs)
			}
			seen[gs] = true
		}
		first = ghosts[k]
	}
	for g, n := range p.Slots {
		if n > 21 {
			t.Fatalf("ghost %d holds %d pods, want ≤ 21", g, n)
		}
	}
	if _, err := p.Place(len(p.Slots)*PodsPerCap, 0); err == nil {
		t.Fatal("placing more pods than the ghosts hold succeeded")
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	if p50, p99 := Percentile(ds, 50), Percentile(ds, 99); p50 != 50 || p99 != 99 {
		t.Fatalf("p50 %v p99 %v, want 50 99", p50, p99)
	}
	if Percentile(ds[:1], 99) != 100 {
		t.Fatal("one sample: p99 is not that sample")
	}
}

func TestTable(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	steps := []scalebench.Step{
		{Nodes: 100, Pods: 2000, Policies: 1000, RSSMiB: f(40), PolicyChangeP99Ms: f(300), TxOpsPerChange: f(4)},
		{Nodes: 1000, Pods: 20000, Policies: 1000, RSSMiB: f(160), PolicyChangeP99Ms: f(200), TxOpsPerChange: f(40)},
	}
	tab := Table(steps)
	for _, want := range []string{"| 100 nodes / 2,000 pods / 1000 policies |", "| agent RSS (MiB) | ≤ 150 at 5k/100k | 40.0 met | 160.0 **MISSED** |",
		"| policy change → enforced p99 (ms) | ≤ 250 | 300 **MISSED** | 200 met |", "| nftables ops per pod add | flat in pods | 4.0 met | 40.0 **MISSED** |",
		"| idle CPU (% of a core) | ≤ 0.5 | — | — |"} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
}

func TestSampleNodes(t *testing.T) {
	subnet := netip.MustParsePrefix("172.30.1.0/24")
	seen := map[netip.Addr]bool{}
	for k := 0; k < sampleRange; k++ {
		i, a := SampleNode(k, subnet)
		if i < MaxGhosts-sampleRange || i >= MaxGhosts {
			t.Fatalf("sample %d: index %d outside the reserved range", k, i)
		}
		if seen[a] || subnet.Contains(a) != (k%2 == 0) || (k%2 == 0 && (a.As4()[3] < 200 || a.As4()[3] > 231)) {
			t.Fatalf("sample %d: address %s (duplicate, or on the wrong side of %s)", k, a, subnet)
		}
		seen[a] = true
		for g := 0; g < nativeGhosts; g++ {
			if GhostAddr(g, subnet) == a {
				t.Fatalf("sample %d takes ghost %d's address %s", k, g, a)
			}
		}
	}
}
