package probe

import (
	"encoding/binary"
	"hash/crc32"
	"net/netip"
	"testing"
)

func TestSCTPInitChecksumAndMatch(t *testing.T) {
	s := SCTPInit(40000, 80, 0xdeadbeef)
	if len(s) != 32 || s[12] != 1 {
		t.Fatalf("not an INIT: % x", s)
	}
	// The CRC32c is computed with the checksum field zeroed.
	c := append([]byte(nil), s...)
	got := binary.LittleEndian.Uint32(c[8:])
	binary.LittleEndian.PutUint32(c[8:], 0)
	if want := crc32.Checksum(c, crc32.MakeTable(crc32.Castagnoli)); got != want {
		t.Errorf("checksum %08x, want %08x", got, want)
	}
	ip := make([]byte, 20)
	ip[0], ip[9] = 0x45, ipProtoSCTP
	dst := netip.MustParseAddr("10.244.1.5")
	copy(ip[16:], dst.AsSlice())
	pkt := append(ip, s...)
	if !MatchSCTPInit(pkt, dst, 80, 0xdeadbeef) {
		t.Error("own INIT not matched")
	}
	for name, bad := range map[string]func() bool{
		"other port": func() bool { return MatchSCTPInit(pkt, dst, 81, 0xdeadbeef) },
		"other tag":  func() bool { return MatchSCTPInit(pkt, dst, 80, 1) },
		"other addr": func() bool { return MatchSCTPInit(pkt, netip.MustParseAddr("10.244.1.6"), 80, 0xdeadbeef) },
		"truncated":  func() bool { return MatchSCTPInit(pkt[:40], dst, 80, 0xdeadbeef) },
	} {
		if bad() {
			t.Errorf("%s matched", name)
		}
	}
}

// The IPv6 INIT the probe sends (SCTP right after the fixed header) is
// matched by its destination, port and tag; an IPv4 packet never matches
// an IPv6 destination, nor the reverse.
func TestSCTPInitMatchIPv6(t *testing.T) {
	s := SCTPInit(40000, 81, 0xfeedf00d)
	ip := make([]byte, 40)
	ip[0], ip[6] = 0x60, ipProtoSCTP
	dst := netip.MustParseAddr("fd74:7265:6c01:1::5")
	copy(ip[24:], dst.AsSlice())
	pkt := append(ip, s...)
	if !MatchSCTPInit(pkt, dst, 81, 0xfeedf00d) {
		t.Error("own IPv6 INIT not matched")
	}
	ip4 := make([]byte, 20)
	ip4[0], ip4[9] = 0x45, ipProtoSCTP
	copy(ip4[16:], netip.MustParseAddr("10.244.1.5").AsSlice())
	for name, bad := range map[string]func() bool{
		"other port":          func() bool { return MatchSCTPInit(pkt, dst, 80, 0xfeedf00d) },
		"other tag":           func() bool { return MatchSCTPInit(pkt, dst, 81, 2) },
		"other addr":          func() bool { return MatchSCTPInit(pkt, netip.MustParseAddr("fd74:7265:6c01:1::6"), 81, 0xfeedf00d) },
		"not SCTP":            func() bool { q := append([]byte(nil), pkt...); q[6] = 6; return MatchSCTPInit(q, dst, 81, 0xfeedf00d) },
		"truncated":           func() bool { return MatchSCTPInit(pkt[:60], dst, 81, 0xfeedf00d) },
		"IPv4 packet, v6 dst": func() bool { return MatchSCTPInit(append(ip4, s...), dst, 81, 0xfeedf00d) },
		"IPv6 packet, v4 dst": func() bool {
			return MatchSCTPInit(pkt, netip.MustParseAddr("10.244.1.5"), 81, 0xfeedf00d)
		},
	} {
		if bad() {
			t.Errorf("%s matched", name)
		}
	}
}
