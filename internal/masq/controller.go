package masq

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/routing"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

// Config wires a Controller.
type Config struct {
	// NodeName is this node: its pod CIDRs are the sources masqueraded.
	NodeName string
	// Disabled makes every sync remove the table (masquerade turned off by
	// configuration after an earlier run created it).
	Disabled bool
	// ClusterCIDRs and NonMasqueradeCIDRs are destinations never masqueraded.
	ClusterCIDRs, NonMasqueradeCIDRs []netip.Prefix
	// Nodes lists every Node (their pod CIDRs are exempt destinations).
	Nodes corelisters.NodeLister
	// NFT is bound to the IPv4 family and TableName (NewNFT).
	NFT knftables.Interface
	// Sync tunes the controller's runner.
	Sync syncrunner.Options
	// Registerer receives the masquerade metrics (nil: not registered).
	Registerer prometheus.Registerer
}

// Controller keeps the masquerade table equal to what the Nodes and the
// configuration ask for. Run it (the embedded Runner) and Trigger it on
// Node changes.
type Controller struct {
	*syncrunner.Runner
	cfg    Config
	exempt prometheus.Gauge
}

// New returns a masquerade controller.
func New(cfg Config) (*Controller, error) {
	if cfg.NFT == nil || (!cfg.Disabled && (cfg.NodeName == "" || cfg.Nodes == nil)) {
		return nil, errors.New("masquerade controller: NFT, and unless Disabled NodeName and Nodes, are required")
	}
	c := &Controller{cfg: cfg, exempt: prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "trellis_masq_exempt_cidrs",
		Help: "Destination CIDRs exempt from masquerade.",
	})}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(c.exempt); err != nil {
			return nil, fmt.Errorf("register masquerade metrics: %w", err)
		}
	}
	c.Runner = syncrunner.New("masquerade", c.Sync, cfg.Sync)
	return c, nil
}

// Sync programs the masquerade table from the current Nodes (or removes
// it when masquerade is disabled).
func (c *Controller) Sync(ctx context.Context) error {
	if c.cfg.Disabled {
		return Remove(ctx, c.cfg.NFT)
	}
	nodes, err := c.cfg.Nodes.List(labels.Everything())
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
	d := Compute(local, c.cfg.ClusterCIDRs, all, c.cfg.NonMasqueradeCIDRs)
	if err := Apply(ctx, c.cfg.NFT, d); err != nil {
		return err
	}
	c.exempt.Set(float64(len(d.NoMasquerade)))
	return nil
}
