package speaker

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/trellisnet/trellis/internal/bgp"
)

func TestPeerState(t *testing.T) {
	now := time.Unix(10000, 0)
	up := now.Add(-time.Hour)
	v4 := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	established := func() *api.Peer {
		return &api.Peer{
			Conf: &api.PeerConf{NeighborAddress: "10.0.0.254", PeerAsn: 65000},
			State: &api.PeerState{SessionState: api.PeerState_SESSION_STATE_ESTABLISHED,
				RemoteCap: []*api.Capability{{Cap: &api.Capability_GracefulRestart{GracefulRestart: &api.GracefulRestartCapability{}}}},
				BfdState:  &api.BfdPeerState{SessionState: api.BfdSessionState_BFD_SESSION_STATE_UP}},
			Timers:          &api.Timers{State: &api.TimersState{Uptime: timestamppb.New(up)}},
			GracefulRestart: &api.GracefulRestart{Enabled: true},
			Bfd:             &api.BfdPeerConfig{Enabled: true},
			AfiSafis: []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: v4, Enabled: true},
				State:             &api.AfiSafiState{Received: 7, Accepted: 7, Advertised: 2},
				MpGracefulRestart: &api.MpGracefulRestart{State: &api.MpGracefulRestartState{EndOfRibReceived: true}}}},
		}
	}
	down := func(state api.PeerState_SessionState, mod func(*api.Peer)) *api.Peer {
		p := established()
		p.State.SessionState = state
		p.State.RemoteCap = nil
		p.State.BfdState.SessionState = api.BfdSessionState_BFD_SESSION_STATE_DOWN
		p.Timers.State = &api.TimersState{}
		// GoBGP counts only while established.
		p.AfiSafis[0].State = &api.AfiSafiState{}
		if mod != nil {
			mod(p)
		}
		return p
	}
	recent := peerTrack{configured: now.Add(-2 * time.Second), down: now.Add(-2 * time.Second)}
	old := peerTrack{configured: now.Add(-time.Minute), down: now.Add(-time.Minute)}
	for _, tc := range []struct {
		name          string
		p             *api.Peer
		t             peerTrack
		want          bgp.PeerState
		wantMsgSubstr string
	}{
		{name: "established", p: established(), t: old, want: bgp.PeerState{State: bgp.StateEstablished, Since: up,
			Received: 7, Accepted: 7, Advertised: 2, BFD: "Up", GracefulRestart: "Negotiated", EndOfRIB: true}},
		{name: "just configured", p: down(api.PeerState_SESSION_STATE_ACTIVE, nil), t: recent,
			want: bgp.PeerState{State: bgp.StateActive, Since: recent.configured, BFD: "Down", GracefulRestart: "Off"}},
		{name: "no TCP with a password", p: down(api.PeerState_SESSION_STATE_ACTIVE, func(p *api.Peer) { p.Conf.AuthPassword = "x" }), t: old,
			want:          bgp.PeerState{State: bgp.StateActive, Since: old.configured, BFD: "Down", GracefulRestart: "Off", Reason: "ConnectFailed"},
			wantMsgSubstr: "TCP-MD5 password"},
		{name: "no TCP after a hold timer expiry", p: down(api.PeerState_SESSION_STATE_CONNECT, nil),
			t:             peerTrack{configured: old.configured, down: old.down, reason: "HoldTimerExpired", message: "hold timer expired"},
			want:          bgp.PeerState{State: bgp.StateConnect, Since: old.configured, BFD: "Down", GracefulRestart: "Off", Reason: "ConnectFailed"},
			wantMsgSubstr: "last session ended: HoldTimerExpired"},
		{name: "notification received", p: down(api.PeerState_SESSION_STATE_IDLE, nil),
			t:    peerTrack{configured: old.configured, down: old.down, reason: "NotificationReceived", message: "cease"},
			want: bgp.PeerState{State: bgp.StateIdle, Since: old.configured, BFD: "Down", GracefulRestart: "Off", Reason: "NotificationReceived", Message: "cease"}},
		{name: "prefix limit", p: down(api.PeerState_SESSION_STATE_IDLE, func(p *api.Peer) { p.State.AdminState = api.PeerState_ADMIN_STATE_PFX_CT }), t: old,
			want:          bgp.PeerState{State: bgp.StateIdle, Since: old.configured, BFD: "Down", GracefulRestart: "Off", Reason: "MaxPrefixes"},
			wantMsgSubstr: "maxPrefixes"},
		{name: "BFD down", p: down(api.PeerState_SESSION_STATE_IDLE, nil),
			t:             peerTrack{configured: old.configured, down: now, reason: "NotificationSent", message: "notification-sent code 6(cease) subcode 4(administrative reset)"},
			want:          bgp.PeerState{State: bgp.StateIdle, Since: old.configured, BFD: "Down", GracefulRestart: "Off", Reason: "BFDDown"},
			wantMsgSubstr: "graceful restart does not cover"},
		{name: "neighbour restarting", p: down(api.PeerState_SESSION_STATE_ACTIVE, func(p *api.Peer) { p.GracefulRestart.PeerRestarting = true }), t: recent,
			want: bgp.PeerState{State: bgp.StateActive, Since: recent.configured, BFD: "Down", GracefulRestart: "PeerRestarting"}},
		{name: "we restart", p: down(api.PeerState_SESSION_STATE_OPENSENT, func(p *api.Peer) { p.GracefulRestart.LocalRestarting = true; p.Bfd = nil }), t: recent,
			want: bgp.PeerState{State: bgp.StateOpenSent, Since: recent.configured, GracefulRestart: "Restarting"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := peerState(tc.p, tc.t, now)
			tc.want.Address, tc.want.ASN = mustAddr("10.0.0.254"), 65000
			msg := got.Message
			if tc.wantMsgSubstr != "" {
				if !strings.Contains(msg, tc.wantMsgSubstr) {
					t.Fatalf("message %q lacks %q", msg, tc.wantMsgSubstr)
				}
				got.Message = ""
			}
			if !got.Since.Equal(tc.want.Since) {
				t.Fatalf("since %v, want %v", got.Since, tc.want.Since)
			}
			got.Since = tc.want.Since
			if got != tc.want {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestReasonName(t *testing.T) {
	for r, want := range map[api.PeerState_DisconnectReason]string{
		api.PeerState_DISCONNECT_REASON_HOLD_TIMER_EXPIRED:    "HoldTimerExpired",
		api.PeerState_DISCONNECT_REASON_NOTIFICATION_RECEIVED: "NotificationReceived",
		api.PeerState_DISCONNECT_REASON_BAD_PEER_AS:           "BadPeerAs",
	} {
		if got := reasonName(r); got != want {
			t.Errorf("%v: %q, want %q", r, got, want)
		}
	}
}

func TestLearnedRoute(t *testing.T) {
	imp := bgp.ImportPolicy{Reject: []netip.Prefix{mustPrefix("10.244.1.0/24")}}
	mk := func(prefix, peer string, best bool) *apiutil.Path {
		p, err := nativePath(bgp.Path{Prefix: mustPrefix(prefix)})
		if err != nil {
			t.Fatal(err)
		}
		p.Best = best
		if peer != "" {
			p.PeerAddress = mustAddr(peer)
		}
		return p
	}
	if _, ok := learnedRoute(mk("198.18.0.0/24", "", true), imp); ok {
		t.Error("a local path is not learned")
	}
	if _, ok := learnedRoute(mk("198.18.0.0/24", "10.0.0.254", false), imp); ok {
		t.Error("a path that is not best is not learned")
	}
	if _, ok := learnedRoute(mk("10.244.1.0/25", "10.0.0.254", true), imp); ok {
		t.Error("a path Allows refuses is not learned")
	}
	p := mk("198.18.0.0/24", "10.0.0.254", true)
	p.Stale = true
	lr, ok := learnedRoute(p, imp)
	// nativePath's next hop is 0.0.0.0 (self); a received path carries the
	// neighbour's.
	if !ok || lr.Prefix != mustPrefix("198.18.0.0/24") || lr.Neighbor != mustAddr("10.0.0.254") || !lr.Stale || lr.NextHop != mustAddr("0.0.0.0") {
		t.Errorf("learned %+v %v", lr, ok)
	}
}
