package capture

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// Link types of the pcap files tcpdump writes (the tcpdump.org LINKTYPE_
// values the reader understands).
const (
	LinkEthernet = 1   // LINKTYPE_ETHERNET: a single interface such as a bridge port
	LinkRaw      = 101 // LINKTYPE_RAW: IP without a link header
	LinkLinuxSLL = 113 // LINKTYPE_LINUX_SLL: "-i any" with libpcap < 1.10
	LinkSLL2     = 276 // LINKTYPE_LINUX_SLL2: "-i any" with libpcap >= 1.10
)

// Query is what Analyze looks for in a capture.
type Query struct {
	// Payload is searched for in every captured frame, headers included.
	Payload []byte
	// UDPPort counts IPv4/IPv6 UDP datagrams to this destination port
	// (0: none).
	UDPPort int
}

// Counts is what Analyze found.
type Counts struct {
	// Packets is the number of frames in the file.
	Packets int
	// PayloadHits is the number of times Query.Payload occurs (a frame can
	// hold it several times).
	PayloadHits int
	// PayloadPackets is the number of frames holding Query.Payload at least once.
	PayloadPackets int
	// UDPToPort is the number of UDP datagrams to Query.UDPPort.
	UDPToPort int
	// Truncated is the number of frames the capture cut short (snap length),
	// in which a payload may go unseen.
	Truncated int
}

func (c Counts) String() string {
	return fmt.Sprintf("%d frames, payload %d times in %d frames, %d UDP datagrams to the queried port, %d truncated",
		c.Packets, c.PayloadHits, c.PayloadPackets, c.UDPToPort, c.Truncated)
}

// ErrFormat marks a file that is not a pcap file this reader understands.
var ErrFormat = errors.New("not a pcap file")

// AnalyzeFile reads the pcap file at path and counts what q asks for.
func AnalyzeFile(path string, q Query) (Counts, error) {
	f, err := os.Open(path)
	if err != nil {
		return Counts{}, fmt.Errorf("opening the capture: %w", err)
	}
	defer f.Close()
	c, err := Analyze(f, q)
	if err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Analyze reads a pcap stream (the classic format tcpdump -w writes:
// microsecond or nanosecond timestamps, either byte order) and counts what
// q asks for. A file cut off inside its last record (tcpdump killed while
// writing) counts the complete records.
func Analyze(r io.Reader, q Query) (Counts, error) {
	var c Counts
	var hdr [24]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return c, fmt.Errorf("%w: reading the file header: %v", ErrFormat, err)
	}
	var bo binary.ByteOrder
	switch m := binary.LittleEndian.Uint32(hdr[0:4]); m {
	case 0xa1b2c3d4, 0xa1b23c4d:
		bo = binary.LittleEndian
	case 0xd4c3b2a1, 0x4d3cb2a1:
		bo = binary.BigEndian
	default:
		return c, fmt.Errorf("%w: magic %#08x", ErrFormat, m)
	}
	link := bo.Uint32(hdr[20:24]) & 0x0fffffff // the upper bits carry FCS information
	switch link {
	case LinkEthernet, LinkRaw, LinkLinuxSLL, LinkSLL2:
	default:
		return c, fmt.Errorf("%w: link type %d is not Ethernet, raw IP or Linux cooked", ErrFormat, link)
	}
	var rec [16]byte
	buf := make([]byte, 0, 65536)
	for {
		if _, err := io.ReadFull(r, rec[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return c, nil
			}
			return c, err
		}
		incl, orig := bo.Uint32(rec[8:12]), bo.Uint32(rec[12:16])
		if incl > 1<<20 {
			return c, fmt.Errorf("%w: record %d claims %d bytes", ErrFormat, c.Packets+1, incl)
		}
		if cap(buf) < int(incl) {
			buf = make([]byte, incl)
		}
		frame := buf[:incl]
		if _, err := io.ReadFull(r, frame); err != nil {
			return c, nil // the last record was cut off
		}
		c.Packets++
		if orig > incl {
			c.Truncated++
		}
		if len(q.Payload) > 0 {
			if n := bytes.Count(frame, q.Payload); n > 0 {
				c.PayloadHits += n
				c.PayloadPackets++
			}
		}
		if q.UDPPort > 0 {
			if port, ok := udpDstPort(link, frame); ok && port == q.UDPPort {
				c.UDPToPort++
			}
		}
	}
}

// udpDstPort returns the destination port of a UDP datagram in frame
// (an unfragmented IPv4 datagram or an IPv6 one without extension headers).
func udpDstPort(link uint32, frame []byte) (int, bool) {
	var proto uint16
	var ip []byte
	switch link {
	case LinkEthernet:
		if len(frame) < 14 {
			return 0, false
		}
		proto, ip = binary.BigEndian.Uint16(frame[12:14]), frame[14:]
		for (proto == 0x8100 || proto == 0x88a8) && len(ip) >= 4 { // VLAN tags
			proto, ip = binary.BigEndian.Uint16(ip[2:4]), ip[4:]
		}
	case LinkLinuxSLL:
		if len(frame) < 16 {
			return 0, false
		}
		proto, ip = binary.BigEndian.Uint16(frame[14:16]), frame[16:]
	case LinkSLL2:
		if len(frame) < 20 {
			return 0, false
		}
		proto, ip = binary.BigEndian.Uint16(frame[0:2]), frame[20:]
	case LinkRaw:
		if len(frame) < 1 {
			return 0, false
		}
		proto, ip = map[byte]uint16{4: 0x0800, 6: 0x86dd}[frame[0]>>4], frame
	}
	var udp []byte
	switch proto {
	case 0x0800:
		if len(ip) < 20 || ip[0]>>4 != 4 || ip[9] != 17 {
			return 0, false
		}
		if binary.BigEndian.Uint16(ip[6:8])&0x1fff != 0 { // a later fragment: no UDP header
			return 0, false
		}
		ihl := int(ip[0]&0x0f) * 4
		if ihl < 20 || len(ip) < ihl+4 {
			return 0, false
		}
		udp = ip[ihl:]
	case 0x86dd:
		if len(ip) < 44 || ip[6] != 17 {
			return 0, false
		}
		udp = ip[40:]
	default:
		return 0, false
	}
	return int(binary.BigEndian.Uint16(udp[2:4])), true
}
