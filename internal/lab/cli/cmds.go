package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellisnet/trellis/internal/lab/controlplane"
	"github.com/trellisnet/trellis/internal/lab/kube"
	"github.com/trellisnet/trellis/internal/lab/node"
	"github.com/trellisnet/trellis/internal/lab/probe"
	"github.com/trellisnet/trellis/internal/lab/proc"
)

func probeCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "probe NS/POD TARGET PORT/PROTO",
		Short: "Connect from inside a pod's network namespace; exit 0 = answered, 1 = no answer, 2 = usage error",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 3 {
				return &ExitError{Code: 2, Err: errors.New("usage: trellis-lab probe NS/POD TARGET PORT/PROTO")}
			}
			port, proto, err := probe.ParsePortProto(args[2])
			if err != nil {
				return &ExitError{Code: 2, Err: err}
			}
			cs, err := g.client()
			if err != nil {
				return &ExitError{Code: 2, Err: err}
			}
			ok, err := probe.Prober{CS: cs, Timeout: timeout}.Probe(cmd.Context(), args[0], args[1], port, proto)
			if err != nil {
				return &ExitError{Code: 2, Err: err}
			}
			if !ok {
				fmt.Fprintf(cmd.OutOrStdout(), "%s -> %s %s: no answer\n", args[0], args[1], args[2])
				return &ExitError{Code: 1}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s -> %s %s: answered\n", args[0], args[1], args[2])
			return nil
		},
	}
	c.Flags().DurationVar(&timeout, "timeout", 2*time.Second, "probe timeout")
	return c
}

func matrixCmd(g *globals) *cobra.Command {
	var portProto, selector, expect string
	var namespaces []string
	c := &cobra.Command{
		Use:   "matrix",
		Short: "All-pairs connectivity table between running pods ('.' reached, 'X' not)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			port, proto, err := probe.ParsePortProto(portProto)
			if err != nil {
				return &ExitError{Code: 2, Err: err}
			}
			cs, err := g.client()
			if err != nil {
				return err
			}
			var pods []string
			nsList := namespaces
			if len(nsList) == 0 {
				all, err := cs.CoreV1().Namespaces().List(cmd.Context(), metav1.ListOptions{})
				if err != nil {
					return err
				}
				for _, n := range all.Items {
					if !strings.HasPrefix(n.Name, "kube-") {
						nsList = append(nsList, n.Name)
					}
				}
			}
			for _, ns := range nsList {
				list, err := cs.CoreV1().Pods(ns).List(cmd.Context(), metav1.ListOptions{LabelSelector: selector})
				if err != nil {
					return err
				}
				for _, p := range list.Items {
					if kube.PodReady(&p) && !p.Spec.HostNetwork {
						pods = append(pods, p.Namespace+"/"+p.Name)
					}
				}
			}
			sort.Strings(pods)
			if len(pods) == 0 {
				return errors.New("no running pods to probe")
			}
			m, err := probe.Prober{CS: cs, Timeout: time.Second}.ProbeAll(cmd.Context(), pods, port, proto, 8)
			if err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %v\n", err)
			}
			var exp *probe.Matrix
			switch expect {
			case "":
			case "all":
				exp = probe.NewMatrix(pods, true)
			case "none":
				exp = probe.NewMatrix(pods, false)
			default:
				return &ExitError{Code: 2, Err: fmt.Errorf("--expect must be all or none, got %q", expect)}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "connectivity on %s between %d pods ('.' = reached, 'X' = not):\n", portProto, len(pods))
			m.Print(cmd.OutOrStdout(), exp)
			if exp != nil {
				if d := exp.Diff(m); d > 0 {
					return &ExitError{Code: 1, Err: fmt.Errorf("%d cells differ from the expected matrix (marked !)", d)}
				}
			}
			return nil
		},
	}
	c.Flags().StringVar(&portProto, "port", "80/tcp", "PORT/PROTO to probe")
	c.Flags().StringSliceVarP(&namespaces, "namespace", "n", nil, "namespaces (default: all but kube-*)")
	c.Flags().StringVarP(&selector, "selector", "l", "", "pod label selector")
	c.Flags().StringVar(&expect, "expect", "", "expected matrix: all or none (marks and counts differences)")
	return c
}

func nodeCmd(g *globals, verb string) *cobra.Command {
	return &cobra.Command{
		Use:   verb + " NODE",
		Short: map[string]string{"stop-node": "Stop a node: its kubelet, containerd, agent and pods (fault injection)", "start-node": "Start a stopped node again"}[verb],
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := g.stateWithNode(args[0])
			if err != nil {
				return err
			}
			p := g.paths()
			pr, _ := st.Process("node/" + args[0])
			running := pr != nil && proc.Alive(pr.PID, "__node")
			if verb == "stop-node" {
				if !running {
					return fmt.Errorf("node %s is not running", args[0])
				}
				_ = syscall.Kill(pr.PID, syscall.SIGTERM)
				deadline := time.Now().Add(20 * time.Second)
				for proc.Alive(pr.PID, "__node") && time.Now().Before(deadline) {
					time.Sleep(100 * time.Millisecond)
				}
				if err := proc.KillCgroup(pr.Group, 2*time.Second); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "node %s stopped\n", args[0])
				return nil
			}
			if running {
				return fmt.Errorf("node %s is already running", args[0])
			}
			spec, err := node.LoadSpec(filepath.Join(p.Node(args[0]), "node.json"))
			if err != nil {
				return err
			}
			if err := node.Start(p, st, filepath.Join(p.Bin(), "trellis-lab"), spec, false); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "node %s starting\n", args[0])
			return nil
		},
	}
}

