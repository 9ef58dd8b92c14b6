package bgp

import (
	"fmt"
	"net/netip"
	"reflect"
	"sort"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	v1alpha1 "github.com/trellisnet/trellis/internal/apis/bgp/v1alpha1"
)

// internalMultihop is the TTL of an eBGP session between two nodes of the
// cluster (nodes with different ASN labels): nodes may sit on different
// subnets, and both ends are known cluster nodes.
const internalMultihop = 255

// neighbors returns the sessions, sorted by address.
//
// Sessions come from the BGPPeers selecting this node and from the
// internal peering. One address is one session: when several sources ask
// for it, the BGPPeers are taken by name and the first one's settings
// apply (another BGPPeer asking for different settings is reported); the
// internal peering then only adds what it alone knows (the session is
// internal, the neighbour is a reflector client) and every path to send.
// An address whose BGPPeer cannot be opened for want of its password is
// not opened by the internal peering either: the operator asked for a
// password on it.
func (c *computation) neighbors(paths []Path, by advertised, grEnabled bool) []Neighbor {
	all := make([]netip.Prefix, 0, len(paths))
	for _, p := range paths {
		all = append(all, p.Prefix)
	}
	adLabels := map[string]labels.Set{}
	for _, a := range c.in.Advertisements {
		if a != nil {
			adLabels[a.Name] = labels.Set(a.Labels)
		}
	}

	sessions := map[netip.Addr]*Neighbor{}
	blocked := map[netip.Addr]bool{}
	for _, peer := range sortedPeers(c.in.Peers) {
		ns, ok := c.peerNeighbors(peer, grEnabled)
		if !ok {
			for _, n := range ns {
				blocked[n.Address] = true
			}
			continue
		}
		export := c.export(peer, by, adLabels)
		for _, n := range ns {
			n.Export = export
			if held, ok := sessions[n.Address]; ok {
				if !sameSettings(*held, n) {
					c.problem(ReasonPeerConflict, "BGPPeer/"+peer.Name,
						"BGPPeer %s asks for a session to %s with other settings than BGPPeer %s; %s's apply (the first by name)",
						peer.Name, n.Address, held.Source, held.Source)
				}
				continue
			}
			sessions[n.Address] = &n
		}
	}
	for _, n := range c.internal() {
		if blocked[n.Address] {
			continue
		}
		n.Export = all
		held, ok := sessions[n.Address]
		if !ok {
			sessions[n.Address] = &n
			continue
		}
		if held.ASN != n.ASN {
			c.problem(ReasonASNConflict, "BGPPeer/"+held.Source,
				"BGPPeer %s peers with %s (%s) as ASN %d, but that node's ASN is %d; the BGPPeer's ASN applies",
				held.Source, n.Address, n.Source, held.ASN, n.ASN)
		}
		held.Internal = true
		held.Export = all
		if held.ASN == c.localASN {
			held.RouteReflectorClient, held.ClusterID = n.RouteReflectorClient, n.ClusterID
		}
	}
	out := make([]Neighbor, 0, len(sessions))
	for _, n := range sessions {
		n.Export = inFamilies(n.Export, n.Families)
		out = append(out, *n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Address.Less(out[j].Address) })
	if len(out) == 0 {
		return nil
	}
	return out
}

// sameSettings compares two sessions to one address, except for who asked
// and what they are sent.
func sameSettings(a, b Neighbor) bool {
	a.Source, b.Source = "", ""
	a.Export, b.Export = nil, nil
	return reflect.DeepEqual(a, b)
}

