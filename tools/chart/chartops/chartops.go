// Package chartops renders, lints, installs, upgrades and uninstalls the
// Trellis Helm chart through the helm library, so that neither the tests
// nor the lab need a helm binary. It lives in its own Go module
// (tools/chart) so the agent's module does not link Helm.
package chartops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/cli"
	"helm.sh/helm/v4/pkg/kube"
	release "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/strvals"
)

// Defaults of the shipped manifests.
const (
	DefaultRelease   = "trellis"
	DefaultNamespace = "kube-system"
	// KubeVersion is the Kubernetes version client-only renders assume
	// (the project's pinned version).
	KubeVersion = "v1.37.2"
)

// Options name the chart, the release and the value overrides.
type Options struct {
	Chart     string // chart directory
	Release   string
	Namespace string
	// Set holds helm --set style overrides ("image.tag=abc", "config.mtu=1400").
	Set []string
	// IncludeCRDs renders the chart's crds/ directory too, first (helm
	// template --include-crds); Install installs them regardless.
	IncludeCRDs bool
}

func (o Options) withDefaults() Options {
	if o.Release == "" {
		o.Release = DefaultRelease
	}
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	return o
}

// Values parses the overrides.
func (o Options) Values() (map[string]any, error) {
	vals := map[string]any{}
	for _, s := range o.Set {
		if err := strvals.ParseInto(s, vals); err != nil {
			return nil, fmt.Errorf("--set %s: %w", s, err)
		}
	}
	return vals, nil
}

func quietConfig() *action.Configuration {
	return action.NewConfiguration(action.ConfigurationSetLogger(slog.NewTextHandler(io.Discard, nil)))
}

// Render returns the chart's manifests as `helm template` prints them
// (client only: no cluster is contacted).
func Render(o Options) (string, error) {
	o = o.withDefaults()
	ch, err := loader.LoadDir(o.Chart)
	if err != nil {
		return "", fmt.Errorf("load chart %s: %w", o.Chart, err)
	}
	vals, err := o.Values()
	if err != nil {
		return "", err
	}
	kv, err := common.ParseKubeVersion(KubeVersion)
	if err != nil {
		return "", err
	}
	inst := action.NewInstall(quietConfig())
	inst.DryRunStrategy, inst.KubeVersion = action.DryRunClient, kv
	inst.ReleaseName, inst.Namespace, inst.Replace = o.Release, o.Namespace, true
	inst.IncludeCRDs = o.IncludeCRDs
	rel, err := inst.RunWithContext(context.Background(), ch, vals)
	if err != nil {
		return "", fmt.Errorf("render chart: %w", err)
	}
	r, ok := rel.(*release.Release)
	if !ok {
		return "", fmt.Errorf("render chart: unexpected release type %T", rel)
	}
	return strings.TrimSpace(r.Manifest) + "\n", nil
}

// Lint runs `helm lint` (strict: warnings fail too) and returns every
// message as one error.
func Lint(o Options) error {
	o = o.withDefaults()
	vals, err := o.Values()
	if err != nil {
		return err
	}
	l := action.NewLint()
	l.Strict, l.Namespace = true, o.Namespace
	res := l.Run([]string{o.Chart}, vals)
	var errs []error
	for _, m := range res.Messages {
		if m.Severity > 1 { // above INFO
			errs = append(errs, m)
		}
	}
	errs = append(errs, res.Errors...)
	return errors.Join(errs...)
}

// Cluster names the cluster for install, upgrade and uninstall.
type Cluster struct {
	Kubeconfig string
	// Wait waits until the objects are ready (DaemonSet rolled out).
	Wait    bool
	Timeout time.Duration
}

func (c Cluster) config(namespace string) (*action.Configuration, error) {
	s := cli.New()
	s.KubeConfig = c.Kubeconfig
	s.SetNamespace(namespace)
	cfg := quietConfig()
	if err := cfg.Init(s.RESTClientGetter(), namespace, "secret"); err != nil {
		return nil, fmt.Errorf("helm configuration: %w", err)
	}
	return cfg, nil
}

func (c Cluster) wait() kube.WaitStrategy {
	if c.Wait {
		return kube.StatusWatcherStrategy
	}
	return kube.HookOnlyStrategy
}

func (c Cluster) timeout() time.Duration {
	if c.Timeout == 0 {
		return 5 * time.Minute
	}
	return c.Timeout
}

// Install installs the chart as a new release, or upgrades the release if
// it exists (helm upgrade --install).
func Install(ctx context.Context, o Options, c Cluster) error {
	o = o.withDefaults()
	ch, vals, cfg, err := prepare(o, c)
	if err != nil {
		return err
	}
	hist := action.NewHistory(cfg)
	hist.Max = 1
	if _, err := hist.Run(o.Release); err == nil {
		return upgrade(ctx, o, c, cfg, ch, vals)
	}
	inst := action.NewInstall(cfg)
	inst.ReleaseName, inst.Namespace = o.Release, o.Namespace
	inst.WaitStrategy, inst.Timeout = c.wait(), c.timeout()
	if _, err := inst.RunWithContext(ctx, ch, vals); err != nil {
		return fmt.Errorf("helm install %s: %w", o.Release, err)
	}
	return nil
}

// Upgrade upgrades an existing release to the chart and values given
// (values not given are the chart's defaults, not the previous release's).
func Upgrade(ctx context.Context, o Options, c Cluster) error {
	o = o.withDefaults()
	ch, vals, cfg, err := prepare(o, c)
	if err != nil {
		return err
	}
	return upgrade(ctx, o, c, cfg, ch, vals)
}

func upgrade(ctx context.Context, o Options, c Cluster, cfg *action.Configuration, ch *chart.Chart, vals map[string]any) error {
	up := action.NewUpgrade(cfg)
	up.Namespace, up.ResetValues = o.Namespace, true
	up.WaitStrategy, up.Timeout = c.wait(), c.timeout()
	if _, err := up.RunWithContext(ctx, o.Release, ch, vals); err != nil {
		return fmt.Errorf("helm upgrade %s: %w", o.Release, err)
	}
	return nil
}

// Uninstall removes the release's objects (helm uninstall). The node
// cleanup is a separate step: docs/install.md#uninstall.
func Uninstall(o Options, c Cluster) error {
	o = o.withDefaults()
	cfg, err := c.config(o.Namespace)
	if err != nil {
		return err
	}
	u := action.NewUninstall(cfg)
	u.WaitStrategy, u.Timeout = c.wait(), c.timeout()
	if _, err := u.Run(o.Release); err != nil {
		return fmt.Errorf("helm uninstall %s: %w", o.Release, err)
	}
	return nil
}

func prepare(o Options, c Cluster) (*chart.Chart, map[string]any, *action.Configuration, error) {
	ch, err := loader.LoadDir(o.Chart)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("load chart %s: %w", o.Chart, err)
	}
	vals, err := o.Values()
	if err != nil {
		return nil, nil, nil, err
	}
	cfg, err := c.config(o.Namespace)
	if err != nil {
		return nil, nil, nil, err
	}
	return ch, vals, cfg, nil
}
