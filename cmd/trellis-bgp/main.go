// Command trellis-bgp is the BGP speaker (GoBGP) of trellis-agent, run by
// the agent as its child process while BGP is on and driven over stdin and
// stdout (internal/bgp/speakerproc). It exits when its stdin closes and dies
// with the agent.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"

	"github.com/trellisnet/trellis/internal/bgp/speaker"
	"github.com/trellisnet/trellis/internal/bgp/speakerproc"
)

func main() {
	lvl := slog.LevelInfo
	if os.Getenv("TRELLIS_BGP_DEBUG") == "1" {
		lvl = slog.Level(-4)
	}
	log := logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer cancel()
	s := speaker.New(log)
	if err := speakerproc.Serve(ctx, os.Stdin, os.Stdout, s); err != nil {
		fmt.Fprintf(os.Stderr, "trellis-bgp: %v\n", err)
		cancel()
		os.Exit(1)
	}
}
