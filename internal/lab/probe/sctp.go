package probe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net/netip"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// This kernel has no SCTP sockets, though conntrack and nftables understand
// SCTP. An SCTP probe is therefore a crafted SCTP INIT sent from the source
// pod through a raw IP (or IPv6) socket; the verdict is whether it arrived at the
// destination pod's interface, seen with a packet socket there.

const ipProtoSCTP = 132

// SCTPInit builds an SCTP common header plus INIT chunk with a valid CRC32c.
func SCTPInit(srcPort, dstPort uint16, tag uint32) []byte {
	b := make([]byte, 12+20)
	binary.BigEndian.PutUint16(b[0:], srcPort)
	binary.BigEndian.PutUint16(b[2:], dstPort)
	// verification tag 0 for INIT; checksum filled below
	c := b[12:]
	c[0] = 1 // INIT
	binary.BigEndian.PutUint16(c[2:], 20)
	binary.BigEndian.PutUint32(c[4:], tag)    // initiate tag
	binary.BigEndian.PutUint32(c[8:], 65535)  // a_rwnd
	binary.BigEndian.PutUint16(c[12:], 1)     // outbound streams
	binary.BigEndian.PutUint16(c[14:], 1)     // inbound streams
	binary.BigEndian.PutUint32(c[16:], tag+1) // initial TSN
	sum := crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))
	binary.LittleEndian.PutUint32(b[8:], sum)
	return b
}

// MatchSCTPInit reports whether an IPv4 or IPv6 packet is an SCTP INIT to
// dst:port carrying tag (IPv6: SCTP right after the fixed header, as the
// probe sends it).
func MatchSCTPInit(pkt []byte, dst netip.Addr, port uint16, tag uint32) bool {
	var s []byte
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4 && dst.Is4():
		if pkt[9] != ipProtoSCTP || netip.AddrFrom4([4]byte(pkt[16:20])) != dst {
			return false
		}
		s = pkt[int(pkt[0]&0x0f)*4:]
	case len(pkt) >= 40 && pkt[0]>>4 == 6 && dst.Is6():
		if pkt[6] != ipProtoSCTP || netip.AddrFrom16([16]byte(pkt[24:40])) != dst {
			return false
		}
		s = pkt[40:]
	default:
		return false
	}
	if len(s) < 32 || binary.BigEndian.Uint16(s[2:]) != port || s[12] != 1 {
		return false
	}
	return binary.BigEndian.Uint32(s[16:]) == tag
}

// ProbeSCTP sends an SCTP INIT from the namespace srcNS to dst:port and
// reports whether it arrived on an interface of the namespace dstNS.
func ProbeSCTP(srcNS, dstNS string, dst netip.Addr, port uint16, timeout time.Duration) (bool, error) {
	if !dst.IsValid() || dst.Is4In6() || dst.Zone() != "" {
		return false, fmt.Errorf("SCTP probe: %v is not an IPv4 or IPv6 address", dst)
	}
	family, ethType := unix.AF_INET6, unix.ETH_P_IPV6
	var sa unix.Sockaddr = &unix.SockaddrInet6{Addr: dst.As16()}
	if dst.Is4() {
		family, ethType, sa = unix.AF_INET, unix.ETH_P_IP, &unix.SockaddrInet4{Addr: dst.As4()}
	}
	var fd int
	err := ns.WithNetNSPath(dstNS, func(ns.NetNS) error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(uint16(ethType))))
		return err
	})
	if err != nil {
		return false, fmt.Errorf("SCTP probe: packet socket in destination: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return false, fmt.Errorf("SCTP probe: %w", err)
	}
	tag := uint32(time.Now().UnixNano())
	pkt := SCTPInit(uint16(30000+tag%20000), port, tag)
	send := func() error {
		return ns.WithNetNSPath(srcNS, func(ns.NetNS) error {
			s, err := unix.Socket(family, unix.SOCK_RAW, ipProtoSCTP)
			if err != nil {
				return err
			}
			defer unix.Close(s)
			return unix.Sendto(s, pkt, 0, sa)
		})
	}
	// Like an SCTP stack, the probe sends its INIT again while no copy has
	// arrived (every resend): a first packet can be lost to neighbour
	// resolution or a link coming up.
	const resend = 250 * time.Millisecond
	buf := make([]byte, 2048)
	deadline := time.Now().Add(timeout)
	for next := time.Now(); time.Now().Before(deadline); {
		if !time.Now().Before(next) {
			err := send()
			if errors.Is(err, unix.EPERM) {
				return false, nil // dropped by a filter on the way out of the source
			}
			if err != nil {
				return false, fmt.Errorf("SCTP probe: sending INIT: %w", err)
			}
			next = time.Now().Add(resend)
		}
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			continue // timeout slice or EINTR
		}
		if MatchSCTPInit(buf[:n], dst, port, tag) {
			return true, nil
		}
	}
	return false, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
