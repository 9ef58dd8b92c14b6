// Package speaker is the node's BGP speaker: GoBGP embedded, without its
// gRPC listener, driven by bgp.Desired. Apply diffs the desired neighbours,
// paths and policies against what it last gave GoBGP and changes only
// that, so an unchanged Desired never touches a session.
//
// Behaviour worth knowing:
//   - A changed ASN, router ID, listen port or listen addresses restarts
//     GoBGP (with NOTIFICATION); disabling BGP stops it with NOTIFICATION;
//     Stop closes the sessions without one, so neighbours with graceful
//     restart keep this node's routes for the restart time.
//   - Changing a neighbour's password, ASN, allowOwnAS, families,
//     multihop, TTL security, passive mode, timers, route-reflector role
//     or graceful-restart settings re-establishes that session (with
//     NOTIFICATION); its export list, the import policy, BFD and the
//     prefix limit apply without a reset.
//   - Graceful restart is offered without the N bit: a NOTIFICATION (a
//     deconfigured neighbour, the prefix limit) always withdraws at once.
//     The Restart State bit is sent only for neighbours added while
//     Global.GracefulRestart.Restarting is set and within the restart time
//     of the speaker's start; GoBGP then holds this node's advertisements
//     until every neighbour sent End-of-RIB, or the restart time passed.
//   - GoBGP sends End-of-RIB only when graceful restart was negotiated, so
//     PeerState.EndOfRIB stays false on a session with GracefulRestart Off.
//   - GoBGP resets a session (NOTIFICATION, routes withdrawn) when BFD
//     goes down, graceful restart negotiated or not: Reason BFDDown. A
//     neighbour running GoBGP therefore drops this node's routes when a
//     BFD-enabled agent restarts; BIRD keeps them with `bfd graceful`.
//   - A neighbour above the prefix limit is shut down (Reason
//     MaxPrefixes) until the limit is raised or its configuration changes.
//   - GoBGP's BFD listens on UDP 3784 on every address (only while a
//     neighbour has BFD), and answers configured neighbours only.
package speaker

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
	"google.golang.org/protobuf/proto"

	"github.com/trellisnet/trellis/internal/bgp"
)

// Speaker implements bgp.Speaker with GoBGP.
type Speaker struct {
	log     logr.Logger
	changes chan struct{}

	// mu serialises Apply, Stop and the readers' access to srv.
	mu  sync.Mutex
	run *instance

	// tmu guards track, written by GoBGP's event callbacks.
	tmu   sync.Mutex
	track map[netip.Addr]*peerTrack
}

var _ bgp.Speaker = (*Speaker)(nil)

// instance is one started GoBGP server and what was given to it.
type instance struct {
	srv         *server.BgpServer
	stopped     *atomic.Bool
	cancelWatch context.CancelFunc
	id          identity
	started     time.Time
	// peers: the configuration each neighbour was added or last updated
	// with (Restart State bit cleared, so that it never counts as a
	// change).
	peers    map[netip.Addr]*api.Peer
	paths    map[netip.Prefix]pathKey
	policies *api.SetPoliciesRequest
	imp      bgp.ImportPolicy
}

// peerTrack is what GoBGP's peer events tell about a session beyond
// ListPeer: why it went down, and since when it is not up.
type peerTrack struct {
	configured time.Time
	down       time.Time
	reason     string
	message    string
}

// New returns a stopped speaker; the first Apply with d.Enabled starts it.
func New(logger logr.Logger) *Speaker {
	return &Speaker{
		log:     logger.WithName("bgp-speaker"),
		changes: make(chan struct{}, 1),
		track:   map[netip.Addr]*peerTrack{},
	}
}

// Changes is signalled when a session's state or a best path changes.
func (s *Speaker) Changes() <-chan struct{} { return s.changes }

func (s *Speaker) signal() {
	select {
	case s.changes <- struct{}{}:
	default:
	}
}

