package main

import (
	"context"
	"errors"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/trellisnet/trellis/internal/agentapi"
	"github.com/trellisnet/trellis/internal/config"
)

// ctlCommand is what trellisctl execs in the agent's container: it reads
// one path of the local agent API and writes the answer to stdout.
func ctlCommand() *cobra.Command {
	var configFile, socket string
	var untilStdinClosed bool
	cmd := &cobra.Command{
		Use:    "ctl",
		Short:  "Talk to the running agent on this node (used by trellisctl through kubectl exec)",
		Hidden: true,
	}
	get := &cobra.Command{
		Use:   "get PATH",
		Short: "Print the answer of the local agent API at PATH (e.g. /v1/version)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if socket == "" {
				cfg := config.Default()
				if err := config.LoadFile(configFile, cfg); err != nil && !errors.Is(err, os.ErrNotExist) {
					return err
				}
				cfg.ApplyDefaults()
				socket = agentapi.SocketPath(cfg.NodeStateFile)
			}
			ctx := cmd.Context()
			if untilStdinClosed {
				// The caller (trellisctl, through exec) keeps stdin open
				// while it reads; its end means nobody reads any more.
				var cancel context.CancelFunc
				ctx, cancel = context.WithCancel(ctx)
				defer cancel()
				go func() {
					_, _ = io.Copy(io.Discard, os.Stdin)
					cancel()
				}()
			}
			return agentapi.Get(ctx, socket, args[0], os.Stdout)
		},
	}
	get.Flags().StringVar(&configFile, "config", "/etc/trellis/config.yaml", "the agent's configuration file (where its node-state directory is set)")
	get.Flags().StringVar(&socket, "socket", "", "the agent API socket (default: agent.sock beside the configured node-state file)")
	get.Flags().BoolVar(&untilStdinClosed, "until-stdin-closed", false, "stop when stdin is closed (streams: exit when the caller goes away)")
	cmd.AddCommand(get)
	return cmd
}
