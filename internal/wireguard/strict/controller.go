package strict

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/knftables"

	"github.com/trellisnet/trellis/internal/nftwatch"
	"github.com/trellisnet/trellis/internal/routing"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

// RunnerName is the controller's runner name (the controller label of the
// trellis_agent_sync* metrics; the agent's dataplane status keys on it).
const RunnerName = "encryption-strict"

// metricsNamespace prefixes the controller's metrics.
const metricsNamespace = "trellis_encryption_strict"

// Config wires a Controller.
type Config struct {
	// NodeName is this node: its pod CIDRs are delivered locally.
	NodeName string
	// Disabled makes every sync remove the table (encryption or strict
	// mode turned off after an earlier run created it).
	Disabled bool
	// ClusterCIDRs are pod destinations whatever the Nodes say.
	ClusterCIDRs []netip.Prefix
	// Device is the WireGuard device's name.
	Device string
	// LogGroup, when not 0, logs dropped packets to this nflog group.
	LogGroup uint16
	// Nodes lists every Node (their pod CIDRs are pod destinations).
	Nodes corelisters.NodeLister
	// NFT is bound to the inet family and TableName (NewNFT).
	NFT knftables.Interface
	// Sync tunes the controller's runner.
	Sync syncrunner.Options
	// Registerer receives the metrics (nil: not registered).
	Registerer prometheus.Registerer
	// Watch, when set, reports the transactions touching the table
	// (nftwatch.Watch opened for unix.NFPROTO_INET and TableName): each
	// one triggers a sync, so a change made by another process (nft flush
	// ruleset) is repaired at once instead of at the next periodic sync.
	Watch nftwatch.Runner
}

// Controller keeps the strict table equal to what the Nodes and the
// configuration ask for. Run it (the embedded Runner) and Trigger it on
// Node changes.
type Controller struct {
	*syncrunner.Runner
	cfg     Config
	pods    prometheus.Gauge
	guard   *nftwatch.Guard
	dropped *droppedCollector

	// written is what the last sync left in the table (nil: nothing yet
	// known); a sync finding anything else sees a foreign change.
	written *Desired
}

// New returns a strict-mode controller.
func New(cfg Config) (*Controller, error) {
	if cfg.NFT == nil || (!cfg.Disabled && (cfg.NodeName == "" || cfg.Nodes == nil || cfg.Device == "")) {
		return nil, errors.New("strict encryption controller: NFT, and unless Disabled NodeName, Nodes and Device, are required")
	}
	c := &Controller{cfg: cfg,
		pods: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: metricsNamespace, Name: "pod_cidrs",
			Help: "Pod destination CIDRs (cluster CIDRs and every node's pod CIDRs, collapsed, both families) that may leave this node only through the WireGuard device.",
		}),
		guard:   nftwatch.NewGuard(metricsNamespace, "strict encryption table"),
		dropped: newDroppedCollector(cfg.NFT),
	}
	if cfg.Registerer != nil {
		cols := []prometheus.Collector{c.pods}
		if !cfg.Disabled { // no table to read the counter of
			cols = append(cols, c.dropped)
		}
		for _, col := range cols {
			if err := cfg.Registerer.Register(col); err != nil {
				return nil, fmt.Errorf("register strict encryption metrics: %w", err)
			}
		}
		if err := c.guard.Register(cfg.Registerer); err != nil {
			return nil, err
		}
	}
	c.Runner = syncrunner.New(RunnerName, c.Sync, cfg.Sync)
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
		return fmt.Errorf("watch the strict encryption table: %w", err)
	}
	return nil
}

// Desired computes the table's content from the current Nodes.
func (c *Controller) Desired() (Desired, error) {
	nodes, err := c.cfg.Nodes.List(labels.Everything())
	if err != nil {
		return Desired{}, fmt.Errorf("list nodes: %w", err)
	}
	var local, all []netip.Prefix
	for _, n := range nodes {
		cidrs := routing.PodCIDRs(n)
		all = append(all, cidrs...)
		if n.Name == c.cfg.NodeName {
			local = cidrs
		}
	}
	return Compute(local, c.cfg.ClusterCIDRs, all, c.cfg.Device, c.cfg.LogGroup), nil
}

// Sync programs the table from the current Nodes (or removes it when
// disabled). It commits nothing when the table already holds the desired
// content. When the table no longer holds what the previous sync left
// there, another process changed it: the sync reports that (log naming the
// process of the latest notification,
// trellis_encryption_strict_table_changes_total{reason="foreign"}) and
// rewrites it.
func (c *Controller) Sync(ctx context.Context) error {
	why := c.guard.Take()
	if c.cfg.Disabled {
		return Remove(ctx, c.cfg.NFT)
	}
	d, err := c.Desired()
	if err != nil {
		return err
	}
	found, committed, err := apply(ctx, c.cfg.NFT, d)
	foreign := c.written != nil && found.read && !found.Holds(*c.written)
	c.guard.Report(klog.NewContext(ctx, klog.FromContext(ctx).WithName(RunnerName)), why, foreign, committed && err == nil)
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
	c.pods.Set(float64(len(d.Pods) + len(d.Pods6)))
	return nil
}

// droppedCollector exports the table's drop counter as
// trellis_encryption_strict_dropped_packets_total, reading the kernel at
// most once per cacheFor whatever the number of scrapers.
type droppedCollector struct {
	nft      knftables.Interface
	desc     *prometheus.Desc
	cacheFor time.Duration

	mu       sync.Mutex
	lastRead time.Time
	packets  uint64
	ok       bool // the last read found the counter
}

func newDroppedCollector(nft knftables.Interface) *droppedCollector {
	return &droppedCollector{nft: nft, cacheFor: 5 * time.Second,
		desc: prometheus.NewDesc(metricsNamespace+"_dropped_packets_total",
			"Pod packets to other nodes the strict encryption table dropped because they would have left unencrypted (the kernel counter; it restarts at 0 when the table is re-created).",
			nil, nil)}
}

func (dc *droppedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- dc.desc }

func (dc *droppedCollector) Collect(ch chan<- prometheus.Metric) {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	if dc.lastRead.IsZero() || time.Since(dc.lastRead) >= dc.cacheFor {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		dc.packets, dc.ok = readDropped(ctx, dc.nft)
		cancel()
		dc.lastRead = time.Now()
	}
	if !dc.ok {
		return
	}
	if m, err := prometheus.NewConstMetric(dc.desc, prometheus.CounterValue, float64(dc.packets)); err == nil {
		ch <- m
	}
}

// readDropped returns the drop counter's packets; false when the table or
// counter is absent (strict mode off) or cannot be read.
func readDropped(ctx context.Context, nft knftables.Interface) (uint64, bool) {
	// List first: knftables' fake ListCounters cannot handle a missing table.
	names, err := nft.List(ctx, "counters")
	if err != nil || len(names) == 0 {
		return 0, false
	}
	counters, err := nft.ListCounters(ctx)
	if err != nil {
		return 0, false
	}
	for _, ct := range counters {
		if ct != nil && ct.Name == CounterName {
			if ct.Packets == nil {
				return 0, true
			}
			return *ct.Packets, true
		}
	}
	return 0, false
}

// Dropped reads the drop counter from the kernel now (tests, status).
func (c *Controller) Dropped(ctx context.Context) (uint64, bool) {
	return readDropped(ctx, c.cfg.NFT)
}
