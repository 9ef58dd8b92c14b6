package cli

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/trellisnet/trellis/internal/lab"
)

func benchCmd(g *globals) *cobra.Command {
	var pods int
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "bench-pods",
		Short: "Create N agnhost pods (spread by kube-scheduler), time until all are Ready, delete them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cs, err := g.client()
			if err != nil {
				return err
			}
			_, err = lab.BenchPods(cmd.Context(), cs, pods, timeout, cmd.OutOrStdout())
			return err
		},
	}
	c.Flags().IntVar(&pods, "pods", 50, "number of pods")
	c.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait for Ready")
	return c
}

func memoryCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "memory",
		Short: "Resident memory of every lab process, by node and component",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := g.state(); err != nil {
				return err
			}
			return lab.Memory(g.paths(), cmd.OutOrStdout())
		},
	}
}
