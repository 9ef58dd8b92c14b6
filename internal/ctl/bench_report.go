package ctl

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/trellisnet/trellis/internal/dpbench"
)

// BenchSide is one side of the comparison: the pod network or the nodes'
// own network between the same two nodes (the baseline).
type BenchSide string

// The two sides.
const (
	SidePod  BenchSide = "pod"
	SideNode BenchSide = "node"
)

// benchProbe runs one measurement from the client to the server on a side.
type benchProbe interface {
	// Throughput is TCP throughput in Gbit/s with the given congestion control.
	Throughput(ctx context.Context, side BenchSide, congestion string, seconds int) (float64, error)
	// RR is 1-byte TCP request/response round trips per second.
	RR(ctx context.Context, side BenchSide, seconds int) (float64, error)
	// Congestion is, per node, the TCP congestion controls its kernel offers.
	Congestion(ctx context.Context) (map[string][]string, error)
}

// BenchConfig is what to measure.
type BenchConfig struct {
	Runs, Seconds int
	Congestion    []string
}

// BenchReport is `trellisctl bench -o json|yaml`.
type BenchReport struct {
	ServerNode string `json:"serverNode"`
	ClientNode string `json:"clientNode"`
	Image      string `json:"image"`
	Runs       int    `json:"runs"`
	Seconds    int    `json:"seconds"`
	// CongestionAvailable is, per node, the kernel's available TCP
	// congestion controls (net.ipv4.tcp_available_congestion_control).
	CongestionAvailable map[string][]string `json:"congestionAvailable"`
	Results             []BenchResult       `json:"results"`
}

// BenchResult is one figure on both sides.
type BenchResult struct {
	Name       string `json:"name"`
	Unit       string `json:"unit"`
	Congestion string `json:"congestion,omitempty"`
	// Skipped says why the figure was not measured (a congestion control
	// a node's kernel does not offer); the other fields are then empty.
	Skipped string        `json:"skipped,omitempty"`
	Pod     dpbench.Stats `json:"pod"`
	Node    dpbench.Stats `json:"node"`
	// Ratio is the pod median ÷ the node median.
	Ratio float64 `json:"ratio"`
}

// measureBench measures every figure, pod and node interleaved (pod, node,
// pod, node, ...), and returns the report. A congestion control that a
// node does not offer is reported as skipped; any failed run is an error.
func measureBench(ctx context.Context, p benchProbe, c BenchConfig, logf func(string, ...any)) (BenchReport, error) {
	rep := BenchReport{Runs: c.Runs, Seconds: c.Seconds}
	avail, err := p.Congestion(ctx)
	if err != nil {
		return rep, fmt.Errorf("reading the nodes' TCP congestion controls: %w", err)
	}
	rep.CongestionAvailable = avail
	for _, cc := range c.Congestion {
		r := BenchResult{Name: "TCP throughput (" + cc + ")", Unit: "Gbit/s", Congestion: cc}
		if missing := lacking(avail, cc); missing != "" {
			r.Skipped = fmt.Sprintf("%s is not offered by the kernel of node %s (available: %s)", cc, missing, strings.Join(avail[missing], " "))
			logf("%s: skipped: %s", r.Name, r.Skipped)
			rep.Results = append(rep.Results, r)
			continue
		}
		r, err = interleaveSides(ctx, r, c.Runs, logf, func(side BenchSide) (float64, error) {
			return p.Throughput(ctx, side, cc, c.Seconds)
		})
		if err != nil {
			return rep, err
		}
		rep.Results = append(rep.Results, r)
	}
	r := BenchResult{Name: "TCP 1-byte request/response", Unit: "transactions/s"}
	r, err = interleaveSides(ctx, r, c.Runs, logf, func(side BenchSide) (float64, error) {
		return p.RR(ctx, side, c.Seconds)
	})
	if err != nil {
		return rep, err
	}
	rep.Results = append(rep.Results, r)
	return rep, nil
}

// lacking is the first node (by name) whose kernel does not offer cc, or "".
func lacking(avail map[string][]string, cc string) string {
	nodes := make([]string, 0, len(avail))
	for n := range avail {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	for _, n := range nodes {
		if !slices.Contains(avail[n], cc) {
			return n
		}
	}
	return ""
}

func interleaveSides(ctx context.Context, r BenchResult, runs int, logf func(string, ...any), run func(BenchSide) (float64, error)) (BenchResult, error) {
	side := func(s BenchSide) func() (float64, error) {
		return func() (float64, error) {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			v, err := run(s)
			if err != nil {
				return 0, fmt.Errorf("%s→%s: %w", s, s, err)
			}
			return v, nil
		}
	}
	pod, node, err := dpbench.Interleave(runs, side(SidePod), side(SideNode), func(i int, p, n float64) {
		logf("%s run %d/%d: pod %s node %s %s", r.Name, i+1, runs, num(p), num(n), r.Unit)
	})
	if err != nil {
		return r, fmt.Errorf("%s: %w", r.Name, err)
	}
	r.Pod, r.Node = dpbench.Summarise(pod), dpbench.Summarise(node)
	if r.Node.Median > 0 {
		r.Ratio = r.Pod.Median / r.Node.Median
	}
	return r, nil
}

// printBench writes the report as a table.
func printBench(w io.Writer, rep BenchReport) error {
	fmt.Fprintf(w, "pod→pod vs node→node from %s (client) to %s (server), %d interleaved runs of %d s, image %s\n",
		rep.ClientNode, rep.ServerNode, rep.Runs, rep.Seconds, rep.Image)
	nodes := make([]string, 0, len(rep.CongestionAvailable))
	for n := range rep.CongestionAvailable {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	for _, n := range nodes {
		fmt.Fprintf(w, "TCP congestion controls on %s: %s\n", n, strings.Join(rep.CongestionAvailable[n], " "))
	}
	fmt.Fprintln(w)
	t := NewTable(w, "FIGURE", "UNIT", "POD MEDIAN (MIN–MAX)", "NODE MEDIAN (MIN–MAX)", "POD ÷ NODE")
	for _, r := range rep.Results {
		if r.Skipped != "" {
			t.Row(r.Name, r.Unit, "skipped: "+r.Skipped, "", "")
			continue
		}
		t.Row(r.Name, r.Unit, stats(r.Pod), stats(r.Node), fmt.Sprintf("%.3f", r.Ratio))
	}
	return t.Flush()
}

func stats(s dpbench.Stats) string {
	return fmt.Sprintf("%s (%s–%s)", num(s.Median), num(s.Min), num(s.Max))
}

// num prints a figure with four significant digits, without an exponent.
func num(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.4g", v)
}
