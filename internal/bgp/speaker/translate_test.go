package speaker

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/trellisnet/trellis/internal/bgp"
)

func mustAddr(s string) netip.Addr     { return netip.MustParseAddr(s) }
func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestStartRequest(t *testing.T) {
	for _, tc := range []struct {
		name    string
		g       bgp.Global
		port    int32
		listen  []string
		wantErr string
	}{
		{name: "default port", g: bgp.Global{ASN: 64512, RouterID: mustAddr("10.0.0.1")}, port: 179},
		{name: "own port and address", g: bgp.Global{ASN: 64512, RouterID: mustAddr("10.0.0.1"), ListenPort: 1790,
			ListenAddresses: []netip.Addr{mustAddr("10.0.0.1"), mustAddr("fd00::1")}}, port: 1790, listen: []string{"10.0.0.1", "fd00::1"}},
		{name: "no listener", g: bgp.Global{ASN: 64512, RouterID: mustAddr("10.0.0.1"), ListenPort: -5}, port: -1},
		{name: "no ASN", g: bgp.Global{RouterID: mustAddr("10.0.0.1")}, wantErr: "ASN is 0"},
		{name: "IPv6 router ID", g: bgp.Global{ASN: 1, RouterID: mustAddr("fd00::1")}, wantErr: "not an IPv4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := startRequest(tc.g)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			g := req.Global
			if g.Asn != tc.g.ASN || g.RouterId != tc.g.RouterID.String() || g.ListenPort != tc.port ||
				strings.Join(g.ListenAddresses, ",") != strings.Join(tc.listen, ",") {
				t.Fatalf("got %v", prototext.Format(req))
			}
		})
	}
}

