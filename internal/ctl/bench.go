package ctl

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellisnet/trellis/internal/dpbench"
)

// BenchOptions are `trellisctl bench`'s flags.
type BenchOptions struct {
	Runs       int
	Seconds    int
	Nodes      []string
	Congestion []string
	Image      string
	PodTimeout time.Duration
	Output     string
}

var congestionName = regexp.MustCompile(`^[a-z0-9_]{1,15}$`)

// Validate returns every problem with the flags, joined (exit 2).
func (b BenchOptions) Validate() error {
	var errs []string
	if b.Runs < 1 || b.Runs > 100 {
		errs = append(errs, fmt.Sprintf("--runs %d: want 1 to 100", b.Runs))
	}
	if b.Seconds < 1 || b.Seconds > 300 {
		errs = append(errs, fmt.Sprintf("--seconds %d: want 1 to 300", b.Seconds))
	}
	if len(b.Nodes) != 0 && (len(b.Nodes) != 2 || b.Nodes[0] == b.Nodes[1] || b.Nodes[0] == "" || b.Nodes[1] == "") {
		errs = append(errs, fmt.Sprintf("--nodes %s: want two different nodes, SERVER,CLIENT", strings.Join(b.Nodes, ",")))
	}
	seen := map[string]bool{}
	for _, c := range b.Congestion {
		if !congestionName.MatchString(c) || seen[c] {
			errs = append(errs, fmt.Sprintf("--congestion %q: want distinct TCP congestion control names (bbr, cubic, ...)", c))
		}
		seen[c] = true
	}
	if b.Image == "" {
		errs = append(errs, "--image must not be empty")
	}
	if b.PodTimeout <= 0 {
		errs = append(errs, "--pod-timeout must be positive")
	}
	if err := ValidateOutput(b.Output, OutputJSON, OutputYAML); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		return Usage("%s", strings.Join(errs, "; "))
	}
	return nil
}

func benchCommand(o *Options) *cobra.Command {
	b := BenchOptions{}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the pod network against the nodes' own network (pod→pod ÷ node→node over the same two nodes)",
		Long: `bench deploys a namespace with iperf3 and request/response servers and clients, as pods
and as hostNetwork pods, on two nodes; it runs TCP throughput (per congestion control) and
1-byte TCP request/response, pod→pod and node→node interleaved, and prints medians, min–max
and the ratio pod ÷ node. The namespace is deleted on exit, error or Ctrl-C.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := b.Validate(); err != nil {
				return err
			}
			return o.runBench(cmd.Context(), b)
		},
	}
	f := cmd.Flags()
	f.IntVar(&b.Runs, "runs", 5, "interleaved runs per figure (pod, node, pod, node, ...)")
	f.IntVar(&b.Seconds, "seconds", 5, "duration of each run")
	f.StringSliceVar(&b.Nodes, "nodes", nil, "SERVER,CLIENT: the two nodes (default: the first two Ready, schedulable nodes by name)")
	f.StringSliceVar(&b.Congestion, "congestion", []string{"bbr", "cubic"}, "TCP congestion controls to measure throughput with (one figure each)")
	f.StringVar(&b.Image, "image", dpbench.Image, "the benchmark image (make bench-image); pulled only if not present on the nodes")
	f.DurationVar(&b.PodTimeout, "pod-timeout", 2*time.Minute, "how long to wait for the benchmark pods to run")
	f.StringVarP(&b.Output, "output", "o", "", "output format: json or yaml (default: a table)")
	return cmd
}

func (o *Options) runBench(ctx context.Context, b BenchOptions) error {
	cs, err := o.Clientset()
	if err != nil {
		return err
	}
	server, client, err := benchNodes(ctx, cs, b.Nodes)
	if err != nil {
		return err
	}
	d := &benchDeployment{o: o, cs: cs, image: b.Image, server: server, client: client, progress: o.ErrOut}
	defer d.cleanup()
	if err := d.deploy(ctx, b.PodTimeout); err != nil {
		return err
	}
	rep, err := measureBench(ctx, d, BenchConfig{Runs: b.Runs, Seconds: b.Seconds, Congestion: b.Congestion}, o.progressf)
	if err != nil {
		return err
	}
	rep.ServerNode, rep.ClientNode, rep.Image = server, client, b.Image
	if b.Output != OutputTable {
		return PrintStructured(o.Out, b.Output, rep)
	}
	return printBench(o.Out, rep)
}

func (o *Options) progressf(format string, a ...any) {
	if o.ErrOut != nil {
		fmt.Fprintf(o.ErrOut, format+"\n", a...)
	}
}
