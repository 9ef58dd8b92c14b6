package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sync"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/ctl/conntest"
)

// connectivityOptions are `connectivity test`'s flags.
type connectivityOptions struct {
	output         string
	test           string
	image          string
	external       string
	parallel       int
	execParallel   int
	readyTimeout   time.Duration
	probeTimeout   time.Duration
	blockTimeout   time.Duration
	enforceTimeout time.Duration
	cleanupTimeout time.Duration
}

func connectivityCommand(o *Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "connectivity",
		Short: "Check the pod network end to end",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(connectivityTestCommand(o))
	return cmd
}

func connectivityTestCommand(o *Options) *cobra.Command {
	c := &connectivityOptions{}
	cmd := &cobra.Command{
		Use:   "test",
		Short: "Deploy probe pods in a namespace of their own and run the connectivity scenarios (docs/trellisctl.md)",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return o.connectivityTest(cmd.Context(), c) },
	}
	f := cmd.Flags()
	f.StringVarP(&c.output, "output", "o", "", "output format: json or yaml (default: one line per scenario)")
	f.StringVar(&c.test, "test", "", "run only the scenarios whose name matches this regular expression")
	f.StringVar(&c.image, "image", conntest.DefaultImage, "the agnhost image of the probe pods (pulled if not present)")
	f.StringVar(&c.external, "external-target", "", "HOST:PORT outside the cluster that pods must reach over TCP (external/tcp is skipped without it)")
	f.IntVar(&c.parallel, "parallel", 24, "how many scenarios run at once")
	f.IntVar(&c.execParallel, "exec-parallel", 8, "how many probes (execs through the API server) run at once")
	f.DurationVar(&c.readyTimeout, "ready-timeout", 2*time.Minute, "how long the probe pods may take to run")
	f.DurationVar(&c.probeTimeout, "probe-timeout", 2*time.Second, "timeout of one try of a connection that must succeed (3 tries)")
	f.DurationVar(&c.blockTimeout, "block-timeout", time.Second, "timeout of a connection that must be blocked")
	f.DurationVar(&c.enforceTimeout, "enforce-timeout", 20*time.Second, "how long a NetworkPolicy may take to be enforced")
	f.DurationVar(&c.cleanupTimeout, "cleanup-timeout", time.Minute, "how long to wait for the test's namespaces to be deleted")
	return cmd
}

func (o *Options) connectivityTest(ctx context.Context, c *connectivityOptions) (err error) {
	start := time.Now()
	if err := ValidateOutput(c.output, OutputJSON, OutputYAML); err != nil {
		return err
	}
	var re *regexp.Regexp
	if c.test != "" {
		if re, err = regexp.Compile(c.test); err != nil {
			return Usage("--test: %v", err)
		}
	}
	scenarios := conntest.Select(conntest.Scenarios(), re)
	if len(scenarios) == 0 {
		return Usage("--test %q matches no scenario", c.test)
	}
	cfg, err := o.RESTConfig()
	if err != nil {
		return err
	}
	cs, err := o.Clientset()
	if err != nil {
		return err
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing nodes: %w", err)
	}
	names, ips, why := conntest.SchedulableNodes(nodes.Items)
	if len(names) == 0 {
		return Failed("no schedulable Ready node for the probe pods: %v", why)
	}
	id := conntest.NewRunID()
	e := &conntest.Env{CS: cs, Config: cfg, NS: "trellis-conn-" + id, PeerNS: "trellis-conn-" + id + "-peer",
		Nodes: names, NodeIPs: ips, External: c.external, Slots: make(chan struct{}, max(c.execParallel, 1)),
		ProbeTimeout: c.probeTimeout, ProbeAttempts: 3, BlockTimeout: c.blockTimeout, EnforceTimeout: c.enforceTimeout}
	if _, err := cs.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{}); err == nil {
		e.DNSService = "kube-system/kube-dns"
	} else if !apierrors.IsNotFound(err) {
		return fmt.Errorf("looking for cluster DNS: %w", err)
	}
	rep := &conntest.Report{Namespace: e.NS, Nodes: names}
	if rep.Trellis, err = o.TrellisInstalled(ctx); err != nil {
		return err
	}
	if rep.Trellis {
		e.Confirm = &conntest.AgentCounters{Get: o.agentGetter(), MaxAge: 500 * time.Millisecond}
	}
	text := c.output == OutputTable
	progress := io.Discard
	if text {
		progress = o.Out
	}
	fmt.Fprintf(progress, "Deploying probe pods in namespaces %s and %s on nodes %v\n", e.NS, e.PeerNS, names)

	dep, derr := conntest.Deploy(ctx, e, c.image, id, c.readyTimeout)
	defer func() {
		// A fresh context: ctx may be cancelled (Ctrl-C, SIGTERM).
		cstart := time.Now()
		cerr := conntest.Cleanup(context.Background(), e, dep, c.cleanupTimeout)
		if cerr == nil {
			fmt.Fprintf(progress, "Deleted namespaces %s and %s in %.1fs\n", e.NS, e.PeerNS, time.Since(cstart).Seconds())
		} else {
			fmt.Fprintf(o.ErrOut, "trellisctl: cleanup: %v\n", cerr)
			if err == nil {
				err = cerr
			}
		}
	}()
	if derr != nil {
		var se *conntest.SetupError
		if errors.As(derr, &se) {
			if se.BadInput {
				return Usage("%v", se)
			}
			return Failed("%v", se)
		}
		return derr
	}
	fmt.Fprintf(progress, "Pods running after %.1fs; running %d scenarios\n\n", time.Since(start).Seconds(), len(scenarios))
	rep.Results = conntest.RunAll(ctx, e, scenarios, c.parallel, func(r conntest.Result) {
		fmt.Fprintln(progress, r.Line())
	})
	rep.Summary = conntest.Summarize(rep.Results)
	rep.Seconds = time.Since(start).Seconds()
	if text {
		conntest.PrintSummary(o.Out, rep)
	} else if err := PrintStructured(o.Out, c.output, rep); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted: %w", context.Cause(ctx))
	}
	if !rep.Summary.OK() {
		return Failed("%d of %d scenarios failed", rep.Summary.Failed, len(rep.Results))
	}
	return nil
}

// agentGetter reads an agent API path on a node, finding the node's agent
// pod once.
func (o *Options) agentGetter() conntest.AgentGetter {
	var mu sync.Mutex
	var pods map[string]*corev1.Pod
	return func(ctx context.Context, node, path string, w io.Writer) error {
		mu.Lock()
		if pods == nil {
			found, err := o.AgentPods(ctx)
			if err != nil {
				mu.Unlock()
				return err
			}
			pods = found
		}
		p := pods[node]
		mu.Unlock()
		if p == nil {
			return fmt.Errorf("no agent pod on node %s", node)
		}
		return o.AgentGet(ctx, p, path, w)
	}
}
