package masq

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"

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
	// Disabled makes every sync remove the IPv4 table (masquerade turned
	// off by configuration after an earlier run created it).
	Disabled bool
	// ClusterCIDRs and NonMasqueradeCIDRs are destinations never
	// masqueraded (prefixes of either family; each table takes its own).
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

	// NFT6, when set, is bound to the IPv6 family and TableName
	// (NewNFTFamily(knftables.IPv6Family)): the node's IPv6 pod traffic
	// leaving the cluster is masqueraded in it. The table exists only
	// while this node has an IPv6 pod CIDR. nil leaves IPv6 alone.
	NFT6 knftables.Interface
	// DisabledIPv6 makes every sync remove the IPv6 table.
	DisabledIPv6 bool
	// Watch6 is Watch for the IPv6 table (unix.NFPROTO_IPV6).
	Watch6 TableWatch
}

// TableWatch reports the committed transactions touching the table
// (nftwatch.Watch).
type TableWatch interface {
	Run(ctx context.Context, fn func(nftwatch.Change)) error
}

// Controller keeps the masquerade tables equal to what the Nodes and the
// configuration ask for. Run it (the embedded Runner) and Trigger it on
// Node changes.
type Controller struct {
	*syncrunner.Runner
	cfg    Config
	exempt prometheus.Gauge
	// guard is the IPv4 table's guard, which owns the guard metrics.
	guard *nftwatch.Guard
	// tables: IPv4 first, then IPv6 when configured (one instance of the
	// same code per family).
	tables []*familyTable
}

// familyTable is the state of one family's table.
type familyTable struct {
	family   knftables.Family
	nft      knftables.Interface
	watch    TableWatch
	disabled bool
	guard    *nftwatch.Guard
	// onlyWithSources: no table while this node has no pod CIDR of the
	// family, and no nft run to make sure while it is known to be absent
	// (IPv6: an IPv4-only node keeps the ruleset and the syncs it always
	// had).
	onlyWithSources bool

	// written is what the last sync left in the table (nil: nothing yet
	// known); a sync finding anything else sees a foreign change.
	written *Desired
	// absent: the last sync removed the table (or found none).
	absent bool
}

// New returns a masquerade controller.
func New(cfg Config) (*Controller, error) {
	anyOn := !cfg.Disabled || (cfg.NFT6 != nil && !cfg.DisabledIPv6)
	if cfg.NFT == nil || (anyOn && (cfg.NodeName == "" || cfg.Nodes == nil)) {
		return nil, errors.New("masquerade controller: NFT, and unless Disabled NodeName and Nodes, are required")
	}
	guard := nftwatch.NewGuard("trellis_masq", "masquerade table")
	c := &Controller{cfg: cfg, exempt: prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "trellis_masq_exempt_cidrs",
		Help: "Destination CIDRs exempt from masquerade (both families).",
	}), guard: guard, tables: []*familyTable{{family: knftables.IPv4Family, nft: cfg.NFT, watch: cfg.Watch, disabled: cfg.Disabled, guard: guard}}}
	if cfg.NFT6 != nil {
		// Its own guard (its own latest notification) sharing the metrics.
		g6 := nftwatch.NewGuard("trellis_masq", "IPv6 masquerade table")
		g6.Metrics = guard.Metrics
		c.tables = append(c.tables, &familyTable{family: knftables.IPv6Family, nft: cfg.NFT6, watch: cfg.Watch6,
			disabled: cfg.DisabledIPv6, guard: g6, onlyWithSources: true})
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(c.exempt); err != nil {
			return nil, fmt.Errorf("register masquerade metrics: %w", err)
		}
		if err := guard.Register(cfg.Registerer); err != nil {
			return nil, err
		}
	}
	c.Runner = syncrunner.New("masquerade", c.Sync, cfg.Sync)
	return c, nil
}

// Watch follows the transactions touching the tables (Config.Watch,
// Config.Watch6) until ctx ends, triggering a sync for each; run it beside
// the runner. Without watches it returns at once: the periodic sync is the
// only repair.
func (c *Controller) Watch(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(c.tables))
	for i, t := range c.tables {
		if t.watch == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := t.guard.Follow(ctx, t.watch, c.Trigger); err != nil {
				errs[i] = fmt.Errorf("watch the %s masquerade table: %w", t.family, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Sync programs the masquerade tables from the current Nodes (or removes
// a table whose family's masquerade is disabled). It commits nothing to a
// table that already holds the desired content. When a table no longer
// holds what the previous sync left there, another process changed it: the
// sync reports that (log naming the process of the latest notification,
// trellis_masq_table_changes_total{reason="foreign"}) and rewrites it. A
// family's failure does not keep the other's table from being synced.
func (c *Controller) Sync(ctx context.Context) error {
	var local, all []netip.Prefix
	if c.anyEnabled() {
		nodes, err := c.cfg.Nodes.List(labels.Everything())
		if err != nil {
			return fmt.Errorf("list nodes: %w", err)
		}
		for _, n := range nodes {
			cidrs := routing.PodCIDRs(n)
			all = append(all, cidrs...)
			if n.Name == c.cfg.NodeName {
				local = cidrs
			}
		}
	}
	var errs []error
	exempt := 0
	for _, t := range c.tables {
		d := ComputeFamily(t.family, local, c.cfg.ClusterCIDRs, all, c.cfg.NonMasqueradeCIDRs)
		if err := c.syncTable(ctx, t, d); err != nil {
			errs = append(errs, err)
			continue
		}
		if !t.absent {
			exempt += len(d.NoMasquerade)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	c.exempt.Set(float64(exempt))
	return nil
}

func (c *Controller) anyEnabled() bool {
	for _, t := range c.tables {
		if !t.disabled {
			return true
		}
	}
	return false
}

// syncTable brings one family's table to d, or removes it when the family
// is disabled (or, onlyWithSources, d has no pod source).
func (c *Controller) syncTable(ctx context.Context, t *familyTable, d Desired) error {
	why := t.guard.Take()
	if t.disabled || (t.onlyWithSources && len(d.PodSources) == 0) {
		// Known absent and no notification since: nothing to do.
		if t.onlyWithSources && t.absent && why == (nftwatch.Change{}) {
			return nil
		}
		if err := Remove(ctx, t.nft); err != nil {
			return err
		}
		t.written, t.absent = nil, true
		return nil
	}
	t.absent = false
	found, committed, err := apply(ctx, t.nft, d)
	foreign := t.written != nil && found.read && !found.Holds(*t.written)
	t.guard.Report(klog.NewContext(ctx, klog.FromContext(ctx).WithName("masquerade")), why, foreign, committed && err == nil)
	if err != nil {
		// An nftables transaction is atomic: a failed sync left the
		// table as it found it, so what the last good sync wrote stays
		// the reference (forgetting it would let the next sync miss a
		// foreign change that raced this one).
		if committed {
			t.written = &d
		}
		return err
	}
	t.written = &d
	return nil
}
