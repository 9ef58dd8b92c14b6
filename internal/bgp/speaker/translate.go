package speaker

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/trellisnet/trellis/internal/bgp"
)

// maxRestartTime is the largest restart time the GR capability carries
// (12 bits, RFC 4724).
const maxRestartTime = 4095

// identity is what a running GoBGP server cannot change in place: a change
// restarts it.
type identity struct {
	ASN             uint32
	RouterID        netip.Addr
	ListenPort      int32
	ListenAddresses string
}

func identityOf(g bgp.Global) identity {
	addrs := make([]string, len(g.ListenAddresses))
	for i, a := range g.ListenAddresses {
		addrs[i] = a.String()
	}
	return identity{ASN: g.ASN, RouterID: g.RouterID, ListenPort: g.ListenPort, ListenAddresses: strings.Join(addrs, ",")}
}

// startRequest is GoBGP's global configuration.
func startRequest(g bgp.Global) (*api.StartBgpRequest, error) {
	if g.ASN == 0 {
		return nil, fmt.Errorf("global ASN is 0")
	}
	if !g.RouterID.Is4() {
		return nil, fmt.Errorf("router ID %v is not an IPv4 address", g.RouterID)
	}
	port := g.ListenPort
	switch {
	case port == 0:
		port = 179
	case port < 0:
		port = -1
	}
	addrs := make([]string, 0, len(g.ListenAddresses))
	for _, a := range g.ListenAddresses {
		addrs = append(addrs, a.String())
	}
	return &api.StartBgpRequest{Global: &api.Global{
		Asn:             g.ASN,
		RouterId:        g.RouterID.String(),
		ListenPort:      port,
		ListenAddresses: addrs,
	}}, nil
}

// apiFamily is the GoBGP family of f.
func apiFamily(f bgp.Family) (*api.Family, gobgp.Family, error) {
	switch f {
	case bgp.IPv4Unicast:
		return &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}, gobgp.RF_IPv4_UC, nil
	case bgp.IPv6Unicast:
		return &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}, gobgp.RF_IPv6_UC, nil
	}
	return nil, 0, fmt.Errorf("unsupported address family %q", f)
}

// families is n's families; none configured means the family of its
// address.
func families(n bgp.Neighbor) []bgp.Family {
	if len(n.Families) > 0 {
		return n.Families
	}
	if n.Address.Is4() {
		return []bgp.Family{bgp.IPv4Unicast}
	}
	return []bgp.Family{bgp.IPv6Unicast}
}

func seconds(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	return uint64((d + time.Second - 1) / time.Second)
}

func micros(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	return uint32(d / time.Microsecond)
}

// peerConfig is GoBGP's configuration of neighbour n. restarting sets the
// Restart State bit in its OPEN (only for a neighbour added while the
// agent recovers from a restart).
func peerConfig(n bgp.Neighbor, g bgp.Global, maxPrefixes uint32, restarting bool) (*api.Peer, error) {
	if !n.Address.IsValid() {
		return nil, fmt.Errorf("neighbour without address")
	}
	if n.ASN == 0 {
		return nil, fmt.Errorf("neighbour %v: ASN is 0", n.Address)
	}
	if n.Multihop > 0 && n.TTLSecurity > 0 {
		return nil, fmt.Errorf("neighbour %v: multihop and TTL security are exclusive", n.Address)
	}
	p := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: n.Address.String(),
			PeerAsn:         n.ASN,
			AuthPassword:    string(n.Password),
			AllowOwnAsn:     uint32(n.AllowOwnAS),
		},
		Transport: &api.Transport{PassiveMode: n.Passive},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime:          seconds(n.HoldTime),
			KeepaliveInterval: seconds(n.Keepalive),
			ConnectRetry:      seconds(n.ConnectRetry),
		}},
	}
	// Sessions leave from the address the speaker listens on (the node's
	// InternalIP), so that the neighbour sees the address it configured.
	for _, a := range g.ListenAddresses {
		if a.Is4() == n.Address.Is4() && !a.IsUnspecified() {
			p.Transport.LocalAddress = a.String()
			break
		}
	}
	if n.Multihop > 0 {
		p.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(n.Multihop)}
	}
	if n.TTLSecurity > 0 {
		p.TtlSecurity = &api.TtlSecurity{Enabled: true, TtlMin: uint32(256 - int(n.TTLSecurity))}
	}
	if n.RouteReflectorClient {
		p.RouteReflector = &api.RouteReflector{RouteReflectorClient: true}
		if n.ClusterID.IsValid() {
			p.RouteReflector.RouteReflectorClusterId = n.ClusterID.String()
		}
	}
	gr := g.GracefulRestart
	if gr.Enabled {
		rt := seconds(gr.RestartTime)
		if rt == 0 {
			rt = 120
		}
		if rt > maxRestartTime {
			rt = maxRestartTime
		}
		p.GracefulRestart = &api.GracefulRestart{
			Enabled:     true,
			RestartTime: uint32(rt),
			// Selection deferral after our own restart: at most the
			// restart time, not GoBGP's default of 360 s.
			DeferralTime: uint32(rt),
			// No N bit: a hard reset (NOTIFICATION) is never a
			// graceful-restart event, so deconfiguring a neighbour or a
			// max-prefix teardown withdraws the routes at once.
			NotificationEnabled: false,
			LocalRestarting:     restarting,
		}
	}
	if n.BFD.Enabled {
		p.Bfd = &api.BfdPeerConfig{
			Enabled:                  true,
			DesiredMinimumTxInterval: micros(n.BFD.MinTx),
			RequiredMinimumReceive:   micros(n.BFD.MinRx),
			DetectionMultiplier:      uint32(n.BFD.DetectMultiplier),
		}
	}
	for _, f := range families(n) {
		af, _, err := apiFamily(f)
		if err != nil {
			return nil, fmt.Errorf("neighbour %v: %w", n.Address, err)
		}
		a := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: af, Enabled: true}}
		if gr.Enabled {
			a.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
		if maxPrefixes > 0 {
			a.PrefixLimits = &api.PrefixLimit{Family: af, MaxPrefixes: maxPrefixes}
		}
		p.AfiSafis = append(p.AfiSafis, a)
	}
	return p, nil
}

