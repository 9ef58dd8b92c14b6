package routing

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"sync"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/trellisnet/trellis/internal/metrics"
)

// Dataplane programs the kernel. Implemented by internal/dataplane.
type Dataplane interface {
	// Underlay finds the interface carrying nodeIP.
	Underlay(nodeIP netip.Addr) (Underlay, error)
	// Apply makes the kernel hold exactly d (for what the agent owns):
	// adopt matching state, add missing, delete unwanted, never flush.
	Apply(ctx context.Context, d *Desired) error
}

// Controller keeps the kernel's routes to remote nodes in sync with Nodes.
type Controller struct {
	nodeName string
	params   Params
	lister   corelisters.NodeLister
	dp       Dataplane
	recorder record.EventRecorder
	metrics  *metrics.Metrics
	onChange func()

	mu       sync.Mutex
	ready    bool
	reason   string
	underlay Underlay
	problems map[string]Problem
}

// NewController returns a routing controller. onChange (may be nil) is
// called whenever readiness changes.
func NewController(nodeName string, params Params, lister corelisters.NodeLister, dp Dataplane,
	recorder record.EventRecorder, m *metrics.Metrics, onChange func()) *Controller {
	return &Controller{
		nodeName: nodeName, params: params, lister: lister, dp: dp, recorder: recorder,
		metrics: m, onChange: onChange, reason: "routes not programmed yet", problems: map[string]Problem{},
	}
}

// Ready reports whether this node's routes have been programmed at least once.
func (c *Controller) Ready() (bool, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ready, c.reason
}

// Underlay returns the underlay found by the last sync (zero before).
func (c *Controller) Underlay() Underlay {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.underlay
}

func (c *Controller) setReady(ready bool, reason string) {
	c.mu.Lock()
	changed := c.ready != ready || c.reason != reason
	c.ready, c.reason = ready, reason
	c.mu.Unlock()
	if changed && c.onChange != nil {
		c.onChange()
	}
}

// Sync is one full-state sync (run it through a syncrunner.Runner).
func (c *Controller) Sync(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithName("routing")
	self, err := c.lister.Get(c.nodeName)
	if apierrors.IsNotFound(err) {
		c.setReady(false, "own Node object not found")
		return fmt.Errorf("node %s not found", c.nodeName)
	}
	if err != nil {
		return fmt.Errorf("get own node %s: %w", c.nodeName, err)
	}
	local := LocalNode{Name: self.Name, NodeIP: NodeIP(self), PodCIDRs: PodCIDRs(self)}
	if !local.NodeIP.IsValid() {
		c.setReady(false, "own Node has no IPv4 InternalIP")
		return fmt.Errorf("node %s has no IPv4 address", c.nodeName)
	}
	if len(ipv4Prefixes(local.PodCIDRs)) == 0 {
		c.setReady(false, "own Node has no pod CIDR yet")
		return fmt.Errorf("node %s has no IPv4 pod CIDR yet (spec.podCIDRs empty)", c.nodeName)
	}
	ul, err := c.dp.Underlay(local.NodeIP)
	if err != nil {
		c.setReady(false, "cannot find the node IP's interface")
		return fmt.Errorf("find underlay interface: %w", err)
	}
	local.Underlay = ul
	c.mu.Lock()
	c.underlay = ul
	c.mu.Unlock()

	nodes, err := c.lister.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	peers := make([]Peer, 0, len(nodes))
	for _, n := range nodes {
		peers = append(peers, PeerFromNode(n))
	}
	d := Compute(local, peers, c.params)
	if err := c.dp.Apply(ctx, d); err != nil {
		return fmt.Errorf("apply routes: %w", err)
	}
	logger.V(2).Info("Programmed routes", "routes", len(d.Routes), "fdb", len(d.FDB), "neighbors", len(d.Neighbors), "problems", len(d.Problems))
	c.report(logger, self, d)
	c.setReady(true, "")
	return nil
}

// report publishes metrics and, for problems that are new, a log line and
// a Warning Event on the affected Node.
func (c *Controller) report(logger klog.Logger, self *v1.Node, d *Desired) {
	if c.metrics != nil {
		counts := map[Path]int{}
		for _, r := range d.Routes {
			counts[r.Path]++
		}
		for _, p := range []Path{PathNative, PathVXLAN} {
			c.metrics.Routes.WithLabelValues(string(p)).Set(float64(counts[p]))
		}
		for _, p := range []string{"native", "vxlan", "none"} {
			c.metrics.Peers.WithLabelValues(p).Set(float64(d.Peers[p]))
		}
		byReason := map[string]int{}
		for _, p := range d.Problems {
			byReason[p.Reason]++
		}
		for _, r := range []string{ReasonNotOnSameSubnet, ReasonNoNodeIP, ReasonNoPodCIDR, ReasonBadVTEPMAC} {
			c.metrics.PeerProblems.WithLabelValues(r).Set(float64(byReason[r]))
		}
		c.metrics.FDBEntries.Set(float64(len(d.FDB)))
		c.metrics.Neighbors.Set(float64(len(d.Neighbors)))
	}
	now := map[string]Problem{}
	for _, p := range d.Problems {
		now[p.Node] = p
	}
	c.mu.Lock()
	prev := c.problems
	c.problems = now
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
		logger.Error(errors.New(p.Message), "Peer unreachable in this routing mode", "node", p.Node, "reason", p.Reason)
		if c.recorder != nil {
			c.recorder.Eventf(self, v1.EventTypeWarning, p.Reason, "%s", p.Message)
		}
	}
}
