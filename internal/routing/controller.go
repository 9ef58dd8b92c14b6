package routing

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/syncrunner"
	"github.com/trellisnet/trellis/internal/wireguard"
)

// Dataplane programs the kernel. Implemented by internal/routing/netlinkprog.
type Dataplane interface {
	// Underlay finds the interface carrying nodeIP.
	Underlay(nodeIP netip.Addr) (Underlay, error)
	// Apply makes the kernel hold exactly d (for what the agent owns):
	// adopt matching state, add missing, delete unwanted, never flush.
	Apply(ctx context.Context, d *Desired) error
}

// IncrementalDataplane is a Dataplane that can also apply a desired state
// from its record of what it programmed last, without listing the kernel:
// a sync for one changed Node then costs that Node's entries only. The
// controller calls Apply for its first sync and at least every
// Config.Sync.MaxInterval (repairing what others changed), ApplyChanges
// otherwise.
type IncrementalDataplane interface {
	Dataplane
	// ApplyChanges makes the kernel hold d, writing only what differs from
	// what the dataplane programmed last; with no record of that (first
	// call, after a failure) it is Apply.
	ApplyChanges(ctx context.Context, d *Desired) error
}

// Config wires a Controller.
type Config struct {
	// NodeName is this node.
	NodeName string
	Params   Params
	// Nodes lists every Node.
	Nodes corelisters.NodeLister
	// Kernel programs the desired state.
	Kernel Dataplane
	// Recorder receives Warning Events about unreachable peers (nil: none).
	Recorder record.EventRecorder
	// OnReadyChange (nil: none) is called whenever readiness changes.
	OnReadyChange func()
	// Sync tunes the controller's runner.
	Sync syncrunner.Options
	// Registerer receives the routing metrics (nil: not registered).
	Registerer prometheus.Registerer
}

// Controller keeps the kernel's routes to remote nodes in sync with Nodes.
// Run it (the embedded Runner) and Trigger it on Node changes.
type Controller struct {
	*syncrunner.Runner
	cfg     Config
	metrics *routingMetrics

	mu       sync.Mutex
	ready    bool
	reason   string
	underlay Underlay
	// underlay6 is the IPv6 node IP's underlay (zero: not used).
	underlay6 Underlay
	problems  map[string]Problem
	last      *Desired // what the last successful sync programmed
	// cache holds the last desired state and what it was computed from.
	cache computeCache
	// lastFull is when the last sync through Kernel.Apply (listing the
	// kernel) succeeded.
	lastFull time.Time
}

// New returns a routing controller.
func New(cfg Config) (*Controller, error) {
	if cfg.NodeName == "" || cfg.Nodes == nil || cfg.Kernel == nil {
		return nil, errors.New("routing controller: NodeName, Nodes and Kernel are required")
	}
	c := &Controller{cfg: cfg, metrics: newRoutingMetrics(), reason: "routes not programmed yet", problems: map[string]Problem{}}
	if cfg.Registerer != nil {
		if err := c.metrics.register(cfg.Registerer); err != nil {
			return nil, err
		}
	}
	c.Runner = syncrunner.New("routing", c.Sync, cfg.Sync)
	return c, nil
}

// Ready reports whether this node's routes have been programmed at least once.
func (c *Controller) Ready() (bool, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ready, c.reason
}

// Underlay returns the IPv4 node IP's underlay found by the last sync
// (zero before, or on a node without an IPv4 node IP).
func (c *Controller) Underlay() Underlay {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.underlay
}

// Underlays returns the underlays found by the last sync, IPv4's first;
// only those in use (at most one per family).
func (c *Controller) Underlays() []Underlay {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Underlay
	for _, ul := range []Underlay{c.underlay, c.underlay6} {
		if ul.Device != "" {
			out = append(out, ul)
		}
	}
	return out
}

