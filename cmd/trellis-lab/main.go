// Command trellis-lab runs a real Kubernetes cluster on this machine for the
// Trellis demo, end-to-end tests, conformance suites and benchmarks.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/trellisnet/trellis/internal/lab/cli"
	"github.com/trellisnet/trellis/internal/lab/proc"
)

func main() {
	if err := proc.CloseInheritedFiles(); err != nil {
		fmt.Fprintln(os.Stderr, "trellis-lab:", err)
		os.Exit(1)
	}
	err := cli.New().Execute()
	if err == nil {
		return
	}
	var ee *cli.ExitError
	if errors.As(err, &ee) {
		if ee.Err != nil {
			fmt.Fprintln(os.Stderr, "trellis-lab:", ee.Err)
		}
		os.Exit(ee.Code)
	}
	fmt.Fprintln(os.Stderr, "trellis-lab:", err)
	os.Exit(1)
}
