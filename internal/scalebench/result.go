// Package scalebench holds what `make bench-scale` measures at each step of
// a simulated cluster's growth, in the form the bench writes (JSON) and the
// plotter (tools/benchplot) and docs read. It is data only: the bench that
// fills it lives in test/e2e/scale.
package scalebench

import "time"

// Result is one run of the scale bench.
type Result struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Command  string    `json:"command"`           // how to reproduce it
	Machine  string    `json:"machine,omitempty"` // cores, memory, load average at start
	Steps    []Step    `json:"steps"`
	// Stopped says why the bench stopped before its last planned step,
	// empty when it reached it.
	Stopped string `json:"stopped,omitempty"`
}

// Step is the cluster at one size and what one real agent on a real lab
// node costs and does at that size. A figure that was not measured is nil
// (never zero), with the reason in Notes.
type Step struct {
	Nodes    int `json:"nodes"`    // Nodes in the API, the lab's real ones included
	Pods     int `json:"pods"`     // Pods in the API with addresses
	Policies int `json:"policies"` // NetworkPolicies in the API

	CreateSeconds float64 `json:"createSeconds"` // creating this step's new API objects

	// Memory of the agent after the step settled.
	RSSMiB       *float64 `json:"rssMiB,omitempty"`
	HeapInuseMiB *float64 `json:"heapInuseMiB,omitempty"`
	// KiB of RSS per pod added since the previous step (the margin).
	MarginKiBPerPod *float64 `json:"marginKiBPerPod,omitempty"`

	// Idle CPU over IdleSeconds with no API changes, percent of one core.
	IdleCPUPercent *float64 `json:"idleCPUPercent,omitempty"`
	IdleSeconds    float64  `json:"idleSeconds,omitempty"`

	// Agent restart: process start → every informer cache synced (the API
	// list), and informers synced → every controller synced once (the
	// full resync, excluding the list).
	ListSeconds   *float64 `json:"listSeconds,omitempty"`
	ResyncSeconds *float64 `json:"resyncSeconds,omitempty"`

	// Routing: every peer programmed from a cold start (no Trellis routes
	// in the kernel), and one Node added → on the node, over NodeAddSamples.
	RoutingColdSeconds *float64 `json:"routingColdSeconds,omitempty"`
	NodeAddP50Ms       *float64 `json:"nodeAddP50Ms,omitempty"`
	NodeAddP99Ms       *float64 `json:"nodeAddP99Ms,omitempty"`
	NodeAddSamples     int      `json:"nodeAddSamples,omitempty"`

	// Policy: one policy change → enforcement observed by a probe, and a
	// pod add (a peer set changes) → in the table, over their samples.
	PolicyChangeP50Ms   *float64 `json:"policyChangeP50Ms,omitempty"`
	PolicyChangeP99Ms   *float64 `json:"policyChangeP99Ms,omitempty"`
	PolicyChangeSamples int      `json:"policyChangeSamples,omitempty"`
	PodAddP50Ms         *float64 `json:"podAddP50Ms,omitempty"`
	PodAddP99Ms         *float64 `json:"podAddP99Ms,omitempty"`
	PodAddSamples       int      `json:"podAddSamples,omitempty"`
	// nftables operations per committed policy transaction for one change
	// (mean over the samples): must not grow with the number of pods.
	TxOpsPerChange *float64 `json:"txOpsPerChange,omitempty"`

	// Per-packet cost: TCP throughput and connection rate between two real
	// pods isolated by policies whose peer sets hold the step's addresses ÷
	// the same pods selected by no policy, over PerPacketRounds interleaved
	// rounds (the spread of the per-round ratios).
	ThroughputRatio *Spread `json:"throughputRatio,omitempty"`
	ConnRateRatio   *Spread `json:"connRateRatio,omitempty"`
	PerPacketRounds int     `json:"perPacketRounds,omitempty"`

	Notes []string `json:"notes,omitempty"`
}

// Spread is the median, minimum and maximum of a figure's samples.
type Spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}
