package cli

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellisnet/trellis/internal/connectivity"
	"github.com/trellisnet/trellis/internal/lab/controlplane"
	"github.com/trellisnet/trellis/internal/lab/kube"
	"github.com/trellisnet/trellis/internal/lab/node"
	"github.com/trellisnet/trellis/internal/lab/probe"
	"github.com/trellisnet/trellis/internal/lab/proc"
	"github.com/trellisnet/trellis/internal/lab/tor"
)

func probeCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	var transport string
	c := &cobra.Command{
		Use:   "probe NS/POD TARGET PORT/PROTO",
		Short: "Connect from a pod to TARGET; exit 0 = answered, 1 = no answer, 2 = usage error",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 3 {
				return &ExitError{Code: 2, Err: errors.New("usage: trellis-lab probe NS/POD TARGET PORT/PROTO")}
			}
			port, proto, err := connectivity.ParsePortProto(args[2])
			if err != nil {
				return &ExitError{Code: 2, Err: err}
			}
			pr, err := g.prober(transport, timeout)
			if err != nil {
				return &ExitError{Code: 2, Err: err}
			}
			ok, err := pr.Probe(cmd.Context(), args[0], args[1], port, proto)
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
	c.Flags().StringVar(&transport, "transport", "netns", transportHelp)
	return c
}

func dnsCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	var tcp bool
	var server string
	c := &cobra.Command{
		Use:   "dns NS/POD NAME",
		Short: "Resolve NAME from inside a pod with the pod's resolv.conf (search path included); exit 0 = resolved, 1 = not, 2 = usage error",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return &ExitError{Code: 2, Err: errors.New("usage: trellis-lab dns NS/POD NAME")}
			}
			var srv netip.Addr
			if server != "" {
				var err error
				if srv, err = netip.ParseAddr(server); err != nil {
					return &ExitError{Code: 2, Err: fmt.Errorf("--server: %w", err)}
				}
			}
			proto := "udp"
			if tcp {
				proto = "tcp"
			}
			cs, err := g.client()
			if err != nil {
				return &ExitError{Code: 2, Err: err}
			}
			ans, err := probe.Netns{CS: cs, Timeout: timeout}.Lookup(cmd.Context(), args[0], args[1], proto, srv)
			if errors.Is(err, probe.ErrNoSuchName) || errors.Is(err, probe.ErrNoAnswer) {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %s: %v\n", args[0], args[1], err)
				return &ExitError{Code: 1}
			}
			if err != nil {
				return &ExitError{Code: 2, Err: err}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s -> %s %v (server %s over %s)\n", args[0], args[1], ans.Name, ans.Addrs, ans.Server, proto)
			return nil
		},
	}
	c.Flags().DurationVar(&timeout, "timeout", 2*time.Second, "time for each name asked")
	c.Flags().BoolVar(&tcp, "tcp", false, "ask over TCP instead of UDP")
	c.Flags().StringVar(&server, "server", "", "ask this DNS server instead of the pod's nameserver")
	return c
}

func matrixCmd(g *globals) *cobra.Command {
	var portProto, selector, expect, transport string
	var namespaces []string
	c := &cobra.Command{
		Use:   "matrix",
		Short: "All-pairs connectivity table between running pods ('.' reached, 'X' not)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			port, proto, err := connectivity.ParsePortProto(portProto)
			if err != nil {
				return &ExitError{Code: 2, Err: err}
			}
			if transport != "netns" && transport != "exec" {
				return &ExitError{Code: 2, Err: fmt.Errorf("--transport must be netns or exec, got %q", transport)}
			}
			cs, err := g.client()
			if err != nil {
				return err
			}
			pods, err := connectivity.ListPods(cmd.Context(), cs, namespaces, selector)
			if err != nil {
				return err
			}
			sort.Strings(pods)
			if len(pods) == 0 {
				return errors.New("no running pods to probe")
			}
			pr, err := g.prober(transport, time.Second)
			if err != nil {
				return err
			}
			m, err := connectivity.ProbeAll(cmd.Context(), pr, pods, port, proto, 8)
			if err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %v\n", err)
			}
			var exp *connectivity.Matrix
			switch expect {
			case "":
			case "all":
				exp = connectivity.NewMatrix(pods, true)
			case "none":
				exp = connectivity.NewMatrix(pods, false)
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
	c.Flags().StringVar(&transport, "transport", "netns", transportHelp)
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
		Use:   "logs NODE|control-plane|tor [COMPONENT]",
		Short: "Print a component's log (node components: containerd, kubelet, kube-proxy, trellis-agent (its pod's log in DaemonSet mode), supervisor, cni; tor: the ToR's BIRD with up --bgp)",
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
			if args[0] == tor.ProcessName {
				file = p.LogFile(tor.ProcessName)
			} else if args[0] == "control-plane" {
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
