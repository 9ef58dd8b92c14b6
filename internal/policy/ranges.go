package policy

import (
	"cmp"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"strconv"

	netutils "k8s.io/utils/net"
)

// ipRange is an inclusive range of addresses of one family. Ranges sort by
// netip.Addr.Compare, which puts every IPv4 address before every IPv6 one,
// so a sorted list of ranges holds the IPv4 ranges first.
type ipRange struct{ lo, hi netip.Addr }

// portRange is an inclusive range of ports.
type portRange struct{ lo, hi uint16 }

// portBox is a range of addresses of one family × one protocol × a port range.
type portBox struct {
	src   ipRange
	proto uint8
	lo    uint16
	hi    uint16
}

var (
	allIPv4 = ipRange{netip.IPv4Unspecified(), netip.AddrFrom4([4]byte{255, 255, 255, 255})}
	allIPv6 = ipRange{netip.IPv6Unspecified(), netip.AddrFrom16([16]byte{
		255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255})}
)

// allAddrs is every address of both families (a rule without peers).
func allAddrs() []ipRange { return []ipRange{allIPv4, allIPv6} }

func (r ipRange) contains(a netip.Addr) bool { return r.lo.Compare(a) <= 0 && a.Compare(r.hi) <= 0 }

// adjacent reports whether b directly follows a (same family, a+1 == b).
func adjacent(a, b netip.Addr) bool { n := a.Next(); return n.IsValid() && n == b }

func minAddr(a, b netip.Addr) netip.Addr {
	if a.Compare(b) <= 0 {
		return a
	}
	return b
}

func maxAddr(a, b netip.Addr) netip.Addr {
	if a.Compare(b) >= 0 {
		return a
	}
	return b
}

// lastAddr is the last address of prefix p (masked).
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr()
	if a.Is4() {
		b := a.As4()
		setHostBits(b[:], p.Bits())
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	setHostBits(b[:], p.Bits())
	return netip.AddrFrom16(b)
}

func setHostBits(b []byte, ones int) {
	for i := range b {
		switch {
		case ones >= 8*(i+1):
		case ones <= 8*i:
			b[i] = 0xff
		default:
			b[i] |= 0xff >> (ones - 8*i)
		}
	}
}

// prefixRange returns the range of a prefix.
func prefixRange(p netip.Prefix) ipRange {
	p = p.Masked()
	return ipRange{p.Addr(), lastAddr(p)}
}

// commonBits is the length of the longest common prefix of a and b (same family).
func commonBits(a, b netip.Addr) int {
	x, y := a.As16(), b.As16()
	n := 0
	for i := range x {
		if d := x[i] ^ y[i]; d != 0 {
			n += bits.LeadingZeros8(d)
			break
		}
		n += 8
	}
	if a.Is4() {
		n -= 96
	}
	return n
}

// subtract removes r from every range in rs.
func subtract(rs []ipRange, r ipRange) []ipRange {
	var out []ipRange
	for _, x := range rs {
		if r.hi.Compare(x.lo) < 0 || r.lo.Compare(x.hi) > 0 {
			out = append(out, x)
			continue
		}
		if r.lo.Compare(x.lo) > 0 {
			out = append(out, ipRange{x.lo, r.lo.Prev()})
		}
		if r.hi.Compare(x.hi) < 0 {
			out = append(out, ipRange{r.hi.Next(), x.hi})
		}
	}
	return out
}

// mergeRanges returns the union of rs as sorted, disjoint, non-adjacent ranges.
func mergeRanges(rs []ipRange) []ipRange {
	if len(rs) == 0 {
		return nil
	}
	byLo := func(a, b ipRange) int { return a.lo.Compare(b.lo) }
	s := rs
	if !slices.IsSortedFunc(s, byLo) {
		s = slices.Clone(rs)
		slices.SortFunc(s, byLo)
	}
	out := []ipRange{s[0]}
	for _, x := range s[1:] {
		last := &out[len(out)-1]
		if x.lo.Compare(last.hi) <= 0 || adjacent(last.hi, x.lo) {
			if x.hi.Compare(last.hi) > 0 {
				last.hi = x.hi
			}
			continue
		}
		out = append(out, x)
	}
	return out
}

