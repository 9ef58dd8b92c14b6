package nfttrace

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"sigs.k8s.io/knftables"
)

// value is one evaluated expression: a string (ifname) or a number (an
// address is a 128-bit number; addr names its type then).
type value struct {
	str   string
	num   num
	isStr bool
	addr  string // "ipv4_addr" or "ipv6_addr" for an address
}

// num is an unsigned 128-bit number.
type num struct{ hi, lo uint64 }

func small(v uint64) num { return num{lo: v} }

func (a num) cmp(b num) int {
	switch {
	case a.hi < b.hi:
		return -1
	case a.hi > b.hi:
		return 1
	case a.lo < b.lo:
		return -1
	case a.lo > b.lo:
		return 1
	}
	return 0
}

// parseExprs parses "EXPR [. EXPR]..." at the start of toks and evaluates it.
// vals is nil when an expression does not apply to the packet (ports of a
// protocol without ports), which makes any match on it fail.
func parseExprs(toks []string, pkt *Packet) ([]value, int, error) {
	var vals []value
	applicable := true
	i := 0
	for {
		if i >= len(toks) {
			return nil, 0, fmt.Errorf("truncated expression")
		}
		var v value
		ok := true
		switch {
		case toks[i] == "iifname":
			v, i = value{str: pkt.IIF, isStr: true}, i+1
		case toks[i] == "oifname":
			v, i = value{str: pkt.OIF, isStr: true}, i+1
		case (toks[i] == "ip" || toks[i] == "ip6") && i+1 < len(toks) && (toks[i+1] == "saddr" || toks[i+1] == "daddr"):
			a := pkt.Src
			if toks[i+1] == "daddr" {
				a = pkt.Dst
			}
			v, ok, i = addrValue(a), a.Is4() == (toks[i] == "ip"), i+2
		case toks[i] == "iifgroup":
			v, i = value{num: small(uint64(pkt.IIFGroup))}, i+1
		case toks[i] == "oifgroup":
			v, i = value{num: small(uint64(pkt.OIFGroup))}, i+1
		case toks[i] == "meta" && i+1 < len(toks) && toks[i+1] == "l4proto":
			v, i = value{num: small(uint64(pkt.Proto))}, i+2
		case toks[i] == "th" && i+1 < len(toks) && toks[i+1] == "dport":
			v, i = value{num: small(uint64(pkt.DPort))}, i+2
			ok = pkt.Proto == 6 || pkt.Proto == 17 || pkt.Proto == 132
		default:
			return nil, 0, fmt.Errorf("unsupported expression at %q", toks[i])
		}
		applicable = applicable && ok
		vals = append(vals, v)
		if i < len(toks) && toks[i] == "." {
			i++
			continue
		}
		break
	}
	if !applicable {
		return nil, i, nil
	}
	return vals, i, nil
}

func addrValue(a netip.Addr) value {
	if a.Is4() {
		return value{num: addrNum(a), addr: "ipv4_addr"}
	}
	return value{num: addrNum(a), addr: "ipv6_addr"}
}

