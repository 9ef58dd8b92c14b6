// Package ctnetlink is the kernel side of package conntrack: it deletes
// the conntrack entries of pod addresses through nf_conntrack_netlink. It
// has no dependency beyond netlink, so the CNI plugin links it too.
//
// What nf_conntrack_netlink offers for "delete every entry of address X":
// a flush (IPCTNL_MSG_CT_DELETE without a tuple) filtered by CTA_FILTER on
// tuple fields, from Linux 6.11 only, and without telling how many entries
// it deleted; a dump (IPCTNL_MSG_CT_GET, NLM_F_DUMP) filtered in the kernel
// by CTA_FILTER on tuple fields, from Linux 5.9; and the unfiltered dump
// everywhere. Netlink uses filtered dumps, then deletes each entry they
// return by its tuple, zone and ID.
//
// Which entries: those whose traffic goes from or to X as an endpoint.
// The original source is X when X opened the flow (masqueraded or not);
// the reply source is X when X answers it (addressed directly or through a
// Service's DNAT). A filter's fields are ANDed, so that is two filtered
// dumps. The other two fields add nothing a new holder of X could use: an
// entry with X only as original destination was DNATed away from X, one
// with X only as reply destination was SNATed to X, and no packet to or
// from the pod at X matches either of them.
//
// Cost: each filtered dump is one walk of the kernel's conntrack hash
// (global, nf_conntrack_buckets), copying out only the matches: about
// 15 ms for 262,144 buckets on this 2-core machine under load, whatever the
// table holds, where an unfiltered dump parsed in Go grows with the table
// (250-450 ms for 20,000 entries). Every entry returned is matched again
// here, and a kernel that refuses CTA_FILTER is asked for its whole table:
// an older kernel costs time, never a wrong deletion.
package ctnetlink

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/trellisnet/trellis/internal/ipam"
)

// nf_conntrack_netlink attributes (linux/netfilter/nfnetlink_conntrack.h).
const (
	ctaTupleOrig  = 1
	ctaTupleReply = 2
	ctaID         = 12
	ctaZone       = 18
	ctaFilter     = 25 // CTA_FILTER
	// CTA_FILTER's nested attributes.
	ctaFilterOrigFlags  = 1
	ctaFilterReplyFlags = 2
	// CTA_TUPLE_IP and its nested attributes.
	ctaTupleIP = 1
	ctaIPv4Src = 1
	ctaIPv6Src = 3
	// CTA_FILTER_FLAG(CTA_IP_SRC).
	filterIPSrc = 1 << 0
)

// Netlink deletes conntrack entries in one network namespace through
// nf_conntrack_netlink (see the package comment).
type Netlink struct {
	// Netns is the namespace (nil: the calling thread's).
	Netns *netns.NsHandle
}

// dumpAttempts bounds the retries of a dump the kernel interrupted (the
// table changed while it was being read).
const dumpAttempts = 5

// field is one tuple field a filtered dump matches on.
type field struct {
	tuple int    // ctaTupleOrig or ctaTupleReply
	flag  uint32 // filterIPSrc
}

// fields are the original and the reply source (see the package comment).
var fields = []field{{ctaTupleOrig, filterIPSrc}, {ctaTupleReply, filterIPSrc}}

// DeleteAddrs deletes every entry whose traffic goes from or to one of
// addrs (its original or reply source), and returns how many it deleted.
func (n *Netlink) DeleteAddrs(addrs []netip.Addr) (int, error) {
	set := map[netip.Addr]struct{}{}
	for _, a := range addrs {
		if a = a.Unmap(); a.IsValid() {
			set[a] = struct{}{}
		}
	}
	if len(set) == 0 {
		return 0, nil
	}
	ns := netns.None()
	if n.Netns != nil {
		ns = *n.Netns
	}
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_NETFILTER)
	if err != nil {
		return 0, fmt.Errorf("open a conntrack netlink socket: %w", err)
	}
	defer s.Close()
	if err := s.SetReceiveTimeout(&nl.SocketTimeoutTv); err != nil {
		return 0, err
	}
	if err := s.SetSendTimeout(&nl.SocketTimeoutTv); err != nil {
		return 0, err
	}
	c := conn{sockets: map[int]*nl.SocketHandle{unix.NETLINK_NETFILTER: {Socket: s}}}
	// Entries found through both fields (a pod talking to itself through a
	// Service) are deleted once.
	type entry struct {
		family uint8
		raw    []byte
	}
	found := map[string]entry{}
	for a := range set {
		entries, err := c.entriesOf(a)
		if err != nil {
			return 0, fmt.Errorf("list the conntrack entries of %v: %w", a, err)
		}
		for _, e := range entries {
			if k, ok := matches(e, set); ok {
				found[k] = entry{family: familyOf(a), raw: e}
			}
		}
	}
	deleted := 0
	var errs []error
	for _, e := range found {
		switch err := c.delete(e.family, e.raw); {
		case err == nil:
			deleted++
		case errors.Is(err, syscall.ENOENT): // gone meanwhile
		default:
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return deleted, fmt.Errorf("delete %d of %d conntrack entries: %w", len(errs), len(found), errors.Join(errs...))
	}
	return deleted, nil
}

type conn struct{ sockets map[int]*nl.SocketHandle }

func (c conn) request(family uint8, op, flags int) *nl.NetlinkRequest {
	req := &nl.NetlinkRequest{Sockets: c.sockets}
	req.NlMsghdr = unix.NlMsghdr{Len: unix.SizeofNlMsghdr, Type: uint16(int(netlink.ConntrackTable)<<8 | op), Flags: unix.NLM_F_REQUEST | uint16(flags)}
	req.AddData(&nl.Nfgenmsg{NfgenFamily: family, Version: nl.NFNETLINK_V0})
	return req
}

