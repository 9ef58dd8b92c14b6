// Command benchplot draws the scale bench's result (bin/bench-scale/
// result.json, internal/scalebench.Result) as one PNG per figure against
// the size of the cluster. It is its own module so that the agent's module
// does not link the plotting library.
//
//	go run . -in ../../bin/bench-scale/result.json -out ../../docs/img/
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/trellisnet/trellis/internal/scalebench"
	"github.com/trellisnet/trellis/tools/benchplot/scaleplot"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "benchplot:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("benchplot", flag.ContinueOnError)
	in := fs.String("in", "bin/bench-scale/result.json", "the scale bench's result (JSON)")
	out := fs.String("out", "docs/img", "directory the PNGs are written to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	b, err := os.ReadFile(*in)
	if err != nil {
		return fmt.Errorf("read the result: %w", err)
	}
	var r scalebench.Result
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("decode %s: %w", *in, err)
	}
	if len(r.Steps) == 0 {
		return errors.New(*in + " has no steps")
	}
	files, err := scaleplot.Write(&r, *out)
	for _, f := range files {
		fmt.Println(f)
	}
	return err
}
