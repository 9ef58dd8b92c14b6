// Package cli is the command-line interface of trellis-lab.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"

	"github.com/trellisnet/trellis/internal/connectivity"
	"github.com/trellisnet/trellis/internal/lab"
	"github.com/trellisnet/trellis/internal/lab/install"
	"github.com/trellisnet/trellis/internal/lab/kube"
	"github.com/trellisnet/trellis/internal/lab/probe"
	"github.com/trellisnet/trellis/internal/lab/proc"
	"github.com/trellisnet/trellis/internal/lab/state"
	"github.com/trellisnet/trellis/internal/lab/topology"
	"github.com/trellisnet/trellis/internal/lab/tor"
)

// ExitError carries a specific exit status.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}
func (e *ExitError) Unwrap() error { return e.Err }

type globals struct {
	name   string
	dir    string
	binDir string
	deploy string
	cache  string
}

func (g *globals) paths() state.Paths {
	p := state.NewPaths(g.name)
	if g.dir != "" {
		p.Root = g.dir
	}
	return p
}

func (g *globals) env(out io.Writer) (lab.Env, error) {
	self, err := os.Executable()
	if err != nil {
		return lab.Env{}, fmt.Errorf("locating trellis-lab: %w", err)
	}
	return lab.Env{Cache: g.cache, BinDir: g.binDir, Deploy: g.deploy, LabBin: self, Out: out}, nil
}

// imageTar defaults the Trellis image tarball to `make image`'s output.
func (g *globals) imageTar(flag string) string {
	if flag != "" {
		return flag
	}
	return filepath.Join(g.binDir, "image", "trellis-image.tar")
}

// manifest defaults the applied manifest to the shipped one.
func (g *globals) manifest(flag string) string {
	if flag != "" {
		return flag
	}
	return filepath.Join(g.deploy, "trellis.yaml")
}

func (g *globals) state() (*state.State, error) {
	st, err := state.LoadState(g.paths())
	if errors.Is(err, os.ErrNotExist) {
		return nil, errors.New("no lab is running (run `trellis-lab up`)")
	}
	return st, err
}

// client returns a client for the running lab's API server, or the "no lab
// is running" error when there is none.
func (g *globals) client() (kubernetes.Interface, error) {
	if _, err := g.state(); err != nil {
		return nil, err
	}
	cs, _, err := kube.Client(g.paths().AdminKubeconfig())
	return cs, err
}

const transportHelp = "how to probe: netns (dial from inside the pod's network namespace) or exec (agnhost connect in the pod through the API server)"

// prober returns the prober for transport.
func (g *globals) prober(transport string, timeout time.Duration) (connectivity.Prober, error) {
	if _, err := g.state(); err != nil {
		return nil, err
	}
	cs, cfg, err := kube.Client(g.paths().AdminKubeconfig())
	if err != nil {
		return nil, err
	}
	switch transport {
	case "netns":
		return probe.Netns{CS: cs, Timeout: timeout}, nil
	case "exec":
		return connectivity.ExecProber{Config: cfg, CS: cs, Timeout: timeout}, nil
	}
	return nil, fmt.Errorf("%w: --transport must be netns or exec, got %q", connectivity.ErrUsage, transport)
}

// stateWithNode loads the running lab's state and checks that node is one of
// its nodes (an unknown name is a clear error listing the lab's nodes).
func (g *globals) stateWithNode(node string) (*state.State, error) {
	st, err := g.state()
	if err != nil {
		return nil, err
	}
	if _, err := st.Topology.Node(node); err != nil {
		return nil, err
	}
	return st, nil
}

// New returns the root command.
func New() *cobra.Command {
	g := &globals{}
	self, _ := os.Executable()
	binDir := filepath.Dir(self)
	cache := os.Getenv("TRELLIS_CACHE")
	if cache == "" {
		cache = "/var/cache/trellis"
	}
	root := &cobra.Command{
		Use:           "trellis-lab",
		Short:         "A real Kubernetes cluster on this machine: control plane and nodes in network namespaces",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.name, "name", os.Getenv("TRELLIS_LAB_NAME"), "lab instance name, for several labs side by side ($TRELLIS_LAB_NAME; default: the unnamed lab)")
	root.PersistentFlags().StringVar(&g.dir, "dir", "", "lab state directory (default /var/lib/trellis-lab[-NAME], $TRELLIS_LAB_DIR)")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if err := proc.NoInheritedFDs(); err != nil {
			return err
		}
		return state.ValidateName(g.name)
	}
	root.PersistentFlags().StringVar(&g.binDir, "bin-dir", binDir, "directory with trellis-agent, trellis-cni and trellis-pause")
	root.PersistentFlags().StringVar(&g.deploy, "deploy-dir", filepath.Join(binDir, "..", "deploy"), "directory with the shipped manifests (trellis.yaml, uninstall.yaml, rbac.yaml, helm/trellis)")
	root.PersistentFlags().StringVar(&g.cache, "cache", cache, "cache of pinned binaries ($TRELLIS_CACHE)")
	root.AddCommand(upCmd(g), downCmd(g), statusCmd(g), kubeconfigCmd(g), kubectlCmd(g), ctlCmd(g), execCmd(g),
		probeCmd(g), dnsCmd(g), matrixCmd(g), restartAgentCmd(g), nodeCmd(g, "stop-node"), nodeCmd(g, "start-node"),
		apiserverCmd(g, "stop-apiserver"), apiserverCmd(g, "start-apiserver"), logsCmd(g), benchCmd(g), memoryCmd(g),
		upgradeCmd(g), rollbackCmd(g), uninstallCmd(g), agentConfigCmd(g), captureCmd(g), torCmd(g))
	root.AddCommand(internalCmds()...)
	return root
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
}

