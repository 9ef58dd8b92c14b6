// Package scaleplot draws the scale bench's figures (internal/scalebench)
// against the size of the simulated cluster: one PNG per figure, the pod
// count on a logarithmic x axis with each step's node count in its label,
// and the figure's target drawn as a dashed line.
package scaleplot

import "github.com/trellisnet/trellis/internal/scalebench"

// Series is one line of a figure: a value per step, nil where the step did
// not measure it.
type Series struct {
	Name  string
	Value func(s *scalebench.Step) *float64
}

// Target is the figure's goal, drawn as a horizontal line.
type Target struct {
	Label string
	Value float64
	// FromFirst takes the value from the first step that has one, for the
	// targets that say "must not grow" rather than give a number.
	FromFirst bool
}

// Figure is one PNG: its file name (without directory), title, y axis
// label, series and target.
type Figure struct {
	File   string
	Title  string
	YLabel string
	Series []Series
	Target Target
	// WithPolicies names the steps' NetworkPolicy count in the title.
	WithPolicies bool
}

// Figures are the scale bench's figures, in the order docs/benchmarks-scale.md
// shows them. The targets are the issue's: memory at 5,000 nodes / 100,000
// pods, the margin, idle CPU, the full resync (the list is reported beside
// it, without a target), routing and policy programming, and a transaction
// size that does not grow with the pod count.
func Figures() []Figure {
	return []Figure{
		{File: "scale-memory.png", Title: "Agent memory", YLabel: "MiB",
			Series: []Series{
				{"RSS", func(s *scalebench.Step) *float64 { return s.RSSMiB }},
				{"heap in use", func(s *scalebench.Step) *float64 { return s.HeapInuseMiB }},
			},
			Target: Target{Label: "target: RSS ≤ 150 MiB at 5,000 nodes / 100,000 pods", Value: 150}},
		{File: "scale-margin.png", Title: "Memory margin per pod added", YLabel: "KiB of RSS per pod",
			Series: []Series{{"margin", func(s *scalebench.Step) *float64 { return s.MarginKiBPerPod }}},
			Target: Target{Label: "target ≤ 5 KiB/pod", Value: 5}},
		{File: "scale-idle-cpu.png", Title: "Idle CPU (no API changes)", YLabel: "% of one core",
			Series: []Series{{"idle CPU", func(s *scalebench.Step) *float64 { return s.IdleCPUPercent }}},
			Target: Target{Label: "target ≤ 0.5 %", Value: 0.5}},
		{File: "scale-resync.png", Title: "Agent restart: API list and full resync", YLabel: "seconds",
			Series: []Series{
				{"list (informers synced)", func(s *scalebench.Step) *float64 { return s.ListSeconds }},
				{"resync (every controller synced once)", func(s *scalebench.Step) *float64 { return s.ResyncSeconds }},
			},
			Target: Target{Label: "target: resync ≤ 2 s", Value: 2}},
		{File: "scale-routing-cold.png", Title: "Routing: every peer programmed from a cold start", YLabel: "seconds",
			Series: []Series{{"cold start", func(s *scalebench.Step) *float64 { return s.RoutingColdSeconds }}},
			Target: Target{Label: "target ≤ 1 s", Value: 1}},
		{File: "scale-node-add.png", Title: "Routing: one Node added → on the node", YLabel: "ms",
			Series: []Series{
				{"p50", func(s *scalebench.Step) *float64 { return s.NodeAddP50Ms }},
				{"p99", func(s *scalebench.Step) *float64 { return s.NodeAddP99Ms }},
			},
			Target: Target{Label: "target: p99 ≤ 100 ms", Value: 100}},
		{File: "scale-policy.png", Title: "Policy programming", YLabel: "ms",
			Series: []Series{
				{"policy change p50", func(s *scalebench.Step) *float64 { return s.PolicyChangeP50Ms }},
				{"policy change p99", func(s *scalebench.Step) *float64 { return s.PolicyChangeP99Ms }},
				{"pod add p50", func(s *scalebench.Step) *float64 { return s.PodAddP50Ms }},
				{"pod add p99", func(s *scalebench.Step) *float64 { return s.PodAddP99Ms }},
			},
			Target: Target{Label: "target: p99 ≤ 250 ms", Value: 250}, WithPolicies: true},
		{File: "scale-tx-ops.png", Title: "nftables operations per policy transaction (one change)", YLabel: "operations",
			Series: []Series{{"ops per change", func(s *scalebench.Step) *float64 { return s.TxOpsPerChange }}},
			Target: Target{Label: "target: flat (the first step's value)", FromFirst: true}, WithPolicies: true},
	}
}
