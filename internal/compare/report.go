// Package compare is `make compare`: the same measurements against a lab
// networked by Trellis and one networked by kube-router (the upstream
// NetworkPolicy e2e specs, `trellisctl connectivity test`, `trellisctl
// bench`, policy programming latency, agent memory), run in one invocation
// on one machine, and the report that puts them side by side
// (docs/comparison.md).
package compare

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Result is everything measured against one lab.
type Result struct {
	CNI     string `json:"cni"`     // "trellis" or "kube-router"
	Version string `json:"version"` // the CNI's version as deployed
	// LabError is set when the lab could not be brought up: every
	// measurement is then missing.
	LabError string        `json:"labError,omitempty"`
	LabUp    time.Duration `json:"labUp"`

	Netpol       Suite     `json:"netpol"`
	Connectivity Suite     `json:"connectivity"`
	Bench        Bench     `json:"bench"`
	OneChange    Latency   `json:"oneChange"`
	Burst        Latency   `json:"burst"`
	Memory       []NodeMem `json:"memory"`
	MemoryError  string    `json:"memoryError,omitempty"`
}

// Suite is the outcome of a pass/fail suite.
type Suite struct {
	// Unavailable says why the suite could not run ("" when it ran).
	Unavailable string `json:"unavailable,omitempty"`
	Error       string `json:"error,omitempty"` // it ran but did not finish
	Passed      int    `json:"passed"`
	Failed      int    `json:"failed"`
	Skipped     int    `json:"skipped"`
	// NotRun counts the specs an interrupted run never finished.
	NotRun      int           `json:"notRun,omitempty"`
	FailedNames []string      `json:"failedNames,omitempty"`
	Took        time.Duration `json:"took"`
}

// Bench holds the ratios `trellisctl bench` reports, by name.
type Bench struct {
	Unavailable string             `json:"unavailable,omitempty"`
	Error       string             `json:"error,omitempty"`
	Ratios      map[string]float64 `json:"ratios,omitempty"`
}

// Latency is a set of policy programming latency samples.
type Latency struct {
	Error   string          `json:"error,omitempty"`
	Samples []time.Duration `json:"samples"`
	// Timeouts counts changes whose verdict never flipped in time.
	Timeouts int `json:"timeouts"`
}

// NodeMem is one node's CNI agent memory.
type NodeMem struct {
	Node    string `json:"node"`
	Process string `json:"process"`
	RSSKiB  int64  `json:"rssKiB"`
	PSSKiB  int64  `json:"pssKiB"`
}

