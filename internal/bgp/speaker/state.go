package speaker

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/trellisnet/trellis/internal/bgp"
)

// connectFailedAfter is how long a session may stay without a TCP
// connection before Peers reports it as failing to connect (GoBGP's
// connect retry is 5 s: two attempts).
const connectFailedAfter = 10 * time.Second

// Peers is every configured session, sorted by address.
func (s *Speaker) Peers() []bgp.PeerState {
	s.mu.Lock()
	r := s.run
	s.mu.Unlock()
	if r == nil {
		return nil
	}
	var list []*api.Peer
	err := r.srv.ListPeer(context.Background(), &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		list = append(list, p)
	})
	if err != nil {
		s.log.V(2).Info("list BGP neighbours", "err", err)
		return nil
	}
	accepted := r.acceptedByNeighbor()
	now := time.Now()
	out := make([]bgp.PeerState, 0, len(list))
	s.tmu.Lock()
	for _, p := range list {
		a, err := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		if err != nil {
			continue
		}
		var t peerTrack
		if tr := s.track[a]; tr != nil {
			t = *tr
		}
		ps := peerState(p, t, now)
		// GoBGP's own "accepted" counts before the global import policy.
		ps.Accepted = accepted[a]
		out = append(out, ps)
	}
	s.tmu.Unlock()
	slices.SortFunc(out, func(x, y bgp.PeerState) int { return x.Address.Compare(y.Address) })
	return out
}

// acceptedByNeighbor counts the paths in the RIB (after the import
// policy) per neighbour.
func (r *instance) acceptedByNeighbor() map[netip.Addr]uint32 {
	n := map[netip.Addr]uint32{}
	for _, f := range []gobgp.Family{gobgp.RF_IPv4_UC, gobgp.RF_IPv6_UC} {
		_ = r.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: f},
			func(_ gobgp.NLRI, paths []*apiutil.Path) {
				for _, p := range paths {
					if p.PeerAddress.IsValid() && !p.PeerAddress.IsUnspecified() && !p.Withdrawal {
						n[p.PeerAddress.Unmap()]++
					}
				}
			})
	}
	return n
}

// peerState translates GoBGP's view of one neighbour.
func peerState(p *api.Peer, t peerTrack, now time.Time) bgp.PeerState {
	a, _ := netip.ParseAddr(p.GetConf().GetNeighborAddress())
	ps := bgp.PeerState{Address: a, ASN: p.GetConf().GetPeerAsn(), State: sessionState(p.GetState().GetSessionState())}
	timers := p.GetTimers().GetState()
	switch {
	case ps.State == bgp.StateEstablished && timers.GetUptime() != nil:
		ps.Since = timers.GetUptime().AsTime()
	case timers.GetDowntime() != nil && timers.GetDowntime().AsTime().Unix() > 0:
		ps.Since = timers.GetDowntime().AsTime()
	default:
		ps.Since = t.configured
	}
	for _, af := range p.GetAfiSafis() {
		st := af.GetState()
		ps.Received += uint32(st.GetReceived())
		ps.Accepted += uint32(st.GetAccepted())
		ps.Advertised += uint32(st.GetAdvertised())
		f := af.GetConfig().GetFamily()
		if ps.State == bgp.StateEstablished && f.GetAfi() == api.Family_AFI_IP && f.GetSafi() == api.Family_SAFI_UNICAST {
			ps.EndOfRIB = af.GetMpGracefulRestart().GetState().GetEndOfRibReceived()
		}
	}
	if p.GetBfd().GetEnabled() {
		switch p.GetState().GetBfdState().GetSessionState() {
		case api.BfdSessionState_BFD_SESSION_STATE_UP:
			ps.BFD = "Up"
		case api.BfdSessionState_BFD_SESSION_STATE_INIT:
			ps.BFD = "Init"
		default:
			ps.BFD = "Down"
		}
	}
	ps.GracefulRestart = grState(p)
	if ps.State != bgp.StateEstablished {
		ps.Reason, ps.Message = t.reason, t.message
		if p.GetState().GetAdminState() == api.PeerState_ADMIN_STATE_PFX_CT {
			ps.Reason = "MaxPrefixes"
			if ps.Message == "" {
				ps.Message = "the neighbour sent more prefixes than import.maxPrefixes allows"
			}
		}
		if ps.BFD == "Down" && ps.Reason == "NotificationSent" && strings.Contains(ps.Message, "administrative reset") {
			// GoBGP resets the session when BFD expires or the neighbour
			// signals BFD down.
			ps.Reason = "BFDDown"
			ps.Message = "BFD found the neighbour unreachable: the session was reset and its routes withdrawn (graceful restart does not cover a BFD-detected failure)"
		}
		down := t.down
		if down.IsZero() {
			down = t.configured
		}
		if ps.Reason != "MaxPrefixes" && (ps.State == bgp.StateActive || ps.State == bgp.StateConnect) &&
			!down.IsZero() && now.Sub(down) > connectFailedAfter {
			msg := connectFailedMessage(p)
			if ps.Reason != "" {
				msg += fmt.Sprintf(" (the last session ended: %s: %s)", ps.Reason, ps.Message)
			}
			ps.Reason, ps.Message = "ConnectFailed", msg
		}
	}
	return ps
}

