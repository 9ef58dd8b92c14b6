package cli

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellisnet/trellis/internal/lab"
	"github.com/trellisnet/trellis/internal/lab/install"
	"github.com/trellisnet/trellis/internal/lab/node"
	"github.com/trellisnet/trellis/internal/lab/proc"
)

// agentRestartTimeout bounds the wait for a restarted agent pod.
const agentRestartTimeout = 90 * time.Second

func upgradeCmd(g *globals) *cobra.Command {
	var imageTar string
	c := &cobra.Command{
		Use:   "upgrade",
		Short: "Import a Trellis image into every node and roll the DaemonSet to it (maxUnavailable 1); prints the time per node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := g.env(cmd.OutOrStdout())
			if err != nil {
				return err
			}
			_, err = lab.Upgrade(cmd.Context(), e, g.paths(), g.imageTar(imageTar))
			return err
		},
	}
	c.Flags().StringVar(&imageTar, "image-tar", "", "the image tarball (default: bin/image/trellis-image.tar)")
	return c
}

func rollbackCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "rollback",
		Short: "Roll the Trellis DaemonSet back to its previous revision (kubectl rollout undo); prints the time per node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := g.env(cmd.OutOrStdout())
			if err != nil {
				return err
			}
			_, err = lab.Rollback(cmd.Context(), e, g.paths())
			return err
		},
	}
}

func uninstallCmd(g *globals) *cobra.Command {
	var manifest string
	c := &cobra.Command{
		Use:   "uninstall",
		Short: "Delete the Trellis objects, run the uninstall DaemonSet (trellis-agent --uninstall) on every node, delete it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := g.env(cmd.OutOrStdout())
			if err != nil {
				return err
			}
			if manifest == "" {
				manifest = filepath.Join(g.deploy, "uninstall.yaml")
			}
			return lab.Uninstall(cmd.Context(), e, g.paths(), manifest)
		},
	}
	c.Flags().StringVar(&manifest, "manifest", "", "the uninstall manifest (default: DEPLOY-DIR/uninstall.yaml)")
	return c
}

func agentConfigCmd(g *globals) *cobra.Command {
	var restart bool
	c := &cobra.Command{
		Use:   "agent-config KEY=VALUE...",
		Short: "Set keys of the agent configuration (the ConfigMap's config.yaml) and, with --restart, restart every agent pod in turn",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := g.state()
			if err != nil {
				return err
			}
			if !st.Install.AgentPod() {
				return install.ErrNotInstalled
			}
			ov, err := install.ParseOverrides(args)
			if err != nil {
				return &ExitError{Code: 2, Err: err}
			}
			cs, err := g.client()
			if err != nil {
				return err
			}
			if err := install.SetConfig(cmd.Context(), cs, ov); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ConfigMap %s/%s updated\n", install.Namespace, install.ConfigMapName)
			if !restart {
				return nil
			}
			for _, n := range st.Topology.Nodes {
				if _, err := install.RestartAgent(cmd.Context(), cs, n.Name, agentRestartTimeout); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "agent on %s restarted\n", n.Name)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&restart, "restart", false, "restart every agent pod (one node at a time) so it reads the new configuration")
	return c
}

func restartAgentCmd(g *globals) *cobra.Command {
	var kill bool
	c := &cobra.Command{
		Use: "restart-agent NODE",
		Short: "Restart the Trellis agent on NODE. DaemonSet: delete its pod and wait for the replacement Ready (--kill: SIGKILL the " +
			"container's process, kubelet restarts it). Process mode: copy in the current bin/trellis-agent and trellis-cni and SIGKILL it",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := g.stateWithNode(args[0])
			if err != nil {
				return err
			}
			if st.Install.AgentPod() {
				return restartAgentPod(cmd, g, args[0], kill)
			}
			return restartAgentProcess(cmd, g, args[0])
		},
	}
	c.Flags().BoolVar(&kill, "kill", false, "DaemonSet mode: kill -9 the agent container's process instead of deleting the pod")
	return c
}

func restartAgentPod(cmd *cobra.Command, g *globals, nodeName string, kill bool) error {
	cs, err := g.client()
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	start := time.Now()
	if kill {
		pid, err := install.KillAgent(ctx, cs, nodeName, agentRestartTimeout)
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "killed trellis-agent (pid %d) on %s; its container restarted, Ready after %s\n",
			pid, nodeName, time.Since(start).Round(time.Millisecond))
		return nil
	}
	pod, err := install.RestartAgent(ctx, cs, nodeName, agentRestartTimeout)
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "deleted the agent pod on %s; %s Ready after %s\n", nodeName, pod.Name, time.Since(start).Round(time.Millisecond))
	return nil
}

func restartAgentProcess(cmd *cobra.Command, g *globals, nodeName string) error {
	np, err := node.ReadPIDs(g.paths().Node(nodeName))
	if err != nil || np.PIDs["trellis-agent"] == 0 || !proc.Alive(np.PIDs["trellis-agent"], "trellis-agent") {
		return fmt.Errorf("no trellis-agent is running on %s", nodeName)
	}
	pid := np.PIDs["trellis-agent"]
	spec, err := node.LoadSpec(filepath.Join(g.paths().Node(nodeName), "node.json"))
	if err != nil {
		return err
	}
	if copied, err := node.RefreshTrellisBinaries(spec, g.binDir); err != nil {
		return err
	} else if len(copied) > 0 {
		fmt.Fprintf(cmd.OutOrStdout(), "updated %v on %s from %s\n", copied, nodeName, g.binDir)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("killing agent pid %d: %w", pid, err)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "killed trellis-agent (pid %d) on %s; it restarts within seconds\n", pid, nodeName)
	return nil
}

// agentLogs prints the agent's log through the API in DaemonSet mode.
func agentLogs(cmd *cobra.Command, g *globals, nodeName string, tail int, previous bool) error {
	cs, err := g.client()
	if err != nil {
		return err
	}
	t := int64(tail)
	if tail == 0 {
		t = -1
	}
	err = install.AgentLogs(cmd.Context(), cs, nodeName, t, previous, cmd.OutOrStdout())
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
