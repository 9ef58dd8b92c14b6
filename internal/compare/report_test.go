package compare

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestPercentileIsNearestRank(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 20; i++ {
		s = append(s, time.Duration(21-i)*time.Millisecond)
	}
	if p, _ := Percentile(s, 50); p != 10*time.Millisecond {
		t.Errorf("p50 = %s, want 10ms", p)
	}
	if p, _ := Percentile(s, 99); p != 20*time.Millisecond {
		t.Errorf("p99 of 20 samples = %s, want the maximum 20ms", p)
	}
	if p, _ := Percentile([]time.Duration{7}, 50); p != 7 {
		t.Errorf("p50 of one sample = %s", p)
	}
	if _, ok := Percentile(nil, 50); ok {
		t.Error("a percentile of no samples")
	}
}

func sampleReport() Report {
	trellis := Result{CNI: "trellis", Version: "v0.1-abc", LabUp: 95 * time.Second,
		Netpol:       Suite{Passed: 41, Failed: 0},
		Connectivity: Suite{Passed: 30, Skipped: 1},
		Bench:        Bench{Ratios: map[string]float64{"tcp-bbr": 0.93, "rr": 0.88}},
		OneChange:    Latency{Samples: []time.Duration{30 * time.Millisecond, 40 * time.Millisecond, 50 * time.Millisecond}},
		Burst:        Latency{Samples: []time.Duration{200 * time.Millisecond}},
		Memory:       []NodeMem{{Node: "node1", Process: "trellis-agent", RSSKiB: 40960, PSSKiB: 30720}},
	}
	peer := Result{CNI: "kube-router", Version: "v2.1.0", LabUp: 80 * time.Second,
		Netpol:       Suite{Passed: 38, Failed: 3, FailedNames: []string{"Netpol should enforce ingress policy allowing any port traffic to a server on a specific protocol"}},
		Connectivity: Suite{Unavailable: "this trellisctl has no such command"},
		Bench:        Bench{Error: "iperf3 pod did not start"},
		OneChange:    Latency{Samples: []time.Duration{900 * time.Millisecond}, Timeouts: 2},
		Burst:        Latency{Timeouts: 5},
		Memory:       []NodeMem{{Node: "node1", Process: "kube-router", RSSKiB: 81920, PSSKiB: 71680}},
	}
	return Report{Date: time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC), Command: "make compare: hack/compare -x", Commit: "abc1234",
		Results: []Result{trellis, peer}, Method: []string{"method one"}, Limits: []string{"limit one"}}
}

func TestMarkdownPutsBothColumnsInOneTable(t *testing.T) {
	var b strings.Builder
	if err := sampleReport().Markdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"| Measure | trellis v0.1-abc | kube-router v2.1.0 |",
		"- Command: `make compare: hack/compare -x`", "- Date: 2026-12-02 07:00 UTC",
		"| 41/41 passed | **38/41 passed, 3 FAILED** |",
		"| 30/30 passed, 1 skipped | not available (this trellisctl has no such command) |",
		"tcp-bbr (pod→pod ÷ node→node) | 0.93 | **failed: iperf3 pod did not start** |",
		"| 40 ms / 50 ms (n=3) | 900 ms / 900 ms (n=1) **+2 never flipped** |",
		"| 200 ms / 200 ms (n=1) | **failed: no verdict flipped (5 timeouts)** |",
		"| 30.0 / 40.0 (trellis-agent) | 70.0 / 80.0 (kube-router) |",
		"### What failed with kube-router", "NetworkPolicy e2e failed: Netpol should enforce ingress",
		"## How each row is measured", "- method one", "- limit one",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "### What failed with trellis\n") {
		t.Errorf("a failure section for a CNI with no failures:\n%s", md)
	}
	// Every table row has a cell per column.
	for _, l := range strings.Split(md, "\n") {
		if strings.HasPrefix(l, "| ") && strings.Count(strings.ReplaceAll(l, "\\|", ""), "|") != 4 {
			t.Errorf("row with the wrong number of cells: %q", l)
		}
	}
}

func TestMarkdownShowsALabThatFailed(t *testing.T) {
	r := sampleReport()
	r.Results[1] = Result{CNI: "kube-router", Version: "v2.1.0", LabError: "trellis-lab up exited 1"}
	var b strings.Builder
	if err := r.Markdown(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "| 41/41 passed | **lab failed** |") ||
		!strings.Contains(b.String(), "the lab did not come up: trellis-lab up exited 1") {
		t.Errorf("lab failure not shown:\n%s", b.String())
	}
}

