// Command compare is `make compare`: it brings up a lab networked by
// Trellis and one networked by kube-router, one after the other, runs the
// same measurements against each (internal/compare) and writes the
// side-by-side report (docs/comparison.md) and the raw results (JSON).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/trellisnet/trellis/internal/atomicfile"
	"github.com/trellisnet/trellis/internal/compare"
	"github.com/trellisnet/trellis/internal/lab"
	"github.com/trellisnet/trellis/internal/lab/kuberouter"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}

func run() error {
	cache := os.Getenv("TRELLIS_CACHE")
	if cache == "" {
		cache = "/var/cache/trellis"
	}
	var (
		o                      compare.Options
		bin, out, skip, labs   string
		trellisName, peerName  string
		trellisVersion, logDir string
		rerender, note         string
	)
	flag.StringVar(&bin, "bin", "bin", "directory with trellis-lab and trellisctl")
	flag.StringVar(&o.E2EBin, "e2e", filepath.Join(cache, "e2e.test-v1.37.2", "e2e.test"), "the upstream e2e.test binary")
	flag.StringVar(&out, "out", "docs/comparison.md", "the report to write")
	flag.StringVar(&logDir, "log-dir", filepath.Join(cache, "logs", "compare-"+time.Now().UTC().Format("20060102-150405")), "logs and results.json")
	flag.StringVar(&skip, "skip", "", "comma-separated measurements to leave out (netpol,connectivity,bench,latency,memory), for trying the tool")
	flag.BoolVar(&o.Reuse, "reuse", false, "measure already running labs and leave them up (for trying the tool; the labs' up time is then not measured)")
	flag.StringVar(&rerender, "rerender", "", "write the report again from the results.json and JUnit reports in this log directory (no lab)")
	flag.StringVar(&note, "note", "", "a line added to the report's limits (what cut a run short)")
	flag.StringVar(&labs, "labs", "trellis,kube-router", "the CNIs to compare, in run order")
	flag.StringVar(&trellisName, "trellis-lab", "krtr", "lab name of the Trellis lab")
	flag.StringVar(&peerName, "peer-lab", "kr", "lab name of the kube-router lab")
	flag.StringVar(&trellisVersion, "trellis-version", "", "Trellis version shown in the table (default: git describe)")
	flag.StringVar(&o.NetpolFocus, "netpol-focus", "Netpol", "ginkgo focus of the NetworkPolicy specs")
	flag.StringVar(&o.NetpolSkip, "netpol-skip", `\[Feature:SCTPConnectivity\]`, "ginkgo skip of the NetworkPolicy specs")
	flag.DurationVar(&o.NetpolTimeout, "netpol-timeout", 30*time.Minute, "bound on one lab's NetworkPolicy specs")
	flag.DurationVar(&o.CtlTimeout, "ctl-timeout", 10*time.Minute, "bound on one trellisctl command")
	flag.DurationVar(&o.Latency.Interval, "probe-interval", 10*time.Millisecond, "time between latency probe starts")
	flag.DurationVar(&o.Latency.Timeout, "probe-timeout", 200*time.Millisecond, "timeout of one latency probe")
	flag.DurationVar(&o.Latency.FlipWithin, "flip-within", 60*time.Second, "a policy change not enforced by then counts as never flipped")
	flag.IntVar(&o.Latency.Repeats, "repeats", 20, "one-change latency samples")
	flag.IntVar(&o.Latency.Bursts, "bursts", 5, "100-policy latency samples")
	flag.IntVar(&o.Latency.BurstSize, "burst-size", 100, "policies per burst")
	flag.Parse()

	absBin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	o.LabBin, o.CtlBin = filepath.Join(absBin, "trellis-lab"), filepath.Join(absBin, "trellisctl")
	o.LogDir, o.Out = logDir, os.Stdout
	o.Skip = map[string]bool{}
	for _, s := range strings.Split(skip, ",") {
		if s != "" {
			o.Skip[s] = true
		}
	}
	if trellisVersion == "" {
		trellisVersion = gitOut("describe", "--tags", "--always", "--dirty")
	}
	// The commit measured is the one at the start: work may be committed
	// while the run goes on.
	commit := gitOut("rev-parse", "--short", "HEAD")
	for _, c := range strings.Split(labs, ",") {
		switch c {
		case lab.CNITrellis:
			o.Labs = append(o.Labs, compare.LabSpec{CNI: c, Name: trellisName, Version: trellisVersion})
		case lab.CNIKubeRouter:
			o.Labs = append(o.Labs, compare.LabSpec{CNI: c, Name: peerName, Version: kuberouter.Version, UpArgs: []string{"--cni", c}})
		default:
			return fmt.Errorf("-labs: unknown CNI %q", c)
		}
	}
	if rerender != "" {
		logDir = rerender
	}
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	start := time.Now()
	command := "make compare: hack/compare " + strings.Join(os.Args[1:], " ")
	var results []compare.Result
	var took time.Duration
	if rerender != "" {
		var err error
		if results, start, err = compare.Rerender(rerender, o.NetpolFocus); err != nil {
			return err
		}
		command = "make compare (hack/compare), this report written again from its logs in " + rerender + " by hack/compare " + strings.Join(os.Args[1:], " ")
	} else {
		results = compare.Run(ctx, o)
		took = time.Since(start)
		raw, err := json.MarshalIndent(results, "", "  ")
		if err != nil {
			return err
		}
		if err := atomicfile.Write(filepath.Join(logDir, "results.json"), raw, 0o644); err != nil {
			return err
		}
	}
	limits := compare.Limits()
	if note != "" {
		limits = append(limits, note)
	}
	rep := compare.Report{
		Date:    start,
		Command: command,
		Commit:  commit,
		Machine: machine(),
		Results: results,
		Method:  o.Method(),
		Limits:  limits,
	}
	if took > 0 {
		rep.Machine += fmt.Sprintf("; the whole run took %s", took.Round(time.Second))
	}
	var b strings.Builder
	if err := rep.Markdown(&b); err != nil {
		return err
	}
	if err := atomicfile.Write(out, []byte(b.String()), 0o644); err != nil {
		return err
	}
	fmt.Printf("compare: wrote %s and %s/results.json in %s\n", out, logDir, took.Round(time.Second))
	return ctx.Err()
}

func gitOut(args ...string) string {
	out, err := exec.Command("git", args...).Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func machine() string {
	out, err := exec.Command("uname", "-r").Output()
	if err != nil {
		return "unknown kernel"
	}
	return fmt.Sprintf("%d CPUs, kernel %s", runtime.NumCPU(), strings.TrimSpace(string(out)))
}
