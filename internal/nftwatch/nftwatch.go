// Package nftwatch reports, as they are committed, the nftables
// transactions that touch one table, and reads the ruleset generation.
//
// It listens to the kernel's nftables notifications (netlink group
// NFNLGRP_NFTABLES) directly rather than through the nft binary's monitor,
// and decodes only what attribution needs: the table each notification
// names and the generation (with the committing process) that closes each
// transaction. Every nftables commit that changes anything increments the
// ruleset generation by one, so a caller that reads the generation just
// before and just after its own commit knows which generation was its own
// (see internal/policy's guard). The masquerade and strict encryption
// controllers (internal/masq, internal/wireguard/strict) only need to know
// that their table was touched: they then read it back (Guard).
package nftwatch

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// readBuffer is the notification socket's receive buffer: large enough for
// the notifications of a full rewrite of a large table (the kernel
// coalesces them into few buffers), so that the watcher is not overrun by
// its own caller's commits.
const readBuffer = 16 << 20

// Change is one committed transaction that touched the watched table, or a
// loss of notifications.
type Change struct {
	// Gen is the ruleset generation the transaction committed.
	Gen uint32
	// PID and Comm name the process that committed it (as the kernel
	// reports them; nft for anything written through the nft binary).
	PID  uint32
	Comm string
	// Lost reports that notifications were dropped (socket overrun) or
	// that the watch (re)started: changes may have gone unseen.
	Lost bool
	// At is when the change was received.
	At time.Time
}

// Watch is a subscription to the nftables notifications of the network
// namespace it was opened in.
type Watch struct {
	family uint8
	table  string
	events *netlink.Conn
	gen    *netlink.Conn
}

// Open subscribes to the nftables notifications of the calling thread's
// network namespace, for the table named table in family (unix.NFPROTO_*,
// e.g. unix.NFPROTO_INET). Close releases it.
func Open(family uint8, table string) (*Watch, error) {
	events, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("nftables notifications: dial netlink: %w", err)
	}
	w := &Watch{family: family, table: table, events: events}
	if err := setReadBuffer(events, readBuffer); err != nil {
		w.Close()
		return nil, err
	}
	if err := events.JoinGroup(unix.NFNLGRP_NFTABLES); err != nil {
		w.Close()
		return nil, fmt.Errorf("nftables notifications: join group: %w", err)
	}
	if w.gen, err = netlink.Dial(unix.NETLINK_NETFILTER, nil); err != nil {
		w.Close()
		return nil, fmt.Errorf("nftables generation: dial netlink: %w", err)
	}
	return w, nil
}

// setReadBuffer raises the receive buffer beyond net.core.rmem_max when
// allowed (CAP_NET_ADMIN), else as far as rmem_max lets it.
func setReadBuffer(c *netlink.Conn, n int) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("nftables notifications: %w", err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
	}); err != nil {
		return fmt.Errorf("nftables notifications: %w", err)
	}
	if serr != nil {
		if err := c.SetReadBuffer(n); err != nil {
			return fmt.Errorf("nftables notifications: set receive buffer: %w", err)
		}
	}
	return nil
}

// Close releases the subscription (and ends Run).
func (w *Watch) Close() {
	if w.events != nil {
		_ = w.events.Close()
	}
	if w.gen != nil {
		_ = w.gen.Close()
	}
}

// Generation returns the current ruleset generation.
func (w *Watch) Generation() (uint32, error) {
	msgs, err := w.gen.Execute(netlink.Message{
		Header: netlink.Header{Type: msgType(unix.NFT_MSG_GETGEN), Flags: netlink.Request},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	})
	if err != nil {
		return 0, fmt.Errorf("read nftables generation: %w", err)
	}
	for _, m := range msgs {
		if m.Header.Type == msgType(unix.NFT_MSG_NEWGEN) {
			g, err := decodeGen(m.Data)
			if err != nil {
				return 0, err
			}
			return g.Gen, nil
		}
	}
	return 0, errors.New("read nftables generation: no answer")
}

// Run calls fn, from one goroutine, for every committed transaction that
// touched the table, and with Lost set once at the start (what happened
// before the subscription is unknown) and after every overrun. It blocks
// until ctx is cancelled (then it closes the watch and returns nil) or the
// socket fails.
func (w *Watch) Run(ctx context.Context, fn func(Change)) error {
	stop := context.AfterFunc(ctx, w.Close)
	defer stop()
	fn(Change{Lost: true, At: time.Now()})
	touched := false
	for {
		msgs, err := w.events.Receive()
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, unix.ENOBUFS) {
			touched = false
			fn(Change{Lost: true, At: time.Now()})
			continue
		}
		if err != nil {
			return fmt.Errorf("nftables notifications: %w", err)
		}
		for _, m := range msgs {
			t := m.Header.Type
			if t>>8 != unix.NFNL_SUBSYS_NFTABLES {
				continue
			}
			if t == msgType(unix.NFT_MSG_NEWGEN) {
				if touched {
					if ch, err := decodeGen(m.Data); err == nil {
						ch.At = time.Now()
						fn(ch)
					} else {
						fn(Change{Lost: true, At: time.Now()})
					}
				}
				touched = false
				continue
			}
			if !touched && w.names(m.Data) {
				touched = true
			}
		}
	}
}

func msgType(t int) netlink.HeaderType {
	return netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | t)
}

// names reports whether a notification (table, chain, rule, set, element
// or object) is about the watched table: in each of them attribute 1 is
// the table name (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE,
// NFTA_SET_TABLE, NFTA_SET_ELEM_LIST_TABLE, NFTA_OBJ_TABLE...).
func (w *Watch) names(data []byte) bool {
	if len(data) < 4 || data[0] != w.family {
		return false
	}
	ad, err := netlink.NewAttributeDecoder(data[4:])
	if err != nil {
		return false
	}
	for ad.Next() {
		if ad.Type() == 1 {
			return ad.String() == w.table
		}
	}
	return false
}

// decodeGen decodes a NEWGEN message (nfgenmsg, then NFTA_GEN_*).
func decodeGen(data []byte) (Change, error) {
	var ch Change
	if len(data) < 4 {
		return ch, errors.New("nftables generation: short message")
	}
	ad, err := netlink.NewAttributeDecoder(data[4:])
	if err != nil {
		return ch, fmt.Errorf("nftables generation: %w", err)
	}
	ad.ByteOrder = binary.BigEndian
	found := false
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_GEN_ID:
			ch.Gen, found = ad.Uint32(), true
		case unix.NFTA_GEN_PROC_PID:
			ch.PID = ad.Uint32()
		case unix.NFTA_GEN_PROC_NAME:
			ch.Comm = ad.String()
		}
	}
	if err := ad.Err(); err != nil {
		return ch, fmt.Errorf("nftables generation: %w", err)
	}
	if !found {
		return ch, errors.New("nftables generation: no generation id")
	}
	return ch, nil
}