// Apply makes GoBGP match d.
func (s *Speaker) Apply(ctx context.Context, d bgp.Desired) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !d.Enabled {
		if s.run != nil {
			s.log.Info("BGP disabled: stopping the speaker (peers are notified)")
			s.stopLocked(false)
		}
		return nil
	}
	id := identityOf(d.Global)
	if s.run != nil && s.run.id != id {
		s.log.Info("BGP identity changed: restarting the speaker", "asn", d.Global.ASN, "routerID", d.Global.RouterID)
		s.stopLocked(false)
	}
	if s.run == nil {
		r, err := s.start(ctx, d.Global)
		if err != nil {
			return err
		}
		s.run = r
	}
	r := s.run
	var errs []error
	policyChanged, err := s.applyPolicies(ctx, r, d)
	if err != nil {
		// No neighbour or path changes without the import filter in place.
		return err
	}
	errs = append(errs, s.applyPeers(ctx, r, d)...)
	errs = append(errs, s.applyPaths(r, d.Paths)...)
	r.imp = d.Import
	if policyChanged {
		// Re-evaluate what was received and sent under the new policies
		// (GoBGP keeps the Adj-RIB-In: no route refresh, no reset).
		if err := r.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: "all", Soft: true,
			Direction: api.ResetPeerRequest_DIRECTION_BOTH}); err != nil && len(r.peers) > 0 {
			errs = append(errs, fmt.Errorf("soft reset after a policy change: %w", err))
		}
		s.signal()
	}
	return errors.Join(errs...)
}

func (s *Speaker) start(ctx context.Context, g bgp.Global) (*instance, error) {
	req, err := startRequest(g)
	if err != nil {
		return nil, err
	}
	stopped := &atomic.Bool{}
	srv := server.NewBgpServer(server.LoggerOption(gobgpLogger(s.log, stopped), nil))
	go srv.Serve()
	if err := srv.StartBgp(ctx, req); err != nil {
		srv.Stop()
		return nil, fmt.Errorf("start BGP (AS %d, router ID %v, port %d): %w", g.ASN, g.RouterID, req.Global.ListenPort, err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	err = srv.WatchEvent(wctx, server.WatchEventMessageCallbacks{
		OnPeerUpdate: s.onPeer,
		OnBestPath:   func([]*apiutil.Path, time.Time) { s.signal() },
		OnPathEor:    func(*apiutil.Path, time.Time) { s.signal() },
	}, server.WatchPeer(), server.WatchBestPath(false), server.WatchEor(false))
	if err != nil {
		cancel()
		srv.Stop()
		return nil, fmt.Errorf("watch BGP events: %w", err)
	}
	s.log.Info("BGP speaker started", "asn", g.ASN, "routerID", g.RouterID, "port", req.Global.ListenPort,
		"listen", req.Global.ListenAddresses)
	return &instance{
		srv: srv, stopped: stopped, cancelWatch: cancel, id: identityOf(g), started: time.Now(),
		peers: map[netip.Addr]*api.Peer{}, paths: map[netip.Prefix]pathKey{},
	}, nil
}

// applyPolicies replaces GoBGP's policies when they differ from the last
// ones given.
func (s *Speaker) applyPolicies(ctx context.Context, r *instance, d bgp.Desired) (changed bool, err error) {
	want := policies(d)
	if r.policies != nil && proto.Equal(r.policies, want) {
		return false, nil
	}
	if err := r.srv.SetPolicies(ctx, want); err != nil {
		return false, fmt.Errorf("set import/export policies: %w", err)
	}
	if r.policies == nil {
		for _, a := range assignments() {
			if err := r.srv.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: a}); err != nil {
				return false, fmt.Errorf("assign policy %s: %w", a.Policies[0].Name, err)
			}
		}
	}
	r.policies = want
	s.log.V(2).Info("BGP policies set", "definedSets", len(want.DefinedSets))
	return true, nil
}

