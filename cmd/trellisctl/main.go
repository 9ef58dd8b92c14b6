// Command trellisctl is the Trellis operator CLI (docs/trellisctl.md). It
// only hands over to internal/ctl.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"

	"github.com/trellisnet/trellis/internal/ctl"
)

// version is the release, set at link time (see the Makefile's build target).
var version = "dev"

func main() {
	// client-go logs through klog: a stalled or interrupted exec stream,
	// retries. Every command reports what failed in its own output and
	// exit code, so those lines would only be noise on stderr.
	klog.SetLogger(logr.Discard())
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := ctl.Run(ctx, version, os.Args[1:], os.Stdout, os.Stderr)
	cancel()
	os.Exit(code)
}
