package agent

import (
	"context"
	"fmt"
	"net/netip"

	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/masq"
	"github.com/trellisnet/trellis/internal/metrics"
	"github.com/trellisnet/trellis/internal/routing"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

// masqController feeds the masquerade table from the Node lister.
type masqController struct {
	cfg    *config.Config
	lister corelisters.NodeLister
	nft    knftables.Interface
	m      *metrics.Metrics
}

func newMasqRunner(cfg *config.Config, lister corelisters.NodeLister, nft knftables.Interface, m *metrics.Metrics, opts syncrunner.Options) *syncrunner.Runner {
	c := &masqController{cfg: cfg, lister: lister, nft: nft, m: m}
	return syncrunner.New("masquerade", c.Sync, opts)
}

// Sync programs the masquerade table from the current Nodes.
func (c *masqController) Sync(ctx context.Context) error {
	if !c.cfg.MasqueradeEnabled() {
		return masq.Remove(ctx, c.nft)
	}
	nodes, err := c.lister.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	var local, all []netip.Prefix
	for _, n := range nodes {
		cidrs := routing.PodCIDRs(n)
		all = append(all, cidrs...)
		if n.Name == c.cfg.NodeName {
			local = cidrs
		}
	}
	d := masq.Compute(local, c.cfg.ClusterCIDRs, all, c.cfg.NonMasqueradeCIDRs)
	if err := masq.Apply(ctx, c.nft, d); err != nil {
		return err
	}
	c.m.MasqRules.Set(float64(len(d.NoMasquerade)))
	return nil
}
