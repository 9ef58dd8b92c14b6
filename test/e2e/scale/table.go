package scale

import (
	"fmt"
	"strings"

	"github.com/trellisnet/trellis/internal/scalebench"
)

// Target is one figure of a Step, how to print it and the target.
type Target struct {
	Name   string
	Goal   string                                      // the target, as printed
	Value  func(s scalebench.Step) *float64            // nil: not measured
	Format string                                      // printf verb for the value
	Met    func(v float64, first scalebench.Step) bool // nil: no target
}

// Targets are the figures of the table, in order.
var Targets = []Target{
	{Name: "create this step's objects (s)", Format: "%.0f", Value: func(s scalebench.Step) *float64 { return &s.CreateSeconds }},
	{Name: "agent RSS (MiB)", Goal: "≤ 150 at 5k/100k", Format: "%.1f", Value: func(s scalebench.Step) *float64 { return s.RSSMiB },
		Met: func(v float64, _ scalebench.Step) bool { return v <= 150 }},
	{Name: "agent heap in use (MiB)", Format: "%.1f", Value: func(s scalebench.Step) *float64 { return s.HeapInuseMiB }},
	{Name: "RSS margin (KiB/pod)", Goal: "≤ 5", Format: "%.2f", Value: func(s scalebench.Step) *float64 { return s.MarginKiBPerPod },
		Met: func(v float64, _ scalebench.Step) bool { return v <= 5 }},
	{Name: "idle CPU (% of a core)", Goal: "≤ 0.5", Format: "%.2f", Value: func(s scalebench.Step) *float64 { return s.IdleCPUPercent },
		Met: func(v float64, _ scalebench.Step) bool { return v <= 0.5 }},
	{Name: "restart: API list (s)", Format: "%.2f", Value: func(s scalebench.Step) *float64 { return s.ListSeconds }},
	{Name: "restart: full resync after the list (s)", Goal: "≤ 2", Format: "%.2f", Value: func(s scalebench.Step) *float64 { return s.ResyncSeconds },
		Met: func(v float64, _ scalebench.Step) bool { return v <= 2 }},
	{Name: "routing: every peer cold (s)", Goal: "≤ 1", Format: "%.2f", Value: func(s scalebench.Step) *float64 { return s.RoutingColdSeconds },
		Met: func(v float64, _ scalebench.Step) bool { return v <= 1 }},
	{Name: "Node added → on the node p50 (ms)", Format: "%.0f", Value: func(s scalebench.Step) *float64 { return s.NodeAddP50Ms }},
	{Name: "Node added → on the node p99 (ms)", Goal: "≤ 100", Format: "%.0f", Value: func(s scalebench.Step) *float64 { return s.NodeAddP99Ms },
		Met: func(v float64, _ scalebench.Step) bool { return v <= 100 }},
	{Name: "policy change → enforced p50 (ms)", Format: "%.0f", Value: func(s scalebench.Step) *float64 { return s.PolicyChangeP50Ms }},
	{Name: "policy change → enforced p99 (ms)", Goal: "≤ 250", Format: "%.0f", Value: func(s scalebench.Step) *float64 { return s.PolicyChangeP99Ms },
		Met: func(v float64, _ scalebench.Step) bool { return v <= 250 }},
	{Name: "pod add → in the table p50 (ms)", Format: "%.0f", Value: func(s scalebench.Step) *float64 { return s.PodAddP50Ms }},
	{Name: "pod add → in the table p99 (ms)", Goal: "≤ 250", Format: "%.0f", Value: func(s scalebench.Step) *float64 { return s.PodAddP99Ms },
		Met: func(v float64, _ scalebench.Step) bool { return v <= 250 }},
	{Name: "nftables ops per pod add", Goal: "flat in pods", Format: "%.1f", Value: func(s scalebench.Step) *float64 { return s.TxOpsPerChange },
		Met: func(v float64, first scalebench.Step) bool {
			return first.TxOpsPerChange == nil || v <= *first.TxOpsPerChange*1.1+2
		}},
}

// Table renders the steps as a Markdown table: one row per figure, one
// column per step, each value with "met"/"MISSED" where the issue sets a
// target; "—" where a figure was not measured (the step's notes say why).
func Table(steps []scalebench.Step) string {
	var b strings.Builder
	b.WriteString("| figure | target |")
	for _, s := range steps {
		fmt.Fprintf(&b, " %s nodes / %s pods / %d policies |", thousands(s.Nodes), thousands(s.Pods), s.Policies)
	}
	b.WriteString("\n|---|---|")
	for range steps {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, t := range Targets {
		fmt.Fprintf(&b, "| %s | %s |", t.Name, t.Goal)
		for _, s := range steps {
			v := t.Value(s)
			if v == nil {
				b.WriteString(" — |")
				continue
			}
			cell := fmt.Sprintf(t.Format, *v)
			if t.Met != nil {
				if t.Met(*v, steps[0]) {
					cell += " met"
				} else {
					cell += " **MISSED**"
				}
			}
			fmt.Fprintf(&b, " %s |", cell)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// thousands prints n with a comma every three digits.
func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
