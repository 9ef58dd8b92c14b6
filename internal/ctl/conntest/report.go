// Package conntest is `trellisctl connectivity test`: it deploys probe pods
// in a namespace of its own, runs scenario families against them (pod to
// pod, Services, nodes, external, DNS, path MTU, NetworkPolicy) and reports
// one verdict per scenario. It works against any cluster; on a Trellis
// cluster, a blocked connection is also confirmed as a policy drop by the
// agents' deny counters (DropConfirmer).
package conntest

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"sync"
	"time"
)

// Verdict is a scenario's outcome.
type Verdict string

// Verdicts.
const (
	Pass Verdict = "PASS"
	Fail Verdict = "FAIL"
	Skip Verdict = "SKIP"
)

// Outcome is what a scenario's check returns: a verdict and why.
type Outcome struct {
	Verdict Verdict
	Reason  string
}

// Passf, Failf and Skipf build outcomes.
func Passf(format string, a ...any) Outcome { return Outcome{Pass, fmt.Sprintf(format, a...)} }

// Failf is a failed outcome.
func Failf(format string, a ...any) Outcome { return Outcome{Fail, fmt.Sprintf(format, a...)} }

// Skipf is a skipped outcome.
func Skipf(format string, a ...any) Outcome { return Outcome{Skip, fmt.Sprintf(format, a...)} }

// Scenario is one named check of a family.
type Scenario struct {
	// Name is FAMILY/...; --test matches it.
	Name   string
	Family string
	Run    func(ctx context.Context, e *Env) Outcome
}

// Result is one scenario's line of the report.
type Result struct {
	Name     string  `json:"name"`
	Family   string  `json:"family"`
	Verdict  Verdict `json:"verdict"`
	Reason   string  `json:"reason"`
	Seconds  float64 `json:"seconds"`
	duration time.Duration
}

// Summary counts the verdicts.
type Summary struct {
	Passed  int `json:"passed"`
	Failed  int `json:"failed"`
	Skipped int `json:"skipped"`
}

// Report is `trellisctl connectivity test -o json`.
type Report struct {
	Namespace string   `json:"namespace"`
	Nodes     []string `json:"nodes"`
	// Trellis says whether blocked connections were confirmed by the
	// agents' policy deny counters.
	Trellis bool     `json:"trellis"`
	Results []Result `json:"results"`
	Summary Summary  `json:"summary"`
	// Seconds is the run from the start to the last scenario's end
	// (deployment included, cleanup not).
	Seconds float64 `json:"seconds"`
}

// Select keeps the scenarios whose name matches re (all when re is nil),
// in their order.
func Select(all []Scenario, re *regexp.Regexp) []Scenario {
	var out []Scenario
	for _, s := range all {
		if re == nil || re.MatchString(s.Name) {
			out = append(out, s)
		}
	}
	return out
}

// Summarize counts results' verdicts.
func Summarize(results []Result) Summary {
	var s Summary
	for _, r := range results {
		switch r.Verdict {
		case Pass:
			s.Passed++
		case Fail:
			s.Failed++
		default:
			s.Skipped++
		}
	}
	return s
}

// OK is whether no scenario failed.
func (s Summary) OK() bool { return s.Failed == 0 }

// String is the summary line.
func (s Summary) String() string {
	return fmt.Sprintf("%d passed, %d failed, %d skipped", s.Passed, s.Failed, s.Skipped)
}

// Line is a result's line in the text output.
func (r Result) Line() string {
	return fmt.Sprintf("%-4s  %-38s %5.1fs  %s", r.Verdict, r.Name, r.Seconds, r.Reason)
}

// RunAll runs scenarios on e, at most parallel at once, and returns their
// results in the scenarios' order. onDone (may be nil) sees each result as
// it completes, serialised. A scenario that panics is not caught: scenarios
// return outcomes. A cancelled ctx turns the scenarios not yet finished
// into failures that say so.
func RunAll(ctx context.Context, e *Env, scenarios []Scenario, parallel int, onDone func(Result)) []Result {
	results := make([]Result, len(scenarios))
	sem := make(chan struct{}, max(parallel, 1))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, s := range scenarios {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			start := time.Now()
			var o Outcome
			if ctx.Err() != nil {
				o = Failf("not run: %v", context.Cause(ctx))
			} else {
				o = s.Run(ctx, e)
				if ctx.Err() != nil && o.Verdict != Pass {
					o = Failf("interrupted: %v (%s)", context.Cause(ctx), o.Reason)
				}
			}
			d := time.Since(start)
			r := Result{Name: s.Name, Family: s.Family, Verdict: o.Verdict, Reason: o.Reason,
				Seconds: float64(d.Milliseconds()) / 1000, duration: d}
			mu.Lock()
			defer mu.Unlock()
			results[i] = r
			if onDone != nil {
				onDone(r)
			}
		}()
	}
	wg.Wait()
	return results
}

// PrintSummary writes the final lines of the text output.
func PrintSummary(w io.Writer, rep *Report) {
	fmt.Fprintf(w, "\n%s in %.1fs", rep.Summary, rep.Seconds)
	if rep.Summary.Failed > 0 {
		fmt.Fprint(w, "; failed:")
		for _, r := range rep.Results {
			if r.Verdict == Fail {
				fmt.Fprint(w, " ", r.Name)
			}
		}
	}
	fmt.Fprintln(w)
}