// Percentile returns the nearest-rank q-th percentile (0 < q <= 100) of
// samples, and false when there are none.
func Percentile(samples []time.Duration, q float64) (time.Duration, bool) {
	if len(samples) == 0 {
		return 0, false
	}
	s := append([]time.Duration(nil), samples...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := int(q/100*float64(len(s)) + 0.999999)
	rank = max(1, min(rank, len(s)))
	return s[rank-1], true
}

// Report is the side-by-side document.
type Report struct {
	Date    time.Time
	Command string
	Commit  string
	Machine string
	Results []Result
	// Method describes how each row was measured (one bullet each).
	Method []string
	Limits []string
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }

func (s Suite) cell() string {
	switch {
	case s.Unavailable != "":
		return "not available (" + s.Unavailable + ")"
	case s.Error != "" && s.Passed+s.Failed == 0:
		return "did not run: " + s.Error
	}
	c := fmt.Sprintf("%d/%d passed", s.Passed, s.Passed+s.Failed)
	if s.Skipped > 0 {
		c += fmt.Sprintf(", %d skipped", s.Skipped)
	}
	if s.Failed > 0 {
		c = fmt.Sprintf("**%s, %d FAILED**", c, s.Failed)
	}
	if s.NotRun > 0 {
		c += fmt.Sprintf(", **cut short: %d specs not run**", s.NotRun)
	}
	if s.Error != "" {
		c += " (" + s.Error + ")"
	}
	return c
}

func (l Latency) cell() string {
	p50, ok := Percentile(l.Samples, 50)
	if !ok {
		if l.Error != "" {
			return "**failed: " + l.Error + "**"
		}
		return fmt.Sprintf("**failed: no verdict flipped (%d timeouts)**", l.Timeouts)
	}
	p99, _ := Percentile(l.Samples, 99)
	c := fmt.Sprintf("%s / %s (n=%d)", ms(p50), ms(p99), len(l.Samples))
	if l.Timeouts > 0 {
		c += fmt.Sprintf(" **+%d never flipped**", l.Timeouts)
	}
	if l.Error != "" {
		c += " **(" + l.Error + ")**"
	}
	return c
}

func mib(kib int64) string { return fmt.Sprintf("%.1f", float64(kib)/1024) }

// rows builds the table: one row per measurement, one column per result.
func (r Report) rows() [][]string {
	var out [][]string
	add := func(name string, cell func(Result) string) {
		row := []string{name}
		for _, res := range r.Results {
			if res.LabError != "" {
				row = append(row, "**lab failed**")
				continue
			}
			row = append(row, cell(res))
		}
		out = append(out, row)
	}
	add("Lab up (3 nodes, 2 subnets)", func(x Result) string {
		if x.LabUp == 0 {
			return "not measured (lab reused)"
		}
		return fmt.Sprintf("%.0f s", x.LabUp.Seconds())
	})
	add("Upstream NetworkPolicy e2e specs (e2e.test v1.37.2, focus and skip as below)", func(x Result) string { return x.Netpol.cell() })
	add("`trellisctl connectivity test`", func(x Result) string { return x.Connectivity.cell() })
	names := map[string]bool{}
	for _, res := range r.Results {
		for n := range res.Bench.Ratios {
			names[n] = true
		}
	}
	benchNames := make([]string, 0, len(names))
	for n := range names {
		benchNames = append(benchNames, n)
	}
	sort.Strings(benchNames)
	if len(benchNames) == 0 {
		add("`trellisctl bench` (pod→pod ÷ node→node)", func(x Result) string { return x.Bench.cell("") })
	}
	for _, n := range benchNames {
		add("`trellisctl bench` "+n+" (pod→pod ÷ node→node)", func(x Result) string { return x.Bench.cell(n) })
	}
	add("Policy programming latency, one policy change (p50 / p99)", func(x Result) string { return x.OneChange.cell() })
	add("Policy programming latency, 100 policies at once (p50 / p99)", func(x Result) string { return x.Burst.cell() })
	nodes := map[string]bool{}
	for _, res := range r.Results {
		for _, m := range res.Memory {
			nodes[m.Node] = true
		}
	}
	nodeNames := make([]string, 0, len(nodes))
	for n := range nodes {
		nodeNames = append(nodeNames, n)
	}
	sort.Strings(nodeNames)
	for _, n := range nodeNames {
		add("Agent memory on "+n+", PSS / RSS MiB", func(x Result) string {
			for _, m := range x.Memory {
				if m.Node == n {
					return fmt.Sprintf("%s / %s (%s)", mib(m.PSSKiB), mib(m.RSSKiB), m.Process)
				}
			}
			if x.MemoryError != "" {
				return "**not measured: " + x.MemoryError + "**"
			}
			return "**no agent process found**"
		})
	}
	return out
}

func (b Bench) cell(name string) string {
	switch {
	case b.Unavailable != "":
		return "not available (" + b.Unavailable + ")"
	case b.Error != "":
		return "**failed: " + b.Error + "**"
	}
	v, ok := b.Ratios[name]
	if !ok {
		return "**not reported**"
	}
	return fmt.Sprintf("%.2f", v)
}

func esc(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "|", "\\|"), "\n", " ") }

// Markdown writes the report (docs/comparison.md).
func (r Report) Markdown(w io.Writer) error {
	var b strings.Builder
	b.WriteString("# Trellis and kube-router side by side\n\n")
	b.WriteString("Generated by `make compare` (hack/compare, internal/compare); do not edit by hand.\n\n")
	fmt.Fprintf(&b, "- Command: `%s`\n", r.Command)
	fmt.Fprintf(&b, "- Date: %s\n", r.Date.UTC().Format("2006-01-02 15:04 MST"))
	if r.Commit != "" {
		fmt.Fprintf(&b, "- Trellis commit: %s\n", r.Commit)
	}
	if r.Machine != "" {
		fmt.Fprintf(&b, "- Machine: %s\n", r.Machine)
	}
	b.WriteString("\n| Measure |")
	sep := "|---|"
	for _, res := range r.Results {
		fmt.Fprintf(&b, " %s %s |", res.CNI, res.Version)
		sep += "---|"
	}
	b.WriteString("\n" + sep + "\n")
	for _, row := range r.rows() {
		b.WriteString("|")
		for _, c := range row {
			b.WriteString(" " + esc(c) + " |")
		}
		b.WriteString("\n")
	}
	for _, res := range r.Results {
		var lines []string
		if res.LabError != "" {
			lines = append(lines, "the lab did not come up: "+res.LabError)
		}
		for _, s := range []struct {
			name string
			s    Suite
		}{{"NetworkPolicy e2e", res.Netpol}, {"connectivity test", res.Connectivity}} {
			for _, f := range s.s.FailedNames {
				lines = append(lines, s.name+" failed: "+f)
			}
		}
		if res.Bench.Error != "" {
			lines = append(lines, "bench: "+res.Bench.Error)
		}
		if len(lines) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n### What failed with %s\n\n", res.CNI)
		for _, l := range lines {
			b.WriteString("- " + esc(l) + "\n")
		}
	}
	if len(r.Method) > 0 {
		b.WriteString("\n## How each row is measured\n\n")
		for _, m := range r.Method {
			b.WriteString("- " + m + "\n")
		}
	}
	if len(r.Limits) > 0 {
		b.WriteString("\n## Versions and the lab's limits\n\n")
		for _, m := range r.Limits {
			b.WriteString("- " + m + "\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
