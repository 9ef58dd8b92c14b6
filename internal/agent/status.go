package agent

import (
	"net/http"
	"sort"
	"time"

	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/trellisnet/trellis/internal/agentapi"
	"github.com/trellisnet/trellis/internal/bgp"
	"github.com/trellisnet/trellis/internal/config"
	"github.com/trellisnet/trellis/internal/fastpath"
	"github.com/trellisnet/trellis/internal/metrics"
	"github.com/trellisnet/trellis/internal/podlink"
	"github.com/trellisnet/trellis/internal/policy"
	"github.com/trellisnet/trellis/internal/routing"
	"github.com/trellisnet/trellis/internal/syncrunner"
)

// statusSource answers /v1/status from what the agent's parts already
// hold: the runners' last outcomes, the routing controller's last applied
// state, the policy controller's last counts, the readiness checks, the
// problem reporter and the node state file.
type statusSource struct {
	cfg     *config.Config
	version string
	now     func() time.Time
	runners []*syncrunner.Runner
	ready   []metrics.Check
	routes  *routing.Controller
	policy  *policy.Controller // nil: no policy controller
	probs   *problems
	nodes   corelisters.NodeLister
	// fastPath is the fast path's runner (nil when not loaded) and
	// fastPathErr why the kernel refused it.
	fastPath    *syncrunner.Runner
	fastPathErr error
	// wireGuard reads the WireGuard device (nil: encryption off).
	wireGuard wireGuardStatus
	// bgp is the BGP controller (nil: none).
	bgp *bgp.Controller
}

func (s *statusSource) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { agentapi.WriteJSON(w, s.status()) })
}

func (s *statusSource) status() agentapi.Status {
	now := time.Now
	if s.now != nil {
		now = s.now
	}
	st := agentapi.Status{Version: s.version, Node: s.cfg.NodeName, Time: now().UTC(),
		RoutingMode: string(s.cfg.RoutingMode), MaxSyncInterval: agentapi.Duration{Duration: s.cfg.MaxSyncInterval.Duration},
		Ready: true}
	for _, c := range s.ready {
		if err := c.Fn(); err != nil {
			st.Ready = false
			st.NotReady = append(st.NotReady, c.Name+": "+err.Error())
		}
	}
	for _, r := range s.runners {
		c := agentapi.Controller{Name: r.Name(), Syncs: r.Syncs()}
		if t := r.LastSuccess(); !t.IsZero() {
			t = t.UTC()
			c.LastSuccess = &t
		}
		if err := r.LastError(); err != nil {
			c.LastError = err.Error()
		}
		st.Controllers = append(st.Controllers, c)
	}
	st.Routing = routingStatus(s.cfg.NodeName, s.routes.Programmed())
	if s.policy != nil {
		c := s.policy.Counts()
		st.Policy = agentapi.Policy{Enforced: s.cfg.NetworkPolicyEnabled(), Policies: c.Policies,
			IsolatedIngress: c.IsolatedIngress, IsolatedEgress: c.IsolatedEgress,
			GroupsIngress: c.GroupsIngress, GroupsEgress: c.GroupsEgress}
	}
	st.FastPath = s.fastPathStatus()
	st.Encryption = encryptionStatus(s.cfg, s.wireGuard)
	if s.bgp != nil {
		b := &agentapi.BGP{}
		b.Enabled, b.Reason, b.Established, b.Configured = s.bgp.Summary()
		st.BGP = b
	}
	if s.probs != nil {
		if p := s.probs.Active(); len(p) > 0 {
			st.Problems = p
		}
	}
	ns, err := podlink.ReadNodeState(s.cfg.NodeStateFile)
	switch {
	case err != nil:
		st.Dataplane.Error = err.Error()
	default:
		st.MTU = ns.MTU
		st.Dataplane = agentapi.Dataplane{Ready: ns.Ready, Reason: ns.Reason, Marker: ns.Dataplane != nil}
		if ns.Dataplane != nil {
			st.Dataplane.BootID = ns.Dataplane.BootID
		}
	}
	return st
}

func (s *statusSource) fastPathStatus() agentapi.FastPath {
	fp := agentapi.FastPath{Enabled: s.cfg.FastPathEnabled()}
	switch {
	case !fp.Enabled:
		fp.State = agentapi.FastPathDisabled
		return fp
	case s.fastPath == nil:
		fp.State = agentapi.FastPathNotLoad
		if s.fastPathErr != nil {
			fp.Reason = s.fastPathErr.Error()
		}
		return fp
	}
	fp.Loaded = true
	if s.nodes != nil {
		if n, err := s.nodes.Get(s.cfg.NodeName); err == nil && fastpath.OffByAnnotation(n.Annotations) {
			fp.State, fp.Reason = agentapi.FastPathOff, "turned off by the Node annotation "+fastpath.AnnotationOff
			return fp
		}
	}
	switch err := s.fastPath.LastError(); {
	case err != nil:
		fp.State, fp.Reason = agentapi.FastPathFailing, err.Error()
	case s.fastPath.LastSuccess().IsZero():
		fp.State = agentapi.FastPathPending
	default:
		fp.State = agentapi.FastPathActive
	}
	return fp
}

// routingStatus summarises what the routing controller applied (d nil:
// nothing yet): the remote routes and each peer's path or problem.
func routingStatus(self string, d *routing.Desired) agentapi.Routing {
	var out agentapi.Routing
	if d == nil {
		return out
	}
	peers := map[string]*agentapi.Peer{}
	for _, r := range d.Routes {
		if r.Path == "" || r.Node == self {
			continue
		}
		out.Routes++
		p := peers[r.Node]
		if p == nil {
			p = &agentapi.Peer{Node: r.Node, Mode: string(r.Path), State: agentapi.PeerProgrammed}
			peers[r.Node] = p
		}
		p.Routes++
	}
	for _, pr := range d.Problems {
		p := peers[pr.Node]
		if p == nil {
			p = &agentapi.Peer{Node: pr.Node}
			peers[pr.Node] = p
		}
		p.State, p.Reason, p.Message = agentapi.PeerNotProgrammed, pr.Reason, pr.Message
	}
	for _, p := range peers {
		out.Peers = append(out.Peers, *p)
	}
	sort.Slice(out.Peers, func(i, j int) bool { return out.Peers[i].Node < out.Peers[j].Node })
	return out
}
