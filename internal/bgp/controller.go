package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	v1alpha1 "github.com/trellisnet/trellis/internal/apis/bgp/v1alpha1"
	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

// StatusWriter applies the node's BGPNodeStatus (internal/kubeclient).
type StatusWriter interface {
	ApplyNodeStatus(ctx context.Context, st *v1alpha1.BGPNodeStatus) (*v1alpha1.BGPNodeStatus, error)
}

// Config wires a Controller.
type Config struct {
	// NodeName is this node; its BGPNodeStatus carries the name.
	NodeName string
	// Mode is the agent's routing mode; ClusterCIDRs its cluster CIDRs.
	Mode         config.RoutingMode
	ClusterCIDRs []netip.Prefix
	// Nodes lists every Node.
	Nodes corelisters.NodeLister
	// Sources returns the BGP caches, synced, with known true; nil and
	// known true when the BGP API is not served (CRDs not installed): BGP
	// is then off. known false: not decided yet (the first discovery or
	// the caches' first list still running); a sync then does nothing.
	Sources func() (src *Sources, known bool)
	// NewSpeaker creates the speaker on first use (nil: not built into
	// this agent; BGP stays off and says so).
	NewSpeaker func() Speaker
	// Kernel programs learned routes (nil: not built in, like NewSpeaker).
	Kernel KernelRoutes
	// Status writes the node's BGPNodeStatus (nil: none).
	Status StatusWriter
	// StatusInterval is the least time between two status writes
	// (default 5 s); changes in between are written after it.
	StatusInterval time.Duration
	// StateFile (default DefaultStateFile) and BootID (nil: unknown) are
	// for restart detection.
	StateFile string
	BootID    func() (string, error)
	// Compute is the desired-state function (nil: Compute).
	Compute func(Input) (Desired, []Problem)
	// Recorder receives Warning Events on the own Node (nil: none).
	Recorder record.EventRecorder
	// Registerer receives the BGP metrics (nil: not registered).
	Registerer prometheus.Registerer
	// Sync tunes the controller's runner.
	Sync syncrunner.Options
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Reasons BGP is off, as the node status says them.
const (
	offNotServed       = "the BGP API (bgp.trellis.dev/v1alpha1) is not served: the CRDs are not installed"
	offNoConfiguration = "no BGPConfiguration named default"
	offSpeakerMissing  = "BGP is configured, but this agent has no BGP speaker built in"
	offUnusable        = "the BGPConfiguration default cannot be used on this node (see the other conditions)"
)

// Controller drives the node's BGP speaker and the kernel routes it
// learns from the BGP objects: every sync computes the desired speaker
// state (Compute), applies it, installs what the import policy accepts of
// what the speaker learned, and reports the sessions in the node's
// BGPNodeStatus. Run it (the embedded Runner) and Watch (speaker changes);
// Trigger it on changes of the BGP objects, Services and Nodes.
type Controller struct {
	*syncrunner.Runner
	cfg     Config
	metrics *bgpMetrics

	mu      sync.Mutex
	speaker Speaker
	// startedAt is when the speaker was first started (graceful-restart
	// timer for neighbours that do not come back); zero before.
	startedAt time.Time
	// restarting: decided once, at the first enabled sync.
	restartDecided, restarting bool
	// converged: the stale routes were swept once; from then on the
	// speaker's learned set is authoritative and every sync sweeps.
	converged    bool
	stateWritten bool
	offReason    string
	problems     map[Problem]bool
	status       *v1alpha1.BGPNodeStatus // last written
	statusAt     time.Time
	statusTimer  *time.Timer
	changes      chan struct{}
	last         syncResult
}

// syncResult is one sync's outcome (metrics, status, tests).
type syncResult struct {
	desired  Desired
	peers    []PeerState
	routes   []KernelRoute
	foreign  []KernelRoute
	sweep    bool
	problems []Problem
}

// New returns a BGP controller.
func New(cfg Config) (*Controller, error) {
	if cfg.NodeName == "" || cfg.Nodes == nil || cfg.Sources == nil {
		return nil, errors.New("bgp controller: NodeName, Nodes and Sources are required")
	}
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = 5 * time.Second
	}
	if cfg.StateFile == "" {
		cfg.StateFile = DefaultStateFile
	}
	if cfg.Compute == nil {
		cfg.Compute = Compute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Controller{cfg: cfg, metrics: newBGPMetrics(), problems: map[Problem]bool{}, changes: make(chan struct{}, 1)}
	if cfg.Registerer != nil {
		if err := c.metrics.register(cfg.Registerer); err != nil {
			return nil, err
		}
	}
	c.Runner = syncrunner.New("bgp", c.Sync, cfg.Sync)
	return c, nil
}

// Watch triggers a sync whenever the speaker reports a change of its
// sessions or learned routes, until ctx is cancelled; then it stops the
// speaker without NOTIFICATION (peers keep this node's routes for the
// graceful-restart time; the kernel keeps the learned routes).
func (c *Controller) Watch(ctx context.Context) error {
	for {
		c.mu.Lock()
		sp := c.speaker
		c.mu.Unlock()
		var ch <-chan struct{}
		if sp != nil {
			ch = sp.Changes()
		}
		select {
		case <-ctx.Done():
			c.stop()
			return nil
		case <-ch:
			c.Trigger()
		case <-c.changes: // the speaker was created: watch it
		}
	}
}

func (c *Controller) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.speaker != nil {
		c.speaker.Stop()
	}
	if c.statusTimer != nil {
		c.statusTimer.Stop()
	}
}