func upCmd(g *globals) *cobra.Command {
	o := topology.Options{}
	noAgent := false
	var mode, imageTar, manifest, chartBin, cni string
	c := &cobra.Command{
		Use:   "up",
		Short: "Bring a lab up (removes leftovers of a previous lab first)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := signalContext()
			defer cancel()
			e, err := g.env(cmd.OutOrStdout())
			if err != nil {
				return err
			}
			e.NoAgent = noAgent
			if e.CNI, err = lab.ParseCNI(cni); err != nil {
				return &ExitError{Code: 2, Err: err}
			}
			if e.Install, err = install.ParseMode(mode); err != nil {
				return &ExitError{Code: 2, Err: err}
			}
			e.ImageTar, e.Manifest, e.ChartBin = g.imageTar(imageTar), g.manifest(manifest), chartBin
			if e.ChartBin == "" {
				e.ChartBin = filepath.Join(g.binDir, "trellis-chart")
			}
			if o.APIPort == 0 {
				o.APIPort = state.DefaultAPIPort(g.name)
			}
			if o.RoutingMode == topology.RoutingModeBGP {
				o.BGP = true // pod CIDRs travel by BGP only: the ToR carries them
			}
			return lab.Up(ctx, e, g.paths(), o)
		},
	}
	c.Flags().IntVar(&o.Nodes, "nodes", 3, "number of nodes")
	c.Flags().IntVar(&o.Subnets, "subnets", 2, "number of underlay subnets (L2 segments joined by a router)")
	c.Flags().StringVar(&o.RoutingMode, "routing-mode", "auto", "Trellis agent routing mode: native, vxlan, auto or bgp (pod CIDRs by BGP through the ToR only; implies --bgp)")
	c.Flags().BoolVar(&o.BGP, "bgp", false, "run BIRD in the router namespace as the nodes' top-of-rack router (AS 65000) and peer every node with it (docs/lab.md)")
	c.Flags().StringVar(&o.BGPPeering, "bgp-peering", "", "with --bgp: the BGPConfiguration's internalPeering between the nodes: None (default), FullMesh or RouteReflector (node1 reflects)")
	c.Flags().IntVar(&o.BGPRestartTime, "bgp-restart-time", 0, "with --bgp: the graceful-restart time the nodes announce, in seconds (default: the API's, 120)")
	c.Flags().StringVar(&o.Encryption, "encryption", "none", "Trellis agent encryption of pod traffic between nodes: none or wireguard (docs/encryption.md)")
	c.Flags().StringVar(&o.IPFamily, "ip-family", topology.IPv4, "the cluster's IP family: ipv4, ipv6 or dual (IPv4 primary); with IPv6 the underlay carries both families (docs/lab.md)")
	c.Flags().StringVar(&o.ClusterCIDR, "cluster-cidr", topology.ClusterCIDR, "the cluster's pod range, inside 10.128.0.0/9 (wider than the default to leave room for API-only Nodes, e.g. the scale bench's 10.244.0.0/14)")
	c.Flags().IntVar(&o.NodeCIDRMask, "node-cidr-mask", topology.DefaultNodeCIDRMask, "prefix length of each node's pod CIDR that kube-controller-manager allocates in --cluster-cidr")
	c.Flags().IntVar(&o.APIPort, "api-port", 0, "loopback port forwarded to the API server (default 16443; named labs derive theirs from the name)")
	c.Flags().BoolVar(&noAgent, "no-agent", false, "run the nodes without the Trellis agent (the lab writes a static CNI config; implies --install process)")
	c.Flags().StringVar(&mode, "install", "daemonset", "how Trellis is installed: daemonset (the shipped manifest), helm (the chart) or process (agent processes, the dev loop)")
	c.Flags().StringVar(&imageTar, "image-tar", "", "the Trellis image tarball imported into every node (default: bin/image/trellis-image.tar from make image)")
	c.Flags().StringVar(&manifest, "manifest", "", "the manifest applied in daemonset mode (default: DEPLOY-DIR/trellis.yaml)")
	c.Flags().StringVar(&cni, "cni", lab.CNITrellis, "the cluster's CNI: trellis, or kube-router (the peer of `make compare`, built for measurement in the lab only; --install, --routing-mode and --encryption then do not apply)")
	c.Flags().StringVar(&chartBin, "chart-bin", "", "the chart tool for helm mode (default: BIN-DIR/trellis-chart from make chart-tool)")
	return c
}

func downCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Remove every namespace, process, cgroup, mount and file of the lab (idempotent)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Geteuid() != 0 {
				return errors.New("trellis-lab must run as root")
			}
			e, err := g.env(cmd.OutOrStdout())
			if err != nil {
				return err
			}
			start := time.Now()
			if err := lab.Down(context.Background(), e, g.paths()); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "trellis-lab: lab removed (%s)\n", time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
}

func statusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the lab's processes, nodes and pods whose network setup failed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return lab.Status(cmd.Context(), g.paths(), cmd.OutOrStdout())
		},
	}
}

func kubeconfigCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "kubeconfig",
		Short: "Print the path of the admin kubeconfig",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := g.state(); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), g.paths().AdminKubeconfig())
			return nil
		},
	}
}

// passthrough runs a command with the terminal attached and propagates its
// exit status.
func passthrough(name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return &ExitError{Code: ee.ExitCode()}
	}
	return err
}

// torCmd runs birdc against the lab's ToR (`up --bgp`).
func torCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:                "tor -- ARGS",
		Short:              "Run birdc against the lab's top-of-rack router (BIRD, up --bgp): tor -- show route, tor -- show protocols all",
		DisableFlagParsing: true,
		RunE: func(_ *cobra.Command, args []string) error {
			st, rest, err := passthroughLab(g, args)
			if err != nil {
				return err
			}
			if !st.Topology.Options.BGP {
				return errors.New("the lab runs without a ToR: bring it up with --bgp")
			}
			return passthrough("birdc", append([]string{"-s", tor.Socket(g.paths())}, rest...)...)
		},
	}
}

func kubectlCmd(g *globals) *cobra.Command {
	return passthroughCmd(g, "kubectl -- ARGS", "Run the lab's kubectl with the admin kubeconfig",
		func(st *state.State) string { return st.Binaries["kubectl"] })
}

// ctlCmd runs trellisctl (beside trellis-lab in --bin-dir) against the lab.
func ctlCmd(g *globals) *cobra.Command {
	return passthroughCmd(g, "ctl -- ARGS", "Run trellisctl against the lab (its admin kubeconfig)",
		func(*state.State) string { return filepath.Join(g.binDir, "trellisctl") })
}

// passthroughLab reads the lab a passthrough command names ("--name X"
// before "--", or the global one) and returns the arguments after "--".
func passthroughLab(g *globals, args []string) (*state.State, []string, error) {
	name, rest, err := splitLabName(args)
	if err != nil {
		return nil, nil, &ExitError{Code: 2, Err: err}
	}
	if name != "" {
		g.name = name
		if err := state.ValidateName(g.name); err != nil {
			return nil, nil, &ExitError{Code: 2, Err: err}
		}
	}
	st, err := g.state()
	if err != nil {
		return nil, nil, err
	}
	return st, rest, nil
}

// passthroughCmd runs the tool bin names with the lab's admin kubeconfig
// and the arguments after "--", exiting with the tool's exit code.
func passthroughCmd(g *globals, use, short string, bin func(*state.State) string) *cobra.Command {
	return &cobra.Command{
		Use:                use,
		Short:              short,
		DisableFlagParsing: true,
		RunE: func(_ *cobra.Command, args []string) error {
			st, rest, err := passthroughLab(g, args)
			if err != nil {
				return err
			}
			return passthrough(bin(st), append([]string{"--kubeconfig", g.paths().AdminKubeconfig()}, rest...)...)
		},
	}
}

// splitLabName takes the lab's own --name flag out of the arguments of a
// command that passes its arguments through (flag parsing is off for it, so
// cobra leaves `trellis-lab --name X kubectl -- ...` to it). Everything after
// the first "--" belongs to the wrapped tool.
func splitLabName(args []string) (name string, rest []string, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return name, args[i+1:], nil
		case a == "--name":
			if i+1 >= len(args) {
				return "", nil, fmt.Errorf("--name needs a value")
			}
			name = args[i+1]
			i++
		case strings.HasPrefix(a, "--name="):
			name = strings.TrimPrefix(a, "--name=")
		default:
			return name, args[i:], nil
		}
	}
	return name, nil, nil
}

func execCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "exec NS/POD -- CMD...",
		Short: "Run a command in a pod (kubectl exec)",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			st, err := g.state()
			if err != nil {
				return err
			}
			ns, pod, err := connectivity.SplitPodRef(args[0])
			if err != nil {
				return &ExitError{Code: 2, Err: err}
			}
			kargs := []string{"--kubeconfig", g.paths().AdminKubeconfig(), "exec", "-n", ns, pod, "--"}
			return passthrough(st.Binaries["kubectl"], append(kargs, args[1:]...)...)
		},
	}
}
