// Package bgp is Trellis's BGP route distribution: the pure desired state
// (Compute: the BGP API objects, Nodes and Services in; the speaker's
// global settings, neighbours, paths and import policy out), the learned
// routes the kernel gets, and the controller that drives the speaker
// (internal/bgp/speaker, GoBGP embedded) and the kernel routes
// (internal/bgp/kernelroutes). docs/bgp.md is the operator's guide.
package bgp

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"time"
)

// Desired is what one node's speaker should be: a pure function of the
// API objects (Compute).
type Desired struct {
	// Enabled is false without a BGPConfiguration "default" (or without
	// the CRDs): the speaker is stopped and the learned routes removed.
	Enabled bool
	Global  Global
	// Neighbors, sorted by Address.
	Neighbors []Neighbor
	// Paths this node originates, sorted by Prefix.
	Paths  []Path
	Import ImportPolicy
}

// Global is the speaker's own identity.
type Global struct {
	ASN      uint32
	RouterID netip.Addr
	// ListenPort; 0 = 179. Negative: no listener (tests).
	ListenPort int32
	// ListenAddresses the speaker binds; empty = all.
	ListenAddresses []netip.Addr
	GracefulRestart GracefulRestart
}

// GracefulRestart (RFC 4724) as advertised to every neighbour.
type GracefulRestart struct {
	Enabled     bool
	RestartTime time.Duration
	// Restarting sets the Restart State bit: only after a real restart of
	// the agent in this boot (its kernel routes or state survived), never
	// on a first start.
	Restarting bool
}

// Neighbor is one session.
type Neighbor struct {
	Address netip.Addr
	ASN     uint32
	// Source names what asked for it: a BGPPeer's name, or "node/NAME" for
	// an internal (full-mesh or reflector) session.
	Source string
	// Password is the TCP-MD5 key; Secret redacts it in logs.
	Password Secret
	// Multihop is the eBGP TTL (0: directly connected, TTL 1).
	Multihop uint8
	// AllowOwnAS: accept paths holding this node's ASN this many times.
	AllowOwnAS uint8
	// TTLSecurity is GTSM's hop count (0: off).
	TTLSecurity uint8
	Passive     bool
	// HoldTime, Keepalive, ConnectRetry (zero: 90 s, 30 s and 5 s).
	HoldTime, Keepalive, ConnectRetry time.Duration
	BFD                               BFD
	Families                          []Family
	// RouteReflectorClient: this node reflects to that neighbour (it is a
	// client); ClusterID is this node's reflector cluster ID.
	RouteReflectorClient bool
	ClusterID            netip.Addr
	// Export are the prefixes of Paths this neighbour is sent (after the
	// BGPPeer's advertisementSelector, and only those its Families carry),
	// sorted.
	Export []netip.Prefix
	// Internal: a session to another node of the cluster.
	Internal bool
}

// BFD of one session.
type BFD struct {
	Enabled          bool
	MinRx, MinTx     time.Duration
	DetectMultiplier uint8
}

// Family is an AFI/SAFI pair.
type Family string

// Families.
const (
	IPv4Unicast Family = "ipv4-unicast"
	IPv6Unicast Family = "ipv6-unicast"
)

// Path is a prefix this node originates, with next hop itself.
type Path struct {
	Prefix netip.Prefix
	// Communities: standard "ASN:value" and large "ASN:x:y".
	Communities []string
	// LocalPreference (nil: unset).
	LocalPreference *uint32
	// Origin names why (e.g. "podCIDR", "service kube-system/dns clusterIP").
	Origin string
}

// ImportPolicy is what this node accepts and installs. A learned prefix
// is judged in this order (Allows):
//  0. not a valid prefix, or an IPv4-mapped IPv6 one: refused;
//  1. equal to or inside one of Reject (this node's own pod CIDRs):
//     refused;
//  2. equal to one of PodCIDRs (other nodes' pod CIDRs, routingMode bgp):
//     accepted;
//  3. equal to or inside one of Cluster (the cluster CIDRs and every
//     node's pod CIDRs): refused — nobody outside the cluster speaks for
//     pod addresses;
//  4. Accept empty: accepted, except the default route; else accepted only
//     when an Accept entry matches.
//
// A prefix covering a pod CIDR (a fabric aggregate, the default route) is
// not refused by 1 and 3: the kernel's longest-prefix match keeps the more
// specific pod routes in charge, and refusing it would make a listed
// default route impossible to accept.
type ImportPolicy struct {
	// Install: learned routes go into the kernel.
	Install  bool
	Reject   []netip.Prefix
	PodCIDRs []netip.Prefix
	Cluster  []netip.Prefix
	Accept   []PrefixMatch
	// MaxPrefixes per session (0: unlimited).
	MaxPrefixes uint32
}

