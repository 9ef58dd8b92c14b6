// Package ctl is trellisctl, the operator's command-line tool: status,
// connectivity test, bench, explain, drops, encryption rotate and bgp
// status, against any cluster reached through a kubeconfig, with kubectl's
// conventions (--kubeconfig, --context, -o json|yaml|wide) and the exit
// codes in exit.go.
//
// trellisctl reads the cluster through the API server only. Per-node facts
// come from the agents' local API (internal/agentapi), reached by exec in
// the agent's pod, so it needs no port on any node; BGP sessions come from
// the BGPNodeStatus objects the agents write.
package ctl

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Options are the global flags and the clients built from them.
type Options struct {
	Kubeconfig string
	Context    string
	// Namespace is where Trellis is installed (the agent DaemonSet).
	Namespace string
	Timeout   time.Duration
	Version   string

	Out, ErrOut io.Writer

	config *rest.Config
	cs     kubernetes.Interface
	dyn    dynamic.Interface
}

// RESTConfig is the client configuration from --kubeconfig/--context, the
// KUBECONFIG variable or ~/.kube/config, as kubectl loads it. An unknown
// context or an unreadable kubeconfig is bad input (exit 2).
func (o *Options) RESTConfig() (*rest.Config, error) {
	if o.config != nil {
		return o.config, nil
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if o.Kubeconfig != "" {
		rules.ExplicitPath = o.Kubeconfig
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: o.Context})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, Usage("kubeconfig: %v", err)
	}
	cfg.UserAgent = "trellisctl/" + o.Version
	if cfg.Timeout == 0 {
		cfg.Timeout = o.Timeout
	}
	o.config = cfg
	return cfg, nil
}

// Clientset is the typed client for the selected cluster.
func (o *Options) Clientset() (kubernetes.Interface, error) {
	if o.cs != nil {
		return o.cs, nil
	}
	cfg, err := o.RESTConfig()
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, Usage("kubeconfig: %v", err)
	}
	o.cs = cs
	return cs, nil
}

// Dynamic is the dynamic client for the selected cluster (the API groups
// trellisctl has no typed client for: bgp.trellis.dev).
func (o *Options) Dynamic() (dynamic.Interface, error) {
	if o.dyn != nil {
		return o.dyn, nil
	}
	cfg, err := o.RESTConfig()
	if err != nil {
		return nil, err
	}
	d, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, Usage("kubeconfig: %v", err)
	}
	o.dyn = d
	return d, nil
}

// SetDynamic makes o use the given dynamic client (tests).
func (o *Options) SetDynamic(d dynamic.Interface) { o.dyn = d }

// SetClients makes o use the given clients (tests).
func (o *Options) SetClients(cfg *rest.Config, cs kubernetes.Interface) { o.config, o.cs = cfg, cs }

// NewRootCommand is trellisctl's command tree.
func NewRootCommand(version string, out, errOut io.Writer) (*cobra.Command, *Options) {
	o := &Options{Version: version, Out: out, ErrOut: errOut}
	root := &cobra.Command{
		Use:           "trellisctl",
		Short:         "Inspect, test and explain a Trellis cluster (docs/trellisctl.md)",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(out)
	root.SetErr(errOut)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return Usage("%v", err) })
	pf := root.PersistentFlags()
	pf.StringVar(&o.Kubeconfig, "kubeconfig", "", "path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	pf.StringVar(&o.Context, "context", "", "the kubeconfig context to use (default: its current context)")
	pf.StringVar(&o.Namespace, "trellis-namespace", "kube-system", "the namespace Trellis is installed in")
	pf.DurationVar(&o.Timeout, "request-timeout", 30*time.Second, "timeout of a single API request")
	root.AddCommand(versionCommand(o))
	root.AddCommand(statusCommand(o))
	root.AddCommand(connectivityCommand(o))
	root.AddCommand(explainCommand(o))
	root.AddCommand(benchCommand(o))
	root.AddCommand(dropsCommand(o))
	root.AddCommand(encryptionCommand(o))
	root.AddCommand(bgpCommand(o))
	return root, o
}

// Run executes trellisctl with args and returns its exit code; errors are
// printed as one line on errOut.
func Run(ctx context.Context, version string, args []string, out, errOut io.Writer) int {
	root, _ := NewRootCommand(version, out, errOut)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err != nil {
		fmt.Fprintln(errOut, "trellisctl:", err)
	}
	code := ExitCode(err)
	if err != nil && code == ExitError && isUsageError(err) {
		code = ExitUsage
	}
	return code
}
