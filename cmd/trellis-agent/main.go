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
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/trellisnet/trellis/internal/agent"
	"github.com/trellisnet/trellis/internal/config"
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
	cmd := &cobra.Command{
		Use:           "trellis-agent",
		Short:         "Trellis node agent: node setup, cross-node routing (native, VXLAN, auto) and masquerade",
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := flags.Complete(os.Getenv)
			if cfg == nil {
				return err
			}
			if err := errors.Join(err, cfg.Validate()); err != nil {
				return fmt.Errorf("invalid configuration:\n%w", err)
			}
			ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer cancel()
			ctx = klog.NewContext(ctx, klog.Background().WithName("trellis-agent"))
			return agent.Run(ctx, cfg, version)
		},
	}
	flags.AddFlags(cmd.Flags())
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	cmd.Flags().AddGoFlagSet(klogFlags)
	return cmd
}
