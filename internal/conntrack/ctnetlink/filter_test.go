package ctnetlink

import (
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// entry serializes a conntrack entry as the kernel dumps it (the part
// after the nfgenmsg header): both tuples' addresses and an ID.
func entry(osrc, odst, rsrc, rdst string, id uint32) []byte {
	var b []byte
	for i, pair := range [][2]string{{osrc, odst}, {rsrc, rdst}} {
		t := nl.NewRtAttr(unix.NLA_F_NESTED|(ctaTupleOrig+i), nil)
		ip := t.AddRtAttr(unix.NLA_F_NESTED|ctaTupleIP, nil)
		src, dst := netip.MustParseAddr(pair[0]), netip.MustParseAddr(pair[1])
		if src.Is4() {
			ip.AddRtAttr(ctaIPv4Src, src.AsSlice())
			ip.AddRtAttr(ctaIPv4Src+1, dst.AsSlice()) // CTA_IP_V4_DST
		} else {
			ip.AddRtAttr(ctaIPv6Src, src.AsSlice())
			ip.AddRtAttr(ctaIPv6Src+1, dst.AsSlice()) // CTA_IP_V6_DST
		}
		b = append(b, t.Serialize()...)
	}
	return append(b, nl.NewRtAttr(ctaID, nl.BEUint32Attr(id)).Serialize()...)
}

// An entry matches when an address of the set is one of its endpoints:
// the original or the reply source.
func TestMatchesEndpoints(t *testing.T) {
	set := map[netip.Addr]struct{}{netip.MustParseAddr("10.244.1.2"): {}, netip.MustParseAddr("fd00::2"): {}}
	for _, tc := range []struct {
		name  string
		entry []byte
		want  bool
	}{
		{"the pod sends", entry("10.244.1.2", "10.0.0.9", "10.0.0.9", "10.244.1.2", 1), true},
		{"the pod sends, masqueraded", entry("10.244.1.2", "10.0.0.9", "10.0.0.9", "192.0.2.1", 1), true},
		{"a peer sends to it", entry("10.0.0.9", "10.244.1.2", "10.244.1.2", "10.0.0.9", 2), true},
		{"a peer sends to a Service DNATed to it", entry("10.0.0.9", "10.96.0.10", "10.244.1.2", "10.0.0.9", 3), true},
		{"IPv6", entry("fd00::9", "fd00::2", "fd00::2", "fd00::9", 5), true},
		{"DNATed away from it: not an endpoint", entry("10.0.0.9", "10.244.1.2", "10.0.0.7", "10.0.0.9", 4), false},
		{"another pod (a kernel that ignored the filter)", entry("10.244.1.3", "10.0.0.9", "10.0.0.9", "10.244.1.3", 6), false},
		{"no tuples", nl.NewRtAttr(ctaID, nl.BEUint32Attr(7)).Serialize(), false},
		{"garbage", []byte{1, 2, 3}, false},
	} {
		if _, got := matches(tc.entry, set); got != tc.want {
			t.Errorf("%s: match = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// One entry found through two fields is one entry; another ID is another.
func TestMatchKeyIdentifiesTheEntry(t *testing.T) {
	set := map[netip.Addr]struct{}{netip.MustParseAddr("10.244.1.2"): {}}
	k1, _ := matches(entry("10.244.1.2", "10.0.0.9", "10.0.0.9", "10.244.1.2", 1), set)
	k2, _ := matches(entry("10.244.1.2", "10.0.0.9", "10.0.0.9", "10.244.1.2", 1), set)
	k3, _ := matches(entry("10.244.1.2", "10.0.0.9", "10.0.0.9", "10.244.1.2", 2), set)
	if k1 != k2 || k1 == k3 {
		t.Errorf("keys: same entry %q / %q, other ID %q", k1, k2, k3)
	}
}