// peerNeighbors returns the sessions one BGPPeer asks this node for; none
// when it does not select this node. false: the BGPPeer cannot be honoured
// (reported); the sessions returned then are the addresses that must not
// be opened without it.
func (c *computation) peerNeighbors(peer *v1alpha1.BGPPeer, grEnabled bool) ([]Neighbor, bool) {
	obj := "BGPPeer/" + peer.Name
	spec := peer.Spec
	sel, ok := c.selector(ReasonInvalidPeer, obj, "nodeSelector", spec.NodeSelector)
	if !ok || !sel.Matches(labels.Set(c.in.Local.Labels)) {
		return nil, true
	}
	base, err := peerSettings(spec)
	if err != nil {
		c.problem(ReasonInvalidPeer, obj, "%v; no session", err)
		return nil, true
	}
	base.Source = peer.Name

	var ns []Neighbor
	switch {
	case spec.PeerAddress != "" && spec.PeerNodeSelector != nil:
		c.problem(ReasonInvalidPeer, obj, "both peerAddress and peerNodeSelector are set; no session")
		return nil, true
	case spec.PeerAddress != "":
		addr, err := netip.ParseAddr(spec.PeerAddress)
		if err != nil || addr.Zone() != "" {
			c.problem(ReasonInvalidPeer, obj, "peerAddress %q is not an IP address; no session", spec.PeerAddress)
			return nil, true
		}
		addr = addr.Unmap()
		if addr == c.in.Local.InternalIP {
			c.problem(ReasonInvalidPeer, obj, "peerAddress %s is this node's own address; no session", addr)
			return nil, true
		}
		if spec.PeerASN < 1 || spec.PeerASN > maxASN {
			c.problem(ReasonInvalidPeer, obj, "peerASN %d is not in 1-%d; no session", spec.PeerASN, maxASN)
			return nil, true
		}
		n := base
		n.Address, n.ASN = addr, uint32(spec.PeerASN)
		ns = append(ns, n)
	case spec.PeerNodeSelector != nil:
		psel, ok := c.selector(ReasonInvalidPeer, obj, "peerNodeSelector", spec.PeerNodeSelector)
		if !ok {
			return nil, true
		}
		for _, node := range c.nodes {
			if !psel.Matches(labels.Set(node.Labels)) {
				continue
			}
			n := base
			n.Address, n.ASN, n.Internal = node.InternalIP, c.nodeASN(node, false), true
			ns = append(ns, n)
		}
	default:
		c.problem(ReasonInvalidPeer, obj, "neither peerAddress nor peerNodeSelector is set; no session")
		return nil, true
	}

	if key := spec.PasswordSecretKey; key != "" {
		pw, ok := c.in.Passwords[key]
		if !ok || pw == "" {
			// The key's name is not secret; the value never appears.
			c.problem(ReasonPasswordMissing, obj,
				"key %q is missing from Secret %s; the session is not opened without the password it asks for",
				key, v1alpha1.PasswordSecretName)
			return ns, false
		}
		for i := range ns {
			ns[i].Password = Secret(pw)
		}
	}
	if base.BFD.Enabled && grEnabled {
		c.problem(ReasonGracefulRestartBFD, obj, "%s", GracefulRestartWithBFDMessage)
	}
	return ns, true
}

