// Command trellisctl is the Trellis operator CLI (docs/trellisctl.md). It
// only hands over to internal/ctl.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/trellisnet/trellis/internal/ctl"
)

// version is the release, set at link time (see the Makefile's build target).
var version = "dev"

func main() {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := ctl.Run(ctx, version, os.Args[1:], os.Stdout, os.Stderr)
	cancel()
	os.Exit(code)
}