// addrNum is an address as a number (IPv4: 32 bits).
func addrNum(a netip.Addr) num {
	if a.Is4() {
		b := a.As4()
		return small(uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3]))
	}
	b := a.As16()
	return num{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

// matchOperand matches vals against "@set" or a literal.
func matchOperand(t *knftables.FakeTable, op string, vals []value) (bool, error) {
	if strings.HasPrefix(op, "@") {
		s := t.Sets[op[1:]]
		if s == nil {
			return false, fmt.Errorf("no set %q", op[1:])
		}
		types := strings.Split(s.Type, " . ")
		interval := false
		for _, f := range s.Flags {
			interval = interval || f == knftables.IntervalFlag
		}
		for _, e := range s.Elements {
			ok, err := matchKey(types, interval, e.Key, vals)
			if err != nil {
				return false, fmt.Errorf("set %s: %w", s.Name, err)
			}
			if ok {
				return true, nil
			}
		}
		return false, nil
	}
	if len(vals) != 1 || !vals[0].isStr || !strings.HasPrefix(op, `"`) {
		return false, fmt.Errorf("unsupported literal comparison %q", op)
	}
	lit := strings.Trim(op, `"`)
	if strings.HasSuffix(lit, "*") {
		return strings.HasPrefix(vals[0].str, strings.TrimSuffix(lit, "*")), nil
	}
	return vals[0].str == lit, nil
}

func lookupVmap(t *knftables.FakeTable, op string, vals []value) (verdict, error) {
	if vals == nil {
		return verdict{}, nil
	}
	if !strings.HasPrefix(op, "@") || t.Maps[op[1:]] == nil {
		return verdict{}, fmt.Errorf("no map %q", op)
	}
	m := t.Maps[op[1:]]
	keyType, valType, ok := strings.Cut(m.Type, " : ")
	if !ok || valType != "verdict" {
		return verdict{}, fmt.Errorf("map %s is not a verdict map", m.Name)
	}
	for _, e := range m.Elements {
		match, err := matchKey(strings.Split(keyType, " . "), false, e.Key, vals)
		if err != nil {
			return verdict{}, fmt.Errorf("map %s: %w", m.Name, err)
		}
		if !match {
			continue
		}
		f := strings.Fields(strings.Join(e.Value, " "))
		switch {
		case len(f) == 1 && (f[0] == "accept" || f[0] == "drop" || f[0] == "return"):
			return verdict{kind: f[0]}, nil
		case len(f) == 2 && (f[0] == "jump" || f[0] == "goto"):
			return verdict{kind: f[0], target: f[1]}, nil
		}
		return verdict{}, fmt.Errorf("map %s: unsupported verdict %q", m.Name, e.Value)
	}
	return verdict{}, nil
}

func matchKey(types []string, interval bool, key []string, vals []value) (bool, error) {
	if len(types) != len(vals) || len(key) != len(vals) {
		return false, fmt.Errorf("key %q has %d fields, type has %d, expression %d", key, len(key), len(types), len(vals))
	}
	for i, typ := range types {
		if typ == "ifname" {
			if !vals[i].isStr {
				return false, fmt.Errorf("ifname field compared with a number")
			}
			if strings.Trim(key[i], `"`) != vals[i].str {
				return false, nil
			}
			continue
		}
		lo, hi, err := parseField(typ, key[i])
		if err != nil {
			return false, err
		}
		if lo != hi && !interval {
			return false, fmt.Errorf("range %q in a set without the interval flag", key[i])
		}
		if (typ == "ipv4_addr" || typ == "ipv6_addr" || vals[i].addr != "") && vals[i].addr != typ {
			return false, fmt.Errorf("%s field compared with %q", typ, vals[i].addr)
		}
		if vals[i].isStr || vals[i].num.cmp(lo) < 0 || vals[i].num.cmp(hi) > 0 {
			return false, nil
		}
	}
	return true, nil
}

var protoByName = map[string]uint64{"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "ipv6-icmp": 58}

// parseField parses one element field of the given type into [lo, hi].
func parseField(typ, s string) (num, num, error) {
	switch typ {
	case "ipv4_addr", "ipv6_addr":
		is4 := typ == "ipv4_addr"
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil || p.Addr().Is4() != is4 || p.Masked() != p {
				return num{}, num{}, fmt.Errorf("bad %s prefix %q", typ, s)
			}
			return addrNum(p.Addr()), addrNum(lastAddr(p)), nil
		}
		return parseRange(s, func(x string) (num, error) {
			a, err := netip.ParseAddr(x)
			if err != nil || a.Is4() != is4 || a.Zone() != "" {
				return num{}, fmt.Errorf("bad %s address %q", typ, x)
			}
			return addrNum(a), nil
		})
	case "inet_proto":
		return parseRange(s, func(x string) (num, error) {
			if n, ok := protoByName[x]; ok {
				return small(n), nil
			}
			return parseUint(x, 255)
		})
	case "devgroup":
		if s == "default" {
			return num{}, num{}, nil
		}
		return parseRange(s, func(x string) (num, error) { return parseUint(x, 1<<32-1) })
	case "inet_service":
		return parseRange(s, func(x string) (num, error) { return parseUint(x, 65535) })
	}
	return num{}, num{}, fmt.Errorf("unsupported field type %q", typ)
}

// lastAddr is the last address of prefix p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := range b {
		switch ones := p.Bits(); {
		case ones >= 8*(i+1):
		case ones <= 8*i:
			b[i] = 0xff
		default:
			b[i] |= 0xff >> (ones - 8*i)
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func parseRange(s string, one func(string) (num, error)) (num, num, error) {
	a, b, isRange := strings.Cut(s, "-")
	if isRange && a == "ipv6" { // the protocol name "ipv6-icmp"
		a, b, isRange = s, "", false
	}
	lo, err := one(a)
	if err != nil {
		return num{}, num{}, err
	}
	if !isRange {
		return lo, lo, nil
	}
	hi, err := one(b)
	if err != nil {
		return num{}, num{}, err
	}
	if hi.cmp(lo) < 0 {
		return num{}, num{}, fmt.Errorf("empty range %q", s)
	}
	return lo, hi, nil
}

func parseUint(s string, max uint64) (num, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > max {
		return num{}, fmt.Errorf("bad number %q", s)
	}
	return small(n), nil
}