// peerSettings is a BGPPeer's session settings with defaults applied. The
// API server validates the same bounds; they are checked again because a
// BGPPeer may predate the CRD that would refuse it.
func peerSettings(spec v1alpha1.BGPPeerSpec) (Neighbor, error) {
	var n Neighbor
	if spec.AllowOwnAS < 0 || spec.AllowOwnAS > 10 {
		return n, fmt.Errorf("allowOwnAS %d is not in 0-10", spec.AllowOwnAS)
	}
	n.AllowOwnAS = uint8(spec.AllowOwnAS)
	if spec.Multihop != nil && spec.TTLSecurity != nil {
		return n, fmt.Errorf("multihop and ttlSecurity exclude each other")
	}
	if m := spec.Multihop; m != nil {
		if *m < 1 || *m > 255 {
			return n, fmt.Errorf("multihop %d is not in 1-255", *m)
		}
		n.Multihop = uint8(*m)
	}
	if t := spec.TTLSecurity; t != nil {
		if *t < 1 || *t > 254 {
			return n, fmt.Errorf("ttlSecurity %d is not in 1-254", *t)
		}
		n.TTLSecurity = uint8(*t)
	}
	n.Passive = spec.Passive
	if t := spec.Timers; t != nil {
		if t.HoldTimeSeconds != 0 && (t.HoldTimeSeconds < 3 || t.HoldTimeSeconds > 65535) {
			return n, fmt.Errorf("timers.holdTimeSeconds %d is not in 3-65535", t.HoldTimeSeconds)
		}
		if t.KeepaliveSeconds < 0 || t.KeepaliveSeconds > 21845 {
			return n, fmt.Errorf("timers.keepaliveSeconds %d is not in 1-21845", t.KeepaliveSeconds)
		}
		if t.ConnectRetrySeconds < 0 || t.ConnectRetrySeconds > 65535 {
			return n, fmt.Errorf("timers.connectRetrySeconds %d is not in 1-65535", t.ConnectRetrySeconds)
		}
		n.HoldTime = time.Duration(t.HoldTimeSeconds) * time.Second
		n.Keepalive = time.Duration(t.KeepaliveSeconds) * time.Second
		n.ConnectRetry = time.Duration(t.ConnectRetrySeconds) * time.Second
	}
	if b := spec.BFD; b != nil && b.Enabled {
		n.BFD = BFD{Enabled: true, MinRx: DefaultBFDInterval, MinTx: DefaultBFDInterval, DetectMultiplier: DefaultBFDMultiplier}
		for _, ms := range []int32{b.MinRxMilliseconds, b.MinTxMilliseconds} {
			if ms != 0 && (ms < 10 || ms > 60000) {
				return n, fmt.Errorf("bfd interval %d ms is not in 10-60000", ms)
			}
		}
		if b.Multiplier < 0 || b.Multiplier > 255 {
			return n, fmt.Errorf("bfd.multiplier %d is not in 1-255", b.Multiplier)
		}
		if b.MinRxMilliseconds != 0 {
			n.BFD.MinRx = time.Duration(b.MinRxMilliseconds) * time.Millisecond
		}
		if b.MinTxMilliseconds != 0 {
			n.BFD.MinTx = time.Duration(b.MinTxMilliseconds) * time.Millisecond
		}
		if b.Multiplier != 0 {
			n.BFD.DetectMultiplier = uint8(b.Multiplier)
		}
	}
	fams := map[Family]bool{}
	for _, f := range spec.Families {
		switch Family(f) {
		case IPv4Unicast, IPv6Unicast:
			fams[Family(f)] = true
		default:
			return n, fmt.Errorf("family %q is neither %s nor %s", f, IPv4Unicast, IPv6Unicast)
		}
	}
	n.Families = defaultFamilies()
	if len(fams) > 0 {
		n.Families = nil
		for _, f := range []Family{IPv4Unicast, IPv6Unicast} {
			if fams[f] {
				n.Families = append(n.Families, f)
			}
		}
	}
	return n, nil
}

func defaultFamilies() []Family { return []Family{IPv4Unicast} }

// export is what a BGPPeer's sessions are sent: this node's pod CIDRs in
// routingMode bgp (always), and the prefixes of the BGPAdvertisements its
// advertisementSelector picks (nil or empty: all).
func (c *computation) export(peer *v1alpha1.BGPPeer, by advertised, adLabels map[string]labels.Set) []netip.Prefix {
	sel, _ := c.selector(ReasonInvalidPeer, "BGPPeer/"+peer.Name, "advertisementSelector", peer.Spec.AdvertisementSelector)
	out := append([]netip.Prefix(nil), by[""]...)
	for name, ps := range by {
		if name != "" && sel.Matches(adLabels[name]) {
			out = append(out, ps...)
		}
	}
	return sortedPrefixes(out)
}

