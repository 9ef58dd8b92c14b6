package conntrack

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

// Config wires a Controller.
type Config struct {
	// Kernel deletes the entries (Netlink in the agent).
	Kernel Kernel
	// Sync tunes the controller's runner.
	Sync syncrunner.Options
	// Registerer receives the conntrack metrics (nil: not registered).
	Registerer prometheus.Registerer
}

// Controller is the agent's consumer of the pod-interface watch: it
// compares each new list with the previous one (Gone), keeps the addresses
// that went away as pending, and its sync deletes their entries. A failed
// deletion keeps them pending and is retried with backoff; an address is
// pending until its entries are gone.
type Controller struct {
	*syncrunner.Runner
	kernel Kernel

	mu       sync.Mutex
	prev     []podlink.Interface
	havePrev bool
	pending  map[netip.Addr]struct{}

	deleted prometheus.Counter
	errors  prometheus.Counter
	waiting prometheus.Gauge
}

// New returns a conntrack controller.
func New(cfg Config) (*Controller, error) {
	if cfg.Kernel == nil {
		return nil, errors.New("conntrack controller: Kernel is required")
	}
	c := &Controller{kernel: cfg.Kernel, pending: map[netip.Addr]struct{}{},
		deleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_conntrack_deleted_entries_total",
			Help: "Conntrack entries deleted because a local pod address was released or moved to another interface.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_conntrack_delete_errors_total",
			Help: "Failed attempts to delete the conntrack entries of released or moved pod addresses (each is retried).",
		}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trellis_conntrack_pending_addresses",
			Help: "Released or moved pod addresses whose conntrack entries are not deleted yet.",
		}),
	}
	if cfg.Registerer != nil {
		for _, m := range []prometheus.Collector{c.deleted, c.errors, c.waiting} {
			if err := cfg.Registerer.Register(m); err != nil {
				return nil, fmt.Errorf("register conntrack metrics: %w", err)
			}
		}
	}
	c.Runner = syncrunner.New("conntrack", c.Sync, cfg.Sync)
	return c, nil
}

// InterfacesChanged takes the new list of local pod interfaces (the
// podlink.Watcher's OnChange): the addresses that went away since the last
// list become pending, and a sync is triggered. It does not block. The
// first list only sets the baseline (what went away while the agent was
// not watching is the plugin's to forget, on DEL and ADD).
func (c *Controller) InterfacesChanged(l []podlink.Interface) {
	c.mu.Lock()
	var gone []netip.Addr
	if c.havePrev {
		gone = Gone(c.prev, l)
	}
	c.prev, c.havePrev = l, true
	for _, a := range gone {
		c.pending[a] = struct{}{}
	}
	c.waiting.Set(float64(len(c.pending)))
	c.mu.Unlock()
	if len(gone) > 0 {
		c.Trigger()
	}
}

// Pending returns the addresses whose entries are still to be deleted,
// sorted.
func (c *Controller) Pending() []netip.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pendingLocked()
}

func (c *Controller) pendingLocked() []netip.Addr {
	out := make([]netip.Addr, 0, len(c.pending))
	for a := range c.pending {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// Sync deletes the entries of every pending address. Addresses stay
// pending when it fails (the runner retries with backoff).
func (c *Controller) Sync(ctx context.Context) error {
	c.mu.Lock()
	addrs := c.pendingLocked()
	c.mu.Unlock()
	if len(addrs) == 0 {
		return nil
	}
	n, err := c.kernel.DeleteAddrs(addrs)
	c.deleted.Add(float64(n))
	if err != nil {
		c.errors.Inc()
		return err
	}
	c.mu.Lock()
	for _, a := range addrs {
		delete(c.pending, a)
	}
	c.waiting.Set(float64(len(c.pending)))
	c.mu.Unlock()
	klog.FromContext(ctx).WithName("conntrack").V(2).Info("Deleted the conntrack entries of pod addresses that went away", "addresses", addrs, "entries", n)
	return nil
}