func TestParseJUnitCountsRunSpecs(t *testing.T) {
	data := []byte(`<?xml version="1.0"?><testsuites><testsuite name="Kubernetes e2e suite">
<testcase name="[SynchronizedBeforeSuite]" status="passed"></testcase>
<testcase name="Netpol a" status="passed"></testcase>
<testcase name="Netpol b" status="failed"><failure message="x">boom</failure></testcase>
<testcase name="Netpol SCTP c" status="skipped"><skipped message="skipped"></skipped></testcase>
<testcase name="Netpol d" status="passed"></testcase>
<testcase name="Services should work" status="skipped"><skipped message="skipped"></skipped></testcase>
<testcase name="Netpol e" status="interrupted"></testcase>
<testcase name="Netpol f" status="skipped"><skipped message="skipped - interrupted by user"></skipped></testcase>
</testsuite></testsuites>`)
	s, err := ParseJUnit(data, "Netpol")
	if err != nil {
		t.Fatal(err)
	}
	if s.Passed != 2 || s.Failed != 1 || s.Skipped != 1 || s.NotRun != 2 || len(s.FailedNames) != 1 || s.FailedNames[0] != "Netpol b" {
		t.Errorf("ParseJUnit = %+v", s)
	}
	if _, err := ParseJUnit(data, "("); err == nil {
		t.Error("a broken focus accepted")
	}
	if _, err := ParseJUnit([]byte("<testsuites"), "Netpol"); err == nil {
		t.Error("broken XML accepted")
	}
}

func TestParseScenariosAndRatios(t *testing.T) {
	doc := []byte(`{"results":[{"name":"pod-to-pod/tcp","verdict":"PASS"},{"name":"netpol/deny","verdict":"FAIL","reason":"connected"},{"name":"dns","verdict":"SKIP"}],"summary":{"passed":1,"failed":1}}`)
	s, err := ParseScenarios(doc)
	if err != nil {
		t.Fatal(err)
	}
	if s.Passed != 1 || s.Failed != 1 || s.Skipped != 1 || s.FailedNames[0] != "netpol/deny: connected" {
		t.Errorf("ParseScenarios = %+v", s)
	}
	lines := []byte("{\"scenario\":\"a\",\"status\":\"PASS\"}\n{\"scenario\":\"b\",\"status\":\"passed\"}\n")
	if s, err := ParseScenarios(lines); err != nil || s.Passed != 2 {
		t.Errorf("ParseScenarios(lines) = %+v, %v", s, err)
	}
	if _, err := ParseScenarios([]byte(`{"nothing":1}`)); err == nil {
		t.Error("JSON without verdicts accepted")
	}
	r, err := ParseBenchRatios([]byte(`{"runs":3,"results":[{"name":"TCP throughput (bbr)","ratio":0.91,"pod":{"median":9.1}},` +
		`{"name":"TCP throughput (cubic)","skipped":"cubic is not offered","ratio":0},{"name":"rr","podRatio":0.8}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if r["TCP throughput (bbr)"] != 0.91 || r["rr podRatio"] != 0.8 || len(r) != 2 {
		t.Errorf("ParseBenchRatios = %v", r)
	}
	if _, err := ParseBenchRatios([]byte(`{"median":1}`)); err == nil {
		t.Error("bench JSON without ratios accepted")
	}
}

func TestWaitVerdictTimesTheFirstFlippedProbe(t *testing.T) {
	start := time.Now()
	flip := start.Add(55 * time.Millisecond)
	var inFlight, maxInFlight atomic.Int32
	o := LatencyOptions{Interval: 5 * time.Millisecond, Timeout: 40 * time.Millisecond, FlipWithin: 5 * time.Second,
		Probe: func(ctx context.Context, timeout time.Duration) bool {
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for m := maxInFlight.Load(); n > m && !maxInFlight.CompareAndSwap(m, n); m = maxInFlight.Load() {
			}
			if time.Now().After(flip) {
				return true
			}
			time.Sleep(timeout) // a dropped SYN: the probe gives up
			return false
		}}
	at, err := o.waitVerdict(context.Background(), start, true)
	if err != nil {
		t.Fatal(err)
	}
	// The flip is seen by a probe started after it, not by the end of a
	// probe that began before it and waited for its timeout.
	if !at.After(flip) {
		t.Errorf("flip at 55ms reported at %s", at.Sub(start))
	}
	if maxInFlight.Load() < 2 {
		t.Errorf("at most %d probe in flight: probes must overlap, not wait for each other's timeout", maxInFlight.Load())
	}
	o.FlipWithin = 50 * time.Millisecond
	o.Probe = func(context.Context, time.Duration) bool { return false }
	if _, err := o.waitVerdict(context.Background(), time.Now(), true); err == nil {
		t.Error("a verdict that never flips was reported as flipped")
	}
}