func (s *Speaker) applyPeers(ctx context.Context, r *instance, d bgp.Desired) []error {
	var errs []error
	want := map[netip.Addr]bool{}
	for _, n := range d.Neighbors {
		want[n.Address] = true
		cfg, err := peerConfig(n, d.Global, d.Import.MaxPrefixes, false)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		old, ok := r.peers[n.Address]
		switch {
		case !ok:
			restarting := r.restarting(d.Global.GracefulRestart, time.Now())
			add, _ := peerConfig(n, d.Global, d.Import.MaxPrefixes, restarting)
			if err := r.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: add}); err != nil {
				errs = append(errs, fmt.Errorf("add neighbour %v (AS %d): %w", n.Address, n.ASN, err))
				continue
			}
			r.peers[n.Address] = cfg
			s.tracked(n.Address, true)
			s.log.Info("BGP neighbour added", "neighbor", n.Address, "asn", n.ASN, "source", n.Source,
				"restarting", restarting)
		case !proto.Equal(old, cfg) && needsReAdd(old, cfg):
			// GoBGP's UpdatePeer keeps the route-reflector role, and
			// applies timers only to the next session: re-add.
			if err := r.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: n.Address.String()}); err != nil {
				errs = append(errs, fmt.Errorf("delete neighbour %v to re-add it: %w", n.Address, err))
				continue
			}
			delete(r.peers, n.Address)
			restarting := r.restarting(d.Global.GracefulRestart, time.Now())
			add, _ := peerConfig(n, d.Global, d.Import.MaxPrefixes, restarting)
			if err := r.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: add}); err != nil {
				errs = append(errs, fmt.Errorf("re-add neighbour %v (AS %d): %w", n.Address, n.ASN, err))
				continue
			}
			r.peers[n.Address] = cfg
			s.tracked(n.Address, true)
			s.log.Info("BGP neighbour re-added (session reset: new timers or route-reflector role)", "neighbor", n.Address,
				"asn", n.ASN, "source", n.Source)
		case !proto.Equal(old, cfg):
			rsp, err := r.srv.UpdatePeer(ctx, &api.UpdatePeerRequest{Peer: cfg})
			if err != nil {
				errs = append(errs, fmt.Errorf("update neighbour %v: %w", n.Address, err))
				continue
			}
			r.peers[n.Address] = cfg
			s.log.Info("BGP neighbour updated", "neighbor", n.Address, "asn", n.ASN, "source", n.Source)
			if rsp.GetNeedsSoftResetIn() {
				if err := r.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: n.Address.String(), Soft: true,
					Direction: api.ResetPeerRequest_DIRECTION_IN}); err != nil {
					errs = append(errs, fmt.Errorf("soft reset neighbour %v: %w", n.Address, err))
				}
			}
			if maxPrefixesRaised(old, cfg) {
				// A session shut down by the prefix limit stays down
				// until its configuration changes: this is the change.
				if err := r.srv.EnablePeer(ctx, &api.EnablePeerRequest{Address: n.Address.String()}); err != nil {
					s.log.V(2).Info("enable neighbour after a prefix-limit change", "neighbor", n.Address, "err", err)
				}
			}
		}
	}
	for a := range r.peers {
		if want[a] {
			continue
		}
		if err := r.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: a.String()}); err != nil {
			errs = append(errs, fmt.Errorf("delete neighbour %v: %w", a, err))
			continue
		}
		delete(r.peers, a)
		s.tracked(a, false)
		s.log.Info("BGP neighbour removed", "neighbor", a)
	}
	return errs
}

// restarting: whether a neighbour added now gets the Restart State bit.
// Only while the agent recovers: Restarting is set and this GoBGP started
// less than the restart time ago. A neighbour added later (a node that
// joined since) never knew the previous incarnation.
func (r *instance) restarting(gr bgp.GracefulRestart, now time.Time) bool {
	rt := gr.RestartTime
	if rt <= 0 {
		rt = 120 * time.Second
	}
	return gr.Enabled && gr.Restarting && now.Sub(r.started) < rt
}

// needsReAdd: a change GoBGP's UpdatePeer does not apply to the running
// session.
func needsReAdd(old, cur *api.Peer) bool {
	// A changed TCP-MD5 password, too: the key belongs to the session's
	// sockets, so a new password means a new session.
	return !proto.Equal(old.GetRouteReflector(), cur.GetRouteReflector()) || !proto.Equal(old.GetTimers(), cur.GetTimers()) ||
		old.GetConf().GetAuthPassword() != cur.GetConf().GetAuthPassword()
}

func maxPrefixesRaised(old, cur *api.Peer) bool {
	limit := func(p *api.Peer) uint32 {
		for _, a := range p.AfiSafis {
			if a.PrefixLimits != nil {
				return a.PrefixLimits.MaxPrefixes
			}
		}
		return 0
	}
	o, c := limit(old), limit(cur)
	return o != 0 && (c == 0 || c > o)
}

