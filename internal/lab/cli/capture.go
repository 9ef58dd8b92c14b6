package cli

import (
	"fmt"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/lab/capture"
)

// captureCmd records the lab's switch for a while and says what crossed it:
// the way to see for oneself that pod traffic between nodes is encrypted.
func captureCmd(g *globals) *cobra.Command {
	var seconds time.Duration
	var count, port int
	var payload, file, filter string
	c := &cobra.Command{
		Use: "capture",
		Short: "Record the lab's switch (every frame between its hosts) with tcpdump for a while, bounded by a packet count; " +
			"print the frames, the UDP datagrams to the WireGuard port and how often --payload appears",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := g.state()
			if err != nil {
				return err
			}
			if file == "" {
				file = filepath.Join(g.paths().Root, "switch.pcap")
			}
			if filter == "" {
				filter = "not host " + st.Topology.ControlPlane.Addr.String()
			}
			ctx, cancel := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer cancel()
			c, err := capture.Start(ctx, capture.Options{Netns: st.Topology.SwitchNetns, InboundOnly: true, Filter: filter,
				File: file, MaxPackets: count, MaxDuration: seconds})
			if err != nil {
				return &ExitError{Code: 2, Err: err}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "recording %s (filter %q) into %s for %s or %d frames (tcpdump pid %d); Ctrl-C stops it\n",
				st.Topology.SwitchNetns, filter, file, seconds, count, c.PID())
			select {
			case <-ctx.Done():
			case <-c.Done():
			}
			stats, err := c.Stop()
			if err != nil {
				return err
			}
			got, err := capture.AnalyzeFile(file, capture.Query{Payload: []byte(payload), UDPPort: port})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d frames (%d dropped by the kernel); %d UDP datagrams to port %d", got.Packets,
				stats.DroppedByKernel, got.UDPToPort, port)
			if payload != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "; %q found %d times in %d frames", payload, got.PayloadHits, got.PayloadPackets)
			}
			fmt.Fprintln(cmd.OutOrStdout())
			return nil
		},
	}
	c.Flags().DurationVar(&seconds, "duration", 10*time.Second, "how long to record")
	c.Flags().IntVar(&count, "count", 200000, "stop after this many frames")
	c.Flags().IntVar(&port, "port", config.DefaultWireGuardPort, "count UDP datagrams to this port (WireGuard's)")
	c.Flags().StringVar(&payload, "payload", "", "count the frames carrying this text (send it between pods meanwhile)")
	c.Flags().StringVar(&file, "file", "", "the pcap file (default: switch.pcap in the lab's state directory)")
	c.Flags().StringVar(&filter, "filter", "", "tcpdump filter (default: leave out the control plane's traffic)")
	return c
}
