package masq

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/nftwatch"
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
	// Watch, when set, reports the transactions touching the table
	// (nftwatch.Watch opened for unix.NFPROTO_IPV4 and TableName): each one
	// triggers a sync, so a change made by another process (nft flush
	// ruleset) is repaired at once instead of at the next periodic sync.
	Watch TableWatch
}

// TableWatch reports the committed transactions touching the table
// (nftwatch.Watch).
type TableWatch interface {
	Run(ctx context.Context, fn func(nftwatch.Change)) error
}

// Controller keeps the masquerade table equal to what the Nodes and the
// configuration ask for. Run it (the embedded Runner) and Trigger it on
// Node changes.
type Controller struct {
	*syncrunner.Runner
	cfg    Config
	exempt prometheus.Gauge
	guard  *nftwatch.Guard

	// written is what the last sync left in the table (nil: nothing yet
	// known); a sync finding anything else sees a foreign change.
	written *Desired
}

// New returns a masquerade controller.
func New(cfg Config) (*Controller, error) {
	if cfg.NFT == nil || (!cfg.Disabled && (cfg.NodeName == "" || cfg.Nodes == nil)) {
		return nil, errors.New("masquerade controller: NFT, and unless Disabled NodeName and Nodes, are required")
	}
	c := &Controller{cfg: cfg, exempt: prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "trellis_masq_exempt_cidrs",
		Help: "Destination CIDRs exempt from masquerade.",
	}), guard: nftwatch.NewGuard("trellis_masq", "masquerade table")}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(c.exempt); err != nil {
			return nil, fmt.Errorf("register masquerade metrics: %w", err)
		}
		if err := c.guard.Register(cfg.Registerer); err != nil {
			return nil, err
		}
	}
	c.Runner = syncrunner.New("masquerade", c.Sync, cfg.Sync)
	return c, nil
}

// Watch follows the transactions touching the table (Config.Watch) until
// ctx ends, triggering a sync for each; run it beside the runner. Without
// Config.Watch it returns at once: the periodic sync is the only repair.
func (c *Controller) Watch(ctx context.Context) error {
	if c.cfg.Watch == nil {
		return nil
	}
	if err := c.guard.Follow(ctx, c.cfg.Watch, c.Trigger); err != nil {
		return fmt.Errorf("watch the masquerade table: %w", err)
	}
	return nil
}

// Sync programs the masquerade table from the current Nodes (or removes
// it when masquerade is disabled). It commits nothing when the table
// already holds the desired content. When the table no longer holds what
// the previous sync left there, another process changed it: the sync
// reports that (log naming the process of the latest notification,
// trellis_masq_table_changes_total{reason="foreign"}) and rewrites it.
func (c *Controller) Sync(ctx context.Context) error {
	why := c.guard.Take()
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
	found, committed, err := apply(ctx, c.cfg.NFT, d)
	foreign := c.written != nil && found.read && !found.Holds(*c.written)
	c.guard.Report(klog.NewContext(ctx, klog.FromContext(ctx).WithName("masquerade")), why, foreign, committed && err == nil)
	if err != nil {
		// An nftables transaction is atomic: a failed sync left the
		// table as it found it, so what the last good sync wrote stays
		// the reference (forgetting it would let the next sync miss a
		// foreign change that raced this one).
		if committed {
			c.written = &d
		}
		return err
	}
	c.written = &d
	c.exempt.Set(float64(len(d.NoMasquerade)))
	return nil
}