func connectFailedMessage(p *api.Peer) string {
	port := p.GetTransport().GetRemotePort()
	if port == 0 {
		port = 179
	}
	var b strings.Builder
	fmt.Fprintf(&b, "no BGP session with %s port %d", p.GetConf().GetNeighborAddress(), port)
	if p.GetTransport().GetPassiveMode() {
		b.WriteString(" (passive: waiting for the neighbour to connect)")
	}
	if p.GetConf().GetAuthPassword() != "" {
		b.WriteString(": check that the TCP-MD5 password is the same on both sides (a mismatch drops every segment silently), that the neighbour listens on that port, and that its address is reachable")
	} else {
		b.WriteString(": check that the neighbour is configured for this node (address, AS, no password), listens on that port, and is reachable")
	}
	return b.String()
}

func sessionState(s api.PeerState_SessionState) bgp.SessionState {
	switch s {
	case api.PeerState_SESSION_STATE_CONNECT:
		return bgp.StateConnect
	case api.PeerState_SESSION_STATE_ACTIVE:
		return bgp.StateActive
	case api.PeerState_SESSION_STATE_OPENSENT:
		return bgp.StateOpenSent
	case api.PeerState_SESSION_STATE_OPENCONFIRM:
		return bgp.StateOpenConfirm
	case api.PeerState_SESSION_STATE_ESTABLISHED:
		return bgp.StateEstablished
	}
	return bgp.StateIdle
}

// grState: Off (not configured, or the neighbour did not offer it),
// PeerRestarting (the neighbour restarts: its routes are kept stale),
// Restarting (this speaker announced a restart and waits for End-of-RIB),
// Negotiated.
func grState(p *api.Peer) string {
	gr := p.GetGracefulRestart()
	switch {
	case !gr.GetEnabled():
		return "Off"
	case gr.GetPeerRestarting():
		return "PeerRestarting"
	case gr.GetLocalRestarting():
		return "Restarting"
	}
	if p.GetState().GetSessionState() != api.PeerState_SESSION_STATE_ESTABLISHED {
		return "Off"
	}
	for _, c := range p.GetState().GetRemoteCap() {
		if c.GetGracefulRestart() != nil {
			return "Negotiated"
		}
	}
	return "Off"
}

// reasonName is GoBGP's disconnect reason in CamelCase
// (HOLD_TIMER_EXPIRED → HoldTimerExpired).
func reasonName(r api.PeerState_DisconnectReason) string {
	name := strings.TrimPrefix(r.String(), "DISCONNECT_REASON_")
	var b strings.Builder
	for _, w := range strings.Split(strings.ToLower(name), "_") {
		if w == "" {
			continue
		}
		b.WriteString(strings.ToUpper(w[:1]) + w[1:])
	}
	return b.String()
}

// Learned is the best path per prefix learned from a neighbour and
// allowed by the import policy, sorted by prefix.
func (s *Speaker) Learned() []bgp.LearnedRoute {
	s.mu.Lock()
	r := s.run
	var imp bgp.ImportPolicy
	if r != nil {
		imp = r.imp
	}
	s.mu.Unlock()
	if r == nil {
		return nil
	}
	var out []bgp.LearnedRoute
	for _, f := range []gobgp.Family{gobgp.RF_IPv4_UC, gobgp.RF_IPv6_UC} {
		err := r.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: f},
			func(_ gobgp.NLRI, paths []*apiutil.Path) {
				for _, p := range paths {
					if lr, ok := learnedRoute(p, imp); ok {
						out = append(out, lr)
					}
				}
			})
		if err != nil {
			s.log.V(4).Info("list BGP paths", "family", f.String(), "err", err)
		}
	}
	slices.SortFunc(out, func(x, y bgp.LearnedRoute) int {
		if c := x.Prefix.Addr().Compare(y.Prefix.Addr()); c != 0 {
			return c
		}
		return x.Prefix.Bits() - y.Prefix.Bits()
	})
	return out
}

// learnedRoute is p as a learned route when it is a best path from a
// neighbour that the import policy allows.
func learnedRoute(p *apiutil.Path, imp bgp.ImportPolicy) (bgp.LearnedRoute, bool) {
	if !p.Best || p.Withdrawal || !p.PeerAddress.IsValid() || p.PeerAddress.IsUnspecified() {
		return bgp.LearnedRoute{}, false
	}
	ipp, ok := p.Nlri.(*gobgp.IPAddrPrefix)
	if !ok {
		return bgp.LearnedRoute{}, false
	}
	prefix := ipp.Prefix
	if ok, _ := imp.Allows(prefix); !ok {
		return bgp.LearnedRoute{}, false
	}
	lr := bgp.LearnedRoute{Prefix: prefix.Masked(), Neighbor: p.PeerAddress.Unmap(), Stale: p.Stale}
	for _, a := range p.Attrs {
		switch a := a.(type) {
		case *gobgp.PathAttributeNextHop:
			lr.NextHop = a.Value.Unmap()
		case *gobgp.PathAttributeMpReachNLRI:
			if !lr.NextHop.IsValid() {
				lr.NextHop = a.Nexthop.Unmap()
			}
		}
	}
	return lr, lr.NextHop.IsValid()
}