func TestPeerConfig(t *testing.T) {
	global := bgp.Global{ASN: 64512, RouterID: mustAddr("10.0.0.1"), ListenAddresses: []netip.Addr{mustAddr("10.0.0.1")},
		GracefulRestart: bgp.GracefulRestart{Enabled: true, RestartTime: 120 * time.Second}}
	v4 := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	v6 := &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
	grAfi := func(f *api.Family, max uint32) *api.AfiSafi {
		a := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: f, Enabled: true},
			MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}}
		if max > 0 {
			a.PrefixLimits = &api.PrefixLimit{Family: f, MaxPrefixes: max}
		}
		return a
	}
	gr := func(rt uint32, restarting bool) *api.GracefulRestart {
		return &api.GracefulRestart{Enabled: true, RestartTime: rt, DeferralTime: rt, LocalRestarting: restarting}
	}
	base := func(addr string, asn uint32) *api.Peer {
		p := &api.Peer{
			Conf:      &api.PeerConf{NeighborAddress: addr, PeerAsn: asn},
			Transport: &api.Transport{},
			Timers:    &api.Timers{Config: &api.TimersConfig{}},
		}
		if mustAddr(addr).Is4() {
			p.Transport.LocalAddress = "10.0.0.1"
		}
		return p
	}
	for _, tc := range []struct {
		name       string
		n          bgp.Neighbor
		global     *bgp.Global
		max        uint32
		restarting bool
		want       func() *api.Peer
		wantErr    string
	}{
		{
			name: "plain ToR",
			n:    bgp.Neighbor{Address: mustAddr("10.0.0.254"), ASN: 65000},
			max:  1000,
			want: func() *api.Peer {
				p := base("10.0.0.254", 65000)
				p.GracefulRestart = gr(120, false)
				p.AfiSafis = []*api.AfiSafi{grAfi(v4, 1000)}
				return p
			},
		},
		{
			name: "every option",
			n: bgp.Neighbor{Address: mustAddr("10.0.0.254"), ASN: 65000, Password: "s3cret", Multihop: 3, AllowOwnAS: 1,
				Passive: true, HoldTime: 9 * time.Second, Keepalive: 3 * time.Second, ConnectRetry: 1500 * time.Millisecond,
				BFD:                  bgp.BFD{Enabled: true, MinRx: 300 * time.Millisecond, MinTx: 200 * time.Millisecond, DetectMultiplier: 5},
				Families:             []bgp.Family{bgp.IPv4Unicast, bgp.IPv6Unicast},
				RouteReflectorClient: true, ClusterID: mustAddr("1.1.1.1")},
			restarting: true,
			want: func() *api.Peer {
				p := base("10.0.0.254", 65000)
				p.Conf.AuthPassword = "s3cret"
				p.Conf.AllowOwnAsn = 1
				p.Transport.PassiveMode = true
				p.Timers.Config = &api.TimersConfig{HoldTime: 9, KeepaliveInterval: 3, ConnectRetry: 2}
				p.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: 3}
				p.RouteReflector = &api.RouteReflector{RouteReflectorClient: true, RouteReflectorClusterId: "1.1.1.1"}
				p.GracefulRestart = gr(120, true)
				p.Bfd = &api.BfdPeerConfig{Enabled: true, RequiredMinimumReceive: 300000, DesiredMinimumTxInterval: 200000, DetectionMultiplier: 5}
				p.AfiSafis = []*api.AfiSafi{grAfi(v4, 0), grAfi(v6, 0)}
				return p
			},
		},
		{
			name: "TTL security, IPv6 neighbour, GR off",
			n:    bgp.Neighbor{Address: mustAddr("fd00::254"), ASN: 65000, TTLSecurity: 2},
			global: &bgp.Global{ASN: 64512, RouterID: mustAddr("10.0.0.1"),
				ListenAddresses: []netip.Addr{mustAddr("10.0.0.1"), mustAddr("fd00::1")}},
			max: 10,
			want: func() *api.Peer {
				p := base("fd00::254", 65000)
				p.Transport.LocalAddress = "fd00::1"
				p.TtlSecurity = &api.TtlSecurity{Enabled: true, TtlMin: 254}
				p.AfiSafis = []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: v6, Enabled: true},
					PrefixLimits: &api.PrefixLimit{Family: v6, MaxPrefixes: 10}}}
				return p
			},
		},
		{
			name: "restart time clamped to 12 bits",
			n:    bgp.Neighbor{Address: mustAddr("10.0.0.254"), ASN: 65000},
			global: &bgp.Global{ASN: 64512, RouterID: mustAddr("10.0.0.1"), ListenAddresses: []netip.Addr{mustAddr("10.0.0.1")},
				GracefulRestart: bgp.GracefulRestart{Enabled: true, RestartTime: 2 * time.Hour}},
			want: func() *api.Peer {
				p := base("10.0.0.254", 65000)
				p.GracefulRestart = gr(4095, false)
				p.AfiSafis = []*api.AfiSafi{grAfi(v4, 0)}
				return p
			},
		},
		{name: "multihop and TTL security", n: bgp.Neighbor{Address: mustAddr("10.0.0.254"), ASN: 1, Multihop: 2, TTLSecurity: 1}, wantErr: "exclusive"},
		{name: "no ASN", n: bgp.Neighbor{Address: mustAddr("10.0.0.254")}, wantErr: "ASN is 0"},
		{name: "unknown family", n: bgp.Neighbor{Address: mustAddr("10.0.0.254"), ASN: 1, Families: []bgp.Family{"l2vpn-evpn"}}, wantErr: "unsupported address family"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := global
			if tc.global != nil {
				g = *tc.global
			}
			got, err := peerConfig(tc.n, g, tc.max, tc.restarting)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := tc.want(); !proto.Equal(got, want) {
				t.Fatalf("got\n%s\nwant\n%s", prototext.Format(got), prototext.Format(want))
			}
		})
	}
}

