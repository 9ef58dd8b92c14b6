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
