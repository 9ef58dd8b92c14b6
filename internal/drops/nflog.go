package drops

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nfnetlink_log constants (linux/netfilter/nfnetlink_log.h, nfnetlink.h).
const (
	nfnlSubsysULOG  = 4
	nfulnlMsgPacket = 0
	nfulnlMsgConfig = 1

	nfulaCfgCmd     = 1
	nfulaCfgMode    = 2
	nfulaCfgTimeout = 4
	nfulaCfgQThresh = 5

	nfulnlCfgCmdBind   = 1
	nfulnlCfgCmdUnbind = 2
	nfulnlCopyPacket   = 2

	nfulaPacketHdr     = 1
	nfulaTimestamp     = 3
	nfulaIfindexIndev  = 4
	nfulaIfindexOutdev = 5
	nfulaPayload       = 9
	nfulaPrefix        = 10
)

// copyRange is how many bytes of each logged packet the kernel copies to
// the reader: the longest IPv4 header and the transport ports (an IPv6
// header and the ports fit too, with up to 20 bytes of extension headers).
const copyRange = 64

// Record is one nflog message: the rule's prefix, the interfaces and the
// start of the packet.
type Record struct {
	// Time is the packet's timestamp when the kernel gave one, else the
	// time it was read.
	Time          time.Time
	Prefix        string
	InDev, OutDev uint32
	// Proto is the link-layer protocol (0x0800 for IPv4).
	Proto   uint16
	Payload []byte
}

// ErrGroupBusy is returned by Open when another socket (tcpdump -i
// nflog:N, ulogd, another agent) already listens on the group: the kernel
// delivers a group to one listener only.
var ErrGroupBusy = errors.New("another listener holds the nflog group (tcpdump -i nflog:N, ulogd?); only one socket can bind a group")

// Reader receives the messages of one nflog group.
type Reader struct {
	conn  *netlink.Conn
	group uint16
}

// Open binds an nfnetlink_log socket to group in the calling thread's
// network namespace, asking the kernel to copy the packet headers and to
// send each message at once (queue threshold 1) rather than batch them.
// It needs CAP_NET_ADMIN.
func Open(group uint16) (*Reader, error) {
	if group == 0 {
		return nil, errors.New("nflog group 0 is the deny log turned off")
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("nfnetlink socket: %w", err)
	}
	r := &Reader{conn: c, group: group}
	if err := r.config(cfgCmd(nfulnlCfgCmdBind)); err != nil {
		c.Close()
		if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("bind nflog group %d: %w (%v)", group, ErrGroupBusy, err)
		}
		return nil, fmt.Errorf("bind nflog group %d: %w", group, err)
	}
	mode := make([]byte, 6)
	binary.BigEndian.PutUint32(mode, copyRange)
	mode[4] = nfulnlCopyPacket
	for _, a := range []netlink.Attribute{
		{Type: nfulaCfgMode, Data: mode},
		{Type: nfulaCfgQThresh, Data: be32(1)},
		{Type: nfulaCfgTimeout, Data: be32(1)}, // 10 ms
	} {
		if err := r.config(a); err != nil {
			r.Close()
			return nil, fmt.Errorf("configure nflog group %d: %w", group, err)
		}
	}
	// A burst larger than the socket buffer is lost (ENOBUFS), not queued.
	_ = c.SetReadBuffer(1 << 20)
	return r, nil
}

func cfgCmd(cmd byte) netlink.Attribute {
	return netlink.Attribute{Type: nfulaCfgCmd, Data: []byte{cmd}}
}

func be32(v uint32) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, v)
	return b
}

// config sends one configuration attribute for the group and waits for the
// kernel's acknowledgement.
func (r *Reader) config(a netlink.Attribute) error {
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{a})
	if err != nil {
		return err
	}
	hdr := []byte{unix.AF_INET, 0, 0, 0} // nfgenmsg: family, version, res_id (group, big-endian)
	binary.BigEndian.PutUint16(hdr[2:], r.group)
	_, err = r.conn.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(nfnlSubsysULOG<<8 | nfulnlMsgConfig),
			Flags: netlink.Request | netlink.Acknowledge,
		},
		Data: append(hdr, attrs...),
	})
	return err
}

// SetDeadline makes a blocked Receive return after t (an error that
// satisfies os.IsTimeout).
func (r *Reader) SetDeadline(t time.Time) error { return r.conn.SetReadDeadline(t) }

// Receive blocks until the kernel sends messages and returns their records.
// Messages lost because the socket buffer was full surface as an error
// wrapping unix.ENOBUFS; receiving may continue after it.
func (r *Reader) Receive() ([]Record, error) {
	msgs, err := r.conn.Receive()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	out := make([]Record, 0, len(msgs))
	for _, m := range msgs {
		if m.Header.Type != netlink.HeaderType(nfnlSubsysULOG<<8|nfulnlMsgPacket) {
			continue
		}
		rec, err := ParseMessage(m.Data, now)
		if err != nil {
			return out, err
		}
		out = append(out, rec)
	}
	return out, nil
}

// Close unbinds the group and closes the socket.
func (r *Reader) Close() error {
	_ = r.config(cfgCmd(nfulnlCfgCmdUnbind))
	return r.conn.Close()
}

// ParseMessage decodes the body of an NFULNL_MSG_PACKET message (nfgenmsg
// header, then attributes); now is the record's time when the message
// carries no timestamp.
func ParseMessage(b []byte, now time.Time) (Record, error) {
	rec := Record{Time: now}
	if len(b) < 4 {
		return rec, fmt.Errorf("nflog message of %d bytes", len(b))
	}
	ad, err := netlink.NewAttributeDecoder(b[4:])
	if err != nil {
		return rec, fmt.Errorf("nflog attributes: %w", err)
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		switch ad.Type() {
		case nfulaPacketHdr:
			if d := ad.Bytes(); len(d) >= 2 {
				rec.Proto = binary.BigEndian.Uint16(d)
			}
		case nfulaTimestamp:
			if d := ad.Bytes(); len(d) == 16 {
				sec, usec := binary.BigEndian.Uint64(d), binary.BigEndian.Uint64(d[8:])
				if sec != 0 && sec < 1<<40 && usec < 1e6 {
					rec.Time = time.Unix(int64(sec), int64(usec)*1000)
				}
			}
		case nfulaIfindexIndev:
			rec.InDev = ad.Uint32()
		case nfulaIfindexOutdev:
			rec.OutDev = ad.Uint32()
		case nfulaPayload:
			rec.Payload = append([]byte(nil), ad.Bytes()...)
		case nfulaPrefix:
			rec.Prefix = trimNUL(ad.Bytes())
		}
	}
	if err := ad.Err(); err != nil {
		return rec, fmt.Errorf("nflog attributes: %w", err)
	}
	return rec, nil
}

func trimNUL(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
