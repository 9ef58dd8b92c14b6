// Command chart renders, lints, installs, upgrades and uninstalls the
// Trellis Helm chart (deploy/helm/trellis) with the helm library:
//
//	chart render    [--set k=v]... [--out FILE]   the manifests (`make manifests` writes deploy/*.yaml)
//	chart manifests [--dir deploy]                 write deploy/{trellis,uninstall,rbac}.yaml from the defaults
//	chart lint      [--set k=v]...                helm lint, strict
//	chart install   --kubeconfig F [--set k=v]... [--wait]   helm upgrade --install
//	chart upgrade   --kubeconfig F [--set k=v]... [--wait]
//	chart uninstall --kubeconfig F [--wait]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/trellisnet/trellis/tools/chart/chartops"
)

type stringList []string

func (s *stringList) String() string     { return fmt.Sprint(*s) }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "chart:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: chart render|lint|install|upgrade|uninstall [flags]")
	}
	cmd := args[0]
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	var o chartops.Options
	var c chartops.Cluster
	var set stringList
	var out, dir string
	fs.StringVar(&dir, "dir", "deploy", "manifests: directory to write the shipped manifests into")
	fs.StringVar(&o.Chart, "chart", "deploy/helm/trellis", "chart directory")
	fs.StringVar(&o.Release, "release", chartops.DefaultRelease, "release name")
	fs.StringVar(&o.Namespace, "namespace", chartops.DefaultNamespace, "namespace")
	fs.Var(&set, "set", "value override key=value (repeatable)")
	fs.StringVar(&out, "out", "", "render: write to this file instead of stdout")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster")
	fs.BoolVar(&c.Wait, "wait", false, "wait until the objects are ready")
	fs.DurationVar(&c.Timeout, "timeout", 5*time.Minute, "how long to wait")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	o.Set = set
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	switch cmd {
	case "render":
		m, err := chartops.Render(o)
		if err != nil {
			return err
		}
		if out == "" {
			_, err = os.Stdout.WriteString(m)
			return err
		}
		return os.WriteFile(out, []byte(m), 0o644)
	case "manifests":
		files, err := chartops.Manifests(o.Chart)
		if err != nil {
			return err
		}
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
				return err
			}
		}
		return nil
	case "lint":
		return chartops.Lint(o)
	case "install":
		return chartops.Install(ctx, o, c)
	case "upgrade":
		return chartops.Upgrade(ctx, o, c)
	case "uninstall":
		return chartops.Uninstall(o, c)
	}
	return fmt.Errorf("unknown command %q (render, lint, install, upgrade, uninstall)", cmd)
}