// unroutableFamily is why this node cannot route one of its pod CIDRs'
// families at all ("" when it can): in routingMode native, a family needs
// a node IP of that family (the next hop of the peers' routes); VXLAN
// carries any inner family over whichever node IP the node has.
func unroutableFamily(local LocalNode, fams families, p Params) string {
	if p.Mode != config.ModeNative {
		return ""
	}
	for _, v6 := range []bool{false, true} {
		has := fams.v4
		if v6 {
			has = fams.v6
		}
		if has && !local.nodeIP(v6).IsValid() {
			return fmt.Sprintf("own Node has an %s pod CIDR but no %s InternalIP: routingMode native cannot route it (use auto or vxlan)",
				familyName(v6), familyName(v6))
		}
	}
	return ""
}

// Programmed returns the desired state the last successful sync applied
// (nil before one). Callers must not modify it.
func (c *Controller) Programmed() *Desired {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

func (c *Controller) setReady(ready bool, reason string) {
	c.mu.Lock()
	changed := c.ready != ready || c.reason != reason
	c.ready, c.reason = ready, reason
	c.mu.Unlock()
	if changed && c.cfg.OnReadyChange != nil {
		c.cfg.OnReadyChange()
	}
}

// Sync is one full-state sync: the desired state for every Node (the last
// one extended when the only change is Nodes that joined, see extend.go),
// applied in full or as changes (see IncrementalDataplane).
func (c *Controller) Sync(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithName("routing")
	self, err := c.cfg.Nodes.Get(c.cfg.NodeName)
	if apierrors.IsNotFound(err) {
		c.setReady(false, "own Node object not found")
		return fmt.Errorf("node %s not found", c.cfg.NodeName)
	}
	if err != nil {
		return fmt.Errorf("get own node %s: %w", c.cfg.NodeName, err)
	}
	ownKey, _ := wireguard.PublicKeyFromNode(self)
	local := LocalNode{Name: self.Name, NodeIP: NodeIP(self), NodeIP6: NodeIP6(self), PodCIDRs: PodCIDRs(self), PublicKey: ownKey}
	if !UsesIPv6Underlay(local.NodeIP, local.NodeIP6, local.PodCIDRs) {
		local.NodeIP6 = netip.Addr{}
	}
	if !local.NodeIP.IsValid() && !local.NodeIP6.IsValid() {
		c.setReady(false, "own Node has no InternalIP (IPv4 or IPv6)")
		return fmt.Errorf("node %s has no IPv4 or IPv6 address", c.cfg.NodeName)
	}
	fams := familiesOf(local.PodCIDRs)
	if !fams.v4 && !fams.v6 {
		c.setReady(false, "own Node has no pod CIDR yet")
		return fmt.Errorf("node %s has no pod CIDR yet (spec.podCIDRs empty)", c.cfg.NodeName)
	}
	if why := unconfiguredFamily(fams, c.cfg.Params.ClusterCIDRs); why != "" {
		c.setReady(false, why)
		return fmt.Errorf("node %s: %s", c.cfg.NodeName, why)
	}
	if why := unroutableFamily(local, fams, c.cfg.Params); why != "" {
		c.setReady(false, why)
		return fmt.Errorf("node %s: %s", c.cfg.NodeName, why)
	}
	// Every family the node has is needed: an underlay missing in either
	// leaves the node not ready.
	for _, v6 := range []bool{false, true} {
		ip := local.nodeIP(v6)
		if !ip.IsValid() {
			continue
		}
		ul, err := c.cfg.Kernel.Underlay(ip)
		if err != nil {
			c.setReady(false, "cannot find the "+familyName(v6)+" node IP's interface")
			return fmt.Errorf("find %s underlay interface: %w", familyName(v6), err)
		}
		if v6 {
			local.Underlay6 = ul
		} else {
			local.Underlay = ul
		}
	}
	c.mu.Lock()
	c.underlay, c.underlay6 = local.Underlay, local.Underlay6
	c.mu.Unlock()

	nodes, err := c.cfg.Nodes.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	d := c.cache.desired(local, nodes, c.cfg.Params)
	var foreign *ForeignRouteError
	switch err := c.apply(ctx, d); {
	case errors.As(err, &foreign):
		// Everything else is programmed: report, do not retry. (d stays
		// as computed: the cache extends it.)
		withForeign := *d
		withForeign.Problems = append(slices.Clone(d.Problems), foreign.Problems()...)
		sort.SliceStable(withForeign.Problems, func(i, j int) bool { return withForeign.Problems[i].Node < withForeign.Problems[j].Node })
		d = &withForeign
	case err != nil:
		return fmt.Errorf("apply routes: %w", err)
	}
	logger.V(2).Info("Programmed routes", "routes", len(d.Routes), "fdb", len(d.FDB), "neighbors", len(d.Neighbors), "problems", len(d.Problems))
	c.report(logger, self, d)
	c.setReady(true, "")
	return nil
}

// apply programs d: through ApplyChanges when the kernel offers it and a
// full Apply succeeded within Config.Sync.MaxInterval, else through Apply.
func (c *Controller) apply(ctx context.Context, d *Desired) error {
	inc, ok := c.cfg.Kernel.(IncrementalDataplane)
	now := time.Now()
	if ok && !c.lastFull.IsZero() && now.Sub(c.lastFull) < c.cfg.Sync.MaxInterval {
		return inc.ApplyChanges(ctx, d)
	}
	err := c.cfg.Kernel.Apply(ctx, d)
	var foreign *ForeignRouteError
	if err == nil || errors.As(err, &foreign) {
		c.lastFull = now
	}
	return err
}

// ForeignRouteError is returned by a Dataplane that programmed everything
// but Routes, whose destinations hold routes Trellis does not own (another
// protocol); those are left alone.
type ForeignRouteError struct {
	Routes []Route
}

func (e *ForeignRouteError) Error() string {
	dsts := make([]string, len(e.Routes))
	for i, r := range e.Routes {
		dsts[i] = r.Dst.String()
	}
	return "routes not programmed, held by another owner: " + strings.Join(dsts, ", ")
}

// Problems are the skipped routes as problems of the nodes they lead to.
func (e *ForeignRouteError) Problems() []Problem {
	out := make([]Problem, 0, len(e.Routes))
	for _, r := range e.Routes {
		out = append(out, Problem{Node: r.Node, Reason: ReasonForeignRoute, Message: fmt.Sprintf(
			"a route to %s (pod CIDR of node %s) is held by another owner (not protocol 158); Trellis leaves it alone and programs none",
			r.Dst, r.Node)})
	}
	return out
}

// report publishes metrics and, for problems that are new, a log line and
// a Warning Event on the affected Node.
func (c *Controller) report(logger klog.Logger, self *v1.Node, d *Desired) {
	c.metrics.observe(d)
	now := map[string]Problem{}
	for _, p := range d.Problems {
		now[p.Node] = p
	}
	c.mu.Lock()
	prev := c.problems
	c.problems, c.last = now, d
	c.mu.Unlock()
	names := make([]string, 0, len(now))
	for n := range now {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := now[n]
		if old, ok := prev[n]; ok && old == p {
			continue
		}
		if p.Reason == ReasonNoPodCIDR || p.Reason == ReasonNoNodeIP {
			// Transient while a node registers: not a misconfiguration.
			logger.V(2).Info("Peer not routable yet", "node", p.Node, "reason", p.Reason, "message", p.Message)
			continue
		}
		logger.Error(errors.New(p.Message), "Peer not programmed", "node", p.Node, "reason", p.Reason)
		if c.cfg.Recorder != nil {
			c.cfg.Recorder.Eventf(self, v1.EventTypeWarning, p.Reason, "%s", p.Message)
		}
	}
}