func familyOf(a netip.Addr) uint8 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// entriesOf returns the entries that may have a as a source: the filtered dumps,
// or, from a kernel that refuses CTA_FILTER, its whole address family.
func (c conn) entriesOf(a netip.Addr) ([][]byte, error) {
	var out [][]byte
	for _, f := range fields {
		es, err := c.dump(a, &f)
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) {
			return c.dump(a, nil)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, es...)
	}
	return out, nil
}

// dump returns the entries (each the message after its nfgenmsg header)
// the kernel lists for a in field f (nil: every entry of a's family).
func (c conn) dump(a netip.Addr, f *field) ([][]byte, error) {
	var out [][]byte
	var err error
	for try := 0; try < dumpAttempts; try++ {
		req := c.request(familyOf(a), nl.IPCTNL_MSG_CT_GET, unix.NLM_F_DUMP)
		if f != nil {
			addFilter(req, a, *f)
		}
		var msgs [][]byte
		msgs, err = req.Execute(unix.NETLINK_NETFILTER, 0)
		if err == nil || errors.Is(err, nl.ErrDumpInterrupted) {
			for _, m := range msgs {
				if len(m) > nl.SizeofNfgenmsg {
					out = append(out, m[nl.SizeofNfgenmsg:])
				}
			}
		}
		if !errors.Is(err, nl.ErrDumpInterrupted) {
			break
		}
	}
	return out, err
}

// addFilter makes the dump return only the entries with a in field f.
func addFilter(req *nl.NetlinkRequest, a netip.Addr, f field) {
	ipAttr := ctaIPv6Src
	if a.Is4() {
		ipAttr = ctaIPv4Src
	}
	tuple := nl.NewRtAttr(unix.NLA_F_NESTED|f.tuple, nil)
	ip := tuple.AddRtAttr(unix.NLA_F_NESTED|ctaTupleIP, nil)
	ip.AddRtAttr(ipAttr, a.AsSlice())
	filter := nl.NewRtAttr(unix.NLA_F_NESTED|ctaFilter, nil)
	origFlags, replyFlags := uint32(0), uint32(0)
	if f.tuple == ctaTupleOrig {
		origFlags = f.flag
	} else {
		replyFlags = f.flag
	}
	filter.AddRtAttr(ctaFilterOrigFlags, nl.Uint32Attr(origFlags))
	filter.AddRtAttr(ctaFilterReplyFlags, nl.Uint32Attr(replyFlags))
	req.AddData(tuple)
	req.AddData(filter)
}

// delete deletes one dumped entry by its tuple, zone and ID (the kernel
// reads nothing else of the message): a new entry with the same tuple is
// left alone.
func (c conn) delete(family uint8, entry []byte) error {
	req := c.request(family, nl.IPCTNL_MSG_CT_DELETE, unix.NLM_F_ACK)
	req.AddRawData(entry)
	_, err := req.Execute(unix.NETLINK_NETFILTER, 0)
	return err
}

// matches reports whether one of set is the entry's original or reply
// source, and returns a key identifying the entry (its original tuple,
// zone and ID).
func matches(entry []byte, set map[netip.Addr]struct{}) (string, bool) {
	attrs, err := nl.ParseRouteAttr(entry)
	if err != nil {
		return "", false
	}
	hit := false
	for _, t := range []int{ctaTupleOrig, ctaTupleReply} {
		src, ok := tupleSource(attrs, t)
		if !ok {
			return "", false
		}
		if _, in := set[src]; in {
			hit = true
		}
	}
	key := string(rawAttr(attrs, ctaTupleOrig)) + "|" + string(rawAttr(attrs, ctaZone)) + "|" + string(rawAttr(attrs, ctaID))
	return key, hit
}

func rawAttr(attrs []syscall.NetlinkRouteAttr, typ int) []byte {
	for _, a := range attrs {
		if int(a.Attr.Type&nl.NLA_TYPE_MASK) == typ {
			return a.Value
		}
	}
	return nil
}

// tupleSource returns the source address of the entry's original or reply
// tuple.
func tupleSource(attrs []syscall.NetlinkRouteAttr, tuple int) (netip.Addr, bool) {
	t, err := nl.ParseRouteAttr(rawAttr(attrs, tuple))
	if err != nil {
		return netip.Addr{}, false
	}
	ips, err := nl.ParseRouteAttr(rawAttr(t, ctaTupleIP))
	if err != nil {
		return netip.Addr{}, false
	}
	for _, ip := range ips {
		if typ := int(ip.Attr.Type & nl.NLA_TYPE_MASK); typ == ctaIPv4Src || typ == ctaIPv6Src {
			a, ok := netip.AddrFromSlice(ip.Value)
			return a.Unmap(), ok
		}
	}
	return netip.Addr{}, false
}

// Forget deletes the conntrack entries of addrs in the calling thread's
// network namespace: the CNI plugin's call, on DEL before it releases the
// addresses and on ADD before the new pod's interface exists.
func Forget(addrs []netip.Addr) error {
	if len(addrs) == 0 {
		return nil
	}
	_, err := (&Netlink{}).DeleteAddrs(addrs)
	return err
}

// ForgetAllocations is Forget for the addresses of IPAM allocations.
func ForgetAllocations(allocs []ipam.Allocation) error {
	var addrs []netip.Addr
	for _, a := range allocs {
		addrs = append(addrs, a.Addr)
	}
	return Forget(addrs)
}
