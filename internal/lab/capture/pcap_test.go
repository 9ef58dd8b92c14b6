package capture

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"
)

// pcapFile writes a classic pcap file (little-endian, microseconds) with
// the given link type and frames; a frame's original length is its length
// plus cut (as if the snap length had cut it).
func pcapFile(link uint32, cut int, frames ...[]byte) []byte {
	var b bytes.Buffer
	le := binary.LittleEndian
	hdr := make([]byte, 24)
	le.PutUint32(hdr[0:], 0xa1b2c3d4)
	le.PutUint16(hdr[4:], 2)
	le.PutUint16(hdr[6:], 4)
	le.PutUint32(hdr[16:], 262144)
	le.PutUint32(hdr[20:], link)
	b.Write(hdr)
	for i, f := range frames {
		rec := make([]byte, 16)
		le.PutUint32(rec[0:], uint32(1700000000+i))
		le.PutUint32(rec[8:], uint32(len(f)))
		le.PutUint32(rec[12:], uint32(len(f)+cut))
		b.Write(rec)
		b.Write(f)
	}
	return b.Bytes()
}

// ipv4UDP is an IPv4 datagram from port 40000 to dport carrying payload;
// fragOff sets the fragment offset field.
func ipv4UDP(dport int, payload []byte, fragOff uint16) []byte {
	ip := make([]byte, 20+8+len(payload))
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	binary.BigEndian.PutUint16(ip[6:], fragOff)
	ip[8], ip[9] = 64, 17
	copy(ip[12:], []byte{172, 30, 1, 10})
	copy(ip[16:], []byte{172, 30, 2, 10})
	binary.BigEndian.PutUint16(ip[20:], 40000)
	binary.BigEndian.PutUint16(ip[22:], uint16(dport))
	copy(ip[28:], payload)
	return ip
}

func ipv6UDP(dport int, payload []byte) []byte {
	ip := make([]byte, 40+8+len(payload))
	ip[0], ip[6], ip[7] = 0x60, 17, 64
	binary.BigEndian.PutUint16(ip[40:], 40000)
	binary.BigEndian.PutUint16(ip[42:], uint16(dport))
	copy(ip[48:], payload)
	return ip
}

func ipv4TCP(payload []byte) []byte {
	ip := make([]byte, 40+len(payload))
	ip[0], ip[9] = 0x45, 6
	binary.BigEndian.PutUint16(ip[20:], 40000)
	binary.BigEndian.PutUint16(ip[22:], 51871) // a TCP port that is not a UDP datagram
	copy(ip[40:], payload)
	return ip
}

func ether(ethertype uint16, ip []byte) []byte {
	f := make([]byte, 14, 14+len(ip))
	binary.BigEndian.PutUint16(f[12:], ethertype)
	return append(f, ip...)
}

func vlan(ip []byte) []byte {
	f := make([]byte, 18, 18+len(ip))
	binary.BigEndian.PutUint16(f[12:], 0x8100)
	binary.BigEndian.PutUint16(f[16:], 0x0800)
	return append(f, ip...)
}

func sll(ethertype uint16, ip []byte) []byte {
	f := make([]byte, 16, 16+len(ip))
	binary.BigEndian.PutUint16(f[14:], ethertype)
	return append(f, ip...)
}

func sll2(ethertype uint16, ip []byte) []byte {
	f := make([]byte, 20, 20+len(ip))
	binary.BigEndian.PutUint16(f[0:], ethertype)
	return append(f, ip...)
}

func TestAnalyzeCountsPayloadAndWireGuardPortOnEveryLinkType(t *testing.T) {
	secret := []byte("TRELLIS-CANARY-0123456789")
	twice := append(append([]byte("x"), secret...), secret...)
	q := Query{Payload: secret, UDPPort: 51871}
	for _, c := range []struct {
		name string
		link uint32
		wrap func(uint16, []byte) []byte
	}{
		{"ethernet", LinkEthernet, ether},
		{"linux-sll", LinkLinuxSLL, sll},
		{"linux-sll2", LinkSLL2, sll2},
		{"raw", LinkRaw, func(_ uint16, ip []byte) []byte { return ip }},
	} {
		t.Run(c.name, func(t *testing.T) {
			data := pcapFile(c.link, 0,
				c.wrap(0x0800, ipv4UDP(51871, []byte("ciphertext"), 0)),
				c.wrap(0x0800, ipv4UDP(51871, []byte("ciphertext"), 0x4000)), // DF set: still the first fragment
				c.wrap(0x86dd, ipv6UDP(51871, nil)),
				c.wrap(0x0800, ipv4UDP(4789, twice, 0)),                // the payload twice, another port
				c.wrap(0x0800, ipv4UDP(51871, []byte("tail"), 0x0010)), // a later fragment: no UDP header
				c.wrap(0x0800, ipv4TCP(secret)),
			)
			got, err := Analyze(bytes.NewReader(data), q)
			if err != nil {
				t.Fatal(err)
			}
			want := Counts{Packets: 6, PayloadHits: 3, PayloadPackets: 2, UDPToPort: 3}
			if got != want {
				t.Errorf("got %v\nwant %v", got, want)
			}
		})
	}
}

