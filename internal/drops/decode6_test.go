package drops

import (
	"encoding/binary"
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/trellisnet/trellis/internal/agentapi"
)

// ipv6 builds an IPv6 header with the extension headers ext (each
// [next header, length in 8-byte units after the first 8, ...]) and the
// transport ports.
func ipv6(src, dst string, proto uint8, sport, dport uint16, ext ...[]byte) []byte {
	b := make([]byte, 40)
	b[0] = 0x60
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	next := proto
	if len(ext) > 0 {
		next = ext[0][0]
	}
	b[6] = next
	for i, e := range ext {
		h := append([]byte(nil), e[1:]...)
		h[0] = proto // this header's next header
		if i+1 < len(ext) {
			h[0] = ext[i+1][0]
		}
		b = append(b, h...)
	}
	ports := make([]byte, 8)
	binary.BigEndian.PutUint16(ports, sport)
	binary.BigEndian.PutUint16(ports[2:], dport)
	return append(b, ports...)
}

// hopByHop and fragment are extension headers for ipv6 (type, then 8 bytes).
var hopByHop = []byte{extHopByHop, 0, 0, 0, 0, 0, 0, 0, 0}

func fragment(offset uint16) []byte {
	h := []byte{extFragment, 0, 0, 0, 0, 0, 0, 0, 1}
	binary.BigEndian.PutUint16(h[3:], offset<<3)
	return h
}

func TestDecodeIPv6(t *testing.T) {
	src, dst := netip.MustParseAddr("fd00:10:244:1::5"), netip.MustParseAddr("fd00:10:244:2::7")
	for _, c := range []struct {
		name         string
		b            []byte
		proto        uint8
		sport, dport uint16
	}{
		{"TCP", ipv6(src.String(), dst.String(), protoTCP, 41000, 80), protoTCP, 41000, 80},
		{"UDP", ipv6(src.String(), dst.String(), protoUDP, 53, 5353), protoUDP, 53, 5353},
		{"ICMPv6: no ports", ipv6(src.String(), dst.String(), protoICMPv6, 0x8000, 1), protoICMPv6, 0, 0},
		{"TCP after hop-by-hop", ipv6(src.String(), dst.String(), protoTCP, 1000, 443, hopByHop), protoTCP, 1000, 443},
		{"first fragment", ipv6(src.String(), dst.String(), protoUDP, 7, 9, fragment(0)), protoUDP, 7, 9},
		{"later fragment: no ports", ipv6(src.String(), dst.String(), protoUDP, 7, 9, fragment(100)), protoUDP, 0, 0},
	} {
		p, err := DecodePacket(c.b)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if p.Src != src || p.Dst != dst || p.Proto != c.proto || p.SrcPort != c.sport || p.DstPort != c.dport {
			t.Errorf("%s: %+v, want proto %d ports %d>%d", c.name, p, c.proto, c.sport, c.dport)
		}
	}
	if p, err := DecodeIPv6(ipv6(src.String(), dst.String(), protoTCP, 1, 2)[:42]); err != nil || p.SrcPort != 0 {
		t.Errorf("cut before the ports: %+v, %v; want the addresses without ports", p, err)
	}
	for _, bad := range [][]byte{nil, make([]byte, 39), append([]byte{0x40}, make([]byte, 40)...)} {
		if _, err := DecodeIPv6(bad); err == nil {
			t.Errorf("DecodeIPv6(% x) accepted", bad[:min(len(bad), 4)])
		}
	}
	if ProtocolName(protoICMPv6) != "ICMPv6" {
		t.Error("ICMPv6 unnamed")
	}
	// IPv4 still goes to DecodeIPv4.
	if p, err := DecodePacket(ipv4("10.0.0.1", "10.0.0.2", protoTCP, 1, 2, 5)); err != nil || p.Src != netip.MustParseAddr("10.0.0.1") || p.DstPort != 2 {
		t.Errorf("IPv4 through DecodePacket: %+v, %v", p, err)
	}
}

func FuzzDecodePacket(f *testing.F) {
	f.Add(ipv6("fd00::1", "fd00::2", protoTCP, 1, 2, hopByHop, fragment(0)))
	f.Add(ipv4("10.0.0.1", "10.0.0.2", protoUDP, 1, 2, 5))
	f.Add([]byte{0x60, 0, 0, 0, 0, 0, extRouting, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodePacket(b)
		if err == nil && !p.Src.IsValid() {
			t.Errorf("decoded %+v without a source", p)
		}
	})
}

// A dropped IPv6 packet is decoded and its pods named like an IPv4 one.
func TestDecodeIPv6Record(t *testing.T) {
	s, err := NewSource(Config{Node: "n1", Group: 5, Ring: NewRing(10, 0, nil), Resolver: fakeResolver{}})
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Unix(2000, 0).UTC()
	got, ok := s.Decode(&Record{Time: ts, Prefix: "trellis-deny spoofed: ", InDev: 9, Payload: ipv6("fd00:10:244:1::7", "fd00:10:244:2::9", protoTCP, 4000, 80)})
	if !ok {
		t.Fatal("IPv6 record not decoded")
	}
	want := agentapi.Drop{Time: ts, Node: "n1", Protocol: "TCP", Verdict: "spoofed",
		Src: agentapi.Endpoint{IP: "fd00:10:244:1::7", Port: 4000, Pod: "x/b"}, Dst: agentapi.Endpoint{IP: "fd00:10:244:2::9", Port: 80},
		Pod: "x/b", Interface: "trl9"}
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Errorf("got %s\nwant %s", g, w)
	}
}