func TestNativePath(t *testing.T) {
	lp := uint32(150)
	p, err := nativePath(bgp.Path{Prefix: mustPrefix("10.244.1.7/24"), Communities: []string{"64512:100", "65000:1:2", "1:2"},
		LocalPreference: &lp})
	if err != nil {
		t.Fatal(err)
	}
	if p.Family != gobgp.RF_IPv4_UC || p.Nlri.String() != "10.244.1.0/24" {
		t.Fatalf("family %v nlri %v", p.Family, p.Nlri)
	}
	var got []string
	for _, a := range p.Attrs {
		got = append(got, a.String())
	}
	want := "{Origin: i} {Nexthop: 0.0.0.0} {Communities: 64512:100, 1:2} {LargeCommunity: [ 65000:1:2]} {LocalPref: 150}"
	if strings.Join(got, " ") != want {
		t.Fatalf("attrs %q\nwant  %q", strings.Join(got, " "), want)
	}

	p6, err := nativePath(bgp.Path{Prefix: mustPrefix("fd00:10::/64")})
	if err != nil {
		t.Fatal(err)
	}
	mp, ok := p6.Attrs[1].(*gobgp.PathAttributeMpReachNLRI)
	if p6.Family != gobgp.RF_IPv6_UC || !ok || mp.Nexthop != netip.IPv6Unspecified() {
		t.Fatalf("IPv6 path: %v %v", p6.Family, p6.Attrs)
	}

	w, err := withdrawPath(mustPrefix("10.244.1.0/24"))
	if err != nil || !w.Withdrawal {
		t.Fatalf("withdraw: %v %+v", err, w)
	}

	for _, bad := range []string{"65536:1", "1:65536", "x:1", "1", "1:2:3:4", "01:2", "4294967296:1:1"} {
		if _, err := nativePath(bgp.Path{Prefix: mustPrefix("10.0.0.0/8"), Communities: []string{bad}}); err == nil {
			t.Errorf("community %q accepted", bad)
		}
	}
}

func TestIdentity(t *testing.T) {
	g := bgp.Global{ASN: 1, RouterID: mustAddr("10.0.0.1"), ListenAddresses: []netip.Addr{mustAddr("10.0.0.1")}}
	same := g
	same.GracefulRestart = bgp.GracefulRestart{Enabled: true, RestartTime: time.Minute, Restarting: true}
	if identityOf(g) != identityOf(same) {
		t.Fatal("graceful-restart settings changed the identity (would restart the speaker)")
	}
	for _, mod := range []func(*bgp.Global){
		func(g *bgp.Global) { g.ASN = 2 },
		func(g *bgp.Global) { g.RouterID = mustAddr("10.0.0.2") },
		func(g *bgp.Global) { g.ListenPort = 1790 },
		func(g *bgp.Global) { g.ListenAddresses = nil },
	} {
		c := g
		c.ListenAddresses = append([]netip.Addr(nil), g.ListenAddresses...)
		mod(&c)
		if identityOf(c) == identityOf(g) {
			t.Errorf("change not seen: %+v", c)
		}
	}
}

func TestRestartingWindow(t *testing.T) {
	start := time.Unix(1000, 0)
	r := &instance{started: start}
	gr := bgp.GracefulRestart{Enabled: true, RestartTime: time.Minute, Restarting: true}
	for _, tc := range []struct {
		gr   bgp.GracefulRestart
		at   time.Duration
		want bool
	}{
		{gr, 0, true},
		{gr, 59 * time.Second, true},
		{gr, 61 * time.Second, false},
		{bgp.GracefulRestart{Enabled: true, RestartTime: time.Minute}, 0, false},
		{bgp.GracefulRestart{Restarting: true, RestartTime: time.Minute}, 0, false},
		{bgp.GracefulRestart{Enabled: true, Restarting: true}, 119 * time.Second, true},
	} {
		if got := r.restarting(tc.gr, start.Add(tc.at)); got != tc.want {
			t.Errorf("%+v at +%v: %v, want %v", tc.gr, tc.at, got, tc.want)
		}
	}
}