// pathKey is what a path is advertised with.
type pathKey struct {
	communities string
	localPref   int64
}

func keyOf(p bgp.Path) pathKey {
	k := pathKey{communities: fmt.Sprint(p.Communities), localPref: -1}
	if p.LocalPreference != nil {
		k.localPref = int64(*p.LocalPreference)
	}
	return k
}

func (s *Speaker) applyPaths(r *instance, paths []bgp.Path) []error {
	var errs []error
	want := map[netip.Prefix]bool{}
	for _, p := range paths {
		prefix := p.Prefix.Masked()
		want[prefix] = true
		k := keyOf(p)
		if old, ok := r.paths[prefix]; ok && old == k {
			continue
		}
		np, err := nativePath(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, err := r.srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{np}}); err != nil {
			errs = append(errs, fmt.Errorf("advertise %v: %w", prefix, err))
			continue
		}
		r.paths[prefix] = k
		s.log.V(2).Info("BGP path advertised", "prefix", prefix, "origin", p.Origin)
	}
	for prefix := range r.paths {
		if want[prefix] {
			continue
		}
		wp, err := withdrawPath(prefix)
		if err == nil {
			err = r.srv.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{wp}})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("withdraw %v: %w", prefix, err))
			continue
		}
		delete(r.paths, prefix)
		s.log.V(2).Info("BGP path withdrawn", "prefix", prefix)
	}
	return errs
}

// Stop stops the speaker without NOTIFICATION: the TCP sessions are
// closed, so neighbours with graceful restart keep this node's routes for
// the restart time.
func (s *Speaker) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.run != nil {
		s.log.Info("BGP speaker stopping without NOTIFICATION (graceful restart)")
		s.stopLocked(true)
	}
}

func (s *Speaker) stopLocked(graceful bool) {
	r := s.run
	s.run = nil
	r.cancelWatch()
	if err := r.srv.StopBgp(context.Background(), &api.StopBgpRequest{AllowGracefulRestart: graceful}); err != nil {
		s.log.Error(err, "stop BGP")
	}
	// Stop also ends GoBGP's BFD server.
	r.stopped.Store(true)
	r.srv.Stop()
	s.tmu.Lock()
	s.track = map[netip.Addr]*peerTrack{}
	s.tmu.Unlock()
	s.signal()
}

func (s *Speaker) tracked(a netip.Addr, add bool) {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	if !add {
		delete(s.track, a)
		return
	}
	now := time.Now()
	s.track[a] = &peerTrack{configured: now, down: now}
	s.signalAfterConnectFailed()
}

// signalAfterConnectFailed signals a change once a session that is down
// now would be reported as failing to connect (Peers computes that from
// the time): without it, the node status would show the reason only at
// the next unrelated sync.
func (s *Speaker) signalAfterConnectFailed() {
	time.AfterFunc(connectFailedAfter+time.Second, s.signal)
}

// onPeer records why a session went down.
func (s *Speaker) onPeer(ev *apiutil.WatchEventMessage_PeerEvent, ts time.Time) {
	defer s.signal()
	st := ev.Peer.State
	a := st.NeighborAddress
	s.tmu.Lock()
	defer s.tmu.Unlock()
	t, ok := s.track[a]
	if !ok {
		return
	}
	if st.SessionState == gobgp.BGP_FSM_ESTABLISHED {
		t.reason, t.message = "", ""
		return
	}
	if st.AdminState == api.PeerState_ADMIN_STATE_PFX_CT {
		t.reason = "MaxPrefixes"
		t.message = "the neighbour sent more prefixes than import.maxPrefixes allows; the session stays down until the limit or the neighbour's configuration changes"
		t.down = ts
		return
	}
	switch st.DisconnectReason {
	case api.PeerState_DISCONNECT_REASON_UNSPECIFIED, api.PeerState_DISCONNECT_REASON_IDLE_TIMER_EXPIRED,
		api.PeerState_DISCONNECT_REASON_DECONFIGURED:
		// Not a failure: the FSM leaving Idle, or our own reconfiguration.
	default:
		t.reason = reasonName(st.DisconnectReason)
		t.message = st.DisconnectMessage
		t.down = ts
		s.signalAfterConnectFailed()
	}
}