// mergePorts is mergeRanges for port ranges.
func mergePorts(rs []portRange) []portRange {
	if len(rs) == 0 {
		return nil
	}
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b portRange) int { return cmp.Compare(a.lo, b.lo) })
	out := []portRange{s[0]}
	for _, x := range s[1:] {
		last := &out[len(out)-1]
		if uint32(x.lo) <= uint32(last.hi)+1 {
			last.hi = max(last.hi, x.hi)
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
		return r.lo.String()
	}
	if n := commonBits(r.lo, r.hi); n < r.lo.BitLen() {
		if p := netip.PrefixFrom(r.lo, n); p.Masked().Addr() == r.lo && lastAddr(p) == r.hi {
			return p.String()
		}
	}
	return r.lo.String() + "-" + r.hi.String()
}

// splitFamilies splits ranges sorted by address into the IPv4 and the
// IPv6 ones.
func splitFamilies(rs []ipRange) (v4, v6 []ipRange) {
	i, _ := slices.BinarySearchFunc(rs, true, func(r ipRange, _ bool) int {
		if r.lo.Is4() {
			return -1
		}
		return 1
	})
	return rs[:i], rs[i:]
}

// splitRanges splits ranges into the IPv4 and the IPv6 ones, keeping order.
func splitRanges(rs []ipRange) (v4, v6 []ipRange) {
	for _, r := range rs {
		if r.lo.Is4() {
			v4 = append(v4, r)
		} else {
			v6 = append(v6, r)
		}
	}
	return v4, v6
}

// splitBoxes splits boxes into the IPv4 and the IPv6 ones, keeping order.
func splitBoxes(bs []portBox) (v4, v6 []portBox) {
	for _, b := range bs {
		if b.src.lo.Is4() {
			v4 = append(v4, b)
		} else {
			v6 = append(v6, b)
		}
	}
	return v4, v6
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
// rejects overlapping elements in interval sets. Output is sorted by
// protocol, then address (IPv4 first).
func disjointBoxes(in []portBox) []portBox {
	byProto := map[uint8][]portBox{}
	for _, b := range in {
		byProto[b.proto] = append(byProto[b.proto], b)
	}
	protos := make([]int, 0, len(byProto))
	for p := range byProto {
		protos = append(protos, int(p))
	}
	slices.Sort(protos)
	var out []portBox
	for _, p := range protos {
		out = append(out, disjointForProto(uint8(p), byProto[uint8(p)])...)
	}
	return out
}

// sweepPos is a position on the address axis: an address, or (end) just
// past the last address of its family.
type sweepPos struct {
	a   netip.Addr
	end bool
}

func (p sweepPos) compare(q sweepPos) int {
	if c := p.a.Compare(q.a); c != 0 {
		return c
	}
	switch {
	case p.end == q.end:
		return 0
	case p.end:
		return 1
	}
	return -1
}

// after is the position just past a.
func after(a netip.Addr) sweepPos {
	if n := a.Next(); n.IsValid() {
		return sweepPos{a: n}
	}
	return sweepPos{a: a, end: true}
}

// before is the last address before position p (p is not a family's first
// address).
func (p sweepPos) before() netip.Addr {
	if p.end {
		return p.a
	}
	return p.a.Prev()
}

func disjointForProto(proto uint8, boxes []portBox) []portBox {
	// Sweep along the address axis: at every box boundary the set of active
	// port ranges changes; between boundaries it is constant. Every box lies
	// within one family, so the active set is empty between families.
	type event struct {
		at    sweepPos
		ports portRange
		delta int
	}
	events := make([]event, 0, 2*len(boxes))
	for _, b := range boxes {
		pr := portRange{b.lo, b.hi}
		events = append(events, event{sweepPos{a: b.src.lo}, pr, 1}, event{after(b.src.hi), pr, -1})
	}
	slices.SortStableFunc(events, func(x, y event) int { return x.at.compare(y.at) })
	active := map[portRange]int{}
	type seg struct {
		r     ipRange
		ports []portRange
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
		r := ipRange{at.a, events[i].at.before()}
		ports := make([]portRange, 0, len(active))
		for pr := range active {
			ports = append(ports, pr)
		}
		ports = mergePorts(ports)
		if n := len(segs); n > 0 && adjacent(segs[n-1].r.hi, r.lo) && slices.Equal(segs[n-1].ports, ports) {
			segs[n-1].r.hi = r.hi
			continue
		}
		segs = append(segs, seg{r, ports})
	}
	var out []portBox
	for _, s := range segs {
		for _, p := range s.ports {
			out = append(out, portBox{src: s.r, proto: proto, lo: p.lo, hi: p.hi})
		}
	}
	return out
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