// Summary is the last sync's outcome: whether the speaker runs (else
// why not), and how many of its sessions are established.
func (c *Controller) Summary() (enabled bool, offReason string, established, configured int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.last.peers {
		if p.State == StateEstablished {
			established++
		}
	}
	return c.last.desired.Enabled, c.offReason, established, len(c.last.desired.Neighbors)
}

// Sync is one full-state sync.
func (c *Controller) Sync(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithName("bgp")
	now := c.cfg.Now()
	self, err := c.cfg.Nodes.Get(c.cfg.NodeName)
	if err != nil {
		return fmt.Errorf("get own node %s: %w", c.cfg.NodeName, err)
	}
	src, known := c.cfg.Sources()
	if !known {
		logger.V(2).Info("Waiting for the BGP API discovery and caches")
		return nil
	}
	if src == nil {
		return c.off(ctx, logger, self, offNotServed, nil, false)
	}
	in, err := c.input(self, src)
	if err != nil {
		return err
	}
	if in.Config == nil {
		return c.off(ctx, logger, self, offNoConfiguration, nil, true)
	}
	if c.cfg.NewSpeaker == nil || c.cfg.Kernel == nil {
		return c.off(ctx, logger, self, offSpeakerMissing, nil, true)
	}
	d, problems := c.cfg.Compute(in)
	if !d.Enabled {
		return c.off(ctx, logger, self, offUnusable, problems, true)
	}
	logger.V(5).Info("Desired speaker state", "global", d.Global, "neighbors", redacted(d.Neighbors), "paths", d.Paths, "import", d.Import)
	sp, err := c.ensureSpeaker(logger, d)
	if err != nil {
		return err
	}
	d.Global.GracefulRestart.Restarting = c.restarting
	if err := sp.Apply(ctx, d); err != nil {
		// Said in the status too (e.g. the listener's port refused), then
		// retried with backoff.
		err = fmt.Errorf("apply the speaker's configuration: %w", err)
		problems = append(problems, Problem{Reason: "SpeakerFailed", Object: "Node/" + c.cfg.NodeName, Message: err.Error()})
		c.reportProblems(logger, self, problems)
		if ferr := c.finish(ctx, logger, syncResult{desired: d, peers: sp.Peers(), problems: problems}, "", true); ferr != nil {
			logger.Error(ferr, "Cannot report the speaker's failure in the node status")
		}
		return err
	}
	peers := sp.Peers()
	routes := importable(d.Import, sp.Learned())
	sweep := c.sweepAllowed(d, peers, now)
	foreign, err := c.cfg.Kernel.Apply(routes, sweep)
	if err != nil && !OnlyKernelRouteErrors(err) {
		return fmt.Errorf("install learned routes: %w", err)
	}
	// Routes that could not be installed (next hop unresolvable): the
	// others are; report these, do not retry in a loop.
	for _, re := range KernelRouteErrors(err) {
		problems = append(problems, Problem{Reason: "RouteNotInstalled", Object: re.Route.Prefix.String(), Message: re.Error()})
	}
	for _, f := range foreign {
		problems = append(problems, Problem{Reason: "ForeignRoute", Object: f.Prefix.String(), Message: fmt.Sprintf(
			"the learned route to %s via %s is not installed: another owner's route (not protocol %d) holds the prefix", f.Prefix, f.NextHop, kernelProtocol)})
	}
	if sweep {
		c.mu.Lock()
		c.converged = true
		c.mu.Unlock()
	}
	c.recordEstablished(logger, peers, now)
	c.reportProblems(logger, self, problems)
	logger.V(2).Info("Synced", "neighbors", len(d.Neighbors), "paths", len(d.Paths), "learned", len(routes), "sweep", sweep, "problems", len(problems))
	return c.finish(ctx, logger, syncResult{desired: d, peers: peers, routes: routes, foreign: foreign, sweep: sweep, problems: problems}, "", true)
}

