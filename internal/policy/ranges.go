package policy

import (
	"fmt"
	"math/bits"
	"net/netip"
	"sort"
	"strconv"

	netutils "k8s.io/utils/net"
)

// ipRange is an inclusive range of IPv4 addresses as integers.
type ipRange struct{ lo, hi uint32 }

// portRange is an inclusive range of ports for one IP protocol number.
type portBox struct {
	src   ipRange
	proto uint8
	lo    uint16
	hi    uint16
}

var allIPv4 = ipRange{0, ^uint32(0)}

func addrToU32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func u32ToAddr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// prefixRange returns the range of an IPv4 prefix; ok is false for IPv6.
func prefixRange(p netip.Prefix) (ipRange, bool) {
	if !p.Addr().Is4() {
		return ipRange{}, false
	}
	p = p.Masked()
	lo := addrToU32(p.Addr())
	size := 32 - p.Bits()
	if size == 32 {
		return allIPv4, true
	}
	return ipRange{lo, lo | (uint32(1)<<size - 1)}, true
}

// subtract removes r from every range in rs.
func subtract(rs []ipRange, r ipRange) []ipRange {
	var out []ipRange
	for _, x := range rs {
		if r.hi < x.lo || r.lo > x.hi {
			out = append(out, x)
			continue
		}
		if r.lo > x.lo {
			out = append(out, ipRange{x.lo, r.lo - 1})
		}
		if r.hi < x.hi {
			out = append(out, ipRange{r.hi + 1, x.hi})
		}
	}
	return out
}

// mergeRanges returns the union of rs as sorted, disjoint, non-adjacent ranges.
func mergeRanges(rs []ipRange) []ipRange {
	if len(rs) == 0 {
		return nil
	}
	s := append([]ipRange(nil), rs...)
	sort.Slice(s, func(i, j int) bool { return s[i].lo < s[j].lo })
	out := []ipRange{s[0]}
	for _, x := range s[1:] {
		last := &out[len(out)-1]
		if last.hi == ^uint32(0) || x.lo <= last.hi+1 {
			if x.hi > last.hi {
				last.hi = x.hi
			}
			continue
		}
		out = append(out, x)
	}
	return out
}

// formatRange renders a range the way nft lists interval elements: a single
// address, a prefix when the range is exactly one, otherwise "lo-hi".
func formatRange(r ipRange) string {
	if r.lo == r.hi {
		return u32ToAddr(r.lo).String()
	}
	size := uint64(r.hi) - uint64(r.lo) + 1
	if size&(size-1) == 0 {
		hostBits := bits.TrailingZeros64(size)
		if r.lo&(uint32(size-1)) == 0 {
			return fmt.Sprintf("%s/%d", u32ToAddr(r.lo), 32-hostBits)
		}
	}
	return u32ToAddr(r.lo).String() + "-" + u32ToAddr(r.hi).String()
}

func formatPorts(lo, hi uint16) string {
	if lo == hi {
		return strconv.Itoa(int(lo))
	}
	return strconv.Itoa(int(lo)) + "-" + strconv.Itoa(int(hi))
}

var protoNames = map[uint8]string{6: "tcp", 17: "udp", 132: "sctp"}

// disjointBoxes turns possibly overlapping (address range × proto × port
// range) boxes into disjoint ones covering the same union, because nftables
// rejects overlapping elements in interval sets. Output is sorted.
func disjointBoxes(in []portBox) []portBox {
	byProto := map[uint8][]portBox{}
	for _, b := range in {
		byProto[b.proto] = append(byProto[b.proto], b)
	}
	protos := make([]int, 0, len(byProto))
	for p := range byProto {
		protos = append(protos, int(p))
	}
	sort.Ints(protos)
	var out []portBox
	for _, p := range protos {
		out = append(out, disjointForProto(uint8(p), byProto[uint8(p)])...)
	}
	return out
}

func disjointForProto(proto uint8, boxes []portBox) []portBox {
	// Sweep along the address axis: at every box boundary the set of active
	// port ranges changes; between boundaries it is constant.
	type event struct {
		at    uint64
		ports ipRange // port range reuses ipRange as [lo,hi]
		delta int
	}
	events := make([]event, 0, 2*len(boxes))
	for _, b := range boxes {
		pr := ipRange{uint32(b.lo), uint32(b.hi)}
		events = append(events, event{uint64(b.src.lo), pr, 1}, event{uint64(b.src.hi) + 1, pr, -1})
	}
	sort.Slice(events, func(i, j int) bool { return events[i].at < events[j].at })
	active := map[ipRange]int{}
	type seg struct {
		r     ipRange
		ports []ipRange
	}
	var segs []seg
	for i := 0; i < len(events); {
		at := events[i].at
		for ; i < len(events) && events[i].at == at; i++ {
			active[events[i].ports] += events[i].delta
			if active[events[i].ports] == 0 {
				delete(active, events[i].ports)
			}
		}
		if len(active) == 0 || i == len(events) {
			continue
		}
		r := ipRange{uint32(at), uint32(events[i].at - 1)}
		ports := make([]ipRange, 0, len(active))
		for pr := range active {
			ports = append(ports, pr)
		}
		ports = mergeRanges(ports)
		if n := len(segs); n > 0 && uint64(segs[n-1].r.hi)+1 == uint64(r.lo) && equalRanges(segs[n-1].ports, ports) {
			segs[n-1].r.hi = r.hi
			continue
		}
		segs = append(segs, seg{r, ports})
	}
	var out []portBox
	for _, s := range segs {
		for _, p := range s.ports {
			out = append(out, portBox{src: s.r, proto: proto, lo: uint16(p.lo), hi: uint16(p.hi)})
		}
	}
	return out
}

func equalRanges(a, b []ipRange) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// parsePrefix parses a CIDR as the API server does (host bits may be set,
// and IPv4 octets may carry leading zeros, read as decimal: objects stored
// before the API tightened validation keep them, "010.0.0.0/8" is
// 10.0.0.0/8 to the API server and so here).
func parsePrefix(s string) (netip.Prefix, error) {
	_, n, err := netutils.ParseCIDRSloppy(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("parse CIDR %q: %w", s, err)
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, fmt.Errorf("parse CIDR %q: bad address", s)
	}
	ones, _ := n.Mask.Size()
	p, err := a.Unmap().Prefix(ones)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("parse CIDR %q: %w", s, err)
	}
	return p, nil
}