// Allows judges a learned prefix; reason names the rule that decided.
func (ip ImportPolicy) Allows(p netip.Prefix) (ok bool, reason string) {
	if !p.IsValid() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
		return false, "not a valid prefix"
	}
	p = p.Masked()
	for _, r := range ip.Reject {
		if within(p, r) {
			return false, "own pod CIDR " + r.String()
		}
	}
	for _, c := range ip.PodCIDRs {
		if c.IsValid() && c.Masked() == p {
			return true, "pod CIDR of another node"
		}
	}
	for _, c := range ip.Cluster {
		if within(p, c) {
			return false, "inside cluster CIDR " + c.String()
		}
	}
	if len(ip.Accept) == 0 {
		if p.Bits() == 0 {
			return false, "default route not listed in acceptedPrefixes"
		}
		return true, "any prefix"
	}
	for _, m := range ip.Accept {
		if m.Contains(p) {
			return true, "acceptedPrefixes " + m.Prefix.String()
		}
	}
	return false, "not in acceptedPrefixes"
}

// within: p is o or one of its subnets.
func within(p, o netip.Prefix) bool {
	return o.IsValid() && o.Bits() <= p.Bits() && o.Contains(p.Addr())
}

// PrefixMatch matches Prefix and its subnets up to MaxLen bits (MaxLen
// below Prefix's length: Prefix alone). An invalid Prefix (the zero
// PrefixMatch) matches nothing.
type PrefixMatch struct {
	Prefix netip.Prefix
	MaxLen int
}

// Contains reports whether p is matched.
func (m PrefixMatch) Contains(p netip.Prefix) bool {
	if !m.Prefix.IsValid() || !p.IsValid() {
		return false
	}
	maxLen := m.MaxLen
	if maxLen < m.Prefix.Bits() {
		maxLen = m.Prefix.Bits()
	}
	return p.Bits() >= m.Prefix.Bits() && p.Bits() <= maxLen && m.Prefix.Contains(p.Addr())
}

// Secret is a password that never prints.
type Secret string

// String redacts.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "<redacted>"
}

// LogValue redacts in structured logs.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON redacts: a Desired dumped as JSON (debug endpoints, test
// output) never carries a password.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// GoString redacts in %#v.
func (s Secret) GoString() string { return fmt.Sprintf("bgp.Secret(%q)", s.String()) }

// LearnedRoute is a best path the speaker selected from a neighbour, for
// the kernel.
type LearnedRoute struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
	// Neighbor it came from.
	Neighbor netip.Addr
	// Stale: held by graceful restart until the neighbour's End-of-RIB.
	Stale bool
}

// SessionState is a session's FSM state.
type SessionState string

// States (RFC 4271).
const (
	StateIdle        SessionState = "Idle"
	StateConnect     SessionState = "Connect"
	StateActive      SessionState = "Active"
	StateOpenSent    SessionState = "OpenSent"
	StateOpenConfirm SessionState = "OpenConfirm"
	StateEstablished SessionState = "Established"
)

// PeerState is one session as the speaker sees it.
type PeerState struct {
	Address netip.Addr
	ASN     uint32
	State   SessionState
	Since   time.Time
	// Received, Accepted, Advertised prefixes.
	Received, Accepted, Advertised uint32
	// BFD: "" (off), Down, Init, Up.
	BFD string
	// GracefulRestart: Off, Negotiated, PeerRestarting, Restarting.
	GracefulRestart string
	// EndOfRIB: the neighbour's End-of-RIB for IPv4 unicast arrived since
	// this session was established.
	EndOfRIB bool
	// Reason and Message say why the session is not established (last
	// NOTIFICATION, max prefixes, unreachable).
	Reason, Message string
}