func apiserverCmd(g *globals, verb string) *cobra.Command {
	return &cobra.Command{
		Use:   verb,
		Short: map[string]string{"stop-apiserver": "Stop the API server (fault injection)", "start-apiserver": "Start the API server again"}[verb],
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := g.state()
			if err != nil {
				return err
			}
			pr, ok := st.Process("kube-apiserver")
			if !ok {
				return errors.New("the lab has no API server record")
			}
			alive := proc.Alive(pr.PID, "kube-apiserver")
			if verb == "stop-apiserver" {
				if !alive {
					return errors.New("the API server is not running")
				}
				proc.StopPID(pr.PID, "kube-apiserver", 10*time.Second)
				fmt.Fprintln(cmd.OutOrStdout(), "API server stopped")
				return nil
			}
			if alive {
				return errors.New("the API server is already running")
			}
			p := g.paths()
			c := controlplane.Component{Name: pr.Name, Group: pr.Group, Netns: pr.Netns, Argv: pr.Argv}
			if err := controlplane.StartComponent(p, st, filepath.Join(p.Bin(), "trellis-lab"), c); err != nil {
				return err
			}
			cs, _, err := kube.Client(p.AdminKubeconfig())
			if err != nil {
				return err
			}
			if err := kube.WaitAPIServer(cmd.Context(), cs, 60*time.Second); err != nil {
				return fmt.Errorf("API server restarted but is not ready: %w", err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "API server ready")
			return nil
		},
	}
}

func logsCmd(g *globals) *cobra.Command {
	var tail int
	var previous bool
	c := &cobra.Command{
		Use:   "logs NODE|control-plane [COMPONENT]",
		Short: "Print a component's log (node components: containerd, kubelet, kube-proxy, trellis-agent (its pod's log in DaemonSet mode), supervisor, cni)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := g.state()
			if err != nil {
				return err
			}
			p := g.paths()
			comp := "kubelet"
			if len(args) == 2 {
				comp = args[1]
			}
			var file string
			if args[0] == "control-plane" {
				if len(args) == 1 {
					comp = "kube-apiserver"
				}
				file = p.LogFile(comp)
			} else {
				if _, err := st.Topology.Node(args[0]); err != nil {
					return err
				}
				if comp == "trellis-agent" && st.Install.AgentPod() {
					return agentLogs(cmd, g, args[0], tail, previous)
				}
				file = filepath.Join(p.Node(args[0]), "logs", comp+".log")
				if comp == "cni" {
					file = filepath.Join(p.Node(args[0]), "fs", "var-log-trellis", "cni.log")
				}
			}
			data, err := os.ReadFile(file)
			if err != nil {
				return fmt.Errorf("no log for %s %s: %w", args[0], comp, err)
			}
			lines := strings.SplitAfter(string(data), "\n")
			if tail > 0 && len(lines) > tail {
				lines = lines[len(lines)-tail:]
			}
			fmt.Fprint(cmd.OutOrStdout(), strings.Join(lines, ""))
			return nil
		},
	}
	c.Flags().IntVar(&tail, "tail", 200, "lines from the end (0 = all)")
	c.Flags().BoolVar(&previous, "previous", false, "trellis-agent in DaemonSet mode: the previous container's log (after a crash)")
	return c
}

func internalCmds() []*cobra.Command {
	var group, netns, spec, listen, target string
	var newMount bool
	ex := &cobra.Command{
		Use: "__exec", Hidden: true,
		RunE: func(_ *cobra.Command, args []string) error {
			return proc.ExecInto(group, netns, newMount, args)
		},
	}
	ex.Flags().StringVar(&group, "cgroup", "", "")
	ex.Flags().StringVar(&netns, "netns", "", "")
	ex.Flags().BoolVar(&newMount, "new-mount-ns", false, "")
	sup := &cobra.Command{
		Use: "__node", Hidden: true,
		RunE: func(_ *cobra.Command, _ []string) error {
			s, err := node.LoadSpec(spec)
			if err != nil {
				return err
			}
			ctx, cancel := signalContext()
			defer cancel()
			return node.Run(ctx, s)
		},
	}
	sup.Flags().StringVar(&spec, "spec", "", "")
	fwd := &cobra.Command{
		Use: "__forward", Hidden: true,
		RunE: func(_ *cobra.Command, _ []string) error {
			ctx, cancel := signalContext()
			defer cancel()
			return controlplane.Forward(ctx, listen, netns, target)
		},
	}
	fwd.Flags().StringVar(&listen, "listen", "", "")
	fwd.Flags().StringVar(&netns, "netns", "", "")
	fwd.Flags().StringVar(&target, "target", "", "")
	return []*cobra.Command{ex, sup, fwd}
}
