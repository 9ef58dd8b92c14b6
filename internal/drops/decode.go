// Package drops reads the node's deny log: the nflog group the policy
// table (internal/policy) sends every dropped packet to. It decodes each
// record (prefix, interfaces, IPv4 and transport headers), names the pods
// at both ends, keeps the last drops in a bounded ring and serves them as
// JSON lines on the agent's local API (agentapi.DropsPath).
package drops

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Packet is what the deny log tells of a dropped IPv4 packet.
type Packet struct {
	Src, Dst         netip.Addr
	Proto            uint8
	SrcPort, DstPort uint16
}

// IP protocol numbers with ports or names.
const (
	protoICMP = 1
	protoTCP  = 6
	protoUDP  = 17
	protoSCTP = 132
)

// ProtocolName is TCP, UDP, SCTP, ICMP or the protocol number.
func ProtocolName(p uint8) string {
	switch p {
	case protoICMP:
		return "ICMP"
	case protoTCP:
		return "TCP"
	case protoUDP:
		return "UDP"
	case protoSCTP:
		return "SCTP"
	}
	return strconv.Itoa(int(p))
}

// DecodeIPv4 reads the IPv4 header at the start of b and, for TCP, UDP and
// SCTP first fragments, the ports. b may be cut short after the ports
// (the reader's copy range).
func DecodeIPv4(b []byte) (Packet, error) {
	var p Packet
	if len(b) < 20 {
		return p, fmt.Errorf("IPv4 header cut at %d bytes", len(b))
	}
	if b[0]>>4 != 4 {
		return p, fmt.Errorf("IP version %d, not 4", b[0]>>4)
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 {
		return p, fmt.Errorf("IPv4 header length %d", ihl)
	}
	p.Proto = b[9]
	p.Src = netip.AddrFrom4([4]byte(b[12:16]))
	p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	fragOff := binary.BigEndian.Uint16(b[6:]) & 0x1fff
	switch p.Proto {
	case protoTCP, protoUDP, protoSCTP:
		if fragOff == 0 && len(b) >= ihl+4 {
			p.SrcPort = binary.BigEndian.Uint16(b[ihl:])
			p.DstPort = binary.BigEndian.Uint16(b[ihl+2:])
		}
	}
	return p, nil
}

// Verdicts of a Prefix (agentapi.Drop.Verdict).
const (
	VerdictPolicy       = "policy"
	VerdictSpoofed      = "spoofed"
	VerdictPending      = "pending"
	VerdictPendingKnown = "pending known-address"
	// VerdictUnencrypted: encryption's strict mode dropped a packet to
	// another node's pod that would have left by another device than the
	// WireGuard device (internal/wireguard/strict).
	VerdictUnencrypted = "unencrypted"
)

// Prefix is the parsed log prefix of a drop rule: "trellis-deny <reason>: "
// (internal/policy denyRules, internal/wireguard/strict).
type Prefix struct {
	Verdict   string
	Direction string // ingress, egress or "" (spoofed, pending known-address)
	Group     string // the group chain, for VerdictPolicy
}

// PrefixTag starts every deny-log prefix.
const PrefixTag = "trellis-deny "

// ParsePrefix reads the prefixes the policy and strict encryption tables
// write:
//
//	trellis-deny ingress ing-<h>:      trellis-deny egress eg-<h>:
//	trellis-deny spoofed:              trellis-deny pending ingress|egress:
//	trellis-deny pending known-address: trellis-deny unencrypted:
func ParsePrefix(s string) (Prefix, error) {
	rest, ok := strings.CutPrefix(s, PrefixTag)
	if !ok {
		return Prefix{}, errors.New("not a trellis deny-log prefix: " + strconv.Quote(s))
	}
	rest = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), ":"))
	f := strings.Fields(rest)
	switch {
	case len(f) == 1 && f[0] == "spoofed":
		return Prefix{Verdict: VerdictSpoofed}, nil
	case len(f) == 1 && f[0] == "unencrypted":
		return Prefix{Verdict: VerdictUnencrypted}, nil
	case len(f) == 2 && f[0] == "pending" && f[1] == "known-address":
		return Prefix{Verdict: VerdictPendingKnown}, nil
	case len(f) == 2 && f[0] == "pending" && (f[1] == "ingress" || f[1] == "egress"):
		return Prefix{Verdict: VerdictPending, Direction: f[1]}, nil
	case len(f) == 2 && (f[0] == "ingress" || f[0] == "egress"):
		return Prefix{Verdict: VerdictPolicy, Direction: f[0], Group: f[1]}, nil
	}
	return Prefix{}, errors.New("unknown trellis deny-log prefix: " + strconv.Quote(s))
}
