// Command trellis-agent is the Trellis node agent (run per node as a
// DaemonSet). It only parses options and hands over to internal/agent.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/trellisnet/trellis/internal/agent"
	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/hostfw"
	"github.com/trellisnet/trellis/internal/nodesetup"
	"github.com/trellisnet/trellis/internal/uninstall"
)

// version is the release, set at link time (-ldflags "-X main.version=…",
// see the Makefile's build target).
var version = "dev"

func main() {
	if err := newCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "trellis-agent:", err)
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	var flags config.Flags
	var uninstallMode, idle bool
	cmd := &cobra.Command{
		Use:           "trellis-agent",
		Short:         "Trellis node agent: node setup, cross-node routing (native, VXLAN, auto) and masquerade",
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer cancel()
			ctx = klog.NewContext(ctx, klog.Background().WithName("trellis-agent"))
			if idle {
				<-ctx.Done()
				return nil
			}
			cfg, err := flags.Complete(os.Getenv)
			if cfg == nil {
				return invalid(ctx, &flags, uninstallMode, fmt.Errorf("invalid configuration: %w", err))
			}
			if uninstallMode && cfg.NodeName == "" {
				// The cleanup needs no Node object; the name only labels logs.
				cfg.NodeName, _ = os.Hostname()
			}
			if err := errors.Join(err, cfg.Validate()); err != nil {
				return invalid(ctx, &flags, uninstallMode, fmt.Errorf("invalid configuration:\n%w", err))
			}
			if uninstallMode {
				return runUninstall(ctx, cfg)
			}
			return agent.Run(ctx, cfg, version)
		},
	}
	flags.AddFlags(cmd.Flags())
	cmd.Flags().BoolVar(&uninstallMode, "uninstall", false, "remove everything Trellis made on this node and exit (docs/install.md#uninstall)")
	cmd.Flags().BoolVar(&idle, "idle", false, "do nothing until terminated (the uninstall DaemonSet's container after the cleanup)")
	cmd.AddCommand(ctlCommand())
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	cmd.Flags().AddGoFlagSet(klogFlags)
	return cmd
}

func runUninstall(ctx context.Context, cfg *config.Config) error {
	err := uninstall.Run(ctx, uninstall.Options{
		CNIConfDir: cfg.CNIConfDir, CNIBinDir: cfg.CNIBinDir, NodeStateFile: cfg.NodeStateFile,
		VXLANDevice:     cfg.VXLAN.Device,
		VXLANDevice6:    cfg.VXLAN.Device6,
		WireGuardDevice: cfg.WireGuard.Device, WireGuardKeyFile: cfg.WireGuard.KeyFile,
		Sysctls:    nodesetup.ProcSysctls{Root: cfg.SysctlRoot},
		RecordFile: uninstall.RecordPath(filepath.Dir(cfg.NodeStateFile)),
		Tables:     uninstall.NFT{},
		Forward:    hostfw.Exec{},
	})
	if err != nil {
		return fmt.Errorf("uninstall left something behind:\n%w", err)
	}
	klog.FromContext(ctx).Info("Uninstalled: nothing Trellis made is left on this node (pods wired before keep their interfaces until deleted)")
	return nil
}

// invalid handles a configuration the agent cannot use: --uninstall fails
// at once; the agent stays up NotReady and reports it (agent.RunInvalid),
// changing nothing on the node.
func invalid(ctx context.Context, f *config.Flags, uninstallMode bool, err error) error {
	if uninstallMode {
		return err
	}
	node := f.NodeName
	if node == "" {
		node = os.Getenv("NODE_NAME")
	}
	return agent.RunInvalid(ctx, version, node, f.Kubeconfig, f.MetricsBindAddress, err)
}