// off stops the speaker and removes the learned routes (BGP turned off),
// says why once, and (writeStatus) reports it in the node status when one
// was written before.
func (c *Controller) off(ctx context.Context, logger klog.Logger, self *v1.Node, reason string, problems []Problem, writeStatus bool) error {
	c.mu.Lock()
	sp, first := c.speaker, c.offReason != reason
	c.offReason = reason
	c.mu.Unlock()
	if first {
		logger.Info("BGP is off", "reason", reason)
		if reason == offSpeakerMissing && c.cfg.Recorder != nil {
			c.cfg.Recorder.Eventf(self, v1.EventTypeWarning, "BGPSpeakerMissing", "%s", reason)
		}
	}
	if sp != nil {
		if err := sp.Apply(ctx, Desired{}); err != nil {
			return fmt.Errorf("stop the speaker: %w", err)
		}
	}
	if c.cfg.Kernel != nil && (sp != nil || reason != offNotServed) {
		// BGP was on in this process, or the API says it is off now (an
		// earlier agent's routes are no longer wanted): the learned routes
		// go. An agent that starts while the API does not serve the BGP
		// group leaves the kernel alone.
		if _, err := c.cfg.Kernel.Apply(nil, true); err != nil {
			return fmt.Errorf("remove learned routes: %w", err)
		}
	}
	c.reportProblems(logger, self, problems)
	return c.finish(ctx, logger, syncResult{problems: problems}, reason, writeStatus)
}

// finish publishes metrics and the node status.
func (c *Controller) finish(ctx context.Context, logger klog.Logger, res syncResult, offReason string, writeStatus bool) error {
	c.metrics.observe(res)
	c.mu.Lock()
	c.last = res
	c.offReason = offReason
	c.mu.Unlock()
	if !writeStatus || c.cfg.Status == nil {
		return nil
	}
	c.mu.Lock()
	wroteBefore := c.status != nil
	c.mu.Unlock()
	if !res.desired.Enabled && !wroteBefore {
		// A cluster that does not use BGP gets no status objects.
		return nil
	}
	return c.writeStatus(ctx, logger, res, offReason)
}

// writeStatus applies the node status when it changed, at most every
// StatusInterval (a change sooner is written by a later sync).
func (c *Controller) writeStatus(ctx context.Context, logger klog.Logger, res syncResult, offReason string) error {
	now := c.cfg.Now()
	c.mu.Lock()
	prev, at := c.status, c.statusAt
	c.mu.Unlock()
	var prevConds []metav1.Condition
	if prev != nil {
		prevConds = prev.Status.Conditions
	}
	st := buildStatus(c.cfg.NodeName, res.desired, offReason, res.peers, res.problems, prevConds, now)
	if sameStatus(prev, st) {
		return nil
	}
	if wait := c.cfg.StatusInterval - now.Sub(at); prev != nil && wait > 0 {
		c.mu.Lock()
		if c.statusTimer == nil {
			c.statusTimer = time.AfterFunc(wait, func() {
				c.mu.Lock()
				c.statusTimer = nil
				c.mu.Unlock()
				c.Trigger()
			})
		}
		c.mu.Unlock()
		return nil
	}
	if _, err := c.cfg.Status.ApplyNodeStatus(ctx, st); err != nil {
		c.metrics.statusWrites.WithLabelValues("error").Inc()
		return fmt.Errorf("write the node's BGPNodeStatus: %w", err)
	}
	c.metrics.statusWrites.WithLabelValues("ok").Inc()
	logger.V(2).Info("Wrote BGPNodeStatus", "established", st.Status.Established, "configured", st.Status.Configured)
	c.mu.Lock()
	c.status, c.statusAt = st, now
	c.mu.Unlock()
	return nil
}

// ensureSpeaker creates the speaker at the first enabled sync, deciding
// first whether this is a restart within the boot.
func (c *Controller) ensureSpeaker(logger klog.Logger, d Desired) (Speaker, error) {
	c.mu.Lock()
	sp, decided := c.speaker, c.restartDecided
	c.mu.Unlock()
	if !decided {
		kernel, err := c.cfg.Kernel.List()
		if err != nil {
			return nil, fmt.Errorf("list BGP kernel routes: %w", err)
		}
		restarting, why, err := detectRestart(kernel, c.cfg.StateFile, c.bootID())
		if err != nil {
			return nil, err
		}
		restarting = restarting && d.Global.GracefulRestart.Enabled
		logger.Info("Graceful restart", "restarting", restarting, "why", why)
		c.mu.Lock()
		c.restartDecided, c.restarting = true, restarting
		c.mu.Unlock()
	}
	if sp != nil {
		return sp, nil
	}
	sp = c.cfg.NewSpeaker()
	c.mu.Lock()
	c.speaker, c.startedAt = sp, c.cfg.Now()
	c.mu.Unlock()
	select {
	case c.changes <- struct{}{}:
	default:
	}
	return sp, nil
}

