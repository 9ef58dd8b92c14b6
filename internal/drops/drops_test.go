package drops

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/netlink"

	"github.com/trellisnet/trellis/internal/agentapi"
)

// ipv4 builds an IPv4 header (ihl words) with the given protocol and ports.
func ipv4(src, dst string, proto uint8, sport, dport uint16, ihl int) []byte {
	b := make([]byte, ihl*4+8)
	b[0] = 0x40 | byte(ihl)
	b[9] = proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint16(b[ihl*4:], sport)
	binary.BigEndian.PutUint16(b[ihl*4+2:], dport)
	return b
}

func TestDecodeIPv4(t *testing.T) {
	p, err := DecodeIPv4(ipv4("10.244.1.5", "10.244.2.7", protoTCP, 41000, 80, 5))
	if err != nil {
		t.Fatal(err)
	}
	want := Packet{Src: netip.MustParseAddr("10.244.1.5"), Dst: netip.MustParseAddr("10.244.2.7"), Proto: protoTCP, SrcPort: 41000, DstPort: 80}
	if p != want {
		t.Fatalf("got %+v, want %+v", p, want)
	}
	// IP options move the ports.
	if p, err := DecodeIPv4(ipv4("10.0.0.1", "10.0.0.2", protoUDP, 53, 5353, 7)); err != nil || p.DstPort != 5353 || p.SrcPort != 53 {
		t.Fatalf("with options: %+v, %v", p, err)
	}
	// ICMP has no ports; a later fragment's "ports" are payload.
	if p, _ := DecodeIPv4(ipv4("10.0.0.1", "10.0.0.2", protoICMP, 8, 0, 5)); p.SrcPort != 0 || p.DstPort != 0 {
		t.Fatalf("ICMP got ports %+v", p)
	}
	frag := ipv4("10.0.0.1", "10.0.0.2", protoTCP, 1, 2, 5)
	binary.BigEndian.PutUint16(frag[6:], 100)
	if p, _ := DecodeIPv4(frag); p.DstPort != 0 {
		t.Fatalf("fragment got ports %+v", p)
	}
	for _, bad := range [][]byte{nil, make([]byte, 19), append([]byte{0x60}, make([]byte, 39)...), append([]byte{0x44}, make([]byte, 39)...)} {
		if _, err := DecodeIPv4(bad); err == nil {
			t.Errorf("DecodeIPv4(% x) accepted", bad[:min(len(bad), 4)])
		}
	}
}

func FuzzDecodeIPv4(f *testing.F) {
	f.Add(ipv4("10.0.0.1", "10.0.0.2", protoTCP, 1, 2, 5))
	f.Add([]byte{0x4f})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodeIPv4(b)
		if err == nil && (!p.Src.Is4() || !p.Dst.Is4()) {
			t.Fatalf("accepted without IPv4 addresses: %+v", p)
		}
	})
}