func TestAnalyzeVLANTruncatedAndByteOrders(t *testing.T) {
	secret := []byte("TRELLIS-CANARY-x")
	data := pcapFile(LinkEthernet, 100, vlan(ipv4UDP(51871, secret, 0)))
	got, err := Analyze(bytes.NewReader(data), Query{Payload: secret, UDPPort: 51871})
	if err != nil {
		t.Fatal(err)
	}
	if got.UDPToPort != 1 || got.PayloadHits != 1 || got.Truncated != 1 {
		t.Errorf("VLAN-tagged, truncated frame: %v", got)
	}
	// The same file in big-endian byte order with nanosecond timestamps.
	be := append([]byte(nil), data...)
	binary.BigEndian.PutUint32(be[0:], 0xa1b23c4d)
	for _, off := range []int{4, 6} {
		binary.BigEndian.PutUint16(be[off:], binary.LittleEndian.Uint16(data[off:]))
	}
	for _, off := range []int{8, 12, 16, 20, 24, 28, 32, 36} {
		binary.BigEndian.PutUint32(be[off:], binary.LittleEndian.Uint32(data[off:]))
	}
	if got2, err := Analyze(bytes.NewReader(be), Query{Payload: secret, UDPPort: 51871}); err != nil || got2 != got {
		t.Errorf("big-endian: %v, %v; want %v", got2, err, got)
	}
}

func TestAnalyzeCutOffFileCountsCompleteRecords(t *testing.T) {
	secret := []byte("TRELLIS-CANARY-y")
	data := pcapFile(LinkRaw, 0, ipv4UDP(1, secret, 0), ipv4UDP(2, secret, 0))
	got, err := Analyze(bytes.NewReader(data[:len(data)-5]), Query{Payload: secret})
	if err != nil || got.Packets != 1 || got.PayloadHits != 1 {
		t.Errorf("cut-off file: %v, %v; want 1 frame with the payload", got, err)
	}
}

func TestAnalyzeRefusesOtherFiles(t *testing.T) {
	for name, data := range map[string][]byte{
		"empty":       nil,
		"pcapng":      append([]byte{0x0a, 0x0d, 0x0d, 0x0a}, make([]byte, 40)...),
		"bluetooth":   pcapFile(187, 0),
		"huge record": append(pcapFile(LinkRaw, 0), append(make([]byte, 8), 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0)...),
	} {
		if _, err := Analyze(bytes.NewReader(data), Query{}); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: got %v, want ErrFormat", name, err)
		}
	}
}

func FuzzAnalyze(f *testing.F) {
	f.Add(pcapFile(LinkSLL2, 0, sll2(0x0800, ipv4UDP(51871, []byte("abc"), 0))))
	f.Add(pcapFile(LinkEthernet, 3, vlan(ipv4UDP(1, nil, 0)), ether(0x86dd, ipv6UDP(2, nil))))
	f.Add(pcapFile(LinkRaw, 0, []byte{0x45}, []byte{0x60}))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Analyze(bytes.NewReader(data), Query{Payload: []byte("abc"), UDPPort: 51871})
		if err == nil && (c.UDPToPort > c.Packets || c.PayloadPackets > c.Packets || c.PayloadPackets > c.PayloadHits) {
			t.Errorf("inconsistent counts %v", c)
		}
	})
}

func TestOptionsValidateAndArgs(t *testing.T) {
	err := Options{Netns: "../x", MaxPackets: 0, MaxDuration: 0, SnapLen: -1, BufferKiB: -1}.Validate()
	for _, want := range []string{"network namespace", "output file", "packet count", "duration", "snap length", "buffer size"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v lacks %q", err, want)
		}
	}
	o := Options{Netns: "tlwg-switch", File: "/tmp/x.pcap", MaxPackets: 1000, MaxDuration: time.Second,
		InboundOnly: true, Filter: "not host 172.30.1.2"}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(o.Args(), " ")
	if want := "-i any -n --immediate-mode -U -B 65536 -s 0 -c 1000 -w /tmp/x.pcap -Q in not host 172.30.1.2"; got != want {
		t.Errorf("args %q, want %q", got, want)
	}
}

func TestParseStats(t *testing.T) {
	st, err := parseStats("tcpdump: listening on any\n12 packets captured\n15 packets received by filter\n1 packet dropped by kernel\n")
	if err != nil || st.Captured != 12 || st.ReceivedByFilter != 15 || st.DroppedByKernel != 1 {
		t.Errorf("got %+v, %v", st, err)
	}
	if _, err := parseStats("tcpdump: no such device"); err == nil {
		t.Error("no statistics accepted")
	}
}