// nativePath is the GoBGP path originating p with next hop self.
func nativePath(p bgp.Path) (*apiutil.Path, error) {
	if !p.Prefix.IsValid() {
		return nil, fmt.Errorf("invalid prefix")
	}
	nlri, err := gobgp.NewIPAddrPrefix(p.Prefix.Masked())
	if err != nil {
		return nil, fmt.Errorf("path %v: %w", p.Prefix, err)
	}
	attrs := []gobgp.PathAttributeInterface{gobgp.NewPathAttributeOrigin(gobgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	var family gobgp.Family
	if p.Prefix.Addr().Is4() {
		family = gobgp.RF_IPv4_UC
		// 0.0.0.0: GoBGP sends the session's own address.
		nh, err := gobgp.NewPathAttributeNextHop(netip.IPv4Unspecified())
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, nh)
	} else {
		family = gobgp.RF_IPv6_UC
		mp, err := gobgp.NewPathAttributeMpReachNLRI(family, []gobgp.PathNLRI{{NLRI: nlri}}, netip.IPv6Unspecified())
		if err != nil {
			return nil, fmt.Errorf("path %v: %w", p.Prefix, err)
		}
		attrs = append(attrs, mp)
	}
	std, large, err := parseCommunities(p.Communities)
	if err != nil {
		return nil, fmt.Errorf("path %v: %w", p.Prefix, err)
	}
	if len(std) > 0 {
		attrs = append(attrs, gobgp.NewPathAttributeCommunities(std))
	}
	if len(large) > 0 {
		attrs = append(attrs, gobgp.NewPathAttributeLargeCommunities(large))
	}
	if p.LocalPreference != nil {
		attrs = append(attrs, gobgp.NewPathAttributeLocalPref(*p.LocalPreference))
	}
	return &apiutil.Path{Family: family, Nlri: nlri, Attrs: attrs}, nil
}

// withdrawPath is the GoBGP withdrawal of prefix.
func withdrawPath(prefix netip.Prefix) (*apiutil.Path, error) {
	p, err := nativePath(bgp.Path{Prefix: prefix})
	if err != nil {
		return nil, err
	}
	p.Withdrawal = true
	return p, nil
}

// parseCommunities splits "ASN:value" (standard) and "ASN:x:y" (large).
func parseCommunities(cs []string) ([]uint32, []*gobgp.LargeCommunity, error) {
	var std []uint32
	var large []*gobgp.LargeCommunity
	for _, c := range cs {
		switch strings.Count(c, ":") {
		case 1:
			var hi, lo uint32
			if _, err := fmt.Sscanf(c, "%d:%d", &hi, &lo); err != nil || hi > 0xffff || lo > 0xffff ||
				fmt.Sprintf("%d:%d", hi, lo) != c {
				return nil, nil, fmt.Errorf("community %q: want ASN:value, each 0-65535", c)
			}
			std = append(std, hi<<16|lo)
		case 2:
			l, err := gobgp.ParseLargeCommunity(c)
			if err != nil {
				return nil, nil, fmt.Errorf("large community %q: %w", c, err)
			}
			large = append(large, l)
		default:
			return nil, nil, fmt.Errorf("community %q: want ASN:value or ASN:x:y", c)
		}
	}
	return std, large, nil
}