func (c *Controller) bootID() string {
	if c.cfg.BootID == nil {
		return ""
	}
	id, err := c.cfg.BootID()
	if err != nil {
		return ""
	}
	return id
}

// sweepAllowed: stale BGP routes in the kernel (adopted from before a
// restart) may be deleted once every Established neighbour sent its
// End-of-RIB and every other neighbour (and an established one without
// graceful restart, which sends none) had the restart time to come back. After that first sweep the speaker's learned set is complete and
// every sync sweeps.
func (c *Controller) sweepAllowed(d Desired, peers []PeerState, now time.Time) bool {
	c.mu.Lock()
	converged, started := c.converged, c.startedAt
	c.mu.Unlock()
	if converged {
		return true
	}
	restartTime := d.Global.GracefulRestart.RestartTime
	if restartTime <= 0 {
		restartTime = 120 * time.Second
	}
	waited := now.Sub(started) >= restartTime
	state := map[netip.Addr]PeerState{}
	for _, p := range peers {
		state[p.Address] = p
	}
	if len(d.Neighbors) == 0 {
		return waited
	}
	for _, n := range d.Neighbors {
		p, ok := state[n.Address]
		switch {
		case ok && p.State == StateEstablished && p.EndOfRIB:
		case ok && p.State == StateEstablished && (p.GracefulRestart == "Off" || p.GracefulRestart == ""):
			// Without graceful restart no End-of-RIB comes (GoBGP sends
			// and reports it only when GR was negotiated): the restart
			// time stands in for it.
			if !waited {
				return false
			}
		case ok && p.State == StateEstablished:
			return false
		case !waited:
			return false
		}
	}
	return true
}

// recordEstablished writes the state file when a session first
// establishes in this process (restart detection of the next agent).
func (c *Controller) recordEstablished(logger klog.Logger, peers []PeerState, now time.Time) {
	c.mu.Lock()
	done := c.stateWritten
	c.mu.Unlock()
	if done {
		return
	}
	for _, p := range peers {
		if p.State != StateEstablished {
			continue
		}
		boot := c.bootID()
		if boot == "" {
			return
		}
		if err := writeState(c.cfg.StateFile, boot, now); err != nil {
			logger.Error(err, "Cannot record the BGP state; the next agent start announces no graceful restart")
			return
		}
		c.mu.Lock()
		c.stateWritten = true
		c.mu.Unlock()
		return
	}
}

// reportProblems logs and records an Event for each problem once (until
// it goes away and comes back).
func (c *Controller) reportProblems(logger klog.Logger, self *v1.Node, problems []Problem) {
	now := map[Problem]bool{}
	for _, p := range problems {
		now[p] = true
	}
	c.mu.Lock()
	prev := c.problems
	c.problems = now
	c.mu.Unlock()
	sorted := append([]Problem(nil), problems...)
	sort.Slice(sorted, func(i, j int) bool {
		if sorted[i].Reason != sorted[j].Reason {
			return sorted[i].Reason < sorted[j].Reason
		}
		return sorted[i].Object < sorted[j].Object
	})
	for _, p := range sorted {
		if prev[p] {
			continue
		}
		prev[p] = true // duplicates within one sync: once
		logger.Error(errors.New(p.Message), "BGP configuration problem", "reason", p.Reason, "object", p.Object)
		if c.cfg.Recorder != nil {
			c.cfg.Recorder.Eventf(self, v1.EventTypeWarning, p.Reason, "%s: %s", p.Object, p.Message)
		}
	}
}

// redacted is neighbors with the passwords replaced: structured loggers
// serialize structs as JSON, which does not call Secret's String.
func redacted(neighbors []Neighbor) []Neighbor {
	out := append([]Neighbor(nil), neighbors...)
	for i := range out {
		out[i].Password = Secret(out[i].Password.String())
	}
	return out
}

// importable is the learned routes the import policy accepts (judged
// again here: the speaker's own filter is defense in depth, not trusted),
// as kernel routes, sorted by prefix.
func importable(ip ImportPolicy, learned []LearnedRoute) []KernelRoute {
	var out []KernelRoute
	for _, l := range learned {
		if !l.Prefix.IsValid() || !l.NextHop.IsValid() {
			continue
		}
		if ok, _ := ip.Allows(l.Prefix); !ok {
			continue
		}
		if !ip.Install && !isNodePodCIDR(ip, l.Prefix) {
			continue
		}
		out = append(out, KernelRoute{Prefix: l.Prefix.Masked(), NextHop: l.NextHop})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Prefix.String() < out[j].Prefix.String() })
	return out
}

func isNodePodCIDR(ip ImportPolicy, p netip.Prefix) bool {
	for _, c := range ip.PodCIDRs {
		if c == p.Masked() {
			return true
		}
	}
	return false
}
