package drops

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// protoICMPv6 is ICMPv6's next-header number.
const protoICMPv6 = 58

// IPv6 extension headers DecodeIPv6 walks past to reach the ports.
const (
	extHopByHop = 0
	extRouting  = 43
	extFragment = 44
	extDestOpts = 60
)

// DecodePacket reads the IPv4 or IPv6 header at the start of b (by its
// version) and, for TCP, UDP and SCTP first fragments, the ports.
func DecodePacket(b []byte) (Packet, error) {
	if len(b) > 0 && b[0]>>4 == 6 {
		return DecodeIPv6(b)
	}
	return DecodeIPv4(b)
}

// DecodeIPv6 reads the IPv6 header at the start of b and, for TCP, UDP and
// SCTP, the ports: after the extension headers that fit in b (hop-by-hop,
// routing, destination options, and a fragment header of a first
// fragment). b may be cut short (the reader's copy range): a packet whose
// ports lie beyond it is decoded without them.
func DecodeIPv6(b []byte) (Packet, error) {
	var p Packet
	if len(b) < 40 {
		return p, fmt.Errorf("IPv6 header cut at %d bytes", len(b))
	}
	if b[0]>>4 != 6 {
		return p, fmt.Errorf("IP version %d, not 6", b[0]>>4)
	}
	p.Src = netip.AddrFrom16([16]byte(b[8:24]))
	p.Dst = netip.AddrFrom16([16]byte(b[24:40]))
	next, off := b[6], 40
	for {
		switch next {
		case extHopByHop, extRouting, extDestOpts:
			if len(b) < off+2 {
				p.Proto = next
				return p, nil
			}
			next, off = b[off], off+8+int(b[off+1])*8
			continue
		case extFragment:
			if len(b) < off+8 {
				p.Proto = next
				return p, nil
			}
			first := binary.BigEndian.Uint16(b[off+2:])&0xfff8 == 0
			next, off = b[off], off+8
			if !first {
				p.Proto = next
				return p, nil
			}
			continue
		}
		break
	}
	p.Proto = next
	switch p.Proto {
	case protoTCP, protoUDP, protoSCTP:
		if len(b) >= off+4 {
			p.SrcPort = binary.BigEndian.Uint16(b[off:])
			p.DstPort = binary.BigEndian.Uint16(b[off+2:])
		}
	}
	return p, nil
}