// internal is the sessions the internal peering asks for (Source
// "node/NAME"), before merging with the BGPPeers.
func (c *computation) internal() []Neighbor {
	spec := c.in.Config.Spec
	obj := "BGPConfiguration/" + c.in.Config.Name
	session := func(n Node) Neighbor {
		// Of two nodes, only the one with the lower address connects;
		// the other waits (passive). Two speakers dialling each other at
		// once is a BGP connection collision, which GoBGP was seen to
		// leave in OpenConfirm until the hold time (20-speaker mesh).
		nb := Neighbor{Address: n.InternalIP, ASN: c.nodeASN(n, false), Source: "node/" + n.Name,
			Families: defaultFamilies(), Internal: true, Passive: c.in.Local.InternalIP.Compare(n.InternalIP) > 0}
		if nb.ASN != c.localASN {
			nb.Multihop = internalMultihop
		}
		return nb
	}
	var out []Neighbor
	switch spec.InternalPeering {
	case "", v1alpha1.PeeringNone:
	case v1alpha1.PeeringFullMesh:
		for _, n := range c.nodes {
			out = append(out, session(n))
		}
	case v1alpha1.PeeringRouteReflector:
		rr := spec.RouteReflectors
		if rr == nil {
			c.problem(ReasonInvalidConfiguration, obj, "internalPeering RouteReflector without routeReflectors; no internal sessions")
			return nil
		}
		sel, ok := c.selector(ReasonInvalidConfiguration, obj, "routeReflectors.nodeSelector", &rr.NodeSelector)
		if !ok {
			return nil
		}
		clusterID, err := netip.ParseAddr(rr.ClusterID)
		if err != nil || !clusterID.Is4() {
			c.problem(ReasonInvalidConfiguration, obj,
				"routeReflectors.clusterID %q is not an IPv4 address; this node's router ID is used", rr.ClusterID)
			clusterID = c.in.Local.InternalIP
		}
		localIsRR := sel.Matches(labels.Set(c.in.Local.Labels))
		reflectors := 0
		if localIsRR {
			reflectors++
		}
		for _, n := range c.nodes {
			nIsRR := sel.Matches(labels.Set(n.Labels))
			if nIsRR {
				reflectors++
			}
			switch {
			case localIsRR:
				nb := session(n)
				if !nIsRR {
					if nb.ASN == c.localASN {
						nb.RouteReflectorClient, nb.ClusterID = true, clusterID
					} else {
						c.problem(ReasonASNConflict, "Node/"+n.Name,
							"node %s has ASN %d, not this reflector's %d: it is an eBGP neighbour, not a reflector client",
							n.Name, nb.ASN, c.localASN)
					}
				}
				out = append(out, nb)
			case nIsRR:
				out = append(out, session(n))
			}
		}
		if reflectors == 0 {
			c.problem(ReasonInvalidConfiguration, obj, "no node matches routeReflectors.nodeSelector; no internal sessions")
		}
	default:
		c.problem(ReasonInvalidConfiguration, obj, "internalPeering %q is unknown; no internal sessions", spec.InternalPeering)
	}
	return out
}

func sortedPeers(ps []*v1alpha1.BGPPeer) []*v1alpha1.BGPPeer {
	out := make([]*v1alpha1.BGPPeer, 0, len(ps))
	for _, p := range ps {
		if p != nil {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// inFamilies keeps the prefixes a session's families can carry: an IPv6
// Service address is not sent on an IPv4-only session.
func inFamilies(ps []netip.Prefix, fams []Family) []netip.Prefix {
	var v4, v6 bool
	for _, f := range fams {
		v4 = v4 || f == IPv4Unicast
		v6 = v6 || f == IPv6Unicast
	}
	var out []netip.Prefix
	for _, p := range ps {
		if (p.Addr().Is4() && v4) || (p.Addr().Is6() && v6) {
			out = append(out, p)
		}
	}
	return out
}