func TestParsePrefix(t *testing.T) {
	for in, want := range map[string]Prefix{
		"trellis-deny ingress ing-0123456789abcdef: ": {Verdict: VerdictPolicy, Direction: "ingress", Group: "ing-0123456789abcdef"},
		"trellis-deny egress eg-0123456789abcdef: ":   {Verdict: VerdictPolicy, Direction: "egress", Group: "eg-0123456789abcdef"},
		"trellis-deny spoofed: ":                      {Verdict: VerdictSpoofed},
		"trellis-deny pending ingress: ":              {Verdict: VerdictPending, Direction: "ingress"},
		"trellis-deny pending egress: ":               {Verdict: VerdictPending, Direction: "egress"},
		"trellis-deny pending known-address: ":        {Verdict: VerdictPendingKnown},
		"trellis-deny unencrypted: ":                  {Verdict: VerdictUnencrypted},
	} {
		got, err := ParsePrefix(in)
		if err != nil || got != want {
			t.Errorf("ParsePrefix(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "other: ", "trellis-deny ", "trellis-deny sideways ing-1: ", "trellis-deny pending nowhere: "} {
		if _, err := ParsePrefix(bad); err == nil {
			t.Errorf("ParsePrefix(%q) accepted", bad)
		}
	}
}

// nflogMessage encodes an NFULNL_MSG_PACKET body as the kernel does.
func nflogMessage(t *testing.T, prefix string, in, out uint32, payload []byte, ts time.Time) []byte {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.Bytes(nfulaPacketHdr, []byte{0x08, 0x00, 2, 0})
	if !ts.IsZero() {
		b := make([]byte, 16)
		binary.BigEndian.PutUint64(b, uint64(ts.Unix()))
		binary.BigEndian.PutUint64(b[8:], uint64(ts.Nanosecond()/1000))
		ae.Bytes(nfulaTimestamp, b)
	}
	if in != 0 {
		ae.Uint32(nfulaIfindexIndev, in)
	}
	if out != 0 {
		ae.Uint32(nfulaIfindexOutdev, out)
	}
	ae.Bytes(nfulaPayload, payload)
	ae.Bytes(nfulaPrefix, append([]byte(prefix), 0))
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{2, 0, 0, 100}, b...)
}

func TestParseMessage(t *testing.T) {
	ts := time.Date(2026, 12, 2, 6, 0, 0, 123456000, time.UTC)
	pay := ipv4("10.244.1.5", "10.244.1.6", protoTCP, 40000, 8080, 5)
	rec, err := ParseMessage(nflogMessage(t, "trellis-deny ingress ing-ab: ", 0, 7, pay, ts), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if rec.Prefix != "trellis-deny ingress ing-ab: " || rec.OutDev != 7 || rec.InDev != 0 || rec.Proto != 0x0800 || !rec.Time.Equal(ts) || string(rec.Payload) != string(pay) {
		t.Fatalf("got %+v", rec)
	}
	now := time.Unix(1000, 0)
	if rec, _ := ParseMessage(nflogMessage(t, "x", 3, 0, pay, time.Time{}), now); !rec.Time.Equal(now) || rec.InDev != 3 {
		t.Fatalf("no timestamp: %+v", rec)
	}
	if _, err := ParseMessage([]byte{1, 2}, now); err == nil {
		t.Fatal("a 2-byte message was accepted")
	}
}

// fakeResolver: interfaces 7 (x/a) and 9 (x/b); 10.244.2.9 is y/remote.
type fakeResolver struct{}

func (fakeResolver) Interface(i uint32) (string, string) {
	switch i {
	case 7:
		return "trl7", "x/a"
	case 9:
		return "trl9", "x/b"
	}
	return "", ""
}

func (fakeResolver) PodByIP(a netip.Addr) string {
	switch a.String() {
	case "10.244.2.9":
		return "y/remote"
	case "10.244.1.7":
		return "x/a"
	}
	return ""
}

func (fakeResolver) Policies(pod, dir string) []string { return []string{pod + "-" + dir + "-pol"} }

func TestDecodeNamesPodsAndVerdict(t *testing.T) {
	s, err := NewSource(Config{Node: "n1", Group: 5, Ring: NewRing(10, 0, nil), Resolver: fakeResolver{}})
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Unix(2000, 0).UTC()
	cases := []struct {
		name string
		rec  Record
		want agentapi.Drop
	}{{
		name: "ingress from a remote pod",
		rec:  Record{Time: ts, Prefix: "trellis-deny ingress ing-1: ", InDev: 2, OutDev: 7, Payload: ipv4("10.244.2.9", "10.244.1.7", protoTCP, 40000, 80, 5)},
		want: agentapi.Drop{Time: ts, Node: "n1", Protocol: "TCP", Direction: "ingress", Verdict: "policy", Group: "ing-1",
			Src: agentapi.Endpoint{IP: "10.244.2.9", Port: 40000, Pod: "y/remote"}, Dst: agentapi.Endpoint{IP: "10.244.1.7", Port: 80, Pod: "x/a"},
			Pod: "x/a", Interface: "trl7", Policies: []string{"x/a-ingress-pol"}},
	}, {
		name: "egress to an outside address",
		rec:  Record{Time: ts, Prefix: "trellis-deny egress eg-2: ", InDev: 9, OutDev: 2, Payload: ipv4("10.244.1.9", "192.0.2.1", protoUDP, 5000, 53, 5)},
		want: agentapi.Drop{Time: ts, Node: "n1", Protocol: "UDP", Direction: "egress", Verdict: "policy", Group: "eg-2",
			Src: agentapi.Endpoint{IP: "10.244.1.9", Port: 5000, Pod: "x/b"}, Dst: agentapi.Endpoint{IP: "192.0.2.1", Port: 53},
			Pod: "x/b", Interface: "trl9", Policies: []string{"x/b-egress-pol"}},
	}, {
		name: "spoofed: the sender, not the claimed address",
		rec:  Record{Time: ts, Prefix: "trellis-deny spoofed: ", InDev: 9, Payload: ipv4("10.244.1.7", "10.244.2.9", protoICMP, 0, 0, 5)},
		want: agentapi.Drop{Time: ts, Node: "n1", Protocol: "ICMP", Verdict: "spoofed",
			Src: agentapi.Endpoint{IP: "10.244.1.7", Pod: "x/b"}, Dst: agentapi.Endpoint{IP: "10.244.2.9", Pod: "y/remote"},
			Pod: "x/b", Interface: "trl9"},
	}, {
		name: "unencrypted: the pod whose packet would have left in plaintext",
		rec:  Record{Time: ts, Prefix: "trellis-deny unencrypted: ", InDev: 9, OutDev: 2, Payload: ipv4("10.244.1.9", "10.244.2.9", protoTCP, 4000, 80, 5)},
		want: agentapi.Drop{Time: ts, Node: "n1", Protocol: "TCP", Verdict: "unencrypted",
			Src: agentapi.Endpoint{IP: "10.244.1.9", Port: 4000, Pod: "x/b"}, Dst: agentapi.Endpoint{IP: "10.244.2.9", Port: 80, Pod: "y/remote"},
			Pod: "x/b", Interface: "trl9"},
	}}
	for _, c := range cases {
		got, ok := s.Decode(&c.rec)
		if !ok {
			t.Fatalf("%s: not decoded", c.name)
		}
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(c.want)
		if string(g) != string(w) {
			t.Errorf("%s:\n got %s\nwant %s", c.name, g, w)
		}
	}
	if _, ok := s.Decode(&Record{Prefix: "someone else: ", Payload: ipv4("1.1.1.1", "2.2.2.2", 6, 1, 2, 5)}); ok {
		t.Error("a foreign prefix was decoded")
	}
}

func drop(sec int64, src, dst string) agentapi.Drop {
	return agentapi.Drop{Time: time.Unix(sec, 0), Src: agentapi.Endpoint{Pod: src}, Dst: agentapi.Endpoint{Pod: dst}}
}

func TestRingBoundsAndFilters(t *testing.T) {
	now := time.Unix(1000, 0)
	r := NewRing(3, time.Minute, func() time.Time { return now })
	for _, d := range []agentapi.Drop{drop(900, "x/a", "y/b"), drop(990, "x/a", "y/b"), drop(991, "y/c", "z/d"), drop(992, "z/e", "x/a"), drop(993, "z/e", "z/f")} {
		r.Add(d)
	}
	if r.Len() != 3 {
		t.Fatalf("ring holds %d, want 3 (its size)", r.Len())
	}
	all := r.Snapshot(agentapi.DropsQuery{})
	if len(all) != 3 || all[0].Time.Unix() != 991 || all[2].Time.Unix() != 993 {
		t.Fatalf("snapshot %v, want the last three oldest first", all)
	}
	if got := r.Snapshot(agentapi.DropsQuery{Namespace: "x"}); len(got) != 1 || got[0].Time.Unix() != 992 {
		t.Fatalf("namespace x: %v", got)
	}
	if got := r.Snapshot(agentapi.DropsQuery{Namespace: "z", Pod: "e"}); len(got) != 2 {
		t.Fatalf("pod z/e: %v", got)
	}
	if got := r.Snapshot(agentapi.DropsQuery{Since: time.Unix(993, 0)}); len(got) != 1 {
		t.Fatalf("since 993: %v", got)
	}
	now = time.Unix(1052, 5e8) // 991 and 992 are now older than a minute
	if got := r.Snapshot(agentapi.DropsQuery{}); len(got) != 1 {
		t.Fatalf("after max age: %v", got)
	}
}

func TestRingFollowNoGapAndBoundedLag(t *testing.T) {
	r := NewRing(10, 0, func() time.Time { return time.Unix(1000, 0) })
	r.Add(drop(999, "x/a", "x/b"))
	past, next, cancel := r.Follow(agentapi.DropsQuery{Namespace: "x"})
	if len(past) != 1 {
		t.Fatalf("past %v", past)
	}
	r.Add(drop(1000, "y/a", "y/b")) // not matched
	for i := 0; i < followBuffer+5; i++ {
		r.Add(drop(1000, "x/a", "x/b"))
	}
	if len(next) != followBuffer {
		t.Fatalf("follower got %d queued, want %d (its bound)", len(next), followBuffer)
	}
	if lost := cancel(); lost != 5 {
		t.Fatalf("lost %d, want 5", lost)
	}
}

type fakeDrops struct {
	*Ring
	why string
}

func (f fakeDrops) Unavailable() string { return f.why }

func TestHandlerStreamsLines(t *testing.T) {
	now := time.Unix(1000, 0)
	r := NewRing(10, time.Hour, func() time.Time { return now })
	r.Add(drop(990, "x/a", "x/b"))
	r.Add(drop(995, "y/a", "y/b"))
	srv := httptest.NewServer(Handler(fakeDrops{Ring: r}, func() time.Time { return now }))
	defer srv.Close()

	resp, err := http.Get(srv.URL + agentapi.DropsQuery{SinceAgo: 8 * time.Second}.Path())
	if err != nil {
		t.Fatal(err)
	}
	body := new(strings.Builder)
	_, _ = bufio.NewReader(resp.Body).WriteTo(body)
	resp.Body.Close()
	if n := strings.Count(body.String(), "\n"); n != 1 || !strings.Contains(body.String(), `"y/a"`) {
		t.Fatalf("since 8s: %q", body)
	}

	resp, err = http.Get(srv.URL + agentapi.DropsQuery{Follow: true, Namespace: "x"}.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	if !sc.Scan() || !strings.Contains(sc.Text(), `"x/a"`) {
		t.Fatalf("first line %q", sc.Text())
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		r.Add(drop(1000, "y/z", "y/w"))
		r.Add(drop(1000, "x/new", "x/b"))
	}()
	if !sc.Scan() || !strings.Contains(sc.Text(), `"x/new"`) {
		t.Fatalf("followed line %q", sc.Text())
	}

	for q, code := range map[string]int{"?since=yesterday": 400, "?follow=maybe": 400, "?pod=x/a&namespace=y": 400} {
		resp, err := http.Get(srv.URL + agentapi.DropsPath + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != code {
			t.Errorf("%s: status %d, want %d", q, resp.StatusCode, code)
		}
	}
	off := httptest.NewServer(Handler(fakeDrops{Ring: NewRing(1, 0, nil), why: "group busy"}, nil))
	defer off.Close()
	resp2, err := http.Get(off.URL + agentapi.DropsPath)
	if err != nil {
		t.Fatal(err)
	}
	msg := new(strings.Builder)
	_, _ = bufio.NewReader(resp2.Body).WriteTo(msg)
	resp2.Body.Close()
	if resp2.StatusCode != 503 || !strings.Contains(msg.String(), "group busy") {
		t.Fatalf("unavailable: %d %q", resp2.StatusCode, msg)
	}
}
